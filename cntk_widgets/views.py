"""Thin ipywidgets + plotly views over the models of :mod:`cntk_widgets.models`.

Each view is an ``ipywidgets.VBox`` (display it directly) holding a ``.model``. Figures are plotly
``go.FigureWidget`` (rendered by anywidget, offline). Model events may arrive from the worker
thread; ipywidgets syncs trait changes from any thread.
"""

from __future__ import annotations

import html
from copy import deepcopy

import ipywidgets as W
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .models import MAX_DEPTH, ArchitectureModel, KernelExplorerModel, NetworkSpec
from .regression_model import RegressionLabModel, available_datasets

_ERROR_STYLE = "color:#b00020;background:#fdecea;padding:4px 8px;border-radius:4px;font-family:monospace"


def sync_figure_state(fig: go.FigureWidget) -> None:
    """Copy a FigureWidget's current data/layout into its synced widget state.

    plotly sends updates (restyle/relayout) as one-shot messages, and a front end that renders the
    widget later (Voila runs the whole notebook before the page connects; a reloaded Lab page)
    would show the figure as it was built. Keeping ``_widget_data`` / ``_widget_layout`` current
    (what plotly itself does in ``_repr_mimebundle_``) makes late views show the latest figure.
    """
    fig._widget_layout = deepcopy(fig._layout_obj._props)
    fig._widget_data = deepcopy(fig._data)


def error_html(message: str | None) -> str:
    return "" if not message else f'<div class="cntk-error" style="{_ERROR_STYLE}">⚠ {html.escape(message)}</div>'


