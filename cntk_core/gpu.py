"""Fused GPU engine (CuPy): one thread block runs every layer of a shift block of displacement planes on chip.

The CUDA source is ``cntk_core/cuda/cntk_planes.cu`` (read with :mod:`importlib.resources`); its
header explains the shift blocks. In short: a pair's ``(PQ)^2`` covariance entries split into
``P*Q`` shift blocks of ``P*Q`` entries each, shift block ``(gi, gj)`` being the entries
``[i, j, i', j']`` with ``i = (i' + gi) mod P`` and ``j = (j' + gj) mod Q``: up to four displacement
planes packed side by side, none mixing with another under ``tr3`` or the ReLU map (the CPU engine,
:mod:`cntk_core.cpu_planes`, cuts the same entries into shift blocks by one flat shift instead). One
thread block holds one shift block in shared memory (2 buffers x (Sigma, Theta) x P*Q entries: 16 KB
in float32 at 32x32), runs all ``L`` layers with one barrier per layer, and writes one float64
partial readout sum; a second kernel adds the partials of each pair in shift-block order (so a value
never depends on the launch it was part of). The vanilla readout needs only shift block ``(0, 0)``,
the ``delta = 0`` plane. The LAP readout with window ``c`` (zero padding) weights entry
``[i, j, i', j']`` by the integer ``n_P(i, i') * n_Q(j, j')`` (the kernel's ``lap_count``; the pair's
sum is scaled by ``(2c + 1)^-4``) and visits only the shift blocks holding displacements with
``|di|, |dj| <= 2c`` (:func:`shift_block_list`). Networks with pooling run on
:class:`cntk_core.gpu_stages.StagedGPUEngine` (the same kernels' helpers, one launch per stage);
circular padding is not fused (:meth:`FusedGPUEngine.supports`) and runs on the per-layer path with
CuPy arrays. The flip-symmetrised kernel is formed by the Gram driver from two evaluations.

Per device: the kernels are compiled and loaded once per device (CuPy), and a thread block needing more
than 48 KB of shared memory needs the kernel's limit raised on that device. The limit belongs to
the kernel, not to one engine, so it is only ever raised, to the largest any engine has launched
with on that device (``_SMEM_SET``), right before a launch on the device that runs it. An engine
launches where its prepared images live. Range: images go in with their largest |pixel| inside
:func:`cntk_core.scaling.exponent_window` (``kernel_matrix`` rescales the others exactly), and in
float32 :meth:`FusedGPUEngine.prepare` refuses variance maps that flush-to-zero would empty.

Nothing here imports CuPy at module import time: a machine without CUDA can import this module.
``tests/gpu_emulator.py`` states in NumPy what one thread block computes (same indexing, same
arccos formula), checked on the CPU against :mod:`cntk_core.testing`; ``tests/cuda_host.py`` builds
the ``.cu`` itself for the CPU.
"""

from __future__ import annotations

import functools
import importlib.resources
import math
import os
from collections.abc import Callable

import numpy as np

from .architecture import Architecture
from .recurrence import gap_scale
from .validation import ParameterError, check_kind

#: rough GPU/CPU-core speed ratio: ``pair_cost`` is divided by it so that the Gram driver (which
#: sizes its calls for one CPU core) hands the GPU a few thousand GAP pairs per call
GPU_SPEEDUP = 1000.0
#: at most this many pairs per kernel launch (GAP 32x32: 8 KB of float64 partial sums per pair)
MAX_PAIRS_PER_LAUNCH = 1 << 18
#: fraction of the free GPU memory that one launch's partial sums may take
MEMORY_FRACTION = 0.25
#: CUDA's limit on thread blocks per launch (grid.x); a launch has pairs * n_shift_blocks of them
MAX_BLOCKS = 2**31 - 1
#: environment variable: threads per block of engines built without ``threads`` (e.g. gpu_check --threads)
THREADS_ENV = "CNTK_GPU_THREADS"
#: NVRTC options (CuPy adds ``-ftz=true`` and ``-arch``) and the template instances it compiles
NVRTC_OPTIONS = ("-std=c++17",)
NAME_EXPRESSIONS = (
    "cntk_shift_blocks<float>",
    "cntk_shift_blocks<double>",
    "cntk_stage_blocks<float>",
    "cntk_stage_blocks<double>",
)
#: the CUDA sources, in the order of the one text NVRTC compiles (cntk_stages.cu uses cntk_planes.cu)
CUDA_SOURCES = ("cntk_planes.cu", "cntk_stages.cu")
#: readouts the fused kernel computes (with zero padding and no pooling: FusedGPUEngine.supports)
FUSED_READOUTS = ("gap", "vanilla", "lap")
_STATIC_SMEM_LIMIT = 48 * 1024
_CTYPES = {"float32": "float", "float64": "double"}
#: dynamic shared memory limit set so far per (device id, kernel name); only ever raised
_SMEM_SET: dict[tuple[int, str], int] = {}


