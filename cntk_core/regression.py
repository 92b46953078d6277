"""Kernel regression as in Arora et al. (2019), ridge selection, metrics and kernel spectra.

The paper's classifier: targets 0.9 for the true class and -0.1 elsewhere (:func:`one_hot_targets`),
solve ``K_train @ alpha = Y`` in float64 with no ridge, predict ``argmax(K_test,train @ alpha)``.

Ridge conventions
-----------------
- Low-level functions (:func:`solve_kernel`, :func:`ridge_path_alphas`, :func:`kernel_regression`)
  take an **absolute** ridge ``lam``: they solve ``(K + lam I) alpha = Y``.
- High-level entry points (:class:`CNTKClassifier`, :func:`run_experiment`, the CLI) take a ridge
  **relative** to ``mean(diag(K_train))``, because the kernel's scale changes with depth and
  readout. :func:`select_ridge` searches a relative grid and reports both.

Ridge selection (:func:`select_ridge`) uses ONE eigendecomposition per training block,
``K = U diag(s) U^T``, so that ``alpha(lam) = U diag(1 / (s + lam)) U^T Y`` costs only a matrix
product per ``lam``.

Using the CNTK with scikit-learn's ``KernelRidge(kernel="precomputed")``::

    >>> import numpy as np, cntk_core
    >>> from sklearn.kernel_ridge import KernelRidge
    >>> from cntk_core.regression import one_hot_targets
    >>> rng = np.random.default_rng(0)
    >>> x_tr, x_te = rng.standard_normal((12, 6, 6, 1)), rng.standard_normal((4, 6, 6, 1))
    >>> y_tr = np.arange(12) % 3
    >>> K_tr = cntk_core.kernel_matrix(x_tr, depth=3, readout="gap")          # [12, 12]
    >>> K_te = cntk_core.kernel_matrix(x_te, x_tr, depth=3, readout="gap")    # [4, 12]
    >>> kr = KernelRidge(alpha=1e-6 * np.mean(np.diag(K_tr)), kernel="precomputed")
    >>> pred = kr.fit(K_tr, one_hot_targets(y_tr, 3)).predict(K_te).argmax(axis=1)
    >>> pred.shape
    (4,)

(:func:`precomputed_kernels` returns the pair ``(K_tr, K_te)`` in one call.)
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from .validation import as_images, as_real_array, check_flag, check_int, check_real

__all__ = [
    "CNTKClassifier",
    "ExperimentResult",
    "RidgeSelection",
    "SingularKernelError",
    "accuracy",
    "check_kernel",
    "confusion_matrix",
    "default_ridge_grid",
    "effective_dimension",
    "eigenspectrum",
    "fold_indices",
    "kernel_regression",
    "normalized_gram",
    "one_hot_targets",
    "participation_ratio",
    "per_class_accuracy",
    "precomputed_kernels",
    "predict_scores",
    "ridge_path_alphas",
    "run_experiment",
    "select_ridge",
    "solve_kernel",
    "standardize",
]

TRUE_TARGET = 0.9
OTHER_TARGET = -0.1


class SingularKernelError(ValueError):
    """The (ridged) training kernel is singular to working precision."""


_ZERO_KERNEL_MESSAGE = (
    "the training kernel is identically zero: either the network has no trained layer (e.g. depth 2 with "
    "fix=True: use kind='nngp', fix=False or a deeper network) or every training image is all zero (check "
    "the data). A ridge relative to mean(diag(K)) = 0 is 0 as well, and with any ridge every prediction would be 0"
)


# ----------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------


def _check_n_classes(n_classes) -> int | None:
    """``None`` or the number of classes as an int >= 1."""
    return None if n_classes is None else check_int(n_classes, "n_classes", 1)


def _check_targets(Y, n: int, name: str = "Y") -> np.ndarray:
    """Regression targets as finite float64 ``[n]`` or ``[n, c]`` for a training kernel with ``n`` rows."""
    Y = as_real_array(Y, name, "real regression targets", bools=True)
    if Y.ndim not in (1, 2):
        raise ValueError(f"{name}: expected targets of shape [n] or [n, n_classes], got shape {Y.shape}")
    if Y.shape[0] != n:
        raise ValueError(f"{name}: targets of shape {Y.shape} do not match a training kernel of shape {(n, n)}")
    if not np.all(np.isfinite(Y)):
        raise ValueError(f"{name}: targets contain NaN or inf")
    return Y


def _check_spectrum(eigs) -> np.ndarray:
    """Finite 1-D float64 eigenvalues with negative round-off clipped to 0."""
    s = as_real_array(eigs, "eigs", "real eigenvalues")
    if s.ndim != 1:
        raise ValueError(f"eigs: expected a 1-D array of eigenvalues (see eigenspectrum), got shape {s.shape}")
    bad = ~np.isfinite(s)
    if bad.any():
        raise ValueError(f"eigs: {int(bad.sum())} non-finite eigenvalues (NaN or inf), first at [{np.argmax(bad)}]")
    return np.clip(s, 0, None)


def check_kernel(K, name: str = "K", *, symmetric: bool = True, rtol: float = 1e-8) -> np.ndarray:
    """Return ``K`` as a float64 2-D array, or raise ``ValueError`` with an actionable message.

    ``TypeError`` for complex, bool, string or object input (never a silently dropped imaginary part).

    symmetric: also require a square matrix with ``max|K - K^T| <= rtol * max|K|``; the result is
    then exactly symmetrised, ``(K + K^T) / 2``.
    """
    arr = as_real_array(K, name, "a real matrix")
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D kernel matrix, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name}: empty kernel matrix of shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(f"{name}: {int(bad.sum())} non-finite entries (NaN or inf), first at [{i}, {j}]")
    if symmetric:
        if arr.shape[0] != arr.shape[1]:
            raise ValueError(f"{name}: a training kernel must be square, got shape {arr.shape}")
        scale = float(np.max(np.abs(arr)))
        asym = float(np.max(np.abs(arr - arr.T)))
        if asym > rtol * scale:
            raise ValueError(
                f"{name}: not symmetric (max |K - K^T| = {asym:.3g}, {asym / scale:.3g} relative to max |K|; "
                f"tolerance {rtol:g}); is it a cross kernel K(x_test, x_train) passed as a training kernel?"
            )
        arr = 0.5 * (arr + arr.T)
    return arr


def _check_labels(y, n: int, name: str = "y") -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of integer class labels, got shape {arr.shape}")
    if len(arr) != n:
        raise ValueError(f"{name}: {len(arr)} labels for a kernel with {n} rows")
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name}: labels must be integers 0..n_classes-1, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"{name}: labels must be integers 0..n_classes-1")
        arr = arr.astype(np.int64)
    if len(arr) and arr.min() < 0:
        raise ValueError(f"{name}: labels must be >= 0, got {arr.min()}")
    return arr.astype(np.int64)


def _check_ridge(lam, name: str = "ridge") -> float:
    """``lam`` as a float: a real, finite, non-bool number >= 0 (NumPy scalars and 0-d arrays too).

    ``TypeError`` for ``True``, ``None``, ``"1e-3"``, ``[0.1]``; ``ValueError`` for negative or non-finite values.
    """
    lam = float(check_real(lam, name, "a real number >= 0"))
    if lam < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {lam}")
    return lam


def _check_ridge_choice(ridge, words: tuple[str, ...]):
    """``ridge`` if it is one of ``words`` (e.g. ``"cv"``), else as a float >= 0 (:func:`_check_ridge`)."""
    if isinstance(ridge, str):
        if ridge not in words:
            allowed = ", ".join(repr(w) for w in words)
            raise ValueError(
                f"ridge must be {allowed} or a number >= 0 (relative to mean(diag(K_train))), got {ridge!r}"
            )
        return ridge
    return _check_ridge(ridge)


# ----------------------------------------------------------------------------------------------
# targets, solve, predict
# ----------------------------------------------------------------------------------------------


#: labels are class indices; more classes than this (and than 8 per distinct label) are refused
#: as labels that are identifiers rather than indices (a year, a hash, 2**40), see one_hot_targets
_MAX_SPARSE_CLASSES = 1024


def one_hot_targets(y, n_classes: int | None = None) -> np.ndarray:
    """The paper's regression targets: float64 ``[n, n_classes]``, 0.9 at the true class, -0.1 elsewhere.

    Labels are class indices ``0..n_classes-1`` (``n_classes``: the largest label + 1 unless given).
    Labels that are identifiers rather than indices, e.g. ``[0, 2**40]``, would make a target matrix
    of ``n x (max_label + 1)`` floats; when the classes exceed both 1024 and 8 per distinct label,
    a ``ValueError`` says how to map them (``np.unique(y, return_inverse=True)``) instead of
    allocating. Nothing is remapped silently: the score columns stay the class indices.
    """
    y = np.asarray(y)
    y = _check_labels(y, len(y))
    n_classes = _check_n_classes(n_classes)
    if n_classes is None:
        n_classes = int(y.max()) + 1 if len(y) else 0
    if len(y) and y.max() >= n_classes:
        raise ValueError(f"label {int(y.max())} out of range for n_classes={n_classes}")
    distinct = len(np.unique(y))
    if n_classes > max(_MAX_SPARSE_CLASSES, 8 * distinct):
        raise ValueError(
            f"labels must be class indices 0..n_classes-1: {distinct} distinct labels up to {int(y.max())} would "
            f"make {n_classes} classes, a target matrix of {len(y)} x {n_classes} floats "
            f"({len(y) * n_classes * 8 / 2**30:.3g} GiB). Map them to 0..{distinct - 1} first: "
            "classes, y = np.unique(y, return_inverse=True), and read predictions as classes[pred]"
        )
    Y = np.full((len(y), n_classes), OTHER_TARGET)
    Y[np.arange(len(y)), y] = TRUE_TARGET
    return Y


def solve_kernel(K_train, Y, ridge: float = 0.0, *, on_singular: str = "raise", check: bool = True) -> np.ndarray:
    """Solve ``(K_train + ridge I) alpha = Y`` in float64; returns ``alpha`` ``[n, c]`` (or ``[n]``).

    Tries a Cholesky solve (``assume_a="pos"``); if the matrix is not positive definite, an LU solve.
    If the matrix is singular or so ill-conditioned that its reciprocal condition number is below
    machine precision, ``on_singular="raise"`` raises :class:`SingularKernelError` (use a ridge),
    ``on_singular="lstsq"`` warns and returns the minimum-norm least-squares solution. An identically
    zero kernel without a ridge gets its own message (no trained layer or all-zero images).
    """
    if on_singular not in ("raise", "lstsq"):
        raise ValueError(f"on_singular must be 'raise' or 'lstsq', got {on_singular!r}")
    K = check_kernel(K_train, "K_train") if check else np.asarray(K_train, dtype=np.float64)
    Y = _check_targets(Y, K.shape[0])
    lam = _check_ridge(ridge)
    if not lam and not np.any(K):
        if on_singular == "raise":
            raise SingularKernelError(_ZERO_KERNEL_MESSAGE)
        warnings.warn(_ZERO_KERNEL_MESSAGE + "; returning the least-squares solution", RuntimeWarning, stacklevel=2)
        return scipy.linalg.lstsq(K, Y, check_finite=False)[0]
    A = K + lam * np.eye(len(K)) if lam else K
    with warnings.catch_warnings():
        warnings.simplefilter("error", scipy.linalg.LinAlgWarning)
        for assume in ("pos", "gen"):
            try:
                return scipy.linalg.solve(A, Y, assume_a=assume, check_finite=False)
            except (np.linalg.LinAlgError, scipy.linalg.LinAlgWarning) as exc:
                reason = str(exc)
    msg = (
        f"the training kernel{' + ridge' if lam else ''} ({len(K)} x {len(K)}, ridge={lam:g}) is singular or "
        f"numerically singular ({reason}); duplicate images or too little precision make this happen: use a ridge "
        "(e.g. ridge=1e-6 * mean(diag(K)), or ridge='cv' to choose one)"
    )
    if on_singular == "raise":
        raise SingularKernelError(msg)
    warnings.warn(msg + "; returning the least-squares solution", RuntimeWarning, stacklevel=2)
    return scipy.linalg.lstsq(A, Y, check_finite=False)[0]


def predict_scores(K_test_train, alpha) -> np.ndarray:
    """Regression outputs ``K_test,train @ alpha``: ``[n_test, n_classes]`` float64 (``[n_test]`` for a
    1-D ``alpha``). K_test_train ``[n_test, n_train]``, alpha ``[n_train, n_classes]`` or ``[n_train]``."""
    K = check_kernel(K_test_train, "K_test", symmetric=False)
    alpha = as_real_array(alpha, "alpha", "real dual coefficients")
    if alpha.ndim not in (1, 2):
        raise ValueError(
            f"alpha: expected dual coefficients of shape [n_train, n_classes] or [n_train], got {alpha.shape}"
        )
    if K.shape[1] != alpha.shape[0]:
        raise ValueError(
            f"K_test has {K.shape[1]} columns but alpha has {alpha.shape[0]} rows: the cross kernel must be "
            "K(x_test, x_train) with shape [n_test, n_train]"
        )
    return K @ alpha


def kernel_regression(
    K_train, y_train, K_test, *, ridge: float = 0.0, n_classes: int | None = None, on_singular: str = "raise"
) -> tuple[np.ndarray, np.ndarray]:
    """The paper's classifier from precomputed kernels; returns ``(predicted labels [n_test], scores [n_test, c])``.

    K_train ``[n, n]``, y_train ``[n]`` ints, K_test ``[n_test, n]`` (rows test, columns train).
    ``ridge`` is absolute (added to the diagonal). Labels are class indices: sparse identifiers such
    as ``[0, 2**40]`` are refused with a ``ValueError`` naming the ``np.unique`` mapping (see
    :func:`one_hot_targets`), never allocated as ``n x (max_label + 1)`` targets.
    """
    K = check_kernel(K_train, "K_train")
    y = _check_labels(y_train, K.shape[0], "y_train")
    Kt = check_kernel(K_test, "K_test", symmetric=False)
    if Kt.shape[1] != K.shape[0]:
        raise ValueError(f"K_test has shape {Kt.shape}; expected [n_test, {K.shape[0]}] (test rows, train columns)")
    alpha = solve_kernel(K, one_hot_targets(y, n_classes), ridge, on_singular=on_singular, check=False)
    scores = Kt @ alpha
    return scores.argmax(axis=1), scores


# ----------------------------------------------------------------------------------------------
# ridge path and selection
# ----------------------------------------------------------------------------------------------


def default_ridge_grid(n: int = 19) -> np.ndarray:
    """Relative ridges (multiples of ``mean(diag(K))``): 0 followed by ``logspace(-6, 0, n - 1)``."""
    n = check_int(n, "n", 1)
    return np.concatenate([[0.0], np.logspace(-6, 0, n - 1)])


def _eig(K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s, U = scipy.linalg.eigh(K, check_finite=False)
    return s, U


def _singular_mask(s: np.ndarray, ridges: np.ndarray) -> np.ndarray:
    """True where ``K + lam I`` is singular to working precision (min eigenvalue vs. n * eps * max)."""
    tol = len(s) * np.finfo(np.float64).eps * max(float(np.max(np.abs(s))), 1e-300)
    return (s.min() + ridges) <= tol


def ridge_path_alphas(K_train, Y, ridges) -> np.ndarray:
    """``alpha(lam)`` for every absolute ``lam`` in ``ridges`` from one eigendecomposition.

    Returns ``[n_ridges, n, c]``; entries whose ``K + lam I`` is singular to working precision are NaN.
    """
    K = check_kernel(K_train, "K_train")
    Y = _check_targets(Y, K.shape[0])
    squeeze = Y.ndim == 1
    Y = Y[:, None] if squeeze else Y
    ridges = _check_grid(ridges, "ridges")
    s, U = _eig(K)
    UtY = U.T @ Y
    bad = _singular_mask(s, ridges)
    out = np.full((len(ridges), *Y.shape), np.nan)
    for i, lam in enumerate(ridges):
        if not bad[i]:
            out[i] = U @ (UtY / (s + lam)[:, None])
    return out[..., 0] if squeeze else out


def _check_grid(grid, name: str) -> np.ndarray:
    """A 1-D float64 array of ridges, each a finite number >= 0 (a scalar counts as one ridge)."""
    arr = np.atleast_1d(as_real_array(grid, name, "a list of ridges"))
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D list of ridges, got shape {arr.shape}")
    for lam in arr:
        _check_ridge(lam, f"every entry of {name}")
    return arr


def fold_indices(y, n_folds: int, seed: int = 0) -> np.ndarray:
    """Stratified fold id ``[n]`` in ``0..n_folds-1``: shuffle with ``seed``, deal each class round-robin."""
    y = np.asarray(y)
    n_folds = check_int(n_folds, "n_folds", 2, " (k-fold cross-validation)")
    if n_folds > len(y):
        raise ValueError(f"n_folds={n_folds} is larger than the number of training points ({len(y)})")
    order = np.random.default_rng(seed).permutation(len(y))
    order = order[np.argsort(y[order], kind="stable")]
    folds = np.empty(len(y), np.int64)
    folds[order] = np.arange(len(y)) % n_folds
    return folds


@dataclass
class RidgeSelection:
    """Result of :func:`select_ridge`. Arrays are indexed like the grid.

    ridge: chosen absolute ridge; relative_ridge: the same divided by ``scale = mean(diag(K))``.
    accuracy / mse: validation accuracy (fraction) and mean squared error of the targets, averaged
    over folds; NaN where the ridged kernel was singular. Choice: highest accuracy, ties broken by
    lower MSE, then by the larger ridge.
    """

    ridge: float
    relative_ridge: float
    best_index: int
    ridges: np.ndarray
    relative_grid: np.ndarray
    accuracy: np.ndarray
    mse: np.ndarray
    scale: float
    method: str
    n_folds: int

    def to_dict(self) -> dict:
        return {
            "ridge": self.ridge,
            "relative_ridge": self.relative_ridge,
            "method": self.method,
            "n_folds": self.n_folds,
            "relative_grid": self.relative_grid.tolist(),
            "accuracy": [None if np.isnan(a) else float(a) for a in self.accuracy],
            "mse": [None if np.isnan(a) else float(a) for a in self.mse],
        }


def _validation_curve(K_fit, Y_fit, K_val, y_val, ridges) -> tuple[np.ndarray, np.ndarray]:
    """Validation (accuracy, mse) for every ridge, from one eigendecomposition of ``K_fit``."""
    s, U = _eig(K_fit)
    A = K_val @ U  # [n_val, n_fit]
    B = U.T @ Y_fit  # [n_fit, c]
    Y_val = one_hot_targets(y_val, Y_fit.shape[1])
    bad = _singular_mask(s, ridges)
    acc = np.full(len(ridges), np.nan)
    mse = np.full(len(ridges), np.nan)
    for i, lam in enumerate(ridges):
        if bad[i]:
            continue
        scores = A @ (B / (s + lam)[:, None])
        acc[i] = np.mean(scores.argmax(axis=1) == y_val)
        mse[i] = np.mean((scores - Y_val) ** 2)
    return acc, mse


def _choose(acc: np.ndarray, mse: np.ndarray) -> int:
    ok = ~np.isnan(acc)
    if not ok.any():
        raise SingularKernelError("every ridge on the grid gave a singular kernel; use a grid with larger ridges")
    idx = np.flatnonzero(ok)
    # lexicographic: max accuracy, then min mse, then max index (largest ridge for a sorted grid)
    key = sorted(idx, key=lambda i: (-acc[i], mse[i], -i))
    return int(key[0])


def select_ridge(
    K_train,
    y_train,
    *,
    grid=None,
    relative: bool = True,
    n_folds: int = 5,
    validation: float | None = None,
    seed: int = 0,
    n_classes: int | None = None,
) -> RidgeSelection:
    """Choose the ridge by k-fold CV (default) or on one held-out split of the training kernel.

    K_train ``[n, n]`` symmetric, y_train ``[n]``. grid: ridges, relative to ``mean(diag(K_train))``
    when ``relative`` (default :func:`default_ridge_grid`), else absolute. ``validation``: a fraction
    in (0, 1) selects a single stratified hold-out split of that size instead of k-fold CV (it uses
    fold 0 of ``round(1 / validation)`` folds). Cost: one eigendecomposition per fold's training
    block, then ``O(n_val n c)`` per ridge.
    """
    K = check_kernel(K_train, "K_train")
    y = _check_labels(y_train, K.shape[0], "y_train")
    relative = check_flag(relative, "relative")
    if validation is None:
        n_folds = check_int(n_folds, "n_folds", 2, " (k-fold cross-validation)")
    else:
        validation = check_real(validation, "validation", "None or a fraction in (0, 1)")
    n_classes = _check_n_classes(n_classes)
    c = n_classes if n_classes is not None else int(y.max()) + 1
    scale = float(np.mean(np.diag(K)))
    rel = default_ridge_grid() if grid is None else _check_grid(grid, "grid")
    if len(rel) == 0:
        raise ValueError("grid must be a non-empty 1-D list of ridges")
    ridges = rel * scale if relative else rel.copy()
    if not np.any(ridges > 0) and not np.any(K):
        raise SingularKernelError(_ZERO_KERNEL_MESSAGE)
    if validation is not None:
        if not 0 < validation < 1:
            raise ValueError(f"validation must be a fraction in (0, 1), got {validation}")
        k = max(2, int(round(1 / validation)))
        method, folds_used = "holdout", [0]
    else:
        k = n_folds
        method, folds_used = "kfold", list(range(k))
    folds = fold_indices(y, k, seed)
    accs, mses = [], []
    for f in folds_used:
        val, fit = folds == f, folds != f
        a, m = _validation_curve(K[np.ix_(fit, fit)], one_hot_targets(y[fit], c), K[np.ix_(val, fit)], y[val], ridges)
        accs.append(a)
        mses.append(m)
    acc, mse = np.mean(accs, axis=0), np.mean(mses, axis=0)  # NaN if singular in any fold
    best = _choose(acc, mse)
    return RidgeSelection(
        ridge=float(ridges[best]),
        relative_ridge=float(ridges[best] / scale) if scale else float("nan"),
        best_index=best,
        ridges=ridges,
        relative_grid=ridges / scale if scale else rel,
        accuracy=acc,
        mse=mse,
        scale=scale,
        method=method,
        n_folds=k,
    )


# ----------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------


def _pair_labels(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true)
    p = np.asarray(y_pred)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of the same length, got {t.shape} and {p.shape}")
    if len(t) == 0:
        raise ValueError("no labels to score")
    return _check_labels(t, len(t), "y_true"), _check_labels(p, len(p), "y_pred")


def accuracy(y_true, y_pred) -> float:
    """Fraction of correct predictions (in [0, 1])."""
    t, p = _pair_labels(y_true, y_pred)
    return float(np.mean(t == p))


def confusion_matrix(y_true, y_pred, n_classes: int | None = None) -> np.ndarray:
    """int64 ``[n_classes, n_classes]``: rows are true classes, columns predicted classes."""
    t, p = _pair_labels(y_true, y_pred)
    n_classes = _check_n_classes(n_classes)
    c = n_classes if n_classes is not None else int(max(t.max(), p.max())) + 1
    if max(t.max(), p.max()) >= c:
        raise ValueError(f"labels out of range for n_classes={c}")
    cm = np.zeros((c, c), np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def per_class_accuracy(y_true, y_pred, n_classes: int | None = None) -> np.ndarray:
    """Recall per true class, float ``[n_classes]``; NaN for a class absent from ``y_true``."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


