"""Monte-Carlo check: random finite-width CNNs have output covariance -> the NNGP kernel.

Plain NumPy forward passes (written here, sharing no code with the engine), weights N(0, 1) and
the scale that the paper's conventions imply: first conv sums its 3x3xC patch (Sigma^(0) =
tr3(S0)), each later conv and the readout see sqrt(2/9) * ReLU(z) / sqrt(width).
"""

from __future__ import annotations

import numpy as np
import pytest

from cntk_core import kernel_matrix


def conv3(z, w):
    """SAME 3x3 convolution, stride 1. z: (n, P, Q, Cin), w: (3, 3, Cin, Cout)."""
    n, p, q, _ = z.shape
    padded = np.pad(z, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((n, p, q, w.shape[3]))
    for a in range(3):
        for b in range(3):
            out += padded[:, a : a + p, b : b + q, :] @ w[a, b]
    return out


def output_covariance_one_net(x, depth, readout, width, rng):
    """E_w[f(x) f(x')] over the readout weights w of one random network, given its hidden layers.

    f = w . phi(x) with w ~ N(0, I), so that expectation is exactly phi(x) . phi(x'): averaging it
    over networks is a Monte-Carlo estimate of the output covariance with the readout's sampling
    noise integrated out (Rao-Blackwellised). x: (n, P, Q, C) -> (n, n).
    """
    z = conv3(x, rng.standard_normal((3, 3, x.shape[3], width)))
    for _ in range(depth - 2):
        act = np.sqrt(2.0 / 9.0) * np.maximum(z, 0) / np.sqrt(width)
        z = conv3(act, rng.standard_normal((3, 3, width, width)))
    act = np.sqrt(2.0 / 9.0) * np.maximum(z, 0) / np.sqrt(width)
    phi = act.mean(axis=(1, 2)) if readout == "gap" else act.reshape(len(x), -1)
    return phi @ phi.T


@pytest.mark.parametrize(
    "depth,readout,width,n_nets",
    [(2, "gap", 64, 200), (2, "vanilla", 64, 200), (3, "gap", 256, 200), (3, "vanilla", 256, 200)],
)
def test_finite_cnn_output_covariance_approaches_nngp(depth, readout, width, n_nets):
    rng = np.random.default_rng(2024)
    x = rng.standard_normal((3, 4, 5, 2))
    nngp = kernel_matrix(x, depth=depth, readout=readout, kind="nngp")
    products = np.stack([output_covariance_one_net(x, depth, readout, width, rng) for _ in range(n_nets)])
    mean = products.mean(axis=0)
    stderr = products.std(axis=0, ddof=1) / np.sqrt(n_nets)
    # depth 2: the readout sees exact Gaussians, so only sampling error; depth 3: plus O(1/width) bias
    bias = 0.0 if depth == 2 else 2.0 / width * np.abs(nngp)
    assert np.all(np.abs(mean - nngp) <= 4.5 * stderr + bias), (mean, nngp, stderr)
    # and the check has teeth: a kernel 5 % off is rejected
    assert not np.any(np.abs(mean - 1.05 * nngp) <= 4.5 * stderr + bias)
