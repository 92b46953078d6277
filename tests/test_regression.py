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

    res = R.run_experiment(  # the first images, as the manual computation below (not the default, balanced)
        "digits", n_train=80, n_test=40, subset="first", depth=3, readout="vanilla", ridge="none", keep_kernels=True
    )
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


# -- input checks: every bad input names its argument ------------------------------------------


def _tiny_dataset(n_train=10, n_test=4, n_classes=2, seed=0, y_train=None):
    from cntk_core.data import Dataset

    rng = np.random.default_rng(seed)
    return Dataset(
        rng.integers(0, 16, (n_train, 5, 5, 1)).astype(np.uint8),
        np.arange(n_train, dtype=np.int64) % n_classes if y_train is None else np.asarray(y_train, np.int64),
        rng.integers(0, 16, (n_test, 5, 5, 1)).astype(np.uint8),
        np.arange(n_test, dtype=np.int64) % n_classes,
        tuple("abcdefghij"[:n_classes]),
        "tiny",
        16.0,
    )


def _tiny_images(n=6, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 5, 5, 1))


@pytest.mark.parametrize(
    "y",
    [[0, 1, np.nan, 1], [0.0, 1.0, np.inf, 1.0], np.array([0, 1, None, 1], dtype=object), ["a", None, "b", "a"]],
)
def test_classifier_refuses_missing_labels(y):
    with pytest.raises(ValueError, match=r"^y: 1 missing or non-finite labels"):
        R.CNTKClassifier(depth=3).fit(_tiny_images(4), y)


def test_classifier_string_labels_still_work():
    clf = R.CNTKClassifier(depth=3, ridge=1e-3).fit(_tiny_images(4), ["b", "a", "b", "a"])
    np.testing.assert_array_equal(clf.classes_, ["a", "b"])
    assert set(clf.predict(_tiny_images(3, seed=1))) <= {"a", "b"}


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(n_train=50), ValueError, r"n_train=50 is more than the 10 training images"),
        (dict(n_test=50), ValueError, r"n_test=50 is more than the 4 test images"),
        (dict(n_train=50, subset="random"), ValueError, r"n_train=50 is more than the 10"),
        (dict(n_train=6, per_class=True), ValueError, r"n_train=6 per class .* class 0 has only 5"),
        (dict(n_train=True), TypeError, r"n_train must be an integer >= 1, got True"),
        (dict(n_train=2.5), TypeError, r"n_train must be an integer >= 1, got 2.5"),
        (dict(n_train="5"), TypeError, r"n_train must be an integer >= 1, got '5'"),
        (dict(n_test=0), ValueError, r"n_test must be an integer >= 1, got 0"),
        (dict(ridge="cv", n_folds=1), ValueError, r"n_folds must be an integer >= 2"),
        (dict(ridge="cv", n_folds=2.5), TypeError, r"n_folds must be an integer"),
        (  # 3 of 2 classes: only the first 3 (the balanced default would refuse the 3 first)
            dict(ridge="cv", n_train=3, subset="first", n_folds=50),
            ValueError,
            r"n_folds=50 is larger than the 3 training images",
        ),
        (dict(per_class="no"), TypeError, r"per_class must be True or False"),
        (dict(ridge=True), TypeError, r"ridge must be a real number >= 0, got True"),
        (dict(subset="last"), ValueError, r"subset must be one of"),
    ],
)
def test_run_experiment_refuses_bad_counts(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        R.run_experiment(_tiny_dataset(), depth=3, progress=False, **kwargs)


def test_run_experiment_balanced_subset_too_large():
    ds = _tiny_dataset(y_train=[0] * 8 + [1] * 2)
    with pytest.raises(ValueError, match=r"n_train=6 with subset='balanced' \(3 per class\) .* class 1 has only 2"):
        R.run_experiment(ds, n_train=6, subset="balanced", depth=3, progress=False)
    with pytest.raises(ValueError, match="subset='balanced' needs n_train divisible by the 2 classes"):
        R.run_experiment(ds, n_train=5, subset="balanced", depth=3, progress=False)


def test_run_experiment_default_subset_is_the_clis_balanced():
    """``run_experiment`` draws as ``cntk-lab regress`` does unless told otherwise: balanced, seeded."""
    import inspect

    from cntk_core.cli import build_parser
    from cntk_core.data import Dataset

    cli_default = build_parser().parse_args(["regress", "--dataset", "digits"]).subset
    assert inspect.signature(R.run_experiment).parameters["subset"].default == cli_default == "balanced"
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 6)  # the first 6 images of each split are all class 0
    x_tr, x_te = (rng.integers(0, 16, (12, 5, 5, 1)).astype(np.uint8) for _ in range(2))
    ds = Dataset(x_tr, y, x_te, y, ("a", "b"), "sorted", 16.0)
    res = R.run_experiment(ds, n_train=4, n_test=4, depth=3, ridge=1e-3, progress=False)
    assert res.confusion.sum(axis=1).tolist() == [2, 2]  # 2 test images per class, not 4 of class 0
    first = R.run_experiment(ds, n_train=4, n_test=4, subset="first", depth=3, ridge=1e-3, progress=False)
    assert first.confusion.sum(axis=1).tolist() == [4, 0]


