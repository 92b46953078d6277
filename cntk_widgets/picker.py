"""The architecture picker: network preset (paper CNTK, Myrtle-5/7/10), depth slider, readout (GAP,
vanilla, LAP and its window c), kernel, padding, flip symmetrisation, fix first/last and pooling."""

from __future__ import annotations

import html

import ipywidgets as W

from cntk_core import KINDS, READOUTS
from cntk_core.architecture import MIN_DEPTH, PADDINGS

from ._display import error_html
from .models import MAX_DEPTH, PRESETS, ArchitectureModel, NetworkSpec, setting_int

#: toggle groups show their name on the left, so that two groups never read as one bar of buttons
_LABELLED = {"description_width": "initial", "button_width": "80px"}

#: how the lab's controls name the core's readouts and kinds: ``(label, tooltip)`` per value of
#: :data:`cntk_core.READOUTS` / :data:`cntk_core.KINDS` (the values and their order are the core's)
_READOUT_LABELS = {
    "gap": ("GAP", "global average pooling, then a linear layer (CNTK-GAP)"),
    "vanilla": ("vanilla", "flatten, then a linear layer (CNTK-V)"),
    "lap": ("LAP", "local average pooling: vanilla averaged over shifts of up to c pixels (Li et al. 2019)"),
}
_KIND_LABELS = {
    "ntk": ("NTK", "neural tangent kernel: the trained net"),
    "nngp": ("NNGP", "NNGP / CNN-GP: the net at initialisation"),
}
_PADDING_LABELS = {
    "zero": ("zero", "zeros outside the image (the paper's SAME padding)"),
    "circular": ("circular", "the image wraps around (a torus): slower, per-layer engine"),
}
_PRESET_LABELS = {
    "paper": ("paper CNTK", "Arora et al. 2019: any depth, one readout after the last conv"),
    "myrtle-5": ("Myrtle-5", "Shankar et al. 2020: 4 convs, 2x2 pools after convs 2 and 3; slower, per-layer"),
    "myrtle-7": ("Myrtle-7", "Shankar et al. 2020: 6 convs, 2x2 pools after convs 2 and 4; slower, per-layer"),
    "myrtle-10": ("Myrtle-10", "Shankar et al. 2020: 9 convs, 2x2 pools after convs 3 and 6; slower, per-layer"),
}
#: the readouts of the 2019 paper (the finite-width view of notebook 01 offers only these)
PAPER_READOUTS = ("gap", "vanilla")
#: the readout choices as the lab's views show them (the picker; notebook 01's finite-width view)
READOUT_OPTIONS = tuple((_READOUT_LABELS[r][0], r) for r in READOUTS)
#: the kernel choices of the picker
KIND_OPTIONS = tuple((_KIND_LABELS[k][0], k) for k in KINDS)
#: the LAP window slider's end (pixels; a model's larger window widens it)
MAX_LAP_C = 16


def readout_toggle(value: str = "gap", readouts: tuple[str, ...] = PAPER_READOUTS, **kwargs) -> W.ToggleButtons:
    """The readout control shared by the lab's views: toggle buttons for ``readouts`` (values of
    :data:`cntk_core.READOUTS`; default the paper's GAP / vanilla) with value ``"gap"``, ...;
    ``kwargs`` go to ``ipywidgets.ToggleButtons`` (e.g. ``description``, ``tooltips``)."""
    kwargs.setdefault("description", "readout")
    kwargs.setdefault("style", _LABELLED)
    kwargs.setdefault("tooltips", [_READOUT_LABELS[r][1] for r in readouts])
    return W.ToggleButtons(options=[(_READOUT_LABELS[r][0], r) for r in readouts], value=value, **kwargs)


def _toggle(labels: dict, values, value: str, description: str, **style) -> W.ToggleButtons:
    return W.ToggleButtons(
        options=[(labels[v][0], v) for v in values],
        value=value,
        description=description,
        tooltips=[labels[v][1] for v in values],
        style={**_LABELLED, **style},
    )


