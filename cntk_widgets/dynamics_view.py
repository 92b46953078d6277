"""The training-dynamics widget (issue 26): a training-time slider over the infinite-width net's
gradient descent, with its loss and accuracy curves, test predictions and per-eigenmode residuals.

A thin view over :class:`~cntk_widgets.dynamics_model.TrainingDynamicsModel`: the controls forward to
the model, and the model's ``"time"`` event redraws the picture (:mod:`cntk_widgets.dynamics_svg`:
inline SVG whose static layer is built once per result) into one HTML widget.
``benchmarks/bench_teaching.py`` measures the slider's latency.
"""

from __future__ import annotations

import html

import ipywidgets as W
import numpy as np

from ._display import error_html, note_html
from ._teaching_common import progress_bar, show_job_event
from .dynamics_model import NOISE_LEVELS, DynamicsResult, TimeSnapshot, TrainingDynamicsModel
from .dynamics_svg import DynamicsPicture
from .picker import KIND_OPTIONS, readout_toggle

_LABEL = {"description_width": "initial"}
RESIDUAL_FLOOR = 1e-10  # relative to the largest initial mode energy: the mode plot's lowest value


def time_label(t: float) -> str:
    """``"∞"``, or the step count (``"1"``, ``"412"``, ``"12,587"``)."""
    return "∞" if np.isinf(t) else f"{t:,.0f}" if t == round(t) else f"{t:.3g}"


def time_axis(times: np.ndarray) -> tuple[np.ndarray, list[float], list[str]]:
    """Plot coordinates of ``times`` on a log scale with ``inf`` one step beyond the last finite
    time: ``(u [T], tickvals, ticktext)`` with one tick per decade and ``"∞"``."""
    finite = np.log10(times[np.isfinite(times)])
    top = float(finite.max()) if len(finite) else 0.0
    u_inf = top + max(0.6, 0.12 * top)
    u = np.where(np.isfinite(times), np.log10(np.where(np.isfinite(times), times, 1.0)), u_inf)
    decades = list(range(0, int(np.floor(top)) + 1))
    return u, [float(d) for d in decades] + [u_inf], [f"10{_sup(d)}" if d > 1 else str(10**d) for d in decades] + ["∞"]