def test_run_experiment_counts_still_work():
    ds = _tiny_dataset(n_train=12, n_test=4, n_classes=2)
    res = R.run_experiment(ds, n_train=np.int64(12), n_test=2, depth=3, ridge="cv", n_folds=3, progress=False)
    assert (res.n_train, res.n_test, res.ridge_mode) == (12, 2, "cv (3-fold)")
    res = R.run_experiment(ds, n_train=3, n_test=1, per_class=True, depth=3, ridge=1e-3, progress=False)
    assert (res.n_train, res.n_test) == (6, 2)
    res = R.run_experiment(ds, n_train=4, subset="balanced", depth=3, ridge=1e-3, progress=False)
    assert res.n_train == 4 and res.n_test == 4


def test_standardize_without_images():
    from cntk_core.data import Dataset

    ds = _tiny_dataset()
    with pytest.raises(ValueError, match=r"stats='used'.*none given"):
        R.standardize(ds, stats="used")
    empty = Dataset(
        np.zeros((0, 5, 5, 1)), np.zeros(0, np.int64), np.zeros((2, 5, 5, 1)), np.zeros(2, np.int64), ("a",), "e", 1.0
    )
    with pytest.raises(ValueError, match=r"no training images \(dataset.x_train is empty\)"):
        R.standardize(empty, empty.x_test)
    with pytest.raises(ValueError, match=r"no training images"):
        R.run_experiment(empty, depth=3, progress=False)
    assert R.standardize(ds) == []


@pytest.mark.parametrize("ridge", [0.0, 1e-3, "cv"])
def test_zero_training_kernel_is_explained(ridge):
    x = _tiny_images()
    y = np.arange(6) % 2
    assert not np.any(cntk_core.kernel_matrix(x, depth=2, fix=True))
    with pytest.raises(R.SingularKernelError, match=r"no trained layer .*use kind='nngp', fix=False or a deeper"):
        R.CNTKClassifier(depth=2, fix=True, ridge=ridge).fit(x, y)
    with pytest.raises(R.SingularKernelError, match=r"identically zero"):
        R.CNTKClassifier(depth=3, ridge=ridge).fit(np.zeros_like(x), y)


def test_zero_training_kernel_low_level():
    Z = np.zeros((4, 4))
    y = np.arange(4) % 2
    with pytest.raises(R.SingularKernelError, match=r"identically zero"):
        R.kernel_regression(Z, y, np.zeros((2, 4)))
    with pytest.raises(R.SingularKernelError, match=r"identically zero"):
        R.select_ridge(Z, y, n_folds=2)
    # an absolute ridge makes the zero kernel solvable: unchanged
    np.testing.assert_allclose(R.solve_kernel(Z, _targets(y, 2), ridge=2.0), _targets(y, 2) / 2.0)
    with pytest.raises(R.SingularKernelError, match=r"identically zero"):
        R.run_experiment(_tiny_dataset(), depth=2, fix=True, ridge=1e-3, progress=False)


