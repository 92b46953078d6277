"""Fused GPU engine (CuPy): one thread block runs every layer of a tile of displacement planes on chip.

The CUDA source is ``cntk_core/cuda/cntk_planes.cu`` (read with :mod:`importlib.resources`); its
header explains the tiling. In short: a pair's ``(PQ)^2`` covariance entries split into ``P*Q``
tiles of ``P*Q`` entries each, tile ``(gi, gj)`` being the entries ``[i, j, i', j']`` with
``i = (i' + gi) mod P`` and ``j = (j' + gj) mod Q``: up to four displacement planes packed side by
side, none mixing with another under ``tr3`` or the ReLU map. One block holds one tile in shared
memory (2 buffers x (Sigma, Theta) x P*Q entries: 16 KB in float32 at 32x32), runs all ``L`` layers
with one barrier per layer, and writes one float64 partial readout sum; a second kernel adds the
partials of each pair in tile order (so a value never depends on the launch it was part of). The
vanilla readout needs only tile ``(0, 0)``, the ``delta = 0`` plane.

Nothing here imports CuPy at module import time: a machine without CUDA can import this module.
:func:`emulate_tile` is a NumPy statement of exactly what one block computes (same indexing, same
arccos formula), checked on the CPU against ``tests/reference.py``.
"""

from __future__ import annotations

import functools
import importlib.resources
import math
from collections.abc import Callable

import numpy as np

from .layers import CanonicalSpec

#: rough GPU/CPU-core speed ratio: ``pair_cost`` is divided by it so that the Gram driver (which
#: sizes its calls for one CPU core) hands the GPU a few thousand GAP pairs per call
GPU_SPEEDUP = 1000.0
#: at most this many pairs per kernel launch (GAP 32x32: 8 KB of float64 partial sums per pair)
MAX_PAIRS_PER_LAUNCH = 1 << 18
#: fraction of the free GPU memory that one launch's partial sums may take
MEMORY_FRACTION = 0.25
_STATIC_SMEM_LIMIT = 48 * 1024
_CTYPES = {"float32": "float", "float64": "double"}


def kernel_source() -> str:
    """The CUDA C++ source of the fused kernels (``cntk_core/cuda/cntk_planes.cu``)."""
    return importlib.resources.files("cntk_core").joinpath("cuda", "cntk_planes.cu").read_text()


def tile_list(p: int, q: int, readout: str) -> np.ndarray:
    """Tiles ``(gi, gj)`` to visit, int32 ``(n_tiles, 2)``: all ``P*Q`` for GAP, ``(0, 0)`` for vanilla.

    The first row is always ``(0, 0)`` (the ``delta = 0`` plane), which the variance pass uses.
    """
    if readout == "vanilla":
        return np.zeros((1, 2), np.int32)
    gi, gj = np.meshgrid(np.arange(p), np.arange(q), indexing="ij")
    return np.stack([gi.ravel(), gj.ravel()], axis=1).astype(np.int32)


def threads_for(p: int, q: int) -> int:
    """Threads per block: the next power of two >= P*Q, between 32 and 256."""
    n = 32
    while n < p * q and n < 256:
        n *= 2
    return n


@functools.cache
def _module():
    import cupy

    return cupy.RawModule(
        code=kernel_source(),
        options=("-std=c++17",),
        name_expressions=("cntk_tiles<float>", "cntk_tiles<double>"),
    )


