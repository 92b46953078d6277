"""NumPy statement of one thread block of the fused GPU kernel (``cntk_planes.cu:shift_block_thread``).

A test oracle, checked on the CPU against :mod:`cntk_core.testing`: the same shift-block indexing
and the same cancellation-free arccos as ``cntk_core/cuda/cntk_planes.cu``, one whole shift block
at a time instead of one entry per thread. It reaches 40x40 images in well under a second, where
the 4-D reference takes seconds (``tests/test_gpu_fake_cupy.py`` uses it there).
"""

from __future__ import annotations

import functools

import numpy as np

from cntk_core.architecture import Architecture
from cntk_core.gpu import shift_block_list
from cntk_core.recurrence import INV_9PI, arccos_j, gap_scale


def _box3_block(src, up, down, left, right):
    """``box3`` of the .cu for every entry of a shift block at once (neighbour masks per row/column)."""
    p, q = src.shape
    padded = np.zeros((p + 2, q + 2), src.dtype)
    padded[1:-1, 1:-1] = src
    rmask = {-1: up, 0: np.ones_like(up), 1: down}
    cmask = {-1: left, 0: np.ones_like(left), 1: right}
    acc = np.zeros_like(src)
    for a in (-1, 0, 1):
        for b in (-1, 0, 1):
            acc += np.where(rmask[a] & cmask[b], padded[1 + a : 1 + a + p, 1 + b : 1 + b + q], 0)
    return acc


def _relu_dual_block(s, prod):
    """``relu_dual`` of the .cu, elementwise: the duals of :func:`cntk_core.recurrence.arccos_j`
    with the .cu's cancellation-free arccos, ``2 arcsin(sqrt((1 - rho) / 2))`` above rho = 1/2."""
    t = s.dtype.type
    pos = prod > 0
    norm = np.where(pos, np.sqrt(np.where(pos, prod, 1)), t(0))
    rho = np.clip(np.where(pos, s / np.where(pos, norm, 1), t(0)), t(-1), t(1))
    angle = np.where(rho > t(0.5), t(2) * np.arcsin(np.sqrt((t(1) - rho) * t(0.5))), np.arccos(rho))
    j1, j0 = arccos_j(rho, angle)
    inv_9pi = t(INV_9PI)
    return norm * j1 * inv_9pi, j0 * inv_9pi


@functools.cache
def lap_axis_counts(n: int, c: int) -> np.ndarray:
    """LAP's integer weights along one axis (zero padding), counted literally: ``[u, v]`` = the
    number of window centres ``m`` in ``0 .. n-1`` with ``|u - m| <= c`` and ``|v - m| <= c``."""
    counts = np.zeros((n, n), np.int64)
    for m in range(n):
        inside = [u for u in range(n) if abs(u - m) <= c]
        for u in inside:
            for v in inside:
                counts[u, v] += 1
    return counts


def emulate_shift_block(xa, xb, va, vb, gi, gj, n_conv, fix_first, fix_last, ntk, record=False, lap_c=None) -> float:
    """What one thread block of ``cntk_shift_blocks`` computes: the float64 readout sum of shift block ``(gi, gj)``.

    xa, xb: ``(P, Q, C)`` images in the arithmetic dtype; va, vb: ``(L, P, Q)`` variance maps
    (with ``record``, ``va`` receives the maps of the self pair ``xa == xb`` and ``vb`` is unused).
    Entry ``[r, c]`` of the shift block is covariance entry ``[i, j, r, c]``, ``i = (r + gi) % P``,
    ``j = (c + gj) % Q``. ``lap_c``: LAP's window (each entry's value times its integer weight
    ``n_P(i, r) * n_Q(j, c)``, :func:`lap_axis_counts`), ``None`` for GAP / vanilla (unweighted).
    """
    p, q, _ = xa.shape
    r = np.arange(p)[:, None]
    c = np.arange(q)[None, :]
    i = (r + gi) % p
    j = (c + gj) % q
    up, down = (r > 0) & (i > 0), (r < p - 1) & (i < p - 1)
    left, right = (c > 0) & (j > 0), (c < q - 1) & (j < q - 1)
    s_src = np.einsum("abk,abk->ab", xa[i, j], xb)  # S0
    t_src = np.zeros_like(s_src)
    total = 0.0
    for h in range(1, n_conv + 1):
        s = _box3_block(s_src, up, down, left, right)
        if h == 1:
            t = np.zeros_like(s) if fix_first else s.copy()
        else:
            t = _box3_block(t_src, up, down, left, right)
        if record:
            va[h - 1] = s
            prod = s * s
        else:
            prod = va[h - 1][i, j] * vb[h - 1]
        k, k_dot = _relu_dual_block(s, prod)
        t = k_dot * t
        if not (fix_last and h == n_conv):
            t = t + k
        s_src, t_src = k, t
        if h == n_conv:
            value = (t if ntk else k).astype(np.float64)
            if lap_c is not None:
                value = value * (lap_axis_counts(p, lap_c)[i, r] * lap_axis_counts(q, lap_c)[j, c])
            total = float(value.sum())
    return total


def emulate_matrix(x1, x2, spec: Architecture, kind: str = "ntk", dtype="float64") -> np.ndarray:
    """``[n1, n2]`` kernel from :func:`emulate_shift_block` over the engine's shift blocks
    (:func:`cntk_core.gpu.shift_block_list`; small inputs only)."""
    dt = np.dtype(dtype)
    x1 = np.asarray(x1, dt)
    x2 = np.asarray(x2, dt)
    p, q = x1.shape[1], x1.shape[2]
    lap_c = spec.lap_c if spec.readout == "lap" else None
    blocks = shift_block_list(p, q, spec.readout, lap_c)
    scale = {"vanilla": 1.0, "gap": gap_scale(p, q)}.get(spec.readout) or (2 * lap_c + 1) ** -4.0
    L = spec.n_conv

    def variances(x):
        v = np.zeros((len(x), L, p, q), dt)
        for n, img in enumerate(x):
            emulate_shift_block(img, img, v[n], v[n], 0, 0, L, True, False, True, record=True)
        return v

    v1, v2 = variances(x1), variances(x2)
    out = np.empty((len(x1), len(x2)))
    for a in range(len(x1)):
        for b in range(len(x2)):
            parts = [
                emulate_shift_block(
                    x1[a], x2[b], v1[a], v2[b], gi, gj, L, spec.fix_first, spec.fix_last, kind == "ntk", lap_c=lap_c
                )
                for gi, gj in blocks
            ]
            out[a, b] = sum(parts) * scale  # shift-block order, as cntk_reduce
    return out
