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


def box_sum(a, size: int = 3):
    """Sum over ``size x size`` windows of the two trailing axes, zero padded ("SAME").

    Shapes: ``(..., H, W) -> (..., H, W)``. The nine (or ``size**2``) shifted terms are added in a
    fixed order (row shift outer, column shift inner) so that every backend rounds identically.
    """
    xp = get_array_module(a)
    r = size // 2
    h, w = a.shape[-2], a.shape[-1]
    pad = [(0, 0)] * (a.ndim - 2) + [(r, r), (r, r)]
    padded = xp.pad(a, pad)
    out = xp.zeros_like(a)
    for da in range(size):
        for db in range(size):
            out += padded[..., da : da + h, db : db + w]
    return out


def tr3(a, size: int = 3):
    """The paper's tr3 on a batch of covariance tensors ``(B, P, Q, P, Q) -> (B, P, Q, P, Q)``."""
    xp = get_array_module(a)
    r = size // 2
    p, q = a.shape[1], a.shape[2]
    padded = xp.pad(a, [(0, 0)] + [(r, r)] * 4)
    out = xp.zeros_like(a)
    for da in range(size):
        for db in range(size):
            out += padded[:, da : da + p, db : db + q, da : da + p, db : db + q]
    return out


def input_covariance(x1, x2):
    """``S0[b, p, p'] = sum_c x1[b, p, c] x2[b, p', c]`` for B pairs of ``P x Q x C`` images."""
    xp = get_array_module(x1)
    return xp.einsum("bijc,bklc->bijkl", x1, x2)


def relu_dual(sigma, var1, var2):
    """``(K, K_dot)`` of one ReLU layer, elementwise; all three inputs broadcast together.

    ``var1 * var2`` is the product of the two positions' variances; ``rho`` is computed as
    ``sigma / sqrt(var1 * var2)`` with a single square root, so that an exact self pair gets
    ``rho == 1`` exactly (``sqrt(v*v) == v`` in IEEE arithmetic) and no arccos rounding.
    """
    xp = get_array_module(sigma)
    prod = var1 * var2
    positive = prod > 0
    norm = xp.sqrt(xp.where(positive, prod, 1))
    rho = xp.where(positive, sigma / norm, 0)
    rho = xp.clip(rho, -1, 1)
    norm = xp.where(positive, norm, 0)
    angle = xp.arccos(rho)
    dtype = sigma.dtype.type
    k = norm * (rho * (dtype(math.pi) - angle) + xp.sqrt(1 - rho * rho)) * dtype(INV_9PI)
    k_dot = (dtype(math.pi) - angle) * dtype(INV_9PI)
    return k, k_dot


def diagonal(t):
    """Same-position entries ``t[b, p, p]`` of ``(B, P, Q, P, Q)`` tensors, as ``(B, P, Q)`` maps."""
    b, p, q = t.shape[0], t.shape[1], t.shape[2]
    return t.reshape(b, p * q, p * q).diagonal(axis1=1, axis2=2).reshape(b, p, q)


def readout_vanilla(t):
    """CNTK-V readout (flatten + FC): ``sum_p t[p, p]`` for each pair, ``(B, P, Q, P, Q) -> (B,)``."""
    return diagonal(t).sum(axis=(1, 2))


def readout_gap(t):
    """CNTK-GAP readout (global average pool + FC): ``(1/(PQ)^2) sum_{p,p'} t[p, p']`` -> ``(B,)``."""
    p, q = t.shape[1], t.shape[2]
    return t.sum(axis=(1, 2, 3, 4)) / (p * q) ** 2
