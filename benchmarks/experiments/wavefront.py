"""Experiment (not used by cntk_core): a float64 CPU path whose one loop runs S0 and the layers
of a shift tile as a wavefront. Measured against the engine's path by ``benchmarks/bench_fused.py``
and not adopted: its best rounds are 0.96-1.19x the engine's speed, its median rounds 0.87-1.10x
(0.87-0.97x at 2 threads); it gains when this host runs at its fast speed level and loses at its
slow one, where it spends most of the time (``benchmarks/RESULTS.md``, eleventh session). It
computes the same sums as :func:`cntk_core.cpu_planes.pair_sums` (within 1e-15).

Same math and the same shift tiles as :mod:`cntk_core.cpu_planes` (read its docstring first):
the pair's covariance entries are grouped in ``PQ`` shift tiles of ``PQ`` entries, each run
through all layers with 3x3 box sums (tr3) whose neighbours are masked at the image edges and
the tiles' plane cuts. That path runs one loop per step and layer over the whole tile (S0, row
sums, ReLU layer, row sums, ...), so each loop is bound by one unit: the square roots and
divisions of a ReLU loop keep the divider busy while the load and multiply units wait, and in the
S0 and row-sum loops it is the other way round.

Here the tile is a stream of 8-entry vectors (``simd.py``) and the layers run two per pass over
it (:func:`_pass`): at step ``j`` the first of the two runs its ReLU dual at vector ``j``, the
second at ``j - D``, far enough behind that the rows it reads (the vector and its upper and lower
neighbours, Q entries away) are finished; the first pass also forms S0 and its row sums ``D0``
vectors ahead of layer 1. The row 3-sum of a layer's output is formed from its three newest
output vectors, held in registers (the neighbours e - 1 and e + 1 are lane shifts of them), so K
and Theta are never stored, only their row sums. One step thus mixes the divider work of two
layers with the loads and adds of the other stages, and every value goes to memory once per
layer. Masks are bits (a masked add instead of a multiply by 0/1). Two layers and not all of
them per pass: with a loop over a run-time number of layers inside the step, the rolling outputs
go through memory and the step has no straight-line schedule. That version was only measured
with array arguments, which cost reference counting at every call (0.55-0.95x the engine).

Only for float64 arithmetic and ``PQ`` a multiple of 8. The dual is the
formula of :mod:`cntk_core.cpu_planes` with asin's rational replaced by a polynomial (no division).
"""

from __future__ import annotations

import numpy as np
import simd as v
from numba import njit, prange

from cntk_core.cpu_planes import tile_masks, weighted_tile_sums

_INLINE = {"cache": True, "nogil": True, "error_model": "numpy", "inline": "always"}
_KERNEL = {"cache": True, "nogil": True, "error_model": "numpy"}

#: extra vectors between a stage and the one it reads, beyond what the reads need, so that the
#: stages inside one step do not wait on each other's just-computed results (a 16x16 depth-3
#: prototype: about 1.2x with 1 than with 0)
_LAG = 1

#: asin(s) = s + s z g(z), z = s^2 in [0, 1/4]: g's coefficients, a least-squares fit on 200
#: Chebyshev nodes in 40-digit arithmetic (mpmath) of (asin(sqrt z) / sqrt z - 1) / z, degree 11;
#: evaluated in float64 it is within 1.5e-16 of asin (relative) on (0, 1/2] (``fit_asin.py``)
_G = (
    0.16666666666666646, 0.07500000000021978, 0.04464285710146497, 0.030381947490254527,
    0.022372043664706378, 0.017355334434132383, 0.013928781847841392, 0.011882032645784928,
    0.0077714397645414456, 0.016129764409156828, -0.010908304349000406, 0.028285381520428275,
)  # fmt: skip


