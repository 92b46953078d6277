"""Static pictures as plain HTML (PNG heatmaps, SVG line charts), for figures that need no
interaction: they render at once everywhere (JupyterLab, Voila, exported HTML), need no plotly.js
in the page and no widget per figure (each plotly ``FigureWidget`` ships ~5 MB of JavaScript to
the page, which a busy 2-core laptop may not load within anywidget's 2 s limit).
"""

from __future__ import annotations

import base64
import html
import math

import numpy as np

from ._display import png_bytes

#: plotly's "Viridis" stops, so these pictures match the interactive heatmaps
VIRIDIS = ("#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725")
#: plotly's default line colours
LINE_COLOURS = ("#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692", "#b6e880")


def colour_map(values: np.ndarray, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """``values`` (any shape) -> uint8 RGB ``[..., 3]`` on :data:`VIRIDIS`, ``lo``..``hi`` clipped."""
    stops = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in VIRIDIS], dtype=np.float64)
    t = np.clip((np.asarray(values, dtype=np.float64) - lo) / max(hi - lo, 1e-300), 0.0, 1.0) * (len(stops) - 1)
    i = np.minimum(t.astype(int), len(stops) - 2)
    f = (t - i)[..., None]
    return np.round(stops[i] * (1 - f) + stops[i + 1] * f).astype(np.uint8)