@pytest.mark.parametrize(
    "K, match",
    [
        (np.eye(2) * (1 + 1j), r"K: expected a real matrix, got complex"),
        (np.eye(2) + 0j, r"complex"),
        (np.array([["1", "0"], ["0", "1"]]), r"K: expected a real matrix, got string"),
        (np.array([[1.0, 0.0], [0.0, 1.0]], dtype=object), r"K: expected a real matrix, got object"),
        (np.eye(2, dtype=bool), r"K: expected a real matrix, got boolean"),
    ],
)
def test_check_kernel_refuses_non_real_dtypes(K, match):
    with pytest.raises(TypeError, match=match):
        R.check_kernel(K)
    with pytest.raises(TypeError, match="K_train"):
        R.solve_kernel(K, np.ones((2, 1)))


def test_check_kernel_accepts_real_dtypes():
    for K in ([[2, 1], [1, 2]], np.eye(2, dtype=np.int32), np.eye(2, dtype=np.float32)):
        out = R.check_kernel(K)
        assert out.dtype == np.float64 and out.shape == (2, 2)


@pytest.mark.parametrize(
    "eigs, match",
    [
        ([1.0, np.nan], r"eigs: 1 non-finite eigenvalues"),
        ([1.0, np.inf, 2.0], r"eigs: 1 non-finite eigenvalues"),
        (np.eye(3), r"eigs: expected a 1-D array"),
        (2.0, r"eigs: expected a 1-D array"),
    ],
)
def test_spectrum_statistics_refuse_bad_eigenvalues(eigs, match):
    with pytest.raises(ValueError, match=match):
        R.effective_dimension(eigs, 0.5)
    with pytest.raises(ValueError, match=match):
        R.participation_ratio(eigs)


def test_flags_and_fold_arguments():
    K, y = _clusters(n=12)
    with pytest.raises(TypeError, match="normalize must be True or False"):
        R.eigenspectrum(K, normalize="no")
    with pytest.raises(TypeError, match="relative must be True or False"):
        R.select_ridge(K, y, relative="no")
    with pytest.raises(TypeError, match="n_folds must be an integer >= 2"):
        R.select_ridge(K, y, n_folds="3")
    with pytest.raises(TypeError, match="n_folds must be an integer >= 2"):
        R.select_ridge(K, y, n_folds=2.5)
    with pytest.raises(TypeError, match="n_folds must be an integer >= 2"):
        R.fold_indices(y, "3")
    with pytest.raises(TypeError, match=r"validation must be None or a fraction in \(0, 1\), got '0.2'"):
        R.select_ridge(K, y, validation="0.2")
    with pytest.raises(TypeError, match="validation must be None or a fraction"):
        R.select_ridge(K, y, validation=True)
    with pytest.raises(ValueError, match="validation must be a fraction"):
        R.select_ridge(K, y, validation=1.5)
    with pytest.raises(TypeError, match="grid: expected a list of ridges, got string"):
        R.select_ridge(K, y, grid=["0.1", "1"])
    with pytest.raises(ValueError, match="every entry of grid must be a finite number >= 0"):
        R.select_ridge(K, y, grid=[0.1, -1.0])
    assert R.select_ridge(K, y, n_folds=np.int64(3), relative=np.bool_(False)).n_folds == 3
    np.testing.assert_allclose(R.eigenspectrum(K, normalize=False), np.linalg.eigvalsh(K)[::-1], atol=1e-12)


@pytest.mark.parametrize(
    "ridge, exc, match",
    [
        ("1e-3", TypeError, r"ridge must be a real number >= 0, got '1e-3'"),
        ("abc", TypeError, r"ridge must be a real number >= 0, got 'abc'"),
        (None, TypeError, r"ridge must be a real number >= 0, got None"),
        ([0.1], TypeError, r"ridge must be a real number >= 0, got \[0.1\]"),
        (True, TypeError, r"ridge must be a real number >= 0, got True"),
        (np.nan, ValueError, r"ridge must be finite, got nan"),
    ],
)
def test_ridge_must_be_a_real_number(ridge, exc, match):
    K = _spd(6)
    y = np.arange(6) % 2
    with pytest.raises(exc, match=match):
        R.kernel_regression(K, y, K, ridge=ridge)
    with pytest.raises(exc, match=match):
        R.solve_kernel(K, _targets(y, 2), ridge=ridge)
    if isinstance(ridge, str):  # the classifier also takes the string "cv"
        exc, match = ValueError, r"ridge must be 'cv' or a number >= 0"
    with pytest.raises(exc, match=match):
        R.CNTKClassifier(depth=3, ridge=ridge).fit(_tiny_images(), y)


