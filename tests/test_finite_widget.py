"""The finite-width view: model results and widget updates, driven without a browser."""

from __future__ import annotations

import numpy as np
import pytest

from cntk_core import kernel_matrix
from cntk_widgets.finite_width import (
    FiniteWidthConfig,
    FiniteWidthModel,
    finite_width_view,
    inverse_sqrt_guide,
    load_small_images,
)

TINY = dict(widths=(4, 128), n_seeds=1, steps=5, n_train=4, n_test=2, image_size=4, n_nngp_inits=4)


def test_load_small_images_digits_and_random():
    x, y = load_small_images(6, 6, "digits", seed=1)
    assert x.shape == (6, 6, 6, 1) and x.dtype == np.float64
    np.testing.assert_array_equal(y, [1, -1, 1, -1, 1, -1])
    assert abs(x.mean()) < 1e-12 and abs(x.std() - 1) < 1e-12
    x10, _ = load_small_images(2, 10, "digits")
    assert x10.shape == (2, 10, 10, 1)
    xr, yr = load_small_images(3, 5, "random", seed=2)
    assert xr.shape == (3, 5, 5, 1) and set(np.unique(yr)) <= {-1.0, 1.0}


def test_config_validation():
    with pytest.raises(ValueError, match="widths"):
        FiniteWidthConfig(widths=())
    with pytest.raises(ValueError, match="readout"):
        FiniteWidthConfig(readout="max")
    with pytest.raises(ValueError, match="n_train"):
        FiniteWidthConfig(n_train=1)
    with pytest.raises(ValueError, match="dataset"):
        FiniteWidthConfig(dataset="cifar")
    assert FiniteWidthConfig(widths=(64, 8)).widths == (8, 64)


def test_model_run_against_independent_kernel_regression():
    m = FiniteWidthModel(**TINY)
    r = m.run()
    xtr, ytr, xte, _ = m.data()
    assert r.ntk_err_seeds.shape == (2, 1) and r.pred.shape == (2, 1, 2)
    assert r.ntk_err[1] < r.ntk_err[0]  # expected ratio ~ sqrt(128 / 4)
    assert np.all(np.isfinite(r.ntk_change)) and np.all(r.ntk_change > 0)
    # kernel regression reference, recomputed here by the plain GD iteration on the exact NTK
    th = kernel_matrix(xtr, depth=3, readout="gap")
    tt = kernel_matrix(xte, xtr, depth=3, readout="gap")
    eta = 1.0 / np.linalg.eigvalsh(th)[-1]
    f, fs = np.zeros(len(ytr)), np.zeros(len(xte))
    for _ in range(TINY["steps"]):
        resid = f - ytr
        f, fs = f - eta * th @ resid, fs - eta * tt @ resid
    assert r.eta == pytest.approx(eta, rel=1e-12)
    np.testing.assert_allclose(r.kr_pred, fs, rtol=1e-9, atol=1e-12)
    # prediction error as documented: distance of the net's test outputs to kernel regression
    np.testing.assert_allclose(r.pred_err, [np.linalg.norm(p[0] - fs) / np.linalg.norm(fs) for p in r.pred], rtol=1e-12)


def test_model_update_invalidates_data_and_nngp_runs():
    m = FiniteWidthModel(**TINY)
    x0 = m.data()[0]
    m.update(image_size=5)
    assert m.data()[0].shape == (4, 5, 5, 1) and x0.shape == (4, 4, 4, 1)
    emp, exact, err = m.nngp(128)
    np.testing.assert_allclose(exact, kernel_matrix(m.data()[0], depth=3, readout="gap", kind="nngp"), rtol=1e-12)
    assert emp.shape == exact.shape and err == pytest.approx(np.linalg.norm(emp - exact) / np.linalg.norm(exact))


def test_inverse_sqrt_guide():
    np.testing.assert_allclose(inverse_sqrt_guide([4, 16, 64], [np.nan, 2.0, 1.0]), [4.0, 2.0, 1.0])


def test_view_updates_on_button_and_slider():
    v = finite_width_view(**TINY)
    v.readout.value = "vanilla"
    v.steps.value = 3
    v.button.click()  # runs synchronously
    r = v.results
    assert v.model.config.readout == "vanilla" and v.model.config.steps == 3
    np.testing.assert_allclose(v.figs["ntk"].data[0].y, r.ntk_err)
    np.testing.assert_allclose(v.figs["ntk"].data[1].y, inverse_sqrt_guide(r.widths, r.ntk_err))
    np.testing.assert_allclose(v.figs["change"].data[0].y, r.ntk_change)
    assert len(v.figs["pred"].data) == 1 + len(r.widths)
    assert "η" in v.status.value
    v.width.value = 128
    assert "width 128" in v.figs["nngp"].layout.title.text
    emp, exact, _ = v.model.nngp(128)  # deterministic for the seed
    iu = np.triu_indices(len(exact))
    np.testing.assert_allclose(v.figs["nngp"].data[0].y, emp[iu])
    np.testing.assert_allclose(v.figs["nngp"].data[0].x, exact[iu])