# ----------------------------------------------------------------------------------------------
# spectra
# ----------------------------------------------------------------------------------------------


def normalized_gram(K) -> np.ndarray:
    """Cosine-similarity form ``K_ij / sqrt(K_ii K_jj)`` (ones on the diagonal); needs ``K_ii > 0``."""
    K = check_kernel(K, "K")
    d = np.diag(K)
    if np.any(d <= 0):
        raise ValueError(f"normalized_gram needs a positive diagonal; {int(np.sum(d <= 0))} entries are <= 0")
    r = 1.0 / np.sqrt(d)
    out = K * r[:, None] * r[None, :]
    np.fill_diagonal(out, 1.0)
    return out


def eigenspectrum(K, normalize: bool = True) -> np.ndarray:
    """Eigenvalues of the symmetric kernel in descending order, float64 ``[n]``.

    normalize: use :func:`normalized_gram` first, so the eigenvalues sum to ``n`` and spectra of
    different depths are comparable.
    """
    K = normalized_gram(K) if check_flag(normalize, "normalize") else check_kernel(K, "K")
    return scipy.linalg.eigvalsh(K, check_finite=False)[::-1].copy()


def effective_dimension(eigs, ridge: float) -> float:
    """Effective degrees of freedom ``sum_i s_i / (s_i + ridge)`` (absolute ridge > 0; negative round-off s -> 0).

    eigs: finite 1-D ``[n]`` (e.g. :func:`eigenspectrum`); ridge 0 counts the positive eigenvalues.
    """
    s = _check_spectrum(eigs)
    lam = _check_ridge(ridge)
    if lam == 0:
        return float(np.count_nonzero(s > 0))
    return float(np.sum(s / (s + lam)))


