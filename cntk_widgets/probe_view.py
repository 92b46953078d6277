"""The translation and flip probe widget (issue 26): pick an image, see how the normalised kernel
between it and its shifted copies falls off, for vanilla, LAP and GAP readouts side by side.

A thin view over :class:`~cntk_widgets.probe_model.ProbeModel`; the pictures are static HTML
(:func:`cntk_widgets.static_plots.heatmap_grid_html`, no plotly): :func:`probe_html` draws a result.
"""

from __future__ import annotations

import base64
import html
import math

import ipywidgets as W
import numpy as np

from ._display import error_html, png_bytes
from ._teaching_common import progress_bar, show_job_event
from .explorer_view import image_strip
from .picker import KIND_OPTIONS
from .probe_model import PROBE_READOUTS, ProbeModel, ProbeResult
from .static_plots import heatmap_grid_html

_LABEL = {"description_width": "initial"}
IMAGE_PX = 112


def _image_html(image: np.ndarray, caption: str) -> str:
    strip = image_strip(image[None])
    scale = max(1, -(-IMAGE_PX // max(strip.shape[:2])))
    data = base64.b64encode(png_bytes(strip, scale)).decode()
    w, h = strip.shape[1] * scale, strip.shape[0] * scale
    return (
        f"<figure style='margin:0'><img src='data:image/png;base64,{data}' width='{w}' height='{h}' "
        f"alt='{html.escape(caption)}' style='image-rendering:pixelated;display:block;width:{w}px;height:{h}px;"
        f"max-width:none'><figcaption style='font-size:13px'>{html.escape(caption)}</figcaption></figure>"
    )


def probe_html(result: ProbeResult, caption: str = "") -> str:
    """The image, the three heatmaps of ``k̂(x, shift x)`` on one colour scale (from the lowest value,
    rounded down to 0.1, to 1), how far each kernel is invariant, and the flip probe."""
    w = result.settings.window
    lo = min(float(m.min()) for m in result.maps.values())
    lo = min(0.9, math.floor(lo * 10) / 10)
    panels = [(result.titles[name], result.maps[name]) for name in PROBE_READOUTS]
    grid = heatmap_grid_html(panels, columns=3, lo=lo, hi=1.0, size=200, label="k̂")  # 200: the colour bar's height
    lines = []
    for name in PROBE_READOUTS:
        r = result.invariance_radius(name)
        reach = "every shift in the window" if r == w else "no shift" if r == 0 else f"shifts up to {r} px"
        lines.append(
            f"<li><b>{html.escape(result.titles[name])}</b>: unchanged (k̂ ≥ 1 − 10⁻⁶) for {reach}; lowest k̂ "
            f"{result.maps[name].min():.3f}; flip probe k̂(x, flip x) = {result.flip[name]:.4f}</li>"
        )
    pad = "circular (the image wraps around)" if result.settings.padding == "circular" else "zero"
    return (
        "<div class='cntk-probe-pictures' style='display:flex;gap:18px;align-items:flex-start;flex-wrap:wrap'>"
        f"{_image_html(result.image, caption or f'image #{result.index}')}<div>{grid}"
        f"<div style='font-size:12px;color:#555;margin-top:4px'>each picture: shifts dy = −{w}…{w} (rows, down) "
        f"and dx = −{w}…{w} (columns, right); the centre is the image itself; padding {pad}</div></div></div>"
        f"<ul class='cntk-probe-findings' style='font-size:13px'>{''.join(lines)}</ul>"
    )


class TranslationProbe(W.VBox):
    """Controls (image number, kernel, padding, LAP's ``c``), a progress bar and the probe's pictures.

    ``images`` ``[n, H, W, C]`` (preprocessed, small: 8x8 digits), ``labels``, ``class_names`` and the
    other arguments as :class:`ProbeModel`; ``probe.model`` is the model, ``probe.pictures`` the HTML.
    """

    def __init__(self, images, labels=None, class_names=None, *, synchronous: bool = False, **kwargs):
        self.model = ProbeModel(images, labels, class_names, synchronous=synchronous, autostart=False, **kwargs)
        m, s = self.model, self.model.settings
        self.image = W.IntSlider(
            value=m.index, min=0, max=len(m.images) - 1, description="image", continuous_update=False, style=_LABEL
        )
        self.kind = W.ToggleButtons(options=list(KIND_OPTIONS), value=s.kind, description="kernel", style=_LABEL)
        self.padding = W.ToggleButtons(
            options=[("circular", "circular"), ("zero", "zero")], value=s.padding, description="padding", style=_LABEL
        )
        self.lap_c = W.IntSlider(
            value=s.lap_c, min=0, max=max(3, s.lap_c), description="LAP c", continuous_update=False, style=_LABEL
        )
        self.progress = progress_bar("probe")
        self.error, self.pictures = W.HTML(), W.HTML()
        self.image.observe(lambda c: self._forward(m.select, c["new"]), names="value")
        self.kind.observe(lambda c: self._forward(m.set, kind=c["new"]), names="value")
        self.padding.observe(lambda c: self._forward(m.set, padding=c["new"]), names="value")
        self.lap_c.observe(lambda c: self._forward(m.set, lap_c=c["new"]), names="value")
        m.on_change(self._on_model)
        super().__init__(
            [
                W.HBox([self.image, self.lap_c]),
                W.HBox([self.kind, self.padding]),
                self.progress,
                self.error,
                self.pictures,
            ]
        )
        self.add_class("cntk-probe")
        m.compute()

    def wait(self, timeout: float | None = 300.0):
        return self.model.wait(timeout)

    def _forward(self, call, *args, **kwargs) -> None:
        try:
            call(*args, **kwargs)
            self.error.value = ""
        except (TypeError, ValueError, RuntimeError) as exc:
            self.error.value = error_html(exc)

    def _on_model(self, event: str, m: ProbeModel) -> None:
        show_job_event(event, m, self.progress, self.error, None)
        if event == "result":
            r = m.result
            self.pictures.value = probe_html(r, m.caption(r.index))
