"""Fault injection into Gram stores: damaged or lost tiles, done markers and stored images, drivers
killed (SIGKILL) at every step of creation and mid-job, and the checks that must fail before any
compute. After each fault: a clear error naming the store and the tile, or a re-run that repairs
the store and returns a Gram bit-identical to kernel_matrix; never a wrong matrix without an error.

Tiny jobs (10 images 4x4x1, tile 4: 6 tiles, NumPy backend, synchronous); the killed drivers are
separate processes (tests/_store_fault_driver.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("zarr")
pytest.importorskip("dask")

import cntk_core  # noqa: E402
from cntk_core.distributed import gram_to_store  # noqa: E402
from cntk_core.store import (  # noqa: E402
    CorruptStoreError,
    GramStore,
    IncompleteStoreError,
    StoreMismatchError,
    StoreWriteError,
)

HERE = Path(__file__).parent
DRIVER = HERE / "_store_fault_driver.py"
from _store_fault_driver import DEPTH, images, job  # noqa: E402

ALL_TILES = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]


@pytest.fixture(scope="module")
def reference():
    return cntk_core.kernel_matrix(images(), depth=DEPTH, backend="numpy")


def chunk(path: Path, array: str, *index: int) -> Path:
    """The file of one zarr chunk (v3 default keys: ``c/i/j/...``)."""
    return path.joinpath(array, "c", *map(str, index))


def damage(f: Path, how: str) -> None:
    assert f.is_file(), f
    data = f.read_bytes()
    if how == "deleted":
        f.unlink()
    elif how == "truncated":
        f.write_bytes(data[: len(data) // 2])
    elif how == "zero-byte":
        f.write_bytes(b"")
    elif how == "bit-flip":
        flipped = bytearray(data)
        flipped[len(data) // 3] ^= 0x10
        f.write_bytes(bytes(flipped))
    else:
        raise AssertionError(how)


# -- tiles ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("deleted", "chunk file missing"),
        ("truncated", "checksum mismatch"),
        ("zero-byte", "checksum mismatch"),
        ("bit-flip", "checksum mismatch"),
    ],
)
def test_a_damaged_tile_is_named_and_a_rerun_repairs_it(tmp_path, reference, how, reason):
    path = tmp_path / "g.zarr"
    job(path)
    damage(chunk(path, "gram", 0, 1), how)
    store = GramStore.open(path)
    assert store.is_complete  # the marker is still there: only reading the tile finds the damage
    with pytest.raises(CorruptStoreError, match=rf"1 damaged tiles \(tile \(0, 1\): {reason}") as info:
        store.load()
    assert info.value.tiles == [(0, 1)] and info.value.path == str(path)
    assert str(path) in str(info.value) and "re-run the same gram_to_store" in str(info.value)
    with pytest.raises(CorruptStoreError, match=rf"tile \(0, 1\) is damaged \({reason}"):
        store.as_dask()[0:4, 4:8].compute()
    with pytest.raises(CorruptStoreError, match=r"tile \(0, 1\) is damaged"):  # its mirror image
        store.as_dask()[4:8, 0:4].compute()
    with pytest.raises(CorruptStoreError, match=r"tile \(0, 1\)"):
        store.verify()

    repaired = job(path)
    run = repaired.last_run
    assert (run.tiles_already_done, run.tiles_computed, run.tiles_repaired, run.inputs_repaired) == (5, 1, 1, 0)
    assert np.array_equal(repaired.load(), reference)
    assert np.array_equal(repaired.as_dask().compute(), reference)
    assert repaired.verify() == 6 and repaired.compute_counts()[0, 1] == 2  # computed twice: once repaired


def test_without_verify_a_damaged_tile_is_kept_but_still_caught_on_read(tmp_path, reference):
    path = tmp_path / "g.zarr"
    job(path)
    damage(chunk(path, "gram", 1, 2), "bit-flip")
    trusted = job(path, verify=False)  # trusts the markers: nothing to do ...
    assert trusted.last_run.tiles_computed == 0
    with pytest.raises(CorruptStoreError, match=r"tile \(1, 2\)"):  # ... but never returns the damaged tile
        trusted.load()
    assert np.array_equal(job(path).load(), reference)


# -- done markers ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["deleted", "zero-byte", "truncated", "bit-flip"])
def test_a_damaged_or_lost_marker_is_named_and_its_tile_recomputed(tmp_path, reference, how):
    path = tmp_path / "g.zarr"
    job(path)
    damage(chunk(path, "done", 1, 2), how)
    store = GramStore.open(path)
    assert store.missing_tiles() == [(1, 2)] and store.compute_counts()[1, 2] == 0
    if how == "deleted":  # indistinguishable from a tile never computed
        error, message = IncompleteStoreError, r"incomplete: 1 of 6 tiles missing \(\(1, 2\)\)"
    else:
        error, message = CorruptStoreError, r"the done markers of 1 tiles are damaged \(\(1, 2\)\)"
    for read in (store.load, store.as_dask, store.verify):
        with pytest.raises(error, match=message) as info:
            read()
        assert info.value.tiles == [(1, 2)] and str(path) in str(info.value)

    run = job(path).last_run
    assert (run.tiles_computed, run.tiles_repaired) == (1, 0 if how == "deleted" else 1)
    store = GramStore.open(path)
    assert np.array_equal(store.load(), reference) and store.compute_counts()[1, 2] == 1


# -- stored images ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["deleted", "bit-flip", "zero-byte"])
@pytest.mark.parametrize("array", ["x1", "x2"])
def test_damaged_stored_images_are_rewritten_from_the_drivers_data(tmp_path, how, array):
    """The issue's case: damage a block of stored images and the done markers of its tiles, re-run.
    Before, the tiles were recomputed from the damaged (or all-zero) images and the Gram was wrong."""
    path = tmp_path / "g.zarr"
    x2 = None if array == "x1" else images(6, seed=1)
    expected = cntk_core.kernel_matrix(images(), x2, depth=DEPTH, backend="numpy")
    job(path, x2=x2)
    damage(chunk(path, array, 1, 0, 0, 0), how)  # images 4:8
    rows = "4:8" if array == "x1" else "4:6"
    with pytest.raises(CorruptStoreError, match=rf"stored images damaged \({array} rows {rows}"):
        GramStore.open(path).verify()
    users = [(0, 1), (1, 1), (1, 2)] if array == "x1" else [(0, 1), (1, 1), (2, 1)]
    for tile in users:
        chunk(path, "done", *tile).unlink()

    store = job(path, x2=x2)
    run = store.last_run
    assert (run.inputs_repaired, run.tiles_computed) == (1, 3)
    assert np.array_equal(store.load(), expected)
    assert store.verify() == len(store.tiles())


@pytest.mark.parametrize(
    ("how", "reason"),
    [("bit-flip", r"unreadable \(checksum mismatch"), ("deleted", "differ from the job's images \\(sha256")],
)
def test_images_damaged_under_a_running_job_are_refused_not_used(tmp_path, reference, how, reason):
    """A worker checks the rows it reads: their checksum, and their sha256 against the driver's
    (a lost chunk reads as zeros, which no checksum catches)."""
    path = tmp_path / "g.zarr"

    def damage_block_2_after_the_first_tile(done, total):
        if done == 1:
            damage(chunk(path, "x1", 2, 0, 0, 0), how)  # images 8:10

    with pytest.raises(CorruptStoreError, match=rf"tile \(0, 2\): the stored images x1 rows 8:10 {reason}") as info:
        job(path, progress=damage_block_2_after_the_first_tile)
    assert str(path) in str(info.value) and "they were not used" in str(info.value)
    counts = GramStore.open(path).compute_counts()
    assert counts[0, 0] == counts[0, 1] == 1 and counts[:, 2].sum() == 0  # nothing from the damaged rows

    store = job(path)
    assert store.last_run.inputs_repaired == 1 and np.array_equal(store.load(), reference)


def test_stored_images_deleted_under_a_running_job_are_named_not_a_raw_error(tmp_path, reference):
    """The array read by a worker vanished mid-job: before, a raw KeyError: 'x1' naming nothing."""
    path = tmp_path / "g.zarr"

    def delete_x1_after_the_first_tile(done, total):
        if done == 1:
            shutil.rmtree(path / "x1")

    message = r"tile \(0, 1\): the stored images x1 rows 0:4 unreadable \(the array 'x1' is missing\)"
    with pytest.raises(CorruptStoreError, match=message):
        job(path, progress=delete_x1_after_the_first_tile)
    store = job(path)
    assert store.last_run.arrays_repaired == ("x1",) and store.last_run.inputs_repaired == 3
    assert np.array_equal(store.load(), reference)


# -- lost or damaged arrays -------------------------------------------------------------------------------
@pytest.mark.parametrize("array", ["gram", "done"])
def test_a_lost_gram_or_done_array_is_named_and_the_first_rerun_recomputes_every_tile(tmp_path, reference, array):
    """Before: load() raised a raw KeyError: 'gram' (or IncompleteStoreError for 'done'), and the first
    re-run 'succeeded' with 0 tiles computed, 6 skipped, leaving a store of NaN tiles."""
    path = tmp_path / "g.zarr"
    job(path)
    shutil.rmtree(path / array)
    store = GramStore.open(path)
    for read in (store.load, store.verify, store.as_dask):
        with pytest.raises(CorruptStoreError, match=rf"the array '{array}' is missing .* recomputes every") as info:
            read()
        assert str(path / array) in str(info.value) and info.value.tiles == ALL_TILES

    run = job(path).last_run
    assert (run.tiles_computed, run.tiles_repaired, run.arrays_repaired) == (6, 6, (array,))
    assert np.array_equal(GramStore.open(path).load(), reference)
    assert job(path).last_run.tiles_computed == 0


@pytest.mark.parametrize(
    ("array", "how"),
    [("gram", "truncated"), ("done", "truncated"), ("x1", "truncated"), ("x2", "truncated"), ("gram", "altered shape")],
)
def test_damaged_array_metadata_is_named_and_a_rerun_rewrites_it_keeping_the_chunks(tmp_path, array, how):
    """Before: a raw JSONDecodeError from load(), verify() and the re-run, naming neither store nor folder."""
    path = tmp_path / "g.zarr"
    x2 = images(6, seed=1) if array == "x2" else None
    expected = cntk_core.kernel_matrix(images(), x2, depth=DEPTH, backend="numpy")
    job(path, x2=x2)
    meta_file = path / array / "zarr.json"
    original = meta_file.read_bytes()
    if how == "truncated":
        meta_file.write_bytes(original[: len(original) // 2])
        reason = r"damaged \(JSONDecodeError"
    else:
        meta = json.loads(original)
        meta["shape"][0] += 1
        meta_file.write_text(json.dumps(meta))
        reason = r"damaged \(shape \(\d+, .*\) instead of"
    store = GramStore.open(path)
    assert ("tiles ?/6 done" if array == "done" else "tiles 6/6 done") in repr(store)  # a repr never raises
    reads = (store.verify,) if array.startswith("x") else (store.load, store.verify, store.as_dask)
    for read in reads:
        with pytest.raises(CorruptStoreError, match=rf"the metadata of the array '{array}' .* is {reason}") as info:
            read()
        assert str(meta_file) in str(info.value) and "re-run the same gram_to_store" in str(info.value)

    run = job(path, x2=x2).last_run
    assert (run.tiles_computed, run.inputs_repaired, run.arrays_repaired) == (0, 0, (array,))
    assert meta_file.read_bytes() == original  # rewritten as it was created; the chunks were kept
    store = GramStore.open(path)
    assert np.array_equal(store.load(), expected) and store.verify() == len(store.tiles())


def test_damaged_gram_metadata_rechecks_every_tile_even_without_verify(tmp_path, reference):
    path = tmp_path / "g.zarr"
    job(path)
    damage(chunk(path, "gram", 1, 1), "bit-flip")
    (path / "gram" / "zarr.json").write_bytes(b"{")
    run = job(path, verify=False).last_run  # the markers alone cannot vouch for chunks under new metadata
    assert (run.tiles_computed, run.tiles_repaired, run.arrays_repaired) == (1, 1, ("gram",))
    assert np.array_equal(GramStore.open(path).load(), reference)


def test_killed_writers_partial_files_are_swept_by_a_rerun(tmp_path, reference):
    """zarr writes a chunk to ``<key>.<uuid>.partial`` and renames it; a killed writer's stayed forever."""
    path = tmp_path / "g.zarr"
    job(path)
    old = [
        chunk(path, "gram", 0, 1).with_name("1." + "a" * 32 + ".partial"),
        chunk(path, "done", 1, 2).with_name("2." + "b" * 32 + ".partial"),
        path / "x1" / ("zarr." + "c" * 32 + ".partial"),
    ]
    live = chunk(path, "gram", 1, 1).with_name("1." + "d" * 32 + ".partial")  # a running writer's
    for f in [*old, live]:
        f.write_bytes(b"half a chunk")
    for f in old:
        os.utime(f, (1e9, 1e9))
    store = job(path)  # a complete store: nothing to compute, only the leftovers to remove
    assert [f.exists() for f in old] == [False, False, False] and live.exists()
    assert store.last_run.tiles_computed == 0 and np.array_equal(store.load(), reference)


