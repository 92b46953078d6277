"""The kernel options of ``cntk-lab gram`` / ``regress`` (--readout lap --lap-c, --padding, --pools, --myrtle,
--flip) against the slow oracle, the preprocessing options of ``regress`` (--zca, --flip-augment,
--random-patches and its --patch-* settings) against run_experiment, and every refusal, named by its option
and made before any kernel is computed."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from conftest import cli_result
from test_cli_gram import _digits_x, needs_store

import cntk_core
from cntk_core.architecture import PADDINGS, READOUTS
from cntk_core.cli import build_parser, main
from cntk_core.testing import reference_matrix


def _forbid_kernels(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("a kernel was computed before the arguments were checked")

    monkeypatch.setattr(cntk_core.gram, "kernel_matrix", boom)
    monkeypatch.setattr(cntk_core.gram, "network_kernel", boom)


@pytest.mark.parametrize(
    "options, reference",
    [
        (
            ["--depth", "3", "--readout", "lap", "--lap-c", "1", "--padding", "circular", "--flip"],
            dict(depth=3, readout="lap", lap_c=1, padding="circular", flip=True),
        ),
        (["--depth", "4", "--pools", "1,3", "--readout", "vanilla"], dict(depth=4, readout="vanilla", pools=(1, 3))),
        (["--myrtle", "5", "--kind", "nngp"], dict(depth=5, readout="gap", pools=(2, 3), kind="nngp")),
        (["--myrtle", "7", "--readout", "lap", "--lap-c", "0", "--fix"],  # LAP 0 on the 2x2 map: vanilla
         dict(depth=7, readout="vanilla", pools=(2, 4), fix_first=True, fix_last=True)),
    ],
)  # fmt: skip
def test_gram_kernel_options_match_the_oracle(tmp_path, capsys, options, reference):
    out = tmp_path / "K.npy"
    argv = ["gram", "--n", "3", "--split", "test", "--cross", "2", *options, "--out", str(out), "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    want = reference_matrix(_digits_x("test", 3), _digits_x("train", 2), **reference)
    np.testing.assert_allclose(np.load(out), want, rtol=1e-7, atol=1e-12 * np.abs(want).max())
    record = cli_result(capsys.readouterr().out)
    arch = cntk_core.Architecture.from_dict(record["architecture"])
    assert (arch.depth, arch.pools) == (reference["depth"], reference.get("pools", ()))
    assert record["kernel"] == arch.title(reference.get("kind", "ntk"))


def test_gram_names_the_myrtle_network_and_the_extensions(tmp_path, capsys):
    out = str(tmp_path / "K.npy")
    assert main(["gram", "--n", "2", "--myrtle", "5", "--kind", "nngp", "--out", out, "--no-progress"]) == 0
    assert cli_result(capsys.readouterr().out)["kernel"] == "CNN-GP-Myrtle-5"
    argv = ["gram", "--n", "2", "--depth", "3", "--readout", "lap", "--lap-c", "2", "--padding", "circular"]
    assert main([*argv, "--pools", "1", "--flip", "--out", out, "--no-progress"]) == 0
    record = cli_result(capsys.readouterr().out)
    assert record["kernel"] == "CNTK-LAP2-3-pool1-circ+flip"
    assert record["architecture"] == {
        "depth": 3,
        "readout": "lap",
        "fix_first": False,
        "fix_last": False,
        "lap_c": 2,
        "padding": "circular",
        "pools": [1],
        "flip": True,
    }


@needs_store
def test_gram_store_takes_the_whole_architecture(tmp_path, capsys):
    from cntk_core.store import GramStore

    store = tmp_path / "g.zarr"
    argv = ["gram", "--n", "5", "--depth", "3", "--readout", "lap", "--lap-c", "1", "--pools", "1", "--flip"]
    argv += ["--store", str(store), "--scheduler", "synchronous", "--tile-size", "3", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "K.npy")]) == 0, capsys.readouterr().err
    want = reference_matrix(*[_digits_x("train", 5)] * 2, 3, "lap", lap_c=1, pools=(1,), flip=True)
    np.testing.assert_allclose(np.load(tmp_path / "K.npy"), want, rtol=1e-7)
    capsys.readouterr()
    assert main([a for a in argv if a != "--flip"]) == 2  # another kernel: refused, the store not overwritten
    err = capsys.readouterr().err
    assert "belongs to another job" in err and "flip" in err
    np.testing.assert_allclose(GramStore.open(store).load(), want, rtol=1e-7)


def test_the_vocabularies_are_the_architectures():
    parser = build_parser()
    for command in (["gram", "--n", "1", "--out", "K.npy"], ["regress"]):
        args = parser.parse_args(command)
        assert (args.readout, args.padding, args.depth, args.pools, args.myrtle, args.flip) == (
            "gap", "zero", None, None, None, False,
        )  # fmt: skip
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("gram", "regress"):
        actions = {a.dest: a for a in sub.choices[name]._actions}
        assert tuple(actions["readout"].choices) == READOUTS and tuple(actions["padding"].choices) == PADDINGS
        assert sorted(actions["myrtle"].choices) == [5, 7, 10]


def _regress_json(capsys, argv) -> dict:
    assert main(["regress", *argv, "--json", "--verbose", "--no-progress"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_regress_preprocessing_and_kernel_options_reach_run_experiment(capsys):
    argv = ["--n-train", "20", "--n-test", "10", "--depth", "2", "--readout", "lap", "--lap-c", "1", "--flip"]
    argv += ["--zca", "0.2", "--flip-augment", "--random-patches", "6", "--patch-size", "3", "--patch-pool", "2"]
    argv += ["--patch-bias", "0.5", "--patch-zca", "0.05", "--ridge", "1e-3", "--seed", "3"]
    got = _regress_json(capsys, argv)
    want = cntk_core.regression.run_experiment(
        "digits", n_train=20, n_test=10, depth=2, readout="lap", lap_c=1, flip=True, zca=0.2, flip_augment=True,
        random_patches=6, patch_size=3, patch_pool=2, patch_bias=0.5, patch_zca=0.05, ridge=1e-3, seed=3,
        progress=False,
    ).to_dict()  # fmt: skip
    for d in (got, want):
        del d["timings"]
    assert got == want
    assert got["n_train"] == 40 and got["image_shape"] == [4, 4, 12]  # doubled; 2 x 6 channels, pooled 8 -> 4
    assert got["kernel"] == "CNTK-LAP1-2+flip"
    assert got["preprocessing"]["random_patches"] == {
        "n_patches": 6, "size": 3, "bias": 0.5, "pool": 2, "zca_eps": 0.05, "norm_eps": 1e-8, "seed": 3,
    }  # fmt: skip
    assert (got["preprocessing"]["zca"], got["preprocessing"]["flip_augment"]) == (0.2, True)
    assert got["preprocessing"]["n_train_images"] == 20 and got["preprocessing"]["input_shape"] == [8, 8, 1]

    assert main(["regress", *argv[:4], "--myrtle", "5", "--zca", "0.1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "kernel: CNTK-Myrtle-5" in out and "ZCA eps 0.1" in out
    short = cli_result(out)
    assert short["kernel"] == "CNTK-Myrtle-5" and short["preprocessing"] == {"stats": "all", "zca": 0.1}
    assert "architecture" not in short  # the title names it on the short line


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--myrtle", "5", "--depth", "5"],
            "--myrtle 5 sets the depth (5) and the pools (2,3): give it without --depth",
        ),
        (["--myrtle", "7", "--pools", "2,4"], "give it without --pools"),
        (["--myrtle", "6"], "invalid choice"),
        (["--readout", "lap"], "--lap-c: readout='lap' needs lap_c"),
        (["--lap-c", "1"], "--lap-c: lap_c is LAP's window: it needs readout='lap'"),
        (["--lap-c", "-1", "--readout", "lap"], "expected an integer >= 0"),
        (["--padding", "reflect"], "invalid choice"),
        (["--pools", "3,2", "--depth", "4"], "--pools: pools must be strictly increasing"),
        (["--pools", "4", "--depth", "4"], "--pools: pools name conv counts 1 .. 3"),
        (["--pools", "2;3"], "expected conv counts separated by commas"),
        (["--depth", "5", "--pools", "1,2,3,4"], "--pools: pooling 4 (after conv 4) meets a 1x1 feature map"),
    ],
)
@pytest.mark.parametrize("command", ["regress", "gram"])
def test_bad_kernel_options_are_named_before_any_compute(command, argv, message, capsys, monkeypatch, tmp_path):
    _forbid_kernels(monkeypatch)
    head = ["gram", "--n", "3", "--out", str(tmp_path / "K.npy")] if command == "gram" else ["regress"]
    assert main([*head, *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "K.npy").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--patch-size", "3"], "--patch-size need --random-patches N"),
        (["--patch-bias", "1", "--patch-pool", "2"], "--patch-bias, --patch-pool need --random-patches N"),
        (["--random-patches", "1"], "--random-patches: random_patches must be an integer >= 2"),
        (
            ["--random-patches", "4", "--patch-size", "9"],
            "--patch-size: random patches: size=9: the patches do not fit",
        ),
        (["--random-patches", "4", "--patch-pool", "3"], "--patch-pool: random patches: pool=3 does not divide"),
        (["--random-patches", "4", "--patch-zca", "0"], "--patch-zca: random patches: zca_eps must be"),
        (["--random-patches", "4", "--patch-bias", "-1"], "expected a finite number >= 0"),
        (["--zca", "-0.5"], "expected a finite number >= 0"),
        (["--zca", "nan"], "expected a finite number >= 0"),
        (["--zca", "0"], "--zca: zca=0.0: the covariance is singular"),  # 20 images of 64 pixels
    ],
)
def test_bad_preprocessing_options_are_named_before_any_compute(argv, message, capsys, monkeypatch):
    _forbid_kernels(monkeypatch)
    assert main(["regress", "--n-train", "20", "--n-test", "10", *argv]) == 2
    assert message in capsys.readouterr().err


def test_the_myrtle_option_is_named_for_its_depth_and_pools():
    from cntk_core.cli import _cli_names, _UsageError
    from cntk_core.validation import ParameterError

    for param in ("pools", "depth"):
        with pytest.raises(_UsageError) as info, _cli_names(argparse.Namespace(myrtle=10)):
            raise ParameterError(param, "pooling 2 (after conv 6) meets a 1x1 feature map")
        assert str(info.value).startswith("--myrtle 10: pooling 2")
    with pytest.raises(_UsageError) as info, _cli_names(argparse.Namespace(myrtle=None)):
        raise ParameterError("pools", "pools must be strictly increasing")
    assert str(info.value).startswith("--pools: pools must")
