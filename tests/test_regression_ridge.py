"""Ridge path, stratified folds and ridge selection by cross-validation or a hold-out split.

Every expected value is computed independently (numpy.linalg.solve, explicit loops, sklearn.metrics).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import one_hot, raises_param, rel_err, spd_matrix

from cntk_core import regression as R
from cntk_core.validation import ParameterError, ParameterTypeError


def _clusters(n=60, c=3, d=5, noise=1.3, seed=1):
    """Noisy Gaussian clusters with an RBF kernel: accuracy depends on the ridge."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    centers = rng.standard_normal((c, d)) * 1.5
    x = centers[y] + noise * rng.standard_normal((n, d))
    sq = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return np.exp(-sq / (2 * d)), y


# -- ridge path and selection ------------------------------------------------------------------


def test_ridge_path_matches_separate_solves():
    K = spd_matrix(50, seed=4, boost=0.05)
    Y = one_hot(np.arange(50) % 4, 4)
    ridges = [0.0, 1e-4, 1e-2, 0.5, 3.0]
    path = R.ridge_path_alphas(K, Y, ridges)
    assert path.shape == (5, 50, 4)
    for lam, alpha in zip(ridges, path, strict=True):
        ref = np.linalg.solve(K + lam * np.eye(50), Y)
        assert rel_err(alpha, ref, floor=1) <= 1e-8  # max|alpha - ref| <= 1e-8 max|ref|


def _brute_force_cv(K, y, rel_grid, folds, folds_used):
    """Independent k-fold: a separate numpy.linalg.solve for every fold and ridge."""
    c = int(y.max()) + 1
    lams = np.asarray(rel_grid) * np.mean(np.diag(K))
    acc = np.zeros(len(lams))
    mse = np.zeros(len(lams))
    for f in folds_used:
        va, tr = folds == f, folds != f
        for i, lam in enumerate(lams):
            alpha = np.linalg.solve(K[np.ix_(tr, tr)] + lam * np.eye(tr.sum()), one_hot(y[tr], c))
            s = K[np.ix_(va, tr)] @ alpha
            acc[i] += np.mean(s.argmax(1) == y[va]) / len(folds_used)
            mse[i] += np.mean((s - one_hot(y[va], c)) ** 2) / len(folds_used)
    best = max(range(len(lams)), key=lambda i: (acc[i], -mse[i], i))
    return lams, acc, mse, best


@pytest.mark.parametrize("validation", [None, 0.25])
def test_select_ridge_equals_brute_force(validation):
    K, y = _clusters()
    grid = [0.0, 1e-3, 1e-2, 0.1, 0.3, 1.0, 3.0]
    sel = R.select_ridge(K, y, grid=grid, n_folds=4, validation=validation, seed=2)
    k = 4
    folds = R.fold_indices(y, k, seed=2)
    lams, acc, mse, best = _brute_force_cv(K, y, grid, folds, [0] if validation else range(k))
    np.testing.assert_allclose(sel.ridges, lams, rtol=1e-14)
    np.testing.assert_allclose(sel.accuracy, acc, atol=1e-12)
    np.testing.assert_allclose(sel.mse, mse, rtol=1e-8)
    assert sel.best_index == best
    assert sel.ridge == pytest.approx(lams[best])
    assert sel.relative_ridge == pytest.approx(grid[best])
    assert len(set(np.round(acc, 9))) > 1, "test data should make the validation accuracy depend on the ridge"


def test_fold_indices_stratified():
    y = np.repeat(np.arange(3), 10)
    folds = R.fold_indices(y, 5, seed=0)
    for f in range(5):
        np.testing.assert_array_equal(np.bincount(y[folds == f], minlength=3), [2, 2, 2])
    with raises_param("n_folds"):
        R.fold_indices(y, 1)


def test_fold_indices_are_pinned():
    """The folds of a seed, and so the ridges chosen with them, stay as they were (scikit-learn's
    StratifiedKFold deals other folds for the same seed)."""
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 1])
    assert R.fold_indices(y, 3, seed=0).tolist() == [1, 2, 0, 2, 2, 1, 0, 1, 2, 0, 1, 0]
    assert R.fold_indices(y, 3, seed=5).tolist() == [0, 2, 0, 1, 0, 1, 2, 1, 2, 0, 2, 1]