# -- killed drivers -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("point", "already_done"),
    [
        ("before_publish", 0),
        ("after_publish", 0),
        ("after_arrays", 0),
        ("mid_inputs", 0),
        ("mid_tile", 2),
        ("mid_job", 3),
    ],
)
def test_a_driver_killed_during_creation_or_mid_job_leaves_a_store_the_rerun_finishes(
    tmp_path, reference, point, already_done
):
    path = tmp_path / "g.zarr"
    proc = subprocess.run(
        [sys.executable, str(DRIVER), "kill", point, str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    if point == "before_publish":  # only the temporary metadata file: no store yet
        (leftover,) = path.iterdir()
        assert leftover.name.startswith(".cntk-publish-")
        os.utime(leftover, (1e9, 1e9))  # as if it were left an hour ago: the re-run removes it
        with pytest.raises(ValueError, match="not a zarr store"):
            GramStore.open(path)
    else:
        with pytest.raises(IncompleteStoreError, match=str(path)):
            GramStore.open(path).load()
        with pytest.raises(StoreMismatchError, match=r"belongs to another job \(NTK depth 2 .* pid"):
            job(path, depth=3)  # the killed job still owns the path

    store = job(path)
    run = store.last_run
    assert (run.tiles_already_done, run.tiles_computed) == (already_done, 6 - already_done)
    assert np.array_equal(store.load(), reference)
    assert store.verify() == 6
    assert not list(path.glob(".cntk-*"))


# -- failing before compute, nothing created ------------------------------------------------------------
def _forbid_compute(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("a tile was computed")

    monkeypatch.setattr(cntk_core.gram, "kernel_matrix", boom)


@pytest.mark.parametrize("scheduler", ["synchronous", None])
def test_an_unusable_backend_fails_before_the_store_is_created(tmp_path, monkeypatch, scheduler):
    from cntk_core import backend

    monkeypatch.setattr(backend, "gpu_status", lambda: (False, "cupy installed, no usable CUDA device"))
    _forbid_compute(monkeypatch)
    path = tmp_path / "g.zarr"
    with pytest.raises(RuntimeError, match="backend 'cupy' is not usable on this machine: .*no usable CUDA device"):
        gram_to_store(path, images(), depth=2, backend="cupy", scheduler=scheduler)
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_scheduler_fails_before_the_store_is_created(tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    from cntk_core import _cluster

    monkeypatch.setattr(_cluster, "CONNECT_TIMEOUT", "1s")
    _forbid_compute(monkeypatch)
    with pytest.raises(OSError, match=r"cannot connect to the Dask scheduler at 'tcp://127.0.0.1:9' \(nothing was"):
        gram_to_store(tmp_path / "g.zarr", images(), depth=2, scheduler="tcp://127.0.0.1:9")
    assert list(tmp_path.iterdir()) == []


def test_a_complete_store_needs_no_scheduler(tmp_path, monkeypatch, reference):
    """Only a job with tiles to compute connects; a new store is checked against the scheduler first."""
    pytest.importorskip("distributed")
    from cntk_core import _cluster

    monkeypatch.setattr(_cluster, "CONNECT_TIMEOUT", "1s")
    path = tmp_path / "g.zarr"
    job(path)
    done = gram_to_store(path, images(), depth=DEPTH, backend="numpy", scheduler="tcp://127.0.0.1:9")
    assert done.last_run.tiles_computed == 0 and np.array_equal(done.load(), reference)
    chunk(path, "done", 0, 0).unlink()
    with pytest.raises(OSError, match="cannot connect to the Dask scheduler"):
        gram_to_store(path, images(), depth=DEPTH, backend="numpy", scheduler="tcp://127.0.0.1:9")


@pytest.mark.parametrize("where", ["leaf", "parent"])
def test_a_store_name_too_long_fails_before_anything_is_created(tmp_path, monkeypatch, where):
    _forbid_compute(monkeypatch)
    long = "g" * 300
    path = tmp_path / "new" / (f"{long}.zarr" if where == "leaf" else f"{long}/g.zarr")
    with pytest.raises(StoreWriteError, match=r"cannot write the Gram store .* is 30\d bytes, more than"):
        job(path)
    assert list(tmp_path.iterdir()) == []


def test_a_format_1_store_is_read_but_not_resumed(tmp_path, reference):
    path = tmp_path / "g.zarr"
    job(path)
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["format"] = "cntk-lab-gram/1"
    (path / "zarr.json").write_text(json.dumps(meta))
    assert np.array_equal(GramStore.open(path).load(), reference)
    with pytest.raises(StoreMismatchError, match="earlier cntk-lab .*cntk-lab-gram/1"):
        job(path)
