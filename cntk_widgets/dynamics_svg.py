"""The training-dynamics widget's picture as inline SVG (no plotly): four panels, drawn in two layers.

The static layer (axes, the loss and accuracy curves, the early-stopping star, the residual energies at
t = 0, the heatmap's labels) is built once per result; the dynamic layer (the markers and dashed lines
at the slider's t, the class scores, the predicted classes, the residual energies at t) costs about a
millisecond per slider move. A plotly FigureWidget redrew all four subplots on every move (~80 ms of
plotly.js per update on a busy 2-core laptop, more than the kernel round trip); an HTML value is
replaced in a few milliseconds, and the page needs no plotly.js at all.

Elements the tests and the benchmark read (classes and ``data-`` attributes): ``circle.cntk-at-t``
(``data-panel`` "loss" / "accuracy", ``data-t``), ``rect.cntk-score`` (``data-row``, ``data-class``,
``data-score``), ``circle.cntk-pred`` (``data-row``, ``data-class``, ``data-right``), ``path.cntk-residual``
and ``line.cntk-time``. The layout follows :func:`cntk_widgets.static_plots.line_chart_svg`
(``div.cntk-line-chart`` > ``svg.cntk-chart``, legend in ``div.cntk-legend``), which the browser tests'
layout checks know.
"""

from __future__ import annotations

import html
import math

import numpy as np

from .static_plots import nice_ticks

WIDTH, HEIGHT = 820, 670
BLUE, RED, STAR, GREY = "#636efa", "#ef553b", "#ffa15a", "#bbbbbb"
#: plot areas (left, top, width, height) in pixels
PANELS = {
    "loss": (70, 70, 310, 220),
    "accuracy": (480, 70, 310, 220),
    "scores": (120, 400, 260, 210),
    "residual": (480, 400, 310, 210),
}
#: the diverging colour scale of the scores: -1 red, 0 light grey, +1 blue (as plotly's "RdBu")
_STOPS = np.array([[178, 24, 43], [247, 247, 247], [33, 102, 172]], dtype=np.float64)


def score_colours(scores: np.ndarray) -> np.ndarray:
    """``scores`` (any shape) -> ``#rrggbb`` strings, -1 .. 1 clipped."""
    s = np.clip(np.asarray(scores, dtype=np.float64), -1.0, 1.0)
    f = np.abs(s)[..., None]
    end = np.where((s >= 0)[..., None], _STOPS[2], _STOPS[0])
    rgb = np.round(_STOPS[1] * (1 - f) + end * f).astype(int)
    return np.array([f"#{a:02x}{b:02x}{c:02x}" for a, b, c in rgb.reshape(-1, 3)]).reshape(s.shape)


def _text(x, y, s, size=12, anchor="middle", extra="") -> str:
    return f"<text x='{x:.1f}' y='{y:.1f}' font-size='{size}' text-anchor='{anchor}'{extra}>{html.escape(s)}</text>"


