"""The CNTK recurrence of Arora et al. (2019), in the paper's names, for NumPy and CuPy arrays.

This module is the single statement of the math (``docs/math.md``); every backend
either calls these functions (the per-layer path) or re-states them scalar by scalar with a
pointer back here (the fused CPU and GPU kernels).

Conventions
-----------
* An image has shape ``P x Q x C``; a covariance tensor of a batch of ``B`` pairs has shape
  ``(B, P, Q, P, Q)`` and is indexed ``[b, i, j, i', j']``.
* ``tr3(A)[i,j,i',j'] = sum_{a,b in {-1,0,1}} A[i+a, j+b, i'+a, j'+b]`` with zero padding: a
  plain sum of nine terms (no 1/9), the same shift applied to both positions.
* One ReLU layer maps ``Sigma`` (with same-position variances ``v``, ``v'``) to
  ``K = sqrt(v v') (rho (pi - arccos rho) + sqrt(1 - rho^2)) / (9 pi)`` and
  ``K_dot = (pi - arccos rho) / (9 pi)``, ``rho = Sigma / sqrt(v v')`` clipped to ``[-1, 1]`` and
  taken as 0 where a variance is 0. The factor ``c_sigma / q^2 = 2 / 9`` of the paper is folded
  into these two formulas, exactly as in the authors' code.
"""

from __future__ import annotations

import math

import numpy as np

INV_9PI = 1.0 / (9.0 * math.pi)


def get_array_module(a):
    """``cupy`` for CuPy arrays, ``numpy`` otherwise (without importing CuPy needlessly)."""
    if type(a).__module__.startswith("cupy"):
        import cupy

        return cupy
    return np


def tr3(a, size: int = 3, circular: bool = False):
    """The paper's tr3 on a batch of covariance tensors ``(B, P, Q, P, Q) -> (B, P, Q, P, Q)``.

    ``circular``: positions wrap around (a ``size x size`` convolution with circular padding), so
    ``tr3(A)[i,j,i',j'] = sum_{a,b} A[(i+a) % P, (j+b) % Q, (i'+a) % P, (j'+b) % Q]``."""
    xp = get_array_module(a)
    r = size // 2
    p, q = a.shape[1], a.shape[2]
    mode = "wrap" if circular else "constant"
    padded = xp.pad(a, [(0, 0)] + [(r, r)] * 4, mode=mode)
    out = xp.zeros_like(a)
    for da in range(size):
        for db in range(size):
            out += padded[:, da : da + p, db : db + q, da : da + p, db : db + q]
    return out


def input_covariance(x1, x2):
    """``S0[b, p, p'] = sum_c x1[b, p, c] x2[b, p', c]`` for B pairs of ``P x Q x C`` images."""
    xp = get_array_module(x1)
    return xp.einsum("bijc,bklc->bijkl", x1, x2)


def arccos_j(rho, angle=None):
    """The ReLU duals, stated once: ``(J1, J0)`` of a correlation ``rho``, elementwise.

    With ``theta = arccos rho``: ``J1 = rho (pi - theta) + sqrt(1 - rho^2)`` and
    ``J0 = pi - theta``, Cho and Saul's arc-cosine functions. For unit-variance jointly Gaussian
    ``u, v`` of correlation ``rho``, ``2 E[relu(u) relu(v)] = J1 / pi`` and
    ``2 E[step(u) step(v)] = J0 / pi`` (the normalised duals ``kappa1``, ``kappa0``). Every caller
    applies its own normalisation to these two expressions (``relu_dual`` multiplies by
    ``1 / (9 pi)``, the finite nets' closed forms divide by ``pi``), so that each path keeps its
    rounding.

    ``rho``: NumPy or CuPy float array already in ``[-1, 1]`` (the caller clips it and decides
    what a zero variance means); ``pi`` is taken in ``rho``'s dtype. ``angle``: ``arccos(rho)``
    when ``None``; an emulation of a kernel that forms the angle another way (the CUDA shift blocks'
    cancellation-free ``2 arcsin(sqrt((1 - rho) / 2))`` above ``rho = 1/2``) passes its own.
    """
    xp = get_array_module(rho)
    if angle is None:
        angle = xp.arccos(rho)
    pi = rho.dtype.type(math.pi)
    return rho * (pi - angle) + xp.sqrt(1 - rho * rho), pi - angle


