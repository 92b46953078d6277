"""Exact CNTK against the random features of one finite net: the paper's Table 2 at class scale.

Arora et al. (2019), Table 2, classify the first two CIFAR-10 classes by kernel regression with the
exact CNTK-V / CNTK-GAP and with the empirical NTK of one randomly initialised CNN of width 128 (the
"random features" ``df(x)/dtheta`` of that net), and find the exact kernel far better for GAP.
:func:`table2_comparison` runs that comparison on any images: for each readout and depth, the
paper's classifier (:func:`cntk_core.regression.kernel_regression`, targets 0.9 / -0.1, no ridge) with
(a) ``network_kernel(Architecture(depth, readout, fix_first, fix_last), ...)`` and (b) the empirical
NTK of ``FiniteCNN.from_architecture(arch, width)`` at one initialisation per seed, on the same images.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..architecture import READOUTS, Architecture
from ..gram import KernelCancelled, network_kernel
from ..regression.solve import SingularKernelError, kernel_regression
from ..validation import (
    ParameterError,
    ParameterTypeError,
    as_images,
    check_choice,
    check_dtype,
    check_int,
    check_labels,
)
from ._checks import _seed_list
from .empirical import relative_error
from .net import FiniteCNN

#: fallback when a training kernel is singular: both kernels of the row get ``1e-8 * mean(diag K)``
FALLBACK_RIDGE = 1e-8
#: rows of images per forward/backward block of the finite net (bounds the cached im2col patches)
_CACHE_NUMBERS = 1e8


@dataclass(frozen=True)
class Table2Result:
    """Rows of :func:`table2_comparison`, one dict per (readout, depth), in the order computed.

    Keys: ``readout``, ``depth``, ``fix_first``, ``fix_last``, ``width``, ``seeds``; ``exact_accuracy``
    (fraction in [0, 1]); ``rf_accuracy`` / ``rf_accuracy_std`` (mean and population std over seeds)
    and ``rf_accuracies`` (per seed); ``rel_error`` / ``rel_errors``: ``||K_emp - K_exact||_F /
    ||K_exact||_F`` of the train Gram (mean, per seed); ``ridge``: the relative ridge used for both
    kernels (0.0, or :data:`FALLBACK_RIDGE` when a train kernel was singular); ``seconds_exact`` /
    ``seconds_rf``: wall time in seconds of the exact kernels and of all seeds' empirical kernels.
    """

    rows: tuple[dict, ...]

    def table(self) -> str:
        """A plain-text table: readout, depth, accuracies in %, relative kernel error, seconds."""
        head = (
            f"{'readout':<8} {'depth':>5} {'exact %':>8} {'RF %':>13} {'rel.err':>8} {'ridge':>6} "
            f"{'s exact':>8} {'s RF':>7}"
        )
        lines = [head, "-" * len(head)]
        for r in self.rows:
            rf = f"{100 * r['rf_accuracy']:.2f}"
            if len(r["seeds"]) > 1:
                rf += f"±{100 * r['rf_accuracy_std']:.2f}"
            lines.append(
                f"{r['readout']:<8} {r['depth']:>5} {100 * r['exact_accuracy']:>8.2f} {rf:>13} "
                f"{r['rel_error']:>8.3f} {r['ridge']:>6.2g} {r['seconds_exact']:>8.1f} {r['seconds_rf']:>7.1f}"
            )
        return "\n".join(lines)


def empirical_gram(net: FiniteCNN, x: np.ndarray, seed: int, dtype="float64") -> np.ndarray:
    """Empirical NTK ``J J^T`` of ``net`` initialised with ``seed`` on images ``x`` ``(N, P, Q, C)``:
    ``(N, N)`` float64, equal to ``empirical_ntk_samples(net, x, seeds=[seed], dtype=dtype)[0]``.

    Per-example gradients are taken in blocks of images (bounding the forward cache) and stored:
    ``N * n_trainable_params`` numbers of ``dtype`` (GAP, depth 6, width 128: ~0.6 M per image).
    """
    dt = check_dtype(dtype)
    n, p, q, _ = x.shape
    params = net.init(x.shape[1:], seed=seed, dtype=dt)
    block = max(1, int(_CACHE_NUMBERS // (net.n_conv * p * q * 11 * net.width)))
    jac = np.empty((n, net.n_params(x.shape[1:])), dtype=dt)
    for start in range(0, n, block):
        stop = min(n, start + block)
        jac[start:stop] = net.per_example_gradients(params, x[start:stop].astype(dt))
    return (jac @ jac.T).astype(np.float64)


def _fix_of(fix, readout: str) -> bool:
    """``fix="paper"``: the paper's recipes (CNTK-V unfixed, CNTK-GAP both ends fixed); else a bool."""
    return readout == "gap" if fix == "paper" else fix


