"""Fused GPU engine (CuPy) for networks with 2x2 average pooling between conv stages (Myrtle networks).

``Architecture(depth, readout, pools=(...))`` runs in stages (:func:`cntk_core.cpu_stages.stage_geometry`):
stage ``s`` on a ``P_s x Q_s`` grid, ``P_{s+1} = P_s // 2``. Each stage is one launch of the kernel
``cntk_stage_blocks`` (``cntk_core/cuda/cntk_stages.cu``, whose header states the layout): one thread
block runs one (pair, shift block) of the stage through the stage's layers on chip, exactly as
:class:`cntk_core.gpu.FusedGPUEngine` runs a whole unpooled network. Pooling couples shift blocks,
so a stage that is not the last stores its blocks' final values in global memory, per pair, and
the next stage's thread blocks gather their input from there (the mean of 16 entries each); the
last stage writes one float64 readout sum per (pair, shift block), which ``cntk_reduce`` adds in
shift-block order. No atomics: a pair's value does not depend on its launch or on the other pairs.

Only the shift blocks that reach the readout run: the last stage's radius ``R`` (vanilla 0, LAP
``2c``, GAP all) and ``2R + 1`` one stage before (:func:`stage_block_lists`). The per-image variance
maps of every layer come from the self pairs ``(x, x)`` in record mode, stage by stage: shift block
``(0, 0)`` records the stage's maps, then the stage's other blocks that the next stage's maps need
(radius ``2R + 1`` from ``R = 0`` at the last stage) run as plain self pairs.

The CPU counterpart is :class:`cntk_core.cpu_stages.StagedEngine`. Circular padding is not fused
(the per-layer path runs it); ``flip`` is the Gram driver's.
"""

from __future__ import annotations

import numpy as np

from . import gpu as _gpu  # _module and _SMEM_SET looked up at call time (tests replace them)
from .architecture import Architecture
from .cpu_stages import stage_geometry
from .gpu import (
    _CTYPES,
    _STATIC_SMEM_LIMIT,
    FUSED_READOUTS,
    GPU_SPEEDUP,
    MAX_BLOCKS,
    MAX_PAIRS_PER_LAUNCH,
    MEMORY_FRACTION,
    _threads,
    check_flush,
    check_pairs,
    check_pixel_range,
    kernel_lap_c,
    readout_scale,
    run_batched,
    threads_for,
)
from .validation import ParameterError, check_kind


def radius_groups(n: int, radius: int) -> np.ndarray:
    """Row (or column) groups ``g`` of an axis of length ``n`` holding a displacement ``|d| <= radius``
    (``d = g`` or ``g - n``): ``0 .. radius`` and ``n - radius .. n - 1``, ascending."""
    g = np.arange(n)
    return g[(g <= radius) | (g >= n - radius)]


def stage_block_lists(geo: np.ndarray, radius: int) -> list[np.ndarray]:
    """Per stage, the shift blocks ``(gi, gj)`` to run, int32 ``(n_s, 2)`` with ``(0, 0)`` first: those
    within ``radius`` of the zero displacement at the last stage, ``2R + 1`` of the next stage's ``R``
    before it (the 2x2 mean of the next stage's entry ``d'`` reads ``2d' - 1 .. 2d' + 1``)."""
    lists = []
    for p, q, _, _ in geo[::-1]:
        gi, gj = np.meshgrid(radius_groups(int(p), radius), radius_groups(int(q), radius), indexing="ij")
        lists.append(np.stack([gi.ravel(), gj.ravel()], axis=1).astype(np.int32))
        radius = 2 * radius + 1
    return lists[::-1]


def slot_table(blocks: np.ndarray, p: int, q: int) -> np.ndarray:
    """int32 ``(P * Q,)``: entry ``gi * Q + gj`` is the position of shift block ``(gi, gj)`` in ``blocks``
    (its slot in the stored tensor), -1 for a block not stored."""
    table = np.full(p * q, -1, np.int32)
    table[blocks[:, 0] * q + blocks[:, 1]] = np.arange(len(blocks), dtype=np.int32)
    return table


