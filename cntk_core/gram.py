"""Gram matrices in tiles: the public :func:`kernel_matrix`, :func:`kernel_matrices` and :func:`network_kernel`.

A *tile* is a block of the Gram matrix: up to ``block_size`` rows times ``block_size`` columns of
images (for a symmetric Gram only tiles on or above the diagonal). The driver prepares each tile's
row and column images once (the engine's per-image state), then asks the engine for the tile's
pairs in calls of bounded work; between two calls it reports progress and asks whether to stop.

Hooks for front ends (the lab's widgets use them; a script passes ``progress=True``):

- ``progress``: ``True`` / ``False`` / ``None`` (a tqdm bar, none, or one only for long calls), or
  a callable ``progress(done, total)`` called after every engine call with the number of kernel
  entries computed so far and in all (a symmetric Gram counts its upper triangle).
- ``cancel``: a callable with no arguments, called before every engine call; a true result stops
  the call with :class:`KernelCancelled` (it may also raise its own exception). Finished tiles stay
  in ``out``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from numbers import Real

import numpy as np

from .architecture import MIN_DEPTH, Architecture
from .backend import resolve_backend
from .engines import make_engine
from .flip import FlipEngine
from .layers import Network
from .scaling import scaled_back, unit_scaled
from .validation import (
    ParameterError,
    ParameterTypeError,
    as_images,
    check_dtype,
    check_flag,
    check_int,
    check_kind,
    check_pair,
    is_float64,
)

#: work (layer-entries) per engine call; ~0.2-1 s on one CPU core, so progress and Ctrl-C stay live
_WORK_PER_CALL = 4e7
#: images per Gram tile side: per-image state (variance maps, L*P*Q numbers) is recomputed once per
#: tile, an overhead of about 2/_BLOCK of the pair work; 256 images hold ~42 MB of maps at 32x32, L=20
_BLOCK = 256
#: total work above which a progress bar is shown by default (~ a few seconds)
_WORK_FOR_PROGRESS = 3e8
Progress = bool | None | Callable[[int, int], object]
Cancel = Callable[[], object] | None


class KernelCancelled(Exception):
    """Raised by the Gram driver when its ``cancel`` hook answers true; finished tiles are kept."""


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
    lap_c: int | None = None,
    padding: str = "zero",
    pools: tuple[int, ...] = (),
    flip: bool = False,
    dtype="float64",
    backend: str | None = None,
    progress: Progress = None,
    block_size: int | None = None,
    out: np.ndarray | None = None,
    cancel: Cancel = None,
) -> np.ndarray:
    """CNTK (``kind="ntk"``) or CNN-GP (``kind="nngp"``) Gram matrix of the paper's network and its extensions.

    Parameters
    ----------
    x1, x2 : float arrays ``[n1, P, Q, C]`` and ``[n2, P, Q, C]`` (NHWC, preprocessed pixels).
        With ``x2=None`` the symmetric Gram of ``x1`` is computed (upper triangle only, mirrored).
    depth : the paper's depth ``d`` = number of 3x3 conv layers + 1 (>= 2).
    readout : ``"gap"`` (CNTK-GAP), ``"vanilla"`` (CNTK-V, flatten + FC) or ``"lap"`` (local
        average pooling over shifts of up to ``lap_c`` pixels, Li et al. 2019).
    fix : the official ``--fix``: first and last layer not trained; ``fix_first`` / ``fix_last``
        set the two halves separately. NNGP values do not depend on fix.
    lap_c, padding, pools, flip : the extensions of :class:`~cntk_core.architecture.Architecture`
        (LAP's window; ``"zero"`` or ``"circular"`` padding; 2x2 average pooling after these conv
        counts, e.g. ``(2, 3)``; the flip-symmetrised kernel, at twice the cost).
    dtype : arithmetic precision, ``"float64"`` (default) or ``"float32"``; sums are float64.
    backend : ``"numba"`` | ``"numpy"`` | ``"cupy"`` | ``None`` (``CNTK_BACKEND`` or automatic).
    progress : show a tqdm bar; ``None`` shows one only for long calls; or a callable
        ``progress(done, total)`` (kernel entries), see the module docstring.
    block_size : images per Gram tile side (default 256).
    cancel : a callable asked before every engine call; true stops with :class:`KernelCancelled`.
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
    channels at or above 2^29, or below 2^-14: see :func:`cntk_core.scaling.exponent_window`) are computed on a copy
    scaled by a power of two, which is exact: the kernel is homogeneous, K(a x, b x') = a b K(x, x')
    for a, b > 0. So 1e150-scale pixels give their finite kernel instead of NaN; a kernel beyond
    float64's range (about 1e308) raises ``OverflowError``.
    """
    arch = Architecture.from_options(
        depth, readout, fix, fix_first, fix_last, lap_c=lap_c, padding=padding, pools=pools, flip=flip
    )
    return network_kernel(
        arch,
        x1,
        x2,
        kind=kind,
        dtype=dtype,
        backend=backend,
        progress=progress,
        block_size=block_size,
        out=out,
        cancel=cancel,
    )


def network_kernel(
    network: Network | Architecture,
    x1,
    x2=None,
    *,
    kind: str = "ntk",
    dtype="float64",
    backend: str | None = None,
    progress: Progress = None,
    block_size: int | None = None,
    out: np.ndarray | None = None,
    cancel: Cancel = None,
    flip: bool | None = None,
) -> np.ndarray:
    """Gram matrix of an :class:`~cntk_core.architecture.Architecture` or of any
    :class:`~cntk_core.layers.Network` (or list of layers); see :func:`kernel_matrix`.

    Architectures run on the fused path of the chosen backend where it has one for them; any
    other layer list runs on the per-layer path (full ``(P Q)^2`` tensors per pair: keep such
    images small). ``flip``: the flip-symmetrised kernel (:mod:`cntk_core.flip`); ``None`` takes
    the Architecture's own ``flip`` (``False`` for a layer list).
    """
    if flip is None:
        flip = network.flip if isinstance(network, Architecture) else False
    flip = check_flag(flip, "flip")
    network = as_network(network)
    if not network:
        raise ParameterError(
            "network",
            "the network has no layers; e.g. cntk_core.cntk(depth=3) or [Conv(3), ReLU(), GlobalAvgPool(), Dense()]",
        )
    check_kind(kind)
    dt = check_dtype(dtype)
    x1, x2, symmetric = _inputs(x1, x2)
    shape = (len(x1), len(x2))
    out = np.empty(shape) if out is None else _check_out(out, shape)
    engine = make_engine(resolve_backend(backend), network, x1.shape[1:], kind, dt)
    if flip:
        engine = FlipEngine(engine)
    _probe_out(out)  # after every other check: nothing is written into out before the work starts
    _fill(engine, x1, x2, symmetric, [out], progress, block_size, cancel)
    return out


def as_network(network) -> Network:
    """``network`` as a :class:`Network`: an Architecture's layer list, or a list of layers."""
    if isinstance(network, Architecture):
        return network.network()
    return network if isinstance(network, Network) else Network(network)


