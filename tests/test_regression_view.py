"""The regression lab's view (cntk_widgets.regression_view), driven headless: its accuracy equals a direct
computation; controls that match the shown result after a sweep; a history plot whose legend cannot
squeeze it and whose lines keep different settings apart; % everywhere; a readable test-image grid; an
uncut downsample label, a downsample menu without repeated sizes, and any data set name; the sweep
buttons and their plans; stop; and what the error box says when a setting cannot run."""

from __future__ import annotations

import threading
from dataclasses import asdict

import numpy as np
import pytest
from conftest import raises_param

for _dependency in ("ipywidgets", "plotly", "anywidget"):
    pytest.importorskip(_dependency)

import cntk_core  # noqa: E402
from cntk_core.data import DATASETS, Dataset  # noqa: E402
from cntk_widgets import RegressionLab  # noqa: E402
from cntk_widgets.models import NetworkSpec  # noqa: E402
from cntk_widgets.regression_model import LabSettings, RegressionResult, available_datasets  # noqa: E402

BACKEND = "numpy"  # per-layer engine: no JIT, fast on these tiny images
TINY = dict(backend=BACKEND, synchronous=True, n_per_class=1, n_test_per_class=1)
CIFAR_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
HAS_CIFAR = "cifar10-subset" in available_datasets()


def _controls(lab: RegressionLab) -> tuple[dict, dict]:
    """What the lab's widgets say: the picker's architecture and the lab's settings."""
    p = lab.picker
    spec = dict(
        depth=p.depth.value,
        readout=p.readout.value,
        kind=p.kind.value,
        fix_first=p.fix_first.value,
        fix_last=p.fix_last.value,
        pool=p.pool.value,
        lap_c=p.lap_c.value if p.readout.value == "lap" else None,
        padding=p.padding.value,
        flip=p.flip.value,
        preset=p.preset.value,
    )
    settings = dict(
        dataset=lab.dataset.value,
        n_per_class=lab.n_per_class.value,
        n_test_per_class=lab.n_test.value,
        downsample=lab.downsample.value,
        ridge=lab.ridge.value if lab.use_ridge.value else 0.0,
        zca=lab.zca.value if lab.use_zca.value else None,
        flip_augment=lab.flip_augment.value,
        patches=lab.patches.value,
        patch_size=lab.patch_size.value,
    )
    return spec, settings


def _assert_controls_show(lab: RegressionLab, r: RegressionResult) -> None:
    spec, settings = _controls(lab)
    assert spec == asdict(r.spec)
    assert settings == {k: v for k, v in asdict(r.settings).items() if k != "seed"}
    assert lab.picker.model.spec == r.spec and lab.model.settings == r.settings
    assert lab.model.control_changes() == [] and "controls changed" not in lab.accuracy.value


