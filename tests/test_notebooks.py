"""Execute every tutorial notebook headlessly (nbclient), top to bottom, failing on any error.

Each notebook runs with cwd = notebooks/ and a per-cell timeout; new notebooks are picked up by the
glob. Outputs are never written back (the committed notebooks stay output-free). A notebook that
shows the comparison's findings must show every one of them holding (✓) on the data it ran with.
Notebook 3 needs CIFAR-10: the exact subset when this machine has it, else a small fake CIFAR-10
folder made here (what a user's own extracted copy would be).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
CELL_TIMEOUT = int(os.environ.get("CNTK_NOTEBOOK_CELL_TIMEOUT", 300))


def test_at_least_three_notebooks():
    names = [p.name for p in NOTEBOOKS]
    assert len(NOTEBOOKS) >= 3, f"expected at least 3 tutorial notebooks in {NOTEBOOKS_DIR}, found {names}"


def test_committed_notebooks_have_no_outputs():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
        assert not dirty, f"{path.name}: cells {dirty} carry outputs; clear them before committing"


def _cifar10_for(monkeypatch, tmp_path) -> None:
    from cntk_core.data import available_datasets

    if "cifar10-subset" in available_datasets():
        return
    from cifar_fake import make_fake_cifar10

    fake = make_fake_cifar10(tmp_path / "tarball", n_per_batch=40, n_test=200, balanced=True)
    monkeypatch.setenv("CNTK_CIFAR10", str(fake.extract(tmp_path / "cifar10")))
    monkeypatch.setenv("CNTK_LAB_DATASET", "cifar10")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, monkeypatch, tmp_path):
    monkeypatch.delenv("CNTK_LAB_DATASET", raising=False)  # each notebook's own default
    if path.name.startswith("03_"):
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
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"
    ]
    assert not errors
    shown = "".join(str(o.get("data", {}).get("text/html", "")) for c in nb.cells for o in c.get("outputs", []))
    assert "✗ not here" not in shown, f"{path.name} states a finding that does not hold on its data"
