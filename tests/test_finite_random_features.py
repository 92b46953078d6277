"""The paper's Table 2 comparison (cntk_core.finite.random_features): each column against kernel
regression with kernels computed independently, concentration of the empirical kernel, bad arguments.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_images, raises_param

from cntk_core import Architecture, KernelCancelled, ParameterTypeError, network_kernel
from cntk_core.finite import FiniteCNN, empirical_ntk_samples, relative_error
from cntk_core.finite.random_features import FALLBACK_RIDGE, Table2Result, empirical_gram, table2_comparison
from cntk_core.regression import kernel_regression

pytestmark = pytest.mark.usefixtures("one_blas_thread")


def _data(shape=(4, 4, 1), n_train=12, n_test=8, seed=0):
    """Two classes that a kernel can partly learn: the label is the sign of the top-left pixel."""
    x = make_images(n_train + n_test, shape, seed)
    y = (x[:, 0, 0, 0] > 0).astype(int)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _accuracy(k_train, y_train, k_test, y_test):
    pred, _ = kernel_regression(k_train, y_train, k_test)
    return float(np.mean(pred == y_test))


@pytest.mark.parametrize("readout,depth", [("vanilla", 2), ("vanilla", 3), ("gap", 3)])
def test_columns_equal_independent_kernel_regression(readout, depth):
    xtr, ytr, xte, yte = _data()
    seeds = (0, 3)
    res = table2_comparison(xtr, ytr, xte, yte, [depth], width=16, seeds=seeds, readouts=[readout])
    (row,) = res.rows
    fix = readout == "gap"  # the paper's recipes: CNTK-V unfixed, CNTK-GAP fixed at both ends
    assert (row["readout"], row["depth"], row["fix_first"], row["fix_last"]) == (readout, depth, fix, fix)
    arch = Architecture(depth, readout, fix, fix)
    k_tr, k_te = network_kernel(arch, xtr), network_kernel(arch, xte, xtr)
    assert row["exact_accuracy"] == _accuracy(k_tr, ytr, k_te, yte)
    net = FiniteCNN.from_architecture(arch, 16)
    for i, s in enumerate(seeds):
        e_tr = empirical_ntk_samples(net, xtr, seeds=[s])[0]
        e_te = empirical_ntk_samples(net, xte, xtr, seeds=[s])[0]
        assert row["rf_accuracies"][i] == _accuracy(e_tr, ytr, e_te, yte)
        assert row["rel_errors"][i] == pytest.approx(relative_error(e_tr, k_tr), rel=1e-9)
    assert row["rf_accuracy"] == pytest.approx(np.mean(row["rf_accuracies"]))
    assert row["rf_accuracy_std"] == pytest.approx(np.std(row["rf_accuracies"]))
    assert row["rel_error"] == pytest.approx(np.mean(row["rel_errors"]))
    assert row["ridge"] == 0.0 and row["seeds"] == seeds and row["width"] == 16
    text = res.table()
    assert readout in text and f"{100 * row['exact_accuracy']:.2f}" in text


def test_empirical_gram_equals_empirical_ntk_samples():
    x = make_images(7, (5, 4, 2), seed=2)
    for net in (FiniteCNN(3, 6, "gap", True, True), FiniteCNN(4, 5, "vanilla", False, True)):
        np.testing.assert_allclose(empirical_gram(net, x, 4), empirical_ntk_samples(net, x, seeds=[4])[0], rtol=1e-10)


def test_fix_bool_applies_to_both_readouts():
    xtr, ytr, xte, yte = _data()
    res = table2_comparison(xtr, ytr, xte, yte, [3], width=4, fix=False)
    assert [(r["readout"], r["fix_first"], r["fix_last"]) for r in res.rows] == [
        ("vanilla", False, False),
        ("gap", False, False),
    ]
    assert isinstance(res, Table2Result)


def test_empirical_kernel_concentrates_with_width():
    """Vanilla depth 2 on 3x3 images: the empirical NTK's error falls from width 16 to 512 (fixed seed;
    the error scales like 1/sqrt(width), so about 5.7x smaller)."""
    xtr, ytr, xte, yte = _data((3, 3, 1), 10, 4, seed=1)
    errs = {}
    for w in (16, 512):
        res = table2_comparison(xtr, ytr, xte, yte, [2], width=w, seeds=(7,), readouts=["vanilla"])
        errs[w] = res.rows[0]["rel_error"]
    assert errs[512] < 0.1
    assert errs[512] < 0.5 * errs[16]


def test_singular_train_kernel_uses_the_same_fallback_for_both():
    xtr, ytr, xte, yte = _data()
    xtr, ytr = np.concatenate([xtr, xtr[:2]]), np.concatenate([ytr, ytr[:2]])  # duplicates: singular
    (row,) = table2_comparison(xtr, ytr, xte, yte, [3], width=8, readouts=["vanilla"]).rows
    assert row["ridge"] == FALLBACK_RIDGE
    arch = Architecture(3, "vanilla", False, False)
    k_tr, k_te = network_kernel(arch, xtr), network_kernel(arch, xte, xtr)
    pred, _ = kernel_regression(k_tr, ytr, k_te, ridge=FALLBACK_RIDGE * np.mean(np.diag(k_tr)))
    assert row["exact_accuracy"] == np.mean(pred == yte)


def test_progress_and_cancel():
    xtr, ytr, xte, yte = _data()
    calls = []
    table2_comparison(xtr, ytr, xte, yte, [3], width=4, seeds=(0, 1), progress=lambda d, t: calls.append((d, t)))
    assert calls == [(k, 6) for k in range(1, 7)]
    with pytest.raises(KernelCancelled):
        table2_comparison(xtr, ytr, xte, yte, [3], width=4, cancel=lambda: True)


@pytest.mark.parametrize(
    "kwargs,param,error",
    [
        (dict(depths=[]), "depths", None),
        (dict(depths=3), "depths", ParameterTypeError),
        (dict(depths=[1]), "depths", None),
        (dict(readouts=["max"]), "readouts", None),
        (dict(readouts="gap"), "readouts", None),
        (dict(fix="yes"), "fix", None),
        (dict(depths=[2], readouts=["gap"]), "fix", None),  # CNTK-GAP-2 with fix: no trained layer
        (dict(width=0), "width", None),
        (dict(seeds=[]), "seeds", None),
        (dict(dtype="float16"), "dtype", None),
        (dict(rf_dtype="int8"), "dtype", None),
        (dict(progress=1), "progress", ParameterTypeError),
    ],
)
def test_bad_arguments_are_refused(kwargs, param, error):
    xtr, ytr, xte, yte = _data()
    kw = dict(depths=[3], width=4) | kwargs
    depths = kw.pop("depths")
    with raises_param(param, error):
        table2_comparison(xtr, ytr, xte, yte, depths, **kw)


def test_bad_data_are_refused():
    xtr, ytr, xte, yte = _data()
    with raises_param("x_test"):
        table2_comparison(xtr, ytr, make_images(3, (5, 4, 1)), yte[:3], [3], width=4)
    with raises_param("y_train"):
        table2_comparison(xtr, ytr[:-1], xte, yte, [3], width=4)
    with raises_param("y_test"):
        table2_comparison(xtr, ytr, xte, yte[:-1], [3], width=4)
