"""Fused CPU engine for networks with 2x2 average pooling between conv stages (Myrtle networks).

``Architecture(depth, readout, pools=(...))``: the convolutions come in stages, separated by
``AvgPool(2)`` after the conv counts named in ``pools``; stage ``s`` runs on a ``P_s x Q_s`` grid with
``P_{s+1} = P_s // 2`` (a trailing odd row or column is dropped, as :class:`cntk_core.layers.AvgPool`
does). :mod:`cntk_core.cpu_planes` runs each shift block of a pair through every layer alone, but
pooling couples displacement planes (pooled displacement ``d'`` reads ``2d' - 1, 2d', 2d' + 1`` per
axis), so here one pair goes stage by stage (:func:`cntk_core.cpu_stages_kernels.pair_value`): each
of the stage's shift blocks runs through the stage's layers in L1 and is scatter-added into the
pair's pooled tensor of the next stage (``(P'Q')^2`` entries: 512 KB in float64 at 32x32 input,
held in L2), from which the next stage gathers its shift blocks, down to the last stage's readout
(GAP sum, vanilla diagonal, or LAP's weighted sum). Theta is pooled exactly like Sigma.

Only the displacements that reach the readout are visited: vanilla needs the delta = 0 plane at
the last stage, hence ``|delta| <= 1`` one stage before, ``<= 3`` two stages before (radius
``2R + 1`` per pooling); LAP ``|delta| <= 2c``; GAP every plane. The per-image variance maps of every
layer (the ReLU's normalisation) are the diagonals of the self pair ``(x, x)``, which at a pooled
stage need more than the previous stage's delta = 0 plane: ``prepare`` runs each image's self pair
through the stages in K-only mode over the blocks within these radii from a zero radius at the last
stage (one pair's partial work per image, O(n)). Self pairs of a symmetric Gram visit half of the
blocks, each standing for its transpose too (:func:`cntk_core.cpu_planes.self_pair_shift_blocks`).

Work items for the threads: (pair, run of the first stage's blocks), each run scattering into a
partial pooled tensor of its own; then per pair the partials are added in a fixed order and the
later stages (about 5 % of the work at 32x32) run. A fixed number of runs (:data:`_CHUNKS`, 2) keeps
a pair's value independent of the call and of the threads, and gives a many-core machine twice
the items of one pair per thread, for about 4 % more work on one core (measured on the NNGP of
Myrtle-5, 32x32: 1 run 0.302 s, 2 runs 0.313 s, 4 runs 0.327 s CPU for a symmetric Gram of 8
images; one pair alone on 2 cores: 43.7, 37.4, 23.5 ms; a shared 2-core host, timings +-20 %).
"""

from __future__ import annotations

import numpy as np

from . import cpu_stages_kernels as K
from .architecture import Architecture
from .cpu_planes import constants
from .recurrence import lap_counts
from .validation import ParameterError

_READOUT_CODES = {"gap": K.GAP, "vanilla": K.VANILLA, "lap": K.LAP}
#: work items per pair: runs of the first stage's blocks, each into a partial pooled tensor (fixed
#: per block list, so that a pair's value never depends on the call; see :func:`_chunks`)
_CHUNKS = 2
#: first-stage blocks per run at least (shorter lists, e.g. vanilla's, run whole)
_MIN_CHUNK_BLOCKS = 64
#: bytes of partial pooled tensors per kernel call (pairs are sent in groups that fit)
_PARTIAL_BYTES = 64 << 20


def stage_geometry(spec: Architecture, p: int, q: int) -> np.ndarray:
    """int64 ``(S, 4)``: per stage ``(P_s, Q_s, h0, h1)``, its grid and its layers ``h0 .. h1 - 1``
    (0-based conv indices); ``S = len(pools) + 1`` and only the last stage can have no layer (a
    pooling after the last conv). ``ParameterError("pools")`` where a pooling meets a map under 2x2."""
    spec.stage_shape(p, q)  # raises on a pooling of a map smaller than 2x2
    bounds = [0, *spec.pools, spec.n_conv]
    rows = []
    for s in range(len(bounds) - 1):
        rows.append((p, q, bounds[s], bounds[s + 1]))
        p, q = p // 2, q // 2
    return np.array(rows, np.int64)