def kernel_source() -> str:
    """The CUDA C++ source of the fused kernels as one text: ``cntk_core/cuda/cntk_planes.cu`` (the
    unpooled networks) then ``cntk_stages.cu`` (pooled ones, :mod:`cntk_core.gpu_stages`)."""
    root = importlib.resources.files("cntk_core").joinpath("cuda")
    return "\n".join(root.joinpath(name).read_text() for name in CUDA_SOURCES)


def _check_lap_c(readout: str, lap_c) -> int | None:
    """``lap_c`` as an int >= 0 for ``readout="lap"`` (``ParameterError`` otherwise), ``None`` else."""
    if readout != "lap":
        return None
    if lap_c is None or isinstance(lap_c, bool) or int(lap_c) != lap_c or lap_c < 0:
        raise ParameterError("lap_c", f"readout='lap' needs lap_c, an int >= 0, got {lap_c!r}")
    return int(lap_c)


def lap_groups(n: int, c: int) -> np.ndarray:
    """Row (or column) groups ``g`` of one axis of length ``n`` that hold a displacement ``|d| <= 2c``
    (``d = g`` or ``g - n``): ``0 .. 2c`` and ``n - 2c .. n - 1``, ascending, ``min(n, 4c + 1)`` of them."""
    g = np.arange(n)
    return g[(g <= 2 * c) | (g >= n - 2 * c)]


def shift_block_list(p: int, q: int, readout: str, lap_c: int | None = None) -> np.ndarray:
    """Shift blocks ``(gi, gj)`` to visit, int32 ``(n_shift_blocks, 2)``: all ``P*Q`` for GAP, ``(0, 0)``
    for vanilla, and for LAP with window ``lap_c = c`` those holding an entry of nonzero weight
    (``gi`` in :func:`lap_groups` of ``P``, ``gj`` of ``Q``: ``min(P, 4c+1) * min(Q, 4c+1)`` blocks).

    The first row is always ``(0, 0)`` (the ``delta = 0`` plane), which the variance pass uses.
    """
    c = _check_lap_c(readout, lap_c)
    if readout == "vanilla":
        return np.zeros((1, 2), np.int32)
    rows, cols = (np.arange(p), np.arange(q)) if c is None else (lap_groups(p, c), lap_groups(q, c))
    gi, gj = np.meshgrid(rows, cols, indexing="ij")
    return np.stack([gi.ravel(), gj.ravel()], axis=1).astype(np.int32)


def readout_scale(p: int, q: int, readout: str, lap_c: int | None = None) -> float:
    """Factor of a pair's summed (weighted) readout: ``1 / (PQ)^2`` (GAP), 1 (vanilla),
    ``1 / (2c + 1)^4`` (LAP, whose integer weights the kernel applies per entry)."""
    c = _check_lap_c(readout, lap_c)
    if c is not None:
        return float(2 * c + 1) ** -4
    return 1.0 if readout == "vanilla" else gap_scale(p, q)


