"""Kernel regression, ridge selection, metrics, spectra, the sklearn classifier and run_experiment.

Every expected value is computed independently (numpy.linalg.solve, explicit loops, sklearn.metrics).
"""

from __future__ import annotations

import numpy as np
import pytest

import cntk_core
from cntk_core import regression as R


def _spd(n=40, seed=0, cond_boost=1.0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n))
    return a @ a.T / n + cond_boost * np.eye(n)


def _targets(y, c):
    Y = -0.1 * np.ones((len(y), c))
    for i, label in enumerate(y):
        Y[i, label] = 0.9
    return Y


def _clusters(n=60, c=3, d=5, noise=1.3, seed=1):
    """Noisy Gaussian clusters with an RBF kernel: accuracy depends on the ridge."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    centers = rng.standard_normal((c, d)) * 1.5
    x = centers[y] + noise * rng.standard_normal((n, d))
    sq = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return np.exp(-sq / (2 * d)), y


# -- targets, solve, predict -------------------------------------------------------------------


def test_one_hot_targets():
    y = np.array([2, 0, 1, 2])
    np.testing.assert_array_equal(R.one_hot_targets(y, 4), _targets(y, 4))
    assert R.one_hot_targets(y).shape == (4, 3)
    with pytest.raises(ValueError, match="out of range"):
        R.one_hot_targets(y, 2)


@pytest.mark.parametrize("ridge", [0.0, 0.3])
def test_solve_matches_numpy(ridge):
    K = _spd()
    y = np.arange(40) % 5
    Y = _targets(y, 5)
    alpha = R.solve_kernel(K, Y, ridge)
    ref = np.linalg.solve(K + ridge * np.eye(40), Y)
    np.testing.assert_allclose(alpha, ref, rtol=1e-10, atol=1e-12)


def test_solve_indefinite_falls_back_to_lu():
    K = _spd() - 1.5 * np.eye(40)  # symmetric, not positive definite, still invertible
    assert np.linalg.eigvalsh(K).min() < 0
    Y = _targets(np.arange(40) % 3, 3)
    np.testing.assert_allclose(R.solve_kernel(K, Y), np.linalg.solve(K, Y), rtol=1e-8, atol=1e-10)


def test_kernel_regression_predictions():
    rng = np.random.default_rng(3)
    K = _spd(30)
    Kt = rng.standard_normal((12, 30))
    y = rng.integers(0, 4, 30)
    pred, scores = R.kernel_regression(K, y, Kt, n_classes=4)
    ref_scores = Kt @ np.linalg.solve(K, _targets(y, 4))
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(pred, ref_scores.argmax(axis=1))


# -- ridge path and selection ------------------------------------------------------------------


def test_ridge_path_matches_separate_solves():
    K = _spd(50, seed=4, cond_boost=0.05)
    Y = _targets(np.arange(50) % 4, 4)
    ridges = [0.0, 1e-4, 1e-2, 0.5, 3.0]
    path = R.ridge_path_alphas(K, Y, ridges)
    assert path.shape == (5, 50, 4)
    for lam, alpha in zip(ridges, path, strict=True):
        ref = np.linalg.solve(K + lam * np.eye(50), Y)
        assert np.max(np.abs(alpha - ref)) <= 1e-8 * np.max(np.abs(ref))


def _brute_force_cv(K, y, rel_grid, folds, folds_used):
    """Independent k-fold: a separate numpy.linalg.solve for every fold and ridge."""
    c = int(y.max()) + 1
    lams = np.asarray(rel_grid) * np.mean(np.diag(K))
    acc = np.zeros(len(lams))
    mse = np.zeros(len(lams))
    for f in folds_used:
        va, tr = folds == f, folds != f
        for i, lam in enumerate(lams):
            alpha = np.linalg.solve(K[np.ix_(tr, tr)] + lam * np.eye(tr.sum()), _targets(y[tr], c))
            s = K[np.ix_(va, tr)] @ alpha
            acc[i] += np.mean(s.argmax(1) == y[va]) / len(folds_used)
            mse[i] += np.mean((s - _targets(y[va], c)) ** 2) / len(folds_used)
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
    with pytest.raises(ValueError, match="n_folds"):
        R.fold_indices(y, 1)


def test_default_grid_is_relative():
    g = R.default_ridge_grid()
    assert g[0] == 0 and g[1] == pytest.approx(1e-6) and g[-1] == pytest.approx(1.0)
    K, y = _clusters()
    sel = R.select_ridge(10.0 * K, y)
    np.testing.assert_allclose(sel.ridges, g * 10.0 * np.mean(np.diag(K)))


# -- errors ------------------------------------------------------------------------------------


def test_singular_kernel_errors_and_lstsq():
    rng = np.random.default_rng(5)
    f = rng.standard_normal((20, 4))
    K = f @ f.T  # rank 4 of 20
    Y = _targets(np.arange(20) % 3, 3)
    with pytest.raises(R.SingularKernelError, match="ridge"):
        R.solve_kernel(K, Y)
    with pytest.warns(RuntimeWarning, match="least-squares"):
        alpha = R.solve_kernel(K, Y, on_singular="lstsq")
    np.testing.assert_allclose(alpha, np.linalg.lstsq(K, Y, rcond=None)[0], atol=1e-6)
    # duplicate images: two identical rows and columns
    K2 = _spd(10)
    K2[5, :] = K2[4, :]
    K2[:, 5] = K2[:, 4]
    K2[5, 5] = K2[4, 4]
    with pytest.raises(R.SingularKernelError, match="use a ridge"):
        R.kernel_regression(K2, np.arange(10) % 2, K2[:3])
    R.solve_kernel(K2, _targets(np.arange(10) % 2, 2), ridge=1e-3)  # a ridge fixes it
    # every grid point singular -> clear error
    with pytest.raises(R.SingularKernelError, match="grid"):
        R.select_ridge(K, np.arange(20) % 3, grid=[0.0], n_folds=2)


@pytest.mark.parametrize(
    "K, match",
    [
        (np.ones((3, 4)), "square"),
        (np.array([[1.0, 0.5], [0.2, 1.0]]), "not symmetric"),
        (np.array([[1.0, np.nan], [np.nan, 1.0]]), "non-finite"),
        (np.array([[1.0, np.inf], [np.inf, 1.0]]), "non-finite"),
        (np.ones(3), "2-D"),
    ],
)
def test_bad_kernels(K, match):
    with pytest.raises(ValueError, match=match):
        R.solve_kernel(K, np.ones((K.shape[0], 2)))


def test_shape_mismatches():
    K = _spd(6)
    with pytest.raises(ValueError, match="labels"):
        R.kernel_regression(K, np.arange(5), K)
    with pytest.raises(ValueError, match="n_test"):
        R.kernel_regression(K, np.arange(6) % 2, np.ones((3, 5)))
    with pytest.raises(ValueError, match="do not match"):
        R.solve_kernel(K, np.ones((5, 2)))
    with pytest.raises(ValueError, match="ridge"):
        R.solve_kernel(K, np.ones((6, 2)), ridge=-1.0)


# -- metrics -----------------------------------------------------------------------------------


def test_metrics_against_direct_computation():
    from sklearn.metrics import confusion_matrix as sk_cm

    rng = np.random.default_rng(7)
    t = rng.integers(0, 5, 200)
    p = np.where(rng.random(200) < 0.6, t, rng.integers(0, 5, 200))
    assert R.accuracy(t, p) == pytest.approx(sum(int(a == b) for a, b in zip(t, p, strict=True)) / 200)
    cm = R.confusion_matrix(t, p, 6)
    np.testing.assert_array_equal(cm, sk_cm(t, p, labels=range(6)))
    pc = R.per_class_accuracy(t, p, 6)
    for c in range(5):
        assert pc[c] == pytest.approx(np.mean(p[t == c] == c))
    assert np.isnan(pc[5])  # class 5 never occurs
    with pytest.raises(ValueError, match="same length"):
        R.accuracy(t, p[:-1])


# -- spectra -----------------------------------------------------------------------------------


def test_spectrum_helpers():
    K = _spd(25, seed=8)
    N = R.normalized_gram(K)
    d = np.sqrt(np.diag(K))
    np.testing.assert_allclose(N, K / np.outer(d, d), rtol=1e-13)
    eig = R.eigenspectrum(K, normalize=False)
    np.testing.assert_allclose(eig, np.sort(np.linalg.eigvals(K).real)[::-1], rtol=1e-9)
    assert np.sum(R.eigenspectrum(K)) == pytest.approx(25.0)
    lam = 0.7
    ref = np.trace(K @ np.linalg.inv(K + lam * np.eye(25)))
    assert R.effective_dimension(eig, lam) == pytest.approx(ref, rel=1e-10)
    assert R.participation_ratio(eig) == pytest.approx(np.trace(K) ** 2 / np.trace(K @ K), rel=1e-10)
    with pytest.raises(ValueError, match="positive diagonal"):
        R.normalized_gram(np.zeros((2, 2)))


# -- scikit-learn ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_small():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images[:60, :, :, None] / 16.0 - 0.3) / 0.4  # float NHWC [60, 8, 8, 1]
    return x, d.target[:60]


def test_classifier_in_cross_val_score(digits_small):
    from sklearn.base import clone
    from sklearn.model_selection import KFold, cross_val_score

    x, y = digits_small
    clf = R.CNTKClassifier(depth=3, readout="vanilla", ridge=0.0)
    assert clone(clf).get_params()["readout"] == "vanilla"
    assert clf.set_params(ridge=1e-3).ridge == 1e-3
    clf.set_params(ridge=0.0)
    cv = KFold(3, shuffle=True, random_state=0)
    scores = cross_val_score(clf, x, y, cv=cv)
    # independent: kernels per fold and numpy.linalg.solve
    K = cntk_core.kernel_matrix(x, depth=3, readout="vanilla")
    for score, (tr, te) in zip(scores, cv.split(x), strict=True):
        classes = np.unique(y[tr])
        enc = np.searchsorted(classes, y[tr])
        alpha = np.linalg.solve(K[np.ix_(tr, tr)], _targets(enc, len(classes)))
        pred = classes[(K[np.ix_(te, tr)] @ alpha).argmax(1)]
        assert score == pytest.approx(np.mean(pred == y[te]))
    assert scores.mean() > 0.6


def test_classifier_cv_ridge_and_kernel_ridge(digits_small):
    from sklearn.kernel_ridge import KernelRidge

    x, y = digits_small
    xtr, ytr, xte = x[:40], y[:40], x[40:]
    clf = R.CNTKClassifier(depth=3, readout="vanilla", ridge="cv").fit(xtr, ytr)
    assert clf.ridge_selection_ is not None and clf.ridge_ == clf.ridge_selection_.ridge
    assert clf.decision_function(xte).shape == (20, len(np.unique(ytr)))
    K, Kt = R.precomputed_kernels(xtr, xte, depth=3, readout="vanilla")
    lam = 1e-3 * np.mean(np.diag(K))
    Y = R.one_hot_targets(ytr, 10)
    kr = KernelRidge(alpha=lam, kernel="precomputed").fit(K, Y)
    np.testing.assert_allclose(R.predict_scores(Kt, R.solve_kernel(K, Y, lam)), kr.predict(Kt), rtol=1e-7, atol=1e-9)
    fixed = R.CNTKClassifier(depth=3, readout="vanilla", ridge=1e-3).fit(xtr, ytr)
    assert fixed.ridge_ == pytest.approx(lam)
    with pytest.raises(ValueError, match="'cv'"):
        R.CNTKClassifier(ridge="auto").fit(xtr, ytr)


# -- run_experiment ----------------------------------------------------------------------------


def test_run_experiment_digits_matches_manual():
    from cntk_core.data import load_dataset

    res = R.run_experiment("digits", n_train=80, n_test=40, depth=3, readout="vanilla", ridge="none", keep_kernels=True)
    ds = load_dataset("digits")
    raw = ds.x_train.astype(np.float64) / 16.0
    mean, std = raw.mean(axis=(0, 1, 2)), raw.std(axis=(0, 1, 2))
    xtr = (ds.x_train[:80] / 16.0 - mean) / std
    xte = (ds.x_test[:40] / 16.0 - mean) / std
    K = cntk_core.kernel_matrix(xtr, depth=3, readout="vanilla")
    Kt = cntk_core.kernel_matrix(xte, xtr, depth=3, readout="vanilla")
    np.testing.assert_allclose(res.K_train, K, rtol=1e-12)
    pred = (Kt @ np.linalg.solve(K, _targets(ds.y_train[:80], 10))).argmax(1)
    assert res.accuracy == pytest.approx(np.mean(pred == ds.y_test[:40]))
    assert res.confusion.sum() == 40 and res.n_train == 80
    d = res.to_dict()
    assert d["accuracy"] == res.accuracy and "K_train" not in d
    assert "accuracy" in res.report()
    with pytest.raises(ValueError, match="ridge"):
        R.run_experiment("digits", n_train=10, n_test=5, ridge="auto")
