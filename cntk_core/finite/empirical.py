"""Empirical kernels of finite nets: the NTK from per-layer contractions, the NNGP from outputs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..backend import to_host
from ..recurrence import get_array_module
from ..validation import ParameterError, check_dtype, check_int
from ._checks import _finite_array, _images, _seed_list

if TYPE_CHECKING:
    from .net import FiniteCNN

METHODS = ("auto", "gram", "jacobian")


# ----------------------------------------------------------------------------- one parameter set
def empirical_ntk(net: FiniteCNN, params, x1, x2=None, *, method: str = "auto", max_entries: float = 2e7):
    """``Theta_hat[i, j] = <df(x1_i)/dtheta, df(x2_j)/dtheta>`` over trainable parameters: ``(N1, N2)``
    on the parameters' device (:meth:`FiniteCNN.empirical_ntk`).

    Per conv layer the contraction is done without the full Jacobian, either as
    ``s^2 sum_{p,p'} (cols_i[p].cols_j[p']) (delta_i[p].delta_j[p'])`` (``method="gram"``, cost
    ``PQ^2 (k + n)`` per pair) or through per-example layer gradients ``s cols_i^T delta_i``
    (``method="jacobian"``, ``k * n`` numbers per example); ``"auto"`` picks the cheaper.
    Work is done in row blocks of about ``max_entries`` numbers.
    """
    if method not in METHODS:
        raise ParameterError("method", f"method must be 'auto', 'gram' or 'jacobian', got {method!r}")
    xp = get_array_module(params[0])
    _, c1 = net.forward(params, x1)
    d1 = net.deltas(params, c1)
    if x2 is None:
        c2, d2 = c1, d1
    else:
        _, c2 = net.forward(params, x2)
        d2 = net.deltas(params, c2)
    n1, n2 = c1.shape[0], c2.shape[0]
    pq = c1.shape[1] * c1.shape[2]
    theta = xp.zeros((n1, n2), dtype=params[0].dtype)
    for layer, s in enumerate(net._scales()):
        if not net.trainable[layer]:
            continue
        a1, a2, e1, e2 = c1.patches[layer], c2.patches[layer], d1[layer], d2[layer]
        k, n = a1.shape[2], e1.shape[2]
        use_gram = method == "gram" or (method == "auto" and pq * pq * (k + n) < k * n * (1 + 2 * pq))
        if use_gram:
            theta += s * s * _gram_contraction(a1, e1, a2, e2, max_entries)
        else:
            theta += s * s * _jacobian_contraction(a1, e1, a2, e2, max_entries)
    if net.trainable[-1]:
        theta += (c1.features @ c2.features.T) / net.width
    return theta


def _gram_contraction(a1, e1, a2, e2, max_entries):
    xp = get_array_module(a1)
    n1, pq, k = a1.shape
    n2 = a2.shape[0]
    a2f, e2f = a2.reshape(n2 * pq, k), e2.reshape(n2 * pq, -1)
    out = xp.empty((n1, n2), dtype=a1.dtype)
    rows = max(1, int(max_entries // (pq * pq * n2)))
    for i in range(0, n1, rows):
        sl = slice(i, min(n1, i + rows))
        b = sl.stop - sl.start
        ga = a1[sl].reshape(b * pq, k) @ a2f.T
        ge = e1[sl].reshape(b * pq, -1) @ e2f.T
        out[sl] = (ga * ge).reshape(b, pq, n2, pq).sum(axis=(1, 3))
    return out


def _jacobian_contraction(a1, e1, a2, e2, max_entries):
    xp = get_array_module(a1)
    n1, n2 = a1.shape[0], a2.shape[0]
    size = a1.shape[2] * e1.shape[2]
    rows = max(1, int(max_entries // size))
    out = xp.empty((n1, n2), dtype=a1.dtype)

    def jac(a, e, sl):
        return xp.matmul(a[sl].transpose(0, 2, 1), e[sl]).reshape(sl.stop - sl.start, size)

    for i in range(0, n1, rows):
        si = slice(i, min(n1, i + rows))
        ji = jac(a1, e1, si)
        for j in range(0, n2, rows):
            sj = slice(j, min(n2, j + rows))
            out[si, sj] = ji @ jac(a2, e2, sj).T
    return out


# ----------------------------------------------------------------------------- over initialisations
def empirical_ntk_samples(net: FiniteCNN, x1, x2=None, *, seeds=(0,), xp=np, dtype="float64") -> np.ndarray:
    """Empirical NTK at initialisation for each seed: ``(len(seeds), N1, N2)`` float64 NumPy.

    ``seeds``: a non-empty sequence of non-negative integers (e.g. ``range(8)``).
    """
    seeds = _seed_list(seeds)
    dtype = check_dtype(dtype)
    x1 = _images(x1)
    out = []
    for s in seeds:
        params = net.init(x1.shape[1:], seed=s, xp=xp, dtype=dtype)
        xa = xp.asarray(x1.astype(dtype))
        xb = None if x2 is None else xp.asarray(_images(x2).astype(dtype))
        out.append(to_host(net.empirical_ntk(params, xa, xb)))
    return np.stack(out).astype(np.float64)


def empirical_nngp(
    net: FiniteCNN,
    x,
    *,
    n_inits: int,
    seed: int = 0,
    readout_average: bool = False,
    xp=np,
    dtype="float64",
) -> np.ndarray:
    """Output covariance over ``n_inits`` random initialisations: ``(N, N)`` float64 NumPy.

    ``E[f] = 0`` is known, so the estimate is ``(1/S) sum_s f_s f_s^T``. With
    ``readout_average=True`` the readout weights are averaged out exactly (the covariance given
    the features is ``features features^T / n``), which removes most of the sampling noise.
    Sampling error of the plain estimate (Gaussian outputs): ``sd = sqrt((K_ii K_jj + K_ij^2) / S)``.
    """
    n_inits = check_int(n_inits, "n_inits", 1)
    x = _images(x)
    xa = xp.asarray(x.astype(dtype))
    acc = np.zeros((x.shape[0], x.shape[0]))
    ss = np.random.SeedSequence(seed)
    for child in ss.spawn(int(n_inits)):
        params = net.init(x.shape[1:], seed=child, xp=xp, dtype=dtype)
        f, cache = net.forward(params, xa)
        if readout_average:
            acc += to_host(cache.features @ cache.features.T) / net.width
        else:
            fh = to_host(f)
            acc += np.outer(fh, fh)
    return acc / n_inits


def relative_error(a, b) -> float:
    """``||a - b||_F / ||b||_F`` of two finite arrays of the same shape (no broadcasting)."""
    a, b = _finite_array(a, "a"), _finite_array(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    nb = np.linalg.norm(b)
    if not nb > 0:
        raise ParameterError("b", "relative error against an all-zero reference (e.g. an NTK with no trained layer)")
    return float(np.linalg.norm(a - b) / nb)
