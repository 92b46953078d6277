"""The paper's architectures as plain layer lists."""

from __future__ import annotations

from .architecture import MYRTLE_POOLS, Architecture
from .layers import Network
from .validation import ParameterError


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


def myrtle(
    depth: int = 5,
    *,
    fix: bool = False,
    fix_first: bool | None = None,
    fix_last: bool | None = None,
    padding: str = "zero",
    flip: bool = False,
) -> Architecture:
    """The Myrtle network of Shankar et al. (2020) of ``depth`` 5, 7 or 10 as an Architecture.

    Stages of 2,1,1 / 2,2,2 / 3,3,3 blocks of a 3x3 convolution and a ReLU, a 2x2 average pooling
    after the first and second stage (32x32 -> 16x16 -> 8x8 on CIFAR-10), then global average
    pooling (the three further 2x2 poolings of the original on 8x8 are exactly that) and a dense
    layer: ``depth`` = number of convolutions + 1, as for the paper's CNTK. Use it with
    ``kind="nngp"`` (Shankar et al.'s CNN-GP) or ``"ntk"``.
    """
    if depth not in MYRTLE_POOLS:
        raise ParameterError("depth", f"Myrtle networks have depth 5, 7 or 10, got {depth!r}")
    return Architecture.from_options(
        depth, "gap", fix, fix_first, fix_last, pools=MYRTLE_POOLS[depth], padding=padding, flip=flip
    )