def _sup(d: int) -> str:
    return str(d).translate(str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹"))


def shown_test_images(y_test: np.ndarray, n_classes: int) -> np.ndarray:
    """Indices of the test images whose scores are drawn: the first of each class, by class."""
    return np.array([int(np.argmax(y_test == c)) for c in range(n_classes) if np.any(y_test == c)], dtype=np.int64)


class TrainingDynamicsLab(W.VBox):
    """Controls (kernel NTK/NNGP, readout, fix first/last layer, label noise), a progress bar with a
    stop button, the time slider (log-spaced steps, then ∞ = kernel regression) and one figure:
    loss and accuracy against t with a marker at the slider's t and a star at the lowest test loss
    (early stopping), the class scores of one test image per class at t, and the residual energy per
    eigenmode at t over its value at t = 0. Parameters: :class:`TrainingDynamicsModel`'s.
    ``lab.model`` is the model; ``lab.time`` the slider; ``lab.picture`` the picture (an HTML widget)
    and ``lab.drawing`` its :class:`~cntk_widgets.dynamics_svg.DynamicsPicture`.
    """

    def __init__(self, *, backend: str | None = None, synchronous: bool = False, disk_cache=None, **fields):
        self.model = TrainingDynamicsModel(
            backend=backend, synchronous=synchronous, disk_cache=disk_cache, autostart=False, **fields
        )
        m = self.model
        self._syncing = False
        self._note, self._rows = "", np.zeros(0, np.int64)
        self.drawing: DynamicsPicture | None = None
        self.kind = W.ToggleButtons(options=list(KIND_OPTIONS), value=m.spec.kind, description="kernel", style=_LABEL)
        self.readout = readout_toggle(m.spec.readout)
        self.fix_first = W.Checkbox(value=m.spec.fix_first, description="fix first layer", indent=False)
        self.fix_last = W.Checkbox(value=m.spec.fix_last, description="fix last layer", indent=False)
        levels = sorted(set(NOISE_LEVELS) | {m.settings.label_noise})
        self.noise = W.Dropdown(
            options=[(f"{100 * v:.0f} %", v) for v in levels],
            value=m.settings.label_noise,
            description="label noise",
            style=_LABEL,
            layout=W.Layout(width="170px"),
        )
        self.time = W.SelectionSlider(
            options=[("1", 0)],
            value=0,
            description="training time t",
            continuous_update=True,
            style=_LABEL,
            layout=W.Layout(width="600px"),
        )
        self.progress = progress_bar("kernel")
        self.stop = W.Button(description="stop", tooltip="stop computing the kernel")
        self.status, self.error, self.readout_line = W.HTML(), W.HTML(), W.HTML()
        self.picture = W.HTML()
        self.picture.add_class("cntk-dynamics-picture")
        for name, widget in (("kind", self.kind), ("readout", self.readout)):
            widget.observe(lambda c, name=name: self._forward(**{name: c["new"]}), names="value")
        self.fix_first.observe(lambda c: self._forward(fix_first=c["new"]), names="value")
        self.fix_last.observe(lambda c: self._forward(fix_last=c["new"]), names="value")
        self.noise.observe(lambda c: self._forward(label_noise=c["new"]), names="value")
        self.time.observe(self._on_slider, names="value")
        self.stop.on_click(lambda _b: self.model.cancel())
        m.on_change(self._on_model)
        super().__init__(
            [
                W.HBox([self.kind, self.readout]),
                W.HBox([self.fix_first, self.fix_last, self.noise]),
                W.HBox([self.progress, self.stop, self.status]),
                self.error,
                self.time,
                self.readout_line,
                self.picture,
            ]
        )
        self.add_class("cntk-dynamics")
        m.compute()

    def wait(self, timeout: float | None = 300.0) -> DynamicsResult | None:
        return self.model.wait(timeout)

    # -- controls -> model ------------------------------------------------------------------------
    def _forward(self, **fields) -> None:
        if self._syncing:
            return
        try:
            self.model.set(**fields)
            self.error.value = ""
        except (TypeError, ValueError, RuntimeError) as exc:
            self.error.value = error_html(exc)
            self._show_controls()

    def _on_slider(self, change) -> None:
        if not self._syncing and self.model.result is not None:
            self.model.select(change["new"])

    def _show_controls(self) -> None:
        m, s = self.model, self.model.spec
        self._syncing = True
        try:
            self.kind.value, self.readout.value = s.kind, s.readout
            self.fix_first.value, self.fix_last.value = s.fix_first, s.fix_last
            self.noise.value = m.settings.label_noise
        finally:
            self._syncing = False

    # -- model events -------------------------------------------------------------------------------
    def _on_model(self, event: str, m: TrainingDynamicsModel) -> None:
        show_job_event(event, m, self.progress, self.error, "the figure shows the previous kernel")
        if event == "start":
            self.status.value = html.escape(f"computing the kernels of {m.spec.title} …")
        elif event == "closed":
            self.error.value = note_html("closed: create a new widget to compute again")
            for w in (self.kind, self.readout, self.fix_first, self.fix_last, self.noise, self.stop):
                w.disabled = True
        elif event == "settings":
            self._show_controls()
        elif event == "result":
            self._draw_result(m.result)
        elif event == "time":
            self._draw_time(m.result, m.snapshot)

    def _draw_result(self, r: DynamicsResult) -> None:
        """Everything that does not depend on t: the slider's steps and the picture's static layer."""
        d = r.data
        n_flip, n = int(d.flipped.sum()), len(d.y_train)
        where = {"computed": "computed", "memory": "from memory", "disk": "from the disk cache"}[r.source]
        self.status.value = html.escape(
            f"{r.spec.title}: {n} training images ({n_flip} labels flipped), {len(d.y_test)} test images; "
            f"kernels {where}, {r.seconds:.1f} s"
        )
        self._syncing = True
        try:
            self.time.options = [(time_label(t), i) for i, t in enumerate(r.times)]
        finally:
            self._syncing = False
        u, tickvals, ticktext = time_axis(r.times)
        self._rows = shown_test_images(d.y_test, len(d.class_names))
        floor = RESIDUAL_FLOOR * float(r.initial_energy.max())
        title = f"{r.spec.title}: gradient descent, η = 1/λ_max"
        self.drawing = DynamicsPicture(r, u, tickvals, ticktext, self._rows, floor, title)
        self._note = self._result_note(r)

    @staticmethod
    def _result_note(r: DynamicsResult) -> str:
        c = r.curves
        if r.early_stopping:
            return (
                f"Early stopping: the test loss is lowest at t = {time_label(r.times[r.best])} "
                f"({c.test_loss[r.best]:.4f}, test accuracy {100 * c.test_accuracy[r.best]:.1f} %), below its value "
                f"at t = ∞ ({c.test_loss[-1]:.4f}, {100 * c.test_accuracy[-1]:.1f} %)."
            )
        return f"The test loss falls all the way to t = ∞ ({c.test_loss[-1]:.4f}): no early-stopping gain here."

    def _draw_time(self, r: DynamicsResult, snap: TimeSnapshot) -> None:
        """The picture at the snapshot's time (the static layer reused) and the line under the slider."""
        s = snap.state
        if snap.index is not None and not self._syncing and self.time.value != snap.index:
            self._syncing = True
            try:
                self.time.value = snap.index
            finally:
                self._syncing = False
        label = time_label(snap.t)
        self.picture.value = self.drawing.svg(snap, label)
        self.readout_line.value = (
            f"<b>t = {html.escape(label)}</b>{' (kernel regression)' if np.isinf(snap.t) else ' steps'}: "
            f"train loss {s.train_loss:.4f}, test loss {s.test_loss:.4f}, "
            f"test accuracy <b>{100 * s.test_accuracy:.1f} %</b> (train {100 * s.train_accuracy:.1f} %)"
            f"<br><span style='color:#555'>{html.escape(self._note)}</span>"
        )
