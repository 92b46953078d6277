"""The kernel explorer's model (cntk_widgets.explorer_model): the background pass to the slider's deepest
depth, requests that wait for it or are served at the end of its current row block, the on-disk cache
across sessions, row blocks drawn as they arrive (``"partial"``) with values equal to
:func:`cntk_core.kernel_matrix`'s (float32 and float64), progress and cancellation through the engine's
own hooks, the in-memory cache, interrupts, and the errors a user sees (naming the depth they chose)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from conftest import make_images, raises_param, rel_err
from explorer_fakes import BACKEND
from explorer_fakes import interrupting_kernel as _interrupting
from explorer_fakes import spec_kernel as _engine

import cntk_core
import cntk_core.gram
import cntk_widgets.explorer_model as em
from cntk_widgets import ArchitectureModel, KernelExplorerModel, NetworkSpec
from cntk_widgets.jobs import JobContext
from cntk_widgets.kernel_cache import KernelDiskCache

#: the lab's accuracy standard: float64 arithmetic to 1e-7, float32 to 1e-4 (relative)
TOLERANCE = {"float64": 1e-7, "float32": 1e-4}


@pytest.fixture
def images():
    """8 images 5x5x2, 3 classes."""
    return make_images(8, (5, 5, 2), seed=7), np.arange(8) % 3


@pytest.fixture
def rgb_images():
    """11 images 6x6x3, 4 classes."""
    return make_images(11, (6, 6, 3), seed=3), np.arange(11) % 4


@pytest.fixture
def grey_images():
    """6 images 5x5x1, 3 classes."""
    return make_images(6, (5, 5, 1), seed=0), np.array([0, 1, 2, 0, 1, 2])


def _normalized(k: np.ndarray) -> np.ndarray:
    d = np.sqrt(np.diag(k))
    return k / np.outer(d, d)


def _expected(x, spec: NetworkSpec) -> np.ndarray:
    k = cntk_core.kernel_matrix(
        x, depth=spec.depth, readout=spec.readout, fix_first=spec.fix_first, fix_last=spec.fix_last, kind=spec.kind
    )
    return _normalized(k)


def _model(images, tmp_path, **kw):
    x, y = images
    kw.setdefault("disk_cache", KernelDiskCache(tmp_path / "kernels"))
    return KernelExplorerModel(x, y, autostart=False, **kw)


# -- the background pass --------------------------------------------------------------------------------
def test_background_pass_fills_every_depth_up_to_the_slider_end(images, tmp_path):
    arch = ArchitectureModel(depth=3, readout="vanilla")
    m = _model(images, tmp_path, architecture=arch, prefetch_depth=7)
    events = []
    m.on_change(lambda e, _m: events.append(e))
    m.compute()
    first = m.wait()
    assert first.spec.depth == 3 and first.source == "computed"
    m.wait(background=True)
    assert "background-done" in events and not m.background
    order = np.argsort(images[1], kind="stable")
    for d in range(2, 8):
        spec = NetworkSpec(depth=d, readout="vanilla")
        assert spec in m.cache
        np.testing.assert_allclose(m.cache[spec].normalized, _expected(images[0][order], spec), rtol=1e-10)
    arch.set(depth=6)  # a slider move after the pass: a cache hit, no new job
    assert m.result.spec.depth == 6 and m.result.source == "memory" and not m.busy
    m.close()


def test_a_request_during_the_background_pass_waits_for_it(images, tmp_path, monkeypatch):
    release = threading.Event()
    calls = []

    def gated(*args, depths, **kw):
        calls.append(max(depths))
        if max(depths) == 9:  # the background pass: hold it until the request below is made
            assert release.wait(30)
        return cntk_core.kernel_matrices(*args, depths=depths, **kw)

    monkeypatch.setattr(em, "kernel_matrices", gated)
    arch = ArchitectureModel(depth=3)
    m = _model(images, tmp_path, architecture=arch, prefetch_depth=9)
    events = []
    m.on_change(lambda e, _m: events.append(e))
    m.compute()
    m.wait()
    assert m.background
    arch.set(depth=8)  # covered by the running pass: no new computation
    assert m.pending == NetworkSpec(depth=8) and events[-1] == "waiting" and m.result.spec.depth == 3
    release.set()
    shown = m.wait()
    assert shown.spec.depth == 8 and shown.source == "background" and m.pending is None
    # the first picture's chunks, then the background pass's, which served the request at the end of its
    # first row block: the other rows to depth 8 only (see the test below), then goes on to 9
    seen = list(calls)
    assert seen[0] == 3 and set(seen) == {3, 8, 9} and seen.index(9) < seen.index(8)
    order = np.argsort(images[1], kind="stable")
    np.testing.assert_allclose(shown.normalized, _expected(images[0][order], NetworkSpec(depth=8)), rtol=1e-10)
    m.close()


def test_a_request_outside_the_background_pass_replaces_it(images, tmp_path, monkeypatch):
    release = threading.Event()

    def gated(*args, depths, **kw):
        if max(depths) == 9 and kw["readout"] == "gap":
            release.wait(30)
        return cntk_core.kernel_matrices(*args, depths=depths, **kw)

    monkeypatch.setattr(em, "kernel_matrices", gated)
    arch = ArchitectureModel(depth=3)
    m = _model(images, tmp_path, architecture=arch, prefetch_depth=9)
    m.compute()
    m.wait()
    assert m.background
    arch.set(readout="vanilla", depth=4)  # another family: the background pass is dropped
    release.set()
    shown = m.wait()
    assert shown.spec == NetworkSpec(depth=4, readout="vanilla") and shown.source == "computed"
    m.wait(background=True)
    assert NetworkSpec(depth=9, readout="vanilla") in m.cache  # the new family's own background pass
    m.close()


def test_the_background_pass_needs_an_asynchronous_model(images, tmp_path):
    m = _model(images, tmp_path, synchronous=True, prefetch_depth=6)
    m.compute()
    assert not m.background and set(m.cache) == {NetworkSpec(depth=2), NetworkSpec(depth=3)}


def _pairs_computed(calls) -> int:
    return sum(r * (r + 1) // 2 if c is None else r * c for r, c in calls)


@pytest.mark.parametrize("switch", [False, True])
def test_a_waiting_request_is_served_before_the_background_pass_ends(rgb_images, monkeypatch, switch):
    """A request that the running background pass covers gets its kernel at the end of the pass's
    current row block: the rows done hold every depth, the others are computed to the requested
    depth only. With ``switch`` the user moves on (7 -> 8) during that detour: 8 is served, 7 never shown."""
    x, y = rgb_images
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


# -- the on-disk cache -----------------------------------------------------------------------------------
def test_a_second_session_reads_the_disk_cache(images, tmp_path, monkeypatch):
    first = _model(images, tmp_path, synchronous=True, architecture=ArchitectureModel(depth=4))
    first.compute()
    computed = first.result
    assert computed.source == "computed"

    def forbidden(*_a, **_k):
        raise AssertionError("the second session must not compute")

    monkeypatch.setattr(em, "kernel_matrices", forbidden)
    again = _model(images, tmp_path, synchronous=True, architecture=ArchitectureModel(depth=4))
    again.compute()
    assert again.error is None and again.result.source == "disk" and again.disk_hits == 1
    np.testing.assert_array_equal(again.result.raw, computed.raw)
    again.compute(NetworkSpec(depth=3))  # computed on the way to depth 4: on disk too
    assert again.result.source == "disk"
    other = _model((images[0] * 2, images[1]), tmp_path, synchronous=True, architecture=ArchitectureModel(depth=4))
    other.compute()  # other images: never the first session's kernel
    assert other.result is None and "must not compute" in other.error


def test_a_damaged_disk_entry_is_recomputed(images, tmp_path):
    cache = KernelDiskCache(tmp_path / "kernels")
    first = _model(images, tmp_path, synchronous=True, disk_cache=cache)
    first.compute()
    for path in (tmp_path / "kernels").glob("*.kgram"):
        data = bytearray(path.read_bytes())
        data[-5] ^= 0xFF
        path.write_bytes(bytes(data))
    again = _model(images, tmp_path, synchronous=True, disk_cache=KernelDiskCache(tmp_path / "kernels"))
    again.compute()
    assert again.result.source == "computed" and again.disk_cache.damaged == 1
    np.testing.assert_array_equal(again.result.raw, first.result.raw)


def test_no_disk_cache_with_a_test_kernel_function(images, tmp_path, monkeypatch):
    monkeypatch.setenv("CNTK_DATA_DIR", str(tmp_path / "data"))
    x, y = images
    m = KernelExplorerModel(x, y, synchronous=True, kernel_fn=lambda s, imgs, ctx: np.eye(len(imgs)) + 1)
    assert m.disk_cache is None and m.error is None and not (tmp_path / "data").exists()


# -- the values a user sees: partial pictures, every depth, errors ----------------------------------
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_partial_pictures_and_every_depth_equal_kernel_matrix(rgb_images, dtype):
    x, y = rgb_images
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


def test_a_stale_or_complete_job_draws_no_partial_picture(rgb_images):
    x, y = rgb_images
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


def test_one_pass_fills_the_cache_for_every_shallower_depth():
    """On the fused CPU engine depth d's pass reads out every depth < d: moving the slider down is free."""
    x, y = make_images(9, (5, 5, 2), seed=7), np.array([2, 0, 1, 2, 0, 1, 1, 0, 2])
    arch = ArchitectureModel(depth=5, readout="gap", fix_first=True, fix_last=True)
    model = KernelExplorerModel(x, y, architecture=arch, backend="numba", synchronous=True)
    assert model.cache_misses == 1 and model.result.spec.depth == 5
    for depth in (4, 3):
        arch.set(depth=depth)
        assert model.result.cached and model.result.spec.depth == depth
        expected = _normalized(
            cntk_core.kernel_matrix(x[np.argsort(y, kind="stable")], depth=depth, readout="gap", fix=True)
        )
        np.testing.assert_allclose(model.result.normalized, expected, rtol=1e-12)
    assert model.cache_misses == 1 and model.cache_hits == 2


