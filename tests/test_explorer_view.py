"""The kernel explorer's view (cntk_widgets.explorer_view), driven headless (no browser): the picker drives
the matrix and the spectrum (equal to a direct computation and to the 4-D reference), the selected-pair
panel, the colour scale, the labelled toggle groups, the figure's fixed layout, block means for many
images, row blocks drawn as they arrive, what the status line and the error box say (background pass,
stale computations, errors, interrupts, cancel and close), and the figure state a late page receives."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from conftest import make_images, raises_param
from explorer_fakes import BACKEND
from explorer_fakes import interrupting_kernel as _interrupting
from explorer_fakes import spec_kernel as _engine

pytest.importorskip("ipywidgets")
pytest.importorskip("plotly")
pytest.importorskip("anywidget")

import cntk_core  # noqa: E402
import cntk_widgets.explorer_model as em  # noqa: E402
from cntk_core import ParameterTypeError  # noqa: E402
from cntk_core.testing import reference_matrix  # noqa: E402
from cntk_widgets import KernelExplorer, NetworkSpec  # noqa: E402
from cntk_widgets.explorer_view import COLORBAR_X, HEATMAP_DOMAIN, PAIR_IMAGE_PX, SPECTRUM_DOMAIN  # noqa: E402


@pytest.fixture
def images():
    """6 grey 4x4 images, 3 classes."""
    return make_images(6, (4, 4, 1), seed=3), np.array([1, 0, 1, 0, 2, 2])


@pytest.fixture(scope="module")
def nine():
    """9 images 5x5x2, 3 classes."""
    return make_images(9, (5, 5, 2), seed=7), np.array([2, 0, 1, 2, 0, 1, 1, 0, 2])


@pytest.fixture(scope="module")
def six():
    """6 grey 5x5 images, 3 classes."""
    return make_images(6, (5, 5, 1), seed=0), np.array([0, 1, 2, 0, 1, 2])


def _normalise(k):
    d = np.sqrt(np.diag(k))
    return k / d[:, None] / d[None, :]


def _direct(x, y, **kw):
    """Class-sorted normalised Gram straight from cntk_core.kernel_matrix."""
    order = np.argsort(y, kind="stable")
    return _normalise(cntk_core.kernel_matrix(x[order], backend=BACKEND, **kw))


# -- the matrix and the spectrum ---------------------------------------------------------------------------
def test_picker_drives_explorer_matrix_and_spectrum(nine):
    x, y = nine
    ex = KernelExplorer(x, y, backend=BACKEND, synchronous=True)
    assert list(ex.model.labels) == sorted(y)
    np.testing.assert_allclose(ex.matrix, _direct(x, y, depth=3, readout="gap"), rtol=1e-10)

    ex.picker.depth.value = 5
    ex.picker.readout.value = "vanilla"
    ex.picker.fix_first.value = True
    expected = _direct(x, y, depth=5, readout="vanilla", fix_first=True)
    np.testing.assert_allclose(ex.matrix, expected, rtol=1e-10)
    eig = np.sort(np.linalg.eigvalsh(expected))[::-1]
    np.testing.assert_allclose(ex.eigenvalues, np.clip(eig, 1e-12, None), rtol=1e-8, atol=1e-12)
    assert "CNTK-V-5" in ex.heatmap.layout.title.text
    assert "[Conv 3x3 (fixed), ReLU]" in ex.picker.text.value

    ex.picker.kind.value = "nngp"
    np.testing.assert_allclose(ex.matrix, _direct(x, y, depth=5, readout="vanilla", kind="nngp"), rtol=1e-10)


def test_explorer_matches_independent_reference(nine):
    x, y = nine
    x, y = x[:4], y[:4]
    ex = KernelExplorer(x, y, backend=BACKEND, synchronous=True)
    ex.picker.model.set(depth=3, readout="gap", fix_first=True, fix_last=True)
    order = np.argsort(y, kind="stable")
    ref = reference_matrix(x[order], x[order], 3, "gap", True, True)
    np.testing.assert_allclose(ex.matrix, _normalise(ref), rtol=1e-9)
    np.testing.assert_allclose(ex.model.result.raw, ref, rtol=1e-9)


def test_pooling_option_runs_per_layer_network(nine):
    x, y = nine
    x8 = make_images(5, (4, 4, 1), seed=1)
    ex = KernelExplorer(x8, np.arange(5) % 2, backend=BACKEND, synchronous=True)
    ex.picker.pool.value = True
    net = ex.picker.network
    assert isinstance(net[2], cntk_core.AvgPool) and net.canonical() == cntk_core.Architecture(3, pools=(1,))
    order = np.argsort(np.arange(5) % 2, kind="stable")
    ref = reference_matrix(x8[order], x8[order], 3, pools=(1,))
    np.testing.assert_allclose(ex.matrix, _normalise(ref), rtol=1e-9)


def test_many_images_get_block_means_and_a_light_hover():
    n = 803  # 3 images per cell, the last cell of 2
    x = make_images(n, (2, 2, 1), seed=2)

    def gram(spec, imgs, ctx):
        f = imgs.reshape(len(imgs), -1)
        return f @ f.T + 4 * np.eye(len(imgs))

    ex = KernelExplorer(x, np.arange(n) % 3, synchronous=True, kernel_fn=gram)
    trace = ex.heatmap.data[0]
    assert ex.cell == 3 and trace.customdata is None and "mean K̂ over a cell of up to 3x3" in trace.hovertemplate
    normalized = ex.model.result.normalized
    expected = np.empty((268, 268))
    for a in range(268):
        for b in range(268):
            expected[a, b] = normalized[3 * a : 3 * a + 3, 3 * b : 3 * b + 3].mean()
    np.testing.assert_allclose(ex.matrix, expected, rtol=1e-12, atol=1e-15)
    # cell edges in image indices: 268 cells, the last one (2 images) narrower; the axis ends at the last image
    np.testing.assert_array_equal(trace.x, np.append(np.arange(0, n, 3), n) - 0.5)
    assert trace.x[-2:].tolist() == [800.5, 802.5] and tuple(ex.heatmap.layout.xaxis.range) == (-0.5, n - 0.5)
    small = KernelExplorer(x[:400], np.arange(400) % 3, synchronous=True, kernel_fn=gram)
    assert small.cell == 1 and small.matrix.shape == (400, 400)


def test_row_blocks_are_drawn_as_they_arrive():
    x = make_images(24, (4, 4, 1), seed=5)
    y = np.arange(24) % 4
    ex = KernelExplorer(x, y, synchronous=True, disk_cache=False, prefetch_depth=False)
    seen = []

    def watch(event, m):
        if event == "partial":
            z = ex.heatmap.data[0].z
            json.dumps(z, allow_nan=False)  # what the front end is sent must be valid JSON
            missing = sum(v is None for row in z for v in row)
            seen.append((missing, ex.heatmap.layout.title.text))

    ex.model.on_change(watch)  # after the view's own listener: sees what the view drew
    ex.picker.depth.value = 4
    assert len(seen) >= 2 and seen[0][0] > seen[-1][0] > 0 and "computing" in seen[0][1]
    assert ex.model.error is None  # a listener that raised (invalid JSON) would show here
    final = ex.matrix
    assert not np.isnan(final).any() and "computing" not in ex.heatmap.layout.title.text


# -- the pair panel, the colour scale, the layout -------------------------------------------------------
def test_the_pair_panel_shows_two_readable_images_and_their_kernel(images):
    x, y = images
    ex = KernelExplorer(x, y, class_names=("cat", "dog", "frog"), synchronous=True, disk_cache=False)
    # the first image of each of the first two classes
    assert "image #0, class <b>cat</b><br>image #2, class <b>dog</b>" in ex.pair_caption.value
    ex.select_pair(4, 1)
    k = ex.model.result.normalized
    assert f"K̂ = {k[4, 1]:.4f}" in ex.pair_caption.value and "frog" in ex.pair_caption.value
    png = ex.pair_images[0].value
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and width == height >= PAIR_IMAGE_PX  # 4 px images shown 28x larger


def test_the_colour_scale_is_fixed_unless_stretched(images):
    x, y = images
    ex = KernelExplorer(x, y, synchronous=True, disk_cache=False)
    assert ex.colour_range == (0.0, 1.0)
    ex.colour.value = "stretched"
    off = ex.model.result.normalized[~np.eye(6, dtype=bool)]
    assert ex.colour_range == pytest.approx((off.min(), off.max()))
    ex.picker.depth.value = 6  # a new kernel keeps the user's choice
    off = ex.model.result.normalized[~np.eye(6, dtype=bool)]
    assert ex.colour_range == pytest.approx((off.min(), off.max()))


def test_toggle_groups_are_labelled_and_the_log_axis_has_one_label_per_decade(images):
    x, y = images
    ex = KernelExplorer(x, y, synchronous=True, disk_cache=False)
    assert (ex.picker.readout.description, ex.picker.kind.description, ex.colour.description) == (
        "readout",
        "kernel",
        "colour scale",
    )
    layout = ex.heatmap.layout
    assert layout.yaxis2.type == "log" and layout.yaxis2.dtick == 1
    # the colour bar sits between the heatmap and the spectrum, with room for its labels
    assert HEATMAP_DOMAIN[1] < COLORBAR_X < SPECTRUM_DOMAIN[0] - 0.12
    assert tuple(layout.xaxis.domain) == HEATMAP_DOMAIN and tuple(layout.xaxis2.domain) == SPECTRUM_DOMAIN


def test_figure_state_is_synced_for_late_views(nine):
    """Voila renders widgets after the notebook ran: the synced state must hold the latest figure."""
    x, y = nine
    ex = KernelExplorer(x, y, backend=BACKEND, synchronous=True)
    ex.picker.depth.value = 4
    np.testing.assert_allclose(np.asarray(ex.heatmap._widget_data[0]["z"]), ex.matrix)
    assert "CNTK-GAP-4" in ex.heatmap._widget_layout["title"]["text"]


# -- the cache, stale computations, the status line and the error box ------------------------------------
def test_cache_hits_and_lru(nine):
    x, y = nine
    calls = []

    def kernel_fn(spec, imgs, ctx):
        calls.append(spec)
        return cntk_core.network_kernel(spec.network(), imgs, kind=spec.kind, backend=BACKEND)

    ex = KernelExplorer(x, y, synchronous=True, kernel_fn=kernel_fn)
    ex.model.cache_size = 2
    ex.picker.depth.value = 4
    first4 = ex.matrix.copy()
    ex.picker.depth.value = 3  # cached
    ex.picker.depth.value = 4  # cached
    assert [s.depth for s in calls] == [3, 4]
    assert ex.model.cache_hits == 2 and "cached" in ex.status.value
    np.testing.assert_array_equal(ex.matrix, first4)
    ex.picker.depth.value = 5  # evicts depth 3 (least recently used)
    ex.picker.depth.value = 3
    assert [s.depth for s in calls] == [3, 4, 5, 3]


def test_stale_computation_is_superseded(nine):
    x, y = nine
    release, started = threading.Event(), threading.Event()
    seen = []

    def kernel_fn(spec, imgs, ctx):
        seen.append(spec.depth)
        if spec.depth == 3:  # the first computation blocks until the test lets it go
            started.set()
            assert release.wait(10)
            return np.full((len(imgs), len(imgs)), 1.0) + np.eye(len(imgs))  # would be visible if published
        return cntk_core.network_kernel(spec.network(), imgs, kind=spec.kind, backend=BACKEND)

    ex = KernelExplorer(x, y, kernel_fn=kernel_fn)  # asynchronous: a worker thread
    assert started.wait(10)
    assert ex.model.busy
    ex.picker.depth.value = 6  # supersedes the running depth-3 job
    release.set()
    ex.wait(30)
    assert seen == [3, 6]
    assert ex.model.result.spec.depth == 6 and ex.model.dropped == 1
    np.testing.assert_allclose(ex.matrix, _direct(x, y, depth=6, readout="gap"), rtol=1e-10)
    assert ex.progress.value == 1.0 and ex.error.value == ""
    ex.model.close()


def test_chunked_job_is_cancelled_at_its_next_engine_call(nine, monkeypatch):
    """A superseded engine computation stops at the engine's next call (its cancel hook) instead of
    running to the end: here before the first block's first engine call returns anything."""
    x, y = nine
    blocks = []
    gate = threading.Event()
    ex = KernelExplorer(x, y, backend=BACKEND, kernel_fn=None)
    ex.wait(30)
    orig = em.kernel_matrices

    def slow(*args, **kw):
        blocks.append(1)
        gate.wait(10)
        return orig(*args, **kw)

    monkeypatch.setattr(em, "kernel_matrices", slow)
    ex.picker.depth.value = 7
    deadline = time.monotonic() + 30
    while not blocks and time.monotonic() < deadline:
        threading.Event().wait(0.01)
    ex.picker.depth.value = 3  # cache hit, published immediately; the depth-7 job is stale
    gate.set()
    ex.wait(30)
    assert ex.model.result.spec.depth == 3
    assert len(blocks) == 1, "the stale job kept computing after being superseded"
    assert NetworkSpec(depth=7) not in ex.model.cache
    ex.model.close()


