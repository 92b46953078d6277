"""Compiled loops (Numba) of the staged CPU engine (:mod:`cntk_core.cpu_stages`): networks whose conv
layers come in stages separated by 2x2 average pooling (the Myrtle networks).

Within a stage, a pair's covariance entries split into shift blocks of ``PQ`` entries exactly as in
:mod:`cntk_core.cpu_planes` (whose scalar helpers and box sums these loops reuse): each block runs
through the stage's layers in a few buffers that stay in L1. Pooling couples the displacement
planes, so at the end of a stage each block's entries are scatter-added into the pair's pooled
tensor of the next stage (``(P'Q')^2`` entries, ``P' = P // 2``), stored in the next stage's shift
block layout: block ``k'`` at ``[k' P'Q', (k' + 1) P'Q')``, entry ``f'`` pairing position
``(f' + k') mod P'Q'`` of the first image with ``f'`` of the second, so that the next stage reads
each block as one contiguous run. The mean's 1/16 is applied once per pooled tensor.

Per-image variance maps: one flat array per image of every layer's maps, ``(n, 2, M)``: at offset
``moff[h]``, ``2 PQ_h`` entries of sqrt(v / (9 pi)) (row 0) and 1/sqrt(v) (row 1, 0 where v = 0),
the ``PQ_h`` variances of layer ``h``'s input stored twice end to end, as in cpu_planes. They come
from the self pair ``(x, x)`` run through the same pipeline in K-only mode (``record``), recording
block 0 (the delta = 0 plane) before each layer; block 0 is the first block of every stage's list,
so a stage's maps are complete before its other blocks need them.

A block list per stage says which blocks to visit and with what weight: weight 2 marks a block of
a self pair that stands for its transpose block too (the transpose entries are scattered as well,
and the readout counts it twice; see :func:`cntk_core.cpu_planes.self_pair_shift_blocks`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .cpu_planes import _flat_sum, _hsum, _hsum_pair, _k_entry, _relu_entry, _s0_shift_block, _theta_entry, _vsum
from .cpu_threads import run_items

# Small helpers called many times per shift block are inlined by Numba (an array passed to a compiled
# call costs atomic reference-count updates on arrays that the threads share); the per-block and
# per-layer routines are ordinary compiled calls, each compiled once: Numba-level inlining of those
# re-typed them at every call site and doubled this module's cold compile.
_INLINE = {"cache": True, "nogil": True, "error_model": "numpy", "inline": "always", "fastmath": {"contract"}}
_FN = {"cache": True, "nogil": True, "error_model": "numpy", "fastmath": {"contract"}}

#: readout codes of :func:`pair_value` (the last stage's reduction)
GAP, VANILLA, LAP = 0, 1, 2


@njit(**_INLINE)
def _mask_entry(p_, q_, kr, cut, r, t, one, masks):
    """The four 0/1 tr3 masks of entry ``f = r Q + t`` of a shift block with row shift ``kr`` and
    column cut ``cut = Q - kt`` (see :func:`cntk_core.cpu_planes.shift_block_masks`)."""
    zero = one - one
    f = r * q_ + t
    wrap = p_ - kr if t < cut else p_ - kr - 1  # rows >= wrap pair with wrapped rows of the first image
    masks[0, f] = one if t >= 1 and t != cut else zero
    masks[1, f] = one if t + 1 < q_ and t + 1 != cut else zero
    masks[2, f] = one if r >= 1 and r != wrap else zero
    masks[3, f] = one if r + 1 < p_ and r + 1 != wrap else zero


@njit(**_FN)
def _set_masks(p_, q_, k, prev, one, masks):
    """masks = the (4, PQ) 0/1 tr3 masks of shift block ``k`` (left, right, up, down neighbour
    allowed), as :func:`cntk_core.cpu_planes.shift_block_masks` builds them, without allocating.
    ``prev``: the block that ``masks`` holds now (-1: none); from block ``k - 1`` of the same row shift
    only the three columns around the moving column cut change, O(P) instead of O(PQ)."""
    kr, kt = k // q_, k % q_
    cut = q_ - kt
    if prev == k - 1 and kt > 0:
        for r in range(p_):
            for t in range(max(cut - 1, 0), min(cut + 2, q_)):
                _mask_entry(p_, q_, kr, cut, r, t, one, masks)
        return
    zero = one - one
    for t in range(q_):
        masks[0, t] = one if t >= 1 and t != cut else zero
        masks[1, t] = one if t + 1 < q_ and t + 1 != cut else zero
    for r in range(p_):
        f0 = r * q_
        if r > 0:
            for t in range(q_):
                masks[0, f0 + t] = masks[0, t]
                masks[1, f0 + t] = masks[1, t]
        up_l = one if r >= 1 and r != p_ - kr else zero  # left of the cut: rows wrap at P - kr
        down_l = one if r + 1 < p_ and r + 1 != p_ - kr else zero
        up_r = one if r >= 1 and r != p_ - kr - 1 else zero  # right of it (column carry): at P - kr - 1
        down_r = one if r + 1 < p_ and r + 1 != p_ - kr - 1 else zero
        for t in range(cut):
            masks[2, f0 + t] = up_l
            masks[3, f0 + t] = down_l
        for t in range(cut, q_):
            masks[2, f0 + t] = up_r
            masks[3, f0 + t] = down_r


@njit(**_FN)
def _layer_flat(hs, ht, sig, theta, q_, masks, ma, a, mb, b, off, k, c, k_only, theta_only, first):
    """One ReLU layer on a shift block held at ``Q .. Q + PQ`` (see cpu_planes' ``_layer_shift_block``),
    reading the flat maps ``ma[a, :, off + k + f]`` and ``mb[b, :, off + f]``. ``first`` (a literal):
    the network's first layer (correlations may be negative; Theta's input is Sigma's)."""
    nonneg = not first
    ga, gb, qu = np.uint64(off + k), np.uint64(off), np.uint64(q_)
    n = np.uint64(masks.shape[1])
    if k_only:
        for f in range(n):
            e = qu + f
            rho = _vsum(hs, masks, f, e, qu) * (ma[a, 1, ga + f] * mb[b, 1, gb + f])
            sig[e] = _k_entry(rho, ma[a, 0, ga + f] * mb[b, 0, gb + f], c, nonneg)[0]
    elif theta_only:
        for f in range(n):
            e = qu + f
            s_in = _vsum(hs, masks, f, e, qu)
            rho = s_in * (ma[a, 1, ga + f] * mb[b, 1, gb + f])
            theta[e] = _theta_entry(rho, s_in if first else _vsum(ht, masks, f, e, qu), c, nonneg)
    else:
        for f in range(n):
            e = qu + f
            s_in = _vsum(hs, masks, f, e, qu)
            sig[e], theta[e] = _relu_entry(
                s_in * (ma[a, 1, ga + f] * mb[b, 1, gb + f]),
                ma[a, 0, ga + f] * mb[b, 0, gb + f],
                s_in if first else _vsum(ht, masks, f, e, qu),
                c,
                nonneg,
            )


@njit(**_FN)
def _record(hs, tmp, q_, masks, maps, a, off, c):
    """maps[a, :, off ..] = the maps of the variances v = tr3 of the block whose row 3-sums are
    ``hs`` (block 0 of the self pair: the delta = 0 plane), each stored twice end to end;
    ``tmp``: a scratch row."""
    n = masks.shape[1]
    zero = c.one - c.one
    for f in range(n):
        tmp[q_ + f] = _vsum(hs, masks, f, q_ + f, q_)
    for f in range(n):
        var = tmp[q_ + f]
        root = np.sqrt(var) if var > zero else zero
        inv = c.one / root if var > zero else zero
        root = root * c.sqrt_inv_9pi
        maps[a, 0, off + f] = root
        maps[a, 0, off + n + f] = root
        maps[a, 1, off + f] = inv
        maps[a, 1, off + n + f] = inv


@njit(**_INLINE)
def _scatter_run(src, src0, u0, u1, out, b_even, b_odd, t_even, t_odd, transpose, merged):
    """The (even, odd) pairs ``t = 2u, 2u + 1``, ``u0 <= u < u1``, of one row segment of
    :func:`_scatter` into their two runs of targets (and the transposed ones); ``merged``: both runs
    are one (an even column shift), so each pair is added once. Unsigned indices: no negative-index
    wraparound code in the loops."""
    one = np.uint64(1)
    s0 = np.uint64(src0)
    be, bo, te, to = np.uint64(b_even), np.uint64(b_odd), np.uint64(t_even), np.uint64(t_odd)
    if transpose:
        for u in range(np.uint64(u0), np.uint64(u1)):
            e = s0 + u + u
            v0, v1 = src[e], src[e + one]
            out[be + u] += v0
            out[bo + u] += v1
            out[te + u] += v0
            out[to + u] += v1
    elif merged:
        for u in range(np.uint64(u0), np.uint64(u1)):
            e = s0 + u + u
            out[be + u] += src[e] + src[e + one]
    else:
        for u in range(np.uint64(u0), np.uint64(u1)):
            e = s0 + u + u
            out[be + u] += src[e]
            out[bo + u] += src[e + one]


@njit(**_FN)
def _scatter(src, src2, two, p_, q_, k, out, out2, transpose):
    """Add block ``k``'s entries ``src[Q + f]`` into the pooled tensor ``out`` (``n2^2`` entries,
    ``n2 = P'Q'``, ``P' = P // 2``) in the next stage's shift block layout (module docstring), dropping
    a trailing odd row or column; with ``two``, ``src2`` into ``out2`` as well (Theta with Sigma).
    Entry ``(r, t)`` of block ``k = kr Q + kt`` pairs position ``(r, t)`` of the second image with
    ``(r + kr, t + kt)`` of the first (left of the column cut) or ``(r + kr + 1, t + kt - Q)`` (right
    of it), rows modulo P. Along one row segment the pooled displacement takes one value for even
    ``t`` and one for odd ``t``, so the targets form two contiguous runs in ``t >> 1``.
    ``transpose``: also add each entry at its transposed position (a self pair's half blocks)."""
    p2, q2 = p_ // 2, q_ // 2
    n2 = p2 * q2
    kr, kt = k // q_, k % q_
    for r in range(2 * p2):
        rb = (r >> 1) * q2  # pooled row start of the second image's position
        src0 = q_ + r * q_
        for side in range(2):
            ra = r + kr + side
            if ra >= p_:
                ra -= p_
            t0 = 0 if side == 0 else q_ - kt
            t1 = 2 * q2 - kt if side == 0 else 2 * q2
            if ra >= 2 * p2 or t0 >= t1:
                continue
            ra = (ra >> 1) * q2
            shift = kt - side * q_  # first image's column minus second's
            # pooled column offset (first minus second) of even and of odd t, and the runs' starts
            m_even, m_odd = shift >> 1, (shift + 1) >> 1
            d_even, d_odd = (ra - rb + m_even) % n2, (ra - rb + m_odd) % n2
            b_even, b_odd = d_even * n2 + rb, d_odd * n2 + rb
            t_even = ((n2 - d_even) % n2) * n2 + ra + m_even
            t_odd = ((n2 - d_odd) % n2) * n2 + ra + m_odd
            if t0 & 1:  # a lone odd t first, then (even, odd) pairs, then a lone even t
                u = t0 >> 1
                out[b_odd + u] += src[src0 + t0]
                if two:
                    out2[b_odd + u] += src2[src0 + t0]
                if transpose:
                    out[t_odd + u] += src[src0 + t0]
                    if two:
                        out2[t_odd + u] += src2[src0 + t0]
                t0 += 1
            u0, u1 = t0 >> 1, t1 >> 1
            merged = m_even == m_odd
            _scatter_run(src, src0, u0, u1, out, b_even, b_odd, t_even, t_odd, transpose, merged)
            if two:
                _scatter_run(src2, src0, u0, u1, out2, b_even, b_odd, t_even, t_odd, transpose, merged)
            if t1 & 1:
                out[b_even + u1] += src[src0 + t1 - 1]
                if two:
                    out2[b_even + u1] += src2[src0 + t1 - 1]
                if transpose:
                    out[t_even + u1] += src[src0 + t1 - 1]
                    if two:
                        out2[t_even + u1] += src2[src0 + t1 - 1]


@njit(**_FN)
def _gather(tin, k, dst, q_):
    """dst[Q + f] = shift block ``k`` of a pooled tensor in shift block layout (one contiguous run)."""
    n = np.uint64(dst.shape[0] - 2 * q_)
    base, qu = np.uint64(k) * n, np.uint64(q_)
    for f in range(n):
        dst[qu + f] = tin[base + f]


@njit(**_FN)
def _lap_sum(src, q_, k, wr, wc):
    """float64 sum of ``wr[a_r, r] wc[a_c, t] src[Q + f]`` over block ``k`` (f = r Q + t pairs
    a = (f + k) mod PQ with f): the LAP readout's integer-count weights."""
    n = src.shape[0] - 2 * q_
    acc = 0.0
    for f in range(n):
        fa = f + k
        if fa >= n:
            fa -= n
        acc += wr[fa // q_, f // q_] * wc[fa % q_, f % q_] * src[q_ + f]
    return acc


@njit(**_FN)
def _runtime_values(n):
    """``(int64 0, False)`` as runtime values, not Numba literals: a literal argument makes Numba
    compile one more specialisation of the callee (and of everything it calls), and the cold
    compile of this module is what a fresh machine (and CI) waits for."""
    return n - n, n < 0


@njit(**_FN)
def _stage(
    s, b0, b1, xa, a, xb, b, ma, mb, geo, moff, blocks, bweight, wr, wc, ntk, fix_first, fix_last, readout, record, c,
    tin_sig, tin_theta, tout_sig, tout_theta,
):  # fmt: skip
    """Blocks ``blocks[b0:b1]`` of stage ``s`` of the pair ``(xa[a], xb[b])``: from S0 (stage 0) or
    gathered from the pooled tensors ``tin_sig``, ``tin_theta``, through the stage's layers, then
    scatter-added (without the mean's 1/16) into ``tout_sig``, ``tout_theta`` (not the last stage,
    returns 0) or summed into the unscaled float64 readout (the last stage, returned). Arguments
    as in :func:`pair_value`. Allocates the block's scratch and masks (8 rows of about PQ_s)."""
    n_stages = geo.shape[0]
    n_conv = geo[n_stages - 1, 3]
    p_, q_, h0, h1 = geo[s, 0], geo[s, 1], geo[s, 2], geo[s, 3]
    n = p_ * q_
    last_stage = s == n_stages - 1
    work = np.zeros((4, n + 2 * q_), xa.dtype)
    masks = np.empty((4, n), xa.dtype)
    sig, theta, hs, ht = work[0], work[1], work[2], work[3]
    total = 0.0
    prev = -1
    for bi in range(b0, b1):
        k, wgt = blocks[bi], bweight[bi]
        _set_masks(p_, q_, k, prev, c.one, masks)
        prev = k
        if s == 0:
            _s0_shift_block(xa, a, xb, b, k, sig, q_)
        else:
            _gather(tin_sig, k, sig, q_)
            if ntk:
                _gather(tin_theta, k, theta, q_)
        if h1 > h0:
            if s > 0 and ntk:
                _hsum_pair(sig, theta, hs, ht, q_, masks)
            else:
                _hsum(sig, hs, q_, masks)
        theta_is_sigma = s == 0  # Theta^(0) = Sigma^(0) (or 0 with fix_first: layer 0 is K-only)
        k_only = not ntk
        theta_only = False
        for h in range(h0, h1):
            if record and k == 0:
                _record(hs, theta, q_, masks, ma, a, moff[h], c)
            k_only = not ntk or (h == 0 and fix_first)  # Theta after the layer equals K
            theta_only = ntk and not k_only and fix_last and h == n_conv - 1  # the readout's K left out
            ht_in = hs if theta_is_sigma else ht
            if h == 0:  # a literal: two compiled copies of the loop, each without the per-entry branch
                _layer_flat(hs, ht_in, sig, theta, q_, masks, ma, a, mb, b, moff[h], k, c, k_only, theta_only, True)
            else:
                _layer_flat(hs, ht_in, sig, theta, q_, masks, ma, a, mb, b, moff[h], k, c, k_only, theta_only, False)
            if h < h1 - 1:
                if k_only:
                    _hsum(sig, hs, q_, masks)
                else:
                    _hsum_pair(sig, theta, hs, ht, q_, masks)
                theta_is_sigma = k_only
        # what the block holds now: K in sig (unless theta_only), Theta in theta (sig if k_only)
        th = sig if k_only else theta
        if not last_stage:
            tr = wgt > 1.0
            # theta_only: K is not needed any more (the last layer), Theta alone
            src, out = (th, tout_theta) if theta_only else (sig, tout_sig)
            _scatter(src, th, ntk and not theta_only, p_, q_, k, out, tout_theta, tr)
        elif not record:
            src = th if ntk else sig
            if readout == LAP:
                total += wgt * _lap_sum(src, q_, k, wr, wc)
            else:
                total += wgt * _flat_sum(src, q_, n)
    return total


@njit(**_FN)
def pair_value(
    xa, a, xb, b, ma, mb, geo, moff, blocks, bstart, bweight, wr, wc, ntk, fix_first, fix_last, readout, record, c,
    first, tin_sig, tin_theta,
):  # fmt: skip
    """The unscaled readout of one pair ``(xa[a], xb[b])`` through the stages ``first ..`` (float64).

    xa, xb: (n, C, PQ) flat channel-planar images; ma, mb: their flat maps (module docstring);
    geo: int64 (S, 4) rows ``(P_s, Q_s, h0, h1)``, the stage's grid and its layers ``h0 .. h1 - 1``
    (0-based; only the last stage may have none); moff: int64 map offset per layer; blocks,
    bstart, bweight: the shift blocks of stage s at ``bstart[s] .. bstart[s + 1]`` (ascending, so
    block 0 first where it is listed) and their weights (2: the transpose block too); wr, wc:
    float64 LAP counts of the last stage (``readout == LAP``). ``record``: the self pair of image
    ``a`` in K-only mode, writing the maps ``ma[a]`` (ma is mb) and returning 0. ``first``: 0, or a
    later stage whose pooled input tensors (mean taken) are ``tin_sig``, ``tin_theta`` (dummies for
    0). Allocates per stage :func:`_stage`'s scratch and, but for the last, the pooled tensors
    (1 or 2 of ``(P_{s+1} Q_{s+1})^2`` entries).
    """
    n_stages = geo.shape[0]
    dt = xa.dtype
    sixteenth = c.half * c.half * c.half * c.half
    total = 0.0
    for s in range(first, n_stages):
        last_stage = s == n_stages - 1
        n2 = (geo[s, 0] // 2) * (geo[s, 1] // 2)
        tout_sig = np.zeros(1 if last_stage else n2 * n2, dt)
        tout_theta = np.zeros(n2 * n2 if ntk and not last_stage else 1, dt)
        total += _stage(
            s, bstart[s], bstart[s + 1], xa, a, xb, b, ma, mb, geo, moff, blocks, bweight, wr, wc, ntk, fix_first,
            fix_last, readout, record, c, tin_sig, tin_theta, tout_sig, tout_theta,
        )  # fmt: skip
        if not last_stage:
            for e in range(tout_sig.shape[0]):
                tout_sig[e] *= sixteenth
            if ntk:
                for e in range(tout_theta.shape[0]):
                    tout_theta[e] *= sixteenth
            tin_sig, tin_theta = tout_sig, tout_theta
    return total


@njit(**_FN)
def _first_stage_items(lo, hi, xa, xb, ma, mb, rows, cols, geo, moff, blocks, bstart, bweight, wr, wc, ntk, fix_first,
                       fix_last, readout, c, chunks, part_sig, part_theta):  # fmt: skip
    """Work items ``lo .. hi - 1`` of :func:`pair_values`' first phase (one thread's run): item =
    (pair, run of the first stage's blocks), scattering into its own partial pooled tensor."""
    dummy = np.zeros(1, xa.dtype)
    n_blocks = bstart[1] - bstart[0]
    stage0, no = _runtime_values(lo)
    for item in range(lo, hi):
        i = item // chunks
        ch = item - i * chunks
        b0 = bstart[0] + n_blocks * ch // chunks
        b1 = bstart[0] + n_blocks * (ch + 1) // chunks
        _stage(
            stage0, b0, b1, xa, rows[i], xb, cols[i], ma, mb, geo, moff, blocks, bweight, wr, wc, ntk, fix_first,
            fix_last, readout, no, c, dummy, dummy, part_sig[item], part_theta[item if ntk else 0],
        )  # fmt: skip


@njit(**_FN)
def _later_stages_items(lo, hi, xa, xb, ma, mb, rows, cols, geo, moff, blocks, bstart, bweight, wr, wc, ntk,
                        fix_first, fix_last, readout, c, chunks, part_sig, part_theta, out):  # fmt: skip
    """Pairs ``lo .. hi - 1`` of :func:`pair_values`' second phase (one thread's run): the partials
    added in order, the mean's 1/16, the later stages, ``out[i]``."""
    dt = xa.dtype
    n2 = part_sig.shape[1]
    sixteenth = c.half * c.half * c.half * c.half
    stage0, no = _runtime_values(lo)
    for i in range(lo, hi):
        tin_sig = np.zeros(n2, dt)
        tin_theta = np.zeros(n2 if ntk else 1, dt)
        for ch in range(chunks):
            j = i * chunks + ch
            for e in range(n2):
                tin_sig[e] += part_sig[j, e]
            if ntk:
                for e in range(n2):
                    tin_theta[e] += part_theta[j, e]
        for e in range(tin_sig.shape[0]):
            tin_sig[e] *= sixteenth
        for e in range(tin_theta.shape[0]):
            tin_theta[e] *= sixteenth
        out[i] = pair_value(
            xa, rows[i], xb, cols[i], ma, mb, geo, moff, blocks, bstart, bweight, wr, wc, ntk, fix_first,
            fix_last, readout, no, c, stage0 + 1, tin_sig, tin_theta,
        )  # fmt: skip


def pair_values(xa, xb, ma, mb, rows, cols, geo, moff, blocks, bstart, bweight, wr, wc, ntk, fix_first, fix_last,
                readout, c, chunks):  # fmt: skip
    """float64 ``(n_pairs,)`` unscaled readouts of the pairs ``(xa[rows[i]], xb[cols[i]])``
    (:func:`pair_value`). ``chunks``: work items are (pair, one of ``chunks`` runs of the first
    stage's blocks), each scattering into a partial pooled tensor of its own; then per pair the
    partials are added in order and the later stages run; both phases on threads
    (:func:`cntk_core.cpu_threads.run_items`). Each value depends on its pair and ``chunks`` alone,
    not on the other pairs or the threads. Allocates ``n_pairs * chunks`` partial pooled tensors
    (times 2 for the NTK) of ``(P_2 Q_2)^2`` entries, and per item its scratch."""
    n_pairs = len(rows)
    dt = xa.dtype
    n2 = int((geo[0, 0] // 2) * (geo[0, 1] // 2))
    part_sig = np.zeros((n_pairs * chunks, n2 * n2), dt)
    part_theta = np.zeros((n_pairs * chunks if ntk else 1, n2 * n2 if ntk else 1), dt)
    out = np.zeros(n_pairs)
    args = (xa, xb, ma, mb, rows, cols, geo, moff, blocks, bstart, bweight, wr, wc, bool(ntk), bool(fix_first),
            bool(fix_last), int(readout), c, int(chunks), part_sig, part_theta)  # fmt: skip
    run_items(_first_stage_items, n_pairs * chunks, *args)
    run_items(_later_stages_items, n_pairs, *args, out)
    return out


@njit(**_FN)
def _image_maps_items(lo, hi, x, geo, moff, blocks, bstart, bweight, wr, wc, c, maps):
    """:func:`image_maps` of the images ``lo .. hi - 1`` (one thread's run)."""
    dummy = np.zeros(1, x.dtype)
    stage0, no = _runtime_values(lo)
    for i in range(lo, hi):
        pair_value(
            x, i, x, i, maps, maps, geo, moff, blocks, bstart, bweight, wr, wc, no, no, no,
            stage0 + VANILLA, not no, c, stage0, dummy, dummy,
        )  # fmt: skip


def image_maps(x, geo, moff, m_total, blocks, bstart, bweight, wr, wc, c):
    """Flat maps ``(n, 2, m_total)`` of every layer's input variances (module docstring): each
    image's self pair through the stages in K-only mode (``blocks``: the blocks that reach the
    delta = 0 planes of every stage, self-pair halves), images split among threads. Allocates the
    maps and per image one pair's stage buffers."""
    maps = np.zeros((x.shape[0], 2, int(m_total)), x.dtype)
    run_items(_image_maps_items, x.shape[0], x, geo, moff, blocks, bstart, bweight, wr, wc, c, maps)
    return maps
