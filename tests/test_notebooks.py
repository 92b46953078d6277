"""Execute every tutorial notebook headlessly (nbclient), top to bottom, and check what it shows.

Each notebook runs with cwd = notebooks/ and a per-cell timeout; new notebooks are picked up by the
glob and must come with checks of their own (``CHECKS``). nbclient fails the test on any cell error;
the checks then read the executed cells: the printed results (accuracies with their %, the errors of
finite nets, the store's tiles), the figures and the widgets each notebook displays. A notebook that
shows the comparison's findings must show every one of them holding (✓) on the data it ran with.
Outputs are never written back (the committed notebooks stay output-free). Notebook 3 needs
CIFAR-10: the exact subset when this machine has it, else a small fake CIFAR-10 folder made here
(what a user's own extracted copy would be).
"""

from __future__ import annotations

import ast
import math
import os
import re
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
CELL_TIMEOUT = int(os.environ.get("CNTK_NOTEBOOK_CELL_TIMEOUT", 300))
WIDGET = "application/vnd.jupyter.widget-view+json"
PLOTLY = "application/vnd.plotly.v1+json"


def test_at_least_three_notebooks():
    names = [p.name for p in NOTEBOOKS]
    assert len(NOTEBOOKS) >= 3, f"expected at least 3 tutorial notebooks in {NOTEBOOKS_DIR}, found {names}"


def test_committed_notebooks_have_no_outputs():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
        assert not dirty, f"{path.name}: cells {dirty} carry outputs; clear them before committing"


# -- reading an executed notebook ---------------------------------------------------------------------
def _cell(nb, snippet: str):
    """The one code cell whose source contains ``snippet``."""
    cells = [c for c in nb.cells if c.cell_type == "code" and snippet in c.source]
    assert len(cells) == 1, f"{len(cells)} code cells contain {snippet!r}"
    return cells[0]


def _printed(cell) -> str:
    """What the cell printed to stdout."""
    return "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream" and o.name == "stdout")


def _shown(cell, mime: str) -> list:
    """The ``mime`` data of every result the cell displayed."""
    return [o["data"][mime] for o in cell.outputs if mime in o.get("data", {})]


def _html(cell) -> str:
    return "".join(map(str, _shown(cell, "text/html")))


def _rows(text: str, columns: int) -> list[list[str]]:
    """The table rows of ``text`` that have ``columns`` whitespace- or ``|``-separated numbers."""
    number = r"\s*\|?\s*(-?\d+(?:\.\d+)?%?)"
    return [list(m.groups()) for m in re.finditer("^" + number * columns + r"\s*$", text, re.M)]


def _plotly_traces(nb) -> list[int]:
    """The number of traces of every plotly figure the notebook displayed, in order."""
    return [len(fig["data"]) for c in nb.cells if c.cell_type == "code" for fig in _shown(c, PLOTLY)]


# -- what each notebook must show ----------------------------------------------------------------------
def _check_ntk_to_cntk(nb):
    """01: the CNN on 1x1 images is the FC net to rounding; finite nets approach the exact kernels."""
    diffs = dict(
        re.findall(
            r"^(ntk|nngp): max relative difference (\S+)  \(rounding\)$", _printed(_cell(nb, "fc_relu_ntk(x")), re.M
        )
    )
    assert sorted(diffs) == ["nngp", "ntk"] and all(float(d) < 1e-8 for d in diffs.values()), diffs
    errors = _rows(_printed(_cell(nb, "model.ntk_errors()")), 3)  # width, NTK error, NNGP error
    assert len(errors) >= 2, errors
    widths = [int(w) for w, _, _ in errors]
    assert widths == sorted(widths) and all(0 < float(e) < math.inf for row in errors for e in row[1:]), errors
    assert float(errors[-1][1]) < float(errors[0][1]), f"the widest net's NTK is not closer: {errors}"
    training = _printed(_cell(nb, "model.training()"))
    assert re.match(r"eta = \d\S*, \d+ steps\n", training), training
    trained = _rows(training, 3)  # width, prediction error against kernel regression, NTK change
    assert [int(w) for w, _, _ in trained] == widths, trained
    assert float(trained[-1][2]) < float(trained[0][2]), f"the widest net's NTK moved more: {trained}"
    assert len(_plotly_traces(nb)) >= 3 and min(_plotly_traces(nb)) >= 3, _plotly_traces(nb)
    assert _shown(_cell(nb, "finite_width_view(model)"), WIDGET), "the finite-width widget is not displayed"