@njit(**_INLINE)
def _pi_minus_arccos(x, c, nonneg):
    """pi - arccos(x), lane-wise; see :func:`cntk_core.cpu_planes._pi_minus_arccos` (same
    constants ``c`` and formula; ``nonneg``: x in [-1/2, 1] only)."""
    one, half = c[2], c[3]
    ax = x if nonneg else v.fabs(x)
    big = v.greater(ax, v.splat(half))
    z = v.where(big, v.mul(v.sub(v.splat(one), ax), v.splat(half)), v.mul(ax, ax))
    # asin(s) = s + s z g(z), g a degree-11 polynomial (Estrin): no division
    z2 = v.mul(z, z)
    z4 = v.mul(z2, z2)
    g01 = v.fma(z, v.splat(_G[1]), v.splat(_G[0]))
    g23 = v.fma(z, v.splat(_G[3]), v.splat(_G[2]))
    g45 = v.fma(z, v.splat(_G[5]), v.splat(_G[4]))
    g67 = v.fma(z, v.splat(_G[7]), v.splat(_G[6]))
    g89 = v.fma(z, v.splat(_G[9]), v.splat(_G[8]))
    gab = v.fma(z, v.splat(_G[11]), v.splat(_G[10]))
    lo = v.fma(z4, v.fma(z2, g67, g45), v.fma(z2, g23, g01))
    hi = v.fma(z2, gab, g89)
    g = v.fma(v.mul(z4, z4), hi, lo)
    s = v.where(big, v.sqrt(z), ax)
    a = v.fma(v.mul(s, z), g, s)  # asin(s)
    return angle_from_asin(x, a, big, c, nonneg)


@njit(**_INLINE)
def angle_from_asin(x, a, big, c, nonneg):
    """pi - arccos(x) from ``a`` = asin(s), s = sqrt((1 - |x|) / 2) where ``big`` (|x| > 1/2), else
    s = |x|: arccos|x| = 2 a (big) or pi/2 - a, and pi - arccos(x) = pi - arccos|x| (x >= 0) or
    arccos|x|; one multiply-add (``nonneg``: x >= -1/2 only, see :func:`_pi_minus_arccos`)."""
    pi, half = c[0], c[3]
    if nonneg:
        coef = v.where(big, v.splat(-2.0), v.splat(1.0))
        base = v.where(big, v.splat(pi), v.splat(pi * half))
        return v.fma(coef, a, base)
    pos = v.greater_equal(x, v.zeros())
    coef = v.where(pos, v.where(big, v.splat(-2.0), v.splat(1.0)), v.where(big, v.splat(2.0), v.splat(-1.0)))
    base = v.where(big, v.where(pos, v.splat(pi), v.zeros()), v.splat(pi * half))
    return v.fma(coef, a, base)


@njit(**_INLINE)
def _clip(rho, c, nonneg):
    """rho snapped to 1 within 4 ulp of it and clipped to [-1, 1] (see cpu_planes._clip_rho)."""
    one = v.splat(c[2])
    low = rho if nonneg else v.maximum(rho, v.splat(-c[2]))
    return v.where(v.greater(rho, v.splat(c[2] - c[14])), one, low)


@njit(**_INLINE)
def _k(rho, norm, phi, c):
    """K = norm (rho phi + sqrt(1 - rho^2)), rho clipped, phi = pi - arccos(rho)."""
    return v.mul(norm, v.fma(rho, phi, v.sqrt(v.fma(v.sub(v.zeros(), rho), rho, v.splat(c[2])))))


@njit(**_INLINE)
def _dual(rho, norm, theta, c, mode, nonneg):
    """(K, new Theta) of 8 entries from their raw correlations ``rho``. ``mode``: 0 both, 1 K
    alone (Theta returned as K), 2 Theta alone (K returned as 0)."""
    rho = _clip(rho, c, nonneg)
    phi = _pi_minus_arccos(rho, c, nonneg)
    if mode == 2:
        return v.zeros(), v.mul(phi, v.mul(v.splat(c[1]), theta))
    k = _k(rho, norm, phi, c)
    if mode == 1:
        return k, k
    return k, v.fma(phi, v.mul(v.splat(c[1]), theta), k)


@njit(**_INLINE)
def _box_rows(bits, nv, i, prev, cur, nxt):
    """Row 3-sum of vector ``i`` (``cur``; ``prev``, ``nxt`` the vectors before and after it):
    cur + left neighbour + right neighbour, each where its mask bit is set."""
    inner = v.add_where(v.load_mask(bits, nv + i), cur, v.shift_next(cur, nxt))
    return v.add_where(v.load_mask(bits, i), inner, v.shift_prev(prev, cur))


