"""Figure helpers of the regression lab (no widgets): the downsample menu, the test-image grid and the
history plot's lines, sized to stay readable on a projector at 1280 and 1920 px wide windows."""

from __future__ import annotations

import numpy as np

from cntk_core.architecture import family_name

from .explorer_view import image_strip

# -- the downsample menu -------------------------------------------------------------------------


def downsample_options(height: int, width: int, top: int, current: int | None = None) -> list[tuple[str, int]]:
    """Menu entries ``(label, factor)``, one per distinct image size: ``"4: 8x8 px"``.

    Factors up to ``top`` that give the same size (32 px: 7 and 8 both give 4x4) are listed once, by
    the largest (it crops the fewest edge pixels). ``current`` is always listed; when it repeats a
    listed size or exceeds ``top`` its label says so.
    """
    best: dict[tuple[int, int], int] = {}
    for f in range(1, max(1, top) + 1):
        best[(height // f, width // f)] = f  # ascending: the largest factor of each size wins
    factors = set(best.values())
    extra = None if current is None or current in factors else int(current)
    options = []
    for f in sorted(factors | ({extra} if extra else set())):
        h, w = height // f, width // f
        label = f"{f}: {h}x{w} px"
        if f == extra:
            if f > top:
                label += " (too small)"
            elif (h, w) in best:
                label += f" (as {best[(h, w)]}, crops {height - h * f} px)"
        options.append((label, f))
    return options


# -- the test-image grid ---------------------------------------------------------------------------
GRID_COLUMNS = 5
GRID_TILE_PX = 84  # screen pixels per image side
GRID_CELL_PX = 132  # screen pixels per column: room for "pred automobile" (~110 px) at GRID_FONT_PX
GRID_CAPTION_PX = 38  # two caption lines under each image
GRID_FONT_PX = 13
GRID_MARGIN = dict(l=6, r=6, t=44, b=6)


def image_grid(images: np.ndarray, predictions, y_test, class_names, n: int) -> dict:
    """Up to ``n`` test images (evenly spaced over the set) in a grid of ``GRID_COLUMNS`` columns with a
    two-line caption ``"pred X" / "true Y"`` under each (green: right, red: wrong).

    Returns ``canvas`` (uint8 RGB, native pixels; each image min-max scaled), ``annotations`` (one per
    image, plotly dicts in canvas coordinates), ``hover`` (``x``, ``y``, ``text`` at the image centres),
    and ``width`` / ``height``: the figure size (px) that shows each image ``GRID_TILE_PX`` wide.
    """
    images = np.asarray(images)
    count, h, w = len(images), images.shape[1], images.shape[2]
    k = max(1, min(int(n), count))
    idx = np.linspace(0, count - 1, k).astype(int)
    cols = min(GRID_COLUMNS, k)
    rows = -(-k // cols)
    scale = GRID_TILE_PX / max(h, w)  # screen px per image pixel
    cell_w = max(w + 2, int(np.ceil(GRID_CELL_PX / scale)))
    cap = int(np.ceil(GRID_CAPTION_PX / scale))
    gap = max(1, int(np.ceil(6 / scale)))
    cell_h = h + cap + gap
    tiles = image_strip(images[idx]).reshape(h, k, w, 3)
    canvas = np.full((rows * cell_h, cols * cell_w, 3), 255, dtype=np.uint8)
    annotations, hover = [], dict(x=[], y=[], text=[])
    for t in range(k):
        r, c = divmod(t, cols)
        y0, x0 = r * cell_h + gap, c * cell_w + (cell_w - w) // 2
        canvas[y0 : y0 + h, x0 : x0 + w] = tiles[:, t]
        pred, true = class_names[predictions[idx[t]]], class_names[y_test[idx[t]]]
        ok = pred == true
        annotations.append(
            dict(
                x=x0 + (w - 1) / 2,
                y=y0 + h - 0.5,
                yanchor="top",
                text=f"pred {pred}<br>true {true}",
                showarrow=False,
                align="center",
                font=dict(size=GRID_FONT_PX, color="#1b7f1b" if ok else "#c00000"),
            )
        )
        hover["x"].append(x0 + (w - 1) / 2)
        hover["y"].append(y0 + (h - 1) / 2)
        hover["text"].append(
            f"test image {idx[t] + 1}: predicted {pred}, true {true} " + ("(right)" if ok else "(wrong)")
        )
    m = GRID_MARGIN
    return dict(
        canvas=canvas,
        annotations=annotations,
        hover=hover,
        width=int(round(canvas.shape[1] * scale)) + m["l"] + m["r"],
        height=int(round(canvas.shape[0] * scale)) + m["t"] + m["b"],
        marker_px=int(GRID_TILE_PX),
    )


# -- the history plot ----------------------------------------------------------------------------
HISTORY_GROUP_FIELDS = (
    "kind", "readout", "lap_c", "padding", "flip", "preset", "fix_first", "fix_last", "pool",
    "dataset", "image_size", "ridge", "zca", "flip_augment", "patches", "patch_size",
)  # fmt: skip
#: what :func:`history_group` takes for a field that a history entry lacks (runs recorded before it existed)
_HISTORY_DEFAULTS = {
    "lap_c": None, "padding": "zero", "flip": False, "preset": "paper",
    "zca": None, "flip_augment": False, "patches": 0, "patch_size": 5,
}  # fmt: skip
HISTORY_WIDTH, HISTORY_PLOT_HEIGHT = 560, 280  # px; the plot area keeps these whatever the legend holds
HISTORY_LEGEND_ROW_PX = 22
HISTORY_FONT_PX = 13
HISTORY_MARGIN = dict(l=70, r=20, t=44)  # bottom margin: the x axis title, then one legend row per line
HISTORY_AXIS_PX = 56


def _field(h: dict, name: str):
    return h.get(name, _HISTORY_DEFAULTS.get(name))


def history_group(h: dict, other: str) -> tuple:
    """The settings a history line holds fixed: everything but its x axis (depth or training size)."""
    return tuple(_field(h, f) for f in HISTORY_GROUP_FIELDS) + (h[other],)


def history_label(h: dict, other: str) -> str:
    """Legend entry naming every setting of :func:`history_group`, e.g. ``CNTK-GAP fixed first, n_train=20,
    digits 8px, ridge 0``; the later networks and preprocessing where set, e.g. ``CNTK-LAP2 Myrtle-5
    circular +flip, ..., ridge 0, ZCA 0.1, flip-augmented, 32 patches 5x5``."""
    name = family_name(h["readout"], h["kind"], _field(h, "lap_c"))
    fixes = [w for w in ("first", "last") if h[f"fix_{w}"]]
    extra = (" fixed " + " & ".join(fixes) if fixes else "") + (" AvgPool" if h["pool"] else "")
    preset = _field(h, "preset")
    extra += (f" Myrtle-{preset.split('-')[1]}" if preset != "paper" else "") + (
        " circular" if _field(h, "padding") == "circular" else ""
    )
    extra += " +flip" if _field(h, "flip") else ""
    prep = "" if _field(h, "zca") is None else f", ZCA {_field(h, 'zca'):g}"
    prep += ", flip-augmented" if _field(h, "flip_augment") else ""
    prep += (
        f", {h['patches']} patches {_field(h, 'patch_size')}x{_field(h, 'patch_size')}" if _field(h, "patches") else ""
    )
    return f"{name}{extra}, {other}={h[other]}, {h['dataset']} {h['image_size']}px, ridge {h['ridge']:g}{prep}"


def history_lines(history: list[dict], key: str) -> list[dict]:
    """One line per group of runs that differ only in ``key`` (``"depth"`` or ``"n_train"``), sorted by
    ``key``: dicts ``name`` (legend text), ``x``, ``y`` (test accuracy in %, 0-100)."""
    other = {"depth": "n_train", "n_train": "depth"}[key]
    groups: dict[tuple, list[dict]] = {}
    for h in history:
        groups.setdefault(history_group(h, other), []).append(h)
    lines = []
    for rows in groups.values():
        rows = sorted(rows, key=lambda h: h[key])
        lines.append(
            dict(
                name=history_label(rows[0], other),
                x=[h[key] for h in rows],
                y=[100.0 * h["accuracy"] for h in rows],
            )
        )
    return lines


def history_layout(n_lines: int) -> dict:
    """Figure size, margins and legend for ``n_lines`` lines: the legend sits below the x axis, one
    row per line, and the figure grows by a row per line, so the plot area stays
    ``HISTORY_WIDTH - margins`` x ``HISTORY_PLOT_HEIGHT`` px however long the labels are."""
    legend_px = HISTORY_LEGEND_ROW_PX * n_lines + 8 if n_lines else 0
    bottom = HISTORY_AXIS_PX + legend_px
    return dict(
        width=HISTORY_WIDTH,
        height=HISTORY_MARGIN["t"] + HISTORY_PLOT_HEIGHT + bottom,
        margin=dict(**HISTORY_MARGIN, b=bottom, autoexpand=False),
        showlegend=n_lines > 0,
        # in paper coordinates: a legend placed by container coordinates makes plotly.js 4 put the y axis
        # title beside the legend (inside the plot); autoexpand=False keeps the legend from eating the plot
        legend=dict(
            orientation="v",
            x=-(HISTORY_MARGIN["l"] - 8) / (HISTORY_WIDTH - HISTORY_MARGIN["l"] - HISTORY_MARGIN["r"]),
            xanchor="left",
            y=-HISTORY_AXIS_PX / HISTORY_PLOT_HEIGHT,
            yanchor="top",
            font=dict(size=HISTORY_FONT_PX - 1),
            itemwidth=30,
        ),
    )
