"""Edge cases of the Gram store, its Dask job and the command lines around them: kernels that leave
the float range, paths with ~, oversized tiles, stores whose creation was interrupted, complete
stores on read-only disks, resuming without --tile-size, and the messages and exit codes of
``cntk-lab`` and ``python -m cntk_widgets``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("zarr")
pytest.importorskip("dask")

import cntk_core  # noqa: E402
from cntk_core.cli import main  # noqa: E402
from cntk_core.distributed import gram_to_store  # noqa: E402
from cntk_core.store import GramStore, StoreMismatchError  # noqa: E402

SYNC = dict(scheduler="synchronous", progress=False)


def _x(n=4, size=4, seed=0):
    return np.random.default_rng(seed).standard_normal((n, size, size, 1))


# --- kernels outside the float range -------------------------------------------------------------


@pytest.mark.parametrize("depth,dtype", [(3000, "float64"), (1500, "float32")])
def test_a_kernel_that_underflows_raises_instead_of_nan(depth, dtype):
    with pytest.raises(FloatingPointError, match="not finite .* very deep network's kernel shrinks"):
        cntk_core.kernel_matrix(_x(3), depth=depth, dtype=dtype)


def test_the_store_does_not_mark_nan_tiles_done(tmp_path):
    with pytest.raises(Exception, match="not finite"):
        gram_to_store(tmp_path / "deep.zarr", _x(3), depth=3000, **SYNC)
    store = GramStore.open(tmp_path / "deep.zarr")
    assert len(store.missing_tiles()) == len(store.tiles()) == 1


# --- paths, tiles and store states ----------------------------------------------------------------


def test_tilde_means_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    x = _x()
    gram_to_store("~/g.zarr", x, depth=2, **SYNC)
    assert (tmp_path / "g.zarr").is_dir() and not (tmp_path / "~").exists()
    np.testing.assert_allclose(GramStore.open("~/g.zarr").load(), cntk_core.kernel_matrix(x, depth=2), rtol=1e-12)


def test_a_tile_size_above_n_costs_no_space(tmp_path):
    x = _x(6)
    store = gram_to_store(tmp_path / "big.zarr", x, depth=2, tile_size=8000, **SYNC)
    assert store._group["gram"].chunks == (6, 6)
    size = sum(f.stat().st_size for f in (tmp_path / "big.zarr").rglob("*") if f.is_file())
    assert size < 100_000, size
    np.testing.assert_allclose(store.load(), cntk_core.kernel_matrix(x, depth=2), rtol=1e-12)


def test_resuming_without_a_tile_size_takes_the_stores(tmp_path):
    x = _x(6)
    first = gram_to_store(tmp_path / "t.zarr", x, depth=2, tile_size=4, **SYNC)
    again = gram_to_store(tmp_path / "t.zarr", x, depth=2, **SYNC)
    assert again.metadata["tile_size"] == 4 and again.last_run.tiles_computed == 0
    np.testing.assert_array_equal(again.load(), first.load())


def test_an_empty_folder_or_an_unfinished_creation_is_a_new_store(tmp_path):
    import zarr

    x = _x()
    (tmp_path / "empty.zarr").mkdir()
    zarr.open_group(store=str(tmp_path / "half.zarr"), mode="w")  # group written, attributes not yet
    for name in ("empty.zarr", "half.zarr"):
        store = gram_to_store(tmp_path / name, x, depth=2, **SYNC)
        np.testing.assert_allclose(store.load(), cntk_core.kernel_matrix(x, depth=2), rtol=1e-12)
    zarr.open_group(store=str(tmp_path / "other.zarr"), mode="w", attributes={"owner": "someone else"})
    with pytest.raises(ValueError, match="not a cntk-lab Gram store"):
        gram_to_store(tmp_path / "other.zarr", x, depth=2, **SYNC)


def test_a_complete_store_is_read_without_writing(tmp_path, monkeypatch):
    x = _x()
    done = gram_to_store(tmp_path / "done.zarr", x, depth=2, **SYNC).load()

    def read_only(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(Path, "write_bytes", read_only)  # the write probe of an unfinished store
    np.testing.assert_array_equal(gram_to_store(tmp_path / "done.zarr", x, depth=2, **SYNC).load(), done)


# --- cntk-lab gram ------------------------------------------------------------------------------


def test_gram_refuses_an_out_folder_or_an_out_inside_the_store_before_computing(tmp_path, capsys):
    (tmp_path / "Kdir.npy").mkdir()
    assert main(["gram", "--n", "3", "--depth", "2", "--out", str(tmp_path / "Kdir")]) == 2
    assert "is a folder" in capsys.readouterr().err
    store = tmp_path / "s.zarr"
    argv = ["gram", "--n", "3", "--depth", "2", "--store", str(store), "--out", str(store / "K.npy")]
    assert main(argv) == 2
    assert "must not be the --store" in capsys.readouterr().err and not store.exists()


def test_gram_errors_name_the_options(tmp_path, capsys):
    argv = ["gram", "--n", "3", "--depth", "2", "--store", str(tmp_path / "s.zarr"), "--scheduler"]
    assert main([*argv, "synchronous", "--n-workers", "2"]) == 2
    err = capsys.readouterr().err
    assert "--n-workers applies only to a cluster started here (--scheduler local or cuda)" in err
    assert main([*argv, "foo"]) == 2
    assert "--scheduler must be 'local', 'synchronous', 'cuda'" in capsys.readouterr().err
    (tmp_path / "afile").write_text("")
    store_under_a_file = ["gram", "--n", "3", "--depth", "2", "--store", str(tmp_path / "afile" / "s.zarr")]
    assert main(store_under_a_file) == 2
    assert "error: --store: cannot write the Gram store" in capsys.readouterr().err


def test_an_interrupt_prints_how_to_resume(monkeypatch, capsys):
    from cntk_core import cli

    def interrupted(args):
        exc = KeyboardInterrupt()
        exc.add_note("3 of 10 tiles are on disk in 'g.zarr'; re-run to resume")
        raise exc

    monkeypatch.setitem(cli.COMMANDS, "info", interrupted)
    assert main(["info"]) == 130
    assert "interrupted; 3 of 10 tiles are on disk in 'g.zarr'; re-run to resume" in capsys.readouterr().err


def test_gram_json_result_after_resume(tmp_path, capsys):
    argv = ["gram", "--n", "4", "--depth", "2", "--store", str(tmp_path / "s.zarr"), "--scheduler", "synchronous"]
    assert main([*argv, "--tile-size", "2", "--no-progress"]) == 0
    capsys.readouterr()
    assert main([*argv, "--no-progress", "--out", str(tmp_path / "K.npy")]) == 0  # the store's tile size
    line = [s for s in capsys.readouterr().out.splitlines() if s.startswith("RESULT ")][-1]
    assert json.loads(line[len("RESULT ") :])["shape"] == [4, 4]


def test_gram_without_out_reads_no_matrix_and_no_verify_trusts_the_markers(tmp_path, capsys, monkeypatch):
    """Without --out the command loaded the whole Gram (a store may exceed memory) only to print its
    shape; --store could not pass verify=False."""
    store = tmp_path / "s.zarr"
    argv = ["gram", "--n", "8", "--depth", "2", "--store", str(store), "--scheduler", "synchronous"]
    argv += ["--tile-size", "4", "--backend", "numpy", "--no-progress"]

    def no_load(self):
        raise AssertionError("the whole Gram was loaded without --out")

    monkeypatch.setattr(GramStore, "load", no_load)

    def result():
        line = [s for s in capsys.readouterr().out.splitlines() if s.startswith("RESULT ")][-1]
        return json.loads(line[len("RESULT ") :])

    assert main(argv) == 0
    assert result()["shape"] == [8, 8]
    tile = store / "gram" / "c" / "0" / "1"
    data = bytearray(tile.read_bytes())
    data[len(data) // 3] ^= 0x10
    tile.write_bytes(bytes(data))
    assert main([*argv, "--no-verify"]) == 0  # trusts the markers: the damaged tile is not re-read
    assert result()["tiles_repaired"] == 0
    assert main(argv) == 0  # the default re-reads every finished tile
    assert result()["tiles_repaired"] == 1
    assert main(["gram", "--n", "3", "--out", str(tmp_path / "K.npy"), "--no-verify"]) == 2
    assert "--no-verify need --store" in capsys.readouterr().err


def test_an_out_folder_name_too_long_fails_before_computing(tmp_path, capsys, monkeypatch):
    """Before: a raw OSError (File name too long), exit 1."""

    def boom(*args, **kwargs):
        raise AssertionError("computed before checking --out")

    monkeypatch.setattr(cntk_core.gram, "kernel_matrix", boom)
    out = tmp_path / ("d" * 300) / "K.npy"
    assert main(["gram", "--n", "3", "--depth", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--out: the folder name 'ddd" in err and "is 300 bytes long; this file system allows 255" in err
    assert list(tmp_path.iterdir()) == []


def test_the_public_store_api_is_annotated():
    import inspect

    from cntk_core import store as store_module
    from cntk_core import store_create
    from cntk_core.distributed import gram_to_store

    def annotated(fn, *names):
        sig = inspect.signature(fn)
        missing = [n for n in names if sig.parameters[n].annotation is inspect.Parameter.empty]
        assert not missing and sig.return_annotation is not inspect.Signature.empty, (fn, missing)

    annotated(GramStore.open, "path")
    annotated(GramStore.as_dask, "allow_missing")
    annotated(store_create.open_or_create, "path")
    annotated(gram_to_store, "store", "x1", "x2", "dtype", "scheduler")
    annotated(store_module.store_path, "store")
    annotated(store_module.IncompleteStoreError.__init__, "message", "path", "tiles")


def test_zarr_is_required_at_the_version_whose_chunk_writes_are_atomic():
    """store_create relies on zarr writing each chunk to a temporary file and renaming it (3.1.3+)."""
    import tomllib
    import zarr
    from packaging.requirements import Requirement
    from packaging.version import Version

    root = Path(__file__).resolve().parent.parent
    extra = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]["distributed"]
    (spec,) = [Requirement(r).specifier for r in extra if Requirement(r).name == "zarr"]
    assert "3.1.3" in spec and "3.1.2" not in spec and "3.0.8" not in spec
    assert Version(zarr.__version__) >= Version("3.1.3")
    readme = (root / "README.md").read_text()
    assert "`verify()` return the matrix" not in readme and "returns the number of tiles checked" in readme


# --- python -m cntk_widgets ------------------------------------------------------------------------


@pytest.mark.parametrize("port", ["0", "-1", "99999", "http"])
def test_lab_launcher_refuses_bad_ports(port, capsys):
    from cntk_widgets.__main__ import main as lab

    with pytest.raises(SystemExit) as info:
        lab(["--print-command", "--port", port])
    assert info.value.code == 2 and "port must be an integer 1-65535" in capsys.readouterr().err


@pytest.mark.parametrize("notebook", ["../README.md", "", "/tmp/elsewhere.ipynb"])
def test_lab_launcher_opens_only_the_projects_notebooks(notebook, capsys):
    from cntk_widgets.__main__ import main as lab

    assert lab(["--print-command", "--notebook", notebook]) == 2
    assert "--notebook must name a notebook in" in capsys.readouterr().err
    assert lab(["--print-command", "--voila", "--port", "9001"]) == 0
    assert "--port=9001" in capsys.readouterr().out


# --- review of the above ----------------------------------------------------------------------------


def test_an_empty_folder_is_kept_not_recreated(tmp_path):
    folder = tmp_path / "shared.zarr"
    folder.mkdir()
    folder.chmod(0o2775)
    inode = folder.stat().st_ino
    gram_to_store(folder, _x(), depth=2, **SYNC)
    assert folder.stat().st_ino == inode and folder.stat().st_mode & 0o7777 == 0o2775
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link.zarr").symlink_to(real)
    gram_to_store(tmp_path / "link.zarr", _x(), depth=2, **SYNC)
    assert (real / "zarr.json").is_file()


@pytest.mark.parametrize("same_job", [True, False])
def test_a_second_creator_of_the_same_new_store_joins_or_is_refused(tmp_path, monkeypatch, same_job):
    """Two jobs checked the path while it was absent; the second to create it must not wipe or mix
    into the first's: it joins the same job (nothing left to do) or is refused, naming the owner."""
    from cntk_core import store_create

    path = tmp_path / "race.zarr"
    real_missing = store_create._first_missing
    calls = []

    def first_job_wins(p):
        calls.append(p)
        result = real_missing(p)
        if len(calls) == 1:  # job B is about to create the store: job A does it first, completely
            gram_to_store(p, _x(), depth=2, tile_size=2, scheduler="synchronous", progress=False)
        return result

    monkeypatch.setattr(store_create, "_first_missing", first_job_wins)
    if same_job:
        joined = gram_to_store(path, _x(), depth=2, tile_size=2, **SYNC)  # job B
        assert joined.last_run.tiles_computed == 0 and joined.last_run.tiles_already_done == 3
    else:
        with pytest.raises(StoreMismatchError, match=r"another job \(NTK depth 2 readout gap.*created by .* pid"):
            gram_to_store(path, _x(), depth=3, tile_size=2, **SYNC)  # job B
    monkeypatch.undo()
    np.testing.assert_array_equal(GramStore.open(path).load(), cntk_core.kernel_matrix(_x(), depth=2))


