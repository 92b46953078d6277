"""Empirical kernels of finite nets (cntk_core.finite.empirical): explicit Jacobian products, and the
engine's kernel_matrix as the infinite-width limit.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_images, raises_param

from cntk_core import ParameterError, ParameterTypeError, kernel_matrix
from cntk_core.finite import FiniteCNN, empirical_nngp, empirical_ntk_samples, finite_cnn, relative_error

FIXES = [(False, False), (True, False), (False, True), (True, True)]


pytestmark = pytest.mark.usefixtures("one_blas_thread")


def _images(n, p=4, q=4, c=2, seed=0):
    return make_images(n, (p, q, c), seed)


@pytest.mark.parametrize("readout", ["vanilla", "gap"])
@pytest.mark.parametrize("fix_first,fix_last", [(False, False), (True, True)])
def test_empirical_ntk_equals_jacobian_products(readout, fix_first, fix_last):
    net = FiniteCNN(3, 5, readout, fix_first, fix_last)
    x1, x2 = _images(3, seed=3), _images(2, seed=4)
    params = net.init(x1.shape[1:], seed=5)
    j1, j2 = net.per_example_gradients(params, x1), net.per_example_gradients(params, x2)
    for method in ("gram", "jacobian", "auto"):
        np.testing.assert_allclose(net.empirical_ntk(params, x1, x2, method=method), j1 @ j2.T, rtol=1e-10)
        # tiny blocks exercise the chunking
        th = net.empirical_ntk(params, x1, method=method, max_entries=10)
        np.testing.assert_allclose(th, j1 @ j1.T, rtol=1e-10)


def test_nngp_depth2_is_exact_at_any_width_within_sampling_error():
    """One conv layer: the output covariance equals the NNGP at every width (Gaussian pre-activations)."""
    net = finite_cnn(2, 4, "vanilla")
    x = _images(3, seed=6)
    k = kernel_matrix(x, depth=2, readout="vanilla", kind="nngp")
    s = 2000
    emp = empirical_nngp(net, x, n_inits=s, seed=7)
    # sd of the mean of f_i f_j for Gaussian outputs (the output is Gaussian given the features)
    sd = np.sqrt((np.outer(np.diag(k), np.diag(k)) + k**2) / s)
    assert np.all(np.abs(emp - k) < 4.5 * sd), (emp - k) / sd


@pytest.mark.parametrize("readout", ["vanilla", "gap"])
def test_nngp_deeper_net_approaches_kernel_matrix(readout):
    """Depth 3: per-init error (readout averaged out exactly) ~ width^-1/2; the mean over inits -> NNGP."""
    x = _images(3, seed=8)
    k = kernel_matrix(x, depth=3, readout=readout, kind="nngp")
    rms, means = [], []
    for w in (16, 256):
        net = finite_cnn(3, w, readout)
        ests = np.stack([empirical_nngp(net, x, n_inits=1, seed=s, readout_average=True) for s in range(24)])
        rms.append(np.sqrt(np.mean([relative_error(e, k) ** 2 for e in ests])))
        means.append(relative_error(ests.mean(0), k))
    # expected rms ratio sqrt(256 / 16) = 4; measured per-init rms ~ 1.4 / sqrt(width): ask for a ratio > 2.5
    assert rms[1] < rms[0] / 2.5, rms
    # mean of 24 inits at width 256: sampling sd ~ 0.09 / sqrt(24) ~ 0.02 per entry, bias O(1/width)
    assert means[1] < 0.05, means


@pytest.mark.parametrize("readout", ["vanilla", "gap"])
@pytest.mark.parametrize("fix_first,fix_last", FIXES)
def test_empirical_ntk_converges_like_inverse_sqrt_width(readout, fix_first, fix_last):
    """RMS relative error of single-init NTKs ~ width^-1/2; tolerance: log-log slope in [-0.8, -0.3]."""
    x = _images(3, seed=10)
    exact = kernel_matrix(x, depth=3, readout=readout, fix_first=fix_first, fix_last=fix_last)
    widths = [16, 64, 256]
    rms, mean_err = [], []
    for w in widths:
        samples = empirical_ntk_samples(FiniteCNN(3, w, readout, fix_first, fix_last), x, seeds=range(8))
        per_seed = [relative_error(s, exact) for s in samples]
        rms.append(np.sqrt(np.mean(np.square(per_seed))))
        mean_err.append(relative_error(samples.mean(0), exact))
    slope = np.polyfit(np.log(widths), np.log(rms), 1)[0]
    assert -0.8 <= slope <= -0.3, (slope, rms)
    # the mean over 8 seeds is close at the widest width (bias O(1/w), noise rms[-1] / sqrt(8)); a falling trend of
    # the mean itself is not asserted: with 8 seeds it is too noisy (per-seed rms above is the stable measure)
    assert mean_err[-1] < 3 * rms[-1] / np.sqrt(8) + 0.01, (mean_err, rms)


def test_depth2_ntk_limit_without_fixes():
    x = _images(3, seed=11)
    for readout in ("vanilla", "gap"):
        exact = kernel_matrix(x, depth=2, readout=readout)
        samples = empirical_ntk_samples(finite_cnn(2, 512, readout), x, seeds=range(4))
        assert relative_error(samples.mean(0), exact) < 0.03


def test_relative_error_rejects_mismatched_shapes_and_non_finite_input():
    with pytest.raises(ValueError, match="same shape"):
        relative_error(np.ones((3, 3)), np.ones((3, 1)))  # used to broadcast and return 0.0
    with pytest.raises(ValueError, match="same shape"):
        relative_error(np.ones(3), np.ones((1, 3)))
    with raises_param("a"):
        relative_error(np.array([np.nan, 1.0]), np.ones(2))
    with raises_param("b"):
        relative_error(np.ones(2), np.array([1.0, np.inf]))
    with raises_param("a", ParameterTypeError):
        relative_error(["x", "y"], np.ones(2))
    assert relative_error(np.array([1.0, 2.0]), np.array([1.0, 1.0])) == pytest.approx(np.sqrt(0.5))


@pytest.mark.parametrize(
    "seeds,exc",
    [
        ([1.5], ParameterTypeError),
        ([0, True], ParameterTypeError),
        ([], ParameterError),
        (0, ParameterTypeError),
        ("01", ParameterTypeError),
        ([-1], ParameterError),
    ],
)
def test_empirical_ntk_samples_seeds(seeds, exc):
    net = finite_cnn(2, 2)
    with raises_param("seeds", exc):
        empirical_ntk_samples(net, _images(2), seeds=seeds)


def test_empirical_ntk_samples_accepts_integer_sequences():
    net, x = finite_cnn(2, 2), _images(2)
    a = empirical_ntk_samples(net, x, seeds=range(2))
    b = empirical_ntk_samples(net, x, seeds=np.array([0, 1]))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (2, 2, 2)