@njit(**_INLINE)
def _box_cols(buf, e, q_, bits, nv, i):
    """Column 3-sum at buffer index ``e`` (vector ``i`` of the tile) of stored row sums."""
    inner = v.add_where(v.load_mask(bits, 3 * nv + i), v.load(buf, e), v.load(buf, e + q_))
    return v.add_where(v.load_mask(bits, 2 * nv + i), inner, v.load(buf, e - q_))


@njit(**_INLINE)
def _layer_at(buf, m, s_row, t_row, q_, bits, nv, i, ma_, mb_, oma, omb, k, two_n, mh, c, mode, nonneg):
    """(K, new Theta) of a layer at vector ``i`` of the tile: its inputs are the column sums of
    the stored row sums in buffer rows ``s_row`` (Sigma) and ``t_row`` (Theta; the same row when
    Theta equals Sigma), its maps at ``mh`` within each image's maps."""
    f = 8 * i
    s_in = _box_cols(buf, s_row * m + q_ + f, q_, bits, nv, i)
    t_in = s_in
    if mode != 1 and t_row != s_row:
        t_in = _box_cols(buf, t_row * m + q_ + f, q_, bits, nv, i)
    rho = v.mul(s_in, v.mul(v.load(ma_, oma + mh + two_n + k + f), v.load(mb_, omb + mh + two_n + f)))
    norm = v.mul(v.load(ma_, oma + mh + k + f), v.load(mb_, omb + mh + f))
    return _dual(rho, norm, t_in, c, mode, nonneg)


@njit(**_INLINE)
def _store_row_sums(buf, m, s_row, t_row, q_, bits, nv, i, k3, t3, mode):
    """Store the row sums at vector ``i`` of K (into buffer row ``s_row``) and, unless ``mode`` is
    1 (Theta = K), of Theta (``t_row``), from the vectors i - 1, i, i + 1 of each."""
    f = q_ + 8 * i
    v.store(buf, s_row * m + f, _box_rows(bits, nv, i, k3[0], k3[1], k3[2]))
    if mode != 1:
        v.store(buf, t_row * m + f, _box_rows(bits, nv, i, t3[0], t3[1], t3[2]))


@njit(**_INLINE)
def _readout(kind, k_new, t_new):
    """What a layer adds to its readout sum (``plan`` column 3): Theta, Theta - K, or nothing."""
    if kind == 0:
        return t_new
    if kind == 1:
        return v.sub(t_new, k_new)
    return v.zeros()