@pytest.mark.parametrize("same_job", [True, False])
def test_a_stale_metadata_file_is_never_removed_under_another_creator(tmp_path, monkeypatch, same_job):
    """An earlier version's interrupted creation left only an attribute-less zarr.json. Job B found it
    stale; job A then took the folder over and finished. Before, B unlinked A's zarr.json, published
    its own metadata (depth 3) and, its tasks trusting A's done markers, kept A's depth-2 Gram under
    it: load() and verify() passed on a wrong matrix."""
    import sys

    import zarr

    from cntk_core import store_create

    path = tmp_path / "s.zarr"
    zarr.open_group(store=str(path), mode="w")  # the stale group
    real_stale = store_create._stale_group
    ran = []

    def a_runs_inside_bs_create(p):
        stale = real_stale(p)
        if stale and not ran and sys._getframe(1).f_code.co_name == "_create":  # B has decided: stale
            ran.append(True)
            gram_to_store(p, _x(), depth=2, tile_size=2, **SYNC)  # job A, start to finish
        return stale

    monkeypatch.setattr(store_create, "_stale_group", a_runs_inside_bs_create)
    if same_job:
        joined = gram_to_store(path, _x(), depth=2, tile_size=2, **SYNC)  # job B joins: nothing left to do
        assert joined.last_run.tiles_computed == 0
    else:
        with pytest.raises(StoreMismatchError, match=r"another job \(NTK depth 2 readout gap.*created by .* pid"):
            gram_to_store(path, _x() * 2, depth=3, tile_size=2, **SYNC)  # job B
    assert ran
    monkeypatch.undo()
    store = GramStore.open(path)
    assert store.metadata["network"]["depth"] == 2 and store.verify() == 3
    np.testing.assert_array_equal(store.load(), cntk_core.kernel_matrix(_x(), depth=2))