class DynamicsPicture:
    """The picture of one :class:`~cntk_widgets.dynamics_model.DynamicsResult`: ``svg(snapshot)``
    returns the HTML of the whole picture at the snapshot's time.

    ``u`` ``[T]``: the times' x coordinates (log10 t, ``inf`` one step beyond: from
    :func:`cntk_widgets.dynamics_view.time_axis`), ``ticks`` / ``tick_text`` its labels; ``rows``: the
    test images whose scores are drawn; ``floor``: the residual panel's lowest value.
    """

    def __init__(self, result, u: np.ndarray, ticks, tick_text, rows: np.ndarray, floor: float, title: str):
        self.result, self.u, self.rows, self.floor = result, np.asarray(u), np.asarray(rows), float(floor)
        c = result.curves
        self.u_range = (-0.15, float(ticks[-1]) + 0.25)
        self.loss_top = 1.08 * float(max(c.train_loss.max(), c.test_loss.max()))
        energy0 = result.initial_energy
        self.log_range = (math.log10(self.floor) - 0.3, math.log10(max(float(energy0.max()), self.floor)) + 0.3)
        self.n_modes = len(energy0)
        self.names = result.data.class_names
        self._static = self._static_layer(ticks, tick_text, title)

    # -- coordinates ---------------------------------------------------------------------------------
    def px(self, panel: str, u) -> np.ndarray:
        left, _, w, _ = PANELS[panel]
        lo, hi = self.u_range
        return left + (np.asarray(u, dtype=np.float64) - lo) / (hi - lo) * w

    def py(self, panel: str, v) -> np.ndarray:
        _, top, _, h = PANELS[panel]
        v = np.asarray(v, dtype=np.float64)
        if panel == "loss":
            f = v / self.loss_top
        elif panel == "accuracy":
            f = v / 100.0
        else:  # residual: log scale
            lo, hi = self.log_range
            f = (np.log10(np.maximum(v, self.floor)) - lo) / (hi - lo)
        return top + (1 - np.clip(f, 0, 1)) * h

    def mode_x(self, modes) -> np.ndarray:
        left, _, w, _ = PANELS["residual"]
        return left + np.asarray(modes, dtype=np.float64) / (self.n_modes + 1) * w

    def _path(self, xs, ys) -> str:
        return "M" + "L".join(f"{a:.1f},{b:.1f}" for a, b in zip(xs, ys, strict=True))

    # -- the static layer ------------------------------------------------------------------------------
    def _frame(self, panel: str, title: str) -> list[str]:
        left, top, w, h = PANELS[panel]
        return [
            f"<rect class='cntk-plot-area' x='{left}' y='{top}' width='{w}' height='{h}' fill='#eef0f6'/>",
            _text(left + w / 2, top - 10, title, 14, extra=f" class='cntk-title-{panel}'"),
        ]

    def _static_layer(self, ticks, tick_text, title: str) -> list[str]:
        r, c = self.result, self.result.curves
        parts = [_text(20, 24, title, 15, "start")]
        for panel, head, values in (
            ("loss", "loss mean((f − y)²)", (c.train_loss, c.test_loss)),
            ("accuracy", "accuracy (%)", (100 * c.train_accuracy, 100 * c.test_accuracy)),
        ):
            left, top, w, h = PANELS[panel]
            parts += self._frame(panel, head)
            top_value = self.loss_top if panel == "loss" else 100.0
            for t in nice_ticks(0.0, top_value, 6):
                y = float(self.py(panel, t))
                parts.append(f"<line x1='{left}' x2='{left + w}' y1='{y:.1f}' y2='{y:.1f}' stroke='white'/>")
                parts.append(_text(left - 6, y + 4, f"{t:g}", 12, "end"))
            for t, label in zip(ticks, tick_text, strict=True):
                parts.append(_text(float(self.px(panel, t)), top + h + 16, label, 12))
            parts.append(_text(left + w / 2, top + h + 38, "training time t (steps, log scale)", 13))
            for colour, v in zip((BLUE, RED), values, strict=True):
                d = self._path(self.px(panel, self.u), self.py(panel, v))
                parts.append(f"<path d='{d}' fill='none' stroke='{colour}' stroke-width='2'/>")
        if r.early_stopping:
            x, y = float(self.px("loss", self.u[r.best])), float(self.py("loss", c.test_loss[r.best]))
            star = " ".join(
                f"{x + (7 if k % 2 == 0 else 3) * math.sin(k * math.pi / 5):.1f},"
                f"{y - (7 if k % 2 == 0 else 3) * math.cos(k * math.pi / 5):.1f}"
                for k in range(10)
            )
            parts.append(
                f"<polygon class='cntk-early-stop' points='{star}' fill='{STAR}'><title>lowest test loss at "
                f"step {r.times[r.best]:,.0f}: {c.test_loss[r.best]:.4f}</title></polygon>"
            )
        # the scores heatmap: row and column labels
        left, top, w, h = PANELS["scores"]
        parts += self._frame("scores", "")[:1]
        n_rows, n_cls = len(self.rows), len(self.names)
        for i, k in enumerate(self.rows):
            y = top + (i + 0.5) * h / n_rows + 4
            parts.append(_text(left - 6, y, f"#{k} true {self.names[r.data.y_test[k]]}", 12, "end"))
        for j, name in enumerate(self.names):
            parts.append(_text(left + (j + 0.5) * w / n_cls, top + h + 16, str(name), 12))
        parts.append(_text(left + w / 2, top + h + 38, "class (circle: predicted)", 13))
        # the residual panel: log axis, modes, the energies at t = 0
        left, top, w, h = PANELS["residual"]
        parts += self._frame("residual", "")[:1]
        lo, hi = self.log_range
        step = max(1, int(math.ceil((hi - lo) / 6)))
        for e in range(int(math.ceil(lo)), int(math.floor(hi)) + 1, step):
            y = float(self.py("residual", 10.0**e))
            parts.append(f"<line x1='{left}' x2='{left + w}' y1='{y:.1f}' y2='{y:.1f}' stroke='white'/>")
            parts.append(
                f"<text x='{left - 6}' y='{y + 4:.1f}' font-size='12' text-anchor='end'>10"
                f"<tspan dy='-6' font-size='9'>{e}</tspan></text>"
            )
        for m in nice_ticks(1, self.n_modes, 6):
            parts.append(_text(float(self.mode_x(m)), top + h + 16, f"{m:g}", 12))
        parts.append(_text(left + w / 2, top + h + 38, "eigenmode (largest eigenvalue first)", 13))
        parts.append(
            f"<text transform='translate({left - 52},{top + h / 2}) rotate(-90)' font-size='13' "
            "text-anchor='middle'>residual energy</text>"
        )
        modes = np.arange(1, self.n_modes + 1)
        d = self._path(self.mode_x(modes), self.py("residual", r.initial_energy))
        parts.append(f"<path d='{d}' fill='none' stroke='{GREY}' stroke-width='1.5'><title>t = 0</title></path>")
        return parts

    # -- the dynamic layer -------------------------------------------------------------------------------
    def svg(self, snap, label: str) -> str:
        """The whole picture at ``snap`` (a :class:`~cntk_widgets.dynamics_model.TimeSnapshot`);
        ``label``: how the time is written (``"2,040"``, ``"∞"``)."""
        s, r = snap.state, self.result
        u = float(self.u[snap.index]) if snap.index is not None else self._u_of(snap.t)
        parts = list(self._static)
        for panel, values in (
            ("loss", (s.train_loss, s.test_loss)),
            ("accuracy", (100 * s.train_accuracy, 100 * s.test_accuracy)),
        ):
            _, top, _, h = PANELS[panel]
            x = float(self.px(panel, u))
            parts.append(
                f"<line class='cntk-time' x1='{x:.1f}' x2='{x:.1f}' y1='{top}' y2='{top + h}' stroke='#777' "
                "stroke-dasharray='4,3'/>"
            )
            for colour, v, name in zip((BLUE, RED), values, ("train", "test"), strict=True):
                parts.append(
                    f"<circle class='cntk-at-t' data-panel='{panel}' data-t='{label}' cx='{x:.1f}' "
                    f"cy='{float(self.py(panel, v)):.1f}' r='5.5' fill='{colour}' stroke='black'>"
                    f"<title>{name} at t = {html.escape(label)}: {v:.4g}</title></circle>"
                )
        left, top, w, h = PANELS["scores"]
        parts.append(_text(left + w / 2, top - 10, f"class scores of test images at t = {label}", 14))
        scores = s.test_scores[self.rows]
        colours = score_colours(scores)
        n_rows, n_cls = scores.shape
        cw, ch = w / n_cls, h / n_rows
        pred = scores.argmax(axis=1)
        for i in range(n_rows):
            k = int(self.rows[i])
            for j in range(n_cls):
                parts.append(
                    f"<rect class='cntk-score' data-row='{k}' data-class='{j}' data-score='{scores[i, j]:.4f}' "
                    f"x='{left + j * cw:.1f}' y='{top + i * ch:.1f}' width='{cw:.1f}' height='{ch:.1f}' "
                    f"fill='{colours[i, j]}'><title>#{k}: score of {html.escape(str(self.names[j]))} = "
                    f"{scores[i, j]:.3f}</title></rect>"
                )
            right = bool(pred[i] == r.data.y_test[k])
            parts.append(
                f"<circle class='cntk-pred' data-row='{k}' data-class='{pred[i]}' data-right='{int(right)}' "
                f"cx='{left + (pred[i] + 0.5) * cw:.1f}' cy='{top + (i + 0.5) * ch:.1f}' r='{min(cw, ch) * 0.36:.1f}' "
                f"fill='none' stroke='{'#1b7f1b' if right else '#c00000'}' stroke-width='2.5'/>"
            )
        left, top, w, h = PANELS["residual"]
        parts.append(_text(left + w / 2, top - 10, f"residual per eigenmode at t = {label}", 14))
        modes = np.arange(1, self.n_modes + 1)
        d = self._path(self.mode_x(modes), self.py("residual", snap.residuals))
        parts.append(f"<path class='cntk-residual' d='{d}' fill='none' stroke='{BLUE}' stroke-width='2'/>")
        svg = (
            f"<svg class='cntk-chart' width='{WIDTH}' height='{HEIGHT}' viewBox='0 0 {WIDTH} {HEIGHT}' "
            f"font-family='sans-serif'>{''.join(parts)}</svg>"
        )
        return f"<div class='cntk-line-chart'>{svg}{LEGEND}</div>"

    def _u_of(self, t: float) -> float:
        return float(self.u[-1]) if np.isinf(t) else float(np.log10(max(float(t), 1.0)))


def _legend_item(swatch: str, name: str) -> str:
    return (
        "<span style='display:inline-flex;align-items:center;margin-right:16px;font-size:13px'>"
        f"{swatch}<span style='margin-left:6px'>{html.escape(name)}</span></span>"
    )


LEGEND = (
    f"<div class='cntk-legend' style='max-width:{WIDTH}px;margin-left:70px'>"
    + _legend_item(f"<span style='display:inline-block;width:22px;height:3px;background:{BLUE}'></span>", "train")
    + _legend_item(f"<span style='display:inline-block;width:22px;height:3px;background:{RED}'></span>", "test")
    + _legend_item(f"<span style='color:{STAR};font-size:16px'>★</span>", "lowest test loss (early stopping)")
    + _legend_item("<span style='display:inline-block;width:22px;border-top:2px dashed #777'></span>", "the slider's t")
    + _legend_item(
        f"<span style='display:inline-block;width:22px;height:3px;background:{GREY}'></span>", "residual at t = 0"
    )
    + "</div>"
)
