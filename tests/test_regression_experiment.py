"""run_experiment end to end: subsets, the paper's preprocessing, kernels, solve and metrics.

Every expected value is computed independently (numpy.linalg.solve, explicit loops, sklearn.metrics).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import one_hot, raises_param

import cntk_core
from cntk_core import regression as R
from cntk_core.validation import ParameterError, ParameterTypeError


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
    pred = (Kt @ np.linalg.solve(K, one_hot(ds.y_train[:80], 10))).argmax(1)
    assert res.accuracy == pytest.approx(np.mean(pred == ds.y_test[:40]))
    assert res.confusion.sum() == 40 and res.n_train == 80
    d = res.to_dict()
    assert d["accuracy"] == res.accuracy and "K_train" not in d
    assert "accuracy" in res.report()
    with raises_param("ridge"):
        R.run_experiment("digits", n_train=10, n_test=5, ridge="auto")


# -- input checks: every bad input names its argument ------------------------------------------


@pytest.mark.parametrize(
    "kwargs, exc, param, match",
    [  # match: the counts that a refusal tells the user (how many images there are), else None
        (dict(n_train=50), ParameterError, "n_train", r"n_train=50 is more than the 10 training images"),
        (dict(n_test=50), ParameterError, "n_test", r"n_test=50 is more than the 4 test images"),
        (dict(n_train=50, subset="random"), ParameterError, "n_train", r"n_train=50 is more than the 10"),
        (dict(n_train=6, per_class=True), ParameterError, "n_train", r"n_train=6 per class .* class 0 has only 5"),
        (dict(n_train=True), ParameterTypeError, "n_train", None),
        (dict(n_train=2.5), ParameterTypeError, "n_train", None),
        (dict(n_train="5"), ParameterTypeError, "n_train", None),
        (dict(n_test=0), ParameterError, "n_test", None),
        (dict(ridge="cv", n_folds=1), ParameterError, "n_folds", None),
        (dict(ridge="cv", n_folds=2.5), ParameterTypeError, "n_folds", None),
        (  # 3 of 2 classes: only the first 3 (the balanced default would refuse the 3 first)
            dict(ridge="cv", n_train=3, subset="first", n_folds=50),
            ParameterError,
            "n_folds",
            r"n_folds=50 is larger than the 3 training images",
        ),
        (dict(per_class="no"), ParameterTypeError, "per_class", None),
        (dict(ridge=True), ParameterTypeError, "ridge", None),
        (dict(subset="last"), ParameterError, "subset", None),
    ],
)
def test_run_experiment_refuses_bad_counts(kwargs, exc, param, match):
    with raises_param(param, exc, match=match):
        R.run_experiment(_tiny_dataset(), depth=3, progress=False, **kwargs)


@pytest.mark.parametrize(
    "kwargs, param",
    [
        (dict(n_train=50), "n_train"),
        (dict(n_test=50), "n_test"),
        (dict(n_train=5), "n_train"),  # balanced: not a multiple of the 2 classes
        (dict(n_train=6, per_class=True), "n_train"),
        (dict(n_test=0), "n_test"),
        (dict(subset="last"), "subset"),
        (dict(ridge="auto"), "ridge"),
        (dict(ridge=-1.0), "ridge"),
        (dict(ridge="cv", n_folds=1), "n_folds"),
        (dict(ridge="cv", n_train=3, subset="first", n_folds=50), "n_folds"),
        (dict(stats="some"), "stats"),
    ],
)
def test_run_experiment_errors_name_the_parameter(kwargs, param):
    with raises_param(param):
        R.run_experiment(_tiny_dataset(), depth=3, progress=False, **kwargs)


def test_run_experiment_checks_dataset_and_labels_before_the_kernels(monkeypatch):
    from types import SimpleNamespace

    import cntk_core.gram

    with raises_param("dataset", ParameterTypeError, match="a name or a cntk_core.data.Dataset"):  # what it may be
        R.run_experiment(42)

    def no_kernels(*args, **kwargs):
        raise AssertionError("the kernels were computed before the labels were checked")

    monkeypatch.setattr(cntk_core.gram, "kernel_matrix", no_kernels)
    ds = _tiny_dataset()
    for y_train, y_test, name in [(ds.y_train - 1, ds.y_test, "y_train"), (ds.y_train, ds.y_test + 0.5, "y_test")]:
        odd = SimpleNamespace(x_train=ds.x_train, y_train=y_train, x_test=ds.x_test, y_test=y_test, pixel_scale=16.0)
        with raises_param(name):
            R.run_experiment(odd, depth=3, progress=False)


def test_run_experiment_balanced_subset_too_large():
    ds = _tiny_dataset(y_train=[0] * 8 + [1] * 2)
    with raises_param("n_train", match=r"\(3 per class\) .* class 1 has only 2"):  # why it is too large
        R.run_experiment(ds, n_train=6, subset="balanced", depth=3, progress=False)
    with raises_param("n_train", match="needs n_train divisible by the 2 classes"):  # what n_train must be
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
    with raises_param("images"):  # stats="used" needs the images to take them from
        R.standardize(ds, stats="used")
    empty = Dataset(
        np.zeros((0, 5, 5, 1)), np.zeros(0, np.int64), np.zeros((2, 5, 5, 1)), np.zeros(2, np.int64), ("a",), "e", 1.0
    )
    with raises_param("dataset", match="no training images"):  # why the data set is refused
        R.standardize(empty, empty.x_test)
    with raises_param("dataset", match="no training images"):
        R.run_experiment(empty, depth=3, progress=False)
    assert R.standardize(ds) == []


def test_zero_training_kernel_low_level():
    Z = np.zeros((4, 4))
    y = np.arange(4) % 2
    with pytest.raises(R.SingularKernelError, match=r"identically zero"):
        R.kernel_regression(Z, y, np.zeros((2, 4)))
    with pytest.raises(R.SingularKernelError, match=r"identically zero"):
        R.select_ridge(Z, y, n_folds=2)
    # an absolute ridge makes the zero kernel solvable: unchanged
    np.testing.assert_allclose(R.solve_kernel(Z, one_hot(y, 2), ridge=2.0), one_hot(y, 2) / 2.0)
    with pytest.raises(R.SingularKernelError, match=r"identically zero"):
        R.run_experiment(_tiny_dataset(), depth=2, fix=True, ridge=1e-3, progress=False)


def test_run_experiment_ignores_n_folds_without_cv():
    from cntk_core.data import load_dataset

    ds = load_dataset("digits")
    res = R.run_experiment(ds, n_train=20, n_test=10, depth=2, ridge=1e-3, n_folds=0, progress=False)
    assert res.n_train == 20


# -- the new kernels and the preprocessing before them -------------------------------------------


def _small_dataset(seed=0, n_train=8, n_test=4, shape=(6, 6, 2), test_seed=None):
    """Random uint8 images (pixel scale 16) of two classes; ``test_seed`` draws other test images."""
    from cntk_core.data import Dataset

    rng = np.random.default_rng(seed)
    x_train = rng.integers(0, 16, (n_train, *shape)).astype(np.uint8)
    test_rng = rng if test_seed is None else np.random.default_rng(test_seed)
    x_test = test_rng.integers(0, 16, (n_test, *shape)).astype(np.uint8)
    y = np.arange(max(n_train, n_test), dtype=np.int64) % 2
    return Dataset(x_train, y[:n_train], x_test, y[:n_test], ("a", "b"), "small", 16.0)


def _standardised(ds):
    """Independent standardisation: /16, per-channel mean and std over all training pixels."""
    raw = ds.x_train.astype(np.float64) / 16.0
    mean, std = raw.mean(axis=(0, 1, 2)), raw.std(axis=(0, 1, 2))
    return (ds.x_train / 16.0 - mean) / std, (ds.x_test / 16.0 - mean) / std


def _predictions(K, y, Kt, relative_ridge):
    lam = relative_ridge * np.mean(np.diag(K))
    return (Kt @ np.linalg.solve(K + lam * np.eye(len(K)), one_hot(y, 2))).argmax(1)


@pytest.mark.parametrize(
    "kernel",
    [
        dict(depth=3, readout="lap", lap_c=1, padding="circular", pools=(1,), flip=True),
        dict(depth=4, readout="gap", pools=(2, 3), kind="nngp"),
        dict(depth=3, readout="vanilla", padding="circular", fix=True),
    ],
)
def test_run_experiment_kernel_options_match_the_oracle(kernel):
    from cntk_core.testing import reference_matrix

    ds = _small_dataset()
    kw = dict(kernel)
    kind, fix = kw.pop("kind", "ntk"), kw.pop("fix", False)
    res = R.run_experiment(ds, **kernel, subset="first", ridge=1e-3, keep_kernels=True, progress=False)
    x_tr, x_te = _standardised(ds)
    K = reference_matrix(x_tr, x_tr, fix_first=fix, fix_last=fix, kind=kind, **kw)
    Kt = reference_matrix(x_te, x_tr, fix_first=fix, fix_last=fix, kind=kind, **kw)
    np.testing.assert_allclose(res.K_train, K, rtol=1e-7)
    np.testing.assert_allclose(res.K_test, Kt, rtol=1e-7)
    assert res.accuracy == pytest.approx(np.mean(_predictions(K, ds.y_train, Kt, 1e-3) == ds.y_test))
    arch = cntk_core.Architecture.from_options(fix=fix, **kw)
    assert res.kernel == arch.title(kind) and res.architecture == arch.to_dict()
    d = res.to_dict()
    assert d["kernel"] == res.kernel and d["architecture"] == arch.to_dict() and res.kernel in res.report()


def _zca_reference(x, eps):
    """ZCA fitted on ``x`` through the SVD of the centred data (not an eigendecomposition): ``(mu, W)``."""
    n = len(x)
    X = x.reshape(n, -1)
    mu = X.mean(axis=0)
    _, sig, vt = np.linalg.svd(X - mu, full_matrices=True)
    s = np.zeros(X.shape[1])
    s[: len(sig)] = sig**2 / n
    return mu, vt.T @ np.diag((s + eps * s.sum() / len(s)) ** -0.5) @ vt


def test_run_experiment_preprocessing_in_order_fitted_on_training_images():
    """standardise -> ZCA -> random patches -> flip augmentation (mirrors through the same fitted steps)."""
    from cntk_core.data import RandomPatches
    from cntk_core.testing import reference_matrix

    ds = _small_dataset(n_train=10, n_test=3)
    opts = dict(zca=0.3, random_patches=5, patch_size=3, patch_pool=2, patch_bias=0.2, patch_zca=0.05, seed=4)
    res = R.run_experiment(
        ds, **opts, flip_augment=True, depth=2, readout="vanilla", subset="first", ridge=1e-2, keep_kernels=True,
        progress=False,
    )  # fmt: skip
    x_tr, x_te = _standardised(ds)
    mu, W = _zca_reference(x_tr, 0.3)

    def whiten(x):
        return ((x.reshape(len(x), -1) - mu) @ W).reshape(x.shape)

    rp = RandomPatches(5, 3, 0.2, 4, pool=2, zca_eps=0.05).fit(whiten(x_tr))  # its own tests: test_patches.py
    train = np.concatenate([rp.transform(whiten(x_tr)), rp.transform(whiten(x_tr[:, :, ::-1]))])
    test = rp.transform(whiten(x_te))
    assert train.shape == (20, 3, 3, 10)
    K = reference_matrix(train, train, 2, "vanilla")
    Kt = reference_matrix(test, train, 2, "vanilla")
    np.testing.assert_allclose(res.K_train, K, rtol=1e-7)
    np.testing.assert_allclose(res.K_test, Kt, rtol=1e-7)
    y = np.concatenate([ds.y_train, ds.y_train])
    assert res.accuracy == pytest.approx(np.mean(_predictions(K, y, Kt, 1e-2) == ds.y_test))
    assert (res.n_train, res.image_shape) == (20, (3, 3, 10))
    assert res.preprocessing == {
        "stats": "all",
        "zca": 0.3,
        "random_patches": rp.describe(),
        "flip_augment": True,
        "n_train_images": 10,
        "input_shape": [6, 6, 2],
    }
    assert "flip-augmented (10 -> 20 training images)" in res.report() and "ZCA eps 0.3" in res.report()


def test_preprocessing_never_looks_at_test_images(monkeypatch):
    """Other test images change K_test only: ZCA, the patches and the standardisation are fitted on training
    images. (With ``stats="all"`` the unused training images count too, but never a test image.)"""
    opts = dict(zca=0.1, random_patches=4, patch_size=3, flip_augment=True, depth=2, readout="vanilla")
    opts |= dict(n_train=6, subset="first", ridge=1e-2, keep_kernels=True, progress=False)
    a = R.run_experiment(_small_dataset(test_seed=1), **opts)
    b = R.run_experiment(_small_dataset(test_seed=2), **opts)
    np.testing.assert_array_equal(a.K_train, b.K_train)
    assert not np.allclose(a.K_test, b.K_test)
    c = R.run_experiment(_small_dataset(test_seed=1), **(opts | dict(n_train=4)))  # other training images in use
    assert not np.allclose(c.K_test[:, :4], a.K_test[:, :4])  # the same pairs: the fit follows the training set
    stats_used = R.run_experiment(_small_dataset(seed=0, test_seed=3), **opts, stats="used")
    other = _small_dataset(seed=0, test_seed=3)
    other.x_train[6:] = 15 - other.x_train[6:]  # training images not in use: nothing changes with stats="used"
    np.testing.assert_array_equal(R.run_experiment(other, **opts, stats="used").K_train, stats_used.K_train)


@pytest.mark.parametrize(
    "kwargs, param, error",
    [
        (dict(zca=-1.0), "zca", None),
        (dict(zca="0.1"), "zca", ParameterTypeError),
        (dict(zca=0.0), "zca", None),  # 8 images of 72 values: plain ZCA is singular
        (dict(flip_augment="yes"), "flip_augment", ParameterTypeError),
        (dict(random_patches=1), "random_patches", None),
        (dict(random_patches=2.5), "random_patches", ParameterTypeError),
        (dict(random_patches=4, patch_size=0), "patch_size", None),
        (dict(random_patches=4, patch_size=7), "patch_size", None),  # larger than the 6x6 images
        (dict(random_patches=4, patch_bias=-1.0), "patch_bias", None),
        (dict(random_patches=4, patch_pool=4), "patch_pool", None),  # does not divide 6
        (dict(random_patches=4, patch_zca=0.0), "patch_zca", None),
        (dict(patch_size="3"), "patch_size", ParameterTypeError),  # checked without random_patches too
        (dict(readout="lap"), "lap_c", None),
        (dict(lap_c=1), "lap_c", None),
        (dict(padding="reflect"), "padding", None),
        (dict(pools=(2, 1)), "pools", None),
        (dict(pools=(3,)), "pools", None),  # depth 3 has 2 convolutions
        (dict(depth=4, pools=(1, 2, 3)), "pools", None),  # 6 -> 3 -> 1, then a 1x1 map
        (dict(depth=3, random_patches=4, patch_pool=3, pools=(1, 2)), "pools", None),  # 2x2 after the patches
        (dict(flip="yes"), "flip", ParameterTypeError),
        (dict(kind="cntk"), "kind", None),
    ],
)
def test_run_experiment_refuses_bad_options_before_the_kernels(kwargs, param, error, monkeypatch):
    import cntk_core.gram

    def no_kernels(*args, **kw):
        raise AssertionError("a kernel was computed before the options were checked")

    monkeypatch.setattr(cntk_core.gram, "kernel_matrix", no_kernels)
    with raises_param(param, error):
        R.run_experiment(_small_dataset(), **{"depth": 3, **kwargs}, progress=False)
