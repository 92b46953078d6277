"""The layer API (cntk_core.layers): a network with AvgPool against a written-out reference, the
presets as plain layer lists that the fused path recognises, and the checks of layers and their order."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_images, rel_err

import cntk_core
from cntk_core import AvgPool, Conv, Dense, Flatten, GlobalAvgPool, Network, ReLU, kernel_matrix, network_kernel


def avgpool_reference(x, y):
    """[Conv, ReLU, AvgPool(2), Conv, ReLU, GlobalAvgPool, Dense] from cntk_core.testing.tr3, written out."""
    from cntk_core.testing import _diag, _relu_step, tr3

    def pool(t):
        p, q = t.shape[0] // 2, t.shape[1] // 2
        return t[: 2 * p, : 2 * q, : 2 * p, : 2 * q].reshape(p, 2, q, 2, p, 2, q, 2).mean(axis=(1, 3, 5, 7))

    sig = {k: tr3(np.einsum("ijc,klc->ijkl", a, b)) for k, (a, b) in {"xy": (x, y), "xx": (x, x), "yy": (y, y)}.items()}
    theta = sig["xy"].copy()
    for block in range(2):
        vx, vy = _diag(sig["xx"]), _diag(sig["yy"])
        k = {
            "xy": _relu_step(sig["xy"], vx, vy),
            "xx": _relu_step(sig["xx"], vx, vx),
            "yy": _relu_step(sig["yy"], vy, vy),
        }
        theta = k["xy"][1] * theta
        sig = {key: val[0] for key, val in k.items()}
        if block == 0:
            sig = {key: tr3(pool(val)) for key, val in sig.items()}
            theta = tr3(pool(theta)) + sig["xy"]
    p, q = theta.shape[0], theta.shape[1]
    return (theta + sig["xy"]).sum() / (p * q) ** 2


def test_layer_api_avgpool_network_matches_written_out_reference():
    x = make_images(3, (6, 5, 2), seed=12)
    net = Network([Conv(3), ReLU(), AvgPool(2), Conv(3), ReLU(), GlobalAvgPool(), Dense()])
    assert net.canonical() == cntk_core.Architecture(3, "gap", pools=(1,))  # the fused staged engine's shape
    ref = np.array([[avgpool_reference(a, b) for b in x] for a in x])
    for backend in ("numpy", "numba"):  # the per-layer path, and the staged engine
        assert rel_err(network_kernel(net, x, backend=backend), ref) <= 1e-7


def test_preset_is_a_plain_layer_list_and_dispatches_to_the_fused_path():
    net = cntk_core.cntk(4, "vanilla", fix=True)
    assert list(net) == [Conv(3, fixed=True), ReLU(), Conv(3), ReLU(), Conv(3), ReLU(), Flatten(), Dense(fixed=True)]
    assert net.canonical() == cntk_core.Architecture(4, "vanilla", True, True)
    assert "[Conv 3x3, ReLU] x 2" in net.describe()
    x = make_images(3, (5, 5, 2), seed=13)
    assert np.array_equal(network_kernel(net, x), kernel_matrix(x, depth=4, readout="vanilla", fix=True))


def test_network_order_is_validated():
    # these errors concern the layer list as a whole (no one parameter): the message says what is wrong
    with pytest.raises(ValueError, match="readout"):
        Network([Conv(3), ReLU()])
    with pytest.raises(ValueError, match="cannot come"):
        Network([Conv(3), GlobalAvgPool(), ReLU(), Dense()])
    with pytest.raises(TypeError):
        Network([Conv(3), "relu"])
    with pytest.raises(TypeError, match="list of Layer objects"):
        Network(None)
    with pytest.raises(ValueError, match="then Dense"):
        Network([Conv(3), ReLU(), GlobalAvgPool()])  # no final Dense layer
    with pytest.raises(ValueError, match="no layers"):
        network_kernel([], make_images(2, (4, 4, 1)))


def test_layer_arguments_are_checked():
    with pytest.raises(ValueError, match="odd"):
        Conv(4)
    # the messages name the layer and its argument (their .param says only "Conv" / "Dense")
    with pytest.raises(TypeError, match="Conv fixed"):
        Conv(3, fixed="no")
    with pytest.raises(TypeError, match="Dense fixed"):
        Dense(fixed=2)
    with pytest.raises(TypeError, match="Conv size must be an integer"):
        Conv(True)
    assert Conv(np.int64(3)) == Conv(3) and Dense(np.True_) == Dense(True)