def participation_ratio(eigs) -> float:
    """``(sum s)^2 / sum s^2`` in [1, n]: how many eigen-directions carry the spectrum's mass.

    eigs: finite 1-D ``[n]`` (e.g. :func:`eigenspectrum`); negative round-off is clipped to 0.
    """
    s = _check_spectrum(eigs)
    q = float(np.sum(s**2))
    if q == 0:
        raise ValueError("participation ratio of an all-zero spectrum is undefined")
    return float(np.sum(s) ** 2 / q)


# ----------------------------------------------------------------------------------------------
# scikit-learn estimator
# ----------------------------------------------------------------------------------------------


def _encode_classes(y, n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """``(classes [c], codes [n] in 0..c-1)`` of the labels ``y`` (any sortable type, as scikit-learn).

    ``ValueError`` naming ``y`` for a wrong shape and for missing labels (``None``, NaN, inf), which
    ``np.unique`` would turn into a class of their own (or fail on deep inside NumPy).
    """
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n_images:
        raise ValueError(f"y must be 1-D with one label per image: X has {n_images} images, y has shape {y.shape}")
    if y.dtype.kind in "fc":
        bad = ~np.isfinite(y)
    elif y.dtype.kind == "O":
        bad = np.array([v is None or (isinstance(v, (float, complex, np.inexact)) and not np.isfinite(v)) for v in y])
    else:
        bad = np.zeros(len(y), bool)
    if bad.any():
        raise ValueError(
            f"y: {int(bad.sum())} missing or non-finite labels (None, NaN or inf), first at index "
            f"{int(np.argmax(bad))}; every image needs a class label"
        )
    try:
        return np.unique(y, return_inverse=True)
    except TypeError as exc:  # e.g. a mix of strings and numbers
        raise TypeError(f"y: the labels cannot be sorted into classes (mixed types?): {exc}") from None


def precomputed_kernels(x_train, x_test=None, **kernel_kwargs) -> tuple[np.ndarray, np.ndarray | None]:
    """``(K_train [n, n], K_test [n_test, n] or None)`` for ``KernelRidge(kernel="precomputed")`` / ``SVC``.

    ``kernel_kwargs`` go to :func:`cntk_core.kernel_matrix` (depth=..., readout=..., fix=..., ...).
    """
    from .gram import kernel_matrix

    K_train = kernel_matrix(x_train, **kernel_kwargs)
    K_test = None if x_test is None else kernel_matrix(x_test, x_train, **kernel_kwargs)
    return K_train, K_test


class CNTKClassifier(ClassifierMixin, BaseEstimator):
    """scikit-learn classifier: the paper's CNTK kernel regression on NHWC images.

    Parameters mirror :func:`cntk_core.kernel_matrix`; ``ridge`` is relative to ``mean(diag(K_train))``
    (a float >= 0; 0 = the paper's unregularised solve) or ``"cv"`` to choose it by 5-fold CV on the
    training kernel (:func:`select_ridge`).

    ``fit(X [n, H, W, C], y)`` computes the symmetric Gram; ``decision_function(X)`` the cross kernel
    ``K(X, X_fit)`` and returns ``[n, n_classes]`` scores. Works with ``cross_val_score``,
    ``GridSearchCV`` etc. (they slice the 4-D arrays along axis 0).

    Fitted attributes: ``classes_``, ``X_fit_``, ``dual_coef_`` ``[n, n_classes]``, ``ridge_`` (absolute),
    ``ridge_selection_`` (for ``"cv"``), ``kernel_scale_`` (mean diagonal of the training kernel).
    """

    def __init__(
        self,
        depth: int = 3,
        readout: str = "gap",
        fix: bool = False,
        kind: str = "ntk",
        ridge: float | str = 0.0,
        dtype: str = "float64",
        backend: str | None = None,
    ):
        self.depth = depth
        self.readout = readout
        self.fix = fix
        self.kind = kind
        self.ridge = ridge
        self.dtype = dtype
        self.backend = backend

    def _kernel(self, x1, x2=None) -> np.ndarray:
        from .gram import kernel_matrix

        return kernel_matrix(
            x1,
            x2,
            depth=self.depth,
            readout=self.readout,
            fix=self.fix,
            kind=self.kind,
            dtype=self.dtype,
            backend=self.backend,
            progress=False,
        )

    def fit(self, X, y):
        X = as_images(X, "X")
        classes, y_enc = _encode_classes(y, len(X))
        rel_ridge = _check_ridge_choice(self.ridge, ("cv",))
        if rel_ridge == "cv":
            if len(y_enc) < 2:
                raise ValueError(
                    f"ridge='cv' cross-validates the ridge, which needs at least 2 training images; got {len(y_enc)}"
                )
            rel_ridge = None
        self.classes_ = classes
        K = self._kernel(X)
        self.kernel_scale_ = float(np.mean(np.diag(K)))
        Y = one_hot_targets(y_enc, len(self.classes_))
        self.ridge_selection_ = None
        if rel_ridge is None:
            folds = min(5, len(y_enc))
            self.ridge_selection_ = select_ridge(K, y_enc, n_folds=folds, n_classes=len(self.classes_))
            self.ridge_ = self.ridge_selection_.ridge
        else:
            self.ridge_ = rel_ridge * self.kernel_scale_
        self.dual_coef_ = solve_kernel(K, Y, self.ridge_, check=False)
        self.X_fit_ = X
        return self

    def decision_function(self, X) -> np.ndarray:
        check_is_fitted(self, ["classes_", "dual_coef_", "X_fit_"])
        return self._kernel(np.asarray(X), self.X_fit_) @ self.dual_coef_

    def predict(self, X) -> np.ndarray:
        scores = self.decision_function(X)  # raises NotFittedError before fit
        return self.classes_[scores.argmax(axis=1)]


# ----------------------------------------------------------------------------------------------
# end-to-end experiment
# ----------------------------------------------------------------------------------------------


@dataclass
class ExperimentResult:
    """Outcome of :func:`run_experiment`. Accuracies are fractions in [0, 1]; timings in seconds."""

    dataset: str
    n_train: int
    n_test: int
    image_shape: tuple
    depth: int
    readout: str
    fix: bool
    kind: str
    dtype: str
    backend: str
    accuracy: float
    per_class_accuracy: np.ndarray
    confusion: np.ndarray
    class_names: list
    ridge: float
    relative_ridge: float
    ridge_mode: str
    timings: dict
    ridge_selection: RidgeSelection | None = None
    K_train: np.ndarray | None = field(default=None, repr=False)
    K_test: np.ndarray | None = field(default=None, repr=False)

    @property
    def stderr(self) -> float:
        """Binomial standard error of the accuracy, ``sqrt(a (1 - a) / n_test)``."""
        a = self.accuracy
        return float(np.sqrt(a * (1 - a) / self.n_test))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no kernels)."""
        return {
            "dataset": self.dataset,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "image_shape": list(self.image_shape),
            "depth": self.depth,
            "readout": self.readout,
            "fix": self.fix,
            "kind": self.kind,
            "dtype": self.dtype,
            "backend": self.backend,
            "accuracy": self.accuracy,
            "stderr": self.stderr,
            "per_class_accuracy": [None if np.isnan(a) else float(a) for a in self.per_class_accuracy],
            "confusion": self.confusion.tolist(),
            "class_names": list(self.class_names),
            "ridge": self.ridge,
            "relative_ridge": self.relative_ridge,
            "ridge_mode": self.ridge_mode,
            "ridge_selection": None if self.ridge_selection is None else self.ridge_selection.to_dict(),
            "timings": dict(self.timings),
        }

    def report(self) -> str:
        """Human-readable multi-line report."""
        names = [str(c) for c in self.class_names]
        width = max(5, *(len(n) for n in names))
        lines = [
            f"dataset {self.dataset}: {self.n_train} train / {self.n_test} test images of shape {self.image_shape}",
            f"kernel: CNTK depth {self.depth}, readout {self.readout}, fix={self.fix}, kind {self.kind}, "
            f"dtype {self.dtype}, backend {self.backend}",
            f"ridge: {self.ridge_mode} -> {self.ridge:.4g} ({self.relative_ridge:.3g} x mean diag)",
            f"accuracy: {100 * self.accuracy:.2f} % (+/- {100 * self.stderr:.2f} binomial s.e.)",
            "per-class accuracy:",
        ]
        for n, a in zip(names, self.per_class_accuracy, strict=True):
            lines.append(f"  {n:<{width}} {'   n/a' if np.isnan(a) else f'{100 * a:6.2f} %'}")
        lines.append("confusion (rows true, columns predicted):")
        cw = max(3, len(str(int(self.confusion.max()))) + 1)
        lines.append(" " * (width + 2) + "".join(f"{i:>{cw}}" for i in range(len(names))))
        for i, row in enumerate(self.confusion):
            lines.append(f"  {names[i]:<{width}}" + "".join(f"{v:>{cw}}" for v in row))
        t = self.timings
        lines.append("timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in t.items()))
        return "\n".join(lines)


def standardize(dataset, *images, stats: str = "all") -> list[np.ndarray]:
    """The paper's preprocessing of ``images`` (raw NHWC arrays of ``dataset``): ``/ pixel_scale``, then
    per-channel standardisation with training statistics, from all of ``dataset.x_train``
    (``stats="all"``) or from ``images[0]`` (``stats="used"``, the training images in use).
    Returns float64 arrays, one per input.
    """
    from . import data

    if stats not in ("all", "used"):
        raise ValueError(f"stats must be 'all' or 'used', got {stats!r}")
    if stats == "used" and not images:
        raise ValueError(
            "standardize(stats='used') fits the statistics on images[0], the training images in use; none given"
        )
    fit_on = dataset.x_train if stats == "all" else images[0]
    if np.ndim(fit_on) and np.shape(fit_on)[0] == 0:
        where = "the data set has no training images (dataset.x_train" if stats == "all" else "images[0] (stats='used'"
        raise ValueError(f"standardize: {where} is empty): cannot compute the per-channel statistics")
    std = data.Standardizer(getattr(dataset, "pixel_scale", 255.0)).fit(fit_on)
    return [std.transform(x) for x in images]


_SUBSETS = ("first", "random", "balanced")


def _pick(x, y, n: int | None, name: str, per_class: bool, subset: str, seed: int):
    """``n`` images of the split ``(x, y)`` (``None``: all; ``n`` per class with ``per_class``). Never fewer
    than asked: ``ValueError`` naming ``name`` (``"n_train"`` / ``"n_test"``) when the split has too few."""
    if n is None:
        return x, y
    from . import data

    split = "training" if name == "n_train" else "test"
    if not per_class:
        if n > len(x):
            raise ValueError(f"{name}={n} is more than the {len(x)} {split} images of the data set")
        if n == len(x):
            return x, y
    if per_class or subset == "balanced":
        classes, counts = np.unique(y, return_counts=True)
        if len(classes) == 0:
            raise ValueError(f"{name}={n} per class: the data set has no {split} images")
        if per_class:
            k, what = n, f"{name}={n} per class (per_class=True)"
        else:
            if n % len(classes):
                raise ValueError(
                    f"subset='balanced' needs {name} divisible by the {len(classes)} classes, got {n} "
                    "(subset='first' or subset='random' take any number)"
                )
            k = n // len(classes)
            what = f"{name}={n} with subset='balanced' ({k} per class)"
        if counts.min() < k:
            raise ValueError(
                f"{what} is more than the data set has: class {classes[np.argmin(counts)]} has only "
                f"{counts.min()} {split} images"
            )
        return data.balanced_subset(x, y, k, seed=seed)
    if subset == "first":
        return x[:n], y[:n]
    return data.random_subset(x, y, n, seed=seed)


def run_experiment(
    dataset,
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    per_class: bool = False,
    subset: str = "balanced",
    depth: int = 3,
    readout: str = "gap",
    fix: bool = False,
    kind: str = "ntk",
    ridge: str | float = "none",
    n_folds: int = 5,
    backend: str | None = None,
    dtype: str = "float64",
    progress: bool | None = None,
    seed: int = 0,
    stats: str = "all",
    keep_kernels: bool = False,
) -> ExperimentResult:
    """Data -> paper preprocessing -> kernels -> solve -> metrics, in one call.

    dataset: a name for :func:`cntk_core.data.load_dataset` (``"digits"``, ``"cifar10-subset"``,
    ``"cifar10"``) or a ``Dataset``. n_train / n_test: number of images (an integer >= 1, ``None``: all),
    or per class with ``per_class=True`` (balanced, seeded); asking for more than the data set has is
    a ``ValueError``, never a silently smaller experiment. subset: how ``n`` total images are drawn:
    ``"balanced"`` (the default, as ``cntk-lab regress --subset``: ``n / classes`` of each class, seeded;
    ``n`` must be a multiple of the number of classes), the ``"first"`` n (the paper's "-2K" setting) or
    ``"random"`` (seeded).
    ridge: ``"none"`` (the paper, 0), ``"cv"`` (k-fold CV on the training kernel, ``2 <= n_folds <= n_train``)
    or a float relative to ``mean(diag(K_train))``. stats: per-channel preprocessing statistics from
    ``"all"`` training images of the data set (as the official code, which standardises the whole
    training set before any subset is taken) or only the ``"used"`` ones (see :func:`standardize`).
    ``keep_kernels`` stores K_train / K_test in the result.
    """
    from . import data
    from .backend import resolve_backend
    from .gram import kernel_matrix

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    ds = data.load_dataset(dataset) if isinstance(dataset, str) else dataset
    for attr in ("x_train", "y_train", "x_test", "y_test"):
        if not hasattr(ds, attr):
            raise TypeError(f"dataset must be a name or a cntk_core.data.Dataset, got {type(dataset).__name__}")
    ridge = _check_ridge_choice(ridge, ("none", "cv"))
    n_train = None if n_train is None else check_int(n_train, "n_train", 1)
    n_test = None if n_test is None else check_int(n_test, "n_test", 1)
    if ridge == "cv":
        n_folds = check_int(n_folds, "n_folds", 2, " (k-fold cross-validation of the ridge)")
    per_class = check_flag(per_class, "per_class")
    keep_kernels = check_flag(keep_kernels, "keep_kernels")
    if subset not in _SUBSETS:
        raise ValueError(f"subset must be one of {_SUBSETS}, got {subset!r}")
    x_tr, y_tr = _pick(ds.x_train, np.asarray(ds.y_train), n_train, "n_train", per_class, subset, seed)
    x_te, y_te = _pick(ds.x_test, np.asarray(ds.y_test), n_test, "n_test", per_class, subset, seed)
    if ridge == "cv" and n_folds > len(y_tr):
        raise ValueError(
            f"n_folds={n_folds} is larger than the {len(y_tr)} training images: ridge='cv' needs n_folds <= n_train"
        )
    x_tr, x_te = standardize(ds, x_tr, x_te, stats=stats)
    class_names = list(getattr(ds, "class_names", None) or range(int(max(y_tr.max(), y_te.max())) + 1))
    n_classes = len(class_names)
    timings["data"] = time.perf_counter() - t0

    be = resolve_backend(backend)
    kw = dict(depth=depth, readout=readout, fix=fix, kind=kind, dtype=dtype, backend=be, progress=progress)
    t = time.perf_counter()
    K_train = kernel_matrix(x_tr, **kw)
    timings["gram_train"] = time.perf_counter() - t
    t = time.perf_counter()
    K_test = kernel_matrix(x_te, x_tr, **kw)
    timings["gram_test"] = time.perf_counter() - t

    t = time.perf_counter()
    y_tr = _check_labels(y_tr, len(y_tr), "y_train")
    y_te = _check_labels(y_te, len(y_te), "y_test")
    kscale = float(np.mean(np.diag(K_train)))
    selection = None
    if ridge == "cv":
        selection = select_ridge(K_train, y_tr, n_folds=n_folds, n_classes=n_classes, seed=seed)
        lam, mode = selection.ridge, f"cv ({selection.n_folds}-fold)"
    elif ridge == "none":
        lam, mode = 0.0, "none"
    else:
        lam, mode = float(ridge) * kscale, "fixed"
    pred, _ = kernel_regression(K_train, y_tr, K_test, ridge=lam, n_classes=n_classes)
    timings["solve"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0

    return ExperimentResult(
        dataset=str(getattr(ds, "name", dataset)),
        n_train=len(y_tr),
        n_test=len(y_te),
        image_shape=tuple(int(s) for s in x_tr.shape[1:]),
        depth=int(depth),
        readout=readout,
        fix=bool(fix),
        kind=kind,
        dtype=str(dtype),
        backend=be,
        accuracy=accuracy(y_te, pred),
        per_class_accuracy=per_class_accuracy(y_te, pred, n_classes),
        confusion=confusion_matrix(y_te, pred, n_classes),
        class_names=class_names,
        ridge=float(lam),
        relative_ridge=float(lam / kscale) if kscale else float("nan"),
        ridge_mode=mode,
        timings=timings,
        ridge_selection=selection,
        K_train=K_train if keep_kernels else None,
        K_test=K_test if keep_kernels else None,
    )
