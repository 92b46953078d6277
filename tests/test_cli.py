"""The cntk-lab command line: regress (RESULT line), gram (.npy equal to kernel_matrix), info, errors."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

import cntk_core
from cntk_core.cli import RESULT_PREFIX, main


def _result(stdout: str) -> dict:
    lines = [ln for ln in stdout.strip().splitlines() if ln.strip()]
    assert lines[-1].startswith(RESULT_PREFIX), lines[-1]
    assert sum(ln.startswith(RESULT_PREFIX) for ln in lines) == 1
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def _digits_x(split: str, n: int) -> np.ndarray:
    """Independent preprocessing: /16, standardise with all digits training images (the CLI default)."""
    from cntk_core.data import load_dataset

    ds = load_dataset("digits")
    raw = ds.x_train.astype(np.float64) / 16.0
    mean, std = raw.mean(axis=(0, 1, 2)), raw.std(axis=(0, 1, 2))
    x = ds.x_train if split == "train" else ds.x_test
    return (x[:n] / 16.0 - mean) / std


def test_regress_module_run_prints_result_line():
    proc = subprocess.run(
        [sys.executable, "-m", "cntk_core.cli", "regress", "--n-train", "60", "--n-test", "30"]
        + ["--depth", "3", "--readout", "vanilla", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    res = _result(proc.stdout)
    assert res["n_train"] == 60 and res["n_test"] == 30 and res["dataset"] == "digits"
    assert 0.5 < res["accuracy"] <= 1.0
    assert np.array(res["confusion"]).sum() == 30
    assert "per-class accuracy" in proc.stdout


def test_regress_json_and_ridge_cv(capsys):
    argv = ["regress", "--n-train", "50", "--n-test", "20", "--readout", "vanilla", "--ridge", "cv", "--json"]
    rc = main([*argv, "--verbose"])
    out = capsys.readouterr().out.strip()
    assert rc == 0
    assert len(out.splitlines()) == 1
    res = json.loads(out)
    assert res["ridge_mode"].startswith("cv")
    sel = res["ridge_selection"]
    assert res["ridge"] == pytest.approx(sel["ridge"])
    assert len(sel["accuracy"]) == len(sel["relative_grid"])

    assert main(argv) == 0  # by default: the choice, not the grid
    short = capsys.readouterr().out.strip()
    assert len(short) < 900, len(short)  # was ~2,400 characters with the grid
    summary = json.loads(short)["ridge_selection"]
    assert summary["relative_ridge"] == pytest.approx(sel["relative_ridge"]) and summary["grid"]["n"] == len(
        sel["relative_grid"]
    )
    assert summary["cv_accuracy"] == max(a for a in sel["accuracy"] if a is not None)


def test_regress_default_subset_is_class_balanced(capsys):
    assert main(["regress", "--n-train", "40", "--n-test", "30", "--readout", "vanilla", "--json"]) == 0
    confusion = np.array(json.loads(capsys.readouterr().out)["confusion"])
    assert confusion.sum(axis=1).tolist() == [3] * 10  # 3 test images of every digit (first-N: 4 zeros, 13 ones)
    assert main(["regress", "--n-train", "55"]) == 2
    assert "--subset first or --subset random take any number" in capsys.readouterr().err
    assert main(["regress", "--help"]) == 0
    assert "balanced (default" in " ".join(capsys.readouterr().out.split())


def test_gram_writes_npy_equal_to_kernel_matrix(tmp_path, capsys):
    out = tmp_path / "K.npy"
    rc = main(["gram", "--n", "12", "--depth", "3", "--readout", "gap", "--fix", "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    K = np.load(out)
    ref = cntk_core.kernel_matrix(_digits_x("train", 12), depth=3, readout="gap", fix=True)
    np.testing.assert_allclose(K, ref, rtol=1e-12)
    assert _result(capsys.readouterr().out)["shape"] == [12, 12]
    assert [p.name for p in tmp_path.iterdir()] == ["K.npy"]  # no temporary file left behind

    cross = tmp_path / "Kx"
    rc = main(["gram", "--n", "5", "--split", "test", "--cross", "7", "--readout", "vanilla", "--out", str(cross)])
    assert rc == 0
    Kx = np.load(tmp_path / "Kx.npy")
    ref = cntk_core.kernel_matrix(_digits_x("test", 5), _digits_x("train", 7), depth=3, readout="vanilla")
    np.testing.assert_allclose(Kx, ref, rtol=1e-12)


@pytest.mark.skipif(importlib.util.find_spec("cntk_core.distributed") is None, reason="cntk_core.distributed absent")
def test_gram_through_store(tmp_path, capsys):
    out = tmp_path / "K.npy"
    args = ["gram", "--n", "9", "--readout", "vanilla", "--store", str(tmp_path / "g.zarr")]
    rc = main(args + ["--scheduler", "synchronous", "--tile-size", "4", "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    ref = cntk_core.kernel_matrix(_digits_x("train", 9), depth=3, readout="vanilla")
    np.testing.assert_allclose(np.load(out), ref, rtol=1e-12)


def test_info(capsys):
    assert main(["info", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["backend_auto"] in ("numba", "numpy", "cupy")
    assert d["versions"]["numpy"] == np.__version__


@pytest.mark.parametrize(
    "argv, message",
    [
        (["regress", "--depth", "1"], "depth must be >= 2"),
        (["regress", "--depth", "three"], "depth must be an integer"),
        (["regress", "--ridge", "big"], "ridge must be"),
        (["regress", "--ridge", "-1"], "ridge must be"),
        (["regress", "--n-train", "0"], "positive integer"),
        (["regress", "--readout", "max"], "invalid choice"),
        (["regress", "--dataset", "mnist"], "invalid choice"),
        (["gram", "--n", "5"], "--out"),
        (["gram", "--n", "100000", "--out", "x.npy"], "exceeds"),
        (["gram", "--n", "5", "--out", "x.npy", "--scheduler", "local"], "need --store"),
        (["gram", "--n", "5", "--out", "/nonexistent-dir/x.npy"], "does not exist"),
        (["gram", "--n", "5", "--out", "/tmp"], "is a folder"),  # not /tmp.npy beside it
        (["gram", "--n", "5", "--out", "x.npy", "--tile-size", "8"], "need --store"),  # was ignored
        (["gram", "--n", "5", "--store", "g.zarr", "--scheduler", "sync"], "address of a running Dask scheduler"),
        (["regress", "--dataset", "cifar10-subset", "--data-path", "/nonexistent"], "not found"),
        ([], "required"),
    ],
)
def test_bad_arguments_exit_2(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err
