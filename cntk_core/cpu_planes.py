"""Fused CPU path (Numba): each displacement plane of each pair runs through all layers in cache.

``tr3`` and the ReLU map never mix entries of different displacement ``delta = p - p'``
(``cntk-math.md``, "Structure worth exploiting"). So a pair's 4-D covariance splits into
``(2P-1)(2Q-1)`` planes; plane ``delta`` is an ``(P-|di|) x (Q-|dj|)`` map on which ``tr3`` is a
plain 3x3 box sum with zero padding. Planes of very different sizes make short, badly vectorised
loops, so they are packed four at a time into P x Q "tiles" (planes ``di`` and ``di - P`` stacked,
``dj`` and ``dj - Q`` side by side, one zero separator row/column between them; the same packing as
the CUDA kernel). One (pair, tile) work item runs through every layer in eight small buffers that
stay in L1/L2 and sums its readout. The vanilla readout needs only tile (0, 0), the delta = 0 plane.

The scalar formulas below re-state :func:`cntk_core.recurrence.relu_dual` (same operation order,
single square root for ``rho``); per-image variances come from running the same tile routine on
the self pair's delta = 0 plane, so an exact self pair sees ``rho == 1`` exactly.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

_PI = math.pi
_INV_9PI = 1.0 / (9.0 * math.pi)


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


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _arccos(x, c):
    """arccos(x) for x in [-1, 1], branch-free so that plane loops vectorise. ``c``: constants()."""
    pi, one, half = c[0], c[2], c[3]
    ax = x if x >= 0 else -x
    big = ax > half
    z = (one - ax) * half if big else ax * ax
    p = z * (c[4] + z * (c[5] + z * (c[6] + z * (c[7] + z * (c[8] + z * c[9])))))
    q = one + z * (c[10] + z * (c[11] + z * (c[12] + z * c[13])))
    s = np.sqrt(z) if big else ax
    a = s + s * (p / q)  # asin(s)
    acos_abs = (a + a) if big else (pi * half - a)
    return acos_abs if x >= 0 else pi - acos_abs


@njit(cache=True, nogil=True, error_model="numpy")
def _box3(src, dst, rowsum, h, w):
    """dst[1:h+1, 1:w+1] = 3x3 box sum of src (zero border); separable, via rowsum (h+2, w)."""
    for u in range(h + 2):
        sr = src[u]
        rr = rowsum[u]
        for v in range(w):
            rr[v] = sr[v] + sr[v + 1] + sr[v + 2]
    for u in range(h):
        r0 = rowsum[u]
        r1 = rowsum[u + 1]
        r2 = rowsum[u + 2]
        dr = dst[u + 1]
        for v in range(w):
            dr[v + 1] = r0[v] + r1[v] + r2[v]


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _relu_entry(rho, norm, theta, add_k, c):
    """One entry of the ReLU layer from its raw correlation: ``(K, new Theta)``.

    rho is clipped to [-1, 1], and values within ``c[14]`` (4 ulp) of 1 are taken as 1, which makes
    exact self pairs exact (their arccos has an infinite slope at 1) and changes no other value by
    more than its own rounding.
    """
    pi, inv9pi, one, snap = c[0], c[1], c[2], c[14]
    rho = one if rho > one - snap else rho
    rho = -one if rho < -one else rho
    angle = _arccos(rho, c)
    k = norm * (rho * (pi - angle) + np.sqrt(one - rho * rho)) * inv9pi
    t = (pi - angle) * inv9pi * theta
    return k, (t + k if add_k else t)


@njit(cache=True, nogil=True, error_model="numpy")
def _relu(sig, theta, k_out, sa, sb, ia, ib, add_k, c):
    """The ReLU layer (cntk_core.recurrence.relu_dual) on flat spans: K into k_out, Theta in place.

    sa, sb: sqrt of the two positions' variances; ia, ib: their inverses (0 where a variance is
    0). All arguments are 1-D views of the same length; where they are 0 (padding, separators,
    zero variance) the result is rho = 0, K = 0 and Theta = K_dot * 0 = 0.
    """
    for v in range(sig.shape[0]):
        k_out[v], theta[v] = _relu_entry(sig[v] * ia[v] * ib[v], sa[v] * sb[v], theta[v], add_k, c)


@njit(cache=True, nogil=True, error_model="numpy")
def _relu_norms(sig, theta, k_out, sa, sb, add_k, c):
    """:func:`_relu` from the square roots alone (``rho = S / (sa * sb)``): one division per entry
    instead of two more gathered maps, the cheaper choice for tiles whose maps must be gathered."""
    zero = c[2] - c[2]
    for v in range(sig.shape[0]):
        norm = sa[v] * sb[v]
        rho = sig[v] / norm if norm > zero else zero
        k_out[v], theta[v] = _relu_entry(rho, norm, theta[v], add_k, c)


@njit(cache=True, nogil=True, error_model="numpy")
def _blocks(p, q, gi, gj):
    """The (up to) four displacement planes of tile (gi, gj) and where they sit in its buffer.

    Returns an int64 array (4, 6) of ``(row0, n_rows, di, col0, n_cols, dj)``: plane ``(di, dj)``
    occupies rows ``row0 .. row0 + n_rows`` and columns ``col0 .. col0 + n_cols`` of the padded
    ``(P + 3) x (Q + 3)`` buffer. Planes ``di = gi`` (P - gi rows) and ``di = gi - P`` (gi rows)
    are stacked with one zero separator row between them, likewise for columns; so every tile
    has P x Q entries and the 3x3 box sum over the whole buffer is tr3 on each plane.
    """
    out = np.zeros((4, 6), np.int64)
    k = 0
    for rb in range(2):
        for cb in range(2):
            out[k, 0] = 1 if rb == 0 else p - gi + 2
            out[k, 1] = p - gi if rb == 0 else gi
            out[k, 2] = gi if rb == 0 else gi - p
            out[k, 3] = 1 if cb == 0 else q - gj + 2
            out[k, 4] = q - gj if cb == 0 else gj
            out[k, 5] = gj if cb == 0 else gj - q
            k += 1
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def _gather(src, dst, blocks, first):
    """dst[block] = src[positions of the first (``first``) or second image] for every block.

    src is a padded (P + 3, Q + 3) map whose position (i, j) sits at [1 + i, 1 + j].
    """
    for k in range(4):
        r0, nr, di, c0, nc, dj = blocks[k]
        i0 = 1 + (max(di, 0) if first else max(-di, 0))
        j0 = 1 + (max(dj, 0) if first else max(-dj, 0))
        for u in range(nr):
            for v in range(nc):
                dst[r0 + u, c0 + v] = src[i0 + u, j0 + v]


@njit(cache=True, nogil=True, error_model="numpy")
def _record_maps(sig, maps, layer, p_, q_, one):
    """maps[layer] = (sqrt(v), 1/sqrt(v) or 0) of the variances v = interior of sig (self pair)."""
    zero = one - one
    for u in range(1, p_ + 1):
        for v in range(1, q_ + 1):
            var = sig[u, v]
            root = np.sqrt(var) if var > zero else zero
            maps[layer, 0, u, v] = root
            maps[layer, 1, u, v] = one / root if var > zero else zero


@njit(cache=True, nogil=True, error_model="numpy")
def _tile(xa, xb, ma, mb, gi, gj, out_layers, fix_first, fix_last, ntk, record, c, sums):
    """Readout sums over one tile (four displacement planes) of one pair, at ``out_layers``.

    xa, xb: (C, P, Q) channel-planar images; ma, mb: (L, 2, P + 3, Q + 3) padded maps of sqrt(v) and 1/sqrt(v)
    of the variances v = Sigma^(h)(x, x)[p, p], h = 0 .. L-1 (see :func:`image_maps`); gi, gj:
    the tile (see :func:`_blocks`; tile (0, 0) is the delta = 0 plane alone, all the vanilla
    readout needs, and reads the maps in place); out_layers: ascending int64 layer counts L_k
    (depth d = L_k + 1), the last one is the number of conv+ReLU layers run, L. With ``record``
    (self pair, tile (0, 0), ma is mb) the routine writes the maps instead of reading them.
    Writes into ``sums[k]`` the float64 sum of Theta (``ntk``) or K over the tile for depth
    ``out_layers[k] + 1``; the caller applies the readout's scale. With ``fix_last`` the readout
    layer's own term K is left out (exactly at the last layer, by subtraction at earlier ones).
    Allocates 4 buffers of (P + 3) x (Q + 3), one of (P + 3) x (Q + 1), and for tiles other
    than (0, 0) one of 2 x (P + 3) x (Q + 3) for the gathered maps (square roots only: see
    :func:`_relu_norms`).
    """
    n_conv = out_layers[-1]
    c_, p_, q_ = xa.shape
    hh, ww = p_ + 3, q_ + 3
    sep_row, sep_col = p_ - gi + 1, q_ - gj + 1
    in_place = gi == 0 and gj == 0
    blocks = _blocks(p_, q_, gi, gj)
    s = np.zeros((hh, ww), xa.dtype)  # S0, later K
    sig = np.zeros((hh, ww), xa.dtype)
    theta = np.zeros((hh, ww), xa.dtype)
    tmp = np.zeros((hh, ww), xa.dtype)
    rowsum = np.zeros((hh, q_ + 1), xa.dtype)
    gathered = np.zeros((1 if in_place else 2, hh, ww), xa.dtype)
    # the flat span of interior rows 1 .. P+1, on which the ReLU runs as one long vector loop
    lo, hi = ww, (p_ + 2) * ww
    n = hh * ww
    s_f, sig_f, th_f = s.reshape(n)[lo:hi], sig.reshape(n)[lo:hi], theta.reshape(n)[lo:hi]
    for k in range(4):
        r0, nr, di, c0, nc, dj = blocks[k]
        ia, ib, ja, jb = max(di, 0), max(-di, 0), max(dj, 0), max(-dj, 0)
        for u in range(nr):  # S0 = sum over channels, channel by channel (vectorised along rows)
            row = s[r0 + u, c0 : c0 + nc]
            a_row, b_row = xa[0, u + ia, ja : ja + nc], xb[0, u + ib, jb : jb + nc]
            for v in range(nc):
                row[v] = a_row[v] * b_row[v]
            for ch in range(1, c_):
                a_row, b_row = xa[ch, u + ia, ja : ja + nc], xb[ch, u + ib, jb : jb + nc]
                for v in range(nc):
                    row[v] += a_row[v] * b_row[v]
    _box3(s, sig, rowsum, p_ + 1, q_ + 1)  # Sigma^(0) = tr3(S0)
    if record:
        _record_maps(sig, ma, 0, p_, q_, c[2])
    if not fix_first:
        theta[:, :] = sig
        theta[sep_row, :] = 0
        theta[:, sep_col] = 0
    k_out = 0
    for layer in range(1, n_conv + 1):
        add_k = not (fix_last and layer == n_conv)
        if in_place:
            sa, ia_ = ma[layer - 1, 0].reshape(n)[lo:hi], ma[layer - 1, 1].reshape(n)[lo:hi]
            sb, ib_ = mb[layer - 1, 0].reshape(n)[lo:hi], mb[layer - 1, 1].reshape(n)[lo:hi]
            _relu(sig_f, th_f, s_f, sa, sb, ia_, ib_, add_k, c)
        else:
            _gather(ma[layer - 1, 0], gathered[0], blocks, True)
            _gather(mb[layer - 1, 0], gathered[1], blocks, False)
            _relu_norms(sig_f, th_f, s_f, gathered[0].reshape(n)[lo:hi], gathered[1].reshape(n)[lo:hi], add_k, c)
        if layer == out_layers[k_out]:
            if not ntk:
                sums[k_out] = _span_sum(s_f)
            elif fix_last and layer < n_conv:
                sums[k_out] = _span_sum(th_f) - _span_sum(s_f)
            else:
                sums[k_out] = _span_sum(th_f)
            k_out += 1
        if layer < n_conv:
            _box3(s, sig, rowsum, p_ + 1, q_ + 1)
            _box3(theta, tmp, rowsum, p_ + 1, q_ + 1)
            theta, tmp = tmp, theta
            th_f = theta.reshape(n)[lo:hi]
            theta[sep_row, :] = 0
            theta[:, sep_col] = 0
            if record:
                _record_maps(sig, ma, layer, p_, q_, c[2])


@njit(cache=True, nogil=True, error_model="numpy")
def _span_sum(m):
    total = 0.0
    for v in range(m.shape[0]):
        total += m[v]
    return total


@njit(cache=True, parallel=True, error_model="numpy")
def image_maps(x, n_conv, c):
    """Per-image maps ``(n, L, 2, P + 3, Q + 3)``: sqrt(v) and 1/sqrt(v) (0 where v = 0), padded,
    of the variances v = Sigma^(h)(x, x)[p, p] for h = 0 .. L-1.

    O(n P Q L) work, run once per image (not once per pair), by the same tile routine on the
    self pair's delta = 0 plane. Allocates ``16 L (P + 3)(Q + 3)`` bytes per image in float64.
    """
    n, _, p_, q_ = x.shape
    out = np.zeros((n, max(n_conv, 1), 2, p_ + 3, q_ + 3), x.dtype)
    layers = np.full(1, n_conv, np.int64)
    for i in prange(n):
        _tile(x[i], x[i], out[i], out[i], 0, 0, layers, True, False, True, True, c, np.zeros(1))
    return out


@njit(cache=True, parallel=True, error_model="numpy")
def pair_sums(x1, x2, m1, m2, rows, cols, tiles, out_layers, fix_first, fix_last, ntk, c):
    """Readout sums for the pairs ``(x1[rows[k]], x2[cols[k]])`` over the tiles in ``tiles``.

    tiles: (n_tiles, 2) int array (see :func:`all_tiles`); out_layers: see :func:`_tile`. Returns
    float64 ``(n_pairs, len(out_layers))`` (unscaled). Work items are (pair, plane); partial sums
    are reduced in a fixed order, so a pair's value does not depend on which other pairs share the
    call (Gram tiles give bit-identical results). Allocates ``n_pairs * n_tiles * len(out_layers)``
    float64 partial sums.
    """
    n_pairs = rows.shape[0]
    n_planes = tiles.shape[0]
    n_out = out_layers.shape[0]
    partial = np.zeros((n_pairs * n_planes, n_out))
    for t in prange(n_pairs * n_planes):
        k = t // n_planes
        d = t - k * n_planes
        a = rows[k]
        b = cols[k]
        _tile(
            x1[a],
            x2[b],
            m1[a],
            m2[b],
            tiles[d, 0],
            tiles[d, 1],
            out_layers,
            fix_first,
            fix_last,
            ntk,
            False,
            c,
            partial[t],
        )
    out = np.zeros((n_pairs, n_out))
    for k in range(n_pairs):
        for j in range(n_out):
            acc = 0.0
            for d in range(n_planes):
                acc += partial[k * n_planes + d, j]
            out[k, j] = acc
    return out


def all_tiles(p: int, q: int, readout: str) -> np.ndarray:
    """Tiles to visit: all P x Q of them for GAP, only ``(0, 0)`` (delta = 0) for vanilla."""
    if readout == "vanilla":
        return np.zeros((1, 2), np.int64)
    gi, gj = np.meshgrid(np.arange(p), np.arange(q), indexing="ij")
    return np.stack([gi.ravel(), gj.ravel()], axis=1).astype(np.int64)


def constants(dtype) -> tuple:
    """``(pi, 1/(9 pi), 1, 1/2, *asin coefficients, snap)`` in the arithmetic dtype (float32 stays
    float32); ``snap`` = 4 ulp of 1, see :func:`_relu`."""
    t = np.dtype(dtype).type
    return tuple(t(v) for v in (_PI, _INV_9PI, 1.0, 0.5) + _PS + _QS + (4 * np.finfo(dtype).eps,))
