"""Closed forms (cntk_core.finite.closed_form): the fully-connected ReLU net's NTK / NNGP against the
CNTK on 1x1 images, the arc-cosine maps as Gaussian expectations, and their parameter checks. The
ReLU duals they share (cntk_core.recurrence.arccos_j) are tested in test_recurrence.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import raises_param

from cntk_core import ParameterError, ParameterTypeError, kernel_matrix
from cntk_core.finite import fc_relu_ntk, relu_arccos

pytestmark = pytest.mark.usefixtures("one_blas_thread")


@pytest.mark.parametrize("depth", [2, 3, 5])
@pytest.mark.parametrize("fix", [False, True])
def test_cntk_on_1x1_images_is_fc_relu_ntk(depth, fix):
    x = np.random.default_rng(12).standard_normal((4, 7))
    for readout in ("vanilla", "gap"):
        for kind in ("ntk", "nngp"):
            k_cnn = kernel_matrix(x[:, None, None, :], depth=depth, readout=readout, fix=fix, kind=kind)
            k_fc = fc_relu_ntk(x, n_hidden=depth - 1, kind=kind, fix_first=fix, fix_last=fix)
            np.testing.assert_allclose(k_cnn * 9.0 ** (depth - 1), k_fc, rtol=1e-10, atol=1e-12)


def test_relu_arccos_maps_are_the_gaussian_expectations():
    rng = np.random.default_rng(13)
    z = rng.standard_normal((2, 400_000))
    for rho in (-0.6, 0.0, 0.8):
        u, v = z[0], rho * z[0] + np.sqrt(1 - rho**2) * z[1]
        k1, k0 = relu_arccos(rho)
        assert abs(2 * np.mean(np.maximum(u, 0) * np.maximum(v, 0)) - k1) < 0.01
        assert abs(2 * np.mean((u > 0) & (v > 0)) - k0) < 0.01


@pytest.mark.parametrize(
    "n_hidden,exc",
    [(-1, ParameterError), (1.5, ParameterTypeError), (True, ParameterTypeError)],  # -1 used to run no layer
)
def test_fc_relu_ntk_n_hidden(n_hidden, exc):
    with raises_param("n_hidden", exc):
        fc_relu_ntk(np.ones((2, 3)), n_hidden=n_hidden)


@pytest.mark.parametrize("fix_first,fix_last", [(False, False), (True, False), (False, True), (True, True)])
def test_fc_relu_ntk_without_hidden_layers_is_the_linear_kernel(fix_first, fix_last):
    x = np.random.default_rng(0).standard_normal((5, 3))
    linear = x @ x.T
    ntk = fc_relu_ntk(x, n_hidden=0, fix_first=fix_first, fix_last=fix_last)
    np.testing.assert_allclose(ntk, 0 * linear if fix_first or fix_last else linear, atol=1e-15)
    np.testing.assert_allclose(fc_relu_ntk(x, n_hidden=0, kind="nngp"), linear)


def test_fc_relu_ntk_rejects_non_finite_input():
    with raises_param("x2"):
        fc_relu_ntk(np.ones((2, 3)), np.array([[1.0, np.nan, 0.0]]), n_hidden=2)
    assert fc_relu_ntk(np.ones((2, 3)), n_hidden=np.int64(2)).shape == (2, 2)