def test_a_job_that_created_the_store_trusts_no_done_marker_it_finds(tmp_path, monkeypatch):
    """The safety net under exclusive creation: should a job ever take another's finished store for
    a new one (as the race above once did), it must compute every tile, not skip those whose markers
    it did not write."""
    from cntk_core import store_create

    path = tmp_path / "s.zarr"
    gram_to_store(path, _x(), depth=2, tile_size=2, **SYNC)  # job A, finished
    (path / "zarr.json").unlink()  # its metadata lost; its tiles and done markers kept
    monkeypatch.setattr(store_create, "_open_existing", lambda p: None)  # job B sees no store there
    store = gram_to_store(path, _x(), depth=3, tile_size=2, **SYNC)
    assert store.last_run.tiles_computed == 3 and store.metadata["network"]["depth"] == 3
    np.testing.assert_array_equal(store.load(), cntk_core.kernel_matrix(_x(), depth=3))


def test_free_space_is_estimated_from_the_chunk_shape(tmp_path, monkeypatch):
    from cntk_core import store_create

    asked = []
    monkeypatch.setattr(store_create, "check_free_space", lambda path, needed: asked.append(needed))
    x1, x2 = _x(3), _x(50, seed=1)
    gram_to_store(tmp_path / "cross.zarr", x1, x2, depth=2, tile_size=256, **SYNC)
    assert asked[0] == x1.nbytes + x2.nbytes + 1 * (max(3 * 50 * 8, 4096) + 4096)