def _classify(k_train, y_train, k_test, ridge_rel: float, n_classes: int) -> np.ndarray:
    ridge = ridge_rel * float(np.mean(np.diag(k_train)))
    return kernel_regression(k_train, y_train, k_test, ridge=ridge, n_classes=n_classes)[0]


def table2_comparison(
    x_train,
    y_train,
    x_test,
    y_test,
    depths: Sequence[int],
    *,
    width: int = 128,
    seeds: Sequence[int] = (0,),
    readouts: Sequence[str] = ("vanilla", "gap"),
    fix: bool | str = "paper",
    backend: str | None = None,
    dtype="float64",
    rf_dtype="float64",
    progress: Callable[[int, int], object] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> Table2Result:
    """Test accuracy of the exact CNTK against the empirical NTK of a width-``width`` net, per row.

    x_train ``(n, P, Q, C)`` and x_test ``(m, P, Q, C)`` preprocessed float images; y_train ``(n,)``,
    y_test ``(m,)`` class indices. For each readout in ``readouts`` and depth in ``depths`` (the paper's
    ``d``, >= 2), the architecture is ``Architecture(depth, readout, f, f)`` with ``f = fix`` (a bool),
    or with ``fix="paper"`` (default) the paper's recipes: CNTK-V ``fix=False``, CNTK-GAP ``fix=True``.
    The exact kernels (``dtype``: ``"float64"`` or ``"float32"`` arithmetic, ``backend`` as in
    :func:`cntk_core.network_kernel`) and the empirical kernels (``rf_dtype``, NumPy on the host) go
    through the same classifier; if any train kernel of a row is singular, every kernel of the row gets
    the same relative ridge ``FALLBACK_RIDGE * mean(diag K)`` (recorded as ``ridge``). Returns a
    :class:`Table2Result`.

    Allocates per row the train Gram ``n x n`` and cross kernel ``m x n`` (float64) of each kernel, and
    per seed the per-example gradients ``(n + m) x n_params`` of ``rf_dtype`` (GAP, depth 6, width 128:
    ~0.6 M parameters, 4.7 MB per image in float64; vanilla adds ``P Q width``). The empirical kernel's
    cost is mostly per image, not per pair: at width 128 on 32x32x3 images about 0.025 s per image and
    conv layer on a 2-core CPU in float64 (depth 6: ~0.12 s per image), plus ``n_params`` multiply-adds
    per image pair for ``J J^T``; for 100 + 100 images that is ~1.6 ms per train or test-train pair,
    against ~3 ms per pair for the exact CNTK-GAP-6 (fused Numba engine, float32), whose ``(PQ)^2``
    entries per pair and layer make it the dominant cost; CNTK-V costs ``PQ`` entries and is negligible.
    ``progress(done, total)`` is called after each kernel (one exact and one per seed per row);
    ``cancel()`` is asked before each and raises :class:`cntk_core.KernelCancelled` when true.
    """
    xtr, xte = as_images(x_train, "x_train"), as_images(x_test, "x_test")
    if xtr.shape[1:] != xte.shape[1:]:
        raise ParameterError("x_test", f"x_test images are {xte.shape[1:]}, x_train images {xtr.shape[1:]}")
    ytr = check_labels(y_train, len(xtr), "y_train")
    yte = check_labels(y_test, len(xte), "y_test")
    if isinstance(depths, int | np.integer | str) or not isinstance(depths, Sequence | np.ndarray | range):
        raise ParameterTypeError("depths", f"depths must be a sequence of integers (e.g. [3, 6]), got {depths!r}")
    depths = [check_int(d, f"depths[{i}]", 2) for i, d in enumerate(depths)]
    if not depths:
        raise ParameterError("depths", "depths is empty (give at least one depth)")
    if isinstance(readouts, str) or not readouts:
        raise ParameterError("readouts", f"readouts must be a non-empty sequence of {READOUTS}, got {readouts!r}")
    readouts = [check_choice(r, "readouts", READOUTS) for r in readouts]
    if not (fix == "paper" or isinstance(fix, bool | np.bool_)):
        raise ParameterError("fix", f"fix must be True, False or 'paper', got {fix!r}")
    width = check_int(width, "width", 1)
    seeds = _seed_list(seeds)
    check_dtype(dtype)
    check_dtype(rf_dtype)
    if progress is not None and not callable(progress):
        raise ParameterTypeError(
            "progress", f"progress must be a callable progress(done, total) or None, got {progress!r}"
        )
    archs = []
    for readout in readouts:
        for depth in depths:
            f = bool(_fix_of(fix, readout))
            arch = Architecture(depth, readout, f, f)
            arch.check_trainable("ntk")
            archs.append(arch)
    n_classes = int(max(ytr.max(), yte.max())) + 1
    x_all = np.concatenate([xtr, xte]).astype(np.float64)
    n = len(xtr)
    total, done = len(archs) * (1 + len(seeds)), 0

    def step():
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    def check_cancel():
        if cancel is not None and cancel():
            raise KernelCancelled("table2_comparison cancelled")

    rows = []
    for arch in archs:
        check_cancel()
        t0 = time.perf_counter()
        kw = dict(dtype=dtype, backend=backend, progress=False, cancel=cancel)
        exact = (network_kernel(arch, xtr, **kw), network_kernel(arch, xte, xtr, **kw))
        seconds_exact = time.perf_counter() - t0
        step()
        t0, emp = time.perf_counter(), []
        net = FiniteCNN.from_architecture(arch, width)
        for s in seeds:
            check_cancel()
            g = empirical_gram(net, x_all, s, rf_dtype)
            emp.append((g[:n, :n], g[n:, :n]))
            step()
        seconds_rf = time.perf_counter() - t0
        ridge = 0.0
        try:
            preds = [_classify(k[0], ytr, k[1], ridge, n_classes) for k in [exact, *emp]]
        except SingularKernelError:
            ridge = FALLBACK_RIDGE
            preds = [_classify(k[0], ytr, k[1], ridge, n_classes) for k in [exact, *emp]]
        accs = [float(np.mean(p == yte)) for p in preds]
        errs = [relative_error(k[0], exact[0]) for k in emp]
        rows.append(
            dict(
                readout=arch.readout,
                depth=arch.depth,
                fix_first=arch.fix_first,
                fix_last=arch.fix_last,
                width=width,
                seeds=tuple(seeds),
                exact_accuracy=accs[0],
                rf_accuracy=float(np.mean(accs[1:])),
                rf_accuracy_std=float(np.std(accs[1:])),
                rf_accuracies=tuple(accs[1:]),
                rel_error=float(np.mean(errs)),
                rel_errors=tuple(errs),
                ridge=ridge,
                seconds_exact=seconds_exact,
                seconds_rf=seconds_rf,
            )
        )
    return Table2Result(tuple(rows))
