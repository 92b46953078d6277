"""The paper's classifier: one-hot targets, the float64 kernel solve and the test scores.

Targets are 0.9 for the true class and -0.1 elsewhere (:func:`one_hot_targets`); the solve is
``(K_train + ridge I) alpha = Y`` with an **absolute** ridge (0 in the paper); the prediction is
``argmax(K_test,train @ alpha)``. Kernels are in their own units (no normalisation here).
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg

from ..validation import ParameterError, as_real_array, check_labels
from ._checks import check_kernel, check_n_classes, check_ridge, check_targets

TRUE_TARGET = 0.9
OTHER_TARGET = -0.1

#: labels are class indices; more classes than this (and than 8 per distinct label) are refused
#: as labels that are identifiers rather than indices (a year, a hash, 2**40), see one_hot_targets
_MAX_SPARSE_CLASSES = 1024


class SingularKernelError(ParameterError):
    """The (ridged) training kernel is singular to working precision: a ``ValueError`` whose
    ``param`` is ``"ridge"``, the setting that cures it."""

    def __init__(self, message: str):
        super().__init__("ridge", message)


ZERO_KERNEL_MESSAGE = (
    "the training kernel is identically zero: either the network has no trained layer (e.g. depth 2 with "
    "fix=True: use kind='nngp', fix=False or a deeper network) or every training image is all zero (check "
    "the data). A ridge relative to mean(diag(K)) = 0 is 0 as well, and with any ridge every prediction would be 0"
)


def one_hot_targets(y, n_classes: int | None = None) -> np.ndarray:
    """The paper's regression targets: float64 ``[n, n_classes]``, 0.9 at the true class, -0.1 elsewhere.

    Labels are class indices ``0..n_classes-1`` (``n_classes``: the largest label + 1 unless given).
    Labels that are identifiers rather than indices, e.g. ``[0, 2**40]``, would make a target matrix
    of ``n x (max_label + 1)`` floats; when the classes exceed both 1024 and 8 per distinct label,
    a ``ValueError`` says how to map them (``np.unique(y, return_inverse=True)``) instead of
    allocating. Nothing is remapped silently: the score columns stay the class indices.
    """
    return targets_of_indices(check_labels(y, name="y"), n_classes)


def targets_of_indices(y: np.ndarray, n_classes: int | None, name: str = "y") -> np.ndarray:
    """:func:`one_hot_targets` of labels that :func:`~cntk_core.validation.check_labels` already
    returned (int64 ``[n]``, >= 0): checks ``n_classes`` against them, not the labels again.
    ``name``: the labels' parameter, named by the errors."""
    n_classes = check_n_classes(n_classes)
    if n_classes is None:
        n_classes = int(y.max()) + 1 if len(y) else 0
    if len(y) and y.max() >= n_classes:
        raise ParameterError(name, f"{name}: label {int(y.max())} out of range for n_classes={n_classes}")
    distinct = len(np.unique(y))
    if n_classes > max(_MAX_SPARSE_CLASSES, 8 * distinct):
        raise ParameterError(
            name,
            f"labels must be class indices 0..n_classes-1: {distinct} distinct labels up to {int(y.max())} would "
            f"make {n_classes} classes, a target matrix of {len(y)} x {n_classes} floats "
            f"({len(y) * n_classes * 8 / 2**30:.3g} GiB). Map them to 0..{distinct - 1} first: "
            "classes, y = np.unique(y, return_inverse=True), and read predictions as classes[pred]",
        )
    Y = np.full((len(y), n_classes), OTHER_TARGET)
    Y[np.arange(len(y)), y] = TRUE_TARGET
    return Y


def solve_kernel(K_train, Y, ridge: float = 0.0, *, on_singular: str = "raise", check: bool = True) -> np.ndarray:
    """Solve ``(K_train + ridge I) alpha = Y`` in float64; returns ``alpha`` ``[n, c]`` (or ``[n]``).

    K_train ``[n, n]`` symmetric; Y ``[n, c]`` or ``[n]``; ridge absolute (in the kernel's units).
    Tries a Cholesky solve (``assume_a="pos"``); if the matrix is not positive definite, an LU solve.
    If the matrix is singular or so ill-conditioned that its reciprocal condition number is below
    machine precision, ``on_singular="raise"`` raises :class:`SingularKernelError` (use a ridge),
    ``on_singular="lstsq"`` warns and returns the minimum-norm least-squares solution. An identically
    zero kernel without a ridge gets its own message (no trained layer or all-zero images).
    ``check=False`` skips the kernel check (for a kernel that :func:`check_kernel` already returned).
    """
    if on_singular not in ("raise", "lstsq"):
        raise ParameterError("on_singular", f"on_singular must be 'raise' or 'lstsq', got {on_singular!r}")
    K = check_kernel(K_train, "K_train") if check else np.asarray(K_train, dtype=np.float64)
    Y = check_targets(Y, K.shape[0])
    lam = check_ridge(ridge)
    if not lam and not np.any(K):
        if on_singular == "raise":
            raise SingularKernelError(ZERO_KERNEL_MESSAGE)
        warnings.warn(ZERO_KERNEL_MESSAGE + "; returning the least-squares solution", RuntimeWarning, stacklevel=2)
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
        raise ParameterError(
            "alpha",
            f"alpha: expected dual coefficients of shape [n_train, n_classes] or [n_train], got {alpha.shape}",
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
    y = check_labels(y_train, K.shape[0], "y_train", for_what=f"a kernel with {K.shape[0]} rows")
    Kt = check_kernel(K_test, "K_test", symmetric=False)
    if Kt.shape[1] != K.shape[0]:
        raise ParameterError(
            "K_test", f"K_test has shape {Kt.shape}; expected [n_test, {K.shape[0]}] (test rows, train columns)"
        )
    alpha = solve_kernel(K, targets_of_indices(y, n_classes, "y_train"), ridge, on_singular=on_singular, check=False)
    scores = Kt @ alpha
    return scores.argmax(axis=1), scores
