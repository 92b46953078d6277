"""The paper's network as one immutable value, and the vocabulary that describes it.

:class:`Architecture` is the CNTK of Arora et al. (2019): ``depth - 1`` blocks of a 3x3 convolution
and a ReLU, a readout (``"gap"``: global average pooling; ``"vanilla"``: flatten), and a final
dense layer; ``fix_first`` / ``fix_last`` keep the first convolution / the final layer untrained.
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

#: the readouts after the last ReLU: global average pooling (CNTK-GAP) or flatten (CNTK-V)
READOUTS = ("gap", "vanilla")
#: the shortest network: one convolution and its ReLU, then the readout
MIN_DEPTH = 2
_DEPTH_HINT = " (depth = number of conv layers + 1)"


@dataclass(frozen=True)
class Architecture:
    """CNTK-GAP / CNTK-V of the paper's ``depth`` (= number of 3x3 convolutions + 1, >= 2).

    Hashable and comparable (a cache key); :meth:`to_dict` / :meth:`from_dict` give its JSON form
    (the Gram store's metadata, the distributed job's parameters).
    """

    depth: int
    readout: str = "gap"
    fix_first: bool = False
    fix_last: bool = False

    def __post_init__(self):
        object.__setattr__(self, "depth", check_int(self.depth, "depth", MIN_DEPTH, _DEPTH_HINT))
        check_choice(self.readout, "readout", READOUTS)
        object.__setattr__(self, "fix_first", check_flag(self.fix_first, "fix_first"))
        object.__setattr__(self, "fix_last", check_flag(self.fix_last, "fix_last"))

    @classmethod
    def from_options(
        cls,
        depth: int,
        readout: str = "gap",
        fix: bool = False,
        fix_first: bool | None = None,
        fix_last: bool | None = None,
    ) -> Architecture:
        """The public keywords' reading: ``fix`` (the official ``--fix``) sets both halves, and
        ``fix_first`` / ``fix_last`` (when not ``None``) override them one by one."""
        fix = check_flag(fix, "fix")
        fix_first = check_flag(fix_first, "fix_first", allow_none=True)
        fix_last = check_flag(fix_last, "fix_last", allow_none=True)
        return cls(depth, readout, fix if fix_first is None else fix_first, fix if fix_last is None else fix_last)

    @classmethod
    def from_dict(cls, d: dict) -> Architecture:
        """Inverse of :meth:`to_dict`; extra keys (such as ``kind``) are ignored."""
        return cls(d["depth"], d["readout"], d["fix_first"], d["fix_last"])

    def to_dict(self) -> dict:
        """``{"depth", "readout", "fix_first", "fix_last"}`` with JSON types."""
        return asdict(self)

    @property
    def n_conv(self) -> int:
        """Number of 3x3 convolutions (= ReLUs), ``depth - 1``."""
        return self.depth - 1

    @property
    def fix(self) -> bool | None:
        """The official ``--fix`` when both halves agree, else ``None``."""
        return self.fix_first if self.fix_first == self.fix_last else None

    def network(self) -> Network:
        """The layer list: ``[Conv(3), ReLU()] * (depth - 1) + [readout, Dense()]``."""
        from .layers import Conv, Dense, Flatten, GlobalAvgPool, Network, ReLU

        layers = [Conv(3, fixed=self.fix_first), ReLU()]
        for _ in range(self.depth - 2):
            layers += [Conv(3), ReLU()]
        layers += [GlobalAvgPool() if self.readout == "gap" else Flatten(), Dense(fixed=self.fix_last)]
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
        """The paper's name: ``CNTK-GAP-3``, ``CNTK-V-11``, ``CNN-GP-GAP-5`` (``kind="nngp"``)."""
        return f"{family_name(self.readout, kind)}-{self.depth}"


def family_name(readout: str, kind: str = "ntk") -> str:
    """The name of a family of depths: ``CNTK-GAP``, ``CNTK-V``, ``CNN-GP-GAP``, ``CNN-GP-V``."""
    check_choice(readout, "readout", READOUTS)
    check_choice(kind, "kind", KINDS)
    return ("CNTK" if kind == "ntk" else "CNN-GP") + ("-GAP" if readout == "gap" else "-V")