def _check_explorer(nb):
    """02: the explorer widget, its first and deeper pictures, six kernels compared, findings that hold."""
    assert re.search(r"\d+ .*training images \(\d+ per class\)", _printed(_cell(nb, "data.describe()")))
    assert _shown(_cell(nb, "KernelExplorer("), WIDGET), "the explorer widget is not displayed"
    first = _printed(_cell(nb, "first.spec.describe()"))
    assert first.startswith("CNTK-") and "[Conv 3x3, ReLU] x" in first, first
    deeper = re.fullmatch(
        r"CNTK-\S+-6: top eigenvalues \[([^\]]+)\], \w+\n", _printed(_cell(nb, "picker.depth.value = 6"))
    )
    assert deeper, _printed(_cell(nb, "picker.depth.value = 6"))
    top = [float(v) for v in deeper.group(1).split()]
    assert len(top) == 3 and top == sorted(top, reverse=True) and top[-1] > 0, top
    heatmaps = _html(_cell(nb, "heatmaps_html()"))
    kernels = re.findall(r"<figcaption[^>]*>([^<]+)<", heatmaps)
    assert len(kernels) >= 2 and heatmaps.count("data:image/png;base64,") >= len(kernels), kernels
    spectra = _html(_cell(nb, "spectra_html()"))
    assert "<svg" in spectra and spectra.count("<polyline") == len(kernels), "not one spectrum per kernel"
    findings = _html(_cell(nb, "findings_html()"))
    assert findings.count("<li>") >= 1 and findings.count("✓") == findings.count("<li>"), findings


def _check_cifar10_regression(nb):
    """03: one experiment's accuracy on the notebook's test images, then CNTK-V against CNTK-GAP by depth."""
    setup = _cell(nb, "N_TEST_PER_CLASS =").source
    n_train, n_test = (
        int(re.search(rf"^{name} = (\d+)", setup, re.M).group(1)) for name in ("N_PER_CLASS", "N_TEST_PER_CLASS")
    )
    depths = ast.literal_eval(re.search(r"^DEPTHS = (\[[^\]]*\])", setup, re.M).group(1))
    assert _shown(_cell(nb, "RegressionLab("), WIDGET), "the regression lab is not displayed"
    one = re.fullmatch(
        r"CNTK-V-3: (\d+\.\d) % on (\d+) test images \((\d+) training images\)\n", _printed(_cell(nb, "lab.run()"))
    )
    assert one, _printed(_cell(nb, "lab.run()"))
    assert 0 <= float(one.group(1)) <= 100 and (int(one.group(2)), int(one.group(3))) == (10 * n_test, 10 * n_train)
    sweep = _printed(_cell(nb, "readout_gap_summary"))
    rows = _rows(sweep, 3)  # depth | CNTK-V % | CNTK-GAP %
    assert [int(d) for d, _, _ in rows] == depths, sweep
    assert all(a.endswith("%") and 0 <= float(a[:-1]) <= 100 for row in rows for a in row[1:]), rows
    assert "CNTK-GAP" in sweep.split("\n\n")[-1] and "CNTK-V" in sweep.split("\n\n")[-1], sweep  # the summary


def _check_scaling_up(nb):
    """04: an interrupted store job, resumed to every tile once, identical to kernel_matrix; another job refused."""
    assert "Client" in _html(_cell(nb, "LocalCluster(")), "no Dask client shown"
    stopped = _printed(_cell(nb, "stop_after_4"))
    done, total = map(
        int, re.search(r"interrupted: simulated Ctrl-C (\d+) of (\d+) tiles are on disk", stopped).groups()
    )
    missing = ast.literal_eval(re.search(r"^missing tiles: (\[.*\])$", stopped, re.M).group(1))
    # tiles in flight at the Ctrl-C may still land after the message: "done" is a lower bound from then on
    assert 0 < done < total and 0 < len(missing) <= total - done and "re-run to resume" in stopped, stopped
    resumed = _printed(_cell(nb, "store.compute_counts()"))
    report = dict(re.findall(r"(tiles_\w+)=(\d+)", resumed))
    assert int(report["tiles_total"]) == total and done <= int(report["tiles_already_done"]) < total, report
    assert sum(int(report[k]) for k in ("tiles_already_done", "tiles_computed", "tiles_skipped")) == total, report
    counts = [list(map(int, row.split())) for row in re.findall(r"\[+([\d ]+)\]", resumed.split("per tile:")[1])]
    # every tile on or above the diagonal computed (once, unless one in flight at the Ctrl-C raced the resume)
    assert len(counts) > 1 and all((n >= 1) == (j >= i) for i, row in enumerate(counts) for j, n in enumerate(row)), (
        counts
    )
    loaded = _printed(_cell(nb, "store.as_dask()"))
    assert re.search(r"identical to kernel_matrix: True$", loaded, re.M), loaded
    a, b = map(float, re.search(r"trace via dask: (\S+) vs (\S+)", loaded).groups())
    assert a == pytest.approx(b, rel=1e-12) and a > 0, loaded
    refused = _printed(_cell(nb, "StoreMismatchError"))
    assert refused.startswith("refused: the Gram store") and "belongs to another job" in refused, refused
    assert "network.depth: store 3 vs requested 4" in refused, refused


def _check_classroom(nb):
    """classroom: the images described, the explorer and the comparison panel displayed."""
    first = _cell(nb, "classroom_explorer(data)")
    assert re.search(r"<b>Images:</b> \d+ .*images", _html(first)), _html(first)
    assert _shown(first, WIDGET), "the explorer is not displayed"
    assert _shown(_cell(nb, "classroom_comparison("), WIDGET), "the comparison panel is not displayed"


