"""The LAP readout on the fused CPU engine (:mod:`cntk_core.cpu_planes`): its per-axis weight
tables, its scale, and the shift blocks worth visiting.

LAP with window ``c`` (Li et al. 2019; ``docs/math.md``, "Local average pooling") reads
``sum_{p, p'} w(p, p') Theta[p, p']`` with the separable weight
``w = n_P(p_r, p'_r) n_Q(p_c, p'_c) / (2c + 1)^4``; ``n_P``, ``n_Q`` are the per-axis counts of
:func:`cntk_core.recurrence.lap_counts` (integers, exact in float64). The engine sums the integer
counts' products per entry and applies ``(2c + 1)^-4`` once per pair, as GAP's ``1 / (PQ)^2``.

In shift block ``k`` (see :mod:`cntk_core.cpu_planes`), entry ``f = r Q + t`` pairs position
``(f + k) mod PQ`` of the first image with position ``f`` of the second, so its weight is
``n_P[a_r, r] n_Q[a_c, t]`` with ``a = (f + k) mod PQ``. With zero padding ``n_P[u, u']`` is
nonzero iff ``|u - u'| <= 2c``: only the blocks holding a displacement plane with
``|delta_r|, |delta_c| <= 2c`` have a nonzero weight (at most ``(4c + 1)^2`` blocks; ``c = 0``: block
0 alone, the vanilla readout, with every weight 1). :func:`lap_shift_blocks` lists exactly the
blocks with a nonzero weight, from the tables themselves, so it holds for any counts.

The compiled loops that ``cpu_planes.pair_sums`` calls (``lap_entry_weights``, the weighted sum
``_weighted_flat_sum``) live in :mod:`cntk_core.cpu_planes` itself: Numba's on-disk cache of a
function is keyed on its own file's contents, so a compiled callee in another file could change
without invalidating the cached caller that inlined it. This module is called from Python only.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import recurrence as R


def lap_tables(p: int, q: int, c: int, padding: str = "zero") -> tuple[np.ndarray, np.ndarray]:
    """LAP's per-axis counts ``(n_P, n_Q)``: float64 ``[P, P]`` and ``[Q, Q]`` integer tables
    (:func:`cntk_core.recurrence.lap_counts`; ``padding="circular"`` wraps the shifts around)."""
    circular = padding == "circular"
    return R.lap_counts(p, c, circular), R.lap_counts(q, c, circular)


def lap_scale(c: int) -> float:
    """The factor ``(2c + 1)^-4`` that turns the summed integer weights into LAP."""
    return 1.0 / float(2 * c + 1) ** 4


@njit(cache=True, nogil=True, error_model="numpy")
def _nonzero_blocks(wp, wq):
    """bool ``(PQ,)``: whether shift block k holds an entry of nonzero LAP weight ``wp[a_r, r] wq[a_c, t]``.

    The block's columns ``t < Q - kt`` pair first-image rows ``a_r = (r + kr) mod P``, the others
    (which carry) ``(r + kr + 1) mod P``, and every column ``a_c = (t + kt) mod Q``: the weights of
    each of these two sides are products of a row factor and a column factor, so a side has a
    nonzero weight iff some row factor and some column factor are nonzero. O(PQ (P + Q))."""
    p_, q_ = wp.shape[0], wq.shape[0]
    out = np.zeros(p_ * q_, np.bool_)
    for kr in range(p_):
        for kt in range(q_):
            for side in range(2):  # 0: columns 0 .. Q - kt - 1; 1: the carrying columns Q - kt .. Q - 1
                t0, t1 = (0, q_ - kt) if side == 0 else (q_ - kt, q_)
                cols = False
                for t in range(t0, t1):
                    cols = cols or wq[(t + kt) % q_, t] != 0.0
                rows = False
                for r in range(p_):
                    rows = rows or wp[(r + kr + side) % p_, r] != 0.0
                if cols and rows:
                    out[kr * q_ + kt] = True
    return out


def lap_shift_blocks(wp: np.ndarray, wq: np.ndarray) -> np.ndarray:
    """The shift blocks that hold an entry of nonzero LAP weight (int64, ascending): with zero
    padding those of the displacement planes with ``|delta_r|, |delta_c| <= 2c``, block 0 alone for
    ``c = 0``. The set is closed under ``k -> (PQ - k) mod PQ`` (the weights are symmetric)."""
    return np.flatnonzero(_nonzero_blocks(np.ascontiguousarray(wp), np.ascontiguousarray(wq))).astype(np.int64)
