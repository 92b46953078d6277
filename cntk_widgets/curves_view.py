"""The small-data learning-curve widget (issue 26): test accuracy against the number of training
images for CNTK-GAP, CNTK-V and the CNN-GP, mean ± standard deviation over random class-balanced
subsets (the same subsets for every kernel). A thin view over
:class:`~cntk_widgets.teaching_jobs.LearningCurvesModel`: a run button, a stop button, a progress bar
and a static SVG chart (:func:`curves_svg`; no plotly FigureWidget: each one ships ~5 MB of JavaScript,
which a busy laptop may not load within anywidget's time limit when a page holds several)."""

from __future__ import annotations

import html

import ipywidgets as W
import numpy as np

from ._display import error_html
from ._teaching_common import RUN_AGAIN, progress_bar, run_stop_row, show_job_event
from .static_plots import LINE_COLOURS
from .teaching_jobs import LearningCurvesModel

CHART_WIDTH, CHART_HEIGHT = 640, 360


def curves_svg(curves: dict, *, width: int = CHART_WIDTH, height: int = CHART_HEIGHT) -> str:
    """``{name: LearningCurve}`` as an inline SVG chart (the layout of
    :func:`cntk_widgets.static_plots.line_chart_svg`): one line per kernel through the mean test
    accuracy (%) at each training size (log axis), error bars of one standard deviation over the
    draws, the legend below. Returns an HTML string."""
    left, right, top, bottom = 64, 16, 34, 44
    pw, ph = width - left - right, height - top - bottom
    sizes = np.asarray(next(iter(curves.values())).sizes, dtype=np.float64)
    lx = np.log10(sizes)
    x0, x1 = float(lx.min()) - 0.08, float(lx.max()) + 0.08

    def px(v):
        return left + (np.log10(np.asarray(v, dtype=np.float64)) - x0) / (x1 - x0) * pw

    def py(acc):
        return top + (1 - np.clip(np.asarray(acc, dtype=np.float64), 0, 100) / 100) * ph

    parts = [f"<rect x='{left}' y='{top}' width='{pw}' height='{ph}' fill='#eef0f6'/>"]
    for t in range(0, 101, 20):
        y = py(t)
        parts.append(f"<line x1='{left}' x2='{left + pw}' y1='{y:.1f}' y2='{y:.1f}' stroke='white'/>")
        parts.append(f"<text x='{left - 6}' y='{y + 4:.1f}' text-anchor='end' font-size='12'>{t}</text>")
    for s in sizes:
        parts.append(f"<text x='{px(s):.1f}' y='{top + ph + 16}' text-anchor='middle' font-size='12'>{s:g}</text>")
    for k, c in enumerate(curves.values()):
        colour = LINE_COLOURS[k % len(LINE_COLOURS)]
        mean, std = 100 * c.mean, 100 * c.std
        points = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px(sizes), py(mean), strict=True))
        parts.append(f"<polyline points='{points}' fill='none' stroke='{colour}' stroke-width='2'/>")
        for x, m, d in zip(px(sizes), mean, std, strict=True):
            lo, hi = py(m - d), py(m + d)
            parts.append(
                f"<path class='cntk-errorbar' d='M{x:.1f},{lo:.1f}V{hi:.1f}M{x - 4:.1f},{lo:.1f}h8"
                f"M{x - 4:.1f},{hi:.1f}h8' stroke='{colour}' stroke-width='1.5' fill='none'/>"
            )
            parts.append(f"<circle cx='{x:.1f}' cy='{py(m):.1f}' r='3.5' fill='{colour}'/>")
    parts.append(
        f"<text x='{left + pw / 2}' y='{height - 6}' text-anchor='middle' font-size='13'>"
        "training images (log scale)</text>"
    )
    parts.append(
        f"<text transform='translate(14,{top + ph / 2}) rotate(-90)' text-anchor='middle' font-size='13'>"
        "test accuracy (%)</text>"
    )
    parts.append(
        f"<text x='{left}' y='20' font-size='15'>test accuracy against training size (mean ± std over subsets)</text>"
    )
    legend = "".join(
        f"<span style='display:inline-flex;align-items:center;margin-right:16px;font-size:13px'>"
        f"<span style='display:inline-block;width:22px;height:3px;background:{LINE_COLOURS[k % len(LINE_COLOURS)]};"
        f"margin-right:6px'></span>{html.escape(name)}</span>"
        for k, name in enumerate(curves)
    )
    svg = (
        f"<svg class='cntk-chart' width='{width}' height='{height}' viewBox='0 0 {width} {height}' "
        f"font-family='sans-serif'>{''.join(parts)}</svg>"
    )
    return (
        f"<div class='cntk-line-chart'>{svg}<div class='cntk-legend' style='max-width:{width}px'>{legend}</div></div>"
    )


def curves_summary(curves: dict) -> str:
    """One sentence per size: which kernel is best on average, e.g. ``"10 images: CNTK-GAP 62.0 %"``;
    then the kernels' mean accuracies at the largest size. Plain text."""
    names = list(curves)
    sizes = curves[names[0]].sizes
    best = [names[int(np.argmax([curves[n].mean[i] for n in names]))] for i in range(len(sizes))]
    parts = [
        f"{s} images: {b} {100 * curves[b].mean[i]:.1f} %" for i, (s, b) in enumerate(zip(sizes, best, strict=True))
    ]
    last = ", ".join(f"{n} {100 * curves[n].mean[-1]:.1f} ± {100 * curves[n].std[-1]:.1f} %" for n in names)
    return "best on average: " + "; ".join(parts) + f". At {sizes[-1]} images: {last}."


class LearningCurvesView(W.VBox):
    """``view.model`` is the :class:`LearningCurvesModel` (arguments as its own); ``view.chart`` the
    chart (:func:`curves_svg`, an HTML widget); ``view.summary`` a line of text."""

    def __init__(self, *, synchronous: bool = False, autostart: bool = True, **kwargs):
        self.model = LearningCurvesModel(synchronous=synchronous, autostart=False, **kwargs)
        m = self.model
        self.progress = progress_bar("kernels")
        row = run_stop_row(self, self._start)
        self.status, self.error, self.summary, self.chart = W.HTML(), W.HTML(), W.HTML(), W.HTML()
        m.on_change(self._on_model)
        s = m.split
        self.status.value = html.escape(
            f"{len(s.y_train)} pool images, {len(s.y_test)} test images ({s.dataset}); "
            f"sizes {', '.join(map(str, m.sizes))}; {m.n_draws} random subsets per size"
        )
        super().__init__([row, self.status, self.error, self.chart, self.summary])
        self.add_class("cntk-curves")
        if autostart:
            self._start()

    def wait(self, timeout: float | None = 600.0):
        return self.model.wait(timeout)

    def _start(self) -> None:
        try:
            self.model.run()
        except RuntimeError as exc:
            self.error.value = error_html(exc)

    def _on_model(self, event: str, m: LearningCurvesModel) -> None:
        show_job_event(event, m, self.progress, self.error, RUN_AGAIN)
        if event == "start":
            self.error.value = ""
        elif event == "result":
            self._draw(m.result)

    def _draw(self, curves: dict) -> None:
        self.chart.value = curves_svg(curves)
        self.summary.value = html.escape(curves_summary(curves))
