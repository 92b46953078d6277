"""The cntk-lab command line (cntk_core.cli): regress (its RESULT line, --json, ridge CV, the balanced
subset, CIFAR-10 from a folder), info, the parser's errors (exit 2), the option named in a library's
parameter error, and Ctrl-C. ``gram`` is tested in test_cli_gram.py, ``data`` in test_cli_data.py."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import cli_result

from cntk_core.cli import main


def test_regress_module_run_prints_result_line():
    proc = subprocess.run(
        [sys.executable, "-m", "cntk_core.cli", "regress", "--n-train", "60", "--n-test", "30"]
        + ["--depth", "3", "--readout", "vanilla", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    res = cli_result(proc.stdout)
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
    assert "error: --n-train: subset='balanced' needs n_train divisible by the 10 classes" in capsys.readouterr().err
    assert main(["regress", "--help"]) == 0
    assert "balanced (default" in " ".join(capsys.readouterr().out.split())


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


@pytest.mark.parametrize(
    "args,message",
    [
        (["--n-train", "100000"], "error: --n-train: n_train=100000 is more than"),
        (["--n-test", "100000"], "error: --n-test: n_test=100000 is more than"),
        (["--ridge", "cv", "--folds", "50", "--n-train", "20"], "error: --folds: n_folds=50 is larger than the 20"),
    ],
)
def test_errors_of_the_library_name_the_options(args, message, capsys):
    assert main(["regress", "--dataset", "digits", "--depth", "2", *args]) == 2
    assert message in capsys.readouterr().err


def test_the_option_of_a_parameter_error_is_named_and_the_text_kept():
    from cntk_core.cli import OPTION_NAMES, _cli_names, _UsageError
    from cntk_core.validation import ParameterError, ParameterTypeError

    for param, option in OPTION_NAMES.items():
        for error in (ParameterError, ParameterTypeError):
            with pytest.raises(_UsageError) as info, _cli_names(argparse.Namespace()):
                raise error(param, f"{param}='x' is wrong")
            text = str(info.value)
            assert text.startswith(f"{option}: {param}='x' is wrong")  # the library's text, unchanged
            if param not in ("fix_first", "fix_last"):
                assert text.endswith(f" [on the command line: {param} = {option}]")
    # Python spellings in a message get a legend; words that merely contain a name do not
    with pytest.raises(_UsageError) as info, _cli_names(argparse.Namespace()):
        raise ParameterError("n_train", "n_train=5 and subset='balanced'; the n_trainable seed stays")
    assert str(info.value) == (
        "--n-train: n_train=5 and subset='balanced'; the n_trainable seed stays "
        "[on the command line: n_train = --n-train, subset = --subset]"
    )
    for exc in (ValueError("n_trainable stays; no options here"), ParameterError("unknown_name", "as it was")):
        with pytest.raises(_UsageError) as info, _cli_names(argparse.Namespace()):
            raise exc
        assert str(info.value) == str(exc)  # no option to name: the text as the library wrote it


def test_an_interrupt_prints_how_to_resume(monkeypatch, capsys):
    from cntk_core import cli

    def interrupted(args):
        exc = KeyboardInterrupt()
        exc.add_note("3 of 10 tiles are on disk in 'g.zarr'; re-run to resume")
        raise exc

    monkeypatch.setitem(cli.COMMANDS, "info", interrupted)
    assert main(["info"]) == 130
    assert "interrupted; 3 of 10 tiles are on disk in 'g.zarr'; re-run to resume" in capsys.readouterr().err


def test_cli_regress_and_gram_on_cifar10(fake_cifar10, data_cache, tmp_path, capsys):
    folder = str(fake_cifar10.extract(tmp_path / "x"))
    common = ["--dataset", "cifar10", "--data-path", folder, "--readout", "vanilla", "--no-progress"]
    assert main(["regress", *common, "--n-train", "10", "--n-test", "5", "--subset", "first", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["dataset"] == "cifar10" and res["n_train"] == 10 and res["image_shape"] == [32, 32, 3]
    assert main(["gram", *common, "--n", "3", "--out", str(tmp_path / "K.npy")]) == 0
    assert np.load(tmp_path / "K.npy").shape == (3, 3)
    assert main(["regress", "--dataset", "cifar10-subset"]) == 2
    assert "cntk-lab data subset" in capsys.readouterr().err