class ArchitecturePicker(W.VBox):
    """Depth slider, readout, fix first/last, kind and pooling controls, and the layer list.

    ``picker.model`` is the :class:`ArchitectureModel`; ``picker.spec`` the current spec and
    ``picker.network`` the :class:`cntk_core.Network`. ``observe_spec(callback)`` forwards to the
    model. Invalid combinations show in ``picker.error`` (an HTML box) and leave the model as is.
    """

    def __init__(self, model: ArchitectureModel | None = None, *, max_depth: int = MAX_DEPTH):
        self.model = model or ArchitectureModel()
        s = self.model.spec
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
            self.error.value = error_html(f"{type(exc).__name__}: {exc}")

    def _from_model(self, spec: NetworkSpec) -> None:
        self._syncing = True
        try:
            for name, widget in self._controls.items():
                if widget.value != getattr(spec, name):
                    widget.value = getattr(spec, name)
        finally:
            self._syncing = False
        self._show(spec)

    def _show(self, spec: NetworkSpec) -> None:
        self.text.value = f"<pre style='margin:0;line-height:1.2'>{html.escape(spec.describe())}</pre>"


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
        names = [m.class_names[c] for c in m.labels]
        hover = np.array([[f"#{i} {names[i]}", f"#{j} {names[j]}"] for i in range(n) for j in range(n)])
        strip = image_strip(m.images)
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
                z=np.zeros((n, n)),
                x=np.arange(n),
                y=np.arange(n),
                colorscale="Viridis",
                customdata=hover.reshape(n, n, 2),
                hovertemplate="%{customdata[0]} vs %{customdata[1]}<br>K̂ = %{z:.4f}<extra></extra>",
                name="kernel",
                colorbar=dict(x=0.545, len=0.9, y=0.45, thickness=12),
            ),
            row=2,
            col=1,
        )
        fig.add_trace(
            go.Image(z=strip, x0=-0.5 + 0.5 / w, dx=1.0 / w, y0=0, dy=1.0 / h, hoverinfo="skip", name="images"),
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
        fig.update_xaxes(title_text="image (class-sorted)", row=2, col=1, **ticks)
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
        """The displayed normalised kernel matrix ``[n, n]`` (what the heatmap shows)."""
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
        elif event == "result":
            r = m.result
            self.error.value = ""
            self.progress.value, self.progress.bar_style = 1.0, "success"
            how = "cached" if r.cached else f"{r.seconds:.2f} s"
            self.status.value = f"{html.escape(r.spec.title)}: {len(r.raw)} images, {how}"
            ev = np.clip(r.eigenvalues, 1e-12, None)
            with self.heatmap.batch_update():
                self.heatmap.data[0].z = r.normalized
                self.heatmap.data[2].x = np.arange(1, len(ev) + 1)
                self.heatmap.data[2].y = ev
                self.heatmap.layout.title.text = f"normalised kernel and spectrum, {r.spec.title}"
            sync_figure_state(self.heatmap)


class RegressionLab(W.VBox):
    """Kernel regression controls and results: accuracy, confusion matrix, test image grid with
    predicted/true labels, and a history plot (accuracy against depth or training size).

    ``lab.model`` is the :class:`RegressionLabModel`. Buttons: run, sweep depth (2..``max_sweep``
    in steps shown in ``sweep_depths``), sweep training size.
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
        self.picker = picker or ArchitecturePicker()
        self.model = RegressionLabModel(
            architecture=self.picker.model, backend=backend, synchronous=synchronous, **settings
        )
        s = self.model.settings
        self.sweep_depths, self.sweep_sizes, self.n_grid = tuple(sweep_depths), tuple(sweep_sizes), n_grid
        self.dataset = W.Dropdown(options=available_datasets(), value=s.dataset, description="data")
        self.n_per_class = W.IntSlider(value=s.n_per_class, min=1, max=100, description="train/class")
        self.n_test = W.IntSlider(value=s.n_test_per_class, min=1, max=50, description="test/class")
        self.ridge = W.FloatLogSlider(value=max(s.ridge, 1e-8), base=10, min=-8, max=0, description="ridge")
        self.use_ridge = W.Checkbox(value=s.ridge > 0, description="ridge on", indent=False)
        self.run_button = W.Button(description="run", button_style="primary")
        self.sweep_depth_button = W.Button(description="sweep depth")
        self.sweep_size_button = W.Button(description="sweep train size")
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, description="run")
        self.accuracy = W.HTML()
        self.error = W.HTML()
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
                )
            )
        )
        self.history_x = W.ToggleButtons(options=[("vs depth", "depth"), ("vs train size", "n_train")], value="depth")
        for w in (self.dataset, self.n_per_class, self.n_test, self.ridge, self.use_ridge):
            w.observe(lambda _c: self._settings_from_widgets(), names="value")
        self.history_x.observe(lambda _c: self._draw_history(), names="value")
        self.run_button.on_click(lambda _b: self.model.run())
        self.sweep_depth_button.on_click(lambda _b: self.model.sweep(depths=self.sweep_depths))
        self.sweep_size_button.on_click(lambda _b: self.model.sweep(n_per_class=self.sweep_sizes))
        self.model.on_change(self._on_model)
        super().__init__(
            ([self.picker] if show_picker else [])
            + [
                W.HBox([self.dataset, self.n_per_class, self.n_test]),
                W.HBox([self.use_ridge, self.ridge]),
                W.HBox([self.run_button, self.sweep_depth_button, self.sweep_size_button, self.progress]),
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

    def _settings_from_widgets(self) -> None:
        try:
            self.model.set(
                dataset=self.dataset.value,
                n_per_class=self.n_per_class.value,
                n_test_per_class=self.n_test.value,
                ridge=self.ridge.value if self.use_ridge.value else 0.0,
            )
            self.error.value = ""
        except (TypeError, ValueError) as exc:
            self.error.value = error_html(f"{type(exc).__name__}: {exc}")

    def _on_model(self, event: str, m: RegressionLabModel) -> None:
        if event == "start":
            self.progress.value, self.progress.bar_style = 0.0, "info"
            self.error.value = ""
        elif event == "progress":
            self.progress.value = m.progress
        elif event == "error":
            self.progress.bar_style = "danger"
            self.error.value = error_html(m.error)
        elif event == "history":
            self._draw_history()
        elif event == "result":
            self.progress.value, self.progress.bar_style = 1.0, "success"
            self._draw_result(m.result)

    def _draw_result(self, r) -> None:
        names = list(r.class_names)
        self.accuracy.value = (
            f"<b>{html.escape(r.spec.title)}</b>, {r.settings.dataset}, {r.n_train} training images, "
            f"ridge {r.settings.ridge:g}: test accuracy <b>{100 * r.accuracy:.1f} %</b> "
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
        h, w = r.test_images.shape[1:3]
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
        groups: dict[str, list[dict]] = {}
        for h in self.model.history:
            label = (
                f"{h['readout']}{' fix' if h['fix_first'] or h['fix_last'] else ''}, {other}={h[other]}, {h['dataset']}"
            )
            groups.setdefault(label, []).append(h)
        traces = []
        for label, rows in groups.items():
            rows = sorted(rows, key=lambda h: h[key])
            traces.append(
                go.Scatter(x=[h[key] for h in rows], y=[h["accuracy"] for h in rows], mode="lines+markers", name=label)
            )
        self.history_fig.data = []
        if traces:
            self.history_fig.add_traces(traces)
        self.history_fig.layout.xaxis.title.text = "depth" if key == "depth" else "training images"
        sync_figure_state(self.history_fig)
