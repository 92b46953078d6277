"""Fused CPU path (Numba): each displacement plane of each pair runs through all layers in cache.

``tr3`` and the ReLU map never mix entries of different displacement ``delta = p - p'``
(``cntk-math.md``, "Structure worth exploiting"). So a pair's 4-D covariance splits into
``(2P-1)(2Q-1)`` planes; plane ``delta`` is an ``(P-|di|) x (Q-|dj|)`` map on which ``tr3`` is a
plain 3x3 box sum with zero padding. This module runs one (pair, plane) work item through every
layer with two small buffers that stay in L1/L2, and sums its readout. The vanilla readout needs
only the ``delta = 0`` plane.

The scalar formulas below re-state :func:`cntk_core.recurrence.relu_dual` (same operation order,
single square root for ``rho``); per-image variances come from running the same plane routine on
the self pair's ``delta = 0`` plane, so an exact self pair sees ``rho == 1`` exactly.
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


@njit(cache=True, nogil=True, error_model="numpy")
def _relu_row(sig, theta, k_out, va, vb, w, add_k, c):
    """One row of the ReLU layer (cntk_core.recurrence.relu_dual): K into k_out, Theta in place.

    sig, theta, k_out: padded rows (w + 2); va, vb: the two images' variance rows (w).
    """
    pi, inv9pi, one = c[0], c[1], c[2]
    zero = one - one
    for v in range(w):
        prod = va[v] * vb[v]
        positive = prod > zero
        norm = np.sqrt(prod) if positive else zero
        rho = sig[v + 1] / norm if positive else zero
        rho = one if rho > one else rho
        rho = -one if rho < -one else rho
        angle = _arccos(rho, c)
        k = norm * (rho * (pi - angle) + np.sqrt(one - rho * rho)) * inv9pi
        k_dot = (pi - angle) * inv9pi
        t = k_dot * theta[v + 1]
        theta[v + 1] = t + k if add_k else t
        k_out[v + 1] = k


@njit(cache=True, nogil=True, error_model="numpy")
def _plane_sum(m, h, w):
    total = 0.0
    for u in range(h):
        for v in range(w):
            total += m[u + 1, v + 1]
    return total


@njit(cache=True, nogil=True, error_model="numpy")
def _plane(xa, xb, va, vb, di, dj, out_layers, fix_first, fix_last, ntk, record, c, sums):
    """Readout sums over one displacement plane of one pair, at the layers in ``out_layers``.

    xa, xb: (P, Q, C) images; va, vb: (L, P, Q) variance maps (Sigma^(h)(x, x)[p, p] for
    h = 0 .. L-1); out_layers: ascending int64 layer counts L_k (depth d = L_k + 1), the last one
    is the number of conv+ReLU layers run, L. With ``record`` (self pair, delta = 0, va is vb) the
    routine writes the variance maps instead of reading them. Writes into ``sums[k]`` the float64
    sum of Theta (``ntk``) or K over the plane for depth ``out_layers[k] + 1``; the caller applies
    the readout's scale. With ``fix_last`` the readout layer's own term K is left out (exactly at
    the last layer, by subtraction at earlier ones). Allocates 5 buffers of about (H+2) x (W+2).
    """
    n_conv = out_layers[-1]
    p_, q_, c_ = xa.shape
    h = p_ - abs(di)
    w = q_ - abs(dj)
    ia = max(di, 0)
    ib = max(-di, 0)
    ja = max(dj, 0)
    jb = max(-dj, 0)
    s = np.zeros((h + 2, w + 2), xa.dtype)  # S0, later K
    sig = np.zeros((h + 2, w + 2), xa.dtype)
    theta = np.zeros((h + 2, w + 2), xa.dtype)
    tmp = np.zeros((h + 2, w + 2), xa.dtype)
    rowsum = np.zeros((h + 2, w), xa.dtype)
    for u in range(h):
        for v in range(w):
            acc = xa[u + ia, v + ja, 0] * xb[u + ib, v + jb, 0]
            for ch in range(1, c_):
                acc += xa[u + ia, v + ja, ch] * xb[u + ib, v + jb, ch]
            s[u + 1, v + 1] = acc
    _box3(s, sig, rowsum, h, w)  # Sigma^(0) = tr3(S0)
    if record:
        for u in range(h):
            for v in range(w):
                va[0, u, v] = sig[u + 1, v + 1]
    if not fix_first:
        theta[:, :] = sig
    k_out = 0
    for layer in range(1, n_conv + 1):
        add_k = not (fix_last and layer == n_conv)
        for u in range(h):
            _relu_row(
                sig[u + 1],
                theta[u + 1],
                s[u + 1],
                va[layer - 1, u + ia, ja : ja + w],
                vb[layer - 1, u + ib, jb : jb + w],
                w,
                add_k,
                c,
            )
        if layer == out_layers[k_out]:
            if not ntk:
                sums[k_out] = _plane_sum(s, h, w)
            elif fix_last and layer < n_conv:
                sums[k_out] = _plane_sum(theta, h, w) - _plane_sum(s, h, w)
            else:
                sums[k_out] = _plane_sum(theta, h, w)
            k_out += 1
        if layer < n_conv:
            _box3(s, sig, rowsum, h, w)
            _box3(theta, tmp, rowsum, h, w)
            theta, tmp = tmp, theta
            if record:
                for u in range(h):
                    for v in range(w):
                        va[layer, u, v] = sig[u + 1, v + 1]


@njit(cache=True, parallel=True, error_model="numpy")
def image_variances(x, n_conv, c):
    """Variance maps ``(n, n_conv, P, Q)``: Sigma^(h)(x, x)[p, p] for h = 0 .. n_conv-1.

    O(n P Q n_conv) work, run once per image (not once per pair).
    """
    n, p_, q_, _ = x.shape
    out = np.zeros((n, max(n_conv, 1), p_, q_), x.dtype)
    layers = np.full(1, n_conv, np.int64)
    for i in prange(n):
        _plane(x[i], x[i], out[i], out[i], 0, 0, layers, True, False, True, True, c, np.zeros(1))
    return out


@njit(cache=True, parallel=True, error_model="numpy")
def pair_sums(x1, x2, v1, v2, rows, cols, deltas, out_layers, fix_first, fix_last, ntk, c):
    """Readout sums for the pairs ``(x1[rows[k]], x2[cols[k]])`` over the planes in ``deltas``.

    deltas: (n_planes, 2) int array of displacements; out_layers: see :func:`_plane`. Returns
    float64 ``(n_pairs, len(out_layers))`` (unscaled). Work items are (pair, plane); partial sums
    are reduced in a fixed order, so a pair's value does not depend on which other pairs share the
    call (tiles give bit-identical results). Allocates ``n_pairs * n_planes * len(out_layers)``
    float64 partial sums.
    """
    n_pairs = rows.shape[0]
    n_planes = deltas.shape[0]
    n_out = out_layers.shape[0]
    partial = np.zeros((n_pairs * n_planes, n_out))
    for t in prange(n_pairs * n_planes):
        k = t // n_planes
        d = t - k * n_planes
        a = rows[k]
        b = cols[k]
        _plane(
            x1[a],
            x2[b],
            v1[a],
            v2[b],
            deltas[d, 0],
            deltas[d, 1],
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


def all_deltas(p: int, q: int, readout: str) -> np.ndarray:
    """Displacements to visit: every plane for GAP, only ``(0, 0)`` for the vanilla readout."""
    if readout == "vanilla":
        return np.zeros((1, 2), np.int64)
    di, dj = np.meshgrid(np.arange(-(p - 1), p), np.arange(-(q - 1), q), indexing="ij")
    return np.stack([di.ravel(), dj.ravel()], axis=1).astype(np.int64)


def constants(dtype) -> tuple:
    """``(pi, 1/(9 pi), 1, 1/2, *asin coefficients)`` in the arithmetic dtype (float32 stays float32)."""
    t = np.dtype(dtype).type
    return tuple(t(v) for v in (_PI, _INV_9PI, 1.0, 0.5) + _PS + _QS)