# -- the result equals a direct computation ---------------------------------------------------------
def test_regression_lab_accuracy_equals_direct_computation():
    import scipy.linalg

    from cntk_core.data import balanced_subset, load_dataset

    lab = RegressionLab(backend=BACKEND, synchronous=True, n_per_class=2, n_test_per_class=2, ridge=1e-3, seed=5)
    lab.picker.model.set(depth=3, readout="vanilla")
    lab.run()
    r = lab.model.result
    assert lab.error.value == "", lab.error.value

    ds = load_dataset("digits")
    xtr, ytr = balanced_subset(ds.x_train, ds.y_train, 2, seed=5, n_classes=10)
    xte, yte = balanced_subset(ds.x_test, ds.y_test, 2, seed=5, n_classes=10)
    mean = (xtr / 16.0).mean()
    std = (xtr / 16.0).std()
    a, b = (xtr / 16.0 - mean) / std, (xte / 16.0 - mean) / std
    # the lab's images (cntk_core.data.preprocess: pixels / 16, the training images' mean and std) are these
    assert ds.pixel_scale == 16.0
    x_train, y_train, x_test, y_test, _, _ = lab.model.subset(r.settings)
    np.testing.assert_allclose(x_train, a, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(x_test, b, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(y_train, ytr)
    np.testing.assert_array_equal(y_test, yte)
    ktr = cntk_core.kernel_matrix(a, depth=3, readout="vanilla", backend=BACKEND)
    kte = cntk_core.kernel_matrix(b, a, depth=3, readout="vanilla", backend=BACKEND)
    targets = np.full((len(ytr), 10), -0.1)
    targets[np.arange(len(ytr)), ytr] = 0.9
    alpha = scipy.linalg.solve(ktr + 1e-3 * np.mean(np.diag(ktr)) * np.eye(len(ktr)), targets)
    pred = np.argmax(kte @ alpha, axis=1)
    assert r.accuracy == pytest.approx(np.mean(pred == yte))
    assert r.confusion.sum() == len(yte) and np.trace(r.confusion) == np.sum(pred == yte)
    assert f"{100 * r.accuracy:.1f} %" in lab.accuracy.value
    np.testing.assert_array_equal(np.asarray(lab.confusion_fig.data[0].z), r.confusion)
    assert len(lab.grid_fig.layout.annotations) == 20

    lab.model.sweep(depths=[2])
    assert [h["depth"] for h in lab.model.history] == [3, 2]
    assert len(lab.history_fig.data) == 1 and list(lab.history_fig.data[0].x) == [2, 3]
    lab.model.sweep(n_per_class=[1])
    assert lab.model.history[-1]["n_train"] == 10
    lab.history_x.value = "n_train"
    assert lab.history_fig.layout.xaxis.title.text == "training images"


# -- controls match the shown result ----------------------------------------------------------------
def test_controls_show_the_result_of_a_depth_sweep_and_of_a_size_sweep():
    lab = RegressionLab(**{**TINY, "n_per_class": 2}, sweep_depths=(2, 4))
    lab.sweep_depth_button.click()
    r = lab.model.result
    assert r.spec.depth == 4 and "CNTK-GAP-4" in lab.accuracy.value
    _assert_controls_show(lab, r)
    lab.picker.model.set(readout="vanilla", kind="nngp")
    lab.model.sweep(n_per_class=[1, 3])
    r = lab.model.result
    assert r.settings.n_per_class == 3 and r.n_train == 30 and "30 training images" in lab.accuracy.value
    _assert_controls_show(lab, r)
    lab.run()  # the next run computes what the controls (and figures) say
    assert lab.model.history[-1] == {**lab.model.history[-2], "seconds": lab.model.history[-1]["seconds"]}


def test_each_shown_result_of_a_sweep_moves_the_controls():
    lab = RegressionLab(**TINY)
    seen = []
    lab.model.on_change(
        lambda event, m: event == "result" and seen.append((m.result.spec.depth, lab.picker.depth.value))
    )
    lab.model.sweep(depths=[2, 3, 5])
    assert seen == [(2, 2), (3, 3), (5, 5)]


def test_controls_changed_by_the_user_are_kept_and_named():
    lab = RegressionLab(**TINY)
    lab.run()
    lab.picker.depth.value = 5
    lab.n_test.value = 2
    assert lab.model.result.spec.depth == 3
    assert "controls changed since this run: depth 5 (shown: 3), test/class 2 (shown: 1)" in lab.accuracy.value
    lab.run()
    _assert_controls_show(lab, lab.model.result)

    # the user moves the slider while a sweep runs: later results of the sweep leave it alone
    def user(event, m):
        if event == "result" and m.result.spec.depth == 2:
            lab.picker.depth.value = 7

    lab.model.on_change(user)
    lab.model.sweep(depths=[2, 3])
    assert lab.model.result.spec.depth == 3 and lab.picker.depth.value == 7
    assert "depth 7 (shown: 3)" in lab.accuracy.value


def test_lab_widgets_show_the_model_settings_without_clamping():
    lab = RegressionLab(**{**TINY, "n_per_class": 200, "ridge": 10.0})
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
    lab = RegressionLab(**TINY)
    assert lab.n_per_class.max == 130 and lab.n_test.max == 44  # smallest digits classes
    lab.model.set(n_test_per_class=50)
    assert lab.n_test.value == 50  # widened, not clamped
    lab.run()
    assert "test set of digits" in lab.error.value and "n_test_per_class=50" in lab.error.value


# -- the history plot: % and a legend below the plot ------------------------------------------------
def _plot_area(fig) -> tuple[float, float]:
    lay = fig.layout
    return lay.width - lay.margin.l - lay.margin.r, lay.height - lay.margin.t - lay.margin.b


def test_history_plot_shows_percent():
    lab = RegressionLab(**TINY)
    lab.model.sweep(depths=[2, 3])
    acc = [100 * h["accuracy"] for h in lab.model.history]
    np.testing.assert_allclose(lab.history_fig.data[0].y, acc)
    assert list(lab.history_fig.layout.yaxis.range) == [0, 100] and "%" in lab.history_fig.layout.yaxis.title.text
    assert "%" in lab.history_fig.data[0].hovertemplate


def test_history_legend_sits_below_the_plot_and_never_narrows_it():
    lab = RegressionLab(**TINY)
    lab.run()
    one = _plot_area(lab.history_fig)
    for kw in (dict(kind="nngp", fix_first=True, fix_last=True, pool=True), dict(readout="vanilla")):
        lab.picker.model.set(**kw)
        lab.run()
    lab.model.set(ridge=1e-6, downsample=2)
    lab.run()
    fig = lab.history_fig
    assert len(fig.data) == 4 and max(len(t.name) for t in fig.data) > 60  # long legend entries
    assert _plot_area(fig) == one and one[0] >= 450 and one[1] >= 250  # the plot area keeps its size
    lay = fig.layout
    assert lay.margin.autoexpand is False  # plotly may not shrink the plot to make room for the legend
    assert lay.legend.orientation == "v" and lay.legend.yanchor == "top" and lay.legend.y < 0  # below the x axis
    assert lay.legend.yref in (None, "paper") and lay.legend.xref in (None, "paper")
    # the x axis title (about 50 px under the plot) stays above the legend; every line gets a legend row
    assert -lay.legend.y * one[1] >= 50 and lay.margin.b >= 50 + 20 * len(fig.data)
    assert lay.legend.font.size >= 11 and lay.width <= 640  # readable, and fits beside nothing at 1280 px
    assert lay.xaxis.dtick == 1  # whole depths only


def test_history_separates_runs_with_different_settings():
    lab = RegressionLab(**TINY)
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


# -- the test-image grid -------------------------------------------------------------------------------
def _fake_result(names, n=20, size=32, channels=3) -> RegressionResult:
    rng = np.random.default_rng(0)
    y = np.arange(n) % len(names)
    return RegressionResult(
        spec=NetworkSpec(),
        settings=LabSettings(),
        accuracy=0.25,
        confusion=np.eye(len(names), dtype=int),
        predictions=(y + (np.arange(n) % 4 != 0)) % len(names),
        y_test=y,
        test_images=rng.random((n, size, size, channels)),
        class_names=tuple(names),
        seconds=0.1,
        n_train=10,
    )


@pytest.mark.parametrize(("names", "size"), [(CIFAR_NAMES, 32), (CIFAR_NAMES, 8), (tuple("0123456789"), 8)])
def test_test_image_captions_fit_their_column_and_images_are_large(names, size):
    lab = RegressionLab(**TINY)
    r = _fake_result(names, size=size)
    lab._draw_result(r)
    fig = lab.grid_fig
    canvas_w = np.asarray(fig.data[0].z).shape[1]
    scale = _plot_area(fig)[0] / canvas_w  # screen px per image pixel
    assert size * scale >= 64  # each image at least 64 px wide on screen
    notes = fig.layout.annotations
    assert len(notes) == 20
    xs = sorted({a.x for a in notes})
    column_px = (xs[1] - xs[0]) * scale
    for a in notes:
        lines = a.text.split("<br>")
        assert len(lines) == 2 and lines[0].startswith("pred ") and lines[1].startswith("true ")
        assert a.font.size >= 12
        # a caption fits its column: glyphs average under 0.6 em (0.55 measured in Chromium)
        assert max(len(t) for t in lines) * 0.6 * a.font.size <= column_px - 8
    right = {a.font.color for a in notes if a.text.split("<br>")[0][5:] == a.text.split("<br>")[1][5:]}
    wrong = {a.font.color for a in notes} - right
    assert len(right) == 1 and len(wrong) == 1  # one colour for right, another for wrong
    hover = fig.data[1]
    assert len(hover.hovertext) == 20 and "predicted" in hover.hovertext[0] and "true" in hover.hovertext[0]
    assert fig.layout.width <= 700  # beside the 400 px confusion matrix in a 1280 px window


# -- the downsample control ----------------------------------------------------------------------------
def test_control_descriptions_are_not_cut():
    lab = RegressionLab(**TINY)
    for w in (lab.downsample, lab.n_per_class, lab.n_test, lab.dataset, lab.ridge):
        assert w.style.description_width == "initial", w.description


OTHER = next(name for name in DATASETS if name != "digits")  # whatever the data module calls CIFAR-10


@pytest.fixture
def cifar_like(monkeypatch):
    """A 32x32 RGB data set under a non-digits name, with the view offering whatever names it is given."""
    import cntk_core.data
    import cntk_widgets.regression_view as view

    rng = np.random.default_rng(1)
    fake = Dataset(
        x_train=rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8),
        y_train=np.arange(30) % 10,
        x_test=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8),
        y_test=np.arange(20) % 10,
        class_names=CIFAR_NAMES,
        name=OTHER,
        pixel_scale=255.0,
    )
    real = cntk_core.data.load_dataset
    monkeypatch.setattr(cntk_core.data, "load_dataset", lambda name, **kw: fake if name == OTHER else real(name, **kw))
    monkeypatch.setattr(view, "available_datasets", lambda: ["digits", OTHER])  # a list, any names
    return OTHER


