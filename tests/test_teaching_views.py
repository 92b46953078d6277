"""The teaching views of issue 26 (ipywidgets, no browser): the training-dynamics widget's slider moves
the drawn markers and predictions and recomputes nothing; the learning-curve and
Table 2 models against independent computations with the 4-D oracle; the probe's pictures; and the
checks of notebook 06 (:func:`check_what_the_ntk_predicts`, also usable from tests/test_notebooks.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
from conftest import one_hot

pytest.importorskip("ipywidgets")

from cntk_core import Architecture  # noqa: E402
from cntk_core.testing import reference_arch_matrix  # noqa: E402
from cntk_widgets.dynamics_view import TrainingDynamicsLab, time_axis, time_label  # noqa: E402

SMALL = dict(n_per_class=2, n_test_per_class=1, n_times=24)
NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "06_what_the_ntk_predicts.ipynb"


def _picture(lab) -> dict:
    """What the dynamics picture shows: the markers at t (panel -> [(cx, cy)]), their time label, the
    drawn scores ``[rows, classes]``, the predicted class per row, and the residual path's points."""
    svg = lab.picture.value
    markers: dict = {}
    labels = set()
    for panel, label, cx, cy in re.findall(
        r"<circle class='cntk-at-t' data-panel='(\w+)' data-t='([^']+)' cx='([\d.-]+)' cy='([\d.-]+)'", svg
    ):
        markers.setdefault(panel, []).append((float(cx), float(cy)))
        labels.add(label)
    cells = re.findall(r"class='cntk-score' data-row='(\d+)' data-class='(\d+)' data-score='([-\d.]+)'", svg)
    rows = list(dict.fromkeys(int(r) for r, _, _ in cells))
    scores = np.array([float(v) for _, _, v in cells]).reshape(len(rows), -1)
    pred = [int(c) for c in re.findall(r"class='cntk-pred' data-row='\d+' data-class='(\d+)'", svg)]
    path = re.search(r"<path class='cntk-residual' d='M([^']+)'", svg).group(1)
    points = np.array([[float(v) for v in p.split(",")] for p in path.split("L")])
    return dict(markers=markers, labels=labels, rows=rows, scores=scores, pred=pred, residual=points)


# -- the training-dynamics widget ----------------------------------------------------------------------
def test_time_axis_and_labels():
    u, ticks, text = time_axis(np.array([1.0, 10.0, 250.0, 3000.0, np.inf]))
    assert np.allclose(u[:4], np.log10([1, 10, 250, 3000])) and u[4] > u[3]
    assert ticks[-1] == u[4] and text[-1] == "∞" and text[:4] == ["1", "10", "10²", "10³"]
    assert [time_label(t) for t in (1.0, 12587.0, np.inf)] == ["1", "12,587", "∞"]


