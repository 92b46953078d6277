"""The network as one immutable value, and the vocabulary that describes it.

:class:`Architecture` is the CNTK of Arora et al. (2019): ``depth - 1`` blocks of a 3x3 convolution
and a ReLU, a readout (``"gap"``: global average pooling; ``"vanilla"``: flatten), and a final
dense layer; ``fix_first`` / ``fix_last`` keep the first convolution / the final layer untrained.
Four later ideas extend it, each off by default (the 2019 network is unchanged):

- ``readout="lap"`` with ``lap_c = c``: local average pooling of Li et al. (2019), "Enhanced
  Convolutional Neural Tangent Kernels": the vanilla readout averaged over translations of both
  images by up to ``c`` pixels (``docs/math.md``, "Local average pooling");
- ``padding="circular"``: every convolution wraps around the image (a torus), under which GAP is
  exactly invariant to circular translations;
- ``pools``: 2x2 average pooling after the named convolutions (the Myrtle networks of Shankar et
  al. 2020: :func:`cntk_core.presets.myrtle`);
- ``flip=True``: the flip-symmetrised kernel ``(K(x, x') + K(x, flip x')) / 2`` (horizontal flip),
  which the Gram driver forms from two evaluations of the network's kernel.
Every part of the package that names such a network takes or produces this value: the fused
engines, :func:`cntk_core.kernel_matrix` (which builds it from its keywords in
:meth:`Architecture.from_options`, the one reading of ``fix``), :func:`cntk_core.network_kernel`,
the finite nets, the Gram store's metadata, the distributed job, the CLI and the lab's widgets.
Which kernel of the network (``kind``: CNTK or CNN-GP) is a separate choice, as in
neural-tangents' ``get="ntk"``: it is not part of the network.

>>> Architecture.from_options(depth=3, readout="gap", fix=True)
Architecture(depth=3, readout='gap', fix_first=True, fix_last=True)
>>> Architecture(11, "vanilla").title("nngp")
'CNN-GP-V-11'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from .validation import KINDS, ParameterError, check_choice, check_flag, check_int

if TYPE_CHECKING:
    from .layers import Network

#: the readouts after the last ReLU: global average pooling (CNTK-GAP), flatten (CNTK-V), or local
#: average pooling over translations of up to ``lap_c`` pixels (LAP, Li et al. 2019)
READOUTS = ("gap", "vanilla", "lap")
#: the convolutions' SAME padding: zeros outside the image, or wrapping around (a torus)
PADDINGS = ("zero", "circular")
#: the Myrtle networks of Shankar et al. (2020): depth -> convolutions after which a 2x2 pool comes
#: (stages of 2,1,1 / 2,2,2 / 3,3,3 convolutions: 32 -> 16 -> 8, then global average pooling)
MYRTLE_POOLS = {5: (2, 3), 7: (2, 4), 10: (3, 6)}
#: the shortest network: one convolution and its ReLU, then the readout
MIN_DEPTH = 2
_DEPTH_HINT = " (depth = number of conv layers + 1)"


@dataclass(frozen=True)
class Architecture:
    """A CNTK of ``depth`` (= number of 3x3 convolutions + 1, >= 2) and its extensions.

    ``readout``: one of :data:`READOUTS`; ``lap_c``: LAP's window (an int >= 0, only with
    ``readout="lap"``); ``padding``: one of :data:`PADDINGS`; ``pools``: strictly increasing
    1-based counts of convolutions after which a 2x2 average pooling (stride 2) comes;
    ``flip``: the flip-symmetrised kernel. Hashable and comparable (a cache key);
    :meth:`to_dict` / :meth:`from_dict` give its JSON form (the Gram store's metadata, the
    distributed job's parameters), which for the 2019 network is what it was before the extensions.
    """

    depth: int
    readout: str = "gap"
    fix_first: bool = False
    fix_last: bool = False
    lap_c: int | None = None
    padding: str = "zero"
    pools: tuple[int, ...] = ()
    flip: bool = False

    def __post_init__(self):
        object.__setattr__(self, "depth", check_int(self.depth, "depth", MIN_DEPTH, _DEPTH_HINT))
        check_choice(self.readout, "readout", READOUTS)
        object.__setattr__(self, "fix_first", check_flag(self.fix_first, "fix_first"))
        object.__setattr__(self, "fix_last", check_flag(self.fix_last, "fix_last"))
        if self.readout == "lap":
            if self.lap_c is None:
                raise ParameterError("lap_c", "readout='lap' needs lap_c, the largest shift in pixels (an int >= 0)")
            object.__setattr__(self, "lap_c", check_int(self.lap_c, "lap_c", 0, " (pixels)"))
        elif self.lap_c is not None:
            raise ParameterError(
                "lap_c", f"lap_c is LAP's window: it needs readout='lap', got readout={self.readout!r}"
            )
        check_choice(self.padding, "padding", PADDINGS)
        object.__setattr__(self, "pools", _check_pools(self.pools, self.depth - 1))
        object.__setattr__(self, "flip", check_flag(self.flip, "flip"))

    @classmethod
    def from_options(
        cls,
        depth: int,
        readout: str = "gap",
        fix: bool = False,
        fix_first: bool | None = None,
        fix_last: bool | None = None,
        **extensions,
    ) -> Architecture:
        """The public keywords' reading: ``fix`` (the official ``--fix``) sets both halves, and
        ``fix_first`` / ``fix_last`` (when not ``None``) override them one by one; ``extensions``:
        ``lap_c``, ``padding``, ``pools``, ``flip`` (as the fields)."""
        fix = check_flag(fix, "fix")
        fix_first = check_flag(fix_first, "fix_first", allow_none=True)
        fix_last = check_flag(fix_last, "fix_last", allow_none=True)
        unknown = set(extensions) - set(_EXTENSIONS)
        if unknown:
            raise TypeError(f"unexpected keyword argument(s) {sorted(unknown)}; extensions are {sorted(_EXTENSIONS)}")
        first, last = (fix if fix_first is None else fix_first), (fix if fix_last is None else fix_last)
        return cls(depth, readout, first, last, **extensions)

    def __repr__(self) -> str:
        """The constructor call, extension fields only where set."""
        parts = [
            f"depth={self.depth}",
            f"readout={self.readout!r}",
            f"fix_first={self.fix_first}",
            f"fix_last={self.fix_last}",
        ]
        parts += [f"{k}={getattr(self, k)!r}" for k, v in _EXTENSIONS.items() if getattr(self, k) != v]
        return f"Architecture({', '.join(parts)})"

    @classmethod
    def from_dict(cls, d: dict) -> Architecture:
        """Inverse of :meth:`to_dict`; absent extension keys take their defaults, other extra keys
        (such as ``kind``) are ignored."""
        extras = {k: d[k] for k in _EXTENSIONS if k in d}
        if "pools" in extras:
            extras["pools"] = tuple(extras["pools"])
        return cls(d["depth"], d["readout"], d["fix_first"], d["fix_last"], **extras)

    def to_dict(self) -> dict:
        """``{"depth", "readout", "fix_first", "fix_last"}`` with JSON types, plus each extension
        field (``lap_c``, ``padding``, ``pools`` as a list, ``flip``) that is not at its default, so
        that the 2019 networks keep the form that Gram stores written before the extensions hold."""
        d = asdict(self)
        for key, default in _EXTENSIONS.items():
            if d[key] == default:
                del d[key]
        if "pools" in d:
            d["pools"] = list(d["pools"])
        return d

    @property
    def is_paper(self) -> bool:
        """Whether this is the 2019 paper's network (no extension field set)."""
        return all(getattr(self, k) == v for k, v in _EXTENSIONS.items()) and self.readout != "lap"

    def stage_shape(self, p: int, q: int) -> tuple[int, int]:
        """The feature map's height and width after the last pooling, for ``p x q`` images (each 2x2
        pooling halves them, dropping a trailing odd row or column); ``ParameterError`` when a
        pooling meets a map smaller than 2x2."""
        for k, after in enumerate(self.pools):
            if p < 2 or q < 2:
                raise ParameterError(
                    "pools",
                    f"pooling {k + 1} (after conv {after}) meets a {p}x{q} feature map: the images are too small",
                )
            p, q = p // 2, q // 2
        return p, q

    @property
    def n_conv(self) -> int:
        """Number of 3x3 convolutions (= ReLUs), ``depth - 1``."""
        return self.depth - 1

    @property
    def fix(self) -> bool | None:
        """The official ``--fix`` when both halves agree, else ``None``."""
        return self.fix_first if self.fix_first == self.fix_last else None

    def network(self) -> Network:
        """The layer list: ``[Conv(3), ReLU()] * (depth - 1)`` with ``AvgPool(2)`` after the
        convolutions named in ``pools``, then the readout layer and ``Dense()``. ``flip`` is not a
        layer: the Gram driver applies it (:func:`cntk_core.network_kernel`)."""
        from .layers import AvgPool, Conv, Dense, Flatten, GlobalAvgPool, LocalAvgPool, Network, ReLU

        layers = []
        for k in range(1, self.depth):
            layers += [Conv(3, fixed=self.fix_first and k == 1, padding=self.padding), ReLU()]
            if k in self.pools:
                layers.append(AvgPool(2))
        readout = {"gap": GlobalAvgPool(), "vanilla": Flatten()}.get(self.readout)
        layers += [readout or LocalAvgPool(self.lap_c, padding=self.padding), Dense(fixed=self.fix_last)]
        return Network(layers)

    def check_trainable(self, kind: str) -> None:
        """Refuse an NTK with no trained layer (depth 2, both halves fixed): it is identically zero."""
        if kind == "ntk" and self.depth == 2 and self.fix_first and self.fix_last:
            raise ParameterError(
                "fix",
                "depth 2 with the first and last layer fixed has no trained layer: its NTK is zero "
                "(use depth >= 3, unfix a layer, or kind='nngp')",
            )

    def title(self, kind: str = "ntk") -> str:
        """The paper's name: ``CNTK-GAP-3``, ``CNTK-V-11``, ``CNN-GP-GAP-5`` (``kind="nngp"``);
        ``CNTK-LAP2-5`` (LAP with c = 2), ``CNN-GP-Myrtle-5`` (a Myrtle network), with ``-pool2,3``
        (other pools), ``-circ`` (circular padding) and ``+flip`` appended where set."""
        if self.pools and self.readout == "gap" and MYRTLE_POOLS.get(self.depth) == self.pools:
            name = ("CNTK" if check_choice(kind, "kind", KINDS) == "ntk" else "CNN-GP") + f"-Myrtle-{self.depth}"
        else:
            name = f"{family_name(self.readout, kind, self.lap_c)}-{self.depth}"
            if self.pools:
                name += "-pool" + ",".join(map(str, self.pools))
        return name + ("-circ" if self.padding == "circular" else "") + ("+flip" if self.flip else "")


#: the extension fields and their defaults (absent from :meth:`Architecture.to_dict` when at them)
_EXTENSIONS = {"lap_c": None, "padding": "zero", "pools": (), "flip": False}


def _check_pools(pools, n_conv: int) -> tuple[int, ...]:
    """``pools`` as a tuple of strictly increasing ints in ``1 .. n_conv``, or ``ParameterError``."""
    if isinstance(pools, str) or not hasattr(pools, "__iter__"):
        raise ParameterError("pools", f"pools must be a sequence of conv counts (e.g. (2, 3)), got {pools!r}")
    out = tuple(check_int(v, "pools", 1, " (a conv count)") for v in pools)
    if any(b <= a for a, b in zip(out, out[1:], strict=False)):
        raise ParameterError("pools", f"pools must be strictly increasing, got {out}")
    if out and out[-1] > n_conv:
        raise ParameterError("pools", f"pools name conv counts 1 .. {n_conv} (depth - 1), got {out}")
    return out


def family_name(readout: str, kind: str = "ntk", lap_c: int | None = None) -> str:
    """The name of a family of depths: ``CNTK-GAP``, ``CNTK-V``, ``CNN-GP-GAP``, ``CNN-GP-V``,
    ``CNTK-LAP2`` (``readout="lap"``, ``lap_c=2``)."""
    check_choice(readout, "readout", READOUTS)
    check_choice(kind, "kind", KINDS)
    suffix = {"gap": "-GAP", "vanilla": "-V"}.get(readout) or f"-LAP{'' if lap_c is None else lap_c}"
    return ("CNTK" if kind == "ntk" else "CNN-GP") + suffix