def test_a_non_finite_tile_is_reported_once_not_retried(tmp_path):
    from cntk_core.distributed import _compute_tile

    with pytest.raises(FloatingPointError, match=r"Gram tile \(0, 0\): the kernel is not finite"):
        gram_to_store(tmp_path / "d.zarr", _x(3), depth=3000, **SYNC)
    store = GramStore.open(tmp_path / "d.zarr")
    params = dict(
        path=str(store.path), tile_size=256, shape=[3, 3], symmetric=True, depth=3000, readout="gap",
        fix_first=False, fix_last=False, kind="ntk", dtype="float64", backend=None,
    )  # fmt: skip
    digest = store.metadata["blocks"]["x1"][0]
    result = _compute_tile(params, 0, 0, (digest, digest))  # returned to Dask as a value: its retries don't repeat it
    assert "not finite" in result["error"] and not result["computed"]


def test_tiny_pixels_that_underflow_get_the_underflow_message():
    with pytest.raises(FloatingPointError, match="not finite"):
        cntk_core.kernel_matrix(_x(3) * 1e-12, depth=600, dtype="float32")


def test_cli_messages_keep_the_users_paths(tmp_path, capsys):
    odd = tmp_path / "n_test" / "n_folds.zarr"
    odd.parent.mkdir()
    import zarr

    zarr.open_group(store=str(odd), mode="w", attributes={"owner": "someone else"})
    assert main(["gram", "--n", "3", "--depth", "2", "--store", str(odd), "--scheduler", "synchronous"]) == 2
    err = capsys.readouterr().err
    assert str(odd) in err and "--n-test" not in err and "--folds" not in err