def test_the_error_names_the_depth_the_user_chose(images, tmp_path):
    x, y = images
    m = _model((x * 1e-170, y), tmp_path, synchronous=True, architecture=ArchitectureModel(depth=3))
    m.compute()
    assert "CNTK-GAP-3:" in m.error and "GAP-2" not in m.error


def test_zero_images_and_zero_kernel_diagonals_are_named(grey_images):
    x, y = grey_images
    zero = x.copy()
    zero[4] = 0.0
    with pytest.raises(ValueError, match=r"all-zero image\(s\) \(#4\)"):  # names the image to drop
        KernelExplorerModel(zero, y, synchronous=True, kernel_fn=_engine)

    def underflow(spec, imgs, ctx):
        k = _engine(spec, imgs, ctx)
        k[0, :] = k[:, 0] = 0.0  # what an image of 1e-200 pixels gives
        return k

    model = KernelExplorerModel(x, y, synchronous=True, kernel_fn=underflow)
    assert "image(s) #0 (input order)" in model.error and "underflow" in model.error


def test_error_while_drawing_the_result_is_reported(grey_images):
    x, y = grey_images
    model = KernelExplorerModel(x, y, synchronous=True, autostart=False, kernel_fn=_engine)

    def draw(event, m):
        if event == "result":
            raise RuntimeError("plot failed")

    model.on_change(draw)
    model.compute()
    assert model.error.startswith("while showing the result: RuntimeError: plot failed")


