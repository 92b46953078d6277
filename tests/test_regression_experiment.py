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