def depths_in_one_pass(backend: str | None = None, arch: Architecture | None = None) -> bool:
    """Whether :func:`kernel_matrices` on ``backend`` (``None``: the automatic choice) computes all
    its depths in one pass at the cost of the deepest (the fused CPU engine, :class:`~cntk_core.engines.NumbaEngine`,
    the one engine that takes ``depths``), or one call per depth; with ``arch``, for that
    architecture (the fused CPU engine does not run every extension)."""
    if resolve_backend(backend) != "numba":
        return False
    if arch is None:
        return True
    from .engines import NumbaEngine

    return NumbaEngine.supports(arch)


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
    lap_c: int | None = None,
    padding: str = "zero",
    flip: bool = False,
    dtype="float64",
    backend: str | None = None,
    progress: Progress = None,
    block_size: int | None = None,
    cancel: Cancel = None,
) -> dict[int, np.ndarray]:
    """``{depth: kernel_matrix(..., depth=depth)}`` for several depths, in one pass where possible.

    The recurrence of depth ``d`` is a prefix of that of any deeper network, so the fused CPU
    engine reads every requested depth out on the way to the deepest one: the cost is that of the
    deepest network alone (:func:`depths_in_one_pass`). Other backends loop over the depths (a
    ``progress`` callable then counts the entries of all depths). Allocates one float64
    ``[n1, n2]`` result per depth; otherwise as :func:`kernel_matrix` (``lap_c``, ``padding``,
    ``flip`` too; networks with pooling have one depth each and are not swept here).
    """
    depths = _check_depths(depths)
    arch = Architecture.from_options(
        depths[-1], readout, fix, fix_first, fix_last, lap_c=lap_c, padding=padding, flip=flip
    )
    check_kind(kind)
    dt = check_dtype(dtype)
    name = resolve_backend(backend)
    x1, x2, symmetric = _inputs(x1, x2)
    if not depths_in_one_pass(name, arch):  # one call per depth: no engine of the deepest network here
        x2_arg = None if symmetric else x2
        results = {}
        for k, d in enumerate(depths):
            hook = _offset_progress(progress, k, len(depths))
            results[d] = network_kernel(
                replace(arch, depth=d), x1, x2_arg, kind=kind, dtype=dtype, backend=name, progress=hook,
                block_size=block_size, cancel=cancel,
            )  # fmt: skip
        return results
    engine = make_engine(name, arch.network(), x1.shape[1:], kind, dt, depths=depths)
    if arch.flip:
        engine = FlipEngine(engine)
    outs = [np.empty((len(x1), len(x2))) for _ in depths]
    _fill(engine, x1, x2, symmetric, outs, progress, block_size, cancel)
    return dict(zip(depths, outs, strict=True))