# -- the in-memory cache, interrupts ------------------------------------------------------------------
def test_cache_size_is_validated(grey_images):
    x, y = grey_images
    for bad in (0, -1):
        with raises_param("cache_size"):
            KernelExplorerModel(x, y, synchronous=True, cache_size=bad, kernel_fn=_engine)
    with pytest.raises(ValueError, match="^cache_size "):  # a wrong type too is a ValueError in the lab's settings
        KernelExplorerModel(x, y, synchronous=True, cache_size=1.5, kernel_fn=_engine)
    arch = ArchitectureModel(depth=5)
    model = KernelExplorerModel(x, y, architecture=arch, backend="numba", synchronous=True, cache_size=1)
    assert model.error is None and model.result.spec.depth == 5 and list(model.cache) == [NetworkSpec(depth=5)]


def test_changing_dtype_or_backend_clears_the_cache_only_when_it_changes(grey_images):
    x, y = grey_images
    model = KernelExplorerModel(x, y, backend=BACKEND, synchronous=True)
    assert len(model.cache) == 1
    model.dtype = "float32"
    assert len(model.cache) == 0 and model.dtype == "float32"
    model.compute()
    model.backend = "numpy"  # unchanged: the cache stays
    assert len(model.cache) == 1
    with raises_param("backend"):  # refused when set, not at the next compute
        model.backend = "bogus"
    with raises_param("dtype"):
        model.dtype = "float16"
    assert len(model.cache) == 1 and model.dtype == "float32"


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_synchronous_interrupt_propagates_and_resets_state(grey_images, exc_type):
    x, y = grey_images
    static = KernelExplorerModel(x, y, synchronous=True, autostart=False, kernel_fn=_interrupting(exc_type))
    static.compute(NetworkSpec(depth=3))
    with pytest.raises(exc_type):
        static.compute(NetworkSpec(depth=11))
    assert static.cancelled.startswith("interrupted") and static.progress == 0.0
    assert static.result.spec.depth == 3 and not static.busy
    static.wait()  # does not raise the interrupt a second time
    static.compute(NetworkSpec(depth=4))
    assert static.result.spec.depth == 4 and static.cancelled is None


