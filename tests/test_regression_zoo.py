"""compare_kernels: every kernel on the same split, each result equal to the pieces done by hand."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import raises_param

from cntk_core import Architecture, kernel_matrix
from cntk_core.regression import ZooRow, compare_kernels, kernel_regression, paired_difference, select_ridge, zoo_table


@pytest.fixture(scope="module")
def split():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images[..., None] / 16.0 - 0.3).astype(np.float64)
    idx = np.random.default_rng(0).permutation(len(x))
    tr, te = idx[:40], idx[40:60]
    return x[tr], d.target[tr], x[te], d.target[te]


def test_each_row_is_the_kernel_regression_of_its_own_kernels(split):
    x_tr, y_tr, x_te, y_te = split
    kernels = [(Architecture(3, "vanilla"), "ntk"), (Architecture(3, "lap", lap_c=1, flip=True), "nngp")]
    seen = []
    rows = compare_kernels(x_tr, y_tr, x_te, y_te, kernels, backend="numpy", on_row=seen.append)
    assert [r.name for r in rows] == ["CNTK-V-3", "CNN-GP-LAP1-3+flip"] and seen == rows
    for row, (arch, kind) in zip(rows, kernels, strict=True):
        opts = {"depth": 3, "readout": arch.readout, "lap_c": arch.lap_c, "flip": arch.flip, "kind": kind}
        K = kernel_matrix(x_tr, **opts, backend="numpy")
        Kt = kernel_matrix(x_te, x_tr, **opts, backend="numpy")
        ridge = select_ridge(K, y_tr, n_classes=10)
        pred, _ = kernel_regression(K, y_tr, Kt, ridge=ridge.ridge, n_classes=10)
        acc = np.mean(pred == y_te)
        assert row.accuracy == pytest.approx(acc) and row.std_error == pytest.approx(np.sqrt(acc * (1 - acc) / 20))
        assert row.relative_ridge == pytest.approx(ridge.relative_ridge) and row.seconds > 0
        assert (row.n_train, row.n_test) == (40, 20) and Architecture.from_dict(row.architecture) == arch
        assert row.predictions == tuple(int(p) for p in pred)
    table = zoo_table(rows)
    assert table.count("\n") == 3 and f"{100 * rows[0].accuracy:.1f} ±" in table


def test_bad_kernel_lists_are_refused(split):
    x_tr, y_tr, x_te, y_te = split
    with raises_param("kernels"):
        compare_kernels(x_tr, y_tr, x_te, y_te, [])
    with raises_param("kernels"):
        compare_kernels(x_tr, y_tr, x_te, y_te, [("gap", "ntk")])
    with raises_param("y_test"):
        compare_kernels(x_tr, y_tr, x_te, y_te[:-1], [(Architecture(3), "ntk")])


def _row(predictions) -> ZooRow:
    return ZooRow("k", {}, "ntk", 0.0, 0.0, 0.0, 0.0, 1, len(predictions), tuple(predictions))


def test_paired_difference_by_hand():
    """Correct answers a = (1, 1, 0, 0), b = (1, 0, 0, 1) on four test images: d = (0, 1, 0, -1), mean 0,
    sample variance 2/3, standard error sqrt(2/3 / 4) = 0.408; swapped rows negate the mean."""
    y = np.array([3, 1, 4, 1])
    a, b = _row([3, 1, 0, 0]), _row([3, 2, 0, 1])
    assert paired_difference(a, b, y) == pytest.approx((0.0, np.sqrt(2 / 3 / 4)))
    c = _row([3, 1, 4, 0])  # right on 3 of 4, b on 2 of 4, agreeing on images 0 and 2
    diff, se = paired_difference(c, b, y)
    assert diff == pytest.approx(0.25) and se == pytest.approx(np.std([0, 1, 1, -1], ddof=1) / 2)
    assert paired_difference(c, c, y) == (0.0, 0.0)
    with raises_param("y_test"):
        paired_difference(a, _row([3, 1]), y)
