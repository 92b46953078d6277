"""Tiled, distributed, resumable Gram jobs (cntk_core.distributed / cntk_core.store).

One 2-process LocalCluster is shared by the module. The tests use the NumPy backend (no JIT
compile in fresh worker processes; benchmarks/bench_distributed.py checks the Numba path). The
reference is always the serial, in-memory kernel_matrix, and tiles must reproduce it bit for bit
(the engine's per-pair values do not depend on tiling).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_images, raises_param

import cntk_core
from cntk_core.distributed import _check_progress, _check_scheduler, gram_to_store
from cntk_core.store import (
    CorruptStoreError,
    GramStore,
    IncompleteStoreError,
    StoreMismatchError,
    StoreSpaceError,
    StoreWriteError,
)
from cntk_core.validation import ParameterTypeError

HERE = Path(__file__).parent
from _distributed_driver import images as driver_images  # noqa: E402

SLOW = dict(depth=3, backend="numpy")  # ~0.1-0.3 s per 8x8 tile of 8x8x2 images on one core
N_SLOW, SEED = 40, 7


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
            env={"OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"},
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        c.wait_for_workers(2)
        c.run(lambda: __import__("cntk_core.distributed") and __import__("zarr"))  # warm the workers' imports
        yield c


@pytest.fixture(scope="module")
def slow_job():
    """The images of the driver script and their serial Gram (reference)."""
    x = driver_images(N_SLOW, SEED)
    return x, cntk_core.kernel_matrix(x, **SLOW)


def small(n, seed=0, shape=(6, 6, 2)):
    return make_images(n, shape, seed)


# -- results equal the serial kernel_matrix, bit for bit ----------------------------------------------
def test_cluster_matches_serial_bit_for_bit(tmp_path, client):
    x, y = small(29, 1), small(13, 2)
    sym = gram_to_store(tmp_path / "sym.zarr", x, depth=3, tile_size=8, scheduler=client, backend="numpy")
    expected = cntk_core.kernel_matrix(x, depth=3, backend="numpy")
    assert np.array_equal(sym.load(), expected)
    assert np.array_equal(sym.as_dask().compute(), expected)
    assert sym.last_run.tiles_computed == len(sym.tiles()) == 10  # 4x4 tile grid, upper triangle
    assert (sym.compute_counts()[np.triu_indices(4)] == 1).all()

    cross = gram_to_store(
        tmp_path / "cross.zarr", x, y, depth=3, kind="nngp", tile_size=8, scheduler=client, backend="numpy"
    )
    expected = cntk_core.kernel_matrix(x, y, depth=3, kind="nngp", backend="numpy")
    assert cross.load().shape == (29, 13)
    assert np.array_equal(cross.load(), expected)
    assert cross.last_run.tiles_computed == 8


def test_synchronous_run_and_reopen(tmp_path):
    x = small(11, 3)
    job = dict(depth=3, readout="vanilla", fix=True, backend="numpy")
    store = gram_to_store(tmp_path / "g.zarr", x, tile_size=4, scheduler="synchronous", **job)
    expected = cntk_core.kernel_matrix(x, **job)
    assert np.array_equal(store.load(), expected)
    reopened = GramStore.open(tmp_path / "g.zarr")
    assert reopened.is_complete and reopened.missing_tiles() == []
    meta = reopened.metadata
    assert meta["network"] == {"depth": 3, "readout": "vanilla", "fix_first": True, "fix_last": True, "kind": "ntk"}
    assert meta["dtype"] == "float64" and meta["engine_version"] == cntk_core.__version__
    assert meta["data"]["x1"]["shape"] == [11, 6, 6, 2] and meta["data"]["x2"] is None
    assert np.array_equal(reopened.load(), expected)


# -- interruption and resume --------------------------------------------------------------------------
def test_interrupted_job_keeps_finished_tiles_and_resumes(tmp_path):
    x = small(20, 4)
    path = tmp_path / "g.zarr"

    def stop_after_three(done, total):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        gram_to_store(
            path, x, depth=3, tile_size=4, scheduler="synchronous", backend="numpy", progress=stop_after_three
        )
    partial = GramStore.open(path)
    assert len(partial.tiles()) == 15 and len(partial.missing_tiles()) == 12
    with pytest.raises(IncompleteStoreError, match="12 of 15 tiles missing"):
        partial.load()
    with pytest.raises(IncompleteStoreError, match="12 of 15 tiles missing"):
        partial.as_dask()  # refused unless asked for a look at the unfinished store
    assert np.isnan(partial.as_dask(allow_missing=True).compute()).any()

    resumed = gram_to_store(path, x, depth=3, tile_size=4, scheduler="synchronous", backend="numpy")
    assert (resumed.last_run.tiles_already_done, resumed.last_run.tiles_computed) == (3, 12)
    assert (resumed.compute_counts()[np.triu_indices(5)] == 1).all()  # no finished tile recomputed
    assert np.array_equal(resumed.load(), cntk_core.kernel_matrix(x, depth=3, backend="numpy"))
    again = gram_to_store(path, x, depth=3, tile_size=4, scheduler="synchronous", backend="numpy")
    assert again.last_run.tiles_computed == 0


def test_worker_killed_mid_job_still_gives_complete_result(tmp_path, client, slow_job):
    x, expected = slow_job
    pids = client.run(os.getpid)
    killed = []

    def kill_a_busy_worker(done, total):
        if killed:
            return
        busy = [addr for addr, keys in client.processing().items() if keys]
        assert busy, "no tile in flight: make tiles slower"
        os.kill(pids[busy[0]], signal.SIGKILL)
        killed.append((busy[0], done, total))

    store = gram_to_store(tmp_path / "g.zarr", x, tile_size=8, scheduler=client, progress=kill_a_busy_worker, **SLOW)
    assert killed and killed[0][1] < killed[0][2]  # killed while tiles were still missing
    assert store.is_complete and np.array_equal(store.load(), expected)
    assert (store.compute_counts()[np.triu_indices(5)] >= 1).all()
    client.wait_for_workers(2, timeout=60)  # the nanny restarted the worker
    assert pids[killed[0][0]] not in client.run(os.getpid).values()


def test_driver_killed_mid_job_resumes_without_recomputing(tmp_path, client, slow_job):
    x, expected = slow_job
    path = tmp_path / "g.zarr"
    cmd = [sys.executable, str(HERE / "_distributed_driver.py"), str(path), str(N_SLOW), str(SEED), "3", "8"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        done = 0
        while time.monotonic() < deadline and proc.poll() is None:
            if (path / "done").exists():
                done = int((GramStore.open(path).compute_counts() > 0).sum())
                if done >= 2:
                    break
            time.sleep(0.02)
        assert proc.poll() is None, f"driver ended before it could be killed: {proc.stdout.read().decode()[-2000:]}"
        assert done >= 2, "no tile finished in time"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its LocalCluster (same process group)
        proc.wait()

    store = GramStore.open(path)
    missing = store.missing_tiles()
    time.sleep(0.3)
    assert store.missing_tiles() == missing  # nothing left running after the kill
    assert 0 < len(missing) < len(store.tiles()) == 15

    resumed = gram_to_store(path, x, tile_size=8, scheduler=client, progress=False, **SLOW)
    assert (resumed.last_run.tiles_computed, resumed.last_run.tiles_skipped) == (len(missing), 0)
    assert resumed.last_run.tiles_already_done == 15 - len(missing)
    assert (resumed.compute_counts()[np.triu_indices(5)] == 1).all()  # every tile computed exactly once
    assert np.array_equal(resumed.load(), expected)


def test_a_damaged_tile_is_repaired_on_a_cluster(tmp_path, client):
    """The repair task gets a key of its own (the scheduler may remember the tile's first task)."""
    x = small(12, 8)
    path = tmp_path / "g.zarr"
    job = dict(depth=3, tile_size=4, backend="numpy", progress=False)
    gram_to_store(path, x, scheduler=client, **job)
    chunk = path / "gram" / "c" / "1" / "2"
    data = bytearray(chunk.read_bytes())
    data[7] ^= 1
    chunk.write_bytes(bytes(data))
    with pytest.raises(CorruptStoreError, match=r"tile \(1, 2\): checksum mismatch"):
        GramStore.open(path).load()
    store = gram_to_store(path, x, scheduler=client, **job)
    assert (store.last_run.tiles_computed, store.last_run.tiles_repaired) == (1, 1)
    assert np.array_equal(store.load(), cntk_core.kernel_matrix(x, depth=3, backend="numpy"))


def test_a_backend_the_workers_cannot_use_fails_before_the_store_is_created(tmp_path, client):
    if any(client.run(lambda: cntk_core.backend.gpu_status()[0]).values()):
        pytest.skip("the workers have a usable GPU")
    with pytest.raises(RuntimeError, match=r"backend 'cupy' is not usable on tcp://127\.0\.0\.1:\d+ \(and 1 more"):
        gram_to_store(tmp_path / "g.zarr", small(6), depth=3, scheduler=client, backend="cupy")
    assert not (tmp_path / "g.zarr").exists()


# -- refusing to mix jobs -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "field"),
    [
        (dict(depth=4), "network.depth"),
        (dict(readout="vanilla"), "network.readout"),
        (dict(fix_last=True), "network.fix_last"),
        (dict(kind="nngp"), "network.kind"),
        (dict(dtype="float32"), "dtype"),
        (dict(tile_size=5), "tile_size"),
        (dict(x1_offset=1e-9), "data.x1.sha256"),
        (dict(x1_rows=9), "data.x1"),
        (dict(engine="9.9"), "engine_version"),
    ],
)
def test_store_of_another_job_is_refused(tmp_path, monkeypatch, change, field):
    x = small(10, 5)
    base = dict(depth=3, tile_size=4, scheduler="synchronous", backend="numpy")
    path = tmp_path / "g.zarr"
    gram_to_store(path, x, **base)
    before = (path / "gram").stat().st_mtime_ns, GramStore.open(path).compute_counts().copy()
    kwargs = {**base, **{k: v for k, v in change.items() if k not in ("x1_offset", "x1_rows", "engine")}}
    x_new = x + change.get("x1_offset", 0.0)
    x_new = x_new[: change.get("x1_rows", len(x))]
    if "engine" in change:
        monkeypatch.setattr(cntk_core, "__version__", change["engine"])
    with pytest.raises(StoreMismatchError, match=field.replace(".", r"\.")):
        gram_to_store(path, x_new, **kwargs)
    assert np.array_equal(GramStore.open(path).compute_counts(), before[1])