@njit(**_INLINE)
def _pass(data, rows_in, rows_a, rows_b, plan_a, plan_b, la, two, with_s0):
    """One pass over the tile's vectors running layer ``la`` and, with ``two``, layer ``la + 1``
    behind it; ``with_s0`` (a literal): also S0 and its row sums ahead of them (the first pass,
    ``la`` = 1). Arrays come as pointers (``simd.pointer``). rows_in, rows_a,
    rows_b: buffer rows (Sigma, Theta) of the layers' inputs, of layer la's row sums and of layer
    la + 1's; plan_a, plan_b: the two layers' (mode, readout kind, has a readout, has row sums),
    see :func:`layer_plan`; data: the pointers, offsets and sizes of :func:`_fused_tile`. Returns
    the two layers' readout sums."""
    xa, xb, oa, ob, n_ch, k, ma_, mb_, oma, omb, bits, buf, m, q_, nv, c = data
    zero = v.zeros()
    two_n = 2 * nv * 8
    reach = (q_ + 7) // 8
    d_a = reach + _LAG if with_s0 else 0
    d_b = 1 + reach + _LAG
    mode_a, kind_a, out_a, emit_a = plan_a
    mode_b, kind_b, out_b, emit_b = plan_b
    mh_a, mh_b = (la - 1) * 2 * two_n, la * 2 * two_n
    s_in, t_in = rows_in[0], rows_in[1]
    s_a, t_a = rows_a[0], (rows_a[1] if mode_a != 1 else rows_a[0])
    s_b, t_b = rows_b[0], (rows_b[1] if mode_b != 1 else rows_b[0])
    acc_a = zero
    acc_b = zero
    s_prev = zero
    s_cur = zero
    if with_s0:
        for ch in range(n_ch):
            s_cur = v.fma(v.load(xa, oa + ch * two_n + k), v.load(xb, ob + ch * two_n), s_cur)
    ka_prev = zero
    ka_cur = zero
    ta_prev = zero
    ta_cur = zero
    kb_prev = zero
    kb_cur = zero
    tb_prev = zero
    tb_cur = zero
    n_steps = nv + d_a + (d_b + 1 if two else 1)
    for j in range(n_steps):
        if with_s0 and j < nv:  # S0 one vector ahead, Sigma^(0)'s row sums at vector j
            s_next = zero
            if j + 1 < nv:
                f1 = 8 * (j + 1)
                for ch in range(n_ch):
                    s_next = v.fma(v.load(xa, oa + ch * two_n + k + f1), v.load(xb, ob + ch * two_n + f1), s_next)
            v.store(buf, s_in * m + q_ + 8 * j, _box_rows(bits, nv, j, s_prev, s_cur, s_next))
            s_prev = s_cur
            s_cur = s_next
        i = j - d_a
        if 0 <= i <= nv:
            ka_new = zero
            ta_new = zero
            if i < nv:
                ka_new, ta_new = _layer_at(
                    buf, m, s_in, t_in, q_, bits, nv, i, ma_, mb_, oma, omb, k, two_n, mh_a, c, mode_a, not with_s0
                )
                if out_a:
                    acc_a = v.add(acc_a, _readout(kind_a, ka_new, ta_new))
            if emit_a:
                if i >= 1:
                    k3, t3 = (ka_prev, ka_cur, ka_new), (ta_prev, ta_cur, ta_new)
                    _store_row_sums(buf, m, s_a, t_a, q_, bits, nv, i - 1, k3, t3, mode_a)
                ka_prev = ka_cur
                ka_cur = ka_new
                ta_prev = ta_cur
                ta_cur = ta_new
        i = j - d_a - d_b
        if two and 0 <= i <= nv:
            kb_new = zero
            tb_new = zero
            if i < nv:
                kb_new, tb_new = _layer_at(
                    buf, m, s_a, t_a, q_, bits, nv, i, ma_, mb_, oma, omb, k, two_n, mh_b, c, mode_b, True
                )
                if out_b:
                    acc_b = v.add(acc_b, _readout(kind_b, kb_new, tb_new))
            if emit_b:
                if i >= 1:
                    k3, t3 = (kb_prev, kb_cur, kb_new), (tb_prev, tb_cur, tb_new)
                    _store_row_sums(buf, m, s_b, t_b, q_, bits, nv, i - 1, k3, t3, mode_b)
                kb_prev = kb_cur
                kb_cur = kb_new
                tb_prev = tb_cur
                tb_cur = tb_new
    return v.lane_sum(acc_a), v.lane_sum(acc_b)


