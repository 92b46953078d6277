"""Training dynamics (cntk_core.finite.dynamics): scipy's expm and a plain loop for the
kernel-regression trajectory, wide nets trained by GD against it, and the parameter checks.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from conftest import make_images, raises_param, spd_matrix

from cntk_core import ParameterError, ParameterTypeError
from cntk_core.finite import finite_cnn, kernel_regression_trajectory, learning_rate, relative_error, train_gd

pytestmark = pytest.mark.usefixtures("one_blas_thread")


def _images(n, p=4, q=4, c=2, seed=0):
    return make_images(n, (p, q, c), seed)


def _spd(n, seed):
    return spd_matrix(n, seed, boost=0.05)


def test_flow_trajectory_matches_expm():
    th, y = _spd(5, 14), np.random.default_rng(15).standard_normal(5)
    f0 = np.random.default_rng(16).standard_normal(5)
    eta, ts = 0.3, [0, 1, 4, 17]
    tr, _ = kernel_regression_trajectory(th, y, eta=eta, steps=ts, f0_train=f0, mode="flow")
    for row, t in zip(tr, ts, strict=True):
        expect = f0 + (np.eye(5) - scipy.linalg.expm(-eta * t * th)) @ (y - f0)
        np.testing.assert_allclose(row, expect, rtol=1e-10, atol=1e-12)


def test_gd_trajectory_matches_explicit_iteration_train_and_test():
    n, m = 6, 3
    full = _spd(n + m, 17)
    th, tt = full[:n, :n], full[n:, :n]
    y = np.random.default_rng(18).standard_normal(n)
    eta = learning_rate(th)
    steps = 25
    tr, te = kernel_regression_trajectory(th, y, eta=eta, steps=range(steps + 1), theta_test_train=tt)
    f, fs = np.zeros(n), np.zeros(m)
    for t in range(steps + 1):
        np.testing.assert_allclose(tr[t], f, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(te[t], fs, rtol=1e-9, atol=1e-10)
        resid = f - y
        f, fs = f - eta * th @ resid, fs - eta * tt @ resid
    # long time: test predictions -> Theta(x*, X) Theta^{-1} Y
    _, te_inf = kernel_regression_trajectory(th, y, eta=eta, steps=10**6, theta_test_train=tt, mode="flow")
    np.testing.assert_allclose(te_inf[0], tt @ np.linalg.solve(th, y), rtol=1e-8)


def test_small_eta_gd_approaches_flow_and_singular_kernel_is_finite():
    th, y = _spd(4, 19), np.random.default_rng(20).standard_normal(4)
    eta, t = 1e-4, 20000  # eta * t = 2
    gd, _ = kernel_regression_trajectory(th, y, eta=eta, steps=t)
    flow, _ = kernel_regression_trajectory(th, y, eta=eta, steps=t, mode="flow")
    np.testing.assert_allclose(gd, flow, rtol=1e-3)
    x = np.random.default_rng(21).standard_normal((4, 2))
    sing = x @ x.T  # rank 2
    _, te = kernel_regression_trajectory(sing, y, eta=0.1, steps=[0, 5, 50], theta_test_train=sing[:2])
    tr, _ = kernel_regression_trajectory(sing, y, eta=0.1, steps=[0, 5, 50])
    assert np.all(np.isfinite(te))
    np.testing.assert_allclose(te, tr[:, :2], rtol=1e-8, atol=1e-10)  # test points = train points


def _digits_like(n, seed):
    x = _images(n, 4, 4, 1, seed=seed)
    y = np.sign(x[:, 1:3, 1:3, 0].mean(axis=(1, 2)))
    return x, y


def test_wide_nets_trained_by_gd_approach_kernel_regression():
    x, y = _digits_like(8, seed=22)
    xtr, ytr, xte = x[:6], y[:6], x[6:]
    steps, errs = 20, {}
    for w in (8, 256):
        net = finite_cnn(3, w, "gap")
        th = net.exact_kernel(xtr)
        tt = net.exact_kernel(xte, xtr)
        eta = learning_rate(th)
        _, kr_test = kernel_regression_trajectory(th, ytr, eta=eta, steps=steps, theta_test_train=tt)
        e = []
        for seed in range(3):
            params = net.init(xtr.shape[1:], seed=100 + seed)
            res = train_gd(net, params, xtr, ytr, eta=eta, steps=steps, x_test=xte, record_every=steps)
            assert not res.diverged
            np.testing.assert_allclose(res.f_train[0], 0.0, atol=1e-12)  # centred net starts at 0
            e.append(relative_error(res.f_test[-1], kr_test[-1]))
        errs[w] = np.mean(e)
    assert errs[256] < 0.15 and errs[256] < errs[8] / 2, errs


def test_train_gd_uncentred_and_loss_decreases():
    x, y = _digits_like(5, seed=23)
    net = finite_cnn(3, 64, "vanilla", fix=True)
    params = net.init(x.shape[1:], seed=1)
    before = [w.copy() for w in params]
    th = net.exact_kernel(x)
    res = train_gd(net, params, x, y, eta=learning_rate(th), steps=10, center=False)
    for a, b in zip(params, before, strict=True):
        np.testing.assert_array_equal(a, b)  # input params untouched
    np.testing.assert_allclose(res.f_train[0], res.f0_train)
    assert res.loss[-1] < 0.5 * res.loss[0]
    np.testing.assert_array_equal(res.params[0], params[0])  # fixed first layer unchanged
    np.testing.assert_array_equal(res.params[-1], params[-1])  # fixed readout unchanged


@pytest.mark.parametrize(
    "eta,exc",
    [
        (-1, ParameterError),
        (0.0, ParameterError),
        (float("nan"), ParameterError),
        (np.float32("inf"), ParameterError),
        (True, ParameterTypeError),
        (np.True_, ParameterTypeError),
        ("0.1", ParameterTypeError),
        (0.1 + 0j, ParameterTypeError),
    ],
)
def test_eta_is_a_positive_finite_real(eta, exc):
    net = finite_cnn(2, 2)
    x, y = _images(2), np.ones(2)
    params = net.init(x.shape[1:])
    with raises_param("eta", exc):
        kernel_regression_trajectory(_spd(2, 0), y, eta=eta, steps=3)
    with raises_param("eta", exc):
        train_gd(net, params, x, y, eta=eta, steps=1)


def test_numpy_float_eta_is_accepted():
    th, y = _spd(3, 1), np.ones(3)
    tr, _ = kernel_regression_trajectory(th, y, eta=np.float32(0.25), steps=[0, 2])
    ref, _ = kernel_regression_trajectory(th, y, eta=float(np.float32(0.25)), steps=[0, 2])
    np.testing.assert_array_equal(tr, ref)
    net = finite_cnn(2, 3)
    x = _images(2)
    params = net.init(x.shape[1:])
    a = train_gd(net, params, x, np.ones(2), eta=np.float32(0.01), steps=2)  # used to be rejected
    b = train_gd(net, params, x, np.ones(2), eta=float(np.float32(0.01)), steps=2)
    np.testing.assert_allclose(a.f_train, b.f_train, rtol=1e-12)
    assert not a.diverged


@pytest.mark.parametrize(
    "steps,exc,match",
    [  # match: the entry that is refused, where steps is a list
        (-1, ParameterError, None),
        ([0, 3, -2], ParameterError, r"^steps\[2\] "),
        (1.5, ParameterTypeError, None),
        ([1, 2.5], ParameterTypeError, r"^steps\[1\] "),
        (True, ParameterTypeError, None),
        ("3", ParameterTypeError, None),
        ([[1], [1, 2]], ParameterTypeError, None),
        ([], ParameterError, None),
    ],
)
def test_gd_trajectory_steps_are_non_negative_integers(steps, exc, match):
    with raises_param("steps", exc, match=match):
        kernel_regression_trajectory(_spd(3, 2), np.ones(3), eta=0.5, steps=steps)


def test_flow_trajectory_accepts_real_times_but_not_negative_or_nan():
    th, y = _spd(3, 3), np.ones(3)
    tr, _ = kernel_regression_trajectory(th, y, eta=0.5, steps=[0.5, 2], mode="flow")
    np.testing.assert_allclose(tr[0], (np.eye(3) - scipy.linalg.expm(-0.25 * th)) @ y, rtol=1e-10)
    with raises_param("steps", match=r"^steps\[1\] "):
        kernel_regression_trajectory(th, y, eta=0.5, steps=[1, -0.5], mode="flow")
    with raises_param("steps"):
        kernel_regression_trajectory(th, y, eta=0.5, steps=float("nan"), mode="flow")


def test_kernel_regression_trajectory_rejects_bad_arrays():
    th, y, tt = _spd(3, 4), np.ones(3), np.ones((2, 3))
    kw = dict(eta=0.1, steps=2)
    bad_th = th.copy()
    bad_th[0, 1] = np.nan
    with raises_param("theta_train"):  # was numpy's LinAlgError
        kernel_regression_trajectory(bad_th, y, **kw)
    with raises_param("theta_train"):
        kernel_regression_trajectory(np.ones((3, 2)), y, **kw)
    with raises_param("theta_train"):
        kernel_regression_trajectory(1.0, y, **kw)
    with raises_param("y_train"):
        kernel_regression_trajectory(th, np.array([1.0, np.nan, 0.0]), **kw)
    with raises_param("y_train", match=r"must have shape \(3,\)"):  # the shape it must have
        kernel_regression_trajectory(th, np.ones(4), **kw)
    with raises_param("f0_train"):  # was a numpy broadcast error
        kernel_regression_trajectory(th, y, f0_train=np.ones(2), **kw)
    with raises_param("f0_train"):
        kernel_regression_trajectory(th, y, f0_train=np.array([0.0, np.inf, 0.0]), **kw)
    with raises_param("theta_test_train"):
        kernel_regression_trajectory(th, y, theta_test_train=np.array([[0.0, np.nan, 0.0]]), **kw)
    with raises_param("f0_test"):
        kernel_regression_trajectory(th, y, theta_test_train=tt, f0_test=np.ones(3), **kw)
    with raises_param("f0_test", match="needs theta_test_train"):  # what else to pass
        kernel_regression_trajectory(th, y, f0_test=np.ones(2), **kw)


def test_train_gd_rejects_bad_targets_steps_record_every_and_center():
    net = finite_cnn(2, 2)
    x = _images(2)
    params = net.init(x.shape[1:])
    with raises_param("y_train"):  # used to return diverged=True
        train_gd(net, params, x, np.array([1.0, np.nan]), eta=0.1, steps=1)
    with raises_param("steps"):
        train_gd(net, params, x, np.ones(2), eta=0.1, steps=-1)
    with raises_param("steps", ParameterTypeError):
        train_gd(net, params, x, np.ones(2), eta=0.1, steps=2.5)
    with raises_param("record_every"):  # was ZeroDivisionError
        train_gd(net, params, x, np.ones(2), eta=0.1, steps=2, record_every=0)
    with raises_param("record_every", ParameterTypeError):
        train_gd(net, params, x, np.ones(2), eta=0.1, steps=2, record_every=1.5)
    with raises_param("center", ParameterTypeError):
        train_gd(net, params, x, np.ones(2), eta=0.1, steps=1, center="no")
    res = train_gd(net, params, x, np.ones(2), eta=0.1, steps=3, record_every=np.int64(2), center=np.False_)
    np.testing.assert_array_equal(res.steps, [0, 2, 3])
    np.testing.assert_allclose(res.f_train[0], res.f0_train)  # not centred


def test_learning_rate_checks_theta_and_scale():
    th = _spd(3, 5)
    lam = np.linalg.eigvalsh(th)[-1]
    assert learning_rate(th, 0.5) == pytest.approx(0.5 / lam, rel=1e-12)
    with raises_param("scale"):
        learning_rate(th, scale=-1)  # used to return a negative rate
    with raises_param("scale"):
        learning_rate(th, scale=float("nan"))
    with raises_param("scale", ParameterTypeError):
        learning_rate(th, scale=True)
    with raises_param("theta"):  # was numpy's LinAlgError
        learning_rate(np.ones((2, 3)))
    with raises_param("theta"):
        learning_rate(np.ones((0, 0)))
    with raises_param("theta"):
        learning_rate(np.array([[1.0, 0.0], [0.0, np.nan]]))


def test_gd_steps_from_linspace_and_seeds_as_floats():
    theta = np.eye(3) + 0.5
    y = np.array([1.0, -1.0, 0.5])
    a, _ = kernel_regression_trajectory(theta, y, eta=0.1, steps=np.linspace(0, 4, 5))
    b, _ = kernel_regression_trajectory(theta, y, eta=0.1, steps=range(5))
    np.testing.assert_array_equal(a, b)
    with raises_param("steps", ParameterTypeError, match=r"^steps\[1\] "):  # names the entry
        kernel_regression_trajectory(theta, y, eta=0.1, steps=[0, 0.5])
