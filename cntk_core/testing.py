"""The slow, obviously-correct CNTK oracle, for tests and benchmarks: written straight from the math
in ``docs/math.md``, on full 4-D covariance tensors.

It shares no code with the rest of ``cntk_core``: one image pair at a time, full tensors
``[i, j, i', j']`` for the pair and for both self pairs, float64 throughout, every formula as the
math states it (no fusion, no planes, no rescaling). Use it only on a handful of small images; at
32x32 each tensor is 8 MB and each pair takes about a second per layer.
"""

from __future__ import annotations

import numpy as np


def tr3(a: np.ndarray, circular: bool = False) -> np.ndarray:
    """tr3(A)[i,j,i',j'] = sum over (a, b) in {-1,0,1}^2 of A[i+a, j+b, i'+a, j'+b], zero outside
    (``circular``: indices modulo P and Q, written with np.roll)."""
    if circular:
        out = np.zeros_like(a)
        for da in (-1, 0, 1):
            for db in (-1, 0, 1):
                out += np.roll(a, (-da, -db, -da, -db), axis=(0, 1, 2, 3))
        return out
    p, q = a.shape[0], a.shape[1]
    padded = np.pad(a, 1)
    out = np.zeros_like(a)
    for da in (-1, 0, 1):
        for db in (-1, 0, 1):
            out += padded[1 + da : 1 + da + p, 1 + db : 1 + db + q, 1 + da : 1 + da + p, 1 + db : 1 + db + q]
    return out


def avg_pool2(a: np.ndarray) -> np.ndarray:
    """2x2 average pooling of both positions: out[I,J,I',J'] = 1/16 sum over a, b, a', b' in {0, 1}
    of A[2I+a, 2J+b, 2I'+a', 2J'+b'] (a trailing odd row or column is dropped), one loop per entry."""
    p, q = a.shape[0] // 2, a.shape[1] // 2
    out = np.zeros((p, q, p, q))
    for i in range(p):
        for j in range(q):
            for k in range(p):
                for m in range(q):
                    out[i, j, k, m] = a[
                        2 * i : 2 * i + 2, 2 * j : 2 * j + 2, 2 * k : 2 * k + 2, 2 * m : 2 * m + 2
                    ].mean()
    return out


def lap_readout(t: np.ndarray, c: int, circular: bool = False) -> float:
    """LAP from its definition: (2c+1)^-4 sum over positions i of the grid and shifts D, D' in
    [-c, c]^2 of t[i + D, i + D'], terms leaving the grid dropped (or indices wrapped: ``circular``)."""
    p, q = t.shape[0], t.shape[1]
    total = 0.0
    shifts = range(-c, c + 1)
    for i in range(p):
        for j in range(q):
            for a in shifts:
                for b in shifts:
                    for a2 in shifts:
                        for b2 in shifts:
                            u, v, u2, v2 = i + a, j + b, i + a2, j + b2
                            if circular:
                                total += t[u % p, v % q, u2 % p, v2 % q]
                            elif 0 <= u < p and 0 <= v < q and 0 <= u2 < p and 0 <= v2 < q:
                                total += t[u, v, u2, v2]
    return total / (2 * c + 1) ** 4


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


def reference_kernel(
    x, y, depth, readout="gap", fix_first=False, fix_last=False, kind="ntk", *,
    lap_c=None, padding="zero", pools=(), flip=False,
) -> float:  # fmt: skip
    """CNTK (kind="ntk") or CNN-GP (kind="nngp") value for one pair of P x Q x C images.

    ``readout``: "gap", "vanilla" or "lap" (with ``lap_c``, :func:`lap_readout`); ``padding``:
    "zero" or "circular" (every tr3); ``pools``: conv counts after which :func:`avg_pool2` pools the
    three tensors; ``flip``: (K(x, y) + K(x, y flipped along its width)) / 2 from two evaluations."""
    if flip:
        args = (depth, readout, fix_first, fix_last, kind)
        opts = {"lap_c": lap_c, "padding": padding, "pools": pools}
        y = np.asarray(y)
        return 0.5 * (reference_kernel(x, y, *args, **opts) + reference_kernel(x, y[:, ::-1], *args, **opts))
    circular = padding == "circular"
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n_conv = depth - 1
    sig_xy = tr3(np.einsum("ijc,klc->ijkl", x, y), circular)
    sig_xx = tr3(np.einsum("ijc,klc->ijkl", x, x), circular)
    sig_yy = tr3(np.einsum("ijc,klc->ijkl", y, y), circular)
    theta = np.zeros_like(sig_xy) if fix_first else sig_xy.copy()
    for h in range(1, n_conv + 1):
        vx, vy = _diag(sig_xx), _diag(sig_yy)
        k_xy, kdot_xy = _relu_step(sig_xy, vx, vy)
        k_xx, _ = _relu_step(sig_xx, vx, vx)
        k_yy, _ = _relu_step(sig_yy, vy, vy)
        theta = kdot_xy * theta + k_xy
        if fix_last and h == n_conv:
            theta = theta - k_xy
        if h in pools:
            k_xy, k_xx, k_yy, theta = avg_pool2(k_xy), avg_pool2(k_xx), avg_pool2(k_yy), avg_pool2(theta)
        if h < n_conv:
            sig_xy, sig_xx, sig_yy = tr3(k_xy, circular), tr3(k_xx, circular), tr3(k_yy, circular)
            theta = tr3(theta, circular)
    m = theta if kind == "ntk" else k_xy
    p, q = m.shape[0], m.shape[1]
    if readout == "vanilla":
        return float(_diag(m).sum())
    if readout == "lap":
        return lap_readout(m, lap_c, circular)
    return float(m.sum() / (p * q) ** 2)


def reference_matrix(
    x1, x2, depth, readout="gap", fix_first=False, fix_last=False, kind="ntk", **extensions
) -> np.ndarray:
    """[n1, n2] matrix of :func:`reference_kernel` values, one pair at a time (``extensions``:
    ``lap_c``, ``padding``, ``pools``, ``flip``)."""
    out = np.empty((len(x1), len(x2)))
    for i, a in enumerate(x1):
        for j, b in enumerate(x2):
            out[i, j] = reference_kernel(a, b, depth, readout, fix_first, fix_last, kind, **extensions)
    return out


def reference_arch_matrix(x1, x2, arch, kind="ntk") -> np.ndarray:
    """:func:`reference_matrix` of an Architecture-like value (reads its fields by name only)."""
    return reference_matrix(
        x1, x2, arch.depth, arch.readout, arch.fix_first, arch.fix_last, kind,
        lap_c=arch.lap_c, padding=arch.padding, pools=tuple(arch.pools), flip=arch.flip,
    )  # fmt: skip