class StagedGPUEngine:
    """Pooled (Myrtle) networks on the GPU, one launch per stage; see the module docstring.

    Same interface as :class:`cntk_core.gpu.FusedGPUEngine` (``prepare``, ``pairs`` float64
    ``(n_pairs,)``, ``pair_cost``); ``threads`` overrides every stage's thread block size (default
    ``CNTK_GPU_THREADS`` or :func:`cntk_core.gpu.threads_for` of the stage's grid).

    Memory: ``prepare`` holds the images and their variance maps (``sum_h P_h Q_h`` numbers per
    image); a launch of B pairs holds, per stage but the last, ``B * n_s * P_s Q_s`` stored entries
    (twice for the NTK before the last layer): at 32x32 GAP, 4 MB per pair in float32 (NNGP) for
    stage 0, a sixteenth of that for each later stage; and ``B * n_last`` float64 partial sums.
    Shared memory per thread block: ``threads * 8 + 4 * P_s * Q_s * itemsize`` bytes.
    """

    @staticmethod
    def supports(spec: Architecture | None) -> bool:
        """Whether this engine runs ``spec``: pooling, zero padding, readout in
        :data:`cntk_core.gpu.FUSED_READOUTS` (LAP on the last stage's grid); ``flip`` does not matter."""
        return spec is not None and bool(spec.pools) and spec.padding == "zero" and spec.readout in FUSED_READOUTS

    def __init__(self, spec: Architecture, shape: tuple, kind: str, dtype, *, threads=None, max_pairs=None):
        check_kind(kind)
        if not self.supports(spec):
            raise ParameterError(
                "pools", f"StagedGPUEngine runs pooled networks with zero padding and readouts {FUSED_READOUTS}, "
                f"not {spec!r}"
            )  # fmt: skip
        dt = np.dtype(dtype)
        if dt.name not in _CTYPES:
            raise ValueError(f"dtype must be float32 or float64, got {dt}")
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"shape must be (height, width, channels) with positive sizes, got {shape}")
        self.spec, self.dtype, self.ntk = spec, dt, kind == "ntk"
        self.p, self.q, self.c = (int(s) for s in shape)
        if self.p * self.q * self.q >= 2**32:  # the kernel's r = e / Q by reciprocal is exact below
            raise ValueError(f"images of {self.p}x{self.q} are too large for the GPU kernel; use backend='numba'")
        self.geo = stage_geometry(spec, self.p, self.q)
        self.n_stages = len(self.geo)
        p_s, q_s = int(self.geo[-1, 0]), int(self.geo[-1, 1])
        radius = {"vanilla": 0, "lap": 2 * (spec.lap_c or 0)}.get(spec.readout, max(p_s, q_s))
        self.pair_blocks = stage_block_lists(self.geo, radius)
        #: stages whose layers need variance maps (a last stage after a final pooling has none)
        self.map_stages = self.n_stages - int(self.geo[-1, 2] == self.geo[-1, 3])
        self.map_blocks = stage_block_lists(self.geo[: self.map_stages], 0)
        self.scale = readout_scale(p_s, q_s, spec.readout, spec.lap_c)
        self.lap_arg = kernel_lap_c(p_s, q_s, spec.readout, spec.lap_c)
        pq = [int(p * q) for p, q, _, _ in self.geo]
        layers = [int(h1 - h0) for _, _, h0, h1 in self.geo]
        self.voff = np.concatenate([[0], np.cumsum([n * k for n, k in zip(pq, layers, strict=True)])])
        self.vstride = max(1, int(self.voff[-1]))
        #: what stage s stores for the next one: 2 Sigma and Theta, 1 Sigma or the readout's operand
        self.modes = [2 if self.ntk and h1 < spec.n_conv else 1 for _, _, _, h1 in self.geo[:-1]]
        self.zero = self.ntk and spec.n_conv == 1 and spec.fix_first and spec.fix_last  # nothing trained
        self.threads = [int(_threads(threads) or threads_for(int(p), int(q))) for p, q, _, _ in self.geo]
        for nt in self.threads:
            if nt < 32 or nt > 1024 or nt & (nt - 1):
                raise ValueError(f"threads must be a power of two in [32, 1024], got {nt}")
        self.smem = [nt * 8 + 4 * n * dt.itemsize for nt, n in zip(self.threads, pq, strict=True)]
        stored = [len(b) * n * m for b, n, m in zip(self.pair_blocks, pq, self.modes, strict=False)]
        #: bytes per pair in flight: the stored tensors and the last stage's partial sums
        self.pair_bytes = dt.itemsize * sum(stored) + 8 * len(self.pair_blocks[-1]) + 24
        self.pair_cap = max(1, MAX_BLOCKS // max(len(b) for b in self.pair_blocks))
        work = sum(len(b) * n * max(1, k) for b, n, k in zip(self.pair_blocks, pq, layers, strict=True))
        self.pair_cost = float(work) / GPU_SPEEDUP
        if max_pairs is not None and (isinstance(max_pairs, bool) or int(max_pairs) != max_pairs or max_pairs < 1):
            raise ValueError(f"max_pairs must be a positive integer, got {max_pairs!r}")

        import cupy

        self._cp = cupy
        mod = _gpu._module()
        self._name = f"cntk_stage_blocks<{_CTYPES[dt.name]}>"
        self._stage_kernel = mod.get_function(self._name)
        self._reduce_kernel = mod.get_function("cntk_reduce")
        self._dev: dict[int, dict] = {}  # per device id: block lists and slot tables there
        self._on_device()
        free = self._free_bytes()
        self.max_pairs = (
            min(int(max_pairs), self.pair_cap)
            if max_pairs
            else int(max(1, min(MAX_PAIRS_PER_LAUNCH, MEMORY_FRACTION * free // self.pair_bytes, self.pair_cap)))
        )

    def _free_bytes(self) -> int:
        free, _total = self._cp.cuda.runtime.memGetInfo()
        return int(free + self._cp.get_default_memory_pool().free_bytes())

    def _on_device(self) -> dict:
        """The block lists and slot tables on the current device, where the stage kernel's
        shared-memory limit is now at least this engine's largest (raised if needed, never lowered)."""
        cp = self._cp
        device = cp.cuda.Device()
        dev = int(device.id)
        need = max(self.smem)
        if need > _gpu._SMEM_SET.get((dev, self._name), _STATIC_SMEM_LIMIT):
            limit = int(device.attributes.get("MaxSharedMemoryPerBlockOptin", _STATIC_SMEM_LIMIT))
            if need > limit:
                raise ValueError(
                    f"images of {self.p}x{self.q} need {need} bytes of shared memory per block in {self.dtype}, "
                    f"more than GPU {dev}'s {limit}; use dtype='float32', smaller images, or backend='numba'"
                )
            self._stage_kernel.max_dynamic_shared_size_bytes = need
            _gpu._SMEM_SET[(dev, self._name)] = need
        if dev not in self._dev:
            up = cp.asarray
            self._dev[dev] = {
                "pair": [up(np.ascontiguousarray(b.ravel())) for b in self.pair_blocks],
                "map0": [up(np.ascontiguousarray(b[:1].ravel())) for b in self.map_blocks],
                "map1": [up(np.ascontiguousarray(b[1:].ravel())) for b in self.map_blocks],
                "pair_slots": [up(slot_table(b, int(g[0]), int(g[1]))) for b, g in zip(self.pair_blocks, self.geo,
                                                                                     strict=True)],
                "map_slots": [up(slot_table(b, int(g[0]), int(g[1]))) for b, g in zip(self.map_blocks, self.geo,
                                                                                   strict=False)],
                "dummy": cp.zeros(1, self.dtype),
                "dummy_i": cp.zeros(1, cp.int32),
            }  # fmt: skip
        return self._dev[dev]

    def _stage(self, s, xa, xb, va, vb, rows, cols, blocks, n_blocks, record, prev, next_, n_next_slots, maps):
        """One launch of stage ``s`` over ``len(rows)`` pairs x ``n_blocks`` blocks. ``prev``: ``None``
        (images) or ``(tensor, slots, n_slots, stride, mode)`` of stage ``s - 1``; ``next_``: ``None``
        (readout: returns the partial sums) or ``(tensor, slot0, stride, mode)``; ``maps``: part of
        ``prepare``'s pass (Sigma only: the NTK's Theta is not needed for the variance maps)."""
        cp, i32, i64 = self._cp, np.int32, np.int64
        d = self._dev[int(cp.cuda.Device().id)]
        p, q, h0, h1 = (int(v) for v in self.geo[s])
        n = int(len(rows))
        if n * n_blocks > MAX_BLOCKS:
            raise ValueError(f"{n} pairs x {n_blocks} shift blocks is more thread blocks than one launch can have")
        partial = cp.empty(n * n_blocks if next_ is None else 1, cp.float64)
        pt, pslots, pn, pstride, pmode = prev or (d["dummy"], d["dummy_i"], 0, 0, 0)
        pp, pq_ = (int(self.geo[s - 1, 0]), int(self.geo[s - 1, 1])) if prev else (0, 0)
        nt_, slot0, nstride, nmode = next_ or (d["dummy"], 0, 0, 0)
        spec = self.spec
        lap = self.lap_arg if s == self.n_stages - 1 else -1
        args = (xa, xb, va, vb, i32(self.vstride), i32(self.voff[s]), rows, cols, blocks, i32(n_blocks), i32(p),
                i32(q), i32(self.c), i32(h0), i32(h1), i32(spec.n_conv), i32(spec.fix_first), i32(spec.fix_last),
                i32(self.ntk and not maps), i32(record), i32(lap), pt, pslots,
                i32(pn), i32(pp), i32(pq_), i64(pstride), i32(pmode), nt_, i32(slot0), i32(n_next_slots),
                i64(nstride), i32(nmode), partial)  # fmt: skip
        self._stage_kernel((n * n_blocks,), (self.threads[s],), args, shared_mem=self.smem[s])
        return partial

    def _run(self, xa, xb, va, vb, rows, cols, record: bool):
        """All stages for the pairs ``(rows, cols)`` (device int32): float64 ``(n,)`` values, scaled
        (record mode: the self pairs, writing the maps ``va``; the value is not used)."""
        cp = self._cp
        d = self._dev[int(cp.cuda.Device().id)]
        n = int(len(rows))
        lists = self.map_blocks if record else self.pair_blocks
        n_stages = len(lists)
        prev = None
        for s in range(n_stages):
            nb = len(lists[s])
            last = s == n_stages - 1
            next_ = None
            if not last:
                mode = 1 if record else self.modes[s]
                stride = nb * int(self.geo[s, 0] * self.geo[s, 1]) * mode
                next_ = (cp.empty(n * stride, self.dtype), 0, stride, mode)
            if record:
                partial = self._stage(s, xa, xb, va, vb, rows, cols, d["map0"][s], 1, True, prev, next_, nb, True)
                if not last and nb > 1:
                    self._stage(s, xa, xb, va, vb, rows, cols, d["map1"][s], nb - 1, False, prev,
                                (next_[0], 1, next_[2], next_[3]), nb, True)  # fmt: skip
            else:
                partial = self._stage(s, xa, xb, va, vb, rows, cols, d["pair"][s], nb, False, prev, next_, nb, False)
            if not last:
                slots = d["map_slots" if record else "pair_slots"][s]
                prev = (next_[0], slots, nb, next_[2], next_[3])
        nb = 1 if record else len(lists[-1])
        out = cp.empty(n, cp.float64)
        args = (partial, np.int32(n), np.int32(nb), np.float64(self.scale), out)
        self._reduce_kernel(((n + 255) // 256,), (256,), args)
        return out

    def prepare(self, x):
        """Upload NHWC images ``x`` ``(n, P, Q, C)`` to the current device and compute their variance maps
        there, ``(n, sum_h P_h Q_h)`` (O(n)). Refuses images and maps as
        :meth:`cntk_core.gpu.FusedGPUEngine.prepare` does (pixel range; float32 flush-to-zero)."""
        cp = self._cp
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[1:] != (self.p, self.q, self.c):
            raise ValueError(f"expected images of shape (n, {self.p}, {self.q}, {self.c}), got {x.shape}")
        check_pixel_range(x, self.dtype)
        n = len(x)
        xd = cp.asarray(np.ascontiguousarray(x, dtype=self.dtype))
        v = cp.zeros((n, self.vstride), self.dtype)
        if n == 0:
            return xd, v
        self._on_device()
        per_image = self.dtype.itemsize * sum(len(b) * int(g[0] * g[1]) for b, g in zip(self.map_blocks, self.geo,
                                                                                      strict=False))  # fmt: skip
        batch = int(max(1, MEMORY_FRACTION * self._free_bytes() // max(per_image, 1)))

        def run(lo: int, hi: int) -> None:
            idx = cp.asarray(np.arange(lo, hi, dtype=np.int32))
            self._run(xd, xd, v, v, idx, idx, True)

        run_batched(n, batch, run, (cp.cuda.memory.OutOfMemoryError,), cp.get_default_memory_pool().free_all_blocks)
        peaks = [v[:, int(self.voff[s]) + k * int(g[0] * g[1]) : int(self.voff[s]) + (k + 1) * int(g[0] * g[1])]
                 .max(axis=1) for s, g in enumerate(self.geo) for k in range(int(g[3] - g[2]))]  # fmt: skip
        if not bool(cp.isfinite(v).all()):  # a block the maps needed was not computed (a bug, not the data)
            raise RuntimeError("StagedGPUEngine: variance maps with NaN; please report this network and image size")
        check_flush(cp.stack(peaks, axis=1) if peaks else v[:, :0], self.dtype)
        return xd, v

    def pairs(self, state1, state2, rows, cols) -> np.ndarray:
        """Float64 ``(n_pairs,)``: the kernel of the pairs ``(rows[k], cols[k])`` of two prepared blocks."""
        cp = self._cp
        (xa, va), (xb, vb) = state1, state2
        rows, cols, device = check_pairs(xa, xb, rows, cols)
        out = np.zeros(len(rows))
        if len(rows) == 0 or self.zero:  # zero: no trained layer, the NTK is identically 0
            return out

        def run(lo: int, hi: int) -> None:
            r = cp.asarray(rows[lo:hi].astype(np.int32))
            c = cp.asarray(cols[lo:hi].astype(np.int32))
            out[lo:hi] = self._run(xa, xb, va, vb, r, c, False).get()

        with cp.cuda.Device(device):
            self._on_device()
            batch = min(self.max_pairs, self.pair_cap)
            self.max_pairs = run_batched(len(rows), batch, run, (cp.cuda.memory.OutOfMemoryError,),
                                         cp.get_default_memory_pool().free_all_blocks)  # fmt: skip
        return out