def test_the_status_line_follows_the_background_pass(images, monkeypatch):
    release = threading.Event()

    def gated(*args, depths, **kw):
        if max(depths) == 8:
            release.wait(30)
        return cntk_core.kernel_matrices(*args, depths=depths, **kw)

    monkeypatch.setattr(em, "kernel_matrices", gated)
    x, y = images
    ex = KernelExplorer(x, y, disk_cache=False, prefetch_depth=8)
    ex.wait()
    assert "computed in" in ex.status.value and "in the background" in ex.status.value
    ex.picker.depth.value = 7
    assert "CNTK-GAP-7: coming from the background pass" in ex.status.value
    release.set()
    ex.wait(background=True)
    assert ex.model.result.spec.depth == 7 and "from the background pass" in ex.status.value
    assert "depths up to 8 ready" in ex.status.value
    ex.picker.depth.value = 5
    assert "CNTK-GAP-5" in ex.status.value and "cached" in ex.status.value
    ex.model.close()


def test_the_slider_end_is_the_default_background_target(images):
    x, y = images
    ex = KernelExplorer(x, y, synchronous=True, disk_cache=False)
    assert ex.model.prefetch_depth == ex.picker.depth.max == 21
    ex2 = KernelExplorer(x, y, synchronous=True, disk_cache=False, prefetch_depth=False)
    assert ex2.model.prefetch_depth is None


