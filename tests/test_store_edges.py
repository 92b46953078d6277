"""Edge cases of the Gram store (cntk_core.store, store_create) and its Dask job: tiles whose kernel
leaves the float range, paths with ~, oversized tiles, stores whose creation was interrupted or
raced, complete stores on read-only disks, resuming without a tile size, the free-space estimate,
and the annotated public API. ``cntk-lab gram`` on stores: test_cli_gram.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import make_images

pytest.importorskip("zarr")
pytest.importorskip("dask")

import cntk_core  # noqa: E402
from cntk_core.distributed import gram_to_store  # noqa: E402
from cntk_core.store import GramStore, StoreMismatchError  # noqa: E402

SYNC = dict(scheduler="synchronous", progress=False)


def _x(n=4, seed=0):
    return make_images(n, (4, 4, 1), seed)


# --- kernels outside the float range -------------------------------------------------------------


def test_the_store_does_not_mark_nan_tiles_done(tmp_path):
    with pytest.raises(FloatingPointError, match=r"Gram tile \(0, 0\): the kernel is not finite"):
        gram_to_store(tmp_path / "deep.zarr", _x(3), depth=3000, **SYNC)
    store = GramStore.open(tmp_path / "deep.zarr")
    assert len(store.missing_tiles()) == len(store.tiles()) == 1


def test_a_non_finite_tile_is_reported_once_not_retried(tmp_path):
    from cntk_core.distributed import _compute_tile

    with pytest.raises(FloatingPointError, match=r"Gram tile \(0, 0\): the kernel is not finite"):
        gram_to_store(tmp_path / "d.zarr", _x(3), depth=3000, **SYNC)
    store = GramStore.open(tmp_path / "d.zarr")
    params = dict(
        path=str(store.path), tile_size=256, shape=[3, 3], symmetric=True,
        architecture=cntk_core.Architecture(3000).to_dict(), kind="ntk", dtype="float64", backend=None,
    )  # fmt: skip
    digest = store.metadata["blocks"]["x1"][0]
    result = _compute_tile(params, 0, 0, (digest, digest))  # returned to Dask as a value: its retries don't repeat it
    assert "not finite" in result["error"] and not result["computed"]


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


# --- the API and its requirements -----------------------------------------------------------------


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


# --- creation: folders, races, interruptions -------------------------------------------------------


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
