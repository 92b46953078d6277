"""``cntk-lab gram`` (cntk_core.cli_gram): the .npy it writes equals kernel_matrix, in memory or through
a Gram store; --out names checked before any compute; the options named in its errors; the RESULT
record after a resume or a repair; --no-verify; and Ctrl-C on a ``--scheduler local`` job."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import cli_result

import cntk_core
from cntk_core.cli import main

needs_store = pytest.mark.skipif(
    importlib.util.find_spec("zarr") is None or importlib.util.find_spec("dask") is None,
    reason="the Gram store needs zarr and dask",
)


def _digits_x(split: str, n: int) -> np.ndarray:
    """Independent preprocessing: /16, standardise with all digits training images (the CLI default)."""
    from cntk_core.data import load_dataset

    ds = load_dataset("digits")
    raw = ds.x_train.astype(np.float64) / 16.0
    mean, std = raw.mean(axis=(0, 1, 2)), raw.std(axis=(0, 1, 2))
    x = ds.x_train if split == "train" else ds.x_test
    return (x[:n] / 16.0 - mean) / std


def _forbid_compute(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("computed before checking --out")

    monkeypatch.setattr(cntk_core.gram, "kernel_matrix", boom)


# -- the matrix ------------------------------------------------------------------------------------------
def test_gram_writes_npy_equal_to_kernel_matrix(tmp_path, capsys):
    out = tmp_path / "K.npy"
    rc = main(["gram", "--n", "12", "--depth", "3", "--readout", "gap", "--fix", "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    K = np.load(out)
    ref = cntk_core.kernel_matrix(_digits_x("train", 12), depth=3, readout="gap", fix=True)
    np.testing.assert_allclose(K, ref, rtol=1e-12)
    assert cli_result(capsys.readouterr().out)["shape"] == [12, 12]
    assert [p.name for p in tmp_path.iterdir()] == ["K.npy"]  # no temporary file left behind

    cross = tmp_path / "Kx"
    rc = main(["gram", "--n", "5", "--split", "test", "--cross", "7", "--readout", "vanilla", "--out", str(cross)])
    assert rc == 0
    Kx = np.load(tmp_path / "Kx.npy")
    ref = cntk_core.kernel_matrix(_digits_x("test", 5), _digits_x("train", 7), depth=3, readout="vanilla")
    np.testing.assert_allclose(Kx, ref, rtol=1e-12)


@needs_store
def test_gram_through_store(tmp_path, capsys):
    out = tmp_path / "K.npy"
    args = ["gram", "--n", "9", "--readout", "vanilla", "--store", str(tmp_path / "g.zarr")]
    rc = main(args + ["--scheduler", "synchronous", "--tile-size", "4", "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    ref = cntk_core.kernel_matrix(_digits_x("train", 9), depth=3, readout="vanilla")
    np.testing.assert_allclose(np.load(out), ref, rtol=1e-12)


# -- --out ---------------------------------------------------------------------------------------------------
def test_a_legal_249_character_out_name_is_written(tmp_path, capsys):
    """The temporary file was '.NAME.npy.tmp-PID', longer than NAME_MAX: it failed after computing."""
    out = tmp_path / ("k" * 245 + ".npy")  # 249 characters
    assert main(["gram", "--n", "3", "--depth", "2", "--backend", "numpy", "--out", str(out)]) == 0
    assert np.load(out).shape == (3, 3)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left


def test_an_out_name_too_long_fails_before_computing(tmp_path, capsys, monkeypatch):
    _forbid_compute(monkeypatch)
    out = tmp_path / ("k" * 296 + ".npy")
    assert main(["gram", "--n", "3", "--depth", "2", "--out", str(out)]) == 2
    assert "is 300 bytes long; this file system allows 255" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_an_out_folder_name_too_long_fails_before_computing(tmp_path, capsys, monkeypatch):
    """Before: a raw OSError (File name too long), exit 1."""
    _forbid_compute(monkeypatch)
    out = tmp_path / ("d" * 300) / "K.npy"
    assert main(["gram", "--n", "3", "--depth", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--out: the folder name 'ddd" in err and "is 300 bytes long; this file system allows 255" in err
    assert list(tmp_path.iterdir()) == []


def test_gram_refuses_an_out_folder_or_an_out_inside_the_store_before_computing(tmp_path, capsys):
    (tmp_path / "Kdir.npy").mkdir()
    assert main(["gram", "--n", "3", "--depth", "2", "--out", str(tmp_path / "Kdir")]) == 2
    assert "is a folder" in capsys.readouterr().err
    store = tmp_path / "s.zarr"
    argv = ["gram", "--n", "3", "--depth", "2", "--store", str(store), "--out", str(store / "K.npy")]
    assert main(argv) == 2
    assert "must not be the --store" in capsys.readouterr().err and not store.exists()


# -- the store options -----------------------------------------------------------------------------------
@needs_store
def test_gram_errors_name_the_options(tmp_path, capsys):
    argv = ["gram", "--n", "3", "--depth", "2", "--store", str(tmp_path / "s.zarr"), "--scheduler"]
    assert main([*argv, "synchronous", "--n-workers", "2"]) == 2
    err = capsys.readouterr().err
    assert "--n-workers applies only to a cluster started here (--scheduler local or cuda)" in err
    assert main([*argv, "foo"]) == 2
    assert "argument --scheduler: expected local, synchronous, cuda or the address" in capsys.readouterr().err
    (tmp_path / "afile").write_text("")
    store_under_a_file = ["gram", "--n", "3", "--depth", "2", "--store", str(tmp_path / "afile" / "s.zarr")]
    assert main(store_under_a_file) == 2
    assert "error: --store: cannot write the Gram store" in capsys.readouterr().err


@needs_store
def test_cli_messages_keep_the_users_paths(tmp_path, capsys):
    import zarr

    odd = tmp_path / "n_test" / "n_folds.zarr"
    odd.parent.mkdir()
    zarr.open_group(store=str(odd), mode="w", attributes={"owner": "someone else"})
    assert main(["gram", "--n", "3", "--depth", "2", "--store", str(odd), "--scheduler", "synchronous"]) == 2
    err = capsys.readouterr().err
    assert str(odd) in err and "--n-test" not in err and "--folds" not in err


@needs_store
def test_gram_json_result_after_resume(tmp_path, capsys):
    argv = ["gram", "--n", "4", "--depth", "2", "--store", str(tmp_path / "s.zarr"), "--scheduler", "synchronous"]
    assert main([*argv, "--tile-size", "2", "--no-progress"]) == 0
    capsys.readouterr()
    assert main([*argv, "--no-progress", "--out", str(tmp_path / "K.npy")]) == 0  # the store's tile size
    assert cli_result(capsys.readouterr().out)["shape"] == [4, 4]


@needs_store
def test_gram_without_out_reads_no_matrix_and_no_verify_trusts_the_markers(tmp_path, capsys, monkeypatch):
    """Without --out the command loaded the whole Gram (a store may exceed memory) only to print its
    shape; --store could not pass verify=False."""
    from cntk_core.store import GramStore

    store = tmp_path / "s.zarr"
    argv = ["gram", "--n", "8", "--depth", "2", "--store", str(store), "--scheduler", "synchronous"]
    argv += ["--tile-size", "4", "--backend", "numpy", "--no-progress"]

    def no_load(self):
        raise AssertionError("the whole Gram was loaded without --out")

    monkeypatch.setattr(GramStore, "load", no_load)

    assert main(argv) == 0
    assert cli_result(capsys.readouterr().out)["shape"] == [8, 8]
    tile = store / "gram" / "c" / "0" / "1"
    data = bytearray(tile.read_bytes())
    data[len(data) // 3] ^= 0x10
    tile.write_bytes(bytes(data))
    assert main([*argv, "--no-verify"]) == 0  # trusts the markers: the damaged tile is not re-read
    assert cli_result(capsys.readouterr().out)["tiles_repaired"] == 0
    assert main(argv) == 0  # the default re-reads every finished tile
    assert cli_result(capsys.readouterr().out)["tiles_repaired"] == 1
    assert main(["gram", "--n", "3", "--out", str(tmp_path / "K.npy"), "--no-verify"]) == 2
    assert "--no-verify need --store" in capsys.readouterr().err


@needs_store
def test_cntk_lab_gram_reports_what_it_repaired(tmp_path, capsys):
    store = tmp_path / "g.zarr"
    argv = ["gram", "--n", "8", "--depth", "2", "--store", str(store), "--scheduler", "synchronous"]
    argv += ["--tile-size", "4", "--backend", "numpy", "--no-progress"]
    assert main(argv) == 0
    capsys.readouterr()
    tile = store / "gram" / "c" / "0" / "1"
    flipped = bytearray(tile.read_bytes())
    flipped[len(flipped) // 3] ^= 0x10
    tile.write_bytes(bytes(flipped))
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "repaired the store" in captured.err and "recomputed 1 damaged or lost tiles" in captured.err
    result = cli_result(captured.out)
    assert (result["tiles_repaired"], result["inputs_repaired"]) == (1, 0)


# -- Ctrl-C on a local cluster ---------------------------------------------------------------------------
@needs_store
@pytest.mark.slow
def test_ctrl_c_on_a_local_cluster_job_prints_one_line(tmp_path):
    """Before, the note on how to resume came after about 70 lines of Dask warnings and tracebacks."""
    pytest.importorskip("distributed")
    store = tmp_path / "g.zarr"
    cmd = [sys.executable, "-m", "cntk_core.cli", "gram", "--n", "300", "--depth", "3", "--backend", "numpy"]
    cmd += ["--store", str(store), "--scheduler", "local", "--n-workers", "2", "--tile-size", "8", "--no-progress"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not (store / "done" / "c").is_dir() or not any((store / "done" / "c").iterdir()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends: the driver and its workers
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("cntk-lab: interrupted; ") and lines[0].endswith("re-run to resume")
    assert f"tiles are on disk in {str(store)!r}" in lines[0]
