"""Thin ipywidgets + plotly views over the models of :mod:`cntk_widgets.models`.

Each view is an ``ipywidgets.VBox`` (display it directly) holding a ``.model``. Figures are plotly
``go.FigureWidget`` (rendered by anywidget, offline). Model events may arrive from the worker
thread; ipywidgets syncs trait changes from any thread.
"""

from __future__ import annotations

import html
import math
from copy import deepcopy

import ipywidgets as W
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .models import MAX_DEPTH, ArchitectureModel, KernelExplorerModel, NetworkSpec, setting_int
from .regression_model import LabSettings, RegressionLabModel, available_datasets, default_downsample

_ERROR_STYLE = "color:#b00020;background:#fdecea;padding:4px 8px;border-radius:4px;font-family:monospace"
_NOTE_STYLE = "color:#7a4f00;background:#fff4e0;padding:4px 8px;border-radius:4px;font-family:monospace"
#: heatmap cells per side: above this many images the heatmap shows block means of consecutive
#: (class-sorted) images, so that building and sending the figure stays fast (n = 1000 took ~4 s
#: and a 13 MB figure at full resolution)
MAX_HEATMAP_CELLS = 400


def sync_figure_state(fig: go.FigureWidget) -> None:
    """Copy a FigureWidget's current data/layout into its synced widget state.

    plotly sends updates (restyle/relayout) as one-shot messages, and a front end that renders the
    widget later (Voila runs the whole notebook before the page connects; a reloaded Lab page)
    would show the figure as it was built. Keeping ``_widget_data`` / ``_widget_layout`` current
    (what plotly itself does in ``_repr_mimebundle_``) makes late views show the latest figure.
    """
    fig._widget_layout = deepcopy(fig._layout_obj._props)
    fig._widget_data = deepcopy(fig._data)


def error_html(message: str | BaseException | None) -> str:
    """An error box for ``message``, or for an exception as ``"TypeName: message"``; ``""`` for none."""
    if isinstance(message, BaseException):
        message = f"{type(message).__name__}: {message}"
    return "" if not message else f'<div class="cntk-error" style="{_ERROR_STYLE}">⚠ {html.escape(message)}</div>'


def note_html(message: str | None) -> str:
    """A warning-coloured note (not an error): cancelled runs, skipped sweep depths, adjusted settings."""
    return "" if not message else f'<div class="cntk-note" style="{_NOTE_STYLE}">{html.escape(message)}</div>'


def _set_int_slider(slider: W.IntSlider, value: int, limit: int) -> None:
    """Set ``value`` and ``max`` = max(``limit``, ``value``) in the order that never clamps the value."""
    hi = max(limit, value)
    if value > slider.max:
        slider.max = hi
        slider.value = value
    else:
        slider.value = value
        slider.max = hi