# -- progress and cancellation through the engine's own hooks ------------------------------------
class _SlowEngine:
    """An engine whose every call takes ``delay`` seconds (the real engine's values, slowly)."""

    def __init__(self, engine, delay: float):
        self._engine, self._delay = engine, delay

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def pairs(self, *args):
        time.sleep(self._delay)
        return self._engine.pairs(*args)


@pytest.fixture
def one_pair_per_call(monkeypatch):
    """The core's Gram driver makes one engine call per pair (many calls per row block)."""
    monkeypatch.setattr(cntk_core.gram, "_WORK_PER_CALL", 1.0)


@pytest.fixture
def slow_engine(monkeypatch, one_pair_per_call):
    """Real engine calls of one pair each, 0.2 s apiece, through the core's own Gram driver."""
    real = cntk_core.gram.make_engine
    monkeypatch.setattr(cntk_core.gram, "make_engine", lambda *a, **k: _SlowEngine(real(*a, **k), 0.2))


def _counting_calls(monkeypatch) -> list[list[tuple[int, int]]]:
    """Record, per ``kernel_matrices`` call (one row block), the ``(done, total)`` progress reports."""
    calls: list[list[tuple[int, int]]] = []
    real = cntk_core.kernel_matrices

    def counting(rows, cols=None, *, progress, cancel, **kw):
        reports: list[tuple[int, int]] = []
        calls.append(reports)

        def report(done, total):
            reports.append((done, total))
            progress(done, total)

        return real(rows, cols, progress=report, cancel=cancel, **kw)

    monkeypatch.setattr(em, "kernel_matrices", counting)
    return calls


def test_progress_moves_within_a_row_block(images, tmp_path, monkeypatch, one_pair_per_call):
    calls = _counting_calls(monkeypatch)
    m = _model(images, tmp_path, synchronous=True, disk_cache=False, architecture=ArchitectureModel(depth=3))
    seen = []
    m.on_change(lambda e, model: e == "progress" and seen.append(model.progress))
    m.compute()
    assert m.error is None and m.result.spec.depth == 3
    n = len(images[0])
    assert sum(len(c) for c in calls) == n * (n + 1) // 2  # one report per engine call (one pair each)
    assert any(len(c) > 1 for c in calls)  # a row block of several engine calls reports after each
    assert seen == sorted(seen) and len(set(seen)) == n * (n + 1) // 2 and seen[-1] == pytest.approx(1.0)


