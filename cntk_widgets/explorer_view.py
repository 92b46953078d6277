"""The kernel explorer view: heatmap of the normalised kernel, its eigenspectrum, and a panel that
shows the two images of a clicked heatmap cell at a readable size."""

from __future__ import annotations

import html

import ipywidgets as W
import numpy as np
import plotly.graph_objects as go

from ._display import error_html, png_bytes, resend_state_later, sync_figure_state
from .explorer_model import KernelExplorerModel
from .models import per_layer_note
from .picker import ArchitecturePicker

#: heatmap cells per side: above this many images the heatmap shows block means of consecutive
#: (class-sorted) images, so that building and sending the figure stays fast (n = 1000 took ~4 s
#: and a 13 MB figure at full resolution)
MAX_HEATMAP_CELLS = 400


def block_means(K: np.ndarray, size: int) -> np.ndarray:
    """Means of ``size x size`` blocks of consecutive rows and columns of ``K`` ``[n, n]`` (the last
    block may be smaller): float64 ``[ceil(n / size)] * 2``; ``K`` itself when ``size == 1``.

    Not :func:`cntk_core.recurrence.block_mean` (average pooling), which drops the entries that fill
    no whole block: a heatmap cell must stand for every image, so the last, ragged block is kept and
    averaged over its own size."""
    if size == 1:
        return K
    n = len(K)
    starts = np.arange(0, n, size)
    counts = np.diff(np.append(starts, n))
    sums = np.add.reduceat(np.add.reduceat(K, starts, axis=0), starts, axis=1)
    return sums / np.outer(counts, counts)


def image_strip(images: np.ndarray) -> np.ndarray:
    """``[n, H, W, C]`` images -> one uint8 RGB strip ``[H, n*W, 3]``, each image min-max scaled."""
    x = np.asarray(images, dtype=np.float64)
    lo = x.min(axis=(1, 2, 3), keepdims=True)
    hi = x.max(axis=(1, 2, 3), keepdims=True)
    x = (x - lo) / np.where(hi > lo, hi - lo, 1.0)
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    elif x.shape[-1] != 3:
        x = np.repeat(x.mean(axis=-1, keepdims=True), 3, axis=-1)
    n, h, w, _ = x.shape
    return (255 * x.transpose(1, 0, 2, 3).reshape(h, n * w, 3)).astype(np.uint8)


#: colour-scale choices: ``fixed`` keeps 0..1 for every kernel (depth and readout effects are visible
#: as colour changes); ``stretched`` spans each kernel's own off-diagonal range (its structure is visible)
COLOUR_SCALES = (("fixed 0–1", "fixed"), ("stretched", "stretched"))
#: the figure's fixed layout in pixels and paper fractions: heatmap, its colour bar, spectrum. Chosen so
#: that the colour bar's labels end well before the spectrum's axis title (checked by the browser test)
FIGURE_WIDTH, FIGURE_HEIGHT = 760, 470
HEATMAP_DOMAIN, COLORBAR_X, SPECTRUM_DOMAIN = (0.0, 0.47), 0.49, (0.69, 1.0)
#: side of the images in the pair panel, in screen pixels (at least)
PAIR_IMAGE_PX = 112


