"""The training-dynamics widget's model (cntk_widgets.dynamics_model), without ipywidgets or a browser.

Every number is checked against something computed here independently: the Grams against the slow
4-D oracle (cntk_core.testing.reference_matrix), t = inf against a plain solve with those oracle
Grams, finite t against gradient descent iterated literally on them, t = 0 against zero predictions,
and the per-mode residuals against the residual projected on eigenvectors taken here. The slider's
promise (moving it recomputes nothing) is checked by counting engine calls and eigendecompositions.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from conftest import one_hot, raises_param, rel_err

from cntk_core.testing import reference_matrix
from cntk_widgets.dynamics_model import DynamicsSettings, TrainingDynamicsModel, load_data
from cntk_widgets.models import NetworkSpec

SMALL = dict(n_per_class=2, n_test_per_class=1, n_times=24)  # 20 train, 10 test digits (8x8)


def _model(**kw) -> TrainingDynamicsModel:
    kw = {**SMALL, "disk_cache": False, "synchronous": True, **kw}
    model = TrainingDynamicsModel(**kw)
    assert model.error is None, model.error
    return model


@pytest.fixture
def counters(monkeypatch):
    """Counts of engine calls (``cntk_core.network_kernel``, which the lab's Gram schedulers call) and of
    ``scipy.linalg.eigh``."""
    import cntk_core

    calls = {"engine": 0, "eigh": 0}
    engine, eigh = cntk_core.network_kernel, scipy.linalg.eigh

    def counted_engine(*a, **k):
        calls["engine"] += 1
        return engine(*a, **k)

    def counted_eigh(*a, **k):
        calls["eigh"] += 1
        return eigh(*a, **k)

    monkeypatch.setattr(cntk_core, "network_kernel", counted_engine)
    monkeypatch.setattr(scipy.linalg, "eigh", counted_eigh)
    return calls


CASES = [
    dict(readout="gap", kind="ntk"),
    dict(readout="vanilla", kind="ntk", fix_first=True),
    dict(readout="gap", kind="nngp"),
    dict(readout="gap", kind="ntk", fix_last=True, depth=4),
]


@pytest.mark.parametrize("spec", CASES, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_grams_match_the_oracle_and_infinite_time_is_kernel_regression(spec):
    model = _model(label_noise=0.1, **spec)
    r, data = model.result, model.data()
    s = r.spec
    ref = dict(depth=s.depth, readout=s.readout, fix_first=s.fix_first, fix_last=s.fix_last, kind=s.kind)
    K = reference_matrix(data.x_train, data.x_train, **ref)
    K_test = reference_matrix(data.x_test, data.x_train, **ref)
    assert rel_err(r.K_train, K) <= 1e-7 and rel_err(r.K_test, K_test) <= 1e-7
    Y = one_hot(data.y_train, 10)
    scores = K_test @ np.linalg.solve(K, Y)  # the paper's classifier, no ridge
    snap = model.at_time(np.inf)
    assert snap.index == len(r.times) - 1 and np.isinf(r.times[-1])
    assert rel_err(snap.state.test_scores, scores, floor=1.0) <= 1e-6
    assert np.array_equal(snap.predictions, scores.argmax(axis=1))
    assert rel_err(snap.state.train_scores, Y, floor=1.0) <= 1e-6  # the train set is interpolated
    assert snap.state.test_loss == pytest.approx(np.mean((scores - one_hot(data.y_test, 10)) ** 2), rel=1e-6)
    assert r.curves.test_loss[-1] == pytest.approx(snap.state.test_loss, rel=1e-9)


def test_finite_times_are_gradient_descent_and_modes_recombine():
    """f_t from t steps of f <- f - eta K (f - Y) on the oracle Gram, eta = 1 / lam_max; the residual
    energy per eigenmode (eigenvectors taken here) sums to the train loss."""
    model = _model(label_noise=0.2)
    r, data = model.result, model.data()
    K = reference_matrix(data.x_train, data.x_train, 3, "gap")
    K_test = reference_matrix(data.x_test, data.x_train, 3, "gap")
    lam, V = np.linalg.eigh(K)
    eta = 1.0 / lam.max()
    Y = one_hot(data.y_train, 10)
    f, f_test = np.zeros_like(Y), np.zeros((len(K_test), 10))
    wanted = {1, 2, 7, 30}
    for step in range(1, max(wanted) + 1):
        residual = f - Y
        f, f_test = f - eta * K @ residual, f_test - eta * K_test @ residual
        if step in wanted:
            snap = model.at_time(step)
            assert rel_err(snap.state.train_scores, f, floor=1.0) <= 1e-6
            assert rel_err(snap.state.test_scores, f_test, floor=1.0) <= 1e-6
            per_mode = np.sum((V.T @ (f - Y)) ** 2, axis=1)[::-1]  # decreasing eigenvalue, as the model
            big = lam[::-1] > 1e-6 * lam.max()  # well-separated modes (degenerate ones may mix)
            assert rel_err(snap.residuals[big], per_mode[big], floor=1e-6) <= 1e-5
            assert snap.residuals.sum() == pytest.approx(np.sum((f - Y) ** 2), rel=1e-8)
            assert snap.state.train_loss == pytest.approx(np.mean((f - Y) ** 2), rel=1e-8)
    # spectral bias: after a few steps the top modes have lost a larger share of their energy
    early = model.at_time(5).residuals / np.maximum(r.initial_energy, 1e-300)
    assert early[0] < 1e-6 < early[-1]


def test_time_zero_predicts_nothing():
    model = _model()
    snap = model.at_time(0)
    data = model.data()
    assert not snap.state.test_scores.any() and not snap.state.train_scores.any()
    assert snap.state.train_loss == pytest.approx(np.mean(one_hot(data.y_train, 10) ** 2))
    assert np.allclose(snap.residuals, model.result.initial_energy)


def test_moving_the_time_recomputes_nothing(counters):
    model = _model(label_noise=0.2)
    assert counters["eigh"] == 1 and counters["engine"] > 0
    assert model.gram_computations == 1 and model.eigendecompositions == 1
    engine = counters["engine"]
    r = model.result
    seen = []
    for i in range(len(r.times)):
        seen.append(model.select(i).state.test_loss)
    model.select(-1)
    model.at_time(123)
    assert counters == {"engine": engine, "eigh": 1}, counters
    assert model.result is r  # no new result either
    assert np.allclose(seen, r.curves.test_loss, rtol=1e-9)  # the state at each grid time is its curve point
    # a new label noise reuses the Grams AND the eigendecomposition
    model.set(label_noise=0.4)
    assert counters == {"engine": engine, "eigh": 1} and model.result.source == "memory"
    assert not np.array_equal(model.result.data.y_train, r.data.y_train)
    # another kernel: its own Grams and one decomposition; going back is a memory hit
    model.set(kind="nngp")
    assert counters["engine"] > engine and counters["eigh"] == 2 and model.gram_computations == 2
    engine = counters["engine"]
    model.set(kind="ntk")
    assert counters == {"engine": engine, "eigh": 2} and model.result.source == "memory"


def test_the_time_follows_a_new_result():
    model = _model()
    r = model.result
    assert model.snapshot.index == r.best  # the first picture: the lowest test loss
    t = r.times[len(r.times) // 2]
    model.select(len(r.times) // 2)
    model.set(fix_last=True)
    new = model.result
    assert new is not r and new.spec.fix_last
    assert model.snapshot.index == model.nearest_index(t)
    model.select(-1)
    model.set(fix_last=False)
    assert np.isinf(model.snapshot.t)


def test_disk_cache_serves_a_new_session(tmp_path, counters):
    first = _model(disk_cache=tmp_path)
    assert first.result.source == "computed"
    engine = counters["engine"]
    second = _model(disk_cache=tmp_path)
    assert second.result.source == "disk" and counters["engine"] == engine
    assert np.array_equal(second.result.K_train, first.result.K_train)
    assert second.eigendecompositions == 1  # one per session and kernel


def test_label_noise_and_early_stopping():
    s = DynamicsSettings(**SMALL, label_noise=0.3)
    data = load_data(s)
    n = len(data.y_train)
    assert data.flipped.sum() == round(0.3 * n)
    assert np.array_equal(data.y_train != data.y_clean, data.flipped)
    assert np.array_equal(np.bincount(data.y_clean), np.full(10, 2))
    assert np.array_equal(load_data(s).y_train, data.y_train)  # reproducible from the seed
    model = _model(label_noise=0.3)
    r = model.result
    loss = r.curves.test_loss
    assert r.best == int(np.argmin(loss))
    assert r.early_stopping == (loss[: len(loss) - 1].min() < loss[-1])


def test_default_data_has_early_stopping():
    """The widget's default (30 + 20 digits per class, 20 % label noise, CNTK-GAP-3) shows early stopping,
    on the vanilla readout here (the same data, a much cheaper Gram)."""
    model = _model(n_per_class=30, n_test_per_class=20, n_times=64, readout="vanilla")
    r = model.result
    assert r.early_stopping and r.best < len(r.times) - 1
    assert r.curves.test_loss[r.best] < 0.9 * r.curves.test_loss[-1]


def test_refused_values_change_nothing():
    with raises_param("label_noise"):
        DynamicsSettings(label_noise=1.0)
    with raises_param("n_times"):
        DynamicsSettings(n_times=2)
    model = _model()
    before = (model.spec, model.settings, model.result)
    with pytest.raises(TypeError, match="unknown field"):
        model.set(colour="red")
    with pytest.raises(ValueError):
        model.set(label_noise=-0.1)
    with pytest.raises(ValueError):
        model.set(depth=2, fix_first=True, fix_last=True)  # no trained layer: refused by NetworkSpec
    assert (model.spec, model.settings, model.result) == before
    with raises_param("index"):
        model.select(len(model.result.times))
    with raises_param("t"):
        model.at_time(2.5)  # gradient descent counts whole steps


def test_background_job_and_cancel():
    events = []
    model = TrainingDynamicsModel(**SMALL, disk_cache=False, autostart=False)
    model.on_change(lambda e, m: events.append(e))
    try:
        model.compute()
        assert model.wait(120) is not None
        assert "progress" in events and events[-2:] == ["result", "time"]
        progress = [e for e in events if e == "progress"]
        assert len(progress) >= 2
        model.set(kind="nngp")
        stopped = model.cancel()
        model.wait(120)
        if stopped:  # the NNGP's job stopped at its next engine call: the NTK stays shown
            assert model.cancelled == "cancelled" and model.result.spec.kind == "ntk"
        else:  # it had finished already
            assert model.result.spec.kind == "nngp"
    finally:
        model.close()
    assert events[-1] == "closed"


def test_spec_is_the_lab_network():
    model = _model(depth=3, readout="vanilla")
    assert model.result.spec == NetworkSpec(depth=3, readout="vanilla")
    assert model.result.spec.title == "CNTK-V-3"