class ArchitecturePicker(W.VBox):
    """Depth slider, readout, fix first/last, kind and pooling controls, and the layer list.

    ``picker.model`` is the :class:`ArchitectureModel`; ``picker.spec`` the current spec and
    ``picker.network`` the :class:`cntk_core.Network`. ``observe_spec(callback)`` forwards to the
    model. Invalid combinations show in ``picker.error`` (an HTML box) and leave the model as is.
    """

    def __init__(self, model: ArchitectureModel | None = None, *, max_depth: int = MAX_DEPTH):
        max_depth = setting_int(max_depth, "max_depth", 2, f" (and <= {MAX_DEPTH})")
        if max_depth > MAX_DEPTH:
            raise ValueError(f"max_depth must be an integer between 2 and {MAX_DEPTH}, got {max_depth}")
        self.model = model or ArchitectureModel()
        s = self.model.spec
        max_depth = max(max_depth, s.depth)  # never clamp the model's depth: widen the slider instead
        self.depth = W.IntSlider(value=s.depth, min=2, max=max_depth, description="depth", continuous_update=False)
        self.readout = W.ToggleButtons(options=[("GAP", "gap"), ("vanilla", "vanilla")], value=s.readout)
        self.kind = W.ToggleButtons(options=[("NTK", "ntk"), ("NNGP", "nngp")], value=s.kind)
        self.fix_first = W.Checkbox(value=s.fix_first, description="fix first layer", indent=False)
        self.fix_last = W.Checkbox(value=s.fix_last, description="fix last layer", indent=False)
        self.pool = W.Checkbox(value=s.pool, description="AvgPool(2) after block 1", indent=False)
        self.text = W.HTML()
        self.error = W.HTML()
        self._controls = {
            "depth": self.depth,
            "readout": self.readout,
            "kind": self.kind,
            "fix_first": self.fix_first,
            "fix_last": self.fix_last,
            "pool": self.pool,
        }
        self._syncing = False
        for name, widget in self._controls.items():
            widget.observe(lambda change, name=name: self._from_widget(name, change["new"]), names="value")
        self.model.observe(self._from_model)
        self._show(s)
        super().__init__(
            [
                self.depth,
                W.HBox([self.readout, self.kind]),
                W.HBox([self.fix_first, self.fix_last, self.pool]),
                self.text,
                self.error,
            ]
        )
        self.add_class("cntk-picker")

    @property
    def spec(self) -> NetworkSpec:
        return self.model.spec

    @property
    def network(self):
        return self.model.network()

    def observe_spec(self, callback) -> None:
        self.model.observe(callback)

    def _from_widget(self, name: str, value) -> None:
        if self._syncing:
            return
        try:
            self.model.set(**{name: value})
            self.error.value = ""
        except (TypeError, ValueError) as exc:
            self.error.value = error_html(exc)

    def _from_model(self, spec: NetworkSpec) -> None:
        self._syncing = True
        try:
            if spec.depth > self.depth.max:
                self.depth.max = spec.depth
            for name, widget in self._controls.items():
                if widget.value != getattr(spec, name):
                    widget.value = getattr(spec, name)
        finally:
            self._syncing = False
        self._show(spec)

    def disable(self) -> None:
        """Grey out the controls (after the model they drive was closed)."""
        for widget in self._controls.values():
            widget.disabled = True

    def _show(self, spec: NetworkSpec) -> None:
        self.text.value = f"<pre style='margin:0;line-height:1.2'>{html.escape(spec.describe())}</pre>"


def block_means(K: np.ndarray, size: int) -> np.ndarray:
    """Means of ``size x size`` blocks of consecutive rows and columns of ``K`` ``[n, n]`` (the last
    block may be smaller): float64 ``[ceil(n / size)] * 2``; ``K`` itself when ``size == 1``."""
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