def test_errors_surface_in_the_widget(nine):
    x, y = nine

    def boom(spec, imgs, ctx):
        if spec.depth == 9:
            raise RuntimeError("engine exploded")
        return cntk_core.network_kernel(spec.network(), imgs, kind=spec.kind, backend=BACKEND)

    ex = KernelExplorer(x, y, synchronous=True, kernel_fn=boom)
    ex.picker.depth.value = 9
    assert "RuntimeError: engine exploded" in ex.error.value and "cntk-error" in ex.error.value
    assert ex.progress.bar_style == "danger"
    ex.picker.depth.value = 4  # recovers
    assert ex.error.value == "" and ex.model.result.spec.depth == 4

    # an engine ValueError: AvgPool(2) cannot run on 1x1 feature maps
    tiny = KernelExplorer(np.ones((3, 1, 1, 1)), [0, 1, 1], backend=BACKEND, synchronous=True)
    tiny.picker.pool.value = True
    assert "AvgPool" in tiny.error.value and "ValueError" in tiny.error.value


def test_bad_inputs_raise_clear_errors():
    with raises_param("images", ParameterTypeError):  # integer images
        KernelExplorer(np.zeros((3, 4, 4, 1), dtype=np.uint8), [0, 1, 2], synchronous=True)
    with raises_param("labels"):  # the explorer checks its labels (test_widgets_models.py: check_labels)
        KernelExplorer(np.zeros((3, 4, 4, 1)), [0, 1], synchronous=True)