def test_a_cancel_stops_a_long_row_block_within_a_second(images, tmp_path, monkeypatch, slow_engine):
    """Cancelling while one row block's engine work runs (here 0.2 s per engine call, over a
    second per block) stops at the engine's next call, not at the block's end."""
    calls = _counting_calls(monkeypatch)
    m = _model(images, tmp_path, disk_cache=False, architecture=ArchitectureModel(depth=3, readout="vanilla"))
    m.compute()
    deadline = time.monotonic() + 30
    # wait until a block of several engine calls is half way
    while not any(0 < len(c) and c[-1][0] < c[-1][1] and c[-1][1] >= 6 for c in calls):
        assert time.monotonic() < deadline and m.busy, "no row block of several engine calls started"
        time.sleep(0.01)
    t0 = time.monotonic()
    assert m.cancel()
    m.wait(5)
    while m.busy:
        time.sleep(0.01)
    stopped = time.monotonic() - t0
    assert stopped < 1.0, f"the job took {stopped:.2f} s to stop"
    block = next(c for c in calls if c and c[-1][1] >= 6)
    assert block[-1][0] < block[-1][1]  # that block never finished
    assert m.result is None and m.cancelled == "cancelled" and NetworkSpec(depth=3, readout="vanilla") not in m.cache
    m.close()


# -- the later networks: LAP, circular padding, flip, pools ----------------------------------------------
_LATER = [  # (spec, image shape, backend, dtype)
    (NetworkSpec(depth=4, readout="lap", lap_c=1), (5, 5, 2), "numba", "float64"),
    (NetworkSpec(depth=3, readout="lap", lap_c=2, padding="circular", kind="nngp"), (4, 5, 1), "numpy", "float64"),
    (NetworkSpec(depth=3, readout="gap", flip=True, fix_first=True, fix_last=True), (5, 4, 3), "numba", "float32"),
    (NetworkSpec(depth=5, preset="myrtle-5"), (4, 4, 2), "numpy", "float64"),
    (NetworkSpec(depth=7, preset="myrtle-7", kind="nngp", flip=True), (4, 8, 1), "numpy", "float32"),
    (NetworkSpec(depth=3, readout="vanilla", pool=True, padding="circular"), (4, 6, 2), "numpy", "float64"),
]


@pytest.mark.parametrize("spec, shape, backend, dtype", _LATER, ids=[f"{s.title} {b}" for s, _, b, *_ in _LATER])
def test_the_later_networks_in_the_explorer_equal_the_oracle(spec, shape, backend, dtype):
    """Every kernel the explorer shows or keeps for a later network (and the shallower depths its pass
    computed on the way) against the 4-D oracle: float64 to 1e-7, float32 to 1e-4 (relative)."""
    from cntk_core.testing import reference_arch_matrix

    x = make_images(6, shape, seed=sum(shape) + spec.depth)
    y = np.array([1, 0, 2, 1, 0, 2])
    m = KernelExplorerModel(x, y, architecture=ArchitectureModel(spec), backend=backend, dtype=dtype,
                            synchronous=True, disk_cache=False)  # fmt: skip
    assert m.error is None and m.result.spec == spec
    xs = x[np.argsort(y, kind="stable")]
    for cached, result in m.cache.items():
        assert cached.to_dict() == {**spec.to_dict(), "depth": cached.depth}  # only spec's own family
        ref = reference_arch_matrix(xs, xs, cached.architecture, cached.kind)
        assert rel_err(result.raw, ref) <= TOLERANCE[dtype], cached.title
        assert rel_err(result.normalized, _normalized(ref)) <= TOLERANCE[dtype], cached.title
    if spec.architecture.pools:
        assert list(m.cache) == [spec]  # a net with pools has one depth: nothing else is computed
    m.close()