def needed_blocks(p: int, q: int, ri: int, rj: int, half: bool) -> tuple[np.ndarray, np.ndarray]:
    """The shift blocks holding a displacement ``(di, dj)`` with ``|di| <= ri``, ``|dj| <= rj``
    (block ``(di Q + dj) mod PQ``), ascending (block 0 first), and their float64 weights; ``half``:
    a self pair's blocks ``k <= PQ / 2`` only, with weight 2 for those that stand for block
    ``PQ - k`` too."""
    n = p * q
    di = np.arange(-min(ri, p - 1), min(ri, p - 1) + 1)
    dj = np.arange(-min(rj, q - 1), min(rj, q - 1) + 1)
    blocks = np.unique((di[:, None] * q + dj[None, :]) % n).astype(np.int64)
    if not half:
        return blocks, np.ones(len(blocks))
    blocks = blocks[2 * blocks <= n]
    return blocks, np.where((blocks == 0) | (2 * blocks == n), 1.0, 2.0)


def _chunks(bstart: np.ndarray) -> int:
    """Runs per pair of a block list's first stage: up to :data:`_CHUNKS` of at least
    :data:`_MIN_CHUNK_BLOCKS` blocks."""
    return int(min(_CHUNKS, max(1, (bstart[1] - bstart[0]) // _MIN_CHUNK_BLOCKS)))


def block_lists(geo: np.ndarray, ri: int, rj: int, half: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(blocks, bstart, bweight)`` of every stage (see :func:`needed_blocks`), flat, for the last
    stage's radius ``(ri, rj)``; an earlier stage needs ``2R + 1`` of the next one's ``R``."""
    per_stage = []
    for s in range(len(geo) - 1, -1, -1):
        p, q = int(geo[s, 0]), int(geo[s, 1])
        ri, rj = min(ri, p - 1), min(rj, q - 1)
        per_stage.append(needed_blocks(p, q, ri, rj, half))
        ri, rj = 2 * ri + 1, 2 * rj + 1
    per_stage.reverse()
    bstart = np.cumsum([0] + [len(b) for b, _ in per_stage]).astype(np.int64)
    return (
        np.concatenate([b for b, _ in per_stage]),
        bstart,
        np.concatenate([w for _, w in per_stage]),
    )


class StagedEngine:
    """Fused CPU engine (:mod:`cntk_core.cpu_stages_kernels`) for Architectures with ``pools``.

    Same interface as :class:`cntk_core.engines.NumbaEngine` with one depth: ``pairs`` returns float64
    ``(n_pairs,)``. ``supports(spec)``: pools non-empty, zero padding, readout ``"gap"``,
    ``"vanilla"`` or ``"lap"`` (LAP on the last stage); ``flip`` is the Gram driver's wrapper's.
    Allocates per block of images their flat variance maps (``4 sum_h P_h Q_h`` numbers per
    image in the arithmetic dtype); per kernel call up to :data:`_PARTIAL_BYTES` of partial pooled
    tensors (per pair and run ``(P Q / 4)^2`` numbers, times 2 for the NTK: 512 KB in float64 at
    32x32), and per pair in flight its later stages' buffers (a sixteenth of that per stage).
    """

    def __init__(self, spec: Architecture, shape: tuple, kind: str, dtype):
        if not self.supports(spec):
            raise ParameterError("pools", f"StagedEngine runs networks with pools and zero padding, got {spec!r}")
        p, q = int(shape[0]), int(shape[1])
        self.spec = spec
        self.dtype = np.dtype(dtype)
        self.ntk = kind == "ntk"
        self.p = p
        self.geo = stage_geometry(spec, p, q)
        pq = self.geo[:, 0] * self.geo[:, 1]
        layer_pq = np.concatenate([np.full(h1 - h0, n) for (_, _, h0, h1), n in zip(self.geo, pq, strict=True)])
        self.moff = np.concatenate([[0], np.cumsum(2 * layer_pq)[:-1]]).astype(np.int64)
        self.m_total = int(2 * layer_pq.sum())
        p_s, q_s = int(self.geo[-1, 0]), int(self.geo[-1, 1])
        self.readout = _READOUT_CODES[spec.readout]
        if spec.readout == "lap":
            self.wr, self.wc = lap_counts(p_s, spec.lap_c), lap_counts(q_s, spec.lap_c)
            radius = 2 * spec.lap_c
            self.scale = 1.0 / float(2 * spec.lap_c + 1) ** 4
        else:
            self.wr = self.wc = np.zeros((1, 1))
            radius = p_s + q_s if spec.readout == "gap" else 0
            self.scale = 1.0 / float(p_s * q_s) ** 2 if spec.readout == "gap" else 1.0
        self.blocks = block_lists(self.geo, radius, radius, False)
        self.self_blocks = block_lists(self.geo, radius, radius, True)
        self.map_blocks = block_lists(self.geo, 0, 0, True)
        # no trained layer: the NTK is identically 0 (Architecture.check_trainable)
        self.zero = self.ntk and spec.n_conv == 1 and spec.fix_first and spec.fix_last
        starts = self.blocks[1]
        per_stage = [(starts[s + 1] - starts[s]) * int(pq[s]) * max(1, int(h1 - h0)) for s, (_, _, h0, h1) in
                     enumerate(self.geo)]  # fmt: skip
        self.pair_cost = float(sum(per_stage))

    @staticmethod
    def supports(spec: Architecture | None) -> bool:
        """Whether this engine runs ``spec`` (``None``: a layer list of no Architecture's shape):
        pooling, zero padding, any readout; ``flip`` does not matter (the Gram driver's wrapper)."""
        return spec is not None and bool(spec.pools) and spec.padding == "zero" and spec.readout in _READOUT_CODES

    def prepare(self, x: np.ndarray):
        """``(images (n, C, PQ) channel-planar, flat maps (n, 2, M))`` in the arithmetic dtype for
        NHWC images ``x``; O(n) work (each image's self pair within the radii of the diagonals)."""
        n, p, q, ch = x.shape
        x = np.ascontiguousarray(np.asarray(x, dtype=self.dtype).transpose(0, 3, 1, 2)).reshape(n, ch, p * q)
        maps = K.image_maps(x, self.geo, self.moff, self.m_total, *self.map_blocks,
                            self.wr, self.wc, constants(self.dtype))  # fmt: skip
        return x, maps

    def pairs(self, state1, state2, rows, cols) -> np.ndarray:
        """float64 ``(n_pairs,)``: the kernel of the pairs ``(rows[i], cols[i])``; self pairs of a
        symmetric Gram (the same state on both sides, ``rows == cols``) visit half the blocks."""
        rows, cols = np.ascontiguousarray(rows, np.int64), np.ascontiguousarray(cols, np.int64)
        if self.zero:
            return np.zeros(len(rows))
        same = rows == cols if state1 is state2 else np.zeros(len(rows), bool)
        out = np.empty(len(rows))
        for mask, lists in ((same, self.self_blocks), (~same, self.blocks)):
            if mask.any():
                out[mask] = self._values(state1, state2, rows[mask], cols[mask], lists)
        return out * self.scale

    def _values(self, state1, state2, rows, cols, lists):
        (xa, ma), (xb, mb) = state1, state2
        s = self.spec
        chunks = _chunks(lists[1])
        n2 = int(self.geo[0, 0] // 2 * (self.geo[0, 1] // 2))
        per_pair = chunks * n2 * n2 * self.dtype.itemsize * (2 if self.ntk else 1)
        group = max(1, _PARTIAL_BYTES // per_pair)
        out = np.empty(len(rows))
        for g in range(0, len(rows), group):
            out[g : g + group] = K.pair_values(
                xa, xb, ma, mb, rows[g : g + group], cols[g : g + group], self.geo, self.moff, *lists, self.wr,
                self.wc, self.ntk, s.fix_first, s.fix_last, self.readout, constants(self.dtype), chunks,
            )  # fmt: skip
        return out
