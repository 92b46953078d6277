"""The finite-width lab's view (cntk_widgets.finite_width_view), driven without a browser: widget updates
on the button and the sliders, a first result without pressing Run (computed in the background, or reused
from the notebook's cells), failures shown in the status line with the controls restored, panel b
following the last run, and the picker's readout toggle."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("plotly")

from cntk_widgets.finite_width import FiniteWidthModel, finite_width_view, inverse_sqrt_guide  # noqa: E402

TINY = dict(widths=(4, 128), n_seeds=1, steps=5, n_train=4, n_test=2, image_size=4, n_nngp_inits=4)
TINY_SMALL = {**TINY, "widths": (4, 32)}  # narrower: where only the widgets matter


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
    from cntk_widgets.picker import PAPER_READOUTS

    # finite nets have the paper's readouts (no LAP); their labels are the picker's own
    assert [r for _, r in v.readout.options] == list(PAPER_READOUTS) and v.readout.value == "gap"
    assert v.readout.options == picker.readout.options[: len(PAPER_READOUTS)]
    assert v.readout.description == picker.readout.description == "readout"


def test_finite_width_view_shows_failures_and_restores_controls():
    v = finite_width_view(**TINY_SMALL)
    assert v.steps.min == 1
    v.button.click()
    good = v.results
    v.seed.value = -1
    v.button.click()
    assert "ValueError: seed must be an integer &gt;= 0, got -1" in v.status.value
    assert "cntk-error" in v.status.value and "running" not in v.status.value
    assert not v.button.disabled and v.results is good and v.model.config.seed == 0
    v.seed.value = 0
    v.depth.value, v.fix.value = 2, True
    v.button.click()
    assert "no trained layer" in v.status.value and v.model.config.depth == 3
    v.depth.value, v.fix.value = 3, False
    v.button.click()
    assert v.results is not good and "η" in v.status.value


def test_finite_width_panel_b_follows_the_last_run_and_names_its_setting():
    v = finite_width_view(**TINY_SMALL, lr_scale=0.5)
    v.button.click()
    assert "0.5/λ_max" in v.status.value
    summary = v.status.value
    v.depth.value = 4  # not run yet
    assert "settings changed: press Run" in v.status.value and "depth 3" in v.status.value
    v.depth.value = 3
    assert v.status.value == summary
    v.depth.value = 4
    v.width.value = 32
    assert "depth 3" in v.figs["nngp"].layout.title.text and v.model.config.depth == 3
    emp, exact, _ = v.model.nngp(32)
    np.testing.assert_allclose(v.figs["nngp"].data[0].y, emp[np.triu_indices(len(exact))])