def run_batched(n: int, batch: int, fn: Callable[[int, int], None], oom_errors: tuple, on_oom=None) -> int:
    """Call ``fn(start, stop)`` over ``range(n)`` in chunks of ``batch``; halve and retry on OOM.

    A chunk that raises one of ``oom_errors`` is retried with half the size (after ``on_oom()``,
    e.g. freeing the memory pool); finished chunks are never redone. Re-raises when a single item
    does not fit. Returns the batch size that worked last (callers keep it for the next call).
    """
    batch = max(1, int(batch))
    start = 0
    while start < n:
        stop = min(n, start + batch)
        try:
            fn(start, stop)
        except oom_errors:
            if stop - start <= 1:
                raise
            if on_oom is not None:
                on_oom()
            batch = max(1, (stop - start) // 2)
            continue
        start = stop
    return batch


class FusedGPUEngine:
    """The paper's architecture on the GPU, one block per (pair, tile); see the module docstring.

    Parameters: ``spec`` (from ``Network.canonical()``), ``shape`` = ``(P, Q, C)`` of the images,
    ``kind`` ``"ntk"`` | ``"nngp"``, ``dtype`` float32 (float arithmetic, float64 readout sums) or
    float64. ``threads`` overrides the block size (a power of two, 32..1024); ``max_pairs`` the
    pairs per launch (default: from free GPU memory).

    Memory: ``prepare`` holds the images and their variance maps ``(n, L, P, Q)`` on the GPU; a
    launch of B pairs allocates ``B * n_tiles`` float64 partial sums (8 KB per GAP pair at 32x32).
    Shared memory per block: ``threads * 8 + 4 * P * Q * itemsize`` bytes.
    """

    def __init__(
        self,
        spec: CanonicalSpec,
        shape: tuple,
        kind: str,
        dtype,
        *,
        threads: int | None = None,
        max_pairs: int | None = None,
    ):
        if spec.n_conv < 1:
            raise ValueError(f"the fused GPU path needs at least one conv layer (depth >= 2), got {spec.n_conv}")
        if kind not in ("ntk", "nngp"):
            raise ValueError(f"kind must be 'ntk' or 'nngp', got {kind!r}")
        dt = np.dtype(dtype)
        if dt.name not in _CTYPES:
            raise ValueError(f"dtype must be float32 or float64, got {dt}")
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"shape must be (height, width, channels) with positive sizes, got {shape}")
        self.spec = spec
        self.ntk = kind == "ntk"
        self.dtype = dt
        self.p, self.q, self.c = (int(s) for s in shape)
        self.tiles = tile_list(self.p, self.q, spec.readout)
        self.n_tiles = len(self.tiles)
        self.scale = 1.0 if spec.readout == "vanilla" else 1.0 / (self.p * self.q) ** 2
        entries = self.p * self.q * self.n_tiles  # covariance entries per pair
        self.pair_cost = float(entries * spec.n_conv) / GPU_SPEEDUP
        #: flops per pair by the count of benchmarks/gpu_check.py (for reporting)
        self.flops_per_pair = float(entries) * flops_per_entry(spec.n_conv, self.c, self.ntk)
        self.threads = int(threads or threads_for(self.p, self.q))
        if self.threads < 32 or self.threads > 1024 or self.threads & (self.threads - 1):
            raise ValueError(f"threads must be a power of two in [32, 1024], got {self.threads}")
        self.smem = self.threads * 8 + 4 * self.p * self.q * dt.itemsize

        import cupy

        self._cp = cupy
        mod = _module()
        self._tile_kernel = mod.get_function(f"cntk_tiles<{_CTYPES[dt.name]}>")
        self._reduce_kernel = mod.get_function("cntk_reduce")
        if self.smem > _STATIC_SMEM_LIMIT:
            limit = cupy.cuda.Device().attributes.get("MaxSharedMemoryPerBlockOptin", _STATIC_SMEM_LIMIT)
            if self.smem > limit:
                raise ValueError(
                    f"images of {self.p}x{self.q} need {self.smem} bytes of shared memory per block in {dt}, "
                    f"more than this GPU's {limit}; use dtype='float32', smaller images, or backend='numba'"
                )
            self._tile_kernel.max_dynamic_shared_size_bytes = self.smem
        self._tiles_dev = cupy.asarray(self.tiles.ravel())
        self.max_pairs = int(max_pairs) if max_pairs else self._pairs_from_memory()

    def _pairs_from_memory(self) -> int:
        cp = self._cp
        free, _total = cp.cuda.runtime.memGetInfo()
        free += cp.get_default_memory_pool().free_bytes()
        per_pair = 8 * self.n_tiles + 24
        return int(max(1, min(MAX_PAIRS_PER_LAUNCH, MEMORY_FRACTION * free // per_pair, (2**31 - 1) // self.n_tiles)))

    def _launch(self, xa, xb, va, vb, rows, cols, n_tiles: int, record: bool):
        """Run the tile kernel on ``len(rows)`` pairs and reduce: float64 CuPy array ``(n_pairs,)``."""
        cp = self._cp
        i32 = np.int32
        n = int(len(rows))
        partial = cp.empty(n * n_tiles, cp.float64)
        args = (xa, xb, va, vb, rows, cols, self._tiles_dev, i32(n_tiles), i32(self.p), i32(self.q), i32(self.c))
        args += (i32(self.spec.n_conv), i32(self.spec.fix_first), i32(self.spec.fix_last), i32(self.ntk))
        args += (i32(record), partial)
        self._tile_kernel((n * n_tiles,), (self.threads,), args, shared_mem=self.smem)
        out = cp.empty(n, cp.float64)
        self._reduce_kernel(((n + 255) // 256,), (256,), (partial, i32(n), i32(n_tiles), np.float64(self.scale), out))
        return out

    def prepare(self, x):
        """Upload ``x`` ``(n, P, Q, C)`` and compute its variance maps ``(n, L, P, Q)`` on the GPU (O(n))."""
        cp = self._cp
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[1:] != (self.p, self.q, self.c):
            raise ValueError(f"expected images of shape (n, {self.p}, {self.q}, {self.c}), got {x.shape}")
        xd = cp.asarray(np.ascontiguousarray(x, dtype=self.dtype))
        n = len(x)
        v = cp.zeros((n, self.spec.n_conv, self.p, self.q), self.dtype)
        idx = cp.arange(n, dtype=cp.int32)
        # the first tile is (0, 0): the self pair's delta = 0 plane, in record mode
        self._launch(xd, xd, v, v, idx, idx, 1, True)
        return xd, v

    def pairs(self, x1, x2, state1, state2, rows, cols) -> np.ndarray:
        """Readout values of the pairs ``(block1[rows[k]], block2[cols[k]])``: float64 ``(n_pairs,)``.

        ``state1``/``state2`` come from :meth:`prepare`; ``x1``/``x2`` are unused (kept for the
        engine interface). Scaled like :class:`cntk_core.engines.NumbaEngine`.
        """
        cp = self._cp
        (xa, va), (xb, vb) = state1, state2
        rows = np.asarray(rows, dtype=np.int64).ravel()
        cols = np.asarray(cols, dtype=np.int64).ravel()
        if rows.shape != cols.shape:
            raise ValueError(f"rows and cols must have the same length, got {rows.shape} and {cols.shape}")
        out = np.empty(len(rows))
        if len(rows) == 0:
            return out
        if rows.min() < 0 or rows.max() >= len(xa) or cols.min() < 0 or cols.max() >= len(xb):
            raise ValueError(f"pair indices out of range for blocks of {len(xa)} and {len(xb)} images")

        def run(lo: int, hi: int) -> None:
            r = cp.asarray(rows[lo:hi].astype(np.int32))
            c = cp.asarray(cols[lo:hi].astype(np.int32))
            out[lo:hi] = self._launch(xa, xb, va, vb, r, c, self.n_tiles, False).get()

        def free_pool() -> None:
            cp.get_default_memory_pool().free_all_blocks()

        self.max_pairs = run_batched(len(rows), self.max_pairs, run, (cp.cuda.memory.OutOfMemoryError,), free_pool)
        return out


def flops_per_entry(n_conv: int, channels: int, ntk: bool = True) -> float:
    """Floating-point operations per covariance entry of one pair (the count of gpu_check.py).

    Input ``2C``; per layer h = 1..L: box sum of Sigma (8 adds), of Theta (8, NTK, h >= 2), ReLU dual
    14 (prod, sqrt, div, pi - angle, rho*(...), rho*rho, 1 - ., sqrt, +, norm*, *1/(9pi), k_dot's
    *1/(9pi), and 2 for kdot*Theta + K; arccos, sqrt and division count 1 each, clamps 0); readout 1.
    """
    relu = 14.0 if ntk else 11.0
    theta_box = 8.0 * (n_conv - 1) if ntk else 0.0
    return 2.0 * channels + 8.0 * n_conv + theta_box + relu * n_conv + 1.0


# ---------------------------------------------------------------------------------------------
# NumPy statement of one block (CPU-checkable copy of cntk_planes.cu:tile_thread)
# ---------------------------------------------------------------------------------------------


def _box3_tile(src, up, down, left, right):
    """``box3`` of the .cu for every entry of a tile at once (neighbour masks per row/column)."""
    p, q = src.shape
    padded = np.zeros((p + 2, q + 2), src.dtype)
    padded[1:-1, 1:-1] = src
    rmask = {-1: up, 0: np.ones_like(up), 1: down}
    cmask = {-1: left, 0: np.ones_like(left), 1: right}
    acc = np.zeros_like(src)
    for a in (-1, 0, 1):
        for b in (-1, 0, 1):
            acc += np.where(rmask[a] & cmask[b], padded[1 + a : 1 + a + p, 1 + b : 1 + b + q], 0)
    return acc


def _relu_dual_tile(s, prod):
    """``relu_dual`` of the .cu, elementwise, with the cancellation-free arccos."""
    t = s.dtype.type
    pos = prod > 0
    norm = np.where(pos, np.sqrt(np.where(pos, prod, 1)), t(0))
    rho = np.clip(np.where(pos, s / np.where(pos, norm, 1), t(0)), t(-1), t(1))
    angle = np.where(rho > t(0.5), t(2) * np.arcsin(np.sqrt((t(1) - rho) * t(0.5))), np.arccos(rho))
    pi, inv9pi = t(math.pi), t(1.0 / (9.0 * math.pi))
    k = norm * (rho * (pi - angle) + np.sqrt(t(1) - rho * rho)) * inv9pi
    return k, (pi - angle) * inv9pi


def emulate_tile(xa, xb, va, vb, gi, gj, n_conv, fix_first, fix_last, ntk, record=False) -> float:
    """What one block of ``cntk_tiles`` computes: the float64 readout sum of tile ``(gi, gj)``.

    xa, xb: ``(P, Q, C)`` images in the arithmetic dtype; va, vb: ``(L, P, Q)`` variance maps
    (with ``record``, ``va`` receives the maps of the self pair ``xa == xb`` and ``vb`` is unused).
    Tile entry ``[r, c]`` is covariance entry ``[i, j, r, c]``, ``i = (r + gi) % P``, ``j = (c + gj) % Q``.
    """
    p, q, _ = xa.shape
    r = np.arange(p)[:, None]
    c = np.arange(q)[None, :]
    i = (r + gi) % p
    j = (c + gj) % q
    up, down = (r > 0) & (i > 0), (r < p - 1) & (i < p - 1)
    left, right = (c > 0) & (j > 0), (c < q - 1) & (j < q - 1)
    s_src = np.einsum("abk,abk->ab", xa[i, j], xb)  # S0
    t_src = np.zeros_like(s_src)
    total = 0.0
    for h in range(1, n_conv + 1):
        s = _box3_tile(s_src, up, down, left, right)
        if h == 1:
            t = np.zeros_like(s) if fix_first else s.copy()
        else:
            t = _box3_tile(t_src, up, down, left, right)
        if record:
            va[h - 1] = s
            prod = s * s
        else:
            prod = va[h - 1][i, j] * vb[h - 1]
        k, k_dot = _relu_dual_tile(s, prod)
        t = k_dot * t
        if not (fix_last and h == n_conv):
            t = t + k
        s_src, t_src = k, t
        if h == n_conv:
            total = float((t if ntk else k).astype(np.float64).sum())
    return total


def emulate_matrix(x1, x2, spec: CanonicalSpec, kind: str = "ntk", dtype="float64") -> np.ndarray:
    """``[n1, n2]`` kernel from :func:`emulate_tile` over all tiles (small inputs only: CPU tests)."""
    dt = np.dtype(dtype)
    x1 = np.asarray(x1, dt)
    x2 = np.asarray(x2, dt)
    p, q = x1.shape[1], x1.shape[2]
    tiles = tile_list(p, q, spec.readout)
    scale = 1.0 if spec.readout == "vanilla" else 1.0 / (p * q) ** 2
    L = spec.n_conv

    def variances(x):
        v = np.zeros((len(x), L, p, q), dt)
        for n, img in enumerate(x):
            emulate_tile(img, img, v[n], v[n], 0, 0, L, True, False, True, record=True)
        return v

    v1, v2 = variances(x1), variances(x2)
    out = np.empty((len(x1), len(x2)))
    for a in range(len(x1)):
        for b in range(len(x2)):
            parts = [
                emulate_tile(x1[a], x2[b], v1[a], v2[b], gi, gj, L, spec.fix_first, spec.fix_last, kind == "ntk")
                for gi, gj in tiles
            ]
            out[a, b] = sum(parts) * scale  # tile order, as cntk_reduce
    return out