def test_downsample_menu_lists_each_image_size_once(cifar_like):
    lab = RegressionLab(dataset=cifar_like, downsample=4, **TINY)
    labels = [label for label, _ in lab.downsample.options]
    sizes = [label.split(": ")[1] for label in labels]
    assert len(sizes) == len(set(sizes)), labels  # 7 and 8 both gave "4x4 px"
    assert dict(lab.downsample.options) == {
        "1: 32x32 px": 1,
        "2: 16x16 px": 2,
        "3: 10x10 px": 3,
        "4: 8x8 px": 4,
        "5: 6x6 px": 5,
        "6: 5x5 px": 6,
        "8: 4x4 px": 8,  # of the factors giving 4x4, the one that drops no edge pixels
    }
    assert lab.downsample.label == "4: 8x8 px"
    lab.model.set(downsample=7)  # set from code: listed, and its label says how it differs from 8
    assert lab.downsample.value == 7 and lab.downsample.label == "7: 4x4 px (as 8, crops 4 px)"
    assert len({label for label, _ in lab.downsample.options}) == len(lab.downsample.options)
    lab.dataset.value = "digits"
    assert [label for label, _ in lab.downsample.options] == ["1: 8x8 px", "2: 4x4 px"]


def test_the_view_takes_the_data_set_names_it_is_given(cifar_like):
    lab = RegressionLab(**TINY)
    assert lab.dataset.options == ("digits", cifar_like)
    lab.dataset.value = cifar_like
    lab.downsample.value = 8
    lab.run()
    r = lab.model.result
    assert lab.error.value == "" and r.settings.dataset == cifar_like and r.test_images.shape[1:] == (4, 4, 3)
    assert f"{cifar_like} 4x4 px" in lab.accuracy.value and lab.grid_fig.layout.annotations[0].text.startswith("pred ")
    _assert_controls_show(lab, r)