def test_slider_moves_markers_and_predictions_without_recomputing(monkeypatch):
    import cntk_core

    calls = {"engine": 0, "eigh": 0}

    def counted(key, fn):
        def call(*a, **k):
            calls[key] += 1
            return fn(*a, **k)

        return call

    monkeypatch.setattr(cntk_core, "network_kernel", counted("engine", cntk_core.network_kernel))
    monkeypatch.setattr(scipy.linalg, "eigh", counted("eigh", scipy.linalg.eigh))
    lab = TrainingDynamicsLab(synchronous=True, disk_cache=False, label_noise=0.2, **SMALL)
    m, drawing = lab.model, lab.drawing
    r = m.result
    assert m.error is None and calls["eigh"] == 1
    assert len(lab.time.options) == len(r.times) and lab.time.options[-1][0] == "∞"
    assert lab.time.value == r.best == m.snapshot.index
    before = dict(calls)
    seen = set()
    u = time_axis(r.times)[0]
    for i in (0, 3, len(r.times) // 2, len(r.times) - 1):
        lab.time.value = i
        snap = m.snapshot
        assert snap.index == i
        shown = _picture(lab)
        assert shown["labels"] == {time_label(r.times[i])}
        (x1, y1), (x2, y2) = shown["markers"]["loss"]
        assert x1 == x2 == pytest.approx(float(drawing.px("loss", u[i])), abs=0.06)
        assert (y1, y2) == pytest.approx(
            [float(drawing.py("loss", v)) for v in (snap.state.train_loss, snap.state.test_loss)], abs=0.06
        )
        want = snap.state.test_scores[shown["rows"]]
        assert shown["rows"] == [int(np.argmax(r.data.y_test == c)) for c in range(10)]
        assert np.allclose(shown["scores"], want, atol=5e-5)
        assert shown["pred"] == list(want.argmax(axis=1))
        ys = drawing.py("residual", snap.residuals)
        assert np.allclose(shown["residual"][:, 1], ys, atol=0.06)
        assert f"t = {time_label(r.times[i])}" in lab.readout_line.value
        seen.add(shown["scores"].tobytes())
    assert len(seen) == 4, "the predictions did not change with the slider"
    assert calls == before, calls  # the slider recomputed nothing
    if r.early_stopping:
        assert "cntk-early-stop" in lab.picture.value
    # a control: the NNGP is computed once, its result drawn and the slider keeps its time
    lab.time.value = len(r.times) - 1
    lab.kind.value = "nngp"
    assert m.result.spec.kind == "nngp" and calls["eigh"] == 2
    assert "CNN-GP-GAP-3" in lab.status.value and np.isinf(m.snapshot.t)
    assert lab.time.value == len(m.result.times) - 1
    lab.kind.value = "ntk"  # back: from memory, no new decomposition
    assert calls["eigh"] == 2 and "from memory" in lab.status.value


def test_bad_control_value_shows_in_the_error_box():
    lab = TrainingDynamicsLab(synchronous=True, disk_cache=False, depth=2, **SMALL)
    lab.fix_first.value = True
    assert lab.model.spec.fix_first
    lab.fix_last.value = True  # depth 2 with both layers fixed has no trained layer: refused
    assert "no trained layer" in lab.error.value and not lab.model.spec.fix_last and not lab.fix_last.value


# -- learning curves and Table 2 --------------------------------------------------------------------------
def _oracle_accuracy(arch, kind, x_tr, y_tr, x_te, y_te, n_classes) -> float:
    K = reference_arch_matrix(x_tr, x_tr, arch, kind)
    K_te = reference_arch_matrix(x_te, x_tr, arch, kind)
    pred = (K_te @ np.linalg.solve(K, one_hot(y_tr, n_classes))).argmax(axis=1)
    return float(np.mean(pred == y_te))


def test_learning_curves_match_the_oracle_on_the_same_subsets():
    from cntk_core.regression import learning_curve_subsets
    from cntk_widgets.curves_view import LearningCurvesView, curves_summary
    from cntk_widgets.teaching_jobs import class_split

    split = class_split("digits", None, 2, classes=(0, 1, 7))
    kernels = {"GAP": (Architecture(3, "gap", True, True), "ntk"), "NNGP-V": (Architecture(3, "vanilla"), "nngp")}
    view = LearningCurvesView(split=split, sizes=(3, 6), n_draws=2, kernels=kernels, seed=5, synchronous=True)
    curves = view.model.result
    assert view.model.error is None and list(curves) == ["GAP", "NNGP-V"]
    subsets = learning_curve_subsets(split.y_train, (3, 6), 2, 5)
    for name, (arch, kind) in kernels.items():
        for i, row in enumerate(subsets):
            for j, idx in enumerate(row):
                want = _oracle_accuracy(
                    arch, kind, split.x_train[idx], split.y_train[idx], split.x_test, split.y_test, 3
                )
                assert curves[name].accuracies[i, j] == want
    chart = view.chart.value
    assert chart.count("<polyline") == 2 and chart.count("cntk-errorbar") == 4 and ">GAP</span>" in chart
    # the chart's points: y = top + (1 - accuracy) * plot height, one circle per size and kernel
    cy = [float(v) for v in re.findall(r"<circle cx='[\d.]+' cy='([\d.]+)'", chart)]
    want = [34 + (1 - curves[n].mean[i]) * (360 - 34 - 44) for n in kernels for i in range(2)]
    assert np.allclose(cy, want, atol=0.06)
    assert view.summary.value and "At 6 images" in curves_summary(curves)


def test_table2_view_matches_the_oracle():
    from cntk_widgets.table2_view import PAPER_CLAIM, Table2View
    from cntk_widgets.teaching_jobs import class_split

    split = class_split("digits", 3, 3, classes=(3, 8))
    view = Table2View(split=split, depths=(3,), readouts=("gap",), width=8, synchronous=True)
    result = view.model.result
    assert view.model.error is None and len(result.rows) == 1
    row = result.rows[0]
    arch = Architecture(3, "gap", True, True)  # the paper's CNTK-GAP recipe
    want = _oracle_accuracy(arch, "ntk", split.x_train, split.y_train, split.x_test, split.y_test, 2)
    assert row["exact_accuracy"] == want and row["fix_first"] and row["width"] == 8
    table = view.table.value
    assert "CNTK-GAP-3 fixed" in table and f"{100 * want:.1f} %" in table and PAPER_CLAIM[:40] in table
    assert re.search(r"exact kernel is (better|worse) here by \d+\.\d points|both kernels score the same", table)


def test_class_split_relabels_and_balances():
    from cntk_widgets.teaching_jobs import class_split

    s = class_split("digits", 4, 2, classes=(7, 2))
    assert s.class_names == ("7", "2")
    assert np.array_equal(np.bincount(s.y_train), [4, 4]) and np.array_equal(np.bincount(s.y_test), [2, 2])
    assert abs(s.x_train.mean()) < 1e-12  # standardised with the training images' statistics
    with pytest.raises(ValueError, match="classes"):
        class_split("digits", 4, 2, classes=(3,))


# -- the translation probe's pictures -------------------------------------------------------------------
def test_probe_view_draws_three_maps_and_the_findings():
    from cntk_widgets.lab_data import lab_images
    from cntk_widgets.probe_view import TranslationProbe

    data = lab_images("digits", 1)
    probe = TranslationProbe(data.x[:2], data.y[:2], data.class_names, window=2, synchronous=True)
    html = probe.pictures.value
    assert probe.model.error is None
    assert html.count("<figure") == 4  # the image and three heatmaps
    assert "CNTK-GAP-3-circ</b>: unchanged (k̂ ≥ 1 − 10⁻⁶) for every shift in the window" in html
    assert "CNTK-V-3-circ</b>: unchanged (k̂ ≥ 1 − 10⁻⁶) for no shift" in html
    probe.image.value = 1
    assert probe.model.result.index == 1 and f"image #1 (class {data.class_names[data.y[1]]})" in probe.pictures.value
    probe.padding.value = "zero"
    assert "CNTK-GAP-3</b>" in probe.pictures.value


# -- notebook 06 ------------------------------------------------------------------------------------------
def check_what_the_ntk_predicts(nb) -> None:
    """06: the four widgets displayed; t = inf is kernel regression and t = 0 predicts nothing; the modes
    need more steps the smaller their eigenvalue; the early-stopping line; GAP with circular padding
    invariant, vanilla not; learning curves as percentages; the Table 2 table with its verdict."""
    # tests/test_notebooks.py's readers of executed cells (imported here: it skips without nbformat)
    from test_notebooks import WIDGET, _cell, _printed, _shown

    for snippet in ("TrainingDynamicsLab(", "TranslationProbe(", "LearningCurvesView(", "Table2View("):
        assert _shown(_cell(nb, snippet), WIDGET), f"{snippet} is not displayed"
    run = _printed(_cell(nb, "kernel_regression(r.K_train"))
    assert re.search(r"^CNTK-GAP-3: \d+ training images, \d+ test images, \d+ training times", run, re.M), run
    assert "t = inf predictions equal kernel regression's: True" in run, run
    assert "t = 0 predictions are all zero: True" in run, run
    modes = re.findall(
        r"^mode +(\d+) \(eigenvalue (\S+) x the largest\): ([\d,]+) steps$", _printed(_cell(nb, "log1p")), re.M
    )
    assert len(modes) >= 4, modes
    steps = [int(s.replace(",", "")) for _, _, s in modes]
    eig = [float(e) for _, e, _ in modes]
    assert steps[0] == 1 and steps == sorted(steps) and steps[-1] > 10 * steps[1] and eig == sorted(eig, reverse=True)
    stop = _printed(_cell(nb, "early stopping helps here"))
    m = re.search(
        r"lowest test loss ([\d.]+) at t = ([\d,]+) steps .*at t = inf \(kernel regression\): test loss ([\d.]+)", stop
    )
    assert m and float(m.group(1)) <= float(m.group(3)), stop
    assert re.search(r"early stopping helps here: (True|False)$", stop, re.M), stop
    probe = dict(
        (name, (float(low), int(radius)))
        for name, low, radius in re.findall(
            r"^CNTK-(V|LAP\d+|GAP)-\d+-circ: lowest k̂ (\S+), invariant for shifts up to (\d+) px",
            _printed(_cell(nb, "p.invariance_radius")),
            re.M,
        )
    )
    assert probe["GAP"] == (1.0, 3) and probe["V"][0] < 0.99 and probe["V"][1] == 0, probe
    rows = re.findall(r"^ *(\d+) \|(.*)$", _printed(_cell(nb, "lc[names[0]].sizes")), re.M)
    assert [int(s) for s, _ in rows] == [10, 20, 40], rows
    values = [float(v) for _, rest in rows for v in re.findall(r"(\d+\.\d) ±", rest)]
    assert len(values) == 9 and all(0 <= v <= 100 for v in values), rows
    table = re.findall(r"^(vanilla|gap) +3 +(\d+\.\d\d) +(\d+\.\d\d)", _printed(_cell(nb, "result.table()")), re.M)
    assert [t[0] for t in table] == ["vanilla", "gap"], table
    assert all(0 <= float(v) <= 100 for t in table for v in t[1:]), table


def test_notebook_06_runs_and_shows_its_results(tmp_path, monkeypatch):
    """Runs notebook 06 headless unless tests/test_notebooks.py already does (its CHECKS name it)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    import test_notebooks

    if NOTEBOOK.name in getattr(test_notebooks, "CHECKS", {}):
        pytest.skip("tests/test_notebooks.py runs notebook 06 with these checks")
    monkeypatch.delenv("CNTK_LAB_DATASET", raising=False)
    monkeypatch.delenv("CNTK_LAB_N_PER_CLASS", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    client.execute()
    check_what_the_ntk_predicts(nb)


def test_notebook_06_is_committed_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert not [c for c in nb.cells if c.cell_type == "code" and (c.outputs or c.execution_count)]
    text = "".join(c.source for c in nb.cells)
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert all(not link.startswith("http") for link in links), links  # points inside the repository only
    assert "docs/math.md" in text