class KernelExplorer(W.VBox):
    """Heatmap of the normalised kernel (with a thumbnail strip on top) and its log-scale spectrum.

    Parameters as :class:`KernelExplorerModel`; ``picker`` (an :class:`ArchitecturePicker`) is
    created when not given and shown above the figures. ``explorer.model`` is the model,
    ``explorer.heatmap`` the FigureWidget (trace 0 heatmap, 1 thumbnails, 2 spectrum), ``explorer.progress`` the
    bar, ``explorer.error`` the error box, ``explorer.status`` a one-line status.
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
        size: int = 440,
    ):
        self._own_picker = picker is None
        self.picker = picker or ArchitecturePicker()
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
            autostart=False,
        )
        m = self.model
        n = len(m.labels)
        #: images per heatmap cell (1 up to MAX_HEATMAP_CELLS images, then block means)
        self.cell = -(-n // MAX_HEATMAP_CELLS)
        starts = np.arange(0, n, self.cell)
        # cell coordinates in image indices: centres for single images, else the cells' edges (the
        # last cell may hold fewer images)
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
        strip = image_strip(m.images[starts])  # one thumbnail per cell
        h, w = m.images.shape[1:3]
        fig = make_subplots(
            rows=2,
            cols=2,
            specs=[[{}, {"rowspan": 2}], [{}, None]],
            row_heights=[0.07, 0.93],
            column_widths=[0.6, 0.4],
            vertical_spacing=0.01,
            horizontal_spacing=0.2,
        )
        # trace 0: the heatmap (row 2, col 1: axes x3/y3); trace 1: thumbnails; trace 2: spectrum
        fig.add_trace(
            go.Heatmap(
                z=np.zeros((len(starts), len(starts))),
                x=coords,
                y=coords,
                colorscale="Viridis",
                name="kernel",
                **hover_kw,
                colorbar=dict(x=0.545, len=0.9, y=0.45, thickness=12),
            ),
            row=2,
            col=1,
        )
        fig.add_trace(
            go.Image(
                z=strip,
                x0=-0.5 + 0.5 * self.cell / w,
                dx=self.cell / w,
                y0=0,
                dy=1.0 / h,
                hoverinfo="skip",
                name="images",
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(x=np.arange(1, n + 1), y=np.ones(n), mode="lines+markers", name="eigenvalues"), row=1, col=2
        )
        starts = [int(np.argmax(m.labels == c)) for c in np.unique(m.labels)]
        ticks = dict(tickvals=starts, ticktext=[m.class_names[m.labels[s]] for s in starts])
        fig.update_xaxes(matches="x3", visible=False, row=1, col=1)
        fig.update_yaxes(visible=False, row=1, col=1)
        # the fixed range clips the last thumbnail where the last cell holds fewer images
        fig.update_xaxes(title_text="image (class-sorted)", range=[-0.5, n - 0.5], row=2, col=1, **ticks)
        fig.update_yaxes(autorange="reversed", row=2, col=1, **ticks)
        fig.update_yaxes(type="log", title_text="eigenvalue of normalised K", row=1, col=2)
        fig.update_xaxes(title_text="index", row=1, col=2)
        fig.update_layout(
            width=size + 380, height=size + 60, margin=dict(l=60, r=10, t=50, b=40), title="kernel", showlegend=False
        )
        self.heatmap = go.FigureWidget(fig)
        self.spectrum_fig = self.heatmap  # one FigureWidget (each one ships plotly.js to the page)
        m.on_change(self._on_model)
        super().__init__(
            ([self.picker] if show_picker else []) + [W.HBox([self.progress, self.status]), self.error, self.heatmap]
        )
        self.add_class("cntk-explorer")
        m.compute()

    def wait(self, timeout: float | None = 120.0):
        return self.model.wait(timeout)

    @property
    def matrix(self) -> np.ndarray:
        """The displayed normalised kernel matrix (what the heatmap shows): ``[n, n]``, or block means
        ``[ceil(n / cell)] * 2`` of ``cell`` consecutive images each when n > ``MAX_HEATMAP_CELLS``."""
        return np.asarray(self.heatmap.data[0].z, dtype=float)

    @property
    def eigenvalues(self) -> np.ndarray:
        return np.asarray(self.heatmap.data[2].y, dtype=float)

    def _on_model(self, event: str, m: KernelExplorerModel) -> None:
        if event == "start":
            self.progress.value, self.progress.bar_style = 0.0, "info"
            self.status.value = f"computing {html.escape(m.spec.title)} …"
        elif event == "progress":
            self.progress.value = m.progress
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
            how = "cached" if r.cached else f"{r.seconds:.2f} s"
            self.status.value = f"{html.escape(r.spec.title)}: {len(r.raw)} images, {how}"
            ev = np.clip(r.eigenvalues, 1e-12, None)
            with self.heatmap.batch_update():
                self.heatmap.data[0].z = block_means(r.normalized, self.cell)
                self.heatmap.data[2].x = np.arange(1, len(ev) + 1)
                self.heatmap.data[2].y = ev
                self.heatmap.layout.title.text = f"normalised kernel and spectrum, {r.spec.title}"
            sync_figure_state(self.heatmap)

    def _mark_stale(self, reason: str) -> None:
        """Retitle the figure so that an old kernel is never taken for the picker's current choice."""
        shown = self.model.result
        text = f"⚠ {reason}; " + (f"still showing {shown.spec.title}" if shown is not None else "nothing computed yet")
        self.heatmap.layout.title.text = text
        sync_figure_state(self.heatmap)