# -- issue 23, item 9: a result from the start; the readout control of the picker ------------------
def test_view_shows_a_result_without_pressing_run():
    v = finite_width_view(**TINY)
    r = v.wait()
    assert r is not None and v.results is r
    np.testing.assert_allclose(v.figs["ntk"].data[0].y, r.ntk_err)
    np.testing.assert_allclose(v.figs["change"].data[0].y, r.ntk_change)
    assert len(v.figs["pred"].data) == 1 + len(r.widths) and len(v.figs["nngp"].data[0].y) > 0
    assert "η" in v.status.value and v.progress.value == 1.0
    # the synced state holds the drawn panels, for a page that connects after the cell ran (Voila)
    np.testing.assert_allclose(v.figs["ntk"]._widget_data[0]["y"], r.ntk_err)
    assert len(v.figs["nngp"]._widget_data[0]["y"]) == len(v.figs["nngp"].data[0].y)
    s = finite_width_view(synchronous=True, **TINY)  # computed before the constructor returns
    assert s.results is not None and "η" in s.status.value
    assert finite_width_view(autorun=False, **TINY).status.value == "press Run"


class _GatedModel(FiniteWidthModel):
    """A model whose experiments wait for ``gate``, to watch the view while it computes."""

    def __init__(self, gate, **kw):
        super().__init__(**kw)
        self.gate = gate

    def run(self, progress=None):
        assert self.gate.wait(30)
        return super().run(progress)


def test_first_result_is_computed_in_the_background_with_progress():
    import threading

    gate = threading.Event()
    v = finite_width_view(_GatedModel(gate, **TINY))
    assert v.results is None and "computing the first result (depth 3, gap, 5 steps, seed 0" in v.status.value
    seen = []
    v.progress.observe(lambda c: seen.append(c["new"]), names="value")
    v.depth.value = 4  # moved while computing: the panels keep the computed settings and say so
    gate.set()
    r = v.wait()
    assert r is not None and v.model.config.depth == 3
    assert any(0 < p < 1 for p in seen) and seen[-1] == 1.0 and seen == sorted(seen)
    assert "settings changed: press Run" in v.status.value
    v.button.click()
    assert v.model.config.depth == 4 and v.results is not r and "η" in v.status.value


def test_first_result_reuses_what_the_notebook_cells_computed(monkeypatch):
    import cntk_widgets.finite_width as fw

    model = FiniteWidthModel(**TINY)
    err, _ = model.ntk_errors()  # notebook 01's cells, before the view is built
    tr = model.training()

    def no_more(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(fw, "train_gd", no_more)
    monkeypatch.setattr(fw, "empirical_ntk_samples", no_more)
    v = finite_width_view(model, synchronous=True)
    np.testing.assert_array_equal(v.results.ntk_err, err)
    np.testing.assert_array_equal(v.results.pred, tr["pred"])
    v.results.pred[:] = 0  # callers get copies: the remembered results stay as computed
    np.testing.assert_array_equal(model.training()["pred"], tr["pred"])


def test_a_failed_first_result_shows_in_the_status_and_run_still_works():
    class Failing(FiniteWidthModel):
        fail = True

        def run(self, progress=None):
            if self.fail:
                raise RuntimeError("out of memory")
            return super().run(progress)

    model = Failing(**TINY)
    v = finite_width_view(model)
    assert v.wait() is None
    assert "cntk-error" in v.status.value and "RuntimeError: out of memory" in v.status.value
    assert v.progress.bar_style == "danger"
    model.fail = False
    v.button.click()
    assert v.results is not None and "η" in v.status.value


def test_readout_uses_the_pickers_toggle_buttons():
    import ipywidgets as W

    from cntk_widgets import ArchitecturePicker

    v = finite_width_view(autorun=False, **TINY)
    picker = ArchitecturePicker()
    assert isinstance(v.readout, W.ToggleButtons) and type(v.readout) is type(picker.readout)
    assert v.readout.options == picker.readout.options and v.readout.value == "gap"
    assert v.readout.description == picker.readout.description == "readout"
