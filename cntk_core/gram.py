"""Gram matrices in tiles: the public :func:`kernel_matrix` and :func:`network_kernel`."""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

from .backend import resolve_backend
from .engines import make_engine
from .layers import Network
from .presets import cntk
from .validation import as_images, check_dtype, check_flag, check_int, check_kind, check_pair, is_float64

#: work (layer-entries) per engine call; ~0.2-1 s on one CPU core, so progress and Ctrl-C stay live
_WORK_PER_CALL = 4e7
#: images per Gram tile side: per-image state (variance maps, L*P*Q numbers) is recomputed once per
#: tile, an overhead of about 2/_BLOCK of the pair work; 256 images hold ~42 MB of maps at 32x32, L=20
_BLOCK = 256
#: total work above which a progress bar is shown by default (~ a few seconds)
_WORK_FOR_PROGRESS = 3e8
#: images whose largest |pixel| lies outside [2^-_SAFE_EXPONENT, 2^_SAFE_EXPONENT] are scaled by a
#: power of two before the engine sees them (their products would leave float32's range, or at
#: 1e150 float64's, and give inf / NaN), and their kernel values scaled back; float32 narrows this
#: window further (:func:`exponent_window`)
_SAFE_EXPONENT = 32
#: bits by which the largest variance of an image may shrink over the layers (measured: 2^-6.5 for
#: one bright corner pixel of a 32x32 image at depth 21, 2^-7.4 for a 5x5 one), kept in float range
_DEPTH_HEADROOM = 10