def kernel_lap_c(p: int, q: int, readout: str, lap_c: int | None = None) -> int:
    """The kernel's ``lap_c`` argument: -1 (no weights) for GAP and vanilla, else ``min(c, max(P, Q) - 1)``
    (a window covering an axis counts every centre, so larger ones weigh alike; no int overflow)."""
    c = _check_lap_c(readout, lap_c)
    return -1 if c is None else min(c, max(p, q) - 1)


def threads_for(p: int, q: int) -> int:
    """Threads per thread block: the next power of two >= P*Q, between 32 and 256."""
    n = 32
    while n < p * q and n < 256:
        n *= 2
    return n


@functools.cache
def _module():
    import cupy

    return cupy.RawModule(code=kernel_source(), options=NVRTC_OPTIONS, name_expressions=NAME_EXPRESSIONS)


def ftz_floor(dtype) -> float:
    """Variance below which a map's largest entry means flushed entries that matter: entries within
    the dtype's rounding of it (``2^-digits`` times it) have products under the smallest normal
    number, which ``-ftz=true`` turns into 0 (``sqrt(tiny) * 2^digits``: ``2^-39`` in float32)."""
    info = np.finfo(dtype)
    return math.sqrt(float(info.tiny)) * 2.0 ** (info.nmant + 1)


def check_pixel_range(x: np.ndarray, dtype) -> None:
    """``ValueError`` for NHWC images ``x`` whose largest |pixel| is outside
    :func:`cntk_core.scaling.exponent_window` of ``dtype`` (``kernel_matrix`` scales such images by
    an exact power of two before an engine sees them)."""
    from .scaling import exponent_window

    if not len(x):
        return
    flat = x.reshape(len(x), -1)
    exponent = np.frexp(np.maximum(flat.max(axis=1), -flat.min(axis=1)))[1]
    lo, hi = exponent_window(dtype, x.shape[-1])
    if exponent.min() < lo or exponent.max() > hi:
        raise ValueError(
            f"images whose largest |pixel| is outside [2^{lo - 1}, 2^{hi}) leave the {np.dtype(dtype)} range of "
            "the GPU kernel; cntk_core.kernel_matrix scales them by an exact power of two"
        )


def check_flush(peaks, dtype) -> None:
    """``FloatingPointError`` where, in float32, some image's largest variance at some layer
    (``peaks``, a CuPy or NumPy array) is positive but below :func:`ftz_floor`: the GPU's
    flush-to-zero would drop entries that matter (the kernel shrinks with depth, fastest on small
    images; use float64)."""
    if np.dtype(dtype) != np.float32 or not peaks.size:
        return
    if bool(((peaks > 0) & (peaks < ftz_floor(dtype))).any()):
        raise FloatingPointError(
            f"some images' variances fall below {ftz_floor(dtype):.1e} at some layer, where the "
            "GPU's float32 flush-to-zero drops entries of the kernel (the kernel shrinks with depth, "
            "fastest on small images); use dtype='float64'"
        )


def check_pairs(xa, xb, rows, cols) -> tuple[np.ndarray, np.ndarray, int | None]:
    """``(rows, cols, device)`` of a ``pairs`` call on the prepared image blocks ``xa``, ``xb`` (CuPy):
    the indices as int64 ``(n_pairs,)``, and the GPU both blocks live on (``None`` for no pairs).
    ``ValueError`` for indices of different lengths or out of range, or blocks on different GPUs."""
    rows = np.asarray(rows, dtype=np.int64).ravel()
    cols = np.asarray(cols, dtype=np.int64).ravel()
    if rows.shape != cols.shape:
        raise ValueError(f"rows and cols must have the same length, got {rows.shape} and {cols.shape}")
    if len(rows) == 0:
        return rows, cols, None
    if rows.min() < 0 or rows.max() >= len(xa) or cols.min() < 0 or cols.max() >= len(xb):
        raise ValueError(f"pair indices out of range for blocks of {len(xa)} and {len(xb)} images")
    device = int(xa.device.id)
    if int(xb.device.id) != device:
        raise ValueError(f"the two blocks were prepared on different GPUs ({device} and {int(xb.device.id)})")
    return rows, cols, device


