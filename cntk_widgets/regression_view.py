"""The regression lab view: controls, accuracy, confusion matrix, test-image grid and history."""

from __future__ import annotations

import html
import math

import ipywidgets as W
import numpy as np
import plotly.graph_objects as go

from ._display import error_html, note_html, set_int_slider, sync_figure_state
from .models import NetworkSpec, setting_int
from .picker import ArchitecturePicker
from .regression_figures import (
    HISTORY_FONT_PX,
    downsample_options,
    history_group,
    history_label,
    history_layout,
    history_lines,
    image_grid,
)
from .regression_model import LabSettings, RegressionLabModel, available_datasets, default_downsample

__all__ = ["RegressionLab", "history_group", "history_label"]

_LABEL = {"description_width": "initial"}  # descriptions are never cut ("downsample", "train/class")
#: the random-patch menu: ``(label, K)``, K patches (2 K feature channels); 0: off
PATCH_OPTIONS = (("off", 0), ("16", 16), ("32", 32), ("64", 64), ("128", 128))


class RegressionLab(W.VBox):
    """Kernel regression controls and results: accuracy, confusion matrix, test image grid with
    predicted/true labels, and a history plot (accuracy against depth or training size).

    ``lab.model`` is the :class:`RegressionLabModel`; the controls follow its settings both ways
    (``lab.model.set(...)`` updates them) and follow each shown result (after a depth sweep the
    picker says the depth of the figures); controls changed since the shown result are named in the
    result line. Slider ranges come from the data set (the smallest class of each split); the
    downsample menu lists one factor per distinct image size, and each data set keeps its own factor.
    Accuracies are in % everywhere. Buttons: run, sweep depth (``sweep_depths``; depths the
    architecture does not allow are skipped with a note), sweep training size (``sweep_sizes``), stop.

    Figure sizes (see :mod:`cntk_widgets.regression_figures`): the history plot keeps a fixed plot
    area, its legend below the x axis growing the figure by a row per line; the test-image grid shows
    images 84 px wide with two-line captions ("pred X" / "true Y") and a hover text per image.
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
        # any names the data module offers; _show_settings adds s.dataset when it is not among them
        self.dataset = W.Dropdown(options=tuple(str(n) for n in available_datasets()), description="data", style=_LABEL)
        self.n_per_class = W.IntSlider(value=1, min=1, max=1, description="train/class", style=_LABEL)
        self.n_test = W.IntSlider(value=1, min=1, max=1, description="test/class", style=_LABEL)
        self.downsample = W.Dropdown(description="downsample", style=_LABEL)
        self.ridge = W.FloatLogSlider(value=1e-6, base=10, min=-8, max=0, description="ridge", style=_LABEL)
        self.use_ridge = W.Checkbox(value=False, description="ridge on", indent=False)
        self.use_zca = W.Checkbox(value=False, description="ZCA", indent=False)
        self.zca = W.FloatLogSlider(value=0.1, base=10, min=-4, max=1, description="ZCA eps", style=_LABEL)
        self.flip_augment = W.Checkbox(value=False, description="flip augmentation (2x training set)", indent=False)
        self.patches = W.Dropdown(options=list(PATCH_OPTIONS), description="random patches", style=_LABEL)
        self.patch_size = W.IntSlider(value=5, min=2, max=8, description="patch size", style=_LABEL)
        self.run_button = W.Button(description="run", button_style="primary")
        self.sweep_depth_button = W.Button(description="sweep depth")
        self.sweep_size_button = W.Button(description="sweep train size")
        self.stop_button = W.Button(description="stop", tooltip="stop the running run or sweep")
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, description="run", style=_LABEL)
        self.accuracy = W.HTML()
        self.error = W.HTML()
        self._accuracy_text = ""
        self._stale = ""  # why the figures show an older run than the last attempt (failed, cancelled)
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
                    margin=dict(l=60, r=10, t=64, b=40),
                ),
            )
        )
        self.grid_fig = go.FigureWidget(
            go.Figure(
                [
                    go.Image(z=np.full((1, 1, 3), 255, dtype=np.uint8), hoverinfo="skip"),
                    go.Scatter(
                        x=[],
                        y=[],
                        mode="markers",
                        hoverinfo="text",
                        marker=dict(symbol="square", color="rgba(0,0,0,0)"),
                        showlegend=False,
                    ),
                ],
                layout=dict(
                    width=420,
                    height=380,
                    title=dict(text="test images (green: right, red: wrong)", font=dict(size=15)),
                    margin=dict(l=6, r=6, t=44, b=6),
                    hoverlabel=dict(font=dict(size=HISTORY_FONT_PX)),
                ),
            )
        )
        self.grid_fig.update_xaxes(visible=False)
        self.grid_fig.update_yaxes(visible=False)
        self.history_fig = go.FigureWidget(
            go.Figure(
                layout=dict(
                    title="history",
                    font=dict(size=HISTORY_FONT_PX),
                    xaxis=dict(title="depth"),
                    yaxis=dict(title="test accuracy (%)", range=[0, 100]),
                    **history_layout(0),
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
        self.zca.observe(lambda c: self.use_zca.value and self._from_widget(zca=c["new"]), names="value")
        self.use_zca.observe(lambda c: self._from_widget(zca=self.zca.value if c["new"] else None), names="value")
        self.flip_augment.observe(lambda c: self._from_widget(flip_augment=c["new"]), names="value")
        self.patches.observe(lambda c: self._from_widget(patches=c["new"]), names="value")
        self.patch_size.observe(lambda c: self._from_widget(patch_size=c["new"]), names="value")
        self.history_x.observe(lambda _c: self._draw_history(), names="value")
        self.run_button.on_click(lambda _b: self._submit(self.model.run))
        self.sweep_depth_button.on_click(
            lambda _b: self._submit(lambda: self.model.sweep(depths=self.sweep_depths, skip_invalid=True))
        )
        self.sweep_size_button.on_click(lambda _b: self._submit(lambda: self.model.sweep(n_per_class=self.sweep_sizes)))
        self.stop_button.on_click(lambda _b: self.model.cancel())
        self.model.on_change(self._on_model)
        self.picker.model.observe(self._on_architecture)
        super().__init__(
            ([self.picker] if show_picker else [])
            + [
                W.HBox([self.dataset, self.n_per_class, self.n_test]),
                W.HBox([self.downsample, self.use_ridge, self.ridge]),
                W.HBox(
                    [self.use_zca, self.zca, self.flip_augment],
                    layout=W.Layout(flex_flow="row wrap", align_items="center"),
                ),
                W.HBox([self.patches, self.patch_size], layout=W.Layout(flex_flow="row wrap", align_items="center")),
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
                W.HBox(  # the grid goes below the confusion matrix in a narrow window
                    [self.confusion_fig, self.grid_fig], layout=W.Layout(flex_flow="row wrap", align_items="flex-start")
                ),
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
            set_int_slider(self.n_per_class, s.n_per_class, n_max)
            set_int_slider(self.n_test, s.n_test_per_class, test_max)
            if lim is None:
                options = [(str(s.downsample), s.downsample)]
            else:
                options = downsample_options(lim["height"], lim["width"], lim["max_downsample"], s.downsample)
            if list(self.downsample.options) != options:
                self.downsample.options = options
            self.downsample.value = s.downsample
            if s.ridge > 0:
                e = math.log10(s.ridge)
                self.ridge.min, self.ridge.max = min(-8, math.floor(e)), max(0, math.ceil(e))
                self.ridge.value = s.ridge
            self.use_ridge.value = s.ridge > 0
            if s.zca:  # a log slider has no 0 (plain ZCA, settable in code): it keeps its value then
                e = math.log10(s.zca)
                self.zca.min, self.zca.max = min(-4, math.floor(e)), max(1, math.ceil(e))
                self.zca.value = s.zca
            self.use_zca.value = s.zca is not None
            self.flip_augment.value = s.flip_augment
            if s.patches not in [v for _, v in self.patches.options]:
                self.patches.options = sorted([*self.patches.options, (str(s.patches), s.patches)], key=lambda o: o[1])
            self.patches.value = s.patches
            set_int_slider(self.patch_size, s.patch_size, self.patch_size.max)
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
            self.picker.model.unobserve(self._on_architecture)
        elif event == "settings":
            self._show_settings(m.settings)
            self._show_accuracy()
        elif event == "history":
            self._draw_history()
        elif event == "result":
            # within a sweep each finished run is shown, but the bar only turns green at the end
            self.progress.value = m.progress
            self.progress.bar_style = "success" if m.progress >= 1.0 else "info"
            self._draw_result(m.result)

    def _on_architecture(self, _spec) -> None:
        self._show_accuracy()

    def _mark_stale(self, reason: str) -> None:
        self._stale = reason
        self._show_accuracy()

    def _show_accuracy(self) -> None:
        """The result line, prefixed by a warning when the figures show an older run than the last
        attempt, or when the controls were changed after the shown run (naming what changed)."""
        if not self._accuracy_text:
            return
        warnings = [f"{self._stale}; the figures show the previous run"] if self._stale else []
        changes = self.model.control_changes()
        if changes:
            warnings.append("controls changed since this run: " + ", ".join(changes) + "; press run to compute them")
        self.accuracy.value = (
            "".join(f"<div style='color:#b00020'>⚠ {html.escape(w)}</div>" for w in warnings) + self._accuracy_text
        )

    def _draw_result(self, r) -> None:
        names = list(r.class_names)
        h, w = r.test_images.shape[1:3]
        self._stale = ""
        mirrors = f" ({r.n_train // 2} and their mirrors)" if r.settings.flip_augment else ""
        self._accuracy_text = (
            f"<b>{html.escape(r.spec.title)}</b>, {r.settings.dataset} {h}x{w} px"
            f"{f' (downsample {r.settings.downsample})' if r.settings.downsample > 1 else ''}, "
            f"{html.escape(r.settings.preprocessing())}, "
            f"{r.n_train} training images{mirrors}, ridge {r.settings.ridge:g}: test accuracy "
            f"<b>{100 * r.accuracy:.1f} %</b> ({len(r.y_test)} test images, {r.seconds:.1f} s)"
        )
        self._show_accuracy()
        with self.confusion_fig.batch_update():
            self.confusion_fig.data[0].z = r.confusion
            self.confusion_fig.data[0].x = names
            self.confusion_fig.data[0].y = names
            self.confusion_fig.layout.title.text = f"confusion matrix ({100 * r.accuracy:.1f} %)"
        sync_figure_state(self.confusion_fig)
        g = image_grid(r.test_images, r.predictions, r.y_test, names, self.n_grid)
        ch, cw = g["canvas"].shape[:2]
        with self.grid_fig.batch_update():
            self.grid_fig.data[0].z = g["canvas"]
            self.grid_fig.data[1].update(
                x=g["hover"]["x"], y=g["hover"]["y"], hovertext=g["hover"]["text"], marker_size=g["marker_px"]
            )
            self.grid_fig.layout.annotations = g["annotations"]
            self.grid_fig.layout.update(width=g["width"], height=g["height"])
            self.grid_fig.layout.xaxis.range = [-0.5, cw - 0.5]
            self.grid_fig.layout.yaxis.range = [ch - 0.5, -0.5]
        sync_figure_state(self.grid_fig)

    def _draw_history(self) -> None:
        key = self.history_x.value
        lines = history_lines(self.model.history, key)
        traces = [
            go.Scatter(
                mode="lines+markers",
                hovertemplate="%{x}: %{y:.1f} %<extra>%{fullData.name}</extra>",
                **line,
            )
            for line in lines
        ]
        with self.history_fig.batch_update():
            self.history_fig.data = []
            if traces:
                self.history_fig.add_traces(traces)
            self.history_fig.layout.update(**history_layout(len(traces)))
            self.history_fig.layout.xaxis.update(
                title_text="depth" if key == "depth" else "training images", dtick=1 if key == "depth" else None
            )
        sync_figure_state(self.history_fig)


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
