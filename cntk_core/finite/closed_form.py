"""Closed forms of the fully-connected ReLU net: the normalised arc-cosine maps and its NTK / NNGP.

Both rest on :func:`cntk_core.recurrence.arccos_j`, the one statement of the ReLU duals.
"""

from __future__ import annotations

import numpy as np

from ..recurrence import arccos_j, get_array_module
from ..validation import ParameterError, check_flag, check_int, check_kind
from ._checks import _finite_array


def relu_arccos(rho):
    """Normalised ReLU arc-cosine maps ``(kappa1, kappa0)`` of a correlation ``rho`` in [-1, 1]:
    ``kappa1 = (rho (pi - arccos rho) + sqrt(1 - rho^2)) / pi`` (= ``2 E[relu(u) relu(v)]``) and
    ``kappa0 = (pi - arccos rho) / pi`` (= ``2 E[step(u) step(v)]``) for unit-variance ``u, v``.

    ``rho``: number or array (NumPy or CuPy), clipped to [-1, 1]; float64 results on its device.
    """
    xp = get_array_module(rho)
    rho = xp.clip(xp.asarray(rho, dtype=xp.float64), -1.0, 1.0)
    j1, j0 = arccos_j(rho)
    return j1 / np.pi, j0 / np.pi


def fc_relu_ntk(
    x1, x2=None, *, n_hidden: int, kind: str = "ntk", fix_first: bool = False, fix_last: bool = False
) -> np.ndarray:
    """Closed-form NTK / NNGP of a fully-connected ReLU net (``c_sigma = 2``, no biases, NTK param).

    ``x``: ``(N, d)``. ``Sigma^0 = x x'^T``; per hidden layer ``Sigma <- sqrt(v v') kappa1(rho)``,
    ``Theta <- kappa0(rho) Theta + Sigma``. A CNTK of depth ``d`` on ``1 x 1`` images equals this
    with ``n_hidden = d - 1``, divided by ``9^(d-1)`` (the paper folds ``1/9`` into each ReLU).
    ``n_hidden``: number of hidden ReLU layers, an integer >= 0 (``fix_first`` is the input layer,
    ``fix_last`` the readout). ``n_hidden = 0`` is the linear model ``w . x``: its one layer is both,
    so NTK = ``x x'^T``, or 0 when either flag fixes it; NNGP = ``x x'^T``.
    Returns float64 ``(N1, N2)``.
    """
    check_kind(kind)
    n_hidden = check_int(n_hidden, "n_hidden", 0)
    fix_first = check_flag(fix_first, "fix_first")
    fix_last = check_flag(fix_last, "fix_last")
    a = _finite_array(x1, "x1")
    b = a if x2 is None else _finite_array(x2, "x2")
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ParameterError(
            "x1" if x2 is None or a.ndim != 2 else "x2",
            f"x1, x2 must be (N, d) with equal d, got {a.shape} and {b.shape}",
        )
    sym = x2 is None
    sig = a @ b.T
    va, vb = (a * a).sum(1), (b * b).sum(1)
    theta = np.zeros_like(sig) if fix_first else sig.copy()
    k = sig
    for _ in range(n_hidden):
        if sym:  # self pairs get rho == 1 exactly (arccos is ill-conditioned there)
            va = vb = np.diag(sig).copy()
        norm = np.sqrt(np.outer(va, vb))
        rho = np.divide(sig, norm, out=np.zeros_like(sig), where=norm > 0)
        k1, k0 = relu_arccos(rho)
        k = norm * k1
        theta = k0 * theta + k
        sig = k
        # variances of a ReLU layer with c_sigma = 2: kappa1(1) = 1, so v is unchanged
    if n_hidden == 0:  # one layer, both input and readout
        theta = np.zeros_like(sig) if fix_first or fix_last else sig
    elif fix_last:
        theta = theta - k
    return theta if kind == "ntk" else k