def test_lab_launcher_follows_a_symlinked_notebooks_folder(tmp_path, monkeypatch):
    import cntk_widgets.__main__ as launcher

    link = tmp_path / "notebooks"
    link.symlink_to(launcher.notebooks_dir())
    monkeypatch.setattr(launcher, "notebooks_dir", lambda: link)
    assert launcher.main(["--print-command"]) == 0


def test_a_run_interrupted_between_metadata_and_arrays_resumes(tmp_path, monkeypatch):
    """A new store's metadata is written first, then its arrays: a run stopped in between left a
    store without a "gram" array, which the next run must create (it raised KeyError: 'gram')."""
    import cntk_core.store_create as store_module

    real = store_module._ensure_arrays

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    x = _x(5)
    monkeypatch.setattr(store_module, "_ensure_arrays", interrupted)
    with pytest.raises(KeyboardInterrupt):
        gram_to_store(tmp_path / "g.zarr", x, depth=2, tile_size=2, **SYNC)
    assert "gram" not in GramStore.open(tmp_path / "g.zarr")._group
    monkeypatch.setattr(store_module, "_ensure_arrays", real)
    store = gram_to_store(tmp_path / "g.zarr", x, depth=2, **SYNC)
    assert store.tile_size == 2 and store.last_run.tiles_computed == len(store.tiles())
    np.testing.assert_allclose(store.load(), cntk_core.kernel_matrix(x, depth=2), rtol=1e-12)
