"""The ridge path from one eigendecomposition, and choosing the ridge by cross-validation.

With ``K = U diag(s) U^T`` (one ``eigh`` per training block), ``alpha(lam) = U diag(1 / (s + lam)) U^T Y``
costs only a matrix product per ridge ``lam``. Ridges here are absolute (in the kernel's units)
unless a function says relative: a relative ridge is a multiple of ``mean(diag(K_train))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from ..validation import ParameterError, check_flag, check_int, check_labels, check_real
from ._checks import check_grid, check_kernel, check_n_classes, check_targets
from .solve import ZERO_KERNEL_MESSAGE, SingularKernelError, targets_of_indices


def default_ridge_grid(n: int = 19) -> np.ndarray:
    """Relative ridges ``[n]`` (multiples of ``mean(diag(K))``): 0 followed by ``logspace(-6, 0, n - 1)``."""
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

    K_train ``[n, n]``, Y ``[n, c]`` (or ``[n]``), ridges ``[n_ridges]`` (or one number). Returns
    ``[n_ridges, n, c]`` (``[n_ridges, n]``); entries whose ``K + lam I`` is singular to working
    precision are NaN.
    """
    K = check_kernel(K_train, "K_train")
    Y = check_targets(Y, K.shape[0])
    squeeze = Y.ndim == 1
    Y = Y[:, None] if squeeze else Y
    ridges = check_grid(ridges, "ridges")
    s, U = _eig(K)
    UtY = U.T @ Y
    bad = _singular_mask(s, ridges)
    out = np.full((len(ridges), *Y.shape), np.nan)
    for i, lam in enumerate(ridges):
        if not bad[i]:
            out[i] = U @ (UtY / (s + lam)[:, None])
    return out[..., 0] if squeeze else out


def fold_indices(y, n_folds: int, seed: int = 0) -> np.ndarray:
    """Stratified fold id ``[n]`` in ``0..n_folds-1``: shuffle with ``seed``, deal each class round-robin.

    Not scikit-learn's ``StratifiedKFold``: for the same seed it assigns other folds, which would
    change the ridge that :func:`select_ridge` chooses (and every result reported with it).
    """
    y = np.asarray(y)
    n_folds = check_int(n_folds, "n_folds", 2, " (k-fold cross-validation)")
    if n_folds > len(y):
        raise ParameterError("n_folds", f"n_folds={n_folds} is larger than the number of training points ({len(y)})")
    order = np.random.default_rng(seed).permutation(len(y))
    order = order[np.argsort(y[order], kind="stable")]
    folds = np.empty(len(y), np.int64)
    folds[order] = np.arange(len(y)) % n_folds
    return folds


@dataclass
class RidgeSelection:
    """Result of :func:`select_ridge`. Arrays are ``[n_ridges]``, indexed like the grid.

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
    """Validation (accuracy, mse) ``[n_ridges]`` for every ridge, from one eigendecomposition of ``K_fit``."""
    s, U = _eig(K_fit)
    A = K_val @ U  # [n_val, n_fit]
    B = U.T @ Y_fit  # [n_fit, c]
    Y_val = targets_of_indices(y_val, Y_fit.shape[1])
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
    y = check_labels(y_train, K.shape[0], "y_train", for_what=f"a kernel with {K.shape[0]} rows")
    relative = check_flag(relative, "relative")
    if validation is None:
        n_folds = check_int(n_folds, "n_folds", 2, " (k-fold cross-validation)")
    else:
        validation = check_real(validation, "validation", "None or a fraction in (0, 1)")
    n_classes = check_n_classes(n_classes)
    c = n_classes if n_classes is not None else int(y.max()) + 1
    scale = float(np.mean(np.diag(K)))
    rel = default_ridge_grid() if grid is None else check_grid(grid, "grid")
    if len(rel) == 0:
        raise ParameterError("grid", "grid must be a non-empty 1-D list of ridges")
    ridges = rel * scale if relative else rel.copy()
    if not np.any(ridges > 0) and not np.any(K):
        raise SingularKernelError(ZERO_KERNEL_MESSAGE)
    if validation is not None:
        if not 0 < validation < 1:
            raise ParameterError("validation", f"validation must be a fraction in (0, 1), got {validation}")
        k = max(2, int(round(1 / validation)))
        method, folds_used = "holdout", [0]
    else:
        k = n_folds
        method, folds_used = "kfold", list(range(k))
    folds = fold_indices(y, k, seed)
    accs, mses = [], []
    for f in folds_used:
        val, fit = folds == f, folds != f
        Y_fit = targets_of_indices(y[fit], c)
        a, m = _validation_curve(K[np.ix_(fit, fit)], Y_fit, K[np.ix_(val, fit)], y[val], ridges)
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
