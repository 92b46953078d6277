"""The paper's architectures as plain layer lists."""

from __future__ import annotations

from .layers import Conv, Dense, Flatten, GlobalAvgPool, Network, ReLU
from .validation import check_flag, check_int

READOUTS = ("gap", "vanilla")


def cntk(
    depth: int,
    readout: str = "gap",
    fix: bool = False,
    *,
    fix_first: bool | None = None,
    fix_last: bool | None = None,
) -> Network:
    """CNTK-V / CNTK-GAP of the paper's ``depth`` (= number of 3x3 convs + 1).

    ``fix=True`` is the official ``--fix yes``: first conv and final FC layer not trained.
    ``fix_first`` / ``fix_last`` override the two halves separately. The paper's recipes are
    ``cntk(d, "vanilla", fix=False)`` (CNTK-V) and ``cntk(d, "gap", fix=True)`` (CNTK-GAP).
    """
    depth = check_int(depth, "depth", 2, " (depth = number of conv layers + 1)")
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
    fix = check_flag(fix, "fix")
    fix_first = check_flag(fix_first, "fix_first", allow_none=True)
    fix_last = check_flag(fix_last, "fix_last", allow_none=True)
    first = fix if fix_first is None else fix_first
    last = fix if fix_last is None else fix_last
    layers = [Conv(3, fixed=first), ReLU()]
    for _ in range(depth - 2):
        layers += [Conv(3), ReLU()]
    layers += [GlobalAvgPool() if readout == "gap" else Flatten(), Dense(fixed=last)]
    return Network(layers)