def _offset_progress(progress: Progress, k: int, n: int) -> Progress:
    """The ``k``-th of ``n`` equal calls' share of a ``progress`` callable (booleans unchanged)."""
    if not callable(progress):
        return progress
    return lambda done, total: progress(k * total + done, n * total)


def _check_out(out, shape: tuple[int, int]):
    """``out`` if it can take the result: a float64 array (either byte order) of ``shape``, a
    writeable NumPy array or ``np.memmap``, or any array object with ``shape``, ``dtype`` and
    ``out[rows, cols] = values`` coordinate assignment, such as a zarr array; else ``ValueError``.
    Writes nothing (see :func:`_probe_out`)."""
    if not all(hasattr(out, a) for a in ("shape", "dtype", "__setitem__")):
        raise ParameterError(
            "out", f"out must be a float64 array of shape {shape} (NumPy, np.memmap, zarr), got {type(out).__name__}"
        )
    if tuple(out.shape) != shape or not is_float64(out.dtype):
        raise ParameterError("out", f"out must be a float64 array of shape {shape}, got {out.dtype} {tuple(out.shape)}")
    if isinstance(out, np.ndarray) and not out.flags.writeable:
        raise ParameterError("out", "out is read-only (e.g. a memmap opened with mode='r'); pass a writeable array")
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
        raise ParameterError(
            "out",
            f"out ({type(out).__name__}) cannot take out[rows, cols] = values ({type(exc).__name__}: {exc}); "
            "pass a writeable NumPy array, np.memmap or zarr array",
        ) from None


def _check_depths(depths) -> list[int]:
    """Sorted distinct depths, each a (non-bool) integer >= 2, or a clear error: ``int()`` would
    silently turn 2.7 into 2 and "34" into 34."""
    if isinstance(depths, Real | str) or (isinstance(depths, np.ndarray) and depths.ndim == 0):
        return [check_int(depths, "depths", MIN_DEPTH)]
    try:
        items = list(depths)
    except TypeError:
        raise ParameterTypeError(
            "depths", f"depths must be an integer or a list of integers >= 2, got {depths!r}"
        ) from None
    if not items:
        raise ParameterError("depths", "depths must name at least one depth")
    return sorted({check_int(d, f"depths[{i}]", MIN_DEPTH) for i, d in enumerate(items)})