class KernelExplorer(W.VBox):
    """Heatmap of the normalised kernel, its log-scale spectrum, and the images of a selected pair.

    Parameters as :class:`KernelExplorerModel` (``prefetch_depth`` defaults to the picker's
    deepest depth: after the first picture, the other depths are computed in the background);
    ``picker`` (an :class:`ArchitecturePicker`) is created when not given and shown above the
    figures. Attributes: ``model``; ``heatmap`` the FigureWidget (trace 0 the heatmap, trace 1 the
    spectrum; ``spectrum_fig`` is the same object); ``colour`` the colour-scale toggle; ``pair``
    the selected-pair panel (``pair_images``, ``pair_caption``); ``progress``; ``error``;
    ``status``. Clicking a heatmap cell (or :meth:`select_pair`) shows its two images.
    """

    def __init__(
        self,
        images,
        labels,
        class_names=None,
        *,
        picker: ArchitecturePicker | None = None,
        show_picker: bool = True,
        backend: str | None = None,
        dtype: str = "float64",
        synchronous: bool = False,
        kernel_fn=None,
        disk_cache=None,
        prefetch_depth: int | None | bool = True,
        colour_scale: str = "fixed",
    ):
        self._own_picker = picker is None
        self.picker = picker or ArchitecturePicker()
        if prefetch_depth is True:
            prefetch_depth = self.picker.depth.max
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, description="kernel", bar_style="info")
        self.status = W.HTML()
        self.error = W.HTML()
        self.model = KernelExplorerModel(
            images,
            labels,
            class_names,
            architecture=self.picker.model,
            backend=backend,
            dtype=dtype,
            synchronous=synchronous,
            kernel_fn=kernel_fn,
            disk_cache=disk_cache,
            prefetch_depth=prefetch_depth or None,
            autostart=False,
        )
        self.colour = W.ToggleButtons(
            options=list(COLOUR_SCALES),
            value=colour_scale,
            description="colour scale",
            tooltips=["the same 0–1 scale for every kernel", "each kernel's own range (off-diagonal entries)"],
            style={"description_width": "initial", "button_width": "90px"},
        )
        self.colour.observe(lambda _c: self._draw(), names="value")
        m = self.model
        n = len(m.labels)
        #: images per heatmap cell (1 up to MAX_HEATMAP_CELLS images, then block means)
        self.cell = -(-n // MAX_HEATMAP_CELLS)
        self.heatmap = go.FigureWidget(self._figure())
        self.spectrum_fig = self.heatmap  # one FigureWidget (each one ships plotly.js to the page)
        self.heatmap.data[0].on_click(self._on_click)
        self.pair_images = (W.Image(format="png"), W.Image(format="png"))
        self.pair_caption = W.HTML()
        self.pair = W.VBox(
            [
                W.HTML("<b>selected pair</b><br><span style='color:#666;font-size:90%'>click a heatmap cell</span>"),
                W.HBox(list(self.pair_images)),
                self.pair_caption,
            ],
            layout=W.Layout(width=f"{2 * PAIR_IMAGE_PX + 40}px", margin="40px 0 0 8px"),
        )
        self.pair.add_class("cntk-pair")
        self._pair = self._first_pair()
        m.on_change(self._on_model)
        figures = W.HBox([self.heatmap, self.pair], layout=W.Layout(flex_flow="row wrap", align_items="flex-start"))
        super().__init__(
            ([self.picker] if show_picker else [])
            + [self.colour, W.HBox([self.progress, self.status]), self.error, figures]
        )
        self.add_class("cntk-explorer")
        self._show_pair()
        m.compute()

    def _figure(self) -> go.Figure:
        """The empty figure: heatmap (axes x/y) with its colour bar, spectrum (axes x2/y2)."""
        m, n = self.model, len(self.model.labels)
        starts = np.arange(0, n, self.cell)
        # cell coordinates in image indices: centres for single images, else the cells' edges
        coords = starts if self.cell == 1 else np.append(starts, n) - 0.5
        if self.cell == 1:
            names = [m.class_names[c] for c in m.labels]
            hover = np.array([[f"#{i} {names[i]}", f"#{j} {names[j]}"] for i in range(n) for j in range(n)])
            hover_kw = dict(
                customdata=hover.reshape(n, n, 2),
                hovertemplate="%{customdata[0]} vs %{customdata[1]}<br>K̂ = %{z:.4f}<extra></extra>",
            )
        else:
            hover_kw = dict(
                hovertemplate=f"images near #%{{y:.0f}} vs #%{{x:.0f}}<br>mean K̂ over a cell of up to "
                f"{self.cell}x{self.cell} images = %{{z:.4f}}<extra></extra>"
            )
        fig = go.Figure()
        fig.add_trace(
            go.Heatmap(
                z=np.zeros((len(starts), len(starts))),
                x=coords,
                y=coords,
                colorscale="Viridis",
                zmin=0.0,
                zmax=1.0,
                name="kernel",
                colorbar=dict(x=COLORBAR_X, xanchor="left", len=0.9, y=0.5, thickness=12, title=dict(text="K̂")),
                **hover_kw,
            )
        )
        fig.add_trace(
            go.Scatter(
                x=np.arange(1, n + 1), y=np.ones(n), mode="lines+markers", name="eigenvalues", xaxis="x2", yaxis="y2"
            )
        )
        firsts = [int(np.argmax(m.labels == c)) for c in np.unique(m.labels)]
        ticks = dict(tickvals=firsts, ticktext=[m.class_names[m.labels[s]] for s in firsts])
        fig.update_layout(
            width=FIGURE_WIDTH,
            height=FIGURE_HEIGHT,
            margin=dict(l=70, r=20, t=50, b=50),
            title=dict(text="kernel", x=0.02, xanchor="left"),
            showlegend=False,
            xaxis=dict(domain=HEATMAP_DOMAIN, title="image (class-sorted)", range=[-0.5, n - 0.5], **ticks),
            yaxis=dict(autorange="reversed", scaleanchor="x", constrain="domain", **ticks),
            xaxis2=dict(domain=SPECTRUM_DOMAIN, anchor="y2", title="eigenvalue number", rangemode="tozero"),
            yaxis2=dict(
                anchor="x2",
                type="log",
                title=dict(text="eigenvalue of K̂", standoff=4),
                dtick=1,  # one label per decade: no minor labels
                exponentformat="power",
            ),
        )
        return fig

    def wait(self, timeout: float | None = 120.0, *, background: bool = False):
        return self.model.wait(timeout, background=background)

    @property
    def matrix(self) -> np.ndarray:
        """The displayed normalised kernel matrix (what the heatmap shows): ``[n, n]``, or block means
        ``[ceil(n / cell)] * 2`` of ``cell`` consecutive images each when n > ``MAX_HEATMAP_CELLS``."""
        return np.asarray(self.heatmap.data[0].z, dtype=float)

    @property
    def eigenvalues(self) -> np.ndarray:
        return np.asarray(self.heatmap.data[1].y, dtype=float)

    @property
    def colour_range(self) -> tuple[float, float]:
        """``(zmin, zmax)`` of the heatmap's colour scale."""
        return float(self.heatmap.data[0].zmin), float(self.heatmap.data[0].zmax)

    # -- the selected pair --------------------------------------------------------------------
    def select_pair(self, i: int, j: int) -> None:
        """Show images ``i`` and ``j`` (class-sorted order, as on the heatmap's axes) and their K̂."""
        n = len(self.model.labels)
        self._pair = (int(np.clip(i, 0, n - 1)), int(np.clip(j, 0, n - 1)))
        self._show_pair()

    def _first_pair(self) -> tuple[int, int]:
        """The first image of the first class and the first image of the next class."""
        labels = self.model.labels
        other = np.flatnonzero(labels != labels[0])
        return 0, int(other[0]) if len(other) else min(1, len(labels) - 1)

    def _on_click(self, _trace, points, _selector) -> None:
        if points.xs and points.ys:
            self.select_pair(int(round(points.ys[0])), int(round(points.xs[0])))

    def _show_pair(self) -> None:
        m = self.model
        i, j = self._pair
        size = max(m.images.shape[1:3])
        scale = max(1, -(-PAIR_IMAGE_PX // size))
        for widget, k in zip(self.pair_images, (i, j), strict=True):
            widget.value = png_bytes(image_strip(m.images[k : k + 1]), scale)
        names = [m.class_names[m.labels[k]] for k in (i, j)]
        value = "" if m.result is None else f" · K̂ = {m.result.normalized[i, j]:.4f}"
        self.pair_caption.value = (
            f"<span class='cntk-pair-caption'>image #{i}, class <b>{html.escape(names[0])}</b><br>"
            f"image #{j}, class <b>{html.escape(names[1])}</b>{'<br>' + value[3:] if value else ''}</span>"
        )

    # -- model events -------------------------------------------------------------------------
    def _on_model(self, event: str, m: KernelExplorerModel) -> None:
        self._show_event(event, m)
        if event in ("result", "background-done", "error", "cancelled", "closed"):  # final states
            resend_state_later([self.status, self.progress, self.error, self.pair_caption, *self.pair_images])

    def _show_event(self, event: str, m: KernelExplorerModel) -> None:
        if event == "start" and m.background:
            self.progress.value, self.progress.bar_style = 0.0, ""
            self.status.value = self._background_text(0.0)
        elif event == "start":
            self.progress.value, self.progress.bar_style = 0.0, "info"
            slow = per_layer_note(m.spec, *m.images.shape[1:3])
            self.status.value = f"computing {html.escape(m.spec.title)} …" + (f" ({html.escape(slow)})" if slow else "")
        elif event == "partial":  # row blocks of the requested kernel: draw them as they arrive
            self.progress.value = m.progress
            part = m.partial
            if part is not None and part.spec == m.spec:
                self._draw_partial(part)
        elif event == "progress":
            self.progress.value = m.progress
            if m.background and m.pending is None:
                self.status.value = self._background_text(m.progress)
            elif m.background:
                self.status.value = self._waiting_text(m)
        elif event == "waiting":
            self.progress.bar_style = "info"
            self.status.value = self._waiting_text(m)
        elif event == "background-done":
            self.progress.value, self.progress.bar_style = 1.0, "success"
            if m.result is not None:
                self.status.value = self._result_text(m.result) + self._ready_text()
        elif event == "error":
            self.progress.bar_style = "danger"
            self.status.value = "error"
            self.error.value = error_html(m.error)
            self._mark_stale(f"{m.spec.title} failed")
        elif event == "cancelled":
            self.progress.value, self.progress.bar_style = m.progress, "warning"
            self.status.value = html.escape(m.cancelled or "cancelled")
            self._mark_stale(f"{m.spec.title} {m.cancelled or 'cancelled'}")
        elif event == "closed":
            self.progress.value, self.progress.bar_style = 0.0, "warning"
            self.status.value = "closed: create a new explorer to compute again"
            if self._own_picker:
                self.picker.disable()
        elif event == "result":
            r = m.result
            self.error.value = ""
            self.progress.value, self.progress.bar_style = 1.0, "success"
            self.status.value = self._result_text(r)
            self._draw()
            self._show_pair()

    def _result_text(self, r) -> str:
        how = {
            "computed": f"computed in {r.seconds:.2f} s",
            "background": "from the background pass",
            "memory": "cached",
            "disk": "from the disk cache",
        }[r.source]
        return f"{html.escape(r.spec.title)}: {len(r.raw)} images, {how}"

    def _ready_text(self) -> str:
        top = self.model.prefetch_depth
        return f" · depths up to {top} ready" if top else ""

    def _background_text(self, fraction: float) -> str:
        shown = self.model.result
        lead = self._result_text(shown) + " · " if shown is not None else ""
        return f"{lead}computing depths up to {self.model.prefetch_depth} in the background ({100 * fraction:.0f} %)"

    def _waiting_text(self, m: KernelExplorerModel) -> str:
        return (
            f"{html.escape(m.pending.title)}: coming from the background pass "
            f"({100 * m.progress:.0f} % of depths up to {m.prefetch_depth})"
        )

    def _draw(self) -> None:
        r = self.model.result
        if r is None:
            return
        z = block_means(r.normalized, self.cell)
        if self.colour.value == "fixed":
            lo, hi = 0.0, 1.0
        else:
            off = r.normalized[~np.eye(len(r.normalized), dtype=bool)]
            lo, hi = (float(off.min()), float(off.max())) if off.size else (0.0, 1.0)
            if hi <= lo:
                lo, hi = lo - 1e-3, hi + 1e-3
        ev = np.clip(r.eigenvalues, 1e-12, None)
        with self.heatmap.batch_update():
            self.heatmap.data[0].z = z
            self.heatmap.data[0].zmin, self.heatmap.data[0].zmax = lo, hi
            self.heatmap.data[1].x = np.arange(1, len(ev) + 1)
            self.heatmap.data[1].y = ev
            self.heatmap.layout.title.text = f"normalised kernel K̂ and its spectrum, {r.spec.title}"
        sync_figure_state(self.heatmap)

    def _draw_partial(self, part) -> None:
        """The part of the requested kernel computed so far (blank cells where it is not yet), on the
        fixed 0–1 scale, titled as unfinished; the spectrum waits for the whole matrix."""
        with self.heatmap.batch_update():
            z = block_means(part.normalized, self.cell)
            # not-yet-computed cells as None (JSON null: blank cells); NaN is not valid JSON and
            # jupyter_client would warn on stderr for every message
            self.heatmap.data[0].z = np.where(np.isnan(z), None, z).tolist()
            self.heatmap.data[0].zmin, self.heatmap.data[0].zmax = 0.0, 1.0
            self.heatmap.layout.title.text = f"{part.spec.title}: computing ({100 * part.fraction:.0f} %) …"

    def _mark_stale(self, reason: str) -> None:
        """Retitle the figure so that an old kernel is never taken for the picker's current choice."""
        shown = self.model.result
        text = f"⚠ {reason}; " + (f"still showing {shown.spec.title}" if shown is not None else "nothing computed yet")
        self.heatmap.layout.title.text = text
        sync_figure_state(self.heatmap)
