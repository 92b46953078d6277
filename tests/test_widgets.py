"""Model-level tests of the lab's widgets (no browser, no kernel): picker -> explorer -> figures,
stale computations, cache, errors in the view, and the regression lab against a direct computation."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("plotly")
pytest.importorskip("anywidget")

from reference import reference_matrix  # noqa: E402  (tests/ is on sys.path via conftest)

import cntk_core  # noqa: E402
from cntk_widgets import (  # noqa: E402
    ArchitectureModel,
    ArchitecturePicker,
    KernelExplorer,
    NetworkSpec,
    RegressionLab,
)

BACKEND = "numpy"  # per-layer engine: no JIT, fast on these tiny images


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((9, 5, 5, 2))
    y = np.array([2, 0, 1, 2, 0, 1, 1, 0, 2])
    return x, y


def _normalise(k):
    d = np.sqrt(np.diag(k))
    return k / d[:, None] / d[None, :]


def _direct(x, y, **kw):
    """Class-sorted normalised Gram straight from cntk_core.kernel_matrix."""
    order = np.argsort(y, kind="stable")
    return _normalise(cntk_core.kernel_matrix(x[order], backend=BACKEND, **kw))


def test_picker_drives_explorer_matrix_and_spectrum(images):
    x, y = images
    ex = KernelExplorer(x, y, backend=BACKEND, synchronous=True)
    assert list(ex.model.labels) == sorted(y)
    np.testing.assert_allclose(ex.matrix, _direct(x, y, depth=3, readout="gap"), rtol=1e-10)

    ex.picker.depth.value = 5
    ex.picker.readout.value = "vanilla"
    ex.picker.fix_first.value = True
    expected = _direct(x, y, depth=5, readout="vanilla", fix_first=True)
    np.testing.assert_allclose(ex.matrix, expected, rtol=1e-10)
    eig = np.sort(np.linalg.eigvalsh(expected))[::-1]
    np.testing.assert_allclose(ex.eigenvalues, np.clip(eig, 1e-12, None), rtol=1e-8, atol=1e-12)
    assert "CNTK-V-5" in ex.heatmap.layout.title.text
    assert "[Conv 3x3 (fixed), ReLU]" in ex.picker.text.value

    ex.picker.kind.value = "nngp"
    np.testing.assert_allclose(ex.matrix, _direct(x, y, depth=5, readout="vanilla", kind="nngp"), rtol=1e-10)


def test_explorer_matches_independent_reference(images):
    x, y = images
    x, y = x[:4], y[:4]
    ex = KernelExplorer(x, y, backend=BACKEND, synchronous=True)
    ex.picker.model.set(depth=3, readout="gap", fix_first=True, fix_last=True)
    order = np.argsort(y, kind="stable")
    ref = reference_matrix(x[order], x[order], 3, "gap", True, True)
    np.testing.assert_allclose(ex.matrix, _normalise(ref), rtol=1e-9)
    np.testing.assert_allclose(ex.model.result.raw, ref, rtol=1e-9)


def test_pooling_option_runs_per_layer_network(images):
    x, y = images
    x8 = np.random.default_rng(1).standard_normal((5, 4, 4, 1))
    ex = KernelExplorer(x8, np.arange(5) % 2, backend=BACKEND, synchronous=True)
    ex.picker.pool.value = True
    net = ex.picker.network
    assert isinstance(net[2], cntk_core.AvgPool) and net.canonical() is None
    order = np.argsort(np.arange(5) % 2, kind="stable")
    direct = cntk_core.network_kernel(net, x8[order], kind="ntk", backend=BACKEND)
    np.testing.assert_allclose(ex.matrix, _normalise(direct), rtol=1e-10)


def test_cache_hits_and_lru(images):
    x, y = images
    calls = []

    def kernel_fn(spec, imgs, ctx):
        calls.append(spec)
        return cntk_core.network_kernel(spec.network(), imgs, kind=spec.kind, backend=BACKEND)

    ex = KernelExplorer(x, y, synchronous=True, kernel_fn=kernel_fn)
    ex.model.cache_size = 2
    ex.picker.depth.value = 4
    first4 = ex.matrix.copy()
    ex.picker.depth.value = 3  # cached
    ex.picker.depth.value = 4  # cached
    assert [s.depth for s in calls] == [3, 4]
    assert ex.model.cache_hits == 2 and "cached" in ex.status.value
    np.testing.assert_array_equal(ex.matrix, first4)
    ex.picker.depth.value = 5  # evicts depth 3 (least recently used)
    ex.picker.depth.value = 3
    assert [s.depth for s in calls] == [3, 4, 5, 3]


def test_stale_computation_is_superseded(images):
    x, y = images
    release, started = threading.Event(), threading.Event()
    seen = []

    def kernel_fn(spec, imgs, ctx):
        seen.append(spec.depth)
        if spec.depth == 3:  # the first computation blocks until the test lets it go
            started.set()
            assert release.wait(10)
            return np.full((len(imgs), len(imgs)), 1.0) + np.eye(len(imgs))  # would be visible if published
        return cntk_core.network_kernel(spec.network(), imgs, kind=spec.kind, backend=BACKEND)

    ex = KernelExplorer(x, y, kernel_fn=kernel_fn)  # asynchronous: a worker thread
    assert started.wait(10)
    assert ex.model.busy
    ex.picker.depth.value = 6  # supersedes the running depth-3 job
    release.set()
    ex.wait(30)
    assert seen == [3, 6]
    assert ex.model.result.spec.depth == 6 and ex.model.dropped == 1
    np.testing.assert_allclose(ex.matrix, _direct(x, y, depth=6, readout="gap"), rtol=1e-10)
    assert ex.progress.value == 1.0 and ex.error.value == ""
    ex.model.close()


def test_chunked_job_is_cancelled_between_chunks(images):
    """A superseded engine computation stops at the next row block instead of running to the end."""
    x, y = images
    blocks = []
    gate = threading.Event()
    ex = KernelExplorer(x, y, backend=BACKEND, kernel_fn=None)
    ex.wait(30)
    orig = cntk_core.network_kernel

    def slow(*args, **kw):
        blocks.append(1)
        gate.wait(10)
        return orig(*args, **kw)

    cntk_core.network_kernel = slow
    try:
        ex.picker.depth.value = 7
        while not blocks:
            threading.Event().wait(0.01)
        ex.picker.depth.value = 3  # cache hit, published immediately; the depth-7 job is stale
        gate.set()
        ex.wait(30)
    finally:
        cntk_core.network_kernel = orig
    assert ex.model.result.spec.depth == 3
    assert len(blocks) == 1, "the stale job kept computing after being superseded"
    assert NetworkSpec(depth=7) not in ex.model.cache
    ex.model.close()


def test_errors_surface_in_the_widget(images):
    x, y = images

    def boom(spec, imgs, ctx):
        if spec.depth == 9:
            raise RuntimeError("engine exploded")
        return cntk_core.network_kernel(spec.network(), imgs, kind=spec.kind, backend=BACKEND)

    ex = KernelExplorer(x, y, synchronous=True, kernel_fn=boom)
    ex.picker.depth.value = 9
    assert "RuntimeError: engine exploded" in ex.error.value and "cntk-error" in ex.error.value
    assert ex.progress.bar_style == "danger"
    ex.picker.depth.value = 4  # recovers
    assert ex.error.value == "" and ex.model.result.spec.depth == 4

    # an engine ValueError: AvgPool(2) cannot run on 1x1 feature maps
    tiny = KernelExplorer(np.ones((3, 1, 1, 1)), [0, 1, 1], backend=BACKEND, synchronous=True)
    tiny.picker.pool.value = True
    assert "AvgPool" in tiny.error.value and "ValueError" in tiny.error.value

    # an invalid setting on the picker: shown, model unchanged
    picker = ArchitecturePicker(ArchitectureModel(depth=3))
    picker._from_widget("depth", 99)
    assert "depth must be between 2 and 21" in picker.error.value
    assert picker.spec.depth == 3
    with pytest.raises(ValueError, match="readout"):
        NetworkSpec(readout="max")


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(TypeError, match="integer images"):
        KernelExplorer(np.zeros((3, 4, 4, 1), dtype=np.uint8), [0, 1, 2], synchronous=True)
    with pytest.raises(ValueError, match="labels"):
        KernelExplorer(np.zeros((3, 4, 4, 1)), [0, 1], synchronous=True)


def test_regression_lab_accuracy_equals_direct_computation():
    import scipy.linalg

    from cntk_core.data import balanced_subset, load_dataset, preprocess

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
    assert preprocess  # imported API exists (the lab uses it)


def test_regression_lab_errors_surface():
    lab = RegressionLab(backend=BACKEND, synchronous=True)
    lab.n_per_class.value = 5
    assert lab.model.settings.n_per_class == 5
    with pytest.raises(ValueError, match="dataset"):
        lab.model.set(dataset="mnist")
    lab.model.set(n_per_class=100000)
    lab.run()
    assert "ValueError" in lab.error.value and "fewer than n_per_class" in lab.error.value


def test_figure_state_is_synced_for_late_views(images):
    """Voila renders widgets after the notebook ran: the synced state must hold the latest figure."""
    x, y = images
    ex = KernelExplorer(x, y, backend=BACKEND, synchronous=True)
    ex.picker.depth.value = 4
    np.testing.assert_allclose(np.asarray(ex.heatmap._widget_data[0]["z"]), ex.matrix)
    assert "CNTK-GAP-4" in ex.heatmap._widget_layout["title"]["text"]


def test_main_command_finds_notebooks(capsys):
    from cntk_widgets.__main__ import main, notebooks_dir

    assert (notebooks_dir() / "02_cntk_explorer.ipynb").is_file()
    assert main(["--print-command", "--no-browser", "--port", "8899"]) == 0
    out = capsys.readouterr().out
    assert "jupyterlab 02_cntk_explorer.ipynb" in out and "--port=8899" in out and "--no-browser" in out
    assert main(["--print-command", "--voila"]) == 0
    assert "voila classroom.ipynb" in capsys.readouterr().out  # the student page
    assert main(["--print-command", "--voila", "--notebook", "02_cntk_explorer.ipynb"]) == 0
    assert "voila 02_cntk_explorer.ipynb" in capsys.readouterr().out
    assert main(["--print-command", "--notebook", "nope.ipynb"]) == 2


def test_one_pass_fills_the_cache_for_every_shallower_depth(images):
    """On the fused CPU engine depth d's pass reads out every depth < d: moving the slider down is free."""
    from cntk_widgets import KernelExplorerModel

    x, y = images
    arch = ArchitectureModel(depth=5, readout="gap", fix_first=True, fix_last=True)
    model = KernelExplorerModel(x, y, architecture=arch, backend="numba", synchronous=True)
    assert model.cache_misses == 1 and model.result.spec.depth == 5
    for depth in (4, 3):
        arch.set(depth=depth)
        assert model.result.cached and model.result.spec.depth == depth
        expected = _normalise(
            cntk_core.kernel_matrix(x[np.argsort(y, kind="stable")], depth=depth, readout="gap", fix=True)
        )
        np.testing.assert_allclose(model.result.normalized, expected, rtol=1e-12)
    assert model.cache_misses == 1 and model.cache_hits == 2