def _inputs(x1, x2):
    """Validated ``(x1, x2, symmetric)``; ``x2`` is ``x1`` for a symmetric Gram."""
    x1 = as_images(x1, "x1")
    if x2 is None:
        return x1, x1, True
    x2 = as_images(x2, "x2")
    check_pair(x1, x2)
    return x1, x2, False


def _fill(engine, x1, x2, symmetric: bool, outs: list, progress: Progress, block_size, cancel: Cancel) -> None:
    """Evaluate every needed pair tile by tile into ``outs`` (one array per engine output)."""
    if block_size is not None:
        block_size = check_int(block_size, "block_size", 1, " (images per tile side)")
    report = progress if callable(progress) else None
    progress = None if report is not None else check_flag(progress, "progress", allow_none=True)
    if cancel is not None and not callable(cancel):
        raise ParameterTypeError("cancel", f"cancel must be a callable with no arguments or None, got {cancel!r}")
    n1, n2 = len(x1), len(x2)
    dtype = getattr(engine, "dtype", np.float64)  # the engine's arithmetic sets the range window
    x1, e1 = unit_scaled(x1, dtype)
    x2, e2 = (x1, e1) if symmetric else unit_scaled(x2, dtype)
    scaled = bool(e1.any() or e2.any())
    tiles = _gram_tiles(n1, n2, symmetric, block_size or _BLOCK)
    n_pairs = n1 * (n1 + 1) // 2 if symmetric else n1 * n2
    per_call = max(1, int(_WORK_PER_CALL // engine.pair_cost))
    show = progress if progress is not None else report is None and n_pairs * engine.pair_cost > _WORK_FOR_PROGRESS
    bar = _progress_bar(n_pairs, show, "kernel entries")
    done = 0
    try:
        state_rows = None
        for r0, r1, c0, c1, rows, cols in tiles:
            _check_cancel(cancel)
            if state_rows is None or state_rows[0] != (r0, r1):
                state_rows = ((r0, r1), engine.prepare(x1[r0:r1]))
            state_cols = state_rows[1] if symmetric and (r0, r1) == (c0, c1) else engine.prepare(x2[c0:c1])
            for k in range(0, len(rows), per_call):
                if k:
                    _check_cancel(cancel)
                rr, cc = rows[k : k + per_call], cols[k : k + per_call]
                values = np.asarray(engine.pairs(state_rows[1], state_cols, rr, cc)).reshape(len(rr), -1)
                if not np.isfinite(values).all():  # before scaling back: that raises OverflowError
                    raise FloatingPointError(_NON_FINITE)
                if scaled:
                    values = scaled_back(values, e1[r0 + rr] + e2[c0 + cc])
                for j, out in enumerate(outs):
                    out[r0 + rr, c0 + cc] = values[:, j]
                    if symmetric:
                        out[c0 + cc, r0 + rr] = values[:, j]
                bar.update(len(rr))
                done += len(rr)
                if report is not None:
                    report(done, n_pairs)
    finally:
        bar.close()


def _check_cancel(cancel: Cancel) -> None:
    if cancel is not None and cancel():
        raise KernelCancelled("the kernel computation was cancelled; finished tiles are kept in out")


_NON_FINITE = (
    "the kernel is not finite (NaN or inf) for some pairs: its values left the range of the arithmetic "
    "dtype. A very deep network's kernel shrinks with every layer until it underflows (float64: depths "
    "in the thousands; float32: in the hundreds); use fewer layers, or dtype='float64'. Nothing was returned"
)


def _gram_tiles(n1: int, n2: int, symmetric: bool, block: int):
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
