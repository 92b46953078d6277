"""The one statement of the ReLU duals (cntk_core.recurrence.arccos_j) against Gaussian quadrature and
the angle form, and every path that normalises them (relu_dual, cntk_core.finite.relu_arccos) bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.special

from cntk_core.finite import relu_arccos
from cntk_core.recurrence import INV_9PI, arccos_j, relu_dual


def _phi(t):
    return math.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)


def _kappas_by_quadrature(rho):
    """``2 E[relu(u) relu(v)]`` and ``2 E[step(u) step(v)]`` for unit-variance ``u, v`` of correlation
    ``rho``, no arccos: integrate over ``u > 0`` the expectations given ``u`` (``v | u ~ N(rho u, s^2)``,
    ``s^2 = 1 - rho^2``): ``E[relu(v) | u] = m Phi(m / s) + s phi(m / s)``, ``P(v > 0 | u) = Phi(m / s)``."""
    s = math.sqrt(1 - rho * rho)
    ndtr = scipy.special.ndtr

    def relu_relu(u):
        m = rho * u
        return u * (m * ndtr(m / s) + s * _phi(m / s)) * _phi(u)

    def step_step(u):
        return ndtr(rho * u / s) * _phi(u)

    kw = dict(epsabs=1e-14, epsrel=1e-13, limit=200)
    e1 = scipy.integrate.quad(relu_relu, 0, math.inf, **kw)[0]
    e0 = scipy.integrate.quad(step_step, 0, math.inf, **kw)[0]
    return 2 * e1, 2 * e0


@pytest.mark.parametrize("rho", [-0.999, -0.9, -0.6, -0.3, 0.0, 0.2, 0.5, 0.8, 0.95, 0.999])
def test_relu_duals_match_gaussian_quadrature(rho):
    k1, k0 = _kappas_by_quadrature(rho)
    j1, j0 = arccos_j(np.array([rho]))
    assert abs(j1[0] / math.pi - k1) < 1e-12, (j1[0] / math.pi, k1)
    assert abs(j0[0] / math.pi - k0) < 1e-12, (j0[0] / math.pi, k0)


def test_relu_duals_match_the_angle_form_and_endpoints():
    # J1 = sin(theta) + (pi - theta) cos(theta), J0 = pi - theta, written in the angle theta
    theta = np.linspace(0.0, np.pi, 1001)
    j1, j0 = arccos_j(np.cos(theta))
    np.testing.assert_allclose(j1, np.sin(theta) + (np.pi - theta) * np.cos(theta), rtol=0, atol=1e-12)
    np.testing.assert_allclose(j0, np.pi - theta, rtol=0, atol=1e-12)
    k1, k0 = relu_arccos(np.array([1.0, -1.0, 0.0, 2.0, -3.0]))  # clipped to [-1, 1]
    np.testing.assert_array_equal(k1[:2], [1.0, 0.0])  # exact at the ends
    np.testing.assert_array_equal(k0[:2], [1.0, 0.0])
    assert k1[2] == pytest.approx(1 / math.pi, abs=1e-15) and k0[2] == 0.5
    np.testing.assert_array_equal(k1[3:], [1.0, 0.0])
    assert float(relu_arccos(0.3)[1]) == (np.pi - np.arccos(0.3)) / np.pi  # a plain number works too


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_path_keeps_its_rounding_of_the_shared_duals(dtype):
    """relu_dual and relu_arccos are arccos_j followed by their own normalisation, bit for bit."""
    rng = np.random.default_rng(0)
    rho = np.clip(rng.uniform(-1.05, 1.05, 2000), -1, 1).astype(dtype)
    rho[:3] = (1, -1, 0)
    angle = np.arccos(rho)
    pi, inv = dtype(math.pi), dtype(INV_9PI)
    j1, j0 = arccos_j(rho)
    assert j1.dtype == dtype and j0.dtype == dtype
    np.testing.assert_array_equal(j1, rho * (pi - angle) + np.sqrt(1 - rho * rho))
    np.testing.assert_array_equal(j0, pi - angle)
    same = arccos_j(rho, angle=angle)  # a caller's own angle (the CUDA shift blocks' emulation) is used as given
    np.testing.assert_array_equal(same[0], j1)
    # relu_dual on unit variances: K = 1 * J1 / (9 pi), K_dot = J0 / (9 pi) in the arithmetic dtype
    k, k_dot = relu_dual(rho, np.ones_like(rho), np.ones_like(rho))
    np.testing.assert_array_equal(k, j1 * inv)
    np.testing.assert_array_equal(k_dot, j0 * inv)
    if dtype is np.float64:
        k1, k0 = relu_arccos(rho)
        np.testing.assert_array_equal(k1, j1 / np.pi)
        np.testing.assert_array_equal(k0, j0 / np.pi)