def nice_ticks(lo: float, hi: float, most: int = 7) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 times a power of ten) inside ``[lo, hi]``, at most ``most``."""
    span = max(hi - lo, 1e-12)
    for power in range(int(math.floor(math.log10(span / most))), 30):
        for base in (1, 2, 5):
            step = base * 10.0**power
            first = math.ceil(lo / step) * step
            ticks = [first + k * step for k in range(int((hi - first) / step + 1e-9) + 1)]
            if len(ticks) <= most:
                return ticks
    return [lo, hi]


def _img(png: bytes, width: int, height: int, alt: str) -> str:
    """An ``<img>`` of exactly ``width x height`` CSS pixels (inline style: JupyterLab's stylesheet
    sets ``img {height: auto}``, which would rescale a ramp drawn 1 px wide)."""
    data = base64.b64encode(png).decode()
    return (
        f"<img src='data:image/png;base64,{data}' width='{width}' height='{height}' alt='{html.escape(alt)}' "
        f"style='image-rendering:pixelated;display:block;width:{width}px;height:{height}px;max-width:none'>"
    )


def heatmap_grid_html(
    panels: list[tuple[str, np.ndarray]],
    *,
    columns: int = 3,
    lo: float = 0.0,
    hi: float = 1.0,
    size: int = 200,
    label: str = "K̂",
) -> str:
    """Square heatmaps ``[n, n]`` of ``panels`` (title, matrix) in a grid of ``columns``, on one colour
    scale ``lo``..``hi`` with one colour bar; each picture ``size`` px wide. Returns an HTML string."""
    cells = []
    for title, matrix in panels:
        m = np.asarray(matrix)
        scale = max(1, -(-size // max(m.shape)))
        cells.append(
            "<figure style='margin:0'>"
            f"<figcaption style='font-size:13px;text-align:center;margin-bottom:4px'>{html.escape(title)}</figcaption>"
            f"{_img(png_bytes(colour_map(m, lo, hi), scale), size, size, title)}</figure>"
        )
    ramp = colour_map(np.linspace(hi, lo, 200)[:, None], lo, hi)
    ticks = "".join(
        f"<span style='position:absolute;left:18px;top:{int(round(190 * (hi - v) / (hi - lo))) + 2}px;"
        f"font-size:12px'>{v:g}</span>"
        for v in np.linspace(lo, hi, 6)
    )
    bar = (
        f"<div class='cntk-colorbar' style='position:relative;width:56px;height:{size}px;margin-top:22px'>"
        f"<div style='font-size:13px;position:absolute;top:-20px'>{html.escape(label)}</div>"
        f"{_img(png_bytes(ramp, 1), 14, 200, 'colour scale')}{ticks}</div>"
    )
    grid = (
        f"<div style='display:grid;grid-template-columns:repeat({columns},{size}px);gap:14px 12px'>"
        + "".join(cells)
        + "</div>"
    )
    return f"<div class='cntk-heatmaps' style='display:flex;gap:16px;align-items:flex-start'>{grid}{bar}</div>"


def line_chart_svg(
    series: list[tuple[str, np.ndarray, np.ndarray]],
    *,
    title: str = "",
    x_title: str = "",
    y_title: str = "",
    log_y: bool = False,
    width: int = 720,
    height: int = 320,
) -> str:
    """A line chart of ``series`` (name, x, y) as inline SVG with the legend below the plot area;
    ``log_y`` puts y on a log axis with one label per decade. Returns an HTML string."""
    left, right, top, bottom = 64, 16, 34 if title else 12, 44
    pw, ph = width - left - right, height - top - bottom
    xs = np.concatenate([np.asarray(x, float) for _, x, _ in series])
    ys = np.concatenate([np.asarray(y, float) for _, _, y in series])
    tf = (lambda v: np.log10(np.clip(v, 1e-300, None))) if log_y else (lambda v: np.asarray(v, float))
    x0, x1 = float(xs.min()), float(xs.max())
    y0, y1 = float(tf(ys).min()), float(tf(ys).max())
    if log_y:
        y0, y1 = math.floor(y0), math.ceil(y1)
    if x1 <= x0:
        x1 = x0 + 1
    if y1 <= y0:
        y1 = y0 + 1

    def px(x):
        return left + (np.asarray(x, float) - x0) / (x1 - x0) * pw

    def py(y):
        return top + (1 - (tf(y) - y0) / (y1 - y0)) * ph

    parts = [f"<rect x='{left}' y='{top}' width='{pw}' height='{ph}' fill='#eef0f6'/>"]
    yticks = range(int(y0), int(y1) + 1) if log_y else np.linspace(y0, y1, 5)
    for t in yticks:
        y = top + (1 - (t - y0) / (y1 - y0)) * ph
        text = f"10<tspan dy='-6' font-size='9'>{int(t)}</tspan>" if log_y else f"{t:.3g}"
        parts.append(f"<line x1='{left}' x2='{left + pw}' y1='{y:.1f}' y2='{y:.1f}' stroke='white'/>")
        parts.append(f"<text x='{left - 6}' y='{y + 4:.1f}' text-anchor='end' font-size='12'>{text}</text>")
    for t in nice_ticks(x0, x1):
        x = px(t)
        parts.append(f"<text x='{x:.1f}' y='{top + ph + 16}' text-anchor='middle' font-size='12'>{t:g}</text>")
    for k, (_name, x, y) in enumerate(series):
        points = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px(x), py(y), strict=True))
        colour = LINE_COLOURS[k % len(LINE_COLOURS)]
        parts.append(f"<polyline points='{points}' fill='none' stroke='{colour}' stroke-width='2'/>")
    parts.append(
        f"<text x='{left + pw / 2}' y='{height - 6}' text-anchor='middle' font-size='13'>{html.escape(x_title)}</text>"
    )
    parts.append(
        f"<text transform='translate(14,{top + ph / 2}) rotate(-90)' text-anchor='middle' font-size='13'>"
        f"{html.escape(y_title)}</text>"
    )
    if title:
        parts.append(f"<text x='{left}' y='20' font-size='15'>{html.escape(title)}</text>")
    legend = "".join(
        f"<span style='display:inline-flex;align-items:center;margin-right:16px;font-size:13px'>"
        f"<span style='display:inline-block;width:22px;height:3px;background:{LINE_COLOURS[k % len(LINE_COLOURS)]};"
        f"margin-right:6px'></span>{html.escape(name)}</span>"
        for k, (name, _x, _y) in enumerate(series)
    )
    svg = (
        f"<svg class='cntk-chart' width='{width}' height='{height}' viewBox='0 0 {width} {height}' "
        f"font-family='sans-serif'>{''.join(parts)}</svg>"
    )
    legend = f"<div class='cntk-legend' style='max-width:{width}px'>{legend}</div>"
    return f"<div class='cntk-line-chart'>{svg}{legend}</div>"
