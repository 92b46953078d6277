"""Networks as short lists of small layer objects, each carrying its own kernel rule (stax style).

A layer maps the pair of covariances ``(Sigma, Theta)`` of a batch of image pairs to those after
the layer. While spatial, both are ``(B, P, Q, P, Q)`` tensors; after a readout (``Flatten`` or
``GlobalAvgPool``) they are ``(B,)`` vectors. The rules are the ones of ``docs/math.md``:

==================  ===============================================  ==============================
layer               Sigma                                            Theta
==================  ===============================================  ==============================
``Conv(3)``         ``tr3(Sigma)``                                   ``tr3(Theta) + Sigma_out``
``Conv(3, fixed)``  ``tr3(Sigma)``                                   ``tr3(Theta)``
``ReLU()``          ``K`` (``relu_dual``)                            ``K_dot * Theta``
``AvgPool(w)``      mean over ``w x w`` windows of both positions    same
``LocalAvgPool(c)`` LAP: ``sum w(p, p') Sigma[p, p']``                same
``Flatten()``       ``sum_p Sigma[p, p]``                            same
``GlobalAvgPool()`` ``(1/(PQ)^2) sum_{p,p'} Sigma[p, p']``           same
``Dense()``         ``Sigma``                                        ``Theta + Sigma``
``Dense(fixed)``    ``Sigma``                                        ``Theta``
==================  ===============================================  ==============================

The paper's CNTK of depth ``d`` is ``[Conv(3), ReLU()] * (d - 1) + [readout, Dense()]``; see
:func:`cntk_core.presets.cntk`. Networks of that exact shape run on the fused fast paths; any
other list runs on the per-layer path (full tensors, fine for small images).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import recurrence as R
from .architecture import PADDINGS, Architecture
from .validation import ParameterError, check_choice, check_flag, check_int

VarianceSource = Callable[[int, object], tuple]


@dataclass(frozen=True)
class Layer:
    """Base class: a layer is a frozen value object with a kernel rule ``apply``."""

    spatial_in = True  # expects (B, P, Q, P, Q) covariances
    spatial_out = True

    def apply(self, sigma, theta, variances: VarianceSource, relu_index: int):
        raise NotImplementedError(
            f"{type(self).__name__} has no kernel rule: a layer subclasses Layer and defines apply(), "
            "or use Conv, ReLU, AvgPool, Flatten, GlobalAvgPool, Dense"
        )

    def describe(self) -> str:
        return repr(self)


@dataclass(frozen=True)
class Conv(Layer):
    """``size x size`` convolution, stride 1, SAME padding (``"zero"`` or ``"circular"``: wrapping
    around the image), no bias. ``fixed``: not trained."""

    size: int = 3
    fixed: bool = False
    padding: str = "zero"

    def __post_init__(self):
        size = check_int(self.size, "Conv size", 1, " (odd)")
        if size % 2 == 0:
            raise ParameterError(
                "size", f"Conv size must be a positive odd integer (SAME padding is symmetric), got {size}"
            )
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "fixed", check_flag(self.fixed, "Conv fixed"))
        check_choice(self.padding, "padding", PADDINGS)

    def apply(self, sigma, theta, variances, relu_index):
        circular = self.padding == "circular"
        sigma = R.tr3(sigma, self.size, circular)
        theta = R.tr3(theta, self.size, circular)
        if not self.fixed:
            theta = theta + sigma
        return sigma, theta

    def describe(self):
        return (
            f"Conv {self.size}x{self.size}"
            + (" circular" if self.padding == "circular" else "")
            + (" (fixed)" if self.fixed else "")
        )


@dataclass(frozen=True)
class ReLU(Layer):
    """ReLU with ``c_sigma = 2`` and the 1/9 of the following 3x3 conv folded in (the paper's)."""

    def apply(self, sigma, theta, variances, relu_index):
        var1, var2 = variances(relu_index, sigma)
        k, k_dot = R.relu_dual(sigma, var1[:, :, :, None, None], var2[:, None, None, :, :])
        return k, k_dot * theta

    def describe(self):
        return "ReLU"


@dataclass(frozen=True)
class AvgPool(Layer):
    """Average pooling over non-overlapping ``window x window`` blocks (trailing rows dropped)."""

    window: int = 2

    def __post_init__(self):
        object.__setattr__(self, "window", check_int(self.window, "AvgPool window", 1))

    def _pool(self, t):
        w = self.window
        if t.shape[1] < w or t.shape[2] < w:
            raise ValueError(f"AvgPool({w}) does not fit a {t.shape[1]}x{t.shape[2]} feature map")
        return R.block_mean(t, w, (1, 2, 3, 4))

    def apply(self, sigma, theta, variances, relu_index):
        return self._pool(sigma), self._pool(theta)

    def describe(self):
        return f"AvgPool {self.window}x{self.window}"


@dataclass(frozen=True)
class Flatten(Layer):
    """Vanilla readout: flatten the feature map for the final FC layer (``sum_p Sigma[p, p]``)."""

    spatial_out = False

    def apply(self, sigma, theta, variances, relu_index):
        return R.readout_vanilla(sigma), R.readout_vanilla(theta)

    def describe(self):
        return "Flatten"


@dataclass(frozen=True)
class GlobalAvgPool(Layer):
    """GAP readout: average over positions for the final FC layer."""

    spatial_out = False

    def apply(self, sigma, theta, variances, relu_index):
        return R.readout_gap(sigma), R.readout_gap(theta)

    def describe(self):
        return "GlobalAvgPool"


@dataclass(frozen=True)
class LocalAvgPool(Layer):
    """LAP readout (Li et al. 2019): the vanilla readout averaged over translations of both images by
    up to ``c`` pixels per axis (:func:`cntk_core.recurrence.readout_lap`); ``padding`` says whether
    translations wrap around (``"circular"``) or drop what leaves the image (``"zero"``)."""

    c: int = 1
    padding: str = "zero"
    spatial_out = False

    def __post_init__(self):
        object.__setattr__(self, "c", check_int(self.c, "lap_c", 0, " (pixels)"))
        check_choice(self.padding, "padding", PADDINGS)

    def apply(self, sigma, theta, variances, relu_index):
        circular = self.padding == "circular"
        return R.readout_lap(sigma, self.c, circular), R.readout_lap(theta, self.c, circular)

    def describe(self):
        return f"LocalAvgPool c={self.c}" + (" circular" if self.padding == "circular" else "")


@dataclass(frozen=True)
class Dense(Layer):
    """The final fully-connected readout layer (one output). ``fixed``: not trained."""

    fixed: bool = False
    spatial_in = False
    spatial_out = False

    def __post_init__(self):
        object.__setattr__(self, "fixed", check_flag(self.fixed, "Dense fixed"))

    def apply(self, sigma, theta, variances, relu_index):
        return sigma, (theta if self.fixed else theta + sigma)

    def describe(self):
        return "Dense (fixed)" if self.fixed else "Dense"


class Network(tuple):
    """An immutable sequence of layers. ``Network([Conv(), ReLU(), GlobalAvgPool(), Dense()])``."""

    def __new__(cls, layers: Sequence[Layer] = ()):
        try:
            layers = tuple(layers)
        except TypeError:
            raise TypeError(f"a Network is built from a list of Layer objects, got {layers!r}") from None
        for layer in layers:
            if not isinstance(layer, Layer):
                raise TypeError(f"a Network holds Layer objects, got {layer!r}")
        _check_order(layers)
        return super().__new__(cls, layers)

    def __add__(self, other):
        return Network(tuple(self) + tuple(other))

    def __repr__(self):
        return "Network([" + ", ".join(repr(layer) for layer in self) + "])"

    def describe(self) -> str:
        """One line per layer, repeated blocks collapsed: e.g. ``[Conv 3x3, ReLU] x 10``."""
        names = [layer.describe() for layer in self]
        lines, i = [], 0
        while i < len(names):
            pair = names[i : i + 2]
            if len(pair) == 2 and pair[0].startswith("Conv") and pair[1] == "ReLU":
                count = 1
                while names[i + 2 * count : i + 2 * count + 2] == pair:
                    count += 1
                lines.append(f"[{pair[0]}, ReLU]" + (f" x {count}" if count > 1 else ""))
                i += 2 * count
            else:
                lines.append(names[i])
                i += 1
        return "\n".join(lines)

    @property
    def n_relu(self) -> int:
        return sum(isinstance(layer, ReLU) for layer in self)

    def canonical(self) -> Architecture | None:
        """The :class:`~cntk_core.architecture.Architecture` if this network has its shape
        (``[Conv(3), ReLU()]`` blocks of one padding, ``AvgPool(2)`` after some, a readout, ``Dense``),
        else ``None``. Only Architectures run on the fused engines."""
        layers = list(self)
        if len(layers) < 4 or not isinstance(layers[-1], Dense):
            return None
        head = layers[-2]
        readout = {Flatten: "vanilla", GlobalAvgPool: "gap", LocalAvgPool: "lap"}.get(type(head))
        if readout is None:
            return None
        body, convs, pools, paddings, k = layers[:-2], 0, [], set(), 0
        while k < len(body):
            if isinstance(body[k], AvgPool) and body[k].window == 2 and convs and (not pools or pools[-1] < convs):
                pools.append(convs)
                k += 1
                continue
            conv, relu = body[k], body[k + 1] if k + 1 < len(body) else None
            if not (isinstance(conv, Conv) and conv.size == 3 and isinstance(relu, ReLU)):
                return None
            if convs > 0 and conv.fixed:
                return None
            paddings.add(conv.padding)
            convs += 1
            k += 2
        if convs == 0 or len(paddings) != 1 or (readout == "lap" and head.padding not in paddings):
            return None
        return Architecture(
            convs + 1, readout, body[0].fixed, layers[-1].fixed,
            lap_c=head.c if readout == "lap" else None, padding=paddings.pop(), pools=tuple(pools),
        )  # fmt: skip

    def forward(self, sigma, variances: VarianceSource, ntk: bool = True):
        """Run the per-layer rules on input covariances ``sigma`` ``(B, P, Q, P, Q)``.

        ``variances(k, sigma)`` returns the ``(B, P, Q)`` variance maps of the first and second
        image of each pair at the k-th ReLU. Returns ``(Sigma, Theta)`` after the last layer.
        """
        xp = R.get_array_module(sigma)
        theta = xp.zeros_like(sigma)
        relu_index = 0
        for layer in self:
            sigma, theta = layer.apply(sigma, theta, variances, relu_index)
            relu_index += isinstance(layer, ReLU)
        return sigma, theta


def _check_order(layers: tuple) -> None:
    spatial = True
    for layer in layers:
        if layer.spatial_in != spatial:
            where = "after a readout (Flatten/GlobalAvgPool)" if not spatial else "before a readout"
            raise ValueError(f"{layer.describe()} cannot come {where}")
        spatial = layer.spatial_out
    if layers and (spatial or not isinstance(layers[-1], Dense)):
        raise ValueError("a Network must end with a readout: Flatten() or GlobalAvgPool(), then Dense()")