def test_downsample_is_refused_below_four_pixels_and_shown():
    with pytest.raises(ValueError, match="downsample=4 would shrink the 8x8 digits images"):  # says why
        RegressionLab(downsample=4, **TINY)
    lab = RegressionLab(**TINY)
    lab.model.set(downsample=4)
    lab.run()
    assert "downsample=4" in lab.error.value and "use downsample &lt;= 2" in lab.error.value
    lab.model.set(downsample=2)
    assert lab.downsample.value == 2 and "4x4 px" in lab.downsample.label
    lab.run()
    assert "digits 4x4 px" in lab.accuracy.value and "4px" in lab.history_fig.data[0].name


@pytest.mark.skipif(not HAS_CIFAR, reason="CIFAR-10 subset files not found")
def test_each_data_set_keeps_its_own_downsample():
    lab = RegressionLab(dataset="cifar10-subset", downsample=4, **TINY)
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


# -- sweeps: buttons, plans, stop, progress ---------------------------------------------------------------
def test_sweep_depth_button_skips_depths_the_architecture_forbids():
    lab = RegressionLab(sweep_depths=(2, 3, 4), **TINY)
    lab.picker.fix_first.value = True
    lab.picker.fix_last.value = True
    lab.sweep_depth_button.click()
    assert [h["depth"] for h in lab.model.history] == [3, 4]
    assert "sweep skips depth 2" in lab.error.value and "cntk-note" in lab.error.value
    with raises_param("fix", match="^sweep: depth 2"):  # names the sweep's depth it cannot run
        lab.model.sweep(depths=[2, 3])