class RegressionLab(W.VBox):
    """Kernel regression controls and results: accuracy, confusion matrix, test image grid with
    predicted/true labels, and a history plot (accuracy against depth or training size).

    ``lab.model`` is the :class:`RegressionLabModel`; the controls follow its settings both ways
    (``lab.model.set(...)`` updates them). Slider ranges come from the data set (the smallest class
    of each split); the downsample menu lists the image size each factor gives, and each data set
    keeps its own factor. Buttons: run, sweep depth (``sweep_depths``; depths the architecture does
    not allow are skipped with a note), sweep training size (``sweep_sizes``), stop.
    """

    def __init__(
        self,
        *,
        picker: ArchitecturePicker | None = None,
        show_picker: bool = True,
        backend: str | None = None,
        synchronous: bool = False,
        sweep_depths=(2, 3, 4, 6, 8),
        sweep_sizes=(2, 5, 10, 20),
        n_grid: int = 20,
        **settings,
    ):
        self.sweep_depths, self.sweep_sizes = _check_sweep_depths(sweep_depths), _check_sweep_sizes(sweep_sizes)
        self.n_grid = setting_int(n_grid, "n_grid", 1, " (test images shown)")
        self.picker = picker or ArchitecturePicker()
        self.model = RegressionLabModel(
            architecture=self.picker.model, backend=backend, synchronous=synchronous, **settings
        )
        s = self.model.settings
        self.model.check_downsample(s)  # loads the data set: a missing one raises its FileNotFoundError here
        self._downsample_for = {s.dataset: s.downsample}  # each data set keeps its own factor
        self._syncing = False
        self.dataset = W.Dropdown(options=available_datasets(), description="data")  # _show_settings adds s.dataset
        self.n_per_class = W.IntSlider(value=1, min=1, max=1, description="train/class")
        self.n_test = W.IntSlider(value=1, min=1, max=1, description="test/class")
        self.downsample = W.Dropdown(description="downsample")
        self.ridge = W.FloatLogSlider(value=1e-6, base=10, min=-8, max=0, description="ridge")
        self.use_ridge = W.Checkbox(value=False, description="ridge on", indent=False)
        self.run_button = W.Button(description="run", button_style="primary")
        self.sweep_depth_button = W.Button(description="sweep depth")
        self.sweep_size_button = W.Button(description="sweep train size")
        self.stop_button = W.Button(description="stop", tooltip="stop the running run or sweep")
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, description="run")
        self.accuracy = W.HTML()
        self.error = W.HTML()
        self._accuracy_text = ""
        self._show_settings(s)
        self.confusion_fig = go.FigureWidget(
            go.Figure(
                go.Heatmap(
                    z=np.zeros((1, 1)), colorscale="Blues", hovertemplate="true %{y}, pred %{x}: %{z}<extra></extra>"
                ),
                layout=dict(
                    width=400,
                    height=380,
                    title="confusion matrix",
                    xaxis=dict(title="predicted"),
                    yaxis=dict(title="true", autorange="reversed"),
                    margin=dict(l=60, r=10, t=40, b=40),
                ),
            )
        )
        self.grid_fig = go.FigureWidget(
            go.Figure(
                go.Image(z=np.zeros((1, 1, 3), dtype=np.uint8)),
                layout=dict(
                    width=420, height=380, title="test images: pred / true", margin=dict(l=10, r=10, t=40, b=10)
                ),
            )
        )
        self.grid_fig.update_xaxes(visible=False)
        self.grid_fig.update_yaxes(visible=False)
        self.history_fig = go.FigureWidget(
            go.Figure(
                layout=dict(
                    width=520,
                    height=320,
                    title="history",
                    yaxis=dict(title="test accuracy", range=[0, 1]),
                    margin=dict(l=60, r=10, t=40, b=40),
                    legend=dict(font=dict(size=9)),
                )
            )
        )
        self.history_x = W.ToggleButtons(options=[("vs depth", "depth"), ("vs train size", "n_train")], value="depth")
        self.dataset.observe(lambda c: self._dataset_from_widget(c["new"]), names="value")
        self.n_per_class.observe(lambda c: self._from_widget(n_per_class=c["new"]), names="value")
        self.n_test.observe(lambda c: self._from_widget(n_test_per_class=c["new"]), names="value")
        self.downsample.observe(lambda c: self._from_widget(downsample=c["new"]), names="value")
        self.ridge.observe(lambda c: self.use_ridge.value and self._from_widget(ridge=c["new"]), names="value")
        self.use_ridge.observe(lambda c: self._from_widget(ridge=self.ridge.value if c["new"] else 0.0), names="value")
        self.history_x.observe(lambda _c: self._draw_history(), names="value")
        self.run_button.on_click(lambda _b: self._submit(self.model.run))
        self.sweep_depth_button.on_click(
            lambda _b: self._submit(lambda: self.model.sweep(depths=self.sweep_depths, skip_invalid=True))
        )
        self.sweep_size_button.on_click(lambda _b: self._submit(lambda: self.model.sweep(n_per_class=self.sweep_sizes)))
        self.stop_button.on_click(lambda _b: self.model.cancel())
        self.model.on_change(self._on_model)
        super().__init__(
            ([self.picker] if show_picker else [])
            + [
                W.HBox([self.dataset, self.n_per_class, self.n_test]),
                W.HBox([self.downsample, self.use_ridge, self.ridge]),
                W.HBox(
                    [
                        self.run_button,
                        self.sweep_depth_button,
                        self.sweep_size_button,
                        self.stop_button,
                        self.progress,
                    ]
                ),
                self.accuracy,
                self.error,
                W.HBox([self.confusion_fig, self.grid_fig]),
                self.history_x,
                self.history_fig,
            ]
        )
        self.add_class("cntk-regression")

    def run(self):
        return self.model.run()

    def wait(self, timeout: float | None = 300.0):
        return self.model.wait(timeout)

    # -- controls <-> settings ----------------------------------------------------------------
    def _submit(self, start) -> None:
        """A button's action: a refused start (bad plan, closed model) shows in the error box."""
        try:
            start()
        except (TypeError, ValueError, RuntimeError) as exc:
            self.progress.bar_style = "danger"
            self.error.value = error_html(exc)

    def _from_widget(self, **fields) -> None:
        """Write only the changed field(s); a refused value shows in the error box and the controls
        go back to the model's settings."""
        if self._syncing:
            return
        try:
            self.model.set(**fields)
            self.error.value = ""
        except (TypeError, ValueError) as exc:
            self.error.value = error_html(exc)
            self._show_settings(self.model.settings)

    def _dataset_from_widget(self, name: str) -> None:
        """Switch data set: restore its own downsample factor, keep the sizes within its splits (with a note)."""
        if self._syncing:
            return
        s = self.model.settings
        try:
            lim = self.model.limits(name)
        except (OSError, ValueError) as exc:
            self.error.value = error_html(exc)
            self._show_settings(s)
            return
        self._downsample_for[s.dataset] = s.downsample
        fields = dict(
            dataset=name, downsample=self._downsample_for.get(name) or default_downsample(lim["height"], lim["width"])
        )
        notes = []
        for field, split in (("n_per_class", "training"), ("n_test_per_class", "test")):
            if getattr(s, field) > lim[field]:
                fields[field] = lim[field]
                notes.append(
                    f"{field} lowered from {getattr(s, field)} to {lim[field]} "
                    f"(smallest class of the {name} {split} split)"
                )
        self._from_widget(**fields)
        if notes and self.model.settings.dataset == name:
            self.error.value = note_html("; ".join(notes))

    def _show_settings(self, s: LabSettings) -> None:
        """Model -> controls: values, per-data-set ranges (widened, never clamping), downsample menu."""
        try:
            lim = self.model.limits(s.dataset)
        except (OSError, ValueError) as exc:  # e.g. model.set(dataset=...) whose files are missing
            self.error.value = error_html(exc)
            lim = None
        self._syncing = True
        try:
            if s.dataset not in self.dataset.options:
                self.dataset.options = tuple(self.dataset.options) + (s.dataset,)
            self.dataset.value = s.dataset
            n_max, test_max = (
                (lim["n_per_class"], lim["n_test_per_class"]) if lim else (self.n_per_class.max, self.n_test.max)
            )
            _set_int_slider(self.n_per_class, s.n_per_class, n_max)
            _set_int_slider(self.n_test, s.n_test_per_class, test_max)
            if lim is None:
                options = [(str(s.downsample), s.downsample)]
            else:
                h, w, top = lim["height"], lim["width"], lim["max_downsample"]
                options = [
                    (f"{f}: {h // f}x{w // f} px" + (" (too small)" if f > top else ""), f)
                    for f in sorted(set(range(1, top + 1)) | {s.downsample})
                ]
            if list(self.downsample.options) != options:
                self.downsample.options = options
            self.downsample.value = s.downsample
            if s.ridge > 0:
                e = math.log10(s.ridge)
                self.ridge.min, self.ridge.max = min(-8, math.floor(e)), max(0, math.ceil(e))
                self.ridge.value = s.ridge
            self.use_ridge.value = s.ridge > 0
        finally:
            self._syncing = False

    # -- model events -------------------------------------------------------------------------
    def _on_model(self, event: str, m: RegressionLabModel) -> None:
        if event == "start":
            self.progress.value, self.progress.bar_style = 0.0, "info"
            self.error.value = note_html(m.notice)
        elif event == "progress":
            self.progress.value = m.progress
        elif event == "error":
            self.progress.bar_style = "danger"
            self.error.value = error_html(m.error)
            self._mark_stale("the last run failed")
        elif event == "cancelled":
            self.progress.value, self.progress.bar_style = m.progress, "warning"
            self.error.value = note_html(f"{m.cancelled}: finished runs stay in the history")
            self._mark_stale(m.cancelled or "cancelled")
        elif event == "closed":
            self.progress.value, self.progress.bar_style = 0.0, "warning"
            self.error.value = note_html("closed: create a new lab to run again")
            for w in (self.run_button, self.sweep_depth_button, self.sweep_size_button, self.stop_button):
                w.disabled = True
        elif event == "settings":
            self._show_settings(m.settings)
        elif event == "history":
            self._draw_history()
        elif event == "result":
            # within a sweep each finished run is shown, but the bar only turns green at the end
            self.progress.value = m.progress
            self.progress.bar_style = "success" if m.progress >= 1.0 else "info"
            self._draw_result(m.result)

    def _mark_stale(self, reason: str) -> None:
        if self._accuracy_text:
            self.accuracy.value = (
                f"<span style='color:#b00020'>⚠ {html.escape(reason)}; the figures show the previous run:</span> "
                + self._accuracy_text
            )

    def _draw_result(self, r) -> None:
        names = list(r.class_names)
        h, w = r.test_images.shape[1:3]
        self._accuracy_text = self.accuracy.value = (
            f"<b>{html.escape(r.spec.title)}</b>, {r.settings.dataset} {h}x{w} px"
            f"{f' (downsample {r.settings.downsample})' if r.settings.downsample > 1 else ''}, "
            f"{r.n_train} training images, ridge {r.settings.ridge:g}: test accuracy <b>{100 * r.accuracy:.1f} %</b> "
            f"({len(r.y_test)} test images, {r.seconds:.1f} s)"
        )
        with self.confusion_fig.batch_update():
            self.confusion_fig.data[0].z = r.confusion
            self.confusion_fig.data[0].x = names
            self.confusion_fig.data[0].y = names
            self.confusion_fig.layout.title.text = f"confusion matrix ({100 * r.accuracy:.1f} %)"
        sync_figure_state(self.confusion_fig)
        k = min(self.n_grid, len(r.y_test))
        idx = np.linspace(0, len(r.y_test) - 1, k).astype(int)
        cols = 5
        rows = -(-k // cols)
        imgs = np.zeros((rows * cols,) + r.test_images.shape[1:])
        imgs[:k] = r.test_images[idx]
        tiles = image_strip(imgs).reshape(h, rows * cols, w, 3)
        pad = max(2, h // 4)
        canvas = np.full((rows * (h + 2 * pad), cols * (w + 2), 3), 255, dtype=np.uint8)
        annotations = []
        for t in range(k):
            rr, cc = divmod(t, cols)
            y0, x0 = rr * (h + 2 * pad) + 2 * pad, cc * (w + 2) + 1
            canvas[y0 : y0 + h, x0 : x0 + w] = tiles[:, t]
            ok = r.predictions[idx[t]] == r.y_test[idx[t]]
            annotations.append(
                dict(
                    x=x0 + w / 2,
                    y=y0 - pad,
                    text=f"{names[r.predictions[idx[t]]]}/{names[r.y_test[idx[t]]]}",
                    showarrow=False,
                    font=dict(size=10, color="green" if ok else "red"),
                )
            )
        with self.grid_fig.batch_update():
            self.grid_fig.data[0].z = canvas
            self.grid_fig.layout.annotations = annotations
        sync_figure_state(self.grid_fig)

    def _draw_history(self) -> None:
        key = self.history_x.value
        other = {"depth": "n_train", "n_train": "depth"}[key]
        groups: dict[tuple, list[dict]] = {}
        for h in self.model.history:
            groups.setdefault(history_group(h, other), []).append(h)
        traces = []
        for rows in groups.values():
            rows = sorted(rows, key=lambda h: h[key])
            traces.append(
                go.Scatter(
                    x=[h[key] for h in rows],
                    y=[h["accuracy"] for h in rows],
                    mode="lines+markers",
                    name=history_label(rows[0], other),
                )
            )
        self.history_fig.data = []
        if traces:
            self.history_fig.add_traces(traces)
        self.history_fig.layout.xaxis.title.text = "depth" if key == "depth" else "training images"
        sync_figure_state(self.history_fig)


HISTORY_GROUP_FIELDS = ("kind", "readout", "fix_first", "fix_last", "pool", "dataset", "image_size", "ridge")


def history_group(h: dict, other: str) -> tuple:
    """The settings a history line holds fixed: everything but its x axis (depth or training size)."""
    return tuple(h[f] for f in HISTORY_GROUP_FIELDS) + (h[other],)


def history_label(h: dict, other: str) -> str:
    """Legend entry naming every setting of :func:`history_group`, e.g. ``CNTK-GAP fixed first, n_train=20,
    digits 8px, ridge 0``."""
    name = ("CNTK" if h["kind"] == "ntk" else "CNN-GP") + ("-GAP" if h["readout"] == "gap" else "-V")
    fixes = [w for w in ("first", "last") if h[f"fix_{w}"]]
    extra = (" fixed " + " & ".join(fixes) if fixes else "") + (" AvgPool" if h["pool"] else "")
    return f"{name}{extra}, {other}={h[other]}, {h['dataset']} {h['image_size']}px, ridge {h['ridge']:g}"


def _check_sweep_depths(depths) -> tuple[int, ...]:
    """``sweep_depths`` as a non-empty tuple of depths allowed by :class:`NetworkSpec`, or ``ValueError``."""
    depths = tuple(depths)
    if not depths:
        raise ValueError("sweep_depths must not be empty")
    try:
        return tuple(NetworkSpec(depth=d).depth for d in depths)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"sweep_depths: {exc}") from None


def _check_sweep_sizes(sizes) -> tuple[int, ...]:
    """``sweep_sizes`` (training images per class) as a non-empty tuple of positive integers, or ``ValueError``."""
    sizes = tuple(sizes)
    if not sizes:
        raise ValueError("sweep_sizes must not be empty")
    return tuple(setting_int(n, f"sweep_sizes[{i}]", 1, " (training images per class)") for i, n in enumerate(sizes))
