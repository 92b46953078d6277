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


@njit(cache=True, nogil=True)
def _box3(src, dst, h, w):
    """dst[1:h+1, 1:w+1] = 3x3 box sum of src (whose border rows/columns hold zeros)."""
    for u in range(h):
        for v in range(w):
            acc = src[u, v]
            acc += src[u, v + 1]
            acc += src[u, v + 2]
            acc += src[u + 1, v]
            acc += src[u + 1, v + 1]
            acc += src[u + 1, v + 2]
            acc += src[u + 2, v]
            acc += src[u + 2, v + 1]
            acc += src[u + 2, v + 2]
            dst[u + 1, v + 1] = acc


@njit(cache=True, nogil=True)
def _plane(xa, xb, va, vb, di, dj, n_conv, fix_first, fix_last, ntk, record, pi, inv9pi, one):
    """Readout sum over one displacement plane of one pair, after all ``n_conv`` conv+ReLU layers.

    xa, xb: (P, Q, C) images; va, vb: (n_conv, P, Q) variance maps (Sigma^(h)(x, x)[p, p] for
    h = 0 .. n_conv-1). With ``record`` (self pair, delta = 0, va is vb) the routine writes those
    maps instead of reading precomputed ones. Returns the float64 sum of Theta (``ntk``) or K over
    the plane; the caller applies the readout's scale. Allocates 4 buffers of (H+2) x (W+2).
    """
    p_, q_, c_ = xa.shape
    zero = one - one
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
    for u in range(h):
        for v in range(w):
            acc = xa[u + ia, v + ja, 0] * xb[u + ib, v + jb, 0]
            for c in range(1, c_):
                acc += xa[u + ia, v + ja, c] * xb[u + ib, v + jb, c]
            s[u + 1, v + 1] = acc
    _box3(s, sig, h, w)  # Sigma^(0) = tr3(S0)
    if record:
        for u in range(h):
            for v in range(w):
                va[0, u, v] = sig[u + 1, v + 1]
    if not fix_first:
        theta[:, :] = sig
    for layer in range(1, n_conv + 1):
        add_k = not (fix_last and layer == n_conv)
        for u in range(h):
            for v in range(w):
                prod = va[layer - 1, u + ia, v + ja] * vb[layer - 1, u + ib, v + jb]
                if prod > 0:
                    norm = np.sqrt(prod)
                    rho = min(max(sig[u + 1, v + 1] / norm, -one), one)
                else:
                    norm = zero
                    rho = zero
                angle = np.arccos(rho)
                k = norm * (rho * (pi - angle) + np.sqrt(one - rho * rho)) * inv9pi
                k_dot = (pi - angle) * inv9pi
                t = k_dot * theta[u + 1, v + 1]
                if add_k:
                    t += k
                theta[u + 1, v + 1] = t
                s[u + 1, v + 1] = k
        if layer < n_conv:
            _box3(s, sig, h, w)
            _box3(theta, tmp, h, w)
            theta, tmp = tmp, theta
            if record:
                for u in range(h):
                    for v in range(w):
                        va[layer, u, v] = sig[u + 1, v + 1]
    m = theta if ntk else s
    total = 0.0
    for u in range(h):
        for v in range(w):
            total += m[u + 1, v + 1]
    return total


@njit(cache=True, parallel=True)
def image_variances(x, n_conv, pi, inv9pi, one):
    """Variance maps ``(n, n_conv, P, Q)``: Sigma^(h)(x, x)[p, p] for h = 0 .. n_conv-1.

    O(n P Q n_conv) work, run once per image (not once per pair).
    """
    n, p_, q_, _ = x.shape
    out = np.zeros((n, max(n_conv, 1), p_, q_), x.dtype)
    for i in prange(n):
        _plane(x[i], x[i], out[i], out[i], 0, 0, n_conv, True, False, True, True, pi, inv9pi, one)
    return out


@njit(cache=True, parallel=True)
def pair_sums(x1, x2, v1, v2, rows, cols, deltas, n_conv, fix_first, fix_last, ntk, pi, inv9pi, one):
    """Readout sums for the pairs ``(x1[rows[k]], x2[cols[k]])`` over the planes in ``deltas``.

    deltas: (n_planes, 2) int array of displacements. Returns float64 ``(n_pairs,)`` (unscaled).
    Work items are (pair, plane); partial sums are reduced in a fixed order, so a pair's value does
    not depend on which other pairs share the call (tiles give bit-identical results).
    """
    n_pairs = rows.shape[0]
    n_planes = deltas.shape[0]
    partial = np.zeros(n_pairs * n_planes)
    for t in prange(n_pairs * n_planes):
        k = t // n_planes
        d = t - k * n_planes
        a = rows[k]
        b = cols[k]
        partial[t] = _plane(
            x1[a],
            x2[b],
            v1[a],
            v2[b],
            deltas[d, 0],
            deltas[d, 1],
            n_conv,
            fix_first,
            fix_last,
            ntk,
            False,
            pi,
            inv9pi,
            one,
        )
    out = np.zeros(n_pairs)
    for k in range(n_pairs):
        acc = 0.0
        for d in range(n_planes):
            acc += partial[k * n_planes + d]
        out[k] = acc
    return out


def all_deltas(p: int, q: int, readout: str) -> np.ndarray:
    """Displacements to visit: every plane for GAP, only ``(0, 0)`` for the vanilla readout."""
    if readout == "vanilla":
        return np.zeros((1, 2), np.int64)
    di, dj = np.meshgrid(np.arange(-(p - 1), p), np.arange(-(q - 1), q), indexing="ij")
    return np.stack([di.ravel(), dj.ravel()], axis=1).astype(np.int64)


def constants(dtype) -> tuple:
    """``(pi, 1/(9 pi), 1)`` as scalars of the arithmetic dtype, so float32 stays float32."""
    t = np.dtype(dtype).type
    return t(_PI), t(_INV_9PI), t(1)