@pytest.mark.parametrize(
    "kwargs, exc, param",
    [
        (dict(n_folds=1), ParameterError, "n_folds"),
        (dict(n_folds=13), ParameterError, "n_folds"),
        (dict(n_folds="3"), ParameterTypeError, "n_folds"),
        (dict(validation=1.5), ParameterError, "validation"),
        (dict(validation="0.2"), ParameterTypeError, "validation"),
        (dict(grid=[]), ParameterError, "grid"),
        (dict(grid=[0.1, -1.0]), ParameterError, "grid"),
        (dict(grid=[0.1, np.nan]), ParameterError, "grid"),
        (dict(grid=["0.1"]), ParameterTypeError, "grid"),
        (dict(grid=[[0.1]]), ParameterError, "grid"),
        (dict(relative="no"), ParameterTypeError, "relative"),
    ],
)
def test_select_ridge_errors_name_the_parameter(kwargs, exc, param):
    K, y = _clusters(n=12)
    with raises_param(param, exc):
        R.select_ridge(K, y, **kwargs)


def test_default_grid_is_relative():
    g = R.default_ridge_grid()
    assert g[0] == 0 and g[1] == pytest.approx(1e-6) and g[-1] == pytest.approx(1.0)
    K, y = _clusters()
    sel = R.select_ridge(10.0 * K, y)
    np.testing.assert_allclose(sel.ridges, g * 10.0 * np.mean(np.diag(K)))


# -- input checks: every bad input names its argument ------------------------------------------


def test_flags_and_fold_arguments():
    K, y = _clusters(n=12)
    with raises_param("normalize", ParameterTypeError):
        R.eigenspectrum(K, normalize="no")
    with raises_param("relative", ParameterTypeError):
        R.select_ridge(K, y, relative="no")
    with raises_param("n_folds", ParameterTypeError):
        R.select_ridge(K, y, n_folds="3")
    with raises_param("n_folds", ParameterTypeError):
        R.select_ridge(K, y, n_folds=2.5)
    with raises_param("n_folds", ParameterTypeError):
        R.fold_indices(y, "3")
    with raises_param("validation", ParameterTypeError, match=r"None or a fraction in \(0, 1\)"):  # what it may be
        R.select_ridge(K, y, validation="0.2")
    with raises_param("validation", ParameterTypeError):
        R.select_ridge(K, y, validation=True)
    with raises_param("validation"):
        R.select_ridge(K, y, validation=1.5)
    with raises_param("grid", ParameterTypeError):
        R.select_ridge(K, y, grid=["0.1", "1"])
    with raises_param("grid"):
        R.select_ridge(K, y, grid=[0.1, -1.0])
    assert R.select_ridge(K, y, n_folds=np.int64(3), relative=np.bool_(False)).n_folds == 3
    np.testing.assert_allclose(R.eigenspectrum(K, normalize=False), np.linalg.eigvalsh(K)[::-1], atol=1e-12)


def test_zero_kernel_with_positive_absolute_ridges_is_allowed():
    K = np.zeros((6, 6))
    y = np.arange(6) % 2
    sel = R.select_ridge(K, y, grid=[0.1, 1.0], relative=False, n_folds=2)
    assert sel.ridge in (0.1, 1.0) and np.all(np.isfinite(sel.mse))
    with pytest.raises(R.SingularKernelError, match="identically zero"):
        R.select_ridge(K, y, grid=[0.0], relative=False, n_folds=2)
    with pytest.raises(R.SingularKernelError, match="identically zero"):
        R.select_ridge(K, y, n_folds=2)  # relative ridges of a zero kernel are all 0


def test_select_ridge_takes_0d_arrays_and_skips_n_folds_for_a_holdout():
    K = np.eye(8) + 0.1
    y = np.arange(8) % 2
    a = R.select_ridge(K, y, validation=np.array(0.5), n_folds=np.array(2))
    b = R.select_ridge(K, y, validation=0.5, n_folds=1)  # unused with a hold-out
    assert a.method == b.method == "holdout" and a.ridge == b.ridge