@njit(**_KERNEL)
def _fused_tile(
    xa, xb, xstride, rows, cols, i0, i1, n_tiles, d, ma_, mb_, mstride, n_conv, k, bits, buf, plan, c, sums
):
    """Readout sums over shift tile ``k`` of the pairs ``(rows[i], cols[i])``, ``i0 <= i < i1``.

    xa, xb: the two sides' flat (n, C, 2PQ) images, each channel stored twice end to end
    (:func:`stored_twice`), ``xstride`` = C 2PQ; ma_, mb_: their flat (n, L, 2, 2PQ) maps
    (:func:`cntk_core.cpu_planes.image_maps`), ``mstride`` = 4 L PQ; bits: (4 PQ / 8) mask bytes
    of the tile (:func:`mask_bits`); buf: scratch of 6 rows of ``m = PQ + 2Q + 8`` whose first Q
    and last Q + 8 entries are zero and stay zero (rows 0-1, 2-3, 4-5: three (Sigma, Theta) pairs
    of row sums, at ``Q .. Q + PQ``, rotated between passes); plan: :func:`layer_plan`. The
    layers run two per pass (:func:`_pass`). Writes ``sums[i * n_tiles + d, j]``.
    """
    nv = bits.shape[0] // 4
    n = 8 * nv
    m = buf.shape[0] // 6
    q_ = (m - n - 8) // 2
    n_ch = xstride // (2 * n)
    slots = np.empty((3, 2), np.int64)
    # helpers get pointers: an array argument costs reference-count updates at every call
    pa, pb, pma, pmb = v.pointer(xa), v.pointer(xb), v.pointer(ma_), v.pointer(mb_)
    pbits, pbuf = v.pointer(bits), v.pointer(buf)
    for pair in range(i0, i1):
        oa, ob = rows[pair] * xstride, cols[pair] * xstride
        oma, omb = rows[pair] * mstride, cols[pair] * mstride
        w = pair * n_tiles + d
        data = (pa, pb, oa, ob, n_ch, k, pma, pmb, oma, omb, pbits, pbuf, m, q_, nv, c)
        for j in range(sums.shape[1]):
            sums[w, j] = 0.0
        for r in range(3):
            slots[r, 0], slots[r, 1] = 2 * r, 2 * r + 1
        # Theta^(0) = Sigma^(0): the input pair of the first layer is one row
        slots[0, 1] = 0
        la = 1
        while la <= n_conv:
            two = la + 1 <= n_conv
            lb = la + 1 if two else la
            s0 = (slots[0, 0], slots[0, 1])
            s1 = (slots[1, 0], slots[1, 1])
            s2 = (slots[2, 0], slots[2, 1])
            p0 = (plan[la, 0], plan[la, 3], plan[la, 2] >= 0, two or la < n_conv)
            p1 = (plan[lb, 0], plan[lb, 3], plan[lb, 2] >= 0, two and lb < n_conv)
            if la == 1:
                ra, rb = _pass(data, s0, s1, s2, p0, p1, la, two, True)
            else:
                ra, rb = _pass(data, s0, s1, s2, p0, p1, la, two, False)
            if plan[la, 2] >= 0:
                sums[w, plan[la, 2]] = ra
            if two and plan[la + 1, 2] >= 0:
                sums[w, plan[la + 1, 2]] = rb
            # the last layer's row sums feed the next pass: rotate (in, a, b) -> (b, in, a)
            _rotate(slots, 2 if two else 1, plan[la + (1 if two else 0), 0] == 1)
            la += 2 if two else 1


@njit(cache=True, nogil=True)
def _rotate(slots, last, k_only):
    """After a pass: the row pair of its last layer (``last``: 1 for layer a, 2 for b) becomes
    the next pass's input, the other two pairs its scratch. ``k_only``: that layer's Theta is its
    K, so Theta is read from Sigma's row."""
    keep = slots[last, 0] // 2
    o1 = 1 if keep == 0 else 0
    o2 = 3 - keep - o1
    slots[0, 0] = 2 * keep
    slots[0, 1] = 2 * keep if k_only else 2 * keep + 1
    slots[1, 0], slots[1, 1] = 2 * o1, 2 * o1 + 1
    slots[2, 0], slots[2, 1] = 2 * o2, 2 * o2 + 1


