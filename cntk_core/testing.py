"""The slow, obviously-correct CNTK oracle, for tests and benchmarks: written straight from the math
in ``docs/math.md``, on full 4-D covariance tensors.

It shares no code with the rest of ``cntk_core``: one image pair at a time, full tensors
``[i, j, i', j']`` for the pair and for both self pairs, float64 throughout, every formula as the
math states it (no fusion, no planes, no rescaling). Use it only on a handful of small images; at
32x32 each tensor is 8 MB and each pair takes about a second per layer.
"""

from __future__ import annotations

import numpy as np


def tr3(a: np.ndarray) -> np.ndarray:
    """tr3(A)[i,j,i',j'] = sum over (a, b) in {-1,0,1}^2 of A[i+a, j+b, i'+a, j'+b], zero outside."""
    p, q = a.shape[0], a.shape[1]
    padded = np.pad(a, 1)
    out = np.zeros_like(a)
    for da in (-1, 0, 1):
        for db in (-1, 0, 1):
            out += padded[1 + da : 1 + da + p, 1 + db : 1 + db + q, 1 + da : 1 + da + p, 1 + db : 1 + db + q]
    return out


def _diag(t: np.ndarray) -> np.ndarray:
    """Same-position entries t[p, p] as a P x Q map."""
    p, q = t.shape[0], t.shape[1]
    return t.reshape(p * q, p * q).diagonal().reshape(p, q)


def _relu_step(sigma: np.ndarray, vx: np.ndarray, vy: np.ndarray):
    """K and K-dot of one ReLU layer, exactly as in docs/math.md, section 3 (rho = 0 where a variance is 0)."""
    prod = vx[:, :, None, None] * vy[None, None, :, :]
    norm = np.sqrt(prod)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.where(prod > 0, sigma / norm, 0.0)
    rho = np.clip(rho, -1.0, 1.0)
    k = norm * (rho * (np.pi - np.arccos(rho)) + np.sqrt(1.0 - rho**2)) / (9 * np.pi)
    kdot = (np.pi - np.arccos(rho)) / (9 * np.pi)
    return k, kdot


def reference_kernel(x, y, depth, readout="gap", fix_first=False, fix_last=False, kind="ntk") -> float:
    """CNTK (kind="ntk") or CNN-GP (kind="nngp") value for one pair of P x Q x C images."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n_conv = depth - 1
    sig_xy = tr3(np.einsum("ijc,klc->ijkl", x, y))
    sig_xx = tr3(np.einsum("ijc,klc->ijkl", x, x))
    sig_yy = tr3(np.einsum("ijc,klc->ijkl", y, y))
    theta = np.zeros_like(sig_xy) if fix_first else sig_xy.copy()
    for h in range(1, n_conv + 1):
        vx, vy = _diag(sig_xx), _diag(sig_yy)
        k_xy, kdot_xy = _relu_step(sig_xy, vx, vy)
        k_xx, _ = _relu_step(sig_xx, vx, vx)
        k_yy, _ = _relu_step(sig_yy, vy, vy)
        theta = kdot_xy * theta + k_xy
        if h < n_conv:
            sig_xy, sig_xx, sig_yy = tr3(k_xy), tr3(k_xx), tr3(k_yy)
            theta = tr3(theta)
    if fix_last:
        theta = theta - k_xy
    m = theta if kind == "ntk" else k_xy
    p, q = x.shape[0], x.shape[1]
    if readout == "vanilla":
        return float(_diag(m).sum())
    return float(m.sum() / (p * q) ** 2)


def reference_matrix(x1, x2, depth, readout="gap", fix_first=False, fix_last=False, kind="ntk") -> np.ndarray:
    """[n1, n2] matrix of :func:`reference_kernel` values, one pair at a time."""
    out = np.empty((len(x1), len(x2)))
    for i, a in enumerate(x1):
        for j, b in enumerate(x2):
            out[i, j] = reference_kernel(a, b, depth, readout, fix_first, fix_last, kind)
    return out