def _threads(threads) -> int | None:
    if threads is None and os.environ.get(THREADS_ENV, "").strip():
        try:
            threads = int(os.environ[THREADS_ENV])
        except ValueError:
            raise ValueError(f"{THREADS_ENV} must be an integer, got {os.environ[THREADS_ENV]!r}") from None
    return threads


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
    """The paper's architecture on the GPU, one thread block per (pair, shift block); see the module docstring.

    Parameters: ``spec`` (from ``Network.canonical()``), ``shape`` = ``(P, Q, C)`` of the images,
    ``kind`` ``"ntk"`` | ``"nngp"``, ``dtype`` float32 (float arithmetic, float64 readout sums) or
    float64. ``threads`` overrides the thread block size (a power of two, 32..1024; default
    ``CNTK_GPU_THREADS`` or :func:`threads_for`); ``max_pairs`` the pairs per launch (default: from
    free GPU memory; either way at most ``MAX_BLOCKS // n_shift_blocks``).

    Networks: :meth:`supports` (readout ``gap``, ``vanilla`` or ``lap``; zero padding; no pooling);
    others raise ``ParameterError``. ``spec.flip`` is not this engine's business: it computes the
    network's kernel, and the Gram driver forms the flip-symmetrised one from two evaluations.

    Memory: ``prepare`` holds the images and their variance maps ``(n, L, P, Q)`` on the GPU; a
    launch of B pairs allocates ``B * n_shift_blocks`` float64 partial sums (8 KB per GAP pair at
    32x32; LAP: ``min(P, 4c+1) * min(Q, 4c+1)`` shift blocks). Shared memory per thread block:
    ``threads * 8 + 4 * P * Q * itemsize`` bytes.
    """

    @staticmethod
    def supports(spec: Architecture | None) -> bool:
        """Whether the fused kernel computes ``spec``'s network: readout in :data:`FUSED_READOUTS`,
        zero padding, no pooling (``flip`` does not matter: the Gram driver applies it)."""
        return spec is not None and spec.readout in FUSED_READOUTS and spec.padding == "zero" and not spec.pools

    def __init__(
        self,
        spec: Architecture,
        shape: tuple,
        kind: str,
        dtype,
        *,
        threads: int | None = None,
        max_pairs: int | None = None,
    ):
        check_kind(kind)
        if not self.supports(spec):
            param = "pools" if spec.pools else "padding" if spec.padding != "zero" else "readout"
            where = (
                "pooled networks run on cntk_core.gpu_stages.StagedGPUEngine"
                if param == "pools"
                else "such networks run on the per-layer path"
            )
            raise ParameterError(
                param,
                f"the fused GPU kernel runs readouts {FUSED_READOUTS} with zero padding and no pooling, not "
                f"{spec!r}; {where} (cntk_core.network_kernel on backend='cupy' picks the engine)",
            )
        dt = np.dtype(dtype)
        if dt.name not in _CTYPES:
            raise ValueError(f"dtype must be float32 or float64, got {dt}")
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"shape must be (height, width, channels) with positive sizes, got {shape}")
        self.spec = spec
        self.ntk = kind == "ntk"
        self.dtype = dt
        self.p, self.q, self.c = (int(s) for s in shape)
        if self.p * self.q * self.q >= 2**32:  # the kernel's r = e / Q by reciprocal is exact below
            raise ValueError(f"images of {self.p}x{self.q} are too large for the GPU kernel; use backend='numba'")
        self.shift_blocks = shift_block_list(self.p, self.q, spec.readout, spec.lap_c)
        self.n_shift_blocks = len(self.shift_blocks)
        self.scale = readout_scale(self.p, self.q, spec.readout, spec.lap_c)
        self.lap_arg = kernel_lap_c(self.p, self.q, spec.readout, spec.lap_c)  # the kernel's argument
        entries = self.p * self.q * self.n_shift_blocks  # covariance entries per pair
        self.pair_cost = float(entries * spec.n_conv) / GPU_SPEEDUP
        #: flops per pair by the count of benchmarks/gpu_check.py (for reporting)
        self.flops_per_pair = float(entries) * flops_per_entry(spec.n_conv, self.c, self.ntk, self.lap_arg >= 0)
        self.threads = int(_threads(threads) or threads_for(self.p, self.q))
        if self.threads < 32 or self.threads > 1024 or self.threads & (self.threads - 1):
            raise ValueError(f"threads must be a power of two in [32, 1024], got {self.threads}")
        self.smem = self.threads * 8 + 4 * self.p * self.q * dt.itemsize
        #: most pairs one launch may hold: grid.x = pairs * n_shift_blocks <= MAX_BLOCKS
        self.pair_cap = max(1, MAX_BLOCKS // self.n_shift_blocks)
        if max_pairs is not None and (isinstance(max_pairs, bool) or int(max_pairs) != max_pairs or max_pairs < 1):
            raise ValueError(f"max_pairs must be a positive integer, got {max_pairs!r}")

        import cupy

        self._cp = cupy
        mod = _module()
        self._name = f"cntk_shift_blocks<{_CTYPES[dt.name]}>"
        self._shift_block_kernel = mod.get_function(self._name)
        self._reduce_kernel = mod.get_function("cntk_reduce")
        self._shift_blocks_dev: dict[int, object] = {}  # the shift block list, per device id
        self._on_device()  # fails now if the current device cannot run it
        self.max_pairs = min(int(max_pairs), self.pair_cap) if max_pairs else self._pairs_from_memory()

    def _on_device(self):
        """The shift block list on the current device, where the kernel's shared-memory limit is now at least
        ``self.smem`` (raised if needed; never lowered, since other engines launch the same kernel)."""
        cp = self._cp
        device = cp.cuda.Device()
        dev = int(device.id)
        key = (dev, self._name)
        if self.smem > _SMEM_SET.get(key, _STATIC_SMEM_LIMIT):
            limit = int(device.attributes.get("MaxSharedMemoryPerBlockOptin", _STATIC_SMEM_LIMIT))
            if self.smem > limit:
                raise ValueError(
                    f"images of {self.p}x{self.q} need {self.smem} bytes of shared memory per block in "
                    f"{self.dtype}, more than GPU {dev}'s {limit}; use dtype='float32', smaller images, "
                    "or backend='numba'"
                )
            self._shift_block_kernel.max_dynamic_shared_size_bytes = self.smem
            _SMEM_SET[key] = self.smem
        if dev not in self._shift_blocks_dev:
            self._shift_blocks_dev[dev] = cp.asarray(self.shift_blocks.ravel())
        return self._shift_blocks_dev[dev]

    def _pairs_from_memory(self) -> int:
        cp = self._cp
        free, _total = cp.cuda.runtime.memGetInfo()
        free += cp.get_default_memory_pool().free_bytes()
        per_pair = 8 * self.n_shift_blocks + 24
        return int(max(1, min(MAX_PAIRS_PER_LAUNCH, MEMORY_FRACTION * free // per_pair, self.pair_cap)))

    def _launch(self, xa, xb, va, vb, rows, cols, n_blocks: int, record: bool):
        """Run the shift-block kernel on ``len(rows)`` pairs x ``n_blocks`` shift blocks and reduce:
        float64 CuPy array ``(n_pairs,)``, on the current device."""
        cp = self._cp
        i32 = np.int32
        n = int(len(rows))
        if n * n_blocks > MAX_BLOCKS:
            raise ValueError(
                f"{n} pairs x {n_blocks} shift blocks is more thread blocks than one launch can have ({MAX_BLOCKS})"
            )
        blocks_dev = self._on_device()
        partial = cp.empty(n * n_blocks, cp.float64)
        args = (xa, xb, va, vb, rows, cols, blocks_dev, i32(n_blocks), i32(self.p), i32(self.q), i32(self.c))
        args += (i32(self.spec.n_conv), i32(self.spec.fix_first), i32(self.spec.fix_last), i32(self.ntk))
        args += (i32(record), i32(-1 if record else self.lap_arg), partial)
        self._shift_block_kernel((n * n_blocks,), (self.threads,), args, shared_mem=self.smem)
        out = cp.empty(n, cp.float64)
        self._reduce_kernel(((n + 255) // 256,), (256,), (partial, i32(n), i32(n_blocks), np.float64(self.scale), out))
        return out

    def prepare(self, x):
        """Upload ``x`` ``(n, P, Q, C)`` to the current device and compute its variance maps
        ``(n, L, P, Q)`` there (O(n)).

        Refuses (``ValueError``) images whose largest |pixel| is outside
        :func:`cntk_core.scaling.exponent_window` (``kernel_matrix`` scales those exactly), and in
        float32 (``FloatingPointError``) maps whose largest variance at some layer is below
        :func:`ftz_floor`: ``-ftz=true`` would zero entries that matter (the kernel itself shrinks
        out of float32's range with depth, e.g. tiny images in deep networks; use float64).
        """
        cp = self._cp
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[1:] != (self.p, self.q, self.c):
            raise ValueError(f"expected images of shape (n, {self.p}, {self.q}, {self.c}), got {x.shape}")
        n = len(x)
        check_pixel_range(x, self.dtype)
        xd = cp.asarray(np.ascontiguousarray(x, dtype=self.dtype))
        v = cp.zeros((n, self.spec.n_conv, self.p, self.q), self.dtype)
        if n == 0:  # a launch of no thread blocks is an error in CUDA
            return xd, v
        idx = cp.arange(n, dtype=cp.int32)
        # the first shift block is (0, 0): the self pair's delta = 0 plane, in record mode
        self._launch(xd, xd, v, v, idx, idx, 1, True)
        check_flush(v.reshape(n, self.spec.n_conv, -1).max(axis=2), self.dtype)
        return xd, v

    def pairs(self, state1, state2, rows, cols) -> np.ndarray:
        """Readout values of the pairs ``(block1[rows[k]], block2[cols[k]])``: float64 ``(n_pairs,)``.

        ``state1``/``state2`` come from :meth:`prepare` of the two blocks of images. Scaled like
        :class:`cntk_core.engines.NumbaEngine`.
        """
        cp = self._cp
        (xa, va), (xb, vb) = state1, state2
        rows, cols, device = check_pairs(xa, xb, rows, cols)
        out = np.empty(len(rows))
        if len(rows) == 0:
            return out

        def run(lo: int, hi: int) -> None:
            r = cp.asarray(rows[lo:hi].astype(np.int32))
            c = cp.asarray(cols[lo:hi].astype(np.int32))
            out[lo:hi] = self._launch(xa, xb, va, vb, r, c, self.n_shift_blocks, False).get()

        def free_pool() -> None:
            cp.get_default_memory_pool().free_all_blocks()

        with cp.cuda.Device(device):  # launch where the prepared images live
            batch = min(self.max_pairs, self.pair_cap)
            self.max_pairs = run_batched(len(rows), batch, run, (cp.cuda.memory.OutOfMemoryError,), free_pool)
        return out


def flops_per_entry(n_conv: int, channels: int, ntk: bool = True, weighted: bool = False) -> float:
    """Floating-point operations per covariance entry of one pair (the count of gpu_check.py).

    Input ``2C``; per layer h = 1..L: box sum of Sigma (8 adds), of Theta (8, NTK, h >= 2), ReLU dual
    14 (prod, sqrt, div, pi - angle, rho*(...), rho*rho, 1 - ., sqrt, +, norm*, *1/(9pi), k_dot's
    *1/(9pi), and 2 for kdot*Theta + K; arccos, sqrt and division count 1 each, clamps 0); readout 1,
    and 1 more for the LAP weight's multiply (``weighted``; its integer count is not a flop).
    """
    relu = 14.0 if ntk else 11.0
    theta_box = 8.0 * (n_conv - 1) if ntk else 0.0
    return 2.0 * channels + 8.0 * n_conv + theta_box + relu * n_conv + 1.0 + float(weighted)
