"""Fused CPU path (Numba): each displacement plane of each pair runs through all layers in cache.

``tr3`` and the ReLU map never mix entries of different displacement ``delta = p - p'``
(``docs/math.md``, "Structure the engines exploit"). So a pair's ``(PQ)^2`` covariance entries split
into planes that can be run through all layers separately. Planes have very different sizes, so
they are regrouped into ``PQ`` "shift blocks" of exactly ``PQ`` entries each: number the positions
``f = i Q + j`` (row-major); shift block ``k`` holds the entries that pair position ``f`` of the
second image with position ``(f + k) mod PQ`` of the first, for every ``f``. Each (a, b) pair of
positions lies in exactly one shift block. Within a shift block, entry ``f`` belongs to one of at
most four displacement planes: with ``k = kr Q + kt``, the column carry ``j + kt >= Q`` splits the
block's columns at ``Q - kt``, and the row wrap splits each side's rows at ``P - kr`` (left) or
``P - kr - 1`` (right). tr3 on the shift block is the 3x3 box sum on the ``(P, Q)`` grid of the
second image's positions that does not reach across those cuts. (The Gram driver's "tiles" are
something else: blocks of the Gram matrix, :mod:`cntk_core.gram`.)

So the ReLU, the expensive step, is one contiguous loop of ``PQ`` entries per layer: the second
image's maps in order and a window of the first image's maps stored twice end to end. The box sum
is one more contiguous loop of row 3-sums after each layer, whose column 3-sums are finished inside
the next layer's ReLU loop where the values are read; neighbour terms are multiplied by 0/1 masks of
the image edges and the cuts. Layers that need only K (the NNGP, and the NTK's first layer when it
is fixed, since Theta^(0) = 0 makes Theta^(1) = K^(1)) or only Theta (the readout layer when the
last layer is fixed) compute only that. One (pair, shift block) evaluation runs through every
layer in four small buffers that stay in L1 and sums its readout. The vanilla readout needs only
shift block 0, the delta = 0 plane; a self pair (x, x), the diagonal of a symmetric Gram, needs
only shift blocks 0 .. PQ/2, because shift block PQ - k holds the transposes of block k's entries
(:func:`self_pair_shift_blocks`). The LAP readout (:mod:`cntk_core.cpu_lap`) visits only the blocks
with a nonzero LAP weight and sums each with per-entry weights (:func:`lap_entry_weights`).

The arithmetic's constants travel as one :class:`Constants` argument in the arithmetic dtype
(:func:`constants`), so that float32 stays float32 in every compiled loop.

The scalar formulas below re-state :func:`cntk_core.recurrence.relu_dual` (``rho`` from the
stored inverse square roots of the variances); per-image variances come from running the same
layer loops (K alone) on the self pair's delta = 0 plane, and ``rho`` within 4 ulp of 1 is taken as 1, so
an exact self pair sees ``rho == 1`` exactly. Only the first layer's correlations can be negative:
later layers box-sum K >= 0, so their loops are compiled without |rho| and the reflection for
rho < 0 (the formula they use holds on [-1/2, 1], which covers rounding below 0).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

from .cpu_threads import run_items
from .recurrence import INV_9PI

_PI = math.pi
_INV_9PI = INV_9PI  # the 1/(9 pi) of the ReLU rule (recurrence.py), one constant


# The scalar helpers below are ordinary compiled functions: LLVM inlines them into the shift-block loops
# (same vectorised code, same speed), while Numba-level inlining (``inline="always"``) re-types
# them at every call site and doubled the cold compile (first float64 call 100.6 s -> 50.4 s).
_SCALAR = {"cache": True, "nogil": True, "error_model": "numpy"}

# fdlibm's rational approximation of asin on [0, 1/2]: asin(s) = s + s * P(z) / Q(z), z = s^2,
# accurate to about 1 ulp; with z = (1 - |x|) / 2 it also gives acos near |x| = 1 without the
# cancellation of 1 - x (glibc's correctly rounded acos is ~5x slower and does not vectorise).
_PS = (
    1.66666666666666657415e-01,
    -3.25565818622400915405e-01,
    2.01212532134862925881e-01,
    -4.00555345006794114027e-02,
    7.91534994289814532176e-04,
    3.47933107596021167570e-05,
)
_QS = (-2.40339491173441421878e00, 2.02094576023350569471e00, -6.88283971605453293030e-01, 7.70381505559019352791e-02)


class Constants(NamedTuple):
    """The compiled loops' constants, all in the arithmetic dtype (:func:`constants`; float32 stays
    float32). Numba compiles a field read to the same code as a literal index."""

    pi: float
    inv_9pi: float  #: 1 / (9 pi) = (2/9) / (2 pi): the paper's c_sigma / q^2 times the arc-cosine kernels' 1 / (2 pi)
    one: float
    half: float
    ps0: float  #: ps0 .. ps5: fdlibm's numerator coefficients pS0 .. pS5 of asin (``_PS``)
    ps1: float
    ps2: float
    ps3: float
    ps4: float
    ps5: float
    qs1: float  #: qs1 .. qs4: its denominator coefficients qS1 .. qS4 (``_QS``)
    qs2: float
    qs3: float
    qs4: float
    snap: float  #: 4 ulp of 1: rho within it of 1 is taken as 1 (:func:`_relu_entry`)
    sqrt_inv_9pi: float  #: sqrt(1 / (9 pi)), the scale of the maps of square roots (:func:`_record_maps`)


@njit(**_SCALAR)
def _pi_minus_arccos(x, c, nonneg):
    """pi - arccos(x) for x in [-1, 1] (the ReLU dual's angle term), branch-free so that the shift
    block loops vectorise. ``c``: :class:`Constants`. With ``nonneg`` (a literal) only for x in [-1/2, 1]: the
    correlations of layers after the first, which are >= 0 up to rounding (K >= 0), need neither
    |x| nor the reflection for x < 0 (asin is odd, so the small-|x| branch covers [-1/2, 0))."""
    pi, one, half = c.pi, c.one, c.half
    ax = x if nonneg else (x if x >= 0 else -x)
    big = ax > half
    z = (one - ax) * half if big else ax * ax
    # the loop is bound by its dependency chain (box sum, rho, square root, division, polynomial,
    # products), so the rational is evaluated in Estrin's scheme (depth 3 instead of 6) and
    # products whose factors are ready early are formed off the chain (measured 1.07-1.10x)
    z2 = z * z
    p = z * ((c.ps0 + z * c.ps1) + z2 * ((c.ps2 + z * c.ps3) + z2 * (c.ps4 + z * c.ps5)))
    q = (one + z * c.qs1) + z2 * ((c.qs2 + z * c.qs3) + z2 * c.qs4)
    s = np.sqrt(z) if big else ax
    a = s + s * (p / q)  # asin(s)
    # arccos|x| = 2 a (big) or pi/2 - a; pi - arccos(x) = pi - arccos|x| (x >= 0) or arccos|x|:
    # one multiply-add whose coefficient and offset are chosen off the dependency chain
    two = one + one
    if nonneg:
        return (-two if big else one) * a + (pi if big else pi * half)
    pos = x >= 0
    coef = (-two if big else one) if pos else (two if big else -one)
    base = (pi if pos else pi - pi) if big else pi * half
    return coef * a + base


@njit(**_SCALAR)
def _relu_entry(rho, norm, theta, c, nonneg):
    """One entry of the ReLU layer from its raw correlation: ``(K, new Theta)``.

    rho is clipped to [-1, 1], and values within ``c.snap`` (4 ulp) of 1 are taken as 1, which makes
    exact self pairs exact (their arccos has an infinite slope at 1) and changes no other value by
    more than its own rounding. ``nonneg``: see :func:`_pi_minus_arccos`.
    """
    k, phi = _k_entry(rho, norm, c, nonneg)
    return k, phi * (c.inv_9pi * theta) + k


@njit(**_SCALAR)
def _k_entry(rho, norm, c, nonneg):
    """K of one entry and its angle term ``phi = pi - arccos(rho)`` (rho clipped as in
    :func:`_relu_entry`); ``norm`` = sqrt(v v') / (9 pi), the product of the two images' first
    maps (:func:`_record_maps`)."""
    rho = _clip_rho(rho, c, nonneg)
    phi = _pi_minus_arccos(rho, c, nonneg)
    return norm * (rho * phi + np.sqrt(c.one - rho * rho)), phi


@njit(**_SCALAR)
def _clip_rho(rho, c, nonneg):
    """rho snapped to 1 within ``c.snap`` of it (see :func:`_relu_entry`) and clipped to [-1, 1]
    (to the top only with ``nonneg``, see :func:`_pi_minus_arccos`)."""
    one, snap = c.one, c.snap
    if nonneg:
        return one if rho > one - snap else rho
    return one if rho > one - snap else max(rho, -one)


@njit(**_SCALAR)
def _theta_entry(rho, theta, c, nonneg):
    """The new Theta of :func:`_relu_entry` without K, as the readout layer needs when ``fix_last``
    leaves its K out: the same operations, minus the square root and products of K."""
    return _pi_minus_arccos(_clip_rho(rho, c, nonneg), c, nonneg) * c.inv_9pi * theta


# Loops over whole flat shift blocks (hundreds of entries) vectorise well; the helpers are inlined into
# _shift_block_sums and index whole arrays instead of slicing them, because a slice or an array passed to a
# compiled call costs atomic reference-count updates on arrays that the threads share.
_INLINE = {"cache": True, "nogil": True, "error_model": "numpy", "inline": "always", "fastmath": {"contract"}}


@njit(**_INLINE)
def _vsum(h, masks, f, e, qu):
    """tr3's second pass at one entry: the column 3-sum of the row 3-sums ``h`` (see
    :func:`_hsum`), i.e. the tr3 value of entry ``e = Q + f`` of the shift block."""
    return masks[2, f] * h[e - qu] + h[e] + masks[3, f] * h[e + qu]


@njit(**_INLINE)
def _relu_shift_block(hs, ht, sig, theta, q_, masks, maps_a, a, maps_b, b, h, k, c, nonneg, same):
    """The ReLU layer (cntk_core.recurrence.relu_dual) on a flat shift block of ``PQ`` entries.

    Its inputs Sigma and Theta are tr3 of the previous layer's, finished here from their row
    3-sums ``hs``, ``ht`` (:func:`_vsum`); it writes K into ``sig`` and the new Theta into
    ``theta``. All four hold the shift block at ``Q .. Q + PQ``. maps_a[a], maps_b[b]: (L, 2, 2PQ) maps of
    sqrt(v / (9 pi)) and 1 / sqrt(v) of the two images' variances v (:func:`image_maps`), each
    stored twice end to end; h: the layer's maps; entry f pairs ``maps_a[a, h, :, k + f]`` with
    ``maps_b[b, h, :, f]``. Inverse square roots are 0 where a variance is 0, which gives rho = 0
    there. ``same`` (a literal): Theta's input equals Sigma's (the first layer, Theta^(0) =
    Sigma^(0)), so its box sum is not redone.
    """
    ku, qu = np.uint64(k), np.uint64(q_)  # unsigned indices: no negative-index wraparound code,
    for f in range(np.uint64(maps_b.shape[3] // 2)):  # which would stop the loop vectorising
        g, e = ku + f, qu + f
        s_in = _vsum(hs, masks, f, e, qu)
        sig[e], theta[e] = _relu_entry(
            s_in * (maps_a[a, h, 1, g] * maps_b[b, h, 1, f]),
            maps_a[a, h, 0, g] * maps_b[b, h, 0, f],
            s_in if same else _vsum(ht, masks, f, e, qu),
            c,
            nonneg,
        )


@njit(**_INLINE)
def _theta_shift_block(hs, ht, theta, q_, masks, maps_a, a, maps_b, b, h, k, c, nonneg, same):
    """:func:`_relu_shift_block` for Theta alone (:func:`_theta_entry`), as the readout layer needs
    when ``fix_last`` leaves its K out."""
    ku, qu = np.uint64(k), np.uint64(q_)
    for f in range(np.uint64(maps_b.shape[3] // 2)):
        g, e = ku + f, qu + f
        s_in = _vsum(hs, masks, f, e, qu)
        rho = s_in * (maps_a[a, h, 1, g] * maps_b[b, h, 1, f])
        theta[e] = _theta_entry(rho, s_in if same else _vsum(ht, masks, f, e, qu), c, nonneg)


@njit(**_INLINE)
def _sigma_shift_block(hs, sig, q_, masks, maps_a, a, maps_b, b, h, k, c, nonneg):
    """:func:`_relu_shift_block` for K alone (into ``sig``): the NNGP, and the NTK's first layer when it
    is fixed (Theta^(0) = 0, so Theta^(1) = K^(1))."""
    ku, qu = np.uint64(k), np.uint64(q_)
    for f in range(np.uint64(maps_b.shape[3] // 2)):
        g, e = ku + f, qu + f
        rho = _vsum(hs, masks, f, e, qu) * (maps_a[a, h, 1, g] * maps_b[b, h, 1, f])
        sig[e] = _k_entry(rho, maps_a[a, h, 0, g] * maps_b[b, h, 0, f], c, nonneg)[0]


@njit(**_INLINE)
def _layer_shift_block(hs, ht, sig, theta, q_, masks, maps_a, a, maps_b, b, h, k, c, k_only, theta_only, first):
    """One layer's ReLU loop: K alone (:func:`_sigma_shift_block`), Theta alone (:func:`_theta_shift_block`)
    or both (:func:`_relu_shift_block`). ``first`` (a literal): the first layer, the only one whose
    correlations may be negative (``nonneg``, see :func:`_pi_minus_arccos`) and whose Theta input
    is Sigma's (``same``: Theta^(0) = Sigma^(0))."""
    nonneg = not first
    if k_only:
        _sigma_shift_block(hs, sig, q_, masks, maps_a, a, maps_b, b, h, k, c, nonneg)
    elif theta_only:
        _theta_shift_block(hs, ht, theta, q_, masks, maps_a, a, maps_b, b, h, k, c, nonneg, first)
    else:
        _relu_shift_block(hs, ht, sig, theta, q_, masks, maps_a, a, maps_b, b, h, k, c, nonneg, first)


@njit(cache=True, nogil=True, error_model="numpy")
def shift_block_masks(p_, q_, k, one):
    """(4, PQ) 0/1 masks of shift block ``k``: whether entry f = r Q + t may take its left, right,
    upper and lower neighbour into tr3, i.e. whether that neighbour is in the image and in the
    same displacement plane (see the module docstring). ``one``: 1 in the arithmetic dtype."""
    kr, kt = k // q_, k % q_
    col_cut = q_ - kt  # columns >= col_cut carry into the next row of the first image (Q: none)
    zero = one - one
    masks = np.empty((4, p_ * q_), np.asarray(one).dtype)
    left = np.empty(q_, masks.dtype)
    right = np.empty(q_, masks.dtype)
    for t in range(q_):
        left[t] = one if t >= 1 and t != col_cut else zero
        right[t] = one if t + 1 < q_ and t + 1 != col_cut else zero
    for r in range(p_):
        # rows >= P - kr wrap in the left columns, rows >= P - kr - 1 in the right (carry) ones
        up_l = one if r >= 1 and r != p_ - kr else zero
        up_r = one if r >= 1 and r != p_ - kr - 1 else zero
        down_l = one if r + 1 < p_ and r + 1 != p_ - kr else zero
        down_r = one if r + 1 < p_ and r + 1 != p_ - kr - 1 else zero
        f0 = r * q_
        for t in range(q_):
            masks[0, f0 + t] = left[t]
            masks[1, f0 + t] = right[t]
            masks[2, f0 + t] = up_l if t < col_cut else up_r
            masks[3, f0 + t] = down_l if t < col_cut else down_r
    return masks


@njit(**_INLINE)
def _hsum(src, dst, q_, masks):
    """tr3's first pass on a flat (P, Q) shift block (see the module docstring): the row 3-sums
    ``dst[e] = src[e - 1] + src[e] + src[e + 1]``, each neighbour multiplied by its 0/1 mask
    (:func:`shift_block_masks`); :func:`_vsum` finishes tr3 where the value is used. Both hold the
    shift block at ``Q .. Q + PQ`` with Q zeros before and after (``dst``'s must stay zero)."""
    qu, one = np.uint64(q_), np.uint64(1)
    for f in range(np.uint64(masks.shape[1])):
        e = qu + f
        dst[e] = masks[0, f] * src[e - one] + src[e] + masks[1, f] * src[e + one]


@njit(**_INLINE)
def _hsum_pair(sig, theta, hs, ht, q_, masks):
    """:func:`_hsum` of sig into hs and of theta into ht at once (they share the mask loads)."""
    qu, one = np.uint64(q_), np.uint64(1)
    for f in range(np.uint64(masks.shape[1])):
        e = qu + f
        m0, m1 = masks[0, f], masks[1, f]
        hs[e] = m0 * sig[e - one] + sig[e] + m1 * sig[e + one]
        ht[e] = m0 * theta[e - one] + theta[e] + m1 * theta[e + one]


@njit(**_INLINE)
def _tr3_from_hsum(hs, dst, q_, masks):
    """dst = tr3 of the shift block whose row 3-sums are ``hs`` (only for recording variance maps)."""
    qu = np.uint64(q_)
    for f in range(np.uint64(masks.shape[1])):
        dst[qu + f] = _vsum(hs, masks, f, qu + f, qu)


@njit(**_INLINE)
def _s0_shift_block(xa, a, xb, b, k, out, o):
    """out[o + f] = sum over channels of xa[a, :, (f + k) mod PQ] * xb[b, :, f] (S0 of shift block k).

    xa, xb: (n, C, PQ) flat channel-planar images.
    """
    ou = np.uint64(o)
    head, tail = np.uint64(xa.shape[2] - k), np.uint64(k)  # f < PQ - k reads f + k, then f - (PQ - k)
    a0, b0 = np.uint64(k), ou + head
    for f in range(head):
        out[ou + f] = xa[a, 0, a0 + f] * xb[b, 0, f]
    for f in range(tail):
        out[b0 + f] = xa[a, 0, f] * xb[b, 0, head + f]
    for ch in range(1, xa.shape[1]):
        for f in range(head):
            out[ou + f] += xa[a, ch, a0 + f] * xb[b, ch, f]
        for f in range(tail):
            out[b0 + f] += xa[a, ch, f] * xb[b, ch, head + f]


@njit(**_INLINE)
def _flat_sum(buf, o, n):
    """float64 sum of buf[o : o + n], in a fixed order: eight interleaved running sums (one
    running sum is a chain of dependent additions, ~3x slower), then the eight added."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    ou = np.uint64(o)
    m = np.uint64(n - n % 8)
    for f in range(np.uint64(0), m, np.uint64(8)):
        e = ou + f
        s0 += buf[e]
        s1 += buf[e + np.uint64(1)]
        s2 += buf[e + np.uint64(2)]
        s3 += buf[e + np.uint64(3)]
        s4 += buf[e + np.uint64(4)]
        s5 += buf[e + np.uint64(5)]
        s6 += buf[e + np.uint64(6)]
        s7 += buf[e + np.uint64(7)]
    for f in range(m, np.uint64(n)):
        s0 += buf[ou + f]
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@njit(**_INLINE)
def _weighted_flat_sum(buf, o, w, n):
    """float64 ``sum_f w[f] * buf[o + f]``, f < n, in a fixed order: eight interleaved running sums,
    then the eight added, as :func:`_flat_sum` (with every weight 1 the same value, bit for bit).
    w: float64 ``(n,)``, the LAP weights of :func:`lap_entry_weights`."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    ou = np.uint64(o)
    m = np.uint64(n - n % 8)
    for f in range(np.uint64(0), m, np.uint64(8)):
        e = ou + f
        s0 += w[f] * buf[e]
        s1 += w[f + np.uint64(1)] * buf[e + np.uint64(1)]
        s2 += w[f + np.uint64(2)] * buf[e + np.uint64(2)]
        s3 += w[f + np.uint64(3)] * buf[e + np.uint64(3)]
        s4 += w[f + np.uint64(4)] * buf[e + np.uint64(4)]
        s5 += w[f + np.uint64(5)] * buf[e + np.uint64(5)]
        s6 += w[f + np.uint64(6)] * buf[e + np.uint64(6)]
        s7 += w[f + np.uint64(7)] * buf[e + np.uint64(7)]
    for f in range(m, np.uint64(n)):
        s0 += w[f] * buf[ou + f]
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@njit(cache=True, nogil=True, error_model="numpy")
def lap_entry_weights(wp, wq, q_, k, out):
    """out[f] = wp[a_r, r] * wq[a_c, t], f = r Q + t, a = (f + k) mod PQ: the float64 LAP weight
    (unscaled integer counts) of every entry of shift block ``k``. wp, wq: the per-axis counts of
    :func:`cntk_core.cpu_lap.lap_tables`; out: float64 ``(PQ,)``. O(PQ); allocates nothing. (Here,
    not in cpu_lap: see that module's docstring on Numba's cache.)"""
    p_ = out.shape[0] // q_
    kr, kt = k // q_, k % q_
    for r in range(p_):  # row by row: no integer division per entry (it cost 8 % of a 32x32 GAP-sized LAP)
        for t in range(q_):
            ar, ac = r + kr, t + kt  # a = (f + k) mod PQ as (row, column): a column carry moves a row down
            if ac >= q_:
                ac -= q_
                ar += 1
            if ar >= p_:
                ar -= p_
            out[r * q_ + t] = wp[ar, r] * wq[ac, t]


@njit(**_INLINE)
def _readout_sum(buf, o, n, ew):
    """The readout's float64 sum over a shift block at buf[o : o + n]: :func:`_flat_sum` (GAP,
    vanilla: ``ew`` empty) or the LAP-weighted sum with per-entry weights ``ew``
    (:func:`lap_entry_weights`)."""
    if ew.shape[0] == 0:
        return _flat_sum(buf, o, n)
    return _weighted_flat_sum(buf, o, ew, n)


@njit(cache=True, nogil=True, error_model="numpy")
def _record_maps(sig, o, maps, a, layer, one, scale):
    """maps[a, layer] = (scale sqrt(v), 1/sqrt(v) or 0) of the variances v = sig[o : o + PQ] (the
    self pair's delta = 0 shift block), stored twice end to end. ``scale`` = sqrt(1 / (9 pi)), so that the
    product of two images' first maps is the factor sqrt(v v') / (9 pi) of K (one multiply fewer
    per entry: 1.02-1.04x in ``benchmarks/bench_engine_ab.py``)."""
    zero = one - one
    n = maps.shape[3] // 2
    for f in range(n):
        var = sig[o + f]
        root = np.sqrt(var) if var > zero else zero
        inv = one / root if var > zero else zero
        root = root * scale
        maps[a, layer, 0, f] = root
        maps[a, layer, 0, f + n] = root
        maps[a, layer, 1, f] = inv
        maps[a, layer, 1, f + n] = inv


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _shift_block_sums(
    xa, rows, xb, cols, i0, i1, n_blocks, d, ma, mb, k, masks, ew, work, out_layers, fix_first, fix_last, ntk, c, sums,
):  # fmt: skip
    """Readout sums over shift block ``k`` (up to four displacement planes) of the pairs
    ``(a, b) = (xa[rows[i]], xb[cols[i]])``, ``i0 <= i < i1``, which share the block's masks.

    xa, xb: (n, C, PQ) flat channel-planar images; ma, mb: their (n, L, 2, 2PQ) maps of
    sqrt(v / (9 pi)) and 1/sqrt(v) of the variances v = Sigma^(h)(x, x)[p, p], h = 0 .. L-1,
    stored twice end to end (see :func:`image_maps`); k: the shift block (0 is the delta = 0 plane
    alone, all the vanilla readout needs); masks: its :func:`shift_block_masks`; ew: float64 LAP
    weights of the block's entries (:func:`lap_entry_weights`), or empty for an
    unweighted sum (GAP, vanilla: :func:`_flat_sum`, untouched); work: (4, PQ + 2Q)
    scratch whose first and last Q entries of each row are zero and stay zero; out_layers:
    ascending int64 layer counts L_k (depth L_k + 1), the last one is the number of conv+ReLU
    layers run, L. Writes into ``sums[w, j]``, ``w = i * n_blocks + d`` (``d``: the index of shift
    block ``k`` among the caller's ``n_blocks`` blocks), the float64 sum of Theta (``ntk``) or K
    over the block for depth ``out_layers[j] + 1``; the caller applies the readout's scale. With
    ``fix_last`` the readout layer's own term K is left out (exactly at the last layer, by
    subtraction at earlier ones). Whole arrays and indices are passed rather than views: a view
    costs atomic reference-count updates on the parent array, which all threads share. The loop
    over pairs is in here, not in the caller, because each call of this function costs such
    updates on the shared arrays (1.05x at 16x16 depth 3 in ``benchmarks/bench_engine_ab.py``; none
    at 32x32). Allocates nothing.
    """
    n_conv = out_layers[-1]
    n = masks.shape[1]
    q_ = (work.shape[1] - n) // 2
    # the shift block sits at q_ .. q_ + n of each row; hs, ht hold the row 3-sums of Sigma and Theta
    sig, theta, hs, ht = work[0], work[1], work[2], work[3]
    for i in range(i0, i1):
        a, b, w = rows[i], cols[i], i * n_blocks + d
        _s0_shift_block(xa, a, xb, b, k, sig, q_)
        _hsum(sig, hs, q_, masks)  # Sigma^(0) = tr3(S0); Theta^(0) = Sigma^(0), or 0 (fixed first layer)
        theta_is_sigma = True  # ht would equal hs: read hs instead (Theta^(0) = Sigma^(0))
        j = 0
        for layer in range(1, n_conv + 1):
            last = layer == n_conv
            h = layer - 1
            ht_in = hs if theta_is_sigma else ht
            # Theta after this layer equals K: NNGP, or NTK with Theta^(0) = 0 (fixed first layer)
            k_only = not ntk or (layer == 1 and fix_first)
            theta_only = last and fix_last  # the readout needs Theta alone, without this layer's K
            # two compiled copies of the loops: the first layer's (see _layer_shift_block) and the others'
            if layer == 1:
                _layer_shift_block(hs, ht_in, sig, theta, q_, masks, ma, a, mb, b, h, k, c, k_only, theta_only, True)
            else:
                _layer_shift_block(hs, ht_in, sig, theta, q_, masks, ma, a, mb, b, h, k, c, k_only, theta_only, False)
            if layer == out_layers[j]:
                if k_only:  # Theta = K; with fix_last the readout's own K is subtracted: 0
                    sums[w, j] = 0.0 if ntk and fix_last else _readout_sum(sig, q_, n, ew)
                elif fix_last and not last:
                    sums[w, j] = _readout_sum(theta, q_, n, ew) - _readout_sum(sig, q_, n, ew)
                else:
                    sums[w, j] = _readout_sum(theta, q_, n, ew)
                j += 1
            if not last:
                if k_only:
                    _hsum(sig, hs, q_, masks)
                else:
                    _hsum_pair(sig, theta, hs, ht, q_, masks)
                theta_is_sigma = k_only


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _self_maps(x, a, zero, masks, work, n_conv, maps, c):
    """maps[a, h] (see :func:`image_maps`) for h = 0 .. L-1: the variances of image ``a`` are the
    delta = 0 plane (shift block 0; ``masks`` its :func:`shift_block_masks`) of its self pair, run through
    the layers' K alone (the NNGP recurrence; Theta never enters a variance). ``zero``: a run-time
    int64 0; work: (2, PQ + 2Q) zeroed scratch. Reads maps[a, h - 1] while writing maps[a, h].
    A routine of its own, so that :func:`_shift_block_sums` is compiled once, for :func:`pair_sums` only."""
    n = masks.shape[1]
    q_ = (work.shape[1] - n) // 2
    sig, hs = work[0], work[1]
    _s0_shift_block(x, a, x, a, zero, sig, q_)
    _hsum(sig, hs, q_, masks)
    _tr3_from_hsum(hs, sig, q_, masks)  # Sigma^(0)(x, x) on the plane
    _record_maps(sig, q_, maps, a, zero, c.one, c.sqrt_inv_9pi)
    for layer in range(1, n_conv):
        # layer 1's correlations may be negative, later ones not (see _pi_minus_arccos)
        if layer == 1:
            _sigma_shift_block(hs, sig, q_, masks, maps, a, maps, a, layer - 1, zero, c, False)
        else:
            _sigma_shift_block(hs, sig, q_, masks, maps, a, maps, a, layer - 1, zero, c, True)
        _hsum(sig, hs, q_, masks)
        _tr3_from_hsum(hs, sig, q_, masks)  # Sigma^(layer)(x, x) = tr3(K^(layer))
        _record_maps(sig, q_, maps, a, layer, c.one, c.sqrt_inv_9pi)


@njit(cache=True, nogil=True, error_model="numpy")
def _image_maps_items(lo, hi, x, p_, n_conv, c, out):
    """:func:`image_maps` of the images ``lo .. hi - 1`` into ``out`` (one thread's run)."""
    q_ = x.shape[2] // p_
    zero = np.int64(n_conv - n_conv)  # a run-time 0: a literal would compile _record_maps twice
    masks = shift_block_masks(p_, q_, zero, c.one)
    for i in range(lo, hi):
        work = np.zeros((2, x.shape[2] + 2 * q_), x.dtype)
        _self_maps(x, i, zero, masks, work, n_conv, out, c)


def image_maps(x, p_, n_conv, c):
    """Per-image maps ``(n, L, 2, 2PQ)``: sqrt(v / (9 pi)) and 1/sqrt(v) (0 where v = 0) of the
    variances v = Sigma^(h)(x, x)[p, p] for h = 0 .. L-1, flat, stored twice end to end (so that every shift
    block reads one contiguous window).

    x: (n, C, PQ) flat channel-planar images of ``p_`` rows. O(n P Q L) work, run once per image
    (not once per pair), by :func:`_self_maps` on the self pair's delta = 0 plane, images split among
    threads (:func:`cntk_core.cpu_threads.run_items`). Allocates ``32 L P Q`` bytes per image in float64.
    """
    n, _, pq = x.shape
    out = np.zeros((n, max(n_conv, 1), 2, 2 * pq), x.dtype)
    run_items(_image_maps_items, n, x, int(p_), int(n_conv), c, out)
    return out


#: pairs that share one shift block's masks and scratch in :func:`pair_sums` (building a block's
#: masks costs about three times a 16x16 pair's S0 of that block; 8 -> 32 measured 3 % faster on 16x16 GAP)
_PAIR_GROUP = 32


@njit(cache=True, nogil=True, error_model="numpy")
def _pair_sums_items(
    lo, hi, x1, x2, m1, m2, p_, rows, cols, blocks, out_layers, fix_first, fix_last, ntk, c, lap_p, lap_q, group,
    partial,
):  # fmt: skip
    """Work items ``lo .. hi - 1`` of :func:`pair_sums` (one thread's run): item = (shift block, group
    of ``group`` pairs), block-major."""
    lap = lap_p.shape[0] > 0
    n_pairs = rows.shape[0]
    n_blocks = blocks.shape[0]
    n_groups = (n_pairs + group - 1) // group
    pq = x1.shape[2]
    q_ = pq // p_
    for item in range(lo, hi):
        d = item // n_groups
        g = item - d * n_groups
        masks = shift_block_masks(p_, q_, blocks[d], c.one)
        work = np.zeros((4, pq + 2 * q_), x1.dtype)
        ew = np.empty(pq if lap else 0)
        if lap:
            lap_entry_weights(lap_p, lap_q, q_, blocks[d], ew)
        _shift_block_sums(
            x1, rows, x2, cols, g * group, min((g + 1) * group, n_pairs), n_blocks, d, m1, m2, blocks[d],
            masks, ew, work, out_layers, fix_first, fix_last, ntk, c, partial,
        )  # fmt: skip


def pair_sums(
    x1, x2, m1, m2, p_, rows, cols, blocks, weights, out_layers, fix_first, fix_last, ntk, c, wp=None, wq=None
):
    """Readout sums for the pairs ``(x1[rows[i]], x2[cols[i]])`` over the shift blocks ``blocks``.

    x1, x2: (n, C, PQ) flat images of ``p_`` rows; m1, m2: their :func:`image_maps`; blocks: int64
    shifts (see :func:`shift_blocks`), each block's sum multiplied by its float64 ``weights`` entry
    (1, or 2 for a self pair's block that stands for its transpose too, see
    :func:`self_pair_shift_blocks`);
    out_layers: see :func:`_shift_block_sums`; wp, wq: LAP's per-axis float64 count tables
    (:func:`cntk_core.cpu_lap.lap_tables`) for a LAP-weighted sum, or ``None`` (GAP, vanilla; an
    empty table is the same). Returns float64
    ``(n_pairs, len(out_layers))`` (unscaled). Work items are (shift block, group of pairs), which
    share the block's masks and scratch, run by threads (:func:`cntk_core.cpu_threads.run_items`).
    Partial sums are per (pair, shift block) and reduced in a fixed order, so a pair's value does
    not depend on which other pairs share the call (Gram tiles give bit-identical results) or on the
    threads. Allocates ``n_pairs * n_blocks * len(out_layers)`` float64 partial sums and, per work
    item, the block's masks and scratch (4 + 4 rows of about PQ entries; with LAP, one more float64
    row of weights).
    """
    lap_p = np.zeros((0, 0)) if wp is None else wp
    lap_q = np.zeros((0, 0)) if wq is None else wq
    n_pairs, n_blocks = len(rows), len(blocks)
    partial = np.zeros((n_pairs * n_blocks, len(out_layers)))
    # groups of pairs share a block's masks; with one block (vanilla) up to 64, leaving >= 32 items
    group = _PAIR_GROUP if n_blocks > 1 else max(1, min(64, n_pairs // 32))
    n_items = n_blocks * ((n_pairs + group - 1) // group)
    run_items(
        _pair_sums_items, n_items, x1, x2, m1, m2, int(p_), rows, cols, blocks, out_layers, bool(fix_first),
        bool(fix_last), bool(ntk), c, lap_p, lap_q, int(group), partial,
    )  # fmt: skip
    return weighted_shift_block_sums(partial, weights, n_pairs)


@njit(cache=True, nogil=True, error_model="numpy")
def weighted_shift_block_sums(partial, weights, n_pairs):
    """(n_pairs, n_out) float64: per pair, the sum over its shift blocks ``d`` (rows
    ``i * n_blocks + d`` of ``partial``) weighted by ``weights[d]``, in a fixed order (block by block)."""
    n_blocks = weights.shape[0]
    out = np.zeros((n_pairs, partial.shape[1]))
    for i in range(n_pairs):
        for j in range(partial.shape[1]):
            acc = 0.0
            for d in range(n_blocks):
                acc += weights[d] * partial[i * n_blocks + d, j]
            out[i, j] = acc
    return out


def shift_blocks(p: int, q: int, readout: str) -> np.ndarray:
    """Shift blocks to visit: all ``P*Q`` for GAP, only 0 (the delta = 0 plane) for vanilla."""
    return np.zeros(1, np.int64) if readout == "vanilla" else np.arange(p * q, dtype=np.int64)


def self_pair_shift_blocks(p: int, q: int, blocks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Shift blocks and weights that give a self pair's (x, x) GAP sum with half the work; with
    ``blocks`` (a readout's visited set, closed under ``k -> (PQ - k) mod PQ``, as LAP's
    :func:`cntk_core.cpu_lap.lap_shift_blocks`), those of them that stand for the rest.

    Sigma(x, x), Theta(x, x) and K(x, x) are symmetric, entry by entry and bit for bit (every
    product and sum of the recurrence meets the two images' numbers in the same order), and shift
    block ``PQ - k`` holds the transposes of block ``k``'s entries (entry f of block k pairs
    position f + k with f; entry f + k of block PQ - k pairs f with f + k). So blocks
    ``0 .. PQ // 2`` suffice, each with weight 2 except block 0 and, for even PQ, block PQ / 2
    (their own transposes). A readout whose per-entry weights are symmetric, w(p, p') = w(p', p)
    (LAP), weights block ``PQ - k`` as block ``k``, so the same halving holds for its sum.
    """
    n = p * q
    if blocks is None:
        blocks = np.arange(n // 2 + 1, dtype=np.int64)
    else:
        blocks = np.asarray(blocks, np.int64)
        if not np.array_equal(np.sort((n - blocks) % n), np.sort(blocks)):
            raise ValueError("the shift blocks are not closed under k -> (PQ - k) mod PQ")
        blocks = blocks[2 * blocks <= n]
    weights = np.where((blocks == 0) | (2 * blocks == n), 1.0, 2.0)
    return blocks, weights


def constants(dtype) -> Constants:
    """The :class:`Constants` in the arithmetic dtype ``dtype``."""
    t = np.dtype(dtype).type
    values = (_PI, _INV_9PI, 1.0, 0.5) + _PS + _QS + (4 * np.finfo(dtype).eps, math.sqrt(_INV_9PI))
    return Constants(*(t(v) for v in values))
