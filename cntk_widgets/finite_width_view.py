"""The finite-width view of notebook 01: controls and four panels over a :class:`FiniteWidthModel`.

It shows a result from the start: building the view computes the model's current settings in the
background (a progress bar and a status line say so; :meth:`FiniteWidthView.wait` blocks until it is
drawn), and afterwards "Run" recomputes for the controls. The readout control is the lab's shared
GAP / vanilla toggle (:func:`cntk_widgets.picker.readout_toggle`), as in the architecture picker.
"""

from __future__ import annotations

import numpy as np

from .finite_width import FiniteWidthModel, FiniteWidthResults, inverse_sqrt_guide


class FiniteWidthView:
    """ipywidgets + plotly front end of a :class:`FiniteWidthModel`. ``widget``: the box to display;
    ``figs``: dict of the four ``go.FigureWidget`` panels (``"ntk"``, ``"nngp"``, ``"change"``, ``"pred"``);
    ``progress``: the progress bar.

    ``autorun=True`` (default) computes the model's current settings when the view is built, in a
    background thread (``synchronous=True``: before the constructor returns), so the panels are never
    empty; until it is drawn the status says what is being computed. "Run" (:meth:`run`) recomputes
    for the controls, in the calling thread, after waiting for that first result.
    """

    def __init__(self, model: FiniteWidthModel | None = None, *, autorun: bool = True, synchronous: bool = False):
        import ipywidgets as W
        import plotly.graph_objects as go

        from cntk_core.architecture import MIN_DEPTH

        from .jobs import JobRunner
        from .picker import readout_toggle

        self.model = model or FiniteWidthModel()
        c = self.model.config
        self.results: FiniteWidthResults | None = None
        self._summary = ""  # the status line of the last successful Run
        self.width = W.SelectionSlider(options=list(c.widths), value=c.widths[0], description="width")
        self.depth = W.IntSlider(value=c.depth, min=MIN_DEPTH, max=max(8, c.depth), description="depth")
        self.readout = readout_toggle(c.readout)
        self.fix = W.Checkbox(value=c.fix, description="fix first/last layer")
        self.steps = W.IntSlider(value=c.steps, min=min(1, c.steps), max=max(500, c.steps), description="GD steps")
        self.seed = W.IntText(value=c.seed, description="seed")
        self.button = W.Button(description="Run", button_style="primary")
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, layout=W.Layout(width="160px"))
        self.status = W.HTML(value="press Run")
        self.button.on_click(lambda _: self.run())
        self.width.observe(lambda _: self.update_nngp(), names="value")
        for control in (self.depth, self.readout, self.fix, self.steps, self.seed):
            control.observe(lambda _: self._show_pending(), names="value")

        def fig(title, xlabel, ylabel, log=False):
            f = go.FigureWidget()
            f.update_layout(
                title=title, xaxis_title=xlabel, yaxis_title=ylabel, width=460, height=340, margin=dict(t=50, b=40)
            )
            if log:  # few labels: plotly's minor log labels (0.45 0.5 0.55, 9 1 0.1) run into each other
                f.update_xaxes(type="log")
                f.update_yaxes(type="log", nticks=4, tickformat=".2g")
            return f

        self.figs = {
            "ntk": fig("(a) empirical NTK error vs width", "width", "||Θ̂ − Θ|| / ||Θ||", log=True),
            "nngp": fig("(b) empirical vs exact NNGP", "exact NNGP entry", "empirical entry"),
            "change": fig("(c) NTK change during training", "width", "||Θ̂_T − Θ̂_0|| / ||Θ̂_0||", log=True),
            "pred": fig(
                "(d) trained net vs kernel regression (test)", "kernel regression prediction", "net prediction"
            ),
        }
        for key in ("ntk", "change"):
            self.figs[key].add_scatter(x=[], y=[], mode="lines+markers", name="measured")
            self.figs[key].add_scatter(x=[], y=[], mode="lines", line=dict(dash="dash"), name="∝ 1/√width")
        self.figs["nngp"].add_scatter(x=[], y=[], mode="markers", name="entries")
        self.figs["nngp"].add_scatter(x=[], y=[], mode="lines", line=dict(dash="dash"), name="y = x")
        wrap = W.Layout(flex_flow="row wrap", align_items="center")  # narrow windows: wrap, never cut
        controls = W.VBox(
            [
                W.HBox([self.depth, self.readout, self.fix], layout=wrap),
                W.HBox([self.steps, self.seed, self.button, self.progress], layout=wrap),
                self.width,
                self.status,
            ]
        )
        grid = W.HBox(
            [self.figs[k] for k in ("ntk", "nngp", "change", "pred")],
            layout=W.Layout(flex_flow="row wrap", max_width=f"{2 * 470}px"),
        )
        self.widget = W.VBox([controls, grid])
        self.widget.add_class("cntk-finite-width")  # the browser tests find it by this class
        self._first = JobRunner(
            synchronous=synchronous,
            on_progress=self._show_progress,
            on_result=lambda drawn: self._draw(*drawn),
            on_error=self._first_failed,
            name="cntk-finite-width",
        )
        if autorun:
            self.status.value = (
                f"computing the first result ({self._describe()}, widths {', '.join(map(str, c.widths))})…"
            )
            self._first.submit(self._compute_first)

    def wait(self, timeout: float | None = 300.0) -> FiniteWidthResults | None:
        """Block until the first result (computed when the view was built) is drawn; return the results."""
        self._first.wait(timeout)
        return self.results

    def _compute_first(self, ctx):
        """The background job: the model's current settings, and panel (b) at the slider's width."""
        from .jobs import ENGINE_LOCK

        with ENGINE_LOCK:  # the exact kernels use the engine, which the lab's other workers share
            r = self.model.run(progress=lambda f: ctx.progress(0.95 * f))
            nngp = self.model.nngp(int(self.width.value))
        ctx.progress(1.0)
        return r, nngp

    def _show_progress(self, fraction: float) -> None:
        self.progress.value = fraction
        self.progress.bar_style = "success" if fraction >= 1 else "info"

    def _first_failed(self, message: str) -> None:
        self.progress.bar_style = "danger"
        from ._display import error_html

        self.status.value = error_html(f"{message}; change the settings and press Run")

    def _describe(self) -> str:
        c = self.model.config
        return f"depth {c.depth}, {c.readout}{', fixed first/last' if c.fix else ''}, {c.steps} steps, seed {c.seed}"

    def _controls(self) -> dict:
        return dict(
            depth=int(self.depth.value),
            readout=self.readout.value,
            fix=bool(self.fix.value),
            steps=int(self.steps.value),
            seed=int(self.seed.value),
        )

    def _sync_config(self):
        self.model.update(**self._controls())

    def _show_pending(self) -> None:
        """Say when the controls no longer match the settings the panels were computed with."""
        c = self.model.config
        if self.results is None:
            return
        if all(getattr(c, k) == v for k, v in self._controls().items()):
            self.status.value = self._summary
            return
        self.status.value = (
            "settings changed: press Run (the panels show depth "
            f"{c.depth}, {c.readout}{', fixed' if c.fix else ''}, {c.steps} steps, seed {c.seed})"
        )

    def _previous(self) -> str:
        return " (the panels show the previous run)" if self.results is not None else ""

    def _fail(self, exc: Exception) -> None:
        from ._display import error_html
        from .jobs import error_name

        self.status.value = error_html(f"{error_name(exc)}: {exc}{self._previous()}")

    def run(self) -> FiniteWidthResults | None:
        """Read the controls, run all experiments, redraw the four panels. A failure (bad setting or
        computation) shows as ``"Type: message"`` in the status and returns None; the controls stay usable."""
        self.wait(None)  # the first result, if it is still being computed
        self.button.disabled = True
        self.status.value = "running..."
        before = {k: getattr(self.model.config, k) for k in self._controls()}
        try:
            self._sync_config()
            r = self.model.run(progress=lambda f: self._show_progress(0.95 * f))
            nngp = self.model.nngp(int(self.width.value))
        except BaseException as exc:
            self.model.update(**before)  # the config stays the one the panels were drawn with
            if not isinstance(exc, Exception):  # KeyboardInterrupt: same consistent state, then let it through
                self.status.value = "interrupted" + self._previous()
                raise
            self._fail(exc)
            return None
        finally:
            self.button.disabled = False
        self._draw(r, nngp)
        return r

    def _draw(self, r: FiniteWidthResults, nngp) -> None:
        """Draw all four panels and the status line (the status says when the controls differ)."""
        for key in ("ntk", "change"):  # one label per width measured
            self.figs[key].update_xaxes(tickvals=list(r.widths), ticktext=[str(w) for w in r.widths])
        with self.figs["ntk"].batch_update():
            self.figs["ntk"].data[0].update(x=r.widths, y=r.ntk_err)
            self.figs["ntk"].data[1].update(x=r.widths, y=inverse_sqrt_guide(r.widths, r.ntk_err))
        with self.figs["change"].batch_update():
            self.figs["change"].data[0].update(x=r.widths, y=r.ntk_change)
            self.figs["change"].data[1].update(x=r.widths, y=inverse_sqrt_guide(r.widths, r.ntk_change))
        f = self.figs["pred"]
        with f.batch_update():
            f.data = []
            lo, hi = float(np.min(r.kr_pred)), float(np.max(r.kr_pred))
            f.add_scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(dash="dash"), name="y = x")
            for i, w in enumerate(r.widths):
                f.add_scatter(
                    x=np.tile(r.kr_pred, r.pred.shape[1]),
                    y=r.pred[i].ravel(),
                    mode="markers",
                    name=f"width {w} (err {r.pred_err[i]:.2g})",
                )
        self._draw_nngp(nngp)
        from ._display import sync_figure_state

        for key in ("ntk", "change", "pred"):
            sync_figure_state(self.figs[key])  # a page that connects later (Voila) shows the drawn panels
        self.results = r
        c = self.model.config
        pred_err = "n/a (0 steps)" if not np.isfinite(r.pred_err[-1]) else f"{r.pred_err[-1]:.3g}"
        self.status.value = self._summary = (
            f"depth {c.depth}, {c.readout}{', fixed first/last' if c.fix else ''}: "
            f"η = {r.eta:.3g} ({'1' if c.lr_scale == 1 else f'{c.lr_scale:g}'}/λ_max of the exact NTK), "
            f"{c.steps} steps; NTK error at the widest width {r.ntk_err[-1]:.3g}; prediction error {pred_err}"
            + ("; some narrow nets diverged" if r.diverged.any() else "")
        )
        self._show_progress(1.0)
        self._show_pending()  # controls moved while the first result was computed

    def update_nngp(self) -> float | None:
        """Redraw panel (b) for the slider's width, with the settings of the last Run (the model's
        config), so that all four panels describe the same network. Returns the relative error, or
        None after showing a failure in the status."""
        self.wait(None)  # not while the first result is computed on the same model
        try:
            return self._draw_nngp()
        except Exception as exc:
            self._fail(exc)
            return None

    def _draw_nngp(self, nngp=None) -> float:
        """Draw panel (b) from ``model.nngp(width)`` output (computed here when not given)."""
        c = self.model.config
        emp, exact, err = nngp if nngp is not None else self.model.nngp(int(self.width.value))
        f = self.figs["nngp"]
        iu = np.triu_indices(len(exact))
        lo, hi = float(exact[iu].min()), float(exact[iu].max())
        with f.batch_update():
            f.data[0].update(x=exact[iu], y=emp[iu])
            f.data[1].update(x=[lo, hi], y=[lo, hi])
            f.layout.title.text = (
                f"(b) NNGP at width {self.width.value}, depth {c.depth} {c.readout}: rel. error {err:.3g}"
            )
        from ._display import sync_figure_state

        sync_figure_state(f)
        return err


def finite_width_view(
    model: FiniteWidthModel | None = None, *, autorun: bool = True, synchronous: bool = False, **config
) -> FiniteWidthView:
    """Build the view (``view.widget`` to display); ``config`` fields go to :class:`FiniteWidthConfig`.
    The view starts computing its first result at once (see :class:`FiniteWidthView`)."""
    if model is None:
        model = FiniteWidthModel(**config)
    elif config:
        model.update(**config)
    return FiniteWidthView(model, autorun=autorun, synchronous=synchronous)