def test_symmetric_and_cross_gram_do_not_mix(tmp_path):
    x = small(8, 6)
    path = tmp_path / "g.zarr"
    gram_to_store(path, x, depth=3, tile_size=4, scheduler="synchronous", backend="numpy")
    with pytest.raises(StoreMismatchError, match="data.x2"):
        gram_to_store(path, x, x, depth=3, tile_size=4, scheduler="synchronous", backend="numpy")


# -- failing fast, before any compute ------------------------------------------------------------------
def _forbid_compute(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("a tile was computed")

    monkeypatch.setattr(cntk_core.gram, "kernel_matrix", boom)


def test_unwritable_store_fails_before_compute(tmp_path, monkeypatch):
    _forbid_compute(monkeypatch)
    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory")
    with pytest.raises(StoreWriteError, match="cannot write the Gram store"):
        gram_to_store(a_file / "g.zarr", small(6), depth=3, tile_size=4, scheduler="synchronous")
    with pytest.raises(OSError, match="cannot write the Gram store"):  # StoreWriteError is an OSError
        gram_to_store("/proc/cntk-lab-test.zarr", small(6), depth=3, tile_size=4, scheduler="synchronous")


def test_full_disk_fails_before_compute(tmp_path, monkeypatch):
    _forbid_compute(monkeypatch)
    real = shutil.disk_usage

    def nearly_full(p):
        return real(p)._replace(free=100_000)  # 100 kB free: less than one 256x256 tile

    monkeypatch.setattr(shutil, "disk_usage", nearly_full)
    path = tmp_path / "g.zarr"
    with pytest.raises(StoreSpaceError, match="not enough free disk space"):
        gram_to_store(path, small(300, shape=(2, 2, 1)), depth=3, scheduler="synchronous")
    assert not path.exists()  # nothing was created either


def test_full_disk_is_checked_against_what_is_left(tmp_path, monkeypatch):
    x = small(8, 7)
    path = tmp_path / "g.zarr"
    gram_to_store(path, x, depth=3, tile_size=4, scheduler="synchronous", backend="numpy")
    _forbid_compute(monkeypatch)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1 << 40, 1 << 40, 0))
    # a complete store needs no more space: resuming it is a no-op, not an error
    assert gram_to_store(path, x, depth=3, tile_size=4, scheduler="synchronous", backend="numpy").is_complete


