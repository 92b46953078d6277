"""Kernel spectra: the cosine-normalised Gram, its eigenvalues and two summaries of them.

Eigenvalues are in the kernel's units (those of :func:`normalized_gram` sum to ``n``); ridges are absolute.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from ..validation import ParameterError, check_flag
from ._checks import check_kernel, check_ridge, check_spectrum


def normalized_gram(K) -> np.ndarray:
    """Cosine-similarity form ``K_ij / sqrt(K_ii K_jj)`` ``[n, n]`` (ones on the diagonal); needs ``K_ii > 0``."""
    K = check_kernel(K, "K")
    d = np.diag(K)
    if np.any(d <= 0):
        raise ParameterError("K", f"normalized_gram needs a positive diagonal; {int(np.sum(d <= 0))} entries are <= 0")
    r = 1.0 / np.sqrt(d)
    out = K * r[:, None] * r[None, :]
    np.fill_diagonal(out, 1.0)
    return out


def eigenspectrum(K, normalize: bool = True) -> np.ndarray:
    """Eigenvalues of the symmetric kernel ``K [n, n]`` in descending order, float64 ``[n]``.

    normalize: use :func:`normalized_gram` first, so the eigenvalues sum to ``n`` and spectra of
    different depths are comparable.
    """
    K = normalized_gram(K) if check_flag(normalize, "normalize") else check_kernel(K, "K")
    return scipy.linalg.eigvalsh(K, check_finite=False)[::-1].copy()


def effective_dimension(eigs, ridge: float) -> float:
    """Effective degrees of freedom ``sum_i s_i / (s_i + ridge)`` (absolute ridge > 0; negative round-off s -> 0).

    eigs: finite 1-D ``[n]`` (e.g. :func:`eigenspectrum`); ridge 0 counts the positive eigenvalues.
    """
    s = check_spectrum(eigs)
    lam = check_ridge(ridge)
    if lam == 0:
        return float(np.count_nonzero(s > 0))
    return float(np.sum(s / (s + lam)))


def participation_ratio(eigs) -> float:
    """``(sum s)^2 / sum s^2`` in [1, n]: how many eigen-directions carry the spectrum's mass.

    eigs: finite 1-D ``[n]`` (e.g. :func:`eigenspectrum`); negative round-off is clipped to 0.
    """
    s = check_spectrum(eigs)
    q = float(np.sum(s**2))
    if q == 0:
        raise ParameterError("eigs", "participation ratio of an all-zero spectrum is undefined")
    return float(np.sum(s) ** 2 / q)
