"""Input checks of the regression: kernels, targets, ridges, ridge grids, class counts and spectra.

Each returns the checked value in the form the solvers use (float64 arrays, Python floats and ints)
or raises :class:`~cntk_core.validation.ParameterError` / :class:`~cntk_core.validation.ParameterTypeError`
naming the argument. Labels are checked by :func:`cntk_core.validation.check_labels`.
"""

from __future__ import annotations

import numpy as np

from ..validation import ParameterError, ParameterTypeError, as_real_array, check_int, check_real


def check_kernel(K, name: str = "K", *, symmetric: bool = True, rtol: float = 1e-8) -> np.ndarray:
    """Return ``K`` as a float64 2-D array, or raise ``ValueError`` with an actionable message.

    ``TypeError`` for complex, bool, string or object input (never a silently dropped imaginary part).

    symmetric: also require a square matrix with ``max|K - K^T| <= rtol * max|K|``; the result is
    then exactly symmetrised, ``(K + K^T) / 2``.
    """
    arr = as_real_array(K, name, "a real matrix")
    if arr.ndim != 2:
        raise ParameterError(name, f"{name}: expected a 2-D kernel matrix, got shape {arr.shape}")
    if arr.size == 0:
        raise ParameterError(name, f"{name}: empty kernel matrix of shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ParameterError(name, f"{name}: {int(bad.sum())} non-finite entries (NaN or inf), first at [{i}, {j}]")
    if symmetric:
        if arr.shape[0] != arr.shape[1]:
            raise ParameterError(name, f"{name}: a training kernel must be square, got shape {arr.shape}")
        scale = float(np.max(np.abs(arr)))
        asym = float(np.max(np.abs(arr - arr.T)))
        if asym > rtol * scale:
            raise ParameterError(
                name,
                f"{name}: not symmetric (max |K - K^T| = {asym:.3g}, {asym / scale:.3g} relative to max |K|; "
                f"tolerance {rtol:g}); is it a cross kernel K(x_test, x_train) passed as a training kernel?",
            )
        arr = 0.5 * (arr + arr.T)
    return arr


def check_n_classes(n_classes) -> int | None:
    """``None`` or the number of classes as an int >= 1."""
    return None if n_classes is None else check_int(n_classes, "n_classes", 1)


def check_targets(Y, n: int, name: str = "Y") -> np.ndarray:
    """Regression targets as finite float64 ``[n]`` or ``[n, c]`` for a training kernel with ``n`` rows."""
    Y = as_real_array(Y, name, "real regression targets", bools=True)
    if Y.ndim not in (1, 2):
        raise ParameterError(name, f"{name}: expected targets of shape [n] or [n, n_classes], got shape {Y.shape}")
    if Y.shape[0] != n:
        raise ParameterError(
            name, f"{name}: targets of shape {Y.shape} do not match a training kernel of shape {(n, n)}"
        )
    if not np.all(np.isfinite(Y)):
        raise ParameterError(name, f"{name}: targets contain NaN or inf")
    return Y


def check_ridge(lam, name: str = "ridge") -> float:
    """``lam`` (an absolute or relative ridge, in units of the kernel) as a float: a real, finite,
    non-bool number >= 0 (NumPy scalars and 0-d arrays too).

    ``TypeError`` for ``True``, ``None``, ``"1e-3"``, ``[0.1]``; ``ValueError`` for negative or non-finite values.
    """
    lam = float(check_real(lam, name, "a real number >= 0"))
    if lam < 0:
        raise ParameterError(name, f"{name} must be a finite number >= 0, got {lam}")
    return lam


def check_ridge_choice(ridge, words: tuple[str, ...]) -> str | float:
    """``ridge`` if it is one of ``words`` (e.g. ``"cv"``), else as a float >= 0 (:func:`check_ridge`)."""
    if isinstance(ridge, str):
        if ridge not in words:
            allowed = ", ".join(repr(w) for w in words)
            raise ParameterError(
                "ridge",
                f"ridge must be {allowed} or a number >= 0 (relative to mean(diag(K_train))), got {ridge!r}",
            )
        return ridge
    return check_ridge(ridge)


def check_grid(grid, name: str) -> np.ndarray:
    """A 1-D float64 array ``[n_ridges]`` of ridges, each a finite number >= 0 (a scalar counts as one ridge)."""
    arr = np.atleast_1d(as_real_array(grid, name, "a list of ridges"))
    if arr.ndim != 1:
        raise ParameterError(name, f"{name} must be a 1-D list of ridges, got shape {arr.shape}")
    for lam in arr:
        try:
            check_ridge(lam, f"every entry of {name}")
        except (ParameterError, ParameterTypeError) as exc:
            exc.param = name  # the message's subject is "every entry of grid"; the parameter is grid
            raise
    return arr


def check_spectrum(eigs) -> np.ndarray:
    """Finite 1-D float64 eigenvalues ``[n]`` with negative round-off clipped to 0."""
    s = as_real_array(eigs, "eigs", "real eigenvalues")
    if s.ndim != 1:
        raise ParameterError(
            "eigs", f"eigs: expected a 1-D array of eigenvalues (see eigenspectrum), got shape {s.shape}"
        )
    bad = ~np.isfinite(s)
    if bad.any():
        raise ParameterError(
            "eigs", f"eigs: {int(bad.sum())} non-finite eigenvalues (NaN or inf), first at [{np.argmax(bad)}]"
        )
    return np.clip(s, 0, None)