# -- argument checks -----------------------------------------------------------------------------------
def test_bad_arguments_have_clear_errors(tmp_path):
    x = small(4)
    p = tmp_path / "g.zarr"
    with raises_param("tile_size"):
        gram_to_store(p, x, depth=3, tile_size=0, scheduler="synchronous")
    with raises_param("scheduler", ParameterTypeError):
        gram_to_store(p, x, depth=3, scheduler=42)
    with raises_param("n_workers", match="applies only"):  # says when n_workers applies
        gram_to_store(p, x, depth=3, scheduler="synchronous", n_workers=2)
    with raises_param("x1", ParameterTypeError, match="integer images"):  # says why: the pixel scale
        gram_to_store(p, x.astype(np.uint8), depth=3, scheduler="synchronous")
    with raises_param("x2"):  # another image shape
        gram_to_store(p, x, small(3, shape=(5, 5, 2)), depth=3, scheduler="synchronous")
    if importlib.util.find_spec("dask_cuda") is None:
        with pytest.raises(ImportError, match="dask-cuda"):  # says what to install
            gram_to_store(p, x, depth=3, scheduler="cuda")
    with raises_param("scheduler"):
        gram_to_store(p, x, depth=3, scheduler="sync")  # a typo, not a host name without a port
    with raises_param("progress", ParameterTypeError):
        gram_to_store(p, x, depth=3, scheduler="synchronous", progress="no")
    assert not p.exists()
    with pytest.raises(FileNotFoundError):
        GramStore.open(tmp_path / "nothing.zarr")


