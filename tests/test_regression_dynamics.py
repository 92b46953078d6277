"""Training dynamics in the kernel's eigenbasis (:func:`cntk_core.regression.kernel_dynamics`).

Expected values come from independent computations: kernel_regression, literal gradient-descent
iterations, scipy.linalg.expm, numpy.linalg.pinv.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import scipy.linalg
from conftest import one_hot, raises_param, rel_err, spd_matrix

from cntk_core import regression as R


def _problem(n=40, n_test=15, c=4, seed=0, boost=0.2):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n + n_test, n + 5))
    joint = a @ a.T / (n + 5) + boost * np.eye(n + n_test)  # a PSD joint kernel: train and test together
    return joint[:n, :n], joint[n:, :n], np.arange(n) % c, rng.integers(0, c, n_test), c


@pytest.mark.parametrize(("n", "c", "seed"), [(10, 2, 0), (40, 4, 1), (120, 10, 2)])
def test_infinite_time_is_kernel_regression(n, c, seed):
    K, Kt, y, yt, _ = _problem(n, 7, c, seed)
    dyn = R.kernel_dynamics(K, y, Kt, yt, n_classes=c)
    state = dyn.at(np.inf)
    pred, ref = R.kernel_regression(K, y, Kt, ridge=0, n_classes=c)
    assert rel_err(state.test_scores, ref, floor=1) <= 1e-10
    assert rel_err(state.train_scores, one_hot(y, c), floor=1) <= 1e-10  # interpolates
    assert state.train_loss <= 1e-20 and state.train_accuracy == 1.0
    assert state.test_accuracy == np.mean(pred == yt)
    flow = R.kernel_dynamics(K, y, Kt, yt, n_classes=c, flow=True).at(np.inf)
    assert rel_err(flow.test_scores, ref, floor=1) <= 1e-10


@pytest.mark.parametrize("flow", [False, True])
def test_time_zero_predicts_zero(flow):
    K, Kt, y, yt, c = _problem()
    state = R.kernel_dynamics(K, y, Kt, yt, flow=flow).at(0)
    assert not state.train_scores.any() and not state.test_scores.any()
    assert state.train_loss == pytest.approx(np.mean(one_hot(y, c) ** 2))
    assert state.test_loss == pytest.approx(np.mean(one_hot(yt, c) ** 2))


@pytest.mark.parametrize("flow", [False, True])
def test_mode_residuals_recombine_to_total(flow):
    K, Kt, y, yt, c = _problem()
    dyn = R.kernel_dynamics(K, y, Kt, yt, flow=flow)
    times = [0, 1, 3, 17, 250, np.inf]
    per_mode = dyn.mode_residuals(times)
    assert per_mode.shape == (len(times), len(y))
    for t, modes in zip(times, per_mode, strict=True):
        state = dyn.at(t)
        total = np.sum((state.train_scores - one_hot(y, c)) ** 2)
        # f - Y carries round-off ~ eps |Y| per entry: a converged residual is known to ~1e-18 ||Y||^2
        assert modes.sum() == pytest.approx(total, rel=1e-10, abs=1e-18 * np.sum(one_hot(y, c) ** 2))
        assert np.array_equal(dyn.mode_residuals(t), modes)
        assert state.train_loss * len(y) * c == pytest.approx(modes.sum(), rel=1e-12, abs=1e-300)
    # spectral bias: at any finite t > 0 the largest mode has decayed at least as far as the smallest
    frac = per_mode[2] / per_mode[0]
    assert frac[0] <= frac[-1]


@pytest.mark.parametrize("eta_factor", [None, 0.3, 1.9])
def test_equals_literal_gradient_descent(eta_factor):
    K, Kt, y, yt, c = _problem(30, 9, 3, seed=5)
    lam_max = np.linalg.eigvalsh(K)[-1]
    eta = None if eta_factor is None else eta_factor / lam_max
    dyn = R.kernel_dynamics(K, y, Kt, yt, eta=eta)
    Y = one_hot(y, c)
    f, ft = np.zeros_like(Y), np.zeros((len(Kt), c))
    step = 1 / lam_max if eta is None else eta
    for _ in range(50):
        r = f - Y
        f, ft = f - step * K @ r, ft - step * Kt @ r
    state = dyn.at(50)
    assert rel_err(state.train_scores, f, floor=1) <= 1e-10
    assert rel_err(state.test_scores, ft, floor=1) <= 1e-10


def test_gradient_flow_against_expm():
    K, Kt, y, yt, c = _problem(25, 6, 3, seed=7)
    eta = 0.7
    dyn = R.kernel_dynamics(K, y, Kt, yt, eta=eta, flow=True)
    Y = one_hot(y, c)
    for t in [0.5, 3.0, 40.0]:
        decay = scipy.linalg.expm(-eta * t * K)
        train = Y - decay @ Y
        test = Kt @ np.linalg.solve(K, train)  # f*(t) = K* K^-1 (I - e^{-eta t K}) Y
        state = dyn.at(t)
        assert rel_err(state.train_scores, train, floor=1) <= 1e-10
        assert rel_err(state.test_scores, test, floor=1) <= 1e-10


@pytest.mark.parametrize("eta_factor", [1.0, 1.95])
def test_train_loss_is_monotone(eta_factor):
    K, Kt, y, yt, _ = _problem(50, 10, 5, seed=3, boost=0.01)
    dyn = R.kernel_dynamics(K, y, Kt, yt, eta=eta_factor / np.linalg.eigvalsh(K)[-1])
    for times in (np.arange(0, 200), dyn.default_times(80)):
        loss = dyn.curves(times).train_loss
        assert np.all(np.diff(loss) <= 1e-15 * loss[0])


def test_curves_agree_with_at():
    K, Kt, y, yt, _ = _problem()
    dyn = R.kernel_dynamics(K, y, Kt, yt)
    times = dyn.default_times(30)
    assert times[0] == 1 and times[-1] == np.inf and np.all(np.diff(times) > 0)
    curves = dyn.curves(times)
    for i, t in enumerate(times):
        s = dyn.at(t)
        assert curves.train_loss[i] == pytest.approx(s.train_loss, rel=1e-12, abs=1e-30)
        assert curves.test_loss[i] == pytest.approx(s.test_loss, rel=1e-12)
        assert curves.train_accuracy[i] == s.train_accuracy and curves.test_accuracy[i] == s.test_accuracy


def test_default_times_reach_convergence():
    K, Kt, y, yt, _ = _problem(60, 10, 4, boost=0.01)
    for flow in (False, True):
        dyn = R.kernel_dynamics(K, y, Kt, yt, flow=flow)
        times = dyn.default_times(50)
        finite = times[np.isfinite(times)]
        assert flow or np.all(finite == np.round(finite))
        modes = dyn.mode_residuals(finite[-1])
        assert modes.sum() <= 0.02 * dyn.mode_residuals(0).sum()


def test_rank_deficient_kernel_uses_pseudo_inverse():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((30, 8))
    joint = a @ a.T  # rank 8: 20 + 10 images
    K, Kt, y = joint[:20, :20], joint[20:, :20], np.arange(20) % 3
    dyn = R.kernel_dynamics(K, y, Kt)
    assert dyn.null.sum() == 12
    ref = Kt @ np.linalg.pinv(K, rcond=1e-10, hermitian=True) @ one_hot(y, 3)
    assert rel_err(dyn.at(np.inf).test_scores, ref, floor=1) <= 1e-8
    modes = dyn.mode_residuals([0, 10**6])
    assert np.array_equal(modes[0][dyn.null], modes[1][dyn.null])  # never learnt
    assert np.isnan(dyn.at(5).test_loss)  # no test labels


def test_bad_eta_and_times_are_refused():
    K, Kt, y, yt, _ = _problem()
    lam_max = np.linalg.eigvalsh(K)[-1]
    # the limit 2 / lam_max itself (lam_max of eigvalsh and eigh may differ in the last bit: just above it)
    for eta in (2 / lam_max * (1 + 1e-12), 3 / lam_max, 0.0, -1.0, np.inf, np.nan):
        with raises_param("eta"):
            R.kernel_dynamics(K, y, Kt, yt, eta=eta)
    R.kernel_dynamics(K, y, eta=5 / lam_max, flow=True)  # flow: eta is a time scale only
    dyn = R.kernel_dynamics(K, y, Kt, yt)
    for t in (-1, 2.5, np.nan, [1, 2]):
        with raises_param("t"):
            dyn.at(t)
    with raises_param("y_test"):
        R.kernel_dynamics(K, y, y_test=yt)
    with raises_param("K_test"):
        R.kernel_dynamics(K, y, Kt[:, :-1])


def test_reuses_a_given_eigendecomposition(monkeypatch):
    K, Kt, y, yt, _ = _problem()
    eig = scipy.linalg.eigh(K)
    ref = R.kernel_dynamics(K, y, Kt, yt).at(7)

    def refuse(*args, **kwargs):
        raise AssertionError("an eigendecomposition was computed")

    monkeypatch.setattr(scipy.linalg, "eigh", refuse)
    got = R.kernel_dynamics(K, y, Kt, yt, eig=eig).at(7)
    assert rel_err(got.test_scores, ref.test_scores, floor=1) <= 1e-12
    with raises_param("eig"):
        R.kernel_dynamics(K, y, eig=(eig[0][::-1], eig[1]))


def test_curves_make_no_decomposition(monkeypatch):
    n, c = 200, 10
    K = spd_matrix(n, seed=1, boost=0.05)
    Kt = np.random.default_rng(2).standard_normal((100, n)) * 0.1
    y, yt = np.arange(n) % c, np.arange(100) % c
    dyn = R.kernel_dynamics(K, y, Kt, yt)
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("a decomposition or solve after construction")

    for mod in (np.linalg, scipy.linalg):
        for name in ("eigh", "eigvalsh", "eig", "svd", "solve", "inv", "pinv", "lstsq", "cholesky"):
            if hasattr(mod, name):
                monkeypatch.setattr(mod, name, refuse)
    times = np.concatenate([np.arange(1, 100), np.round(np.geomspace(100, 1e5, 100))])  # 199 steps
    start = time.perf_counter()
    curves = dyn.curves(np.append(times, np.inf))
    elapsed = time.perf_counter() - start
    dyn.at(123)
    dyn.mode_residuals(times)
    assert calls == [] and curves.train_loss.shape == (200,)
    print(f"curves over 200 times, n={n}, c={c}, n_test=100: {elapsed * 1e3:.1f} ms")