def layer_plan(n_conv: int, out_layers: np.ndarray, fix_first: bool, fix_last: bool, ntk: bool) -> np.ndarray:
    """(L + 1, 4) int64 per layer l = 1 .. L (row 0 unused): its mode (0: K and Theta, 1: K alone,
    Theta = K: the NNGP, or the NTK's fixed first layer; 2: Theta alone: the readout layer when
    the last layer is fixed), the buffer row of its Theta input (2(l-1): Sigma's, i.e. Theta^(l-1)
    equals Sigma^(l-1); 2(l-1) + 1: its own), the index of its readout in ``out_layers`` or -1,
    and what the readout sums (0: Theta, 1: Theta - K, the fixed last layer at an earlier depth;
    2: nothing, an NTK whose readout layer is fixed and K-only)."""
    plan = np.full((n_conv + 1, 4), -1, np.int64)
    theta_is_sigma = True  # Theta^(0) = Sigma^(0) (or unused: a fixed first layer is K-only)
    outs = {int(layer): j for j, layer in enumerate(out_layers)}
    for layer in range(1, n_conv + 1):
        last = layer == n_conv
        k_only = not ntk or (layer == 1 and fix_first)
        mode = 1 if k_only else (2 if last and fix_last else 0)
        plan[layer, 0] = mode
        plan[layer, 1] = 2 * (layer - 1) + (0 if theta_is_sigma else 1)
        plan[layer, 2] = outs.get(layer, -1)
        if k_only:
            plan[layer, 3] = 2 if ntk and fix_last else 0
        else:
            plan[layer, 3] = 1 if fix_last and not last else 0
        theta_is_sigma = k_only
    return plan


@njit(cache=True, nogil=True, error_model="numpy")
def mask_bits(masks):
    """(4 * PQ / 8) uint8: the 0/1 masks of :func:`cntk_core.cpu_planes.tile_masks` as bits,
    byte ``r * PQ / 8 + i`` for entries ``8 i .. 8 i + 7`` of mask row r (bit b: entry 8 i + b)."""
    nv = masks.shape[1] // 8
    out = np.zeros(4 * nv, np.uint8)
    for r in range(4):
        for i in range(nv):
            byte = 0
            for b in range(8):
                if masks[r, 8 * i + b] != 0.0:
                    byte |= 1 << b
            out[r * nv + i] = byte
    return out


def stored_twice(x: np.ndarray) -> np.ndarray:
    """(n, C, PQ) images -> flat (n C 2PQ) float64 with each channel stored twice end to end
    (so that every shift tile's S0 reads one contiguous window). Allocates 16 n C PQ bytes."""
    return np.ascontiguousarray(np.concatenate([x, x], axis=2), dtype=np.float64).reshape(-1)


_PAIR_GROUP = 32


@njit(cache=True, parallel=True, error_model="numpy")
def pair_sums(xa, xb, xstride, ma, mb, p_, pq, n_conv, rows, cols, tiles, weights, n_out, plan, c):
    """Readout sums for the pairs ``(rows[i], cols[i])`` of the sides ``xa``, ``xb`` (flat
    :func:`stored_twice` images of ``p_`` rows and ``pq`` positions, ``xstride`` = C 2PQ) with
    their flat maps ``ma``, ``mb``, over the shift tiles ``tiles`` with their ``weights``; plan:
    :func:`layer_plan`. Returns float64 ``(n_pairs, n_out)`` (unscaled), like
    :func:`cntk_core.cpu_planes.pair_sums`: work items are (tile, group of pairs), partial sums
    per (pair, tile) reduced in a fixed order. Allocates ``n_pairs * n_tiles * n_out`` float64
    partial sums and, per work item, the tile's mask bits and 6 rows of ``PQ + 2Q + 8`` float64.
    """
    n_pairs = rows.shape[0]
    n_tiles = tiles.shape[0]
    q_ = pq // p_
    mstride = 4 * n_conv * pq
    partial = np.zeros((n_pairs * n_tiles, n_out))
    group = _PAIR_GROUP if n_tiles > 1 else max(1, min(64, n_pairs // 32))
    n_groups = (n_pairs + group - 1) // group
    m = pq + 2 * q_ + 8
    for item in prange(n_tiles * n_groups):
        d = item // n_groups
        g = item - d * n_groups
        bits = mask_bits(tile_masks(p_, q_, tiles[d], c[2]))
        buf = np.zeros(6 * m)
        lo, hi = g * group, min((g + 1) * group, n_pairs)
        _fused_tile(
            xa,
            xb,
            xstride,
            rows,
            cols,
            lo,
            hi,
            n_tiles,
            d,
            ma,
            mb,
            mstride,
            n_conv,
            tiles[d],
            bits,
            buf,
            plan,
            c,
            partial,
        )
    return weighted_tile_sums(partial, weights, n_pairs)