def test_ridge_accepts_numpy_numbers():
    K = _spd(6)
    y = np.arange(6) % 2
    ref = R.kernel_regression(K, y, K, ridge=0.5)[1]
    for lam in (np.float32(0.5), np.float64(0.5), np.array(0.5)):
        np.testing.assert_allclose(R.kernel_regression(K, y, K, ridge=lam)[1], ref, rtol=1e-6)
    assert R.kernel_regression(K, y, K, ridge=1)[1].shape == (6, 2)


def test_classifier_cv_ridge_needs_two_images():
    with pytest.raises(ValueError, match="ridge='cv' .* needs at least 2 training images; got 1"):
        R.CNTKClassifier(depth=3, ridge="cv").fit(_tiny_images(1), [0])
    clf = R.CNTKClassifier(depth=3, ridge="cv").fit(_tiny_images(2), [0, 1])
    assert clf.ridge_selection_.n_folds == 2


def test_classifier_not_fitted():
    from sklearn.exceptions import NotFittedError

    x = _tiny_images(3)
    clf = R.CNTKClassifier(depth=3)
    for call in (clf.predict, clf.decision_function, lambda a: clf.score(a, [0, 1, 0])):
        with pytest.raises(NotFittedError, match="not fitted"):
            call(x)


@pytest.mark.parametrize(
    "n_classes, exc",
    [(2.5, TypeError), ("2", TypeError), (True, TypeError), (-1, ValueError), (0, ValueError)],
)
def test_n_classes_must_be_a_positive_integer(n_classes, exc):
    y = np.array([0, 1, 1, 0])
    K = _spd(4)
    calls = [
        lambda: R.one_hot_targets(y, n_classes),
        lambda: R.confusion_matrix(y, y, n_classes),
        lambda: R.per_class_accuracy(y, y, n_classes),
        lambda: R.kernel_regression(K, y, K, n_classes=n_classes),
        lambda: R.select_ridge(K, y, n_folds=2, n_classes=n_classes),
    ]
    for call in calls:
        with pytest.raises(exc, match="n_classes must be an integer >= 1"):
            call()
    np.testing.assert_array_equal(R.confusion_matrix(y, y, np.int64(3)), np.diag([2, 2, 0]))


def test_alpha_and_target_shapes():
    K = _spd(6)
    with pytest.raises(ValueError, match=r"alpha: expected dual coefficients .* got \(\)"):
        R.predict_scores(K, 1.0)
    with pytest.raises(ValueError, match=r"alpha: expected dual coefficients .* got \(6, 2, 2\)"):
        R.predict_scores(K, np.ones((6, 2, 2)))
    with pytest.raises(TypeError, match="alpha: expected real dual coefficients, got complex"):
        R.predict_scores(K, np.ones((6, 2)) * 1j)
    with pytest.raises(
        ValueError, match=r"Y: expected targets of shape \[n\] or \[n, n_classes\], got shape \(6, 2, 2\)"
    ):
        R.ridge_path_alphas(K, np.ones((6, 2, 2)), [0.1])
    with pytest.raises(ValueError, match=r"Y: expected targets .* got shape \(\)"):
        R.ridge_path_alphas(K, 1.0, [0.1])
    with pytest.raises(ValueError, match=r"Y: expected targets .* got shape \(6, 2, 2\)"):
        R.solve_kernel(K, np.ones((6, 2, 2)))
    with pytest.raises(ValueError, match="Y: targets contain NaN"):
        R.ridge_path_alphas(K, np.full(6, np.nan), [0.1])
    assert R.predict_scores(K[:2], np.ones(6)).shape == (2,)
    assert R.ridge_path_alphas(K, np.ones(6), 0.1).shape == (1, 6)