@pytest.mark.parametrize("mode", ["w", "w-", "a", "x", "read"])
def test_opening_a_store_never_creates_or_wipes_it(tmp_path, mode):
    """zarr's mode "w" wiped the whole store before the format check refused it."""
    x = small(5, 3)
    store = gram_to_store(tmp_path / "g.zarr", x, depth=3, tile_size=2, scheduler="synchronous", backend="numpy")
    expected = store.load()
    with raises_param("mode"):
        GramStore.open(tmp_path / "g.zarr", mode=mode)
    assert np.array_equal(GramStore.open(tmp_path / "g.zarr", mode="r+").load(), expected)


def test_counts_of_the_job_are_integers(tmp_path):
    x = make_images(3, (4, 4, 2))
    with raises_param("n_workers", ParameterTypeError, match=r"\(or None\)"):  # None: a cluster's own count
        gram_to_store(tmp_path / "a.zarr", x, depth=2, n_workers=True)
    with raises_param("tile_size", ParameterTypeError):
        gram_to_store(tmp_path / "b.zarr", x, depth=2, tile_size=2.5)
    K = gram_to_store(tmp_path / "c.zarr", x, depth=2, tile_size=2.0, scheduler="synchronous", progress=False)
    np.testing.assert_allclose(K.load(), cntk_core.kernel_matrix(x, depth=2), rtol=1e-12)


def test_the_progress_argument():
    for ok in (True, False, None, 0, 1, print):
        assert _check_progress(ok) is None
    with raises_param("progress", ParameterTypeError, match=r"a callable \(done, total\), got 'yes'$"):
        _check_progress("yes")  # says what a progress callable is given


# -- scheduler addresses: each accepted form beside a near miss that is refused -------------------------
@pytest.mark.parametrize(
    "address,near_miss",
    [
        ("tcp://10.0.0.1:8786", "tcp://10.0.0.1:87a6"),
        ("host:8786", "host: 8786"),
        ("[::1]:8786", "[::1:8786"),
        ("tls://[fe80::1]:8786", "tls://[fe80::1]:"),
        ("[fe80::1%eth0]:8786", "[fe80::1%eth0:8786"),
        ("tcp://host", "tcp:/host"),
        ("inproc://10.0.0.1/123/1", "inproc:/10.0.0.1/123/1"),
    ],
)
def test_scheduler_addresses_are_accepted_and_their_near_misses_refused(address, near_miss):
    assert _check_scheduler(address) is None
    with raises_param("scheduler"):
        _check_scheduler(near_miss)


@pytest.mark.parametrize(
    "address", ["synchronus", "host", "[::1]", "[::1:8786", "host: 8786", "tcp://[::1:8786", "tcp://host:87a6",
                "tcp://host:port"]
)  # fmt: skip
def test_scheduler_typos_are_refused(address):
    with raises_param("scheduler", match="address of a running Dask scheduler such as 'tcp://host:8786'"):
        _check_scheduler(address)  # the message shows what an address looks like


def test_the_interrupt_race_record_of_distributed_is_dropped_and_nothing_else():
    """Ctrl-C before distributed's ``sync`` has its future: its cancel callback raises NameError on the
    event loop and tornado logs it at the moment of the interrupt (seen once in CI under load)."""
    import logging
    import sys

    from cntk_core._cluster import _InterruptedSyncFilter, quiet_on_interrupt

    def record(exc):
        try:
            raise exc
        except Exception:
            return logging.LogRecord("tornado.application", logging.ERROR, "x", 1, "callback", None, sys.exc_info())

    race = NameError("cannot access free variable 'future' where it is not associated with a value")
    f = _InterruptedSyncFilter()
    assert not f.filter(record(race))
    assert f.filter(record(NameError("name 'x' is not defined"))) and f.filter(record(ValueError("'future'")))
    assert f.filter(logging.LogRecord("tornado.application", logging.ERROR, "x", 1, "no exception", None, None))
    log = logging.getLogger("tornado.application")
    before = list(log.filters)
    try:
        for _ in range(2):
            with quiet_on_interrupt():
                pass
        added = [x for x in log.filters if x not in before]
        assert len(added) <= 1 and any(isinstance(x, _InterruptedSyncFilter) for x in log.filters)
    finally:
        log.filters[:] = before