class ArchitecturePicker(W.VBox):
    """Preset, depth, readout (and LAP's ``c``), kind, padding, flip, fix first/last and pooling
    controls, and the layer list.

    ``picker.model`` is the :class:`ArchitectureModel`; ``picker.spec`` the current spec and
    ``picker.network`` the :class:`cntk_core.Network`. ``observe_spec(callback)`` forwards to the
    model. Invalid combinations show in ``picker.error`` (an HTML box) and leave the model as is.
    While a Myrtle preset is on, the depth slider shows its depth and is disabled (so is the
    paper preset's pool option); the ``c`` slider (``picker.lap_c``) shows only for the LAP readout.
    """

    def __init__(self, model: ArchitectureModel | None = None, *, max_depth: int = MAX_DEPTH):
        max_depth = setting_int(max_depth, "max_depth", MIN_DEPTH, f" (and <= {MAX_DEPTH})")
        if max_depth > MAX_DEPTH:
            raise ValueError(f"max_depth must be an integer between {MIN_DEPTH} and {MAX_DEPTH}, got {max_depth}")
        self.model = model or ArchitectureModel()
        s = self.model.spec
        max_depth = max(max_depth, s.depth)  # never clamp the model's depth: widen the slider instead
        self.preset = _toggle(_PRESET_LABELS, PRESETS, s.preset, "network", button_width="96px")
        self.depth = W.IntSlider(
            value=s.depth, min=MIN_DEPTH, max=max_depth, description="depth", continuous_update=False
        )
        self.readout = readout_toggle(s.readout, READOUTS)
        c = self.model.lap_c
        self.lap_c = W.IntSlider(
            value=c,
            min=0,
            max=max(MAX_LAP_C, c),
            description="LAP c",
            continuous_update=False,
            tooltip="LAP averages over shifts of up to c pixels (c = 0: vanilla)",
        )
        self.kind = _toggle(_KIND_LABELS, KINDS, s.kind, "kernel")
        self.padding = _toggle(_PADDING_LABELS, PADDINGS, s.padding, "padding")
        self.flip = W.Checkbox(
            value=s.flip,
            description="flip-symmetrised kernel",
            indent=False,
            tooltip="(K(x, x') + K(x, flip x')) / 2 with flip the horizontal mirror",
        )
        self.fix_first = W.Checkbox(value=s.fix_first, description="fix first layer", indent=False)
        self.fix_last = W.Checkbox(value=s.fix_last, description="fix last layer", indent=False)
        self.pool = W.Checkbox(value=s.pool, description="AvgPool(2) after block 1", indent=False)
        self.text = W.HTML()
        self.error = W.HTML()
        self._controls = {
            "preset": self.preset,
            "depth": self.depth,
            "readout": self.readout,
            "lap_c": self.lap_c,
            "kind": self.kind,
            "padding": self.padding,
            "flip": self.flip,
            "fix_first": self.fix_first,
            "fix_last": self.fix_last,
            "pool": self.pool,
        }
        self._syncing = False
        for name, widget in self._controls.items():
            widget.observe(lambda change, name=name: self._from_widget(name, change["new"]), names="value")
        self.model.observe(self._from_model)
        self._show(s)
        wrap = W.Layout(flex_flow="row wrap", justify_content="flex-start")
        super().__init__(
            [
                self.preset,
                self.depth,
                W.HBox([self.readout, self.lap_c, self.kind], layout=wrap),
                W.HBox([self.padding, self.flip], layout=wrap),
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
        fields = {name: value}
        if name == "readout" and value == "lap":
            fields["lap_c"] = self.lap_c.value  # the window the slider shows
        elif name == "lap_c" and self.model.spec.readout != "lap":
            self.model.lap_c = value  # kept for when LAP is chosen (the slider is hidden meanwhile)
            return
        try:
            self.model.set(**fields)
            self.error.value = ""
        except (TypeError, ValueError) as exc:
            self.error.value = error_html(exc)

    def _from_model(self, spec: NetworkSpec) -> None:
        self._syncing = True
        try:
            if spec.depth > self.depth.max:
                self.depth.max = spec.depth
            if spec.lap_c is not None and spec.lap_c > self.lap_c.max:
                self.lap_c.max = spec.lap_c
            for name, widget in self._controls.items():
                value = getattr(spec, name)
                if value is not None and widget.value != value:
                    widget.value = value
        finally:
            self._syncing = False
        self._show(spec)

    def disable(self) -> None:
        """Grey out the controls (after the model they drive was closed)."""
        for widget in self._controls.values():
            widget.disabled = True

    def _show(self, spec: NetworkSpec) -> None:
        """The layer list, and which controls apply: depth and pool only with the paper preset, ``c``
        only with LAP."""
        self.text.value = f"<pre style='margin:0;line-height:1.2'>{html.escape(spec.describe())}</pre>"
        if not all(w.disabled for w in self._controls.values()):  # not after disable()
            self.depth.disabled = self.pool.disabled = spec.preset != "paper"
        self.lap_c.layout.display = None if spec.readout == "lap" else "none"