def test_sweep_plans_and_the_grid_size_are_validated_in_the_constructor():
    with pytest.raises(ValueError, match="^sweep_depths: depth must be between 2 and 21"):  # names the limits
        RegressionLab(sweep_depths=(3, 30), **TINY)
    with raises_param("sweep_sizes"):
        RegressionLab(sweep_sizes=(0, 2), **TINY)
    with pytest.raises(ValueError, match="^sweep_depths "):  # empty
        RegressionLab(sweep_depths=(), **TINY)
    with raises_param("n_grid"):
        RegressionLab(n_grid=-1, **TINY)


def test_a_refused_button_action_shows_in_the_error_box():
    lab = RegressionLab(**TINY)
    lab.model.close()
    lab.run_button.click()  # disabled in a browser; clicked from code it must still say why nothing happens
    assert "RuntimeError" in lab.error.value and "closed" in lab.error.value
    assert lab.run_button.disabled and lab.sweep_depth_button.disabled


def test_sweep_progress_bar_is_not_green_before_the_end():
    lab = RegressionLab(**TINY)
    styles = []
    lab.model.on_change(lambda event, m: styles.append(lab.progress.bar_style) if event == "result" else None)
    lab.model.sweep(depths=[2, 3, 4])
    assert styles == ["info", "info", "success"]


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


# -- what the error box says -----------------------------------------------------------------------------
def test_regression_lab_errors_surface():
    lab = RegressionLab(backend=BACKEND, synchronous=True)
    lab.n_per_class.value = 5
    assert lab.model.settings.n_per_class == 5
    with raises_param("dataset"):
        lab.model.set(dataset="mnist")
    lab.model.set(n_per_class=100000)
    lab.run()
    assert "ValueError" in lab.error.value and "fewer than n_per_class" in lab.error.value


def test_missing_cifar_subset_raises_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("CNTK_CIFAR10_SUBSET", str(tmp_path / "nonexistent"))
    with pytest.raises(FileNotFoundError, match="CNTK_CIFAR10_SUBSET"):
        RegressionLab(dataset="cifar10-subset", **TINY)
    lab = RegressionLab(**TINY)
    lab.model.set(dataset="cifar10-subset")  # from code: the controls follow, the error box says why it cannot run
    assert lab.dataset.value == "cifar10-subset" and "CNTK_CIFAR10_SUBSET" in lab.error.value
    lab.run()
    assert "FileNotFoundError" in lab.error.value and lab.model.result is None


