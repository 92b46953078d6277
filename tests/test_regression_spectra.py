"""Kernel spectra: normalised Gram, eigenvalues, effective dimension, participation ratio.

Every expected value is computed independently (numpy.linalg.solve, explicit loops, sklearn.metrics).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import raises_param, spd_matrix

from cntk_core import regression as R


def test_spectrum_helpers():
    K = spd_matrix(25, seed=8)
    N = R.normalized_gram(K)
    d = np.sqrt(np.diag(K))
    np.testing.assert_allclose(N, K / np.outer(d, d), rtol=1e-13)
    eig = R.eigenspectrum(K, normalize=False)
    np.testing.assert_allclose(eig, np.sort(np.linalg.eigvals(K).real)[::-1], rtol=1e-9)
    assert np.sum(R.eigenspectrum(K)) == pytest.approx(25.0)
    lam = 0.7
    ref = np.trace(K @ np.linalg.inv(K + lam * np.eye(25)))
    assert R.effective_dimension(eig, lam) == pytest.approx(ref, rel=1e-10)
    assert R.participation_ratio(eig) == pytest.approx(np.trace(K) ** 2 / np.trace(K @ K), rel=1e-10)
    with raises_param("K"):  # a zero diagonal
        R.normalized_gram(np.zeros((2, 2)))


@pytest.mark.parametrize("eigs", [[1.0, np.nan], [1.0, np.inf, 2.0], np.eye(3), 2.0])
def test_spectrum_statistics_refuse_bad_eigenvalues(eigs):
    with raises_param("eigs"):
        R.effective_dimension(eigs, 0.5)
    with raises_param("eigs"):
        R.participation_ratio(eigs)
