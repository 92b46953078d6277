"""Kernel engines behind :func:`cntk_core.kernel_matrix`: one small interface, several backends.

An engine turns a block of images into per-image state once (``prepare``: the variance maps,
O(n) work) and then evaluates many pairs (``pairs``). The Gram driver in :mod:`cntk_core.gram`
only talks to this interface.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from . import recurrence as R
from .architecture import Architecture
from .backend import to_host
from .layers import Network


class Engine(Protocol):
    """``pairs`` returns float64 values ``(n_pairs,)`` or ``(n_pairs, n_depths)``."""

    #: relative cost of one pair, used to size batches and to decide whether to show progress
    pair_cost: float

    def prepare(self, x: np.ndarray): ...

    def pairs(self, state1, state2, rows: np.ndarray, cols: np.ndarray) -> np.ndarray: ...


#: images per side of the blocks in which :class:`NumbaEngine` visits vanilla pairs
_CACHE_BLOCK = 8


class NumbaEngine:
    """Fused CPU planes (:mod:`cntk_core.cpu_planes`) for the architectures of :meth:`supports`:
    the paper's GAP and vanilla readouts and LAP (:mod:`cntk_core.cpu_lap`), zero padding, no pooling.

    ``pairs`` returns ``(n_pairs, len(depths))``: one column per requested depth (default: the
    network's own). GAP visits all ``PQ`` shift blocks, vanilla block 0 alone, LAP with window
    ``c`` only the blocks with a nonzero LAP weight (displacements up to ``2c`` per axis; ``c = 0``:
    block 0, as vanilla), each summed with per-entry weights. Self pairs of a symmetric Gram (the
    same prepared state on both sides and ``rows == cols``) sum half of those shift blocks
    (:func:`cpu_planes.self_pair_shift_blocks`), equal to the full sum up to its rounding.
    Allocates per block of images their variance maps ``(n, L, 2, 2PQ)`` in the arithmetic dtype,
    and per pair batch ``n_pairs * n_shift_blocks * len(depths)`` float64 partial sums; each work
    item uses eight rows of about PQ entries (masks and scratch; LAP: one more float64 row).
    """

    @staticmethod
    def supports(spec: Architecture | None) -> bool:
        """Whether this engine runs the network ``spec`` (an :class:`Architecture`, or ``None`` for a
        layer list of no canonical shape): any readout, zero padding, no pooling. ``flip`` does not
        matter: the Gram driver forms the flipped kernel from two evaluations."""
        return spec is not None and spec.padding == "zero" and not spec.pools

    def __init__(self, spec: Architecture, shape: tuple, kind: str, dtype: np.dtype, depths=None):
        from . import cpu_lap, cpu_planes

        if not self.supports(spec):
            raise ValueError(f"the fused CPU engine does not run {spec!r} (see NumbaEngine.supports)")
        self._cp = cpu_planes
        self.spec = spec
        self.out_layers = np.array(sorted(depths or [spec.depth]), np.int64) - 1
        if self.out_layers[0] < 1 or self.out_layers[-1] != spec.n_conv:
            raise ValueError(f"depths {depths} must be >= 2 and end at the network's depth {spec.depth}")
        self.ntk = kind == "ntk"
        self.dtype = dtype
        p, q = shape[0], shape[1]
        self.p = p
        if spec.readout == "lap":
            # LAP: per-entry integer weights (n_P n_Q) in the blocks that hold a nonzero one
            self.lap = cpu_lap.lap_tables(p, q, spec.lap_c, spec.padding)
            self.shift_blocks = cpu_lap.lap_shift_blocks(*self.lap)
            self.scale = cpu_lap.lap_scale(spec.lap_c)
        else:
            # empty tables, not None: one compiled pair_sums for every readout (None compiles another)
            self.lap = (np.zeros((0, 0)), np.zeros((0, 0)))
            self.shift_blocks = cpu_planes.shift_blocks(p, q, spec.readout)
            self.scale = 1.0 if spec.readout == "vanilla" else R.gap_scale(p, q)
        self.weights = np.ones(len(self.shift_blocks))
        # a self pair (x, x) is symmetric, and so are the readouts' weights: half of its shift
        # blocks stand for the other half
        self.self_blocks = None
        if len(self.shift_blocks) > 1:
            visited = None if spec.readout == "gap" else self.shift_blocks
            self.self_blocks = cpu_planes.self_pair_shift_blocks(p, q, visited)
        self.pair_cost = float(len(self.shift_blocks) * p * q * spec.n_conv)  # the entries of the visited blocks

    def prepare(self, x):
        n, p, q, ch = x.shape
        x = np.ascontiguousarray(np.asarray(x, dtype=self.dtype).transpose(0, 3, 1, 2)).reshape(n, ch, p * q)
        return x, self._cp.image_maps(x, p, self.spec.n_conv, self._cp.constants(self.dtype))

    def pairs(self, state1, state2, rows, cols):
        rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
        same = rows == cols if state1 is state2 and self.self_blocks is not None else None
        if same is None or not same.any():
            return self._pairs(state1, state2, rows, cols, self.shift_blocks, self.weights)
        # self pairs (x, x) of a symmetric Gram's diagonal tile: half the shift blocks, see
        # cpu_planes.self_pair_shift_blocks (equal to the full sum up to its rounding)
        out = np.empty((len(rows), len(self.out_layers)))
        out[same] = self._pairs(state1, state2, rows[same], cols[same], *self.self_blocks)
        if not same.all():
            out[~same] = self._pairs(state1, state2, rows[~same], cols[~same], self.shift_blocks, self.weights)
        return out

    def _pairs(self, state1, state2, rows, cols, blocks, weights):
        (xa, va), (xb, vb) = state1, state2
        s = self.spec
        # Vanilla pairs are cheap (one plane), so reading the two images' maps dominates unless
        # pairs come in small blocks of images whose maps stay in cache: visit the pairs in
        # 8 x 8 image blocks (the results do not depend on the order).
        order = np.lexsort((cols, rows, cols // _CACHE_BLOCK, rows // _CACHE_BLOCK)) if len(blocks) == 1 else None
        if order is not None:
            rows, cols = rows[order], cols[order]
        sums = self._cp.pair_sums(
            xa,
            xb,
            va,
            vb,
            self.p,
            np.ascontiguousarray(rows),
            np.ascontiguousarray(cols),
            blocks,
            weights,
            self.out_layers,
            s.fix_first,
            s.fix_last,
            self.ntk,
            self._cp.constants(self.dtype),
            *self.lap,
        )
        if order is not None:
            sums[order] = sums.copy()
        return sums * self.scale


class PerLayerEngine:
    """Any :class:`Network`, one array operation per layer on full ``(B, P, Q, P, Q)`` tensors.

    This is the official code's design (and the GPU baseline when ``xp`` is CuPy). Memory: a
    batch of B pairs holds about six float tensors of ``B * (P Q)^2`` entries; B is chosen so that
    this stays under ``budget_bytes``.
    """

    def __init__(self, network: Network, shape: tuple, kind: str, dtype: np.dtype, xp=np, budget_bytes=256 << 20):
        self.network = network
        self.ntk = kind == "ntk"
        self.dtype = dtype
        self.xp = xp
        p, q = shape[0], shape[1]
        per_pair = 6 * (p * q) ** 2 * np.dtype(dtype).itemsize
        self.batch = max(1, int(budget_bytes // per_pair))
        self.pair_cost = float((p * q) ** 2 * max(network.n_relu, 1) * 4)

    def _to_device(self, a):
        return self.xp.asarray(np.ascontiguousarray(a, dtype=self.dtype))

    def prepare(self, x):
        """Variance maps at every ReLU: ``list`` of ``(n, P_k, Q_k)`` arrays (self pairs' diagonals)."""
        xs = self._to_device(x)
        maps: list[list] = [[] for _ in range(self.network.n_relu)]
        for start in range(0, len(xs), self.batch):
            xb = xs[start : start + self.batch]

            def own_diagonal(k, sigma):
                d = R.diagonal(sigma)
                maps[k].append(d)
                return d, d

            self.network.forward(R.input_covariance(xb, xb), own_diagonal)
        return xs, [self.xp.concatenate(m) for m in maps]

    def pairs(self, state1, state2, rows, cols):
        (xa, va), (xb, vb) = state1, state2
        out = np.empty(len(rows))
        for start in range(0, len(rows), self.batch):
            r = self.xp.asarray(rows[start : start + self.batch])
            c = self.xp.asarray(cols[start : start + self.batch])
            sigma, theta = self.network.forward(
                R.input_covariance(xa[r], xb[c]), lambda k, _s, r=r, c=c: (va[k][r], vb[k][c])
            )
            value = theta if self.ntk else sigma
            out[start : start + len(rows[start : start + self.batch])] = to_host(value)
        return out


def make_engine(backend: str, network: Network, shape: tuple, kind: str, dtype: np.dtype, depths=None) -> Engine:
    """The engine for ``backend`` (already resolved): the backend's fused engine where its
    ``supports`` accepts the network's :class:`Architecture` (``Network.canonical``), else the
    per-layer path.

    ``depths``: ask the Numba engine for the kernels of these depths in one pass (the only engine
    that gives several; :func:`cntk_core.gram.depths_in_one_pass` says when callers may ask); any
    other engine refuses more than one depth (``ValueError``).
    """
    spec = network.canonical()
    if backend == "numba" and NumbaEngine.supports(spec):
        return NumbaEngine(spec, shape, kind, dtype, depths)
    if depths is not None and list(depths) != [network.n_relu + 1]:
        raise ValueError(f"depths {list(depths)}: only the fused CPU engine gives several depths in one pass")
    if backend == "numba" and spec is not None and spec.pools:
        from .cpu_stages import StagedEngine  # pooled networks (Myrtle), stage by stage

        if StagedEngine.supports(spec):
            return StagedEngine(spec, shape, kind, dtype)
    if backend == "cupy":
        import cupy

        if spec is not None:
            from .gpu import FusedGPUEngine

            if FusedGPUEngine.supports(spec):
                return FusedGPUEngine(spec, shape, kind, dtype)
            from .gpu_stages import StagedGPUEngine  # pooled networks (Myrtle), one launch per stage

            if StagedGPUEngine.supports(spec):
                return StagedGPUEngine(spec, shape, kind, dtype)
        return PerLayerEngine(network, shape, kind, dtype, xp=cupy)
    return PerLayerEngine(network, shape, kind, dtype)
