"""The explorer's view (no browser): the selected-pair panel, the colour scale, the labelled toggle
groups, the figure's fixed layout, and what the status line says while a background pass runs."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("plotly")

import cntk_core  # noqa: E402
import cntk_widgets.explorer_model as em  # noqa: E402
from cntk_widgets import KernelExplorer  # noqa: E402
from cntk_widgets.explorer_view import COLORBAR_X, HEATMAP_DOMAIN, PAIR_IMAGE_PX, SPECTRUM_DOMAIN  # noqa: E402


@pytest.fixture
def images():
    rng = np.random.default_rng(3)
    return rng.standard_normal((6, 4, 4, 1)), np.array([1, 0, 1, 0, 2, 2])


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


def test_final_states_are_sent_again_for_pages_that_were_still_connecting():
    import time

    from cntk_widgets._display import resend_state_later

    class Widget:
        sent = 0

        def send_state(self):
            self.sent += 1

    w = Widget()
    resend_state_later([w], delays=(0.01, 0.05))
    time.sleep(0.3)
    assert w.sent == 2


def test_row_blocks_are_drawn_as_they_arrive():
    x = np.random.default_rng(5).standard_normal((24, 4, 4, 1))
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
    final = ex.matrix
    assert not np.isnan(final).any() and "computing" not in ex.heatmap.layout.title.text