def relu_dual(sigma, var1, var2):
    """``(K, K_dot)`` of one ReLU layer, elementwise; all three inputs broadcast together.

    ``var1 * var2`` is the product of the two positions' variances; ``rho`` is computed as
    ``sigma / sqrt(var1 * var2)`` with a single square root, so that an exact self pair gets
    ``rho == 1`` exactly (``sqrt(v*v) == v`` in IEEE arithmetic) and no arccos rounding.
    ``K = sqrt(v v') J1(rho) / (9 pi)``, ``K_dot = J0(rho) / (9 pi)`` (:func:`arccos_j`).
    """
    xp = get_array_module(sigma)
    prod = var1 * var2
    positive = prod > 0
    norm = xp.sqrt(xp.where(positive, prod, 1))
    rho = xp.where(positive, sigma / norm, 0)
    rho = xp.clip(rho, -1, 1)
    norm = xp.where(positive, norm, 0)
    j1, j0 = arccos_j(rho)
    inv_9pi = sigma.dtype.type(INV_9PI)
    return norm * j1 * inv_9pi, j0 * inv_9pi


def diagonal(t):
    """Same-position entries ``t[b, p, p]`` of ``(B, P, Q, P, Q)`` tensors, as ``(B, P, Q)`` maps."""
    b, p, q = t.shape[0], t.shape[1], t.shape[2]
    return t.reshape(b, p * q, p * q).diagonal(axis1=1, axis2=2).reshape(b, p, q)


def readout_vanilla(t):
    """CNTK-V readout (flatten + FC): ``sum_p t[p, p]`` for each pair, ``(B, P, Q, P, Q) -> (B,)``."""
    return diagonal(t).sum(axis=(1, 2))


def lap_counts(n: int, c: int, circular: bool = False) -> np.ndarray:
    """LAP's weights along one axis of length ``n``: float64 ``[n, n]``, entry ``[u, u']`` the number
    of pairs of shifts ``(s, s')`` in ``[-c, c]^2`` that move ``u`` and ``u'`` to the same position
    ``i = u - s = u' - s'`` of the axis (``i`` inside ``0 .. n-1``; with ``circular``, all taken
    modulo ``n``). The 2-D weight of ``Theta[p, p']`` is the product of the two axes' counts divided
    by ``(2c + 1)^4`` (:func:`readout_lap`; ``docs/math.md``, "Local average pooling")."""
    shifts = np.arange(-c, c + 1)
    counts = np.zeros((n, n))
    for i in range(n):  # every target position i and the positions u = i + s that reach it
        u = i + shifts
        if circular:
            u = u % n
        else:
            u = u[(u >= 0) & (u < n)]
        np.add.at(counts, (u[:, None], u[None, :]), 1.0)
    return counts


def readout_lap(t, c: int, circular: bool = False):
    """LAP readout (Li et al. 2019) with window ``c``: ``sum_{p,p'} w(p,p') t[p, p']`` with
    ``w = lap_counts(P)[i,i'] lap_counts(Q)[j,j'] / (2c+1)^4``, ``(B, P, Q, P, Q) -> (B,)``. ``c = 0``
    is :func:`readout_vanilla`; its value is the vanilla readout averaged over all translations of
    the two images by up to ``c`` pixels along each axis."""
    xp = get_array_module(t)
    p, q = t.shape[1], t.shape[2]
    wp = xp.asarray(lap_counts(p, c, circular), dtype=t.dtype)
    wq = xp.asarray(lap_counts(q, c, circular), dtype=t.dtype)
    return xp.einsum("bijkl,ik,jl->b", t, wp, wq) / float(2 * c + 1) ** 4


def block_mean(a, window: int, axes: tuple[int, ...]):
    """Mean of ``a`` over non-overlapping ``window``-long blocks along each of ``axes`` (trailing
    entries that fill no whole block are dropped): the one statement of average pooling, for
    covariances (``AvgPool``: axes 1-4 of ``(B, P, Q, P, Q)``) and images (axes 1-2 of NHWC).
    Each of ``axes`` shrinks to ``size // window``; ``ValueError`` if one would be empty."""
    sizes = [a.shape[ax] // window for ax in axes]
    if min(sizes) == 0:
        raise ValueError(f"a {window}x{window} block does not fit a {a.shape[axes[0]]}x{a.shape[axes[1]]} map")
    a = a[tuple(slice(0, a.shape[ax] // window * window) if ax in axes else slice(None) for ax in range(a.ndim))]
    shape, reduce = [], []
    for ax, n in enumerate(a.shape):
        if ax in axes:
            shape += [n // window, window]
            reduce.append(len(shape) - 1)
        else:
            shape.append(n)
    return a.reshape(shape).mean(axis=tuple(reduce))


def gap_scale(p: int, q: int) -> float:
    """The GAP readout's factor ``1 / (PQ)^2`` (:func:`readout_gap`), for engines that sum ``t`` themselves."""
    return 1.0 / (p * q) ** 2


def readout_gap(t):
    """CNTK-GAP readout (global average pool + FC): ``(1/(PQ)^2) sum_{p,p'} t[p, p']`` -> ``(B,)``."""
    p, q = t.shape[1], t.shape[2]
    return t.sum(axis=(1, 2, 3, 4)) / (p * q) ** 2  # a division, not * gap_scale(p, q): the reference's bits