def _check_kernel_zoo(nb):
    """05: one row per kernel with accuracy in 0-100 % and a time, the figure, and every comparison
    stated with its own band (a verdict that agrees with the printed difference and band)."""
    printed = _printed(_cell(nb, "compare_kernels(x_train"))
    rows = re.findall(r"^(\S+)\s+([\d.]+) ± ([\d.]+) %\s+([\d.]+) s$", printed, re.M)
    assert len(rows) == 7, printed
    assert all(0 <= float(a) <= 100 and float(s) > 0 for _, a, _, s in rows), rows
    assert {"CNN-GP-Myrtle-5", "CNN-GP-LAP1-4+flip"} <= {r[0] for r in rows}, rows
    assert _shown(_cell(nb, "make_subplots("), PLOTLY), "the accuracy/time figure is not displayed"
    verdicts = _printed(_cell(nb, "def compare("))
    found = re.findall(r": ([+-][\d.]+) points \(± ([\d.]+)\): (higher|lower|within noise)$", verdicts, re.M)
    assert len(found) == 6, verdicts
    for diff, band, verdict in found:
        d, b = float(diff), float(band)
        expected = "higher" if d > b else "lower" if d < -b else "within noise"
        assert verdict == expected or abs(abs(d) - b) < 0.11, (diff, band, verdict)  # rounding at the edge
    assert re.search(r"cost relative to vanilla: LAP1 \d+x, LAP2 \d+x, GAP \d+x, flip [\d.]+x", verdicts), verdicts


def _check_what_the_ntk_predicts(nb):
    """06: the checks live beside the widgets' tests (tests/test_teaching_views.py)."""
    from test_teaching_views import check_what_the_ntk_predicts

    check_what_the_ntk_predicts(nb)


CHECKS = {
    "01_from_ntk_to_cntk.ipynb": _check_ntk_to_cntk,
    "02_cntk_explorer.ipynb": _check_explorer,
    "03_cifar10_regression.ipynb": _check_cifar10_regression,
    "04_scaling_up.ipynb": _check_scaling_up,
    "05_kernel_zoo.ipynb": _check_kernel_zoo,
    "06_what_the_ntk_predicts.ipynb": _check_what_the_ntk_predicts,
    "classroom.ipynb": _check_classroom,
}


def _cifar10_for(monkeypatch, tmp_path) -> None:
    from cntk_core.data import available_datasets

    if "cifar10-subset" in available_datasets():
        return
    from cifar_fake import make_fake_cifar10

    fake = make_fake_cifar10(tmp_path / "tarball", n_per_batch=40, n_test=200, balanced=True)
    monkeypatch.setenv("CNTK_CIFAR10", str(fake.extract(tmp_path / "cifar10")))
    monkeypatch.setenv("CNTK_LAB_DATASET", "cifar10")


#: notebooks that a browser test runs and checks (JupyterLab: CHECKS on the notebook JupyterLab saves; Voila:
#: what the classroom page shows, CHECKS' items among them); run headless here only when that test is not in
#: the session or cannot run
RUN_IN_BROWSER = {
    "01_from_ntk_to_cntk.ipynb": "tests/test_browser.py::test_jupyterlab_notebook_01",
    "02_cntk_explorer.ipynb": "tests/test_browser.py::test_jupyterlab_notebook_02",
    "03_cifar10_regression.ipynb": "tests/test_browser.py::test_jupyterlab_notebook_03",
    "classroom.ipynb": "tests/test_browser.py::test_voila_classroom",
}


def check_executed_notebook(name: str, nb) -> None:
    """What an executed ``nb`` (notebook ``name``) must show: no finding stated that does not hold, and
    the notebook's own CHECKS."""
    shown = "".join(str(o.get("data", {}).get("text/html", "")) for c in nb.cells for o in c.get("outputs", []))
    assert "✗ not here" not in shown, f"{name} states a finding that does not hold on its data"
    CHECKS[name](nb)


def _checked_in_browser(request, name: str) -> str | None:
    """The browser test that runs notebook ``name`` and checks what it shows, if it runs in this session."""
    from browser_support import browser_problem

    nodeid = RUN_IN_BROWSER.get(name)
    collected = {item.nodeid for item in request.session.items}
    if nodeid in collected and browser_problem() is None:
        return nodeid
    return None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_and_shows_its_results(path: Path, monkeypatch, tmp_path, request):
    assert path.name in CHECKS, f"{path.name}: add the checks of what it shows to CHECKS"
    browser_test = _checked_in_browser(request, path.name)
    if browser_test:
        pytest.skip(f"{browser_test} runs it in the browser and checks what it shows")
    monkeypatch.delenv("CNTK_LAB_DATASET", raising=False)  # each notebook's own default
    if path.name.startswith(("03_", "05_")):
        _cifar10_for(monkeypatch, tmp_path)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
        allow_errors=False,
    )
    t0 = time.perf_counter()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as exc:
        pytest.fail(f"{path.name} failed:\n{exc}", pytrace=False)
    print(f"{path.name}: {time.perf_counter() - t0:.1f} s")
    check_executed_notebook(path.name, nb)