def test_nets_with_pools_are_never_swept_and_keep_apart_from_the_paper_family(images, tmp_path, monkeypatch):
    """No background pass for a net with pools (its depth is fixed), none of its kernels in another
    family's pass, and the paper family's pass still fills every depth."""
    x, y = make_images(6, (4, 4, 1), seed=5), np.array([0, 1, 0, 1, 2, 2])
    calls = []
    real = em.network_kernel

    def recording(net, *args, **kw):
        calls.append(net)
        return real(net, *args, **kw)

    monkeypatch.setattr(em, "network_kernel", recording)
    arch = ArchitectureModel(depth=5, preset="myrtle-5")
    m = KernelExplorerModel(x, y, architecture=arch, backend="numba", disk_cache=False, prefetch_depth=6,
                            autostart=False)  # fmt: skip
    assert not m._one_pass(arch.spec) and not m._one_pass(NetworkSpec(pool=True)) and m._one_pass(NetworkSpec())
    m.compute()
    assert m.wait().spec == arch.spec and m.error is None
    m.wait(background=True)
    assert list(m.cache) == [arch.spec] and set(calls) == {arch.spec.architecture}
    arch.set(preset="paper")  # depth 5, no pools: its family is swept to the slider's end
    m.wait()
    m.wait(background=True)
    paper = {s for s in m.cache if s.preset == "paper"}
    assert paper == {NetworkSpec(depth=d) for d in range(2, 7)}
    assert all(not s.pool and not s.architecture.pools for s in paper) and m.error is None
    m.close()


def test_a_net_with_pools_says_which_image_sizes_it_needs(tmp_path):
    x, y = make_images(4, (6, 6, 1), seed=2), np.array([0, 1, 0, 1])
    arch = ArchitectureModel(depth=3)
    m = KernelExplorerModel(x, y, architecture=arch, backend=BACKEND, synchronous=True, disk_cache=False)
    arch.set(preset="myrtle-5")
    assert "CNTK-Myrtle-5 halves the image side twice" in m.error and "divisible by 4, got 6x6 px" in m.error
    assert m.result.spec == NetworkSpec(depth=3)  # the last good picture stays
    arch.set(preset="paper", pool=True)  # 6 is even: one pool is fine
    assert m.error is None and m.result.spec == NetworkSpec(depth=5, pool=True)


def test_disk_cache_keys_tell_every_new_setting_apart_and_keep_the_old_ones(images, tmp_path):
    """Keys of the paper's specs are what they were before the new fields (cached kernels stay valid);
    each new field changes the key; and a second session reads a later network's kernel from disk."""
    from cntk_widgets.kernel_cache import entry_key, images_fingerprint

    m = _model(images, tmp_path, synchronous=True)
    old = {"depth": 3, "readout": "gap", "fix_first": False, "fix_last": False, "kind": "ntk", "pool": False}
    fp = images_fingerprint(m.images)
    assert m._disk_key(NetworkSpec()) == entry_key(fp, {"gram": "raw", "spec": old, "dtype": "float64"})
    specs = [
        NetworkSpec(depth=5),
        NetworkSpec(depth=5, preset="myrtle-5"),
        NetworkSpec(depth=5, pool=True),
        NetworkSpec(depth=5, readout="vanilla"),
        NetworkSpec(depth=5, readout="lap", lap_c=0),
        NetworkSpec(depth=5, readout="lap", lap_c=1),
        NetworkSpec(depth=5, padding="circular"),
        NetworkSpec(depth=5, flip=True),
        NetworkSpec(depth=5, flip=True, kind="nngp"),
    ]
    assert len({m._disk_key(s) for s in specs}) == len(specs)
    lap = NetworkSpec(depth=3, readout="lap", lap_c=1, flip=True)
    m.compute(lap)
    again = _model(images, tmp_path, synchronous=True)
    again.compute(lap)
    assert again.result.source == "disk" and again.result.spec == lap
    np.testing.assert_array_equal(again.result.raw, m.result.raw)