def kernel_matrix(
    x1,
    x2=None,
    *,
    depth: int,
    readout: str = "gap",
    fix: bool = False,
    kind: str = "ntk",
    fix_first: bool | None = None,
    fix_last: bool | None = None,
    dtype="float64",
    backend: str | None = None,
    progress: bool | None = None,
    block_size: int | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """CNTK (``kind="ntk"``) or CNN-GP (``kind="nngp"``) Gram matrix of the paper's network.

    Parameters
    ----------
    x1, x2 : float arrays ``[n1, P, Q, C]`` and ``[n2, P, Q, C]`` (NHWC, preprocessed pixels).
        With ``x2=None`` the symmetric Gram of ``x1`` is computed (upper triangle only, mirrored).
    depth : the paper's depth ``d`` = number of 3x3 conv layers + 1 (>= 2).
    readout : ``"gap"`` (CNTK-GAP) or ``"vanilla"`` (CNTK-V, flatten + FC).
    fix : the official ``--fix``: first and last layer not trained; ``fix_first`` / ``fix_last``
        set the two halves separately. NNGP values do not depend on fix.
    dtype : arithmetic precision, ``"float64"`` (default) or ``"float32"``; sums are float64.
    backend : ``"numba"`` | ``"numpy"`` | ``"cupy"`` | ``None`` (``CNTK_BACKEND`` or automatic).
    progress : show a tqdm bar; ``None`` shows one only for long calls.
    block_size : images per Gram tile side (default 256).
    out : optional float64 ``[n1, n2]`` array (e.g. ``np.memmap``, a zarr array; either byte order)
        to write into. Checked before any work, without changing it: a call that fails before its
        first kernel values (a bad argument, an unusable backend) leaves ``out`` as it was. A call
        that fails later (Ctrl-C, a kernel out of the float range) leaves the finished tiles in it.

    Returns
    -------
    float64 NumPy array ``[n1, n2]`` (``out`` when given).

    Memory: besides the result, a call holds one row block and one column block of images with
    their variance maps (``block * depth * P * Q`` numbers each) and the engine's per-batch buffers
    (see :mod:`cntk_core.engines`); nothing grows with ``n1 * n2`` except the result itself.
    Images of extreme scale (largest |pixel| at or above 2^32, or below 2^-33; in float32 with 3
    channels at or above 2^29, or below 2^-14: see :func:`exponent_window`) are computed on a copy
    scaled by a power of two, which is exact: the kernel is homogeneous, K(a x, b x') = a b K(x, x')
    for a, b > 0. So 1e150-scale pixels give their finite kernel instead of NaN; a kernel beyond
    float64's range (about 1e308) raises ``OverflowError``.
    """
    network = cntk(depth, readout, fix, fix_first=fix_first, fix_last=fix_last)
    return network_kernel(
        network, x1, x2, kind=kind, dtype=dtype, backend=backend, progress=progress, block_size=block_size, out=out
    )


def network_kernel(
    network: Network,
    x1,
    x2=None,
    *,
    kind: str = "ntk",
    dtype="float64",
    backend: str | None = None,
    progress: bool | None = None,
    block_size: int | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Gram matrix of any :class:`~cntk_core.layers.Network`; see :func:`kernel_matrix`.

    The paper's architecture runs on the fused path of the chosen backend; any other layer list
    runs on the per-layer path (full ``(P Q)^2`` tensors per pair: keep such images small).
    """
    if not isinstance(network, Network):
        network = Network(network)
    if not network:
        raise ValueError(
            "the network has no layers; e.g. cntk_core.cntk(depth=3) or [Conv(3), ReLU(), GlobalAvgPool(), Dense()]"
        )
    check_kind(kind)
    dt = check_dtype(dtype)
    x1, x2, symmetric = _inputs(x1, x2)
    shape = (len(x1), len(x2))
    out = np.empty(shape) if out is None else _check_out(out, shape)
    engine = make_engine(resolve_backend(backend), network, x1.shape[1:], kind, dt)
    _probe_out(out)  # after every other check: nothing is written into out before the work starts
    _fill(engine, x1, x2, symmetric, [out], progress, block_size)
    return out


def kernel_matrices(
    x1,
    x2=None,
    *,
    depths,
    readout: str = "gap",
    fix: bool = False,
    kind: str = "ntk",
    fix_first: bool | None = None,
    fix_last: bool | None = None,
    dtype="float64",
    backend: str | None = None,
    progress: bool | None = None,
    block_size: int | None = None,
) -> dict[int, np.ndarray]:
    """``{depth: kernel_matrix(..., depth=depth)}`` for several depths, in one pass where possible.

    The recurrence of depth ``d`` is a prefix of that of any deeper network, so the fused CPU
    engine reads every requested depth out on the way to the deepest one: the cost is that of the
    deepest network alone. Other backends loop over the depths. Allocates one float64
    ``[n1, n2]`` result per depth; otherwise as :func:`kernel_matrix`.
    """
    depths = _check_depths(depths)
    network = cntk(depths[-1], readout, fix, fix_first=fix_first, fix_last=fix_last)
    check_kind(kind)
    dt = check_dtype(dtype)
    name = resolve_backend(backend)
    x1, x2, symmetric = _inputs(x1, x2)
    engine = make_engine(name, network, x1.shape[1:], kind, dt, depths=depths)
    if not getattr(engine, "multi_depth", False):
        opts = dict(readout=readout, fix=fix, kind=kind, fix_first=fix_first, fix_last=fix_last, dtype=dtype)
        x2_arg = None if symmetric else x2
        return {
            d: kernel_matrix(x1, x2_arg, depth=d, backend=name, progress=progress, block_size=block_size, **opts)
            for d in depths
        }
    outs = [np.empty((len(x1), len(x2))) for _ in depths]
    _fill(engine, x1, x2, symmetric, outs, progress, block_size)
    return dict(zip(depths, outs, strict=True))


def _check_out(out, shape: tuple[int, int]):
    """``out`` if it can take the result: a float64 array (either byte order) of ``shape``, a
    writeable NumPy array or ``np.memmap``, or any array object with ``shape``, ``dtype`` and
    ``out[rows, cols] = values`` coordinate assignment, such as a zarr array; else ``ValueError``.
    Writes nothing (see :func:`_probe_out`)."""
    if not all(hasattr(out, a) for a in ("shape", "dtype", "__setitem__")):
        raise ValueError(
            f"out must be a float64 array of shape {shape} (NumPy, np.memmap, zarr), got {type(out).__name__}"
        )
    if tuple(out.shape) != shape or not is_float64(out.dtype):
        raise ValueError(f"out must be a float64 array of shape {shape}, got {out.dtype} {tuple(out.shape)}")
    if isinstance(out, np.ndarray) and not out.flags.writeable:
        raise ValueError("out is read-only (e.g. a memmap opened with mode='r'); pass a writeable array")
    return out


def _probe_out(out) -> None:
    """Try the one form of assignment the tiles use on a non-NumPy ``out`` (dask arrays refuse it),
    with empty index arrays: the same code path, and nothing is written."""
    if isinstance(out, np.ndarray):
        return
    empty = np.zeros(0, np.intp)
    try:
        if getattr(out, "read_only", False) is True:  # zarr: an empty write would not reach the store
            raise PermissionError("the array was opened read-only")
        out[empty, empty] = np.zeros(0)
    except Exception as exc:
        raise ValueError(
            f"out ({type(out).__name__}) cannot take out[rows, cols] = values ({type(exc).__name__}: {exc}); "
            "pass a writeable NumPy array, np.memmap or zarr array"
        ) from None


def _check_depths(depths) -> list[int]:
    """Sorted distinct depths, each a (non-bool) integer >= 2, or a clear error: ``int()`` would
    silently turn 2.7 into 2 and "34" into 34."""
    if isinstance(depths, Real | str) or (isinstance(depths, np.ndarray) and depths.ndim == 0):
        return [check_int(depths, "depths", 2)]
    try:
        items = list(depths)
    except TypeError:
        raise TypeError(f"depths must be an integer or a list of integers >= 2, got {depths!r}") from None
    if not items:
        raise ValueError("depths must name at least one depth")
    return sorted({check_int(d, f"depths[{i}]", 2) for i, d in enumerate(items)})


def _inputs(x1, x2):
    """Validated ``(x1, x2, symmetric)``; ``x2`` is ``x1`` for a symmetric Gram."""
    x1 = as_images(x1, "x1")
    if x2 is None:
        return x1, x1, True
    x2 = as_images(x2, "x2")
    check_pair(x1, x2)
    return x1, x2, False


def _fill(engine, x1, x2, symmetric: bool, outs: list, progress, block_size) -> None:
    """Evaluate every needed pair tile by tile into ``outs`` (one array per engine output)."""
    if block_size is not None:
        block_size = check_int(block_size, "block_size", 1, " (images per tile side)")
    progress = check_flag(progress, "progress", allow_none=True)
    n1, n2 = len(x1), len(x2)
    dtype = getattr(engine, "dtype", np.float64)  # the engine's arithmetic sets the range window
    x1, e1 = _unit_scaled(x1, dtype)
    x2, e2 = (x1, e1) if symmetric else _unit_scaled(x2, dtype)
    scaled = bool(e1.any() or e2.any())
    tiles = _tiles(n1, n2, symmetric, block_size or _BLOCK)
    n_pairs = n1 * (n1 + 1) // 2 if symmetric else n1 * n2
    per_call = max(1, int(_WORK_PER_CALL // engine.pair_cost))
    show = progress if progress is not None else n_pairs * engine.pair_cost > _WORK_FOR_PROGRESS
    bar = _progress_bar(n_pairs, show, "kernel entries")
    try:
        state_rows = None
        for r0, r1, c0, c1, rows, cols in tiles:
            if state_rows is None or state_rows[0] != (r0, r1):
                state_rows = ((r0, r1), engine.prepare(x1[r0:r1]))
            state_cols = state_rows[1] if symmetric and (r0, r1) == (c0, c1) else engine.prepare(x2[c0:c1])
            for k in range(0, len(rows), per_call):
                rr, cc = rows[k : k + per_call], cols[k : k + per_call]
                values = np.asarray(engine.pairs(x1, x2, state_rows[1], state_cols, rr, cc)).reshape(len(rr), -1)
                if not np.isfinite(values).all():  # before scaling back: that raises OverflowError
                    raise FloatingPointError(_NON_FINITE)
                if scaled:
                    values = _scaled_back(values, e1[r0 + rr] + e2[c0 + cc])
                for j, out in enumerate(outs):
                    out[r0 + rr, c0 + cc] = values[:, j]
                    if symmetric:
                        out[c0 + cc, r0 + rr] = values[:, j]
                bar.update(len(rr))
    finally:
        bar.close()


_NON_FINITE = (
    "the kernel is not finite (NaN or inf) for some pairs: its values left the range of the arithmetic "
    "dtype. A very deep network's kernel shrinks with every layer until it underflows (float64: depths "
    "in the thousands; float32: in the hundreds); use fewer layers, or dtype='float64'. Nothing was returned"
)


def exponent_window(dtype, channels: int) -> tuple[int, int]:
    """``(lo, hi)``: images whose largest |pixel| is ``m 2^e`` (1/2 <= m < 1) with ``lo <= e <= hi``
    go to the engines unscaled in arithmetic ``dtype``; :func:`_unit_scaled` scales the others.

    The one rule for every engine; the tightest is the GPU kernel (``cntk_core/cuda/cntk_planes.cu``),
    which forms products of two variances, ``va * vb`` and ``s * s``. Every variance is at most
    ``9 C peak^2`` (layer 1's 3x3 box sum of C-channel products; the ReLU map and the later box sums
    never grow the largest one), so the products stay below ``81 C^2 2^(4e)``: ``hi`` keeps that
    under half the dtype's largest number. At the small end, NVRTC's ``-ftz=true`` (CuPy always adds
    it) flushes float32 products below the smallest normal number to zero, and the entry's K with
    them; such an entry's K is below ``sqrt(tiny)``, while the image's largest layer-1 variance is
    at least ``peak^2 >= 2^(2e - 2)``: ``lo`` keeps the flushed entries below ``2^-(digits +
    _DEPTH_HEADROOM)`` of it, i.e. under the dtype's rounding after the shrinking over depth. Both
    ends stay within ``[-_SAFE_EXPONENT, _SAFE_EXPONENT]``. float32 with 3 channels: ``(-13, 29)``;
    float64: ``(-32, 32)``. Scaling by a power of two is exact, so the window never changes a value
    that is inside the range.
    """
    info = np.finfo(dtype)
    top, bottom = math.log2(float(info.max)), math.log2(float(info.tiny))
    hi = math.floor((top - 1 - 2 * math.log2(9 * max(int(channels), 1))) / 4)
    lo = math.ceil((bottom / 2 + info.nmant + 1 + _DEPTH_HEADROOM + 2) / 2)
    return max(lo, -_SAFE_EXPONENT), max(0, min(hi, _SAFE_EXPONENT))


def _unit_scaled(x: np.ndarray, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """``(x', e)``: x' = x * 2^-e per image, e (int32 ``[n]``) nonzero only for images whose largest
    |pixel| has its exponent outside :func:`exponent_window` (float64: [2^-33, 2^32)); their largest
    |pixel| becomes [1/2, 1). Returns ``x`` itself when no image needs it; else allocates one scaled
    copy of ``x``. The peaks are found without a temporary copy (per-image max and min of a view)."""
    flat = x.reshape(len(x), -1)
    peak = np.maximum(flat.max(axis=1), -flat.min(axis=1))
    exponent = np.frexp(peak)[1].astype(np.int32)  # peak = m 2^e, 1/2 <= m < 1 (e = 0 for 0)
    lo, hi = exponent_window(dtype, x.shape[-1])
    exponent[(exponent >= lo) & (exponent <= hi)] = 0
    if not exponent.any():
        return x, exponent
    return np.ldexp(x, -exponent[:, None, None, None]), exponent


def _scaled_back(values: np.ndarray, exponents: np.ndarray) -> np.ndarray:
    """Kernel values of scaled images (:func:`_unit_scaled`) times 2^(e1 + e2), or ``OverflowError``."""
    with np.errstate(over="ignore"):
        values = np.ldexp(values, exponents[:, None])
    if not np.isfinite(values).all():
        raise OverflowError(
            "kernel values exceed float64's range (~1.8e308): the images' pixels are too large for the "
            "kernel itself to be a float64 number. Divide the images by a scale s and keep s apart: the "
            "kernel is homogeneous, K(x / s, x' / s) = K(x, x') / s^2"
        )
    return values


def _tiles(n1: int, n2: int, symmetric: bool, block: int):
    """Yield ``(r0, r1, c0, c1, rows, cols)``: tile bounds and the pair indices inside the tile.

    For a symmetric Gram only tiles on or above the diagonal, and within diagonal tiles only
    pairs with ``row <= col``.
    """
    for r0 in range(0, n1, block):
        r1 = min(r0 + block, n1)
        for c0 in range(r0 if symmetric else 0, n2, block):
            c1 = min(c0 + block, n2)
            rows, cols = np.meshgrid(np.arange(r1 - r0), np.arange(c1 - c0), indexing="ij")
            rows, cols = rows.ravel(), cols.ravel()
            if symmetric and r0 == c0:
                keep = rows <= cols
                rows, cols = rows[keep], cols[keep]
            yield r0, r1, c0, c1, rows, cols


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress_bar(total: int, show: bool, unit: str):
    if not show:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, unit=" " + unit, unit_scale=True, smoothing=0.1)