# -- the later kernels and the preprocessing ----------------------------------------------------------------
def test_preprocessing_controls_drive_the_settings_and_the_result_names_them():
    lab = RegressionLab(**TINY)
    lab.use_zca.value = True
    lab.zca.value = 0.5
    lab.flip_augment.value = True
    lab.patches.value = 16
    lab.patch_size.value = 3
    s = lab.model.settings
    assert (s.zca, s.flip_augment, s.patches, s.patch_size) == (pytest.approx(0.5), True, 16, 3)
    lab.picker.model.set(readout="lap", lap_c=1, flip=True)
    lab.run()
    r = lab.model.result
    assert lab.error.value == "" and r.n_train == 20
    text = lab.accuracy.value
    assert "CNTK-LAP1-3+flip" in text and "standardised, ZCA eps 0.5, flip-augmented, 16 random 3x3 patches" in text
    assert "20 training images (10 and their mirrors)" in text
    _assert_controls_show(lab, r)
    lab.use_zca.value = False
    assert lab.model.settings.zca is None and "ZCA None (shown: 0.5)" in lab.accuracy.value
    lab.model.set(zca=0.02, patches=24)  # from code: the controls follow (a menu entry for 24 patches)
    assert lab.use_zca.value and lab.zca.value == pytest.approx(0.02) and lab.patches.value == 24
    lab.model.set(zca=0.0)  # plain ZCA: on, the log slider keeps a value it can show
    assert lab.use_zca.value and lab.zca.value > 0


def test_history_lines_keep_the_later_kernels_and_preprocessing_apart():
    lab = RegressionLab(**TINY, ridge=1e-3)  # 10 training images, some kernels nearly singular
    base_arch = dict(preset="paper", depth=3, readout="gap", padding="zero", flip=False)
    base_settings = dict(zca=None, flip_augment=False, patches=0)
    runs = [  # each differs from the paper's GAP-3 on standardised digits in one thing
        (dict(), dict()),
        (dict(readout="lap", lap_c=1), dict()),
        (dict(readout="lap", lap_c=2), dict()),
        (dict(padding="circular"), dict()),
        (dict(flip=True), dict()),
        (dict(preset="myrtle-5", depth=5), dict()),
        (dict(), dict(zca=0.1)),
        (dict(), dict(flip_augment=True)),
        (dict(), dict(patches=8)),
    ]
    for arch, settings in runs:
        lab.picker.model.set(**{**base_arch, **arch})
        lab.model.set(**{**base_settings, **settings})
        lab.run()
        assert lab.error.value == "", lab.error.value
    names = [t.name for t in lab.history_fig.data]
    assert len(names) == len(runs) and len(set(names)) == len(runs)
    for part in ("CNTK-LAP1", "CNTK-LAP2", "circular", "+flip", "Myrtle-5", "ZCA 0.1", "flip-augmented", "8 patches"):
        assert sum(part in n for n in names) == 1, (part, names)


def test_a_net_with_pools_names_the_downsample_factors_that_work(cifar_like):
    lab = RegressionLab(dataset=cifar_like, downsample=3, **TINY)  # 32 -> 10 px
    lab.picker.preset.value = "myrtle-5"
    lab.run()
    assert "divisible by 4, got 10x10 px" in lab.error.value and "use downsample 1, 2, 4 or 8" in lab.error.value
    assert lab.model.result is None
    assert lab.model.notice is None  # pooled nets run on the fused staged engines: no per-layer warning
    lab.downsample.value = 4
    lab.run()
    assert lab.error.value == "" and lab.model.result.spec.title == "CNTK-Myrtle-5" and lab.model.notice is None
    lab.sweep_depth_button.click()  # a Myrtle net has its own depth: the button says so
    assert "fixed depth" in lab.error.value and len(lab.model.history) == 1
