"""The architecture picker: depth slider, readout, fix first/last, kind and pooling controls."""

from __future__ import annotations

import html

import ipywidgets as W

from cntk_core import KINDS, READOUTS
from cntk_core.architecture import MIN_DEPTH

from ._display import error_html
from .models import MAX_DEPTH, ArchitectureModel, NetworkSpec, setting_int

#: toggle groups show their name on the left, so that two groups never read as one bar of buttons
_LABELLED = {"description_width": "initial", "button_width": "80px"}

#: how the lab's controls name the core's readouts and kinds: ``(label, tooltip)`` per value of
#: :data:`cntk_core.READOUTS` / :data:`cntk_core.KINDS` (the values and their order are the core's)
_READOUT_LABELS = {
    "gap": ("GAP", "global average pooling, then a linear layer (CNTK-GAP)"),
    "vanilla": ("vanilla", "flatten, then a linear layer (CNTK-V)"),
}
_KIND_LABELS = {
    "ntk": ("NTK", "neural tangent kernel: the trained net"),
    "nngp": ("NNGP", "NNGP / CNN-GP: the net at initialisation"),
}
#: the readout choices as the lab's views show them (the picker; notebook 01's finite-width view)
READOUT_OPTIONS = tuple((_READOUT_LABELS[r][0], r) for r in READOUTS)
#: the kernel choices of the picker
KIND_OPTIONS = tuple((_KIND_LABELS[k][0], k) for k in KINDS)


def readout_toggle(value: str = "gap", **kwargs) -> W.ToggleButtons:
    """The readout control shared by the lab's views: GAP / vanilla toggle buttons with value ``"gap"`` or
    ``"vanilla"``; ``kwargs`` go to ``ipywidgets.ToggleButtons`` (e.g. ``description``, ``tooltips``)."""
    kwargs.setdefault("description", "readout")
    kwargs.setdefault("style", _LABELLED)
    kwargs.setdefault("tooltips", [_READOUT_LABELS[r][1] for r in READOUTS])
    return W.ToggleButtons(options=list(READOUT_OPTIONS), value=value, **kwargs)


class ArchitecturePicker(W.VBox):
    """Depth slider, readout, fix first/last, kind and pooling controls, and the layer list.

    ``picker.model`` is the :class:`ArchitectureModel`; ``picker.spec`` the current spec and
    ``picker.network`` the :class:`cntk_core.Network`. ``observe_spec(callback)`` forwards to the
    model. Invalid combinations show in ``picker.error`` (an HTML box) and leave the model as is.
    """

    def __init__(self, model: ArchitectureModel | None = None, *, max_depth: int = MAX_DEPTH):
        max_depth = setting_int(max_depth, "max_depth", MIN_DEPTH, f" (and <= {MAX_DEPTH})")
        if max_depth > MAX_DEPTH:
            raise ValueError(f"max_depth must be an integer between {MIN_DEPTH} and {MAX_DEPTH}, got {max_depth}")
        self.model = model or ArchitectureModel()
        s = self.model.spec
        max_depth = max(max_depth, s.depth)  # never clamp the model's depth: widen the slider instead
        self.depth = W.IntSlider(
            value=s.depth, min=MIN_DEPTH, max=max_depth, description="depth", continuous_update=False
        )
        self.readout = readout_toggle(s.readout)
        self.kind = W.ToggleButtons(
            options=list(KIND_OPTIONS),
            value=s.kind,
            description="kernel",
            tooltips=[_KIND_LABELS[k][1] for k in KINDS],
            style=_LABELLED,
        )
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
                W.HBox([self.readout, self.kind], layout=W.Layout(flex_flow="row wrap", justify_content="flex-start")),
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
