"""The lab's value types and Gram helpers (cntk_widgets.models): a NetworkSpec takes its counts as the
library does (integral floats from sliders and np.linspace are integers) and refuses flags that are not
booleans; the explorer's label checks; and chunked_gram / cross_gram, the lab's Grams in row blocks
that compute every pair once, equal kernel_matrix, and report progress and take a cancel at every engine
call (the engine's own hooks)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_images, raises_param

import cntk_core
import cntk_core.gram
from cntk_core import ParameterTypeError
from cntk_widgets.jobs import Superseded
from cntk_widgets.models import NetworkSpec, check_labels, chunked_gram, cross_gram


@pytest.fixture
def images():
    """11 images 6x6x3, 4 classes."""
    return make_images(11, (6, 6, 3), seed=3), np.arange(11) % 4


# -- NetworkSpec ------------------------------------------------------------------------------------------
def test_network_spec_takes_integral_float_depths():
    spec = NetworkSpec(depth=np.float64(5.0))
    assert spec.depth == 5 and type(spec.depth) is int


def test_network_spec_flags_must_be_booleans():
    with raises_param("fix_first", ParameterTypeError):
        NetworkSpec(fix_first="no")
    with raises_param("pool", ParameterTypeError):
        NetworkSpec(pool=2)
    assert NetworkSpec(fix_last=np.bool_(True)).fix_last is True


def test_network_spec_refuses_an_unknown_readout():
    with raises_param("readout"):
        NetworkSpec(readout="max")


# -- check_labels: what the explorer accepts as labels ---------------------------------------------------
def test_labels_are_checked_with_clear_messages():
    with raises_param("labels", match=r"labels must be >= 0, got -1 \(class indices 0 .. k-1: relabel"):  # the fix
        check_labels([-1, 0, 1, -1, 0, 1], 6)
    with raises_param("labels"):  # float labels: a ValueError in the lab, as every label error
        check_labels(np.array([0, 1, 2, 0, 1, 2], dtype=float), 6)
    with raises_param("labels"):
        check_labels(np.array([0, 1, 1, 0, 1, 0], dtype=bool), 6)
    with raises_param("labels", match="relabel"):  # says how to relabel
        check_labels([0, 10**9, 0, 0, 0, 0], 6)
    with raises_param("labels"):  # 2 class names for labels up to 2
        check_labels([0, 1, 2, 0, 1, 2], 6, ("a", "b"))
    np.testing.assert_array_equal(check_labels(np.array([0, 1, 2], np.uint8), 3, ("a", "b", "c")), [0, 1, 2])


# -- chunked_gram / cross_gram: row blocks ---------------------------------------------------------------
def _pairs_of(calls: list, n: int) -> list[tuple[int, int]]:
    """The (row, col) image pairs, row <= col, that the recorded block calls computed."""
    pairs = []
    for r0, rows, c0, cols in calls:
        for i in range(rows):
            start = i if cols is None else 0  # a symmetric call computes its upper triangle
            for j in range(start, rows if cols is None else cols):
                a, b = r0 + i, (r0 if cols is None else c0) + j
                pairs.append((min(a, b), max(a, b)))
    return pairs


@pytest.mark.parametrize("diagonal_first", [False, True])
@pytest.mark.parametrize("n", [1, 2, 5, 11, 40])
def test_row_blocks_compute_every_pair_once(n, diagonal_first):
    x = np.arange(n, dtype=float)[:, None, None, None] + np.zeros((n, 1, 1, 1))
    calls = []

    def block_fn(rows, cols):
        r0 = int(rows[0, 0, 0, 0])
        c0 = None if cols is None else int(cols[0, 0, 0, 0])
        calls.append((r0, len(rows), c0, None if cols is None else len(cols)))
        a = rows[:, 0, 0, 0][:, None]
        b = (rows if cols is None else cols)[:, 0, 0, 0][None, :]
        return 1000 * np.minimum(a, b) + np.maximum(a, b)  # a symmetric kernel that names its pair

    seen = []
    gram = chunked_gram(None, x, kind="ntk", backend=None, block_fn=block_fn, diagonal_first=diagonal_first,
                        on_block=lambda rows, g: seen.append((rows, g.copy())))  # fmt: skip
    pairs = _pairs_of(calls, n)
    assert sorted(pairs) == [(a, b) for a in range(n) for b in range(a, n)]  # each pair once, none twice
    a, b = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    np.testing.assert_array_equal(gram, 1000 * np.minimum(a, b) + np.maximum(a, b))
    rows = [r for r, _ in seen]
    assert rows == sorted(rows) and rows[-1] == n
    for r, g in seen:  # the first r rows and columns are complete, the rest is NaN or computed
        assert np.isfinite(g[:r]).all() and np.isfinite(g[:, :r]).all()
        known = np.isfinite(g)
        np.testing.assert_array_equal(g[known], gram[known])
        if diagonal_first:
            assert np.isfinite(np.diag(g)).all()


def test_row_blocks_equal_kernel_matrix(images):
    x, _ = images
    k = chunked_gram(cntk_core.cntk(4, "gap", fix=True), x, kind="ntk", backend="numba", n_chunks=3)
    expected = cntk_core.kernel_matrix(x, depth=4, readout="gap", fix=True, backend="numba")
    np.testing.assert_allclose(k, expected, rtol=1e-12, atol=0)


class _Ctx:
    """A job context that records progress and turns stale after ``stop_after`` cancel checks."""

    def __init__(self, stop_after: int | None = None):
        self.fractions: list[float] = []
        self.checks = 0
        self.stop_after = stop_after

    def check(self) -> None:
        self.checks += 1
        if self.stop_after is not None and self.checks > self.stop_after:
            raise Superseded("stale")

    def progress(self, fraction: float) -> None:
        self.fractions.append(fraction)


@pytest.mark.parametrize("cross", [False, True])
def test_row_blocks_use_the_engines_progress_and_cancel_hooks(images, monkeypatch, cross):
    """With a job context, every engine call (here one pair each) reports progress and asks to
    cancel: progress rises to 1 within and across blocks, and a stale job stops at the next call."""
    x, _ = images
    monkeypatch.setattr(cntk_core.gram, "_WORK_PER_CALL", 1.0)
    net = cntk_core.cntk(3, "gap")

    def gram(ctx):
        if cross:
            return cross_gram(net, x[:5], x, kind="ntk", backend="numba", ctx=ctx, n_chunks=2)
        return chunked_gram(net, x, kind="ntk", backend="numba", ctx=ctx, n_chunks=3)

    ctx = _Ctx()
    k = gram(ctx)
    n_pairs = 5 * len(x) if cross else len(x) * (len(x) + 1) // 2
    assert ctx.checks == n_pairs and len(ctx.fractions) == n_pairs  # one of each per engine call
    assert ctx.fractions == sorted(ctx.fractions) and ctx.fractions[-1] == pytest.approx(1.0)
    expected = cntk_core.kernel_matrix(x[:5] if cross else x, x if cross else None, depth=3, backend="numba")
    np.testing.assert_allclose(k, expected, rtol=1e-12, atol=0)
    stale = _Ctx(stop_after=4)
    with pytest.raises(Superseded):
        gram(stale)
    assert len(stale.fractions) == 4  # no engine call after the job turned stale
