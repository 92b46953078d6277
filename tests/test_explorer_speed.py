"""The explorer's speed work: row blocks that compute every pair once, the ``"partial"`` event that
lets the heatmap be drawn as row blocks arrive, and the values a user sees (partial, first picture
and background pass, float32 and float64) equal to :func:`cntk_core.kernel_matrix`'s."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import cntk_core
import cntk_widgets.explorer_model as em
from cntk_widgets import ArchitectureModel, KernelExplorerModel, NetworkSpec
from cntk_widgets.jobs import JobContext
from cntk_widgets.models import chunked_gram

#: the lab's accuracy standard: float64 arithmetic to 1e-7, float32 to 1e-4 (relative)
TOLERANCE = {"float64": 1e-7, "float32": 1e-4}


@pytest.fixture
def images():
    rng = np.random.default_rng(3)
    return rng.standard_normal((11, 6, 6, 3)), np.arange(11) % 4


def _normalized(k: np.ndarray) -> np.ndarray:
    d = np.sqrt(np.diag(k))
    return k / np.outer(d, d)


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


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_partial_pictures_and_every_depth_equal_kernel_matrix(images, dtype):
    x, y = images
    arch = ArchitectureModel(depth=5, readout="gap", fix_first=True, fix_last=True)
    m = KernelExplorerModel(x, y, architecture=arch, dtype=dtype, disk_cache=False, prefetch_depth=7, autostart=False)
    events, partials = [], []

    def listen(event, model):
        events.append(event)
        if event == "partial":
            partials.append(model.partial)

    m.on_change(listen)
    m.compute()
    first = m.wait(60)
    m.wait(60, background=True)
    assert m.error is None and first.source == "computed" and m.partial is None
    assert partials and events.index("partial") < events.index("result")
    assert all(p.spec == arch.spec for p in partials)  # the background pass draws nothing partial
    assert [p.rows for p in partials] == sorted(p.rows for p in partials) and partials[-1].rows < len(x)
    for p in partials:  # every entry drawn early is the final picture's entry
        known = np.isfinite(p.normalized)
        assert known[np.diag_indices(len(x))].all() and known[: p.rows].all()
        np.testing.assert_array_equal(p.normalized[known], first.normalized[known])
    xs = x[m.order]
    for depth in range(3, 8):
        spec = NetworkSpec(depth=depth, readout="gap", fix_first=True, fix_last=True)
        exact = cntk_core.kernel_matrix(xs, depth=depth, readout="gap", fix=True, dtype="float64")
        shown = m.cache[spec]
        np.testing.assert_allclose(shown.raw, exact, rtol=TOLERANCE[dtype], atol=0)
        np.testing.assert_allclose(shown.normalized, _normalized(exact), rtol=TOLERANCE[dtype], atol=0)
    m.close()


def test_a_stale_or_complete_job_draws_no_partial_picture(images):
    x, y = images
    arch = ArchitectureModel(depth=3)
    m = KernelExplorerModel(x, y, architecture=arch, disk_cache=False, synchronous=True, autostart=False)
    partials = []
    m.on_change(lambda e, model: e == "partial" and partials.append(model.partial))
    raw = np.eye(len(x)) + 1
    ctx = JobContext(m._runner, m._runner.generation)
    m._show_partial(arch.spec, ctx, 1, raw)
    assert len(partials) == 1 and partials[0].rows == 1
    np.testing.assert_allclose(partials[0].normalized, _normalized(raw))
    m._show_partial(arch.spec, ctx, len(x), raw)  # complete: the result event shows it
    m._runner.cancel()  # a newer request: this job is stale
    m._show_partial(arch.spec, ctx, 2, raw)
    assert len(partials) == 1
    m.close()


def _pairs_computed(calls) -> int:
    return sum(r * (r + 1) // 2 if c is None else r * c for r, c in calls)


@pytest.mark.parametrize("switch", [False, True])
def test_a_waiting_request_is_served_before_the_background_pass_ends(images, monkeypatch, switch):
    """A request that the running background pass covers gets its kernel at the end of the pass's
    current row block: the rows done hold every depth, the others are computed to the requested
    depth only. With ``switch`` the user moves on (7 -> 8) during that detour: 8 is served, 7 never shown."""
    x, y = images
    n = len(x)
    requested, release, detour_started, switched = (threading.Event() for _ in range(4))
    background, detour = [], []
    real = cntk_core.kernel_matrices

    def gated(rows, cols=None, *, depths, **kw):
        if max(depths) == 9:  # the background pass: hold its first call until the request, then its third
            background.append(1)
            assert len(background) != 1 or requested.wait(30)
            assert len(background) < 3 or release.wait(30)
        else:
            detour.append((max(depths), len(rows), None if cols is None else len(cols)))
            if max(depths) == 7:
                detour_started.set()
                assert not switch or switched.wait(30)
        return real(rows, cols, depths=depths, **kw)

    monkeypatch.setattr(em, "kernel_matrices", gated)
    fix = dict(readout="gap", fix_first=True, fix_last=True)
    arch = ArchitectureModel(depth=4, **fix)
    m = KernelExplorerModel(x, y, architecture=arch, disk_cache=False, prefetch_depth=9, autostart=False)
    shown = []
    m.on_change(lambda e, model: e == "result" and shown.append(model.result))
    m.compute()
    m.wait(30)
    detour.clear()
    assert m.background
    arch.set(depth=7)
    assert m.pending == arch.spec
    requested.set()
    if switch:
        assert detour_started.wait(30)
        arch.set(depth=8)
        switched.set()
    result = m.wait(30)
    want = NetworkSpec(depth=8 if switch else 7, **fix)
    assert result.spec == want and result.source == "background" and m.pending is None
    assert m.background and len(background) == 3  # served while the pass waits at its second block
    assert [r.spec.depth for r in shown] == [4, want.depth]
    assert {d for d, _, _ in detour} == ({7, 8} if switch else {7})
    served = [(r, c) for d, r, c in detour if d == want.depth]
    assert _pairs_computed(served) == (n - 1) * n // 2  # all pairs but the first row's: the pass did that
    release.set()
    m.wait(60, background=True)
    assert m.error is None and m.background_error is None
    xs = x[m.order]
    for depth in range(3, 10):
        exact = cntk_core.kernel_matrix(xs, depth=depth, fix=True)
        np.testing.assert_allclose(m.cache[NetworkSpec(depth=depth, **fix)].raw, exact, rtol=1e-10, atol=0)
    m.close()