def test_dtype_and_backend_are_checked_at_construction(six):
    x, y = six
    with raises_param("dtype"):
        KernelExplorer(x, y, dtype="float16", synchronous=True)
    with raises_param("backend"):
        KernelExplorer(x, y, backend="bogus", synchronous=True)


def test_explorer_marks_a_stale_figure_after_an_error():
    tiny = KernelExplorer(np.ones((3, 1, 1, 1)), [0, 1, 1], backend=BACKEND, synchronous=True)
    tiny.picker.pool.value = True
    assert "AvgPool" in tiny.error.value
    title = tiny.heatmap.layout.title.text
    assert "failed" in title and "still showing CNTK-GAP-3" in title
    tiny.picker.pool.value = False  # cached: the title is current again
    assert tiny.heatmap.layout.title.text.endswith("CNTK-GAP-3")


def test_synchronous_interrupt_in_the_view_leaves_no_computing_status(six):
    x, y = six
    ex = KernelExplorer(x, y, synchronous=True, kernel_fn=_interrupting(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        ex.picker.depth.value = 11
    assert "computing" not in ex.status.value and "interrupted" in ex.status.value
    assert ex.progress.bar_style == "warning"
    assert "still showing CNTK-GAP-3" in ex.heatmap.layout.title.text


def test_cancel_and_close_leave_a_consistent_state(six):
    x, y = six
    release, started = threading.Event(), threading.Event()

    def blocking(spec, imgs, ctx):
        if spec.depth in (3, 6):
            started.set()
            assert release.wait(10)
        return _engine(spec, imgs, ctx)

    ex = KernelExplorer(x, y, kernel_fn=blocking)  # asynchronous
    assert started.wait(10)
    assert ex.model.cancel() is True
    assert ex.status.value == "cancelled" and ex.progress.bar_style == "warning"
    release.set()
    ex.wait(30)
    assert ex.model.result is None and ex.model.error is None

    release.clear()
    started.clear()
    ex.picker.depth.value = 6  # blocks
    assert started.wait(10)
    ex.picker.depth.value = 5  # queued behind the blocked job
    ex.model.close()
    release.set()
    ex.wait(30)  # no CancelledError
    assert "closed" in ex.status.value and ex.picker.depth.disabled
    with pytest.raises(RuntimeError, match="closed"):
        ex.model.compute()
    ex.model.close()  # idempotent


# -- the later networks through the picker ----------------------------------------------------------------
def test_the_pickers_later_networks_reach_the_heatmap(images):
    """LAP (with its c control), circular padding, flip and a Myrtle preset chosen in the picker: the
    heatmap is the 4-D oracle's normalised kernel and its title names the kernel."""
    x, y = images
    order = np.argsort(y, kind="stable")
    ex = KernelExplorer(x, y, backend=BACKEND, synchronous=True, disk_cache=False)
    p = ex.picker
    p.lap_c.value = 1
    p.readout.value = "lap"
    p.padding.value = "circular"
    p.flip.value = True
    ref = reference_matrix(x[order], x[order], 3, "lap", lap_c=1, padding="circular", flip=True)
    np.testing.assert_allclose(ex.matrix, _normalise(ref), rtol=1e-7)
    assert ex.heatmap.layout.title.text.endswith("CNTK-LAP1-3-circ+flip")
    p.readout.value = "gap"
    p.padding.value = "zero"
    p.flip.value = False
    p.preset.value = "myrtle-7"
    ref = reference_matrix(x[order], x[order], 7, "gap", pools=(2, 4))
    np.testing.assert_allclose(ex.matrix, _normalise(ref), rtol=1e-7)
    assert ex.heatmap.layout.title.text.endswith("CNTK-Myrtle-7") and ex.error.value == ""


def test_a_pooled_net_on_images_it_cannot_halve_shows_the_error_in_the_widget():
    x, y = make_images(4, (6, 6, 1), seed=1), np.array([0, 1, 0, 1])
    ex = KernelExplorer(x, y, backend=BACKEND, synchronous=True, disk_cache=False)
    ex.picker.preset.value = "myrtle-10"
    assert "ValueError" in ex.error.value and "divisible by 4, got 6x6 px" in ex.error.value
    assert "still showing CNTK-GAP-3" in ex.heatmap.layout.title.text and ex.progress.bar_style == "danger"


def test_the_status_warns_when_the_per_layer_engine_meets_large_images():
    x, y = make_images(3, (12, 12, 1), seed=2), np.array([0, 1, 1])
    ex = KernelExplorer(x, y, backend=BACKEND, synchronous=True, disk_cache=False)
    shown = []
    ex.status.observe(lambda c: shown.append(c["new"]), names="value")
    ex.picker.padding.value = "circular"
    assert any("per-layer engine" in s and "12x12 px take about 5x as long" in s for s in shown), shown
    shown.clear()
    ex.picker.padding.value = "zero"  # the fused engine: no warning
    ex.picker.depth.value = 4
    assert shown and not any("per-layer" in s for s in shown)
