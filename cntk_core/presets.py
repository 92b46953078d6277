"""The paper's architectures as plain layer lists."""

from __future__ import annotations

from .architecture import Architecture
from .layers import Network


def cntk(
    depth: int,
    readout: str = "gap",
    fix: bool = False,
    *,
    fix_first: bool | None = None,
    fix_last: bool | None = None,
) -> Network:
    """CNTK-V / CNTK-GAP of the paper's ``depth`` (= number of 3x3 convs + 1) as a layer list.

    ``fix=True`` is the official ``--fix yes``: first conv and final FC layer not trained.
    ``fix_first`` / ``fix_last`` override the two halves separately. The paper's recipes are
    ``cntk(d, "vanilla", fix=False)`` (CNTK-V) and ``cntk(d, "gap", fix=True)`` (CNTK-GAP).
    The same network as ``Architecture.from_options(...).network()``.
    """
    return Architecture.from_options(depth, readout, fix, fix_first, fix_last).network()
