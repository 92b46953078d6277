"""Edge cases of the lab's widgets, driven headless: interrupts, invalid plans and settings, stale
displays, cancelling and closing (one test or more per finding of the widgets sweep review)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

for _dependency in ("ipywidgets", "plotly", "anywidget"):
    pytest.importorskip(_dependency)

import cntk_core  # noqa: E402
from cntk_widgets import (  # noqa: E402
    ArchitectureModel,
    ArchitecturePicker,
    KernelExplorer,
    KernelExplorerModel,  # noqa: E402
    LabSettings,
    NetworkSpec,
    RegressionLab,
)
from cntk_widgets.finite_width import FiniteWidthConfig, FiniteWidthModel, finite_width_view  # noqa: E402
from cntk_widgets.regression_model import available_datasets, solve_predict  # noqa: E402

BACKEND = "numpy"
TINY_LAB = dict(backend=BACKEND, synchronous=True, n_per_class=1, n_test_per_class=1)
TINY_FINITE = dict(widths=(4, 32), n_seeds=1, steps=5, n_train=4, n_test=2, image_size=4, n_nngp_inits=4)
HAS_CIFAR = "cifar10-subset" in available_datasets()


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.standard_normal((6, 5, 5, 1)), np.array([0, 1, 2, 0, 1, 2])


def _engine(spec, imgs, ctx):
    return cntk_core.network_kernel(spec.network(), imgs, kind=spec.kind, backend=BACKEND)


def _interrupting(exc_type, depth=11):
    def kernel_fn(spec, imgs, ctx):
        if spec.depth == depth:
            raise exc_type()
        return _engine(spec, imgs, ctx)

    return kernel_fn


# -- 1, 14: interrupts in synchronous mode; errors while drawing --------------------------------
@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_synchronous_interrupt_propagates_and_resets_state(images, exc_type):
    x, y = images
    static = KernelExplorerModel(x, y, synchronous=True, autostart=False, kernel_fn=_interrupting(exc_type))
    static.compute(NetworkSpec(depth=3))
    with pytest.raises(exc_type):
        static.compute(NetworkSpec(depth=11))
    assert static.cancelled.startswith("interrupted") and static.progress == 0.0
    assert static.result.spec.depth == 3 and not static.busy
    static.wait()  # does not raise the interrupt a second time
    static.compute(NetworkSpec(depth=4))
    assert static.result.spec.depth == 4 and static.cancelled is None


def test_synchronous_interrupt_in_the_view_leaves_no_computing_status(images):
    x, y = images
    ex = KernelExplorer(x, y, synchronous=True, kernel_fn=_interrupting(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        ex.picker.depth.value = 11
    assert "computing" not in ex.status.value and "interrupted" in ex.status.value
    assert ex.progress.bar_style == "warning"
    assert "still showing CNTK-GAP-3" in ex.heatmap.layout.title.text


def test_error_while_drawing_the_result_is_reported(images):
    x, y = images
    model = KernelExplorerModel(x, y, synchronous=True, autostart=False, kernel_fn=_engine)

    def draw(event, m):
        if event == "result":
            raise RuntimeError("plot failed")

    model.on_change(draw)
    model.compute()
    assert model.error.startswith("while showing the result: RuntimeError: plot failed")
    with pytest.raises(ValueError, match="n_grid"):
        RegressionLab(n_grid=-1, **TINY_LAB)


# -- 2: sweep buttons ----------------------------------------------------------------------------
def test_sweep_depth_button_skips_depths_the_architecture_forbids():
    lab = RegressionLab(sweep_depths=(2, 3, 4), **TINY_LAB)
    lab.picker.fix_first.value = True
    lab.picker.fix_last.value = True
    lab.sweep_depth_button.click()
    assert [h["depth"] for h in lab.model.history] == [3, 4]
    assert "sweep skips depth 2" in lab.error.value and "cntk-note" in lab.error.value
    with pytest.raises(ValueError, match="sweep: depth 2 with the first and last layer fixed"):
        lab.model.sweep(depths=[2, 3])


def test_sweep_plans_are_validated_in_the_constructor():
    with pytest.raises(ValueError, match="sweep_depths: depth must be between 2 and 21"):
        RegressionLab(sweep_depths=(3, 30), **TINY_LAB)
    with pytest.raises(ValueError, match="sweep_sizes"):
        RegressionLab(sweep_sizes=(0, 2), **TINY_LAB)
    with pytest.raises(ValueError, match="sweep_depths must not be empty"):
        RegressionLab(sweep_depths=(), **TINY_LAB)


def test_a_refused_button_action_shows_in_the_error_box():
    lab = RegressionLab(**TINY_LAB)
    lab.model.close()
    lab.run_button.click()  # disabled in a browser; clicked from code it must still say why nothing happens
    assert "RuntimeError" in lab.error.value and "closed" in lab.error.value
    assert lab.run_button.disabled and lab.sweep_depth_button.disabled


# -- 3, 12, 13: the finite-width view -----------------------------------------------------------
def test_finite_width_view_shows_failures_and_restores_controls():
    v = finite_width_view(**TINY_FINITE)
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


def test_finite_width_config_validation():
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        FiniteWidthConfig(seed=-1)
    with pytest.raises(ValueError, match="seed"):
        FiniteWidthConfig(seed=1.5)
    with pytest.raises(ValueError, match="depth 2 with fix=True"):
        FiniteWidthConfig(depth=2, fix=True)
    with pytest.raises(ValueError, match="widths"):
        FiniteWidthConfig(widths=(2.7, 8))
    with pytest.raises(ValueError, match="widths"):
        FiniteWidthConfig(widths=("a",))
    with pytest.raises(ValueError, match="lr_scale"):
        FiniteWidthConfig(lr_scale=float("inf"))
    with pytest.raises(ValueError, match="diverges for lr_scale >= 2"):
        FiniteWidthConfig(lr_scale=3)
    with pytest.raises(TypeError, match="fix must be True or False"):
        FiniteWidthConfig(fix="no")


def test_zero_steps_gives_no_prediction_error_instead_of_failing():
    r = FiniteWidthModel(**{**TINY_FINITE, "steps": 0}).run()
    assert np.all(np.isnan(r.pred_err)) and np.all(r.kr_pred == 0)


def test_finite_width_panel_b_follows_the_last_run_and_names_its_setting():
    v = finite_width_view(**TINY_FINITE, lr_scale=0.5)
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


def test_lab_settings_seed_and_ridge_are_validated():
    for bad in (-1, 1.5, "x", True):
        with pytest.raises(ValueError, match="seed must be an integer >= 0"):
            LabSettings(seed=bad)
    with pytest.raises(ValueError, match="ridge must be a finite number >= 0"):
        LabSettings(ridge="cv")


# -- 4, 7: regression lab controls <-> settings ---------------------------------------------------
def test_lab_widgets_show_the_model_settings_without_clamping():
    lab = RegressionLab(**{**TINY_LAB, "n_per_class": 200, "ridge": 10.0})
    assert lab.n_per_class.value == 200 and lab.ridge.value == 10.0 and lab.use_ridge.value
    lab.n_test.value = 3  # touching one control writes only that field
    s = lab.model.settings
    assert (s.n_per_class, s.ridge, s.n_test_per_class) == (200, 10.0, 3)

    lab.model.set(n_per_class=3, ridge=1e-10)
    assert lab.n_per_class.value == 3 and lab.ridge.value == 1e-10 and lab.use_ridge.value
    lab.n_test.value = 2
    assert lab.model.settings.n_per_class == 3 and lab.model.settings.ridge == 1e-10
    lab.model.set(ridge=0.0)
    assert not lab.use_ridge.value
    lab.use_ridge.value = True
    assert lab.model.settings.ridge == 1e-10  # the slider's value, shown all along


def test_lab_slider_ranges_follow_the_data_set_and_errors_name_the_setting():
    lab = RegressionLab(**TINY_LAB)
    assert lab.n_per_class.max == 130 and lab.n_test.max == 44  # smallest digits classes
    lab.model.set(n_test_per_class=50)
    assert lab.n_test.value == 50  # widened, not clamped
    lab.run()
    assert "test set of digits" in lab.error.value and "n_test_per_class=50" in lab.error.value


# -- 5, 6, 8: image size, history groups, missing data ------------------------------------------
def test_downsample_is_refused_below_four_pixels_and_shown():
    with pytest.raises(ValueError, match="downsample=4 would shrink the 8x8 digits images"):
        RegressionLab(downsample=4, **TINY_LAB)
    lab = RegressionLab(**TINY_LAB)
    lab.model.set(downsample=4)
    lab.run()
    assert "downsample=4" in lab.error.value and "use downsample &lt;= 2" in lab.error.value
    lab.model.set(downsample=2)
    assert lab.downsample.value == 2 and "4x4 px" in lab.downsample.label
    lab.run()
    assert "digits 4x4 px" in lab.accuracy.value and "4px" in lab.history_fig.data[0].name


@pytest.mark.skipif(not HAS_CIFAR, reason="CIFAR-10 subset files not found")
def test_each_data_set_keeps_its_own_downsample():
    lab = RegressionLab(dataset="cifar10-subset", downsample=4, **TINY_LAB)
    assert lab.downsample.label.startswith("4: 8x8 px")
    lab.dataset.value = "digits"
    assert lab.model.settings.downsample == 1 and lab.downsample.value == 1
    lab.run()
    assert lab.model.result.test_images.shape[1:3] == (8, 8)
    lab.model.set(n_per_class=200)
    lab.dataset.value = "cifar10-subset"
    assert lab.model.settings.downsample == 4
    lab.dataset.value = "digits"  # 200 per class does not exist in digits: lowered, with a note
    assert lab.model.settings.n_per_class == 130 and "n_per_class lowered from 200 to 130" in lab.error.value


def test_history_separates_runs_with_different_settings():
    lab = RegressionLab(**TINY_LAB)
    for kw in (dict(kind="ntk"), dict(kind="nngp"), dict(kind="ntk", pool=True)):
        lab.picker.model.set(depth=3, **kw)
        lab.run()
    lab.use_ridge.value = True
    lab.ridge.value = 1.0
    lab.picker.model.set(pool=False)
    lab.run()
    assert lab.error.value == ""
    names = [t.name for t in lab.history_fig.data]
    assert len(names) == 4 and len(set(names)) == 4
    assert any("CNN-GP" in n for n in names) and any("AvgPool" in n for n in names)
    assert any("ridge 1" in n for n in names) and all("digits 8px" in n for n in names)
    lab.picker.model.set(fix_first=True)
    lab.run()
    lab.picker.model.set(fix_first=False, fix_last=True)
    lab.run()
    assert len(lab.history_fig.data) == 6


def test_missing_cifar_subset_raises_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("CNTK_CIFAR10_SUBSET", str(tmp_path / "nonexistent"))
    with pytest.raises(FileNotFoundError, match="CNTK_CIFAR10_SUBSET"):
        RegressionLab(dataset="cifar10-subset", **TINY_LAB)
    lab = RegressionLab(**TINY_LAB)
    lab.model.set(dataset="cifar10-subset")  # from code: the controls follow, the error box says why it cannot run
    assert lab.dataset.value == "cifar10-subset" and "CNTK_CIFAR10_SUBSET" in lab.error.value
    lab.run()
    assert "FileNotFoundError" in lab.error.value and lab.model.result is None


# -- 9, 10, 17, 18, 20: explorer model inputs --------------------------------------------------
def test_cache_size_is_validated(images):
    x, y = images
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="cache_size must be an integer >= 1"):
            KernelExplorerModel(x, y, synchronous=True, cache_size=bad, kernel_fn=_engine)
    arch = ArchitectureModel(depth=5)
    model = KernelExplorerModel(x, y, architecture=arch, backend="numba", synchronous=True, cache_size=1)
    assert model.error is None and model.result.spec.depth == 5 and list(model.cache) == [NetworkSpec(depth=5)]


def test_labels_are_checked_with_clear_messages(images):
    x, _ = images
    with pytest.raises(ValueError, match="labels must be class indices >= 0, got -1"):
        KernelExplorer(x, [-1, 0, 1, -1, 0, 1], synchronous=True, kernel_fn=_engine)
    with pytest.raises(ValueError, match="got dtype float64"):
        KernelExplorer(x, np.array([0, 1, 2, 0, 1, 2], dtype=float), synchronous=True, kernel_fn=_engine)
    with pytest.raises(ValueError, match="got dtype bool"):
        KernelExplorer(x, np.array([0, 1, 1, 0, 1, 0], dtype=bool), synchronous=True, kernel_fn=_engine)
    with pytest.raises(ValueError, match="relabel"):
        KernelExplorer(x, [0, 10**9, 0, 0, 0, 0], synchronous=True, kernel_fn=_engine)
    with pytest.raises(ValueError, match="2 class names for labels up to 2"):
        KernelExplorer(x, [0, 1, 2, 0, 1, 2], ("a", "b"), synchronous=True, kernel_fn=_engine)


def test_zero_images_and_zero_kernel_diagonals_are_named(images):
    x, y = images
    zero = x.copy()
    zero[4] = 0.0
    with pytest.raises(ValueError, match=r"all-zero image\(s\) \(#4\)"):
        KernelExplorerModel(zero, y, synchronous=True, kernel_fn=_engine)

    def underflow(spec, imgs, ctx):
        k = _engine(spec, imgs, ctx)
        k[0, :] = k[:, 0] = 0.0  # what an image of 1e-200 pixels gives
        return k

    model = KernelExplorerModel(x, y, synchronous=True, kernel_fn=underflow)
    assert "image(s) #0 (input order)" in model.error and "underflow" in model.error


def test_dtype_and_backend_are_checked_at_construction_and_clear_the_cache(images):
    x, y = images
    with pytest.raises(ValueError, match="dtype"):
        KernelExplorer(x, y, dtype="float16", synchronous=True)
    with pytest.raises(ValueError, match="unknown backend 'bogus'"):
        KernelExplorer(x, y, backend="bogus", synchronous=True)
    model = KernelExplorerModel(x, y, backend=BACKEND, synchronous=True)
    assert len(model.cache) == 1
    model.dtype = "float32"
    assert len(model.cache) == 0 and model.dtype == "float32"
    model.compute()
    model.backend = "numpy"  # unchanged: the cache stays
    assert len(model.cache) == 1


def test_many_images_get_block_means_and_a_light_hover():
    n = 803  # 3 images per cell, the last cell of 2
    x = np.random.default_rng(2).standard_normal((n, 2, 2, 1))

    def gram(spec, imgs, ctx):
        f = imgs.reshape(len(imgs), -1)
        return f @ f.T + 4 * np.eye(len(imgs))

    ex = KernelExplorer(x, np.arange(n) % 3, synchronous=True, kernel_fn=gram)
    trace = ex.heatmap.data[0]
    assert ex.cell == 3 and trace.customdata is None and "mean K̂ over a cell of up to 3x3" in trace.hovertemplate
    normalized = ex.model.result.normalized
    expected = np.empty((268, 268))
    for a in range(268):
        for b in range(268):
            expected[a, b] = normalized[3 * a : 3 * a + 3, 3 * b : 3 * b + 3].mean()
    np.testing.assert_allclose(ex.matrix, expected, rtol=1e-12, atol=1e-15)
    # cell edges in image indices: 268 cells, the last one (2 images) narrower; the axis ends at the last image
    np.testing.assert_array_equal(trace.x, np.append(np.arange(0, n, 3), n) - 0.5)
    assert trace.x[-2:].tolist() == [800.5, 802.5] and tuple(ex.heatmap.layout.xaxis.range) == (-0.5, n - 0.5)
    small = KernelExplorer(x[:400], np.arange(400) % 3, synchronous=True, kernel_fn=gram)
    assert small.cell == 1 and small.matrix.shape == (400, 400)


# -- 11: cancel and close ----------------------------------------------------------------------
def test_cancel_and_close_leave_a_consistent_state(images):
    x, y = images
    release, started = threading.Event(), threading.Event()

    def blocking(spec, imgs, ctx):
        if spec.depth in (3, 6):
            started.set()
            assert release.wait(10)
        return _engine(spec, imgs, ctx)

    ex = KernelExplorer(x, y, kernel_fn=blocking)  # asynchronous
    assert started.wait(10)
    assert ex.model.cancel() is True
    assert ex.status.value == "cancelled" and ex.progress.bar_style == "warning"
    release.set()
    ex.wait(30)
    assert ex.model.result is None and ex.model.error is None

    release.clear()
    started.clear()
    ex.picker.depth.value = 6  # blocks
    assert started.wait(10)
    ex.picker.depth.value = 5  # queued behind the blocked job
    ex.model.close()
    release.set()
    ex.wait(30)  # no CancelledError
    assert "closed" in ex.status.value and ex.picker.depth.disabled
    with pytest.raises(RuntimeError, match="closed"):
        ex.model.compute()
    ex.model.close()  # idempotent


def test_lab_stop_button_cancels_a_sweep():
    lab = RegressionLab(backend=BACKEND, n_per_class=1, n_test_per_class=1)  # asynchronous
    gate, entered = threading.Event(), threading.Event()
    one = lab.model._one

    def slow_one(spec, settings, ctx, lo, hi):
        if spec.depth == 4:
            entered.set()
            assert gate.wait(10)
        return one(spec, settings, ctx, lo, hi)

    lab.model._one = slow_one
    lab.model.sweep(depths=[3, 4, 5])
    assert entered.wait(30)
    lab.stop_button.click()
    gate.set()
    lab.wait(30)
    assert [h["depth"] for h in lab.model.history] == [3]
    assert lab.progress.bar_style == "warning" and "cancelled" in lab.error.value
    lab.model.close()


# -- 15, 16, 19, 21, 22 ----------------------------------------------------------------------------
def test_picker_max_depth_is_validated_and_never_clamps_the_model():
    for bad in (1, 30, 2.5):
        with pytest.raises(ValueError, match="max_depth"):
            ArchitecturePicker(max_depth=bad)
    picker = ArchitecturePicker(ArchitectureModel(depth=15), max_depth=8)
    assert picker.depth.value == 15
    picker.model.set(depth=18)
    assert picker.depth.value == 18


def test_singular_kernel_hint_speaks_the_labs_language():
    from cntk_core.regression import SingularKernelError

    k = np.ones((4, 4))
    with pytest.raises(SingularKernelError, match=r"turn on the ridge \(e.g. 1e-6\)") as info:
        solve_predict(k, np.ones((2, 4)), np.array([0, 1, 0, 1]), 2, 0.0)
    assert "cv" not in str(info.value)


def test_sweep_progress_bar_is_not_green_before_the_end():
    lab = RegressionLab(**TINY_LAB)
    styles = []
    lab.model.on_change(lambda event, m: styles.append(lab.progress.bar_style) if event == "result" else None)
    lab.model.sweep(depths=[2, 3, 4])
    assert styles == ["info", "info", "success"]


def test_network_spec_flags_must_be_booleans():
    with pytest.raises(TypeError, match="fix_first must be True or False"):
        NetworkSpec(fix_first="no")
    with pytest.raises(TypeError, match="pool"):
        NetworkSpec(pool=2)
    assert NetworkSpec(fix_last=np.bool_(True)).fix_last is True


def test_explorer_marks_a_stale_figure_after_an_error():
    tiny = KernelExplorer(np.ones((3, 1, 1, 1)), [0, 1, 1], backend=BACKEND, synchronous=True)
    tiny.picker.pool.value = True
    assert "AvgPool" in tiny.error.value
    title = tiny.heatmap.layout.title.text
    assert "failed" in title and "still showing CNTK-GAP-3" in title
    tiny.picker.pool.value = False  # cached: the title is current again
    assert tiny.heatmap.layout.title.text.endswith("CNTK-GAP-3")
