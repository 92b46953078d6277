"""Small-data learning curves: shared class-balanced subsets, slicing one Gram, each entry computed once."""

from __future__ import annotations

import importlib
from collections import Counter

import numpy as np
import pytest
from conftest import make_images, raises_param, spd_matrix

import cntk_core
from cntk_core import Architecture
from cntk_core.engines import PerLayerEngine
from cntk_core.regression import (
    LearningCurve,
    kernel_regression,
    learning_curve,
    learning_curve_subsets,
    learning_curves,
)
from cntk_core.validation import ParameterTypeError

Y_POOL = np.repeat(np.arange(3), 8)[np.random.default_rng(5).permutation(24)]  # 3 classes, 8 each


def test_subsets_are_class_balanced_sorted_and_within_the_pool():
    subsets = learning_curve_subsets(Y_POOL, [3, 6, 12], n_draws=4, seed=1)
    assert [len(row) for row in subsets] == [4, 4, 4]
    for size, row in zip([3, 6, 12], subsets, strict=True):
        for idx in row:
            assert len(idx) == size and len(np.unique(idx)) == size
            assert np.all(np.diff(idx) > 0) and idx.min() >= 0 and idx.max() < len(Y_POOL)
            assert np.bincount(Y_POOL[idx], minlength=3).tolist() == [size // 3] * 3
    assert len({tuple(idx) for idx in subsets[1]}) > 1  # the draws differ


def test_subsets_are_reproducible_and_independent_of_the_other_sizes():
    a = learning_curve_subsets(Y_POOL, [3, 6], n_draws=3, seed=7)
    b = learning_curve_subsets(Y_POOL, [3, 6], n_draws=3, seed=7)
    c = learning_curve_subsets(Y_POOL, [6], n_draws=3, seed=7)
    d = learning_curve_subsets(Y_POOL, [3, 6], n_draws=3, seed=8)
    assert all(np.array_equal(x, y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True))
    assert all(np.array_equal(x, y) for x, y in zip(a[1], c[0], strict=True))
    assert any(not np.array_equal(x, y) for x, y in zip(a[1], d[1], strict=True))


def test_refusals_name_the_parameter():
    with raises_param("sizes", match="multiple"):
        learning_curve_subsets(Y_POOL, [4], n_draws=2)
    with raises_param("sizes", match="only 8"):
        learning_curve_subsets(Y_POOL, [27], n_draws=2)
    with raises_param("sizes"):
        learning_curve_subsets(Y_POOL, [], n_draws=2)
    with raises_param("n_draws"):
        learning_curve_subsets(Y_POOL, [3], n_draws=0)
    with raises_param("seed"):
        learning_curve_subsets(Y_POOL, [3], n_draws=1, seed=-1)
    K = spd_matrix(24)
    with raises_param("subsets"):
        learning_curve(K, Y_POOL, K[:5], Y_POOL[:5], [[np.array([0, 30])]])
    with raises_param("K_test_pool"):
        learning_curve(K, Y_POOL, K[:5, :20], Y_POOL[:5], [[np.array([0, 1])]])
    with raises_param("architectures", ParameterTypeError):
        learning_curves(make_images(6, (4, 4, 1)), Y_POOL[:6], make_images(2, (4, 4, 1)), [0, 1], [("a", 3)], [3], 1)


@pytest.mark.parametrize("ridge", [0.0, 1e-2])
def test_learning_curve_equals_a_brute_force_loop(ridge):
    rng = np.random.default_rng(3)
    K_all = spd_matrix(24 + 10, seed=2)
    K, Kt = K_all[:24, :24], K_all[24:, :24]
    y_test = rng.integers(0, 3, 10)
    subsets = learning_curve_subsets(Y_POOL, [3, 6, 12], n_draws=5, seed=0)
    curve = learning_curve(K, Y_POOL, Kt, y_test, subsets, ridge=ridge)
    assert isinstance(curve, LearningCurve) and curve.accuracies.shape == (3, 5)
    assert curve.sizes.tolist() == [3, 6, 12] and curve.ridge == ridge
    for i, row in enumerate(subsets):
        for j, idx in enumerate(row):
            K_sub = K[np.ix_(idx, idx)]
            lam = ridge * np.mean(np.diag(K_sub))
            pred, _ = kernel_regression(K_sub, Y_POOL[idx], Kt[:, idx], ridge=lam, n_classes=3)
            assert curve.accuracies[i, j] == np.mean(pred == y_test)
    np.testing.assert_array_equal(curve.mean, curve.accuracies.mean(axis=1))
    np.testing.assert_array_equal(curve.std, curve.accuracies.std(axis=1))
    assert curve.to_dict()["sizes"] == [3, 6, 12]


def _count_engine_pairs(monkeypatch, images):
    """Record, per ``network_kernel`` call, the image pairs (by index into ``images``) the engine evaluates."""
    where = {img.tobytes(): i for i, img in enumerate(images)}
    calls: list[dict] = []
    real_kernel, real_pairs = cntk_core.gram.network_kernel, PerLayerEngine.pairs

    def kernel_spy(network, x1, x2=None, **kw):
        calls.append({"network": network, "kind": kw["kind"], "sym": x2 is None, "pairs": Counter()})
        return real_kernel(network, x1, x2, **kw)

    def pairs_spy(self, state1, state2, rows, cols):
        (xa, _), (xb, _) = state1, state2
        for r, c in zip(rows, cols, strict=True):
            calls[-1]["pairs"][where[xa[r].tobytes()], where[xb[c].tobytes()]] += 1
        return real_pairs(self, state1, state2, rows, cols)

    monkeypatch.setattr(cntk_core.gram, "network_kernel", kernel_spy)
    monkeypatch.setattr(PerLayerEngine, "pairs", pairs_spy)
    return calls


def test_each_gram_entry_is_computed_once_per_kernel_on_shared_subsets(monkeypatch):
    n_pool, n_test = 24, 4
    images = make_images(n_pool + n_test, (4, 4, 1), seed=11)
    x_pool, x_test = images[:n_pool], images[n_pool:]
    y_test = np.array([0, 1, 2, 0])
    kernels = {
        "gap-ntk": (Architecture(2, "gap"), "ntk"),
        "v-ntk": (Architecture(3, "vanilla"), "ntk"),
        "gap-nngp": (Architecture(2, "gap"), "nngp"),
    }
    sizes, n_draws = [3, 6], 4
    calls = _count_engine_pairs(monkeypatch, images)
    curves = learning_curves(x_pool, Y_POOL, x_test, y_test, kernels, sizes, n_draws, seed=2, backend="numpy")
    monkeypatch.undo()  # the reference Grams below are not counted
    subsets = learning_curve_subsets(Y_POOL, sizes, n_draws, seed=2)
    union = np.unique(np.concatenate([idx for row in subsets for idx in row]))
    assert len(union) < n_pool  # only the images some subset uses
    assert len(calls) == 2 * len(kernels)  # one symmetric and one cross Gram per kernel, never per size/draw
    for (name, (arch, kind)), sym, cross in zip(kernels.items(), calls[::2], calls[1::2], strict=True):
        assert sym["sym"] and not cross["sym"] and sym["network"] == arch == cross["network"]
        assert sym["kind"] == kind == cross["kind"]
        upper = {(int(a), int(b)) for a in union for b in union if a <= b}
        assert set(sym["pairs"]) == upper and set(sym["pairs"].values()) == {1}
        test_x_union = {(n_pool + t, int(b)) for t in range(n_test) for b in union}
        assert set(cross["pairs"]) == test_x_union and set(cross["pairs"].values()) == {1}
        # the same subsets for every kernel: the curve equals slicing a Gram of the whole pool
        K = cntk_core.network_kernel(arch, x_pool, kind=kind, backend="numpy")
        Kt = cntk_core.network_kernel(arch, x_test, x_pool, kind=kind, backend="numpy")
        ref = learning_curve(K, Y_POOL, Kt, y_test, subsets)
        np.testing.assert_allclose(curves[name].accuracies, ref.accuracies, atol=0)
        assert curves[name].accuracies.shape == (len(sizes), n_draws)


def test_progress_callable_counts_all_grams_and_list_form(monkeypatch):
    x_pool, x_test = make_images(6, (4, 4, 1), seed=1), make_images(2, (4, 4, 1), seed=2)
    seen = []
    out = learning_curves(
        x_pool, np.arange(6) % 2, x_test, [0, 1], [("a", Architecture(2), "ntk"), ("b", Architecture(2), "nngp")],
        [2], 2, backend="numpy", progress=lambda d, t: seen.append((d, t)),
    )  # fmt: skip
    assert set(out) == {"a", "b"}
    totals = {t for _, t in seen}
    assert len(totals) == 1 and seen[-1][0] == seen[-1][1]
    assert all(d2 >= d1 for (d1, _), (d2, _) in zip(seen, seen[1:], strict=False))


def test_every_kernel_is_scored_on_the_same_subsets(monkeypatch):
    lc = importlib.import_module("cntk_core.regression.small_data")
    seen, real = [], lc.learning_curve
    monkeypatch.setattr(lc, "learning_curve", lambda *a, **kw: seen.append(a[4]) or real(*a, **kw))
    x_pool, x_test = make_images(24, (4, 4, 1), seed=3), make_images(3, (4, 4, 1), seed=4)
    kernels = {"gap": (Architecture(2, "gap"), "ntk"), "v": (Architecture(2, "vanilla"), "nngp")}
    learning_curves(x_pool, Y_POOL, x_test, [0, 1, 2], kernels, [3, 6], 3, seed=5, backend="numpy")
    assert len(seen) == 2
    for row_a, row_b in zip(*seen, strict=True):
        assert all(np.array_equal(a, b) for a, b in zip(row_a, row_b, strict=True))
