"""Finite-width CNNs (cntk_core.finite.net): gradients against finite differences, the architecture
value, input checks, and CuPy against NumPy.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_images, raises_param

from cntk_core import Architecture, ParameterError, ParameterTypeError, kernel_matrix
from cntk_core.finite import (
    FiniteCNN,
    empirical_nngp,
    empirical_ntk_samples,
    fc_relu_ntk,
    finite_cnn,
    kernel_regression_trajectory,
    learning_rate,
    relative_error,
    train_gd,
)

FIXES = [(False, False), (True, False), (False, True), (True, True)]


pytestmark = pytest.mark.usefixtures("one_blas_thread")


def _images(n, p=4, q=4, c=2, seed=0):
    return make_images(n, (p, q, c), seed)


@pytest.mark.parametrize("readout", ["vanilla", "gap"])
@pytest.mark.parametrize("fix_first,fix_last", FIXES)
def test_gradients_match_central_differences(readout, fix_first, fix_last):
    net = FiniteCNN(3, 3, readout, fix_first, fix_last)
    x = _images(2)
    params = net.init(x.shape[1:], seed=1)
    jac = net.per_example_gradients(params, x)  # (N, n_trainable)
    assert jac.shape == (2, net.n_params(x.shape[1:]))
    rng = np.random.default_rng(2)
    offset, h = 0, 1e-5
    for w, train in zip(params, net.trainable, strict=True):
        if not train:
            continue
        for flat in rng.choice(w.size, size=min(4, w.size), replace=False):
            idx = np.unravel_index(flat, w.shape)
            old = w[idx]
            w[idx] = old + h
            fp = net.apply(params, x)
            w[idx] = old - h
            fm = net.apply(params, x)
            w[idx] = old
            fd = (fp - fm) / (2 * h)
            an = jac[:, offset + flat]
            assert np.all(np.abs(fd - an) <= 1e-6 * np.maximum(np.abs(fd), 1e-3)), (idx, fd, an)
        offset += w.size
    assert offset == jac.shape[1]
    # summed gradient of sum_i r_i f_i == r @ J, and fixed layers get exactly zero
    r = np.array([0.7, -1.3])
    grads = net.gradient(params, x, r)
    flat_trainable = np.concatenate([g.ravel() for g, t in zip(grads, net.trainable, strict=True) if t])
    np.testing.assert_allclose(flat_trainable, r @ jac, rtol=1e-12, atol=1e-12)
    for g, t in zip(grads, net.trainable, strict=True):
        if not t:
            assert not np.any(g)


def test_bad_input_raises_clear_errors():
    with raises_param("depth"):
        finite_cnn(1, 4)
    with raises_param("width"):
        finite_cnn(3, 0)
    with raises_param("readout"):
        finite_cnn(3, 4, "max")
    with raises_param("width", ParameterTypeError):
        finite_cnn(3, 4.5)
    net = finite_cnn(3, 4)
    x = _images(2)
    params = net.init(x.shape[1:])
    with raises_param("x", ParameterTypeError, match="integer images"):  # says why: the pixel scale
        net.apply(params, x.astype(int))
    with pytest.raises(ValueError, match="images have 3 channels"):  # names no parameter (W_1's shape)
        net.apply(params, _images(2, c=3))
    with raises_param("params"):
        net.apply(params[:-1], x)
    with raises_param("y_train"):
        train_gd(net, params, x, np.zeros(3), eta=0.1, steps=1)
    with raises_param("eta"):
        train_gd(net, params, x, np.zeros(2), eta=-1.0, steps=1)
    with raises_param("mode"):
        kernel_regression_trajectory(np.eye(2), np.zeros(2), eta=0.1, steps=1, mode="euler")
    with raises_param("b", match="all-zero"):  # why the reference cannot be divided by
        relative_error(np.ones(2), np.zeros(2))


@pytest.mark.parametrize("name", ["fix_first", "fix_last"])
def test_fix_flags_must_be_booleans(name):
    with raises_param(name, ParameterTypeError):
        FiniteCNN(3, 4, **{name: "no"})  # used to fix the layer
    with raises_param(name, ParameterTypeError):
        FiniteCNN(3, 4, **{name: 2})
    with raises_param(name, ParameterTypeError):
        fc_relu_ntk(np.ones((2, 3)), n_hidden=1, **{name: "no"})
    net = FiniteCNN(3, 4, **{name: np.True_})
    assert getattr(net, name) is True and net == FiniteCNN(3, 4, **{name: True})


def test_init_dtype_must_be_float32_or_float64():
    net = finite_cnn(2, 3)
    for dtype in ("int64", "float16", int, "nonsense"):
        with raises_param("dtype"):
            net.init((4, 4, 1), dtype=dtype)
    with raises_param("dtype"):
        empirical_ntk_samples(net, _images(2, c=1), seeds=[0], dtype="int64")
    for dtype in ("float32", np.float64):
        assert all(w.dtype == np.dtype(dtype) for w in net.init((4, 4, 1), dtype=dtype))


def _cupy_usable():
    from cntk_core.backend import gpu_status

    return gpu_status()[0]


@pytest.mark.skipif(not _cupy_usable(), reason="needs CuPy with a CUDA device")
def test_cupy_matches_numpy():
    import cupy as cp

    net = finite_cnn(3, 32, "vanilla")
    x = _images(3)
    p_np = net.init(x.shape[1:], seed=3)
    p_cp = net.init(x.shape[1:], seed=3, xp=cp)
    np.testing.assert_allclose(net.empirical_ntk(p_cp, cp.asarray(x)).get(), net.empirical_ntk(p_np, x), rtol=1e-10)
    th = net.exact_kernel(x)
    r_np = train_gd(net, p_np, x, np.ones(3), eta=learning_rate(th), steps=3)
    r_cp = train_gd(net, p_cp, cp.asarray(x), np.ones(3), eta=learning_rate(th), steps=3)
    np.testing.assert_allclose(r_cp.f_train, r_np.f_train, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------- the architecture value
def test_architecture_value_round_trips():
    arch = Architecture(4, "vanilla", fix_first=True)
    net = FiniteCNN.from_architecture(arch, 8)
    assert net == FiniteCNN(4, 8, "vanilla", True, False)
    assert net.architecture == arch and net.width == 8 and net.n_conv == arch.n_conv
    # finite_cnn reads fix like kernel_matrix does (Architecture.from_options)
    assert finite_cnn(3, 5, "gap", True, fix_last=False).architecture == Architecture(3, "gap", True, False)
    assert finite_cnn(3, 5).architecture == Architecture(3)
    with raises_param("architecture", ParameterTypeError, match="a cntk_core.Architecture"):  # what to pass
        FiniteCNN.from_architecture({"depth": 3}, 4)
    x = _images(2)
    np.testing.assert_array_equal(net.exact_kernel(x), kernel_matrix(x, **net.kernel_kwargs()))


def _net_params_x():
    net, x = finite_cnn(2, 2), _images(2)
    return net, net.init(x.shape[1:]), x


def _empirical_ntk_with(method):
    net, params, x = _net_params_x()
    return net.empirical_ntk(params, x, method=method)


@pytest.mark.parametrize(
    "call,param",
    [
        (lambda: finite_cnn(3, 0), "width"),
        (lambda: FiniteCNN(3, 4.5), "width"),
        (lambda: finite_cnn(1, 4), "depth"),
        (lambda: finite_cnn(3, 4, "max"), "readout"),
        (lambda: FiniteCNN(3, 4, fix_last="no"), "fix_last"),
        (lambda: finite_cnn(2, 2).init((4, 4)), "image_shape"),
        (lambda: finite_cnn(2, 2).init((4, 4, 1), dtype="int64"), "dtype"),
        (lambda: _empirical_ntk_with("full"), "method"),
        (lambda: empirical_ntk_samples(finite_cnn(2, 2), _images(2), seeds=[]), "seeds"),
        (lambda: empirical_ntk_samples(finite_cnn(2, 2), _images(2), seeds=[0, 1.5]), "seeds"),
        (lambda: empirical_ntk_samples(finite_cnn(2, 2), _images(2), seeds=0), "seeds"),
        (lambda: empirical_nngp(finite_cnn(2, 2), _images(2), n_inits=0), "n_inits"),
        (lambda: fc_relu_ntk(np.ones((2, 3)), n_hidden=-1), "n_hidden"),
        (lambda: fc_relu_ntk(np.ones((2, 3)), n_hidden=1, kind="gp"), "kind"),
        (lambda: kernel_regression_trajectory(np.eye(2), np.zeros(2), eta=0, steps=1), "eta"),
        (lambda: kernel_regression_trajectory(np.eye(2), np.zeros(2), eta=0.1, steps=[1, -2]), "steps"),
        (lambda: kernel_regression_trajectory(np.eye(2), np.zeros(2), eta=0.1, steps="3"), "steps"),
        (lambda: kernel_regression_trajectory(np.eye(2), np.zeros(2), eta=0.1, steps=1, mode="euler"), "mode"),
        (lambda: train_gd(*_net_params_x(), np.zeros(2), eta=0.1, steps=1, record_every=0), "record_every"),
        (lambda: train_gd(*_net_params_x(), np.zeros(3), eta=0.1, steps=1), "y_train"),
        (lambda: learning_rate(np.ones((2, 3))), "theta"),
        (lambda: relative_error(np.ones(2), np.zeros(2)), "b"),
    ],
)
def test_refusals_name_the_parameter(call, param):
    with raises_param(param, (ParameterError, ParameterTypeError)):
        call()


def test_integral_float_depth_and_width_are_taken():
    assert FiniteCNN(3.0, 4.0) == FiniteCNN(3, 4)
    assert FiniteCNN(np.float64(3.0), np.array(4)).width == 4
