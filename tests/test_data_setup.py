"""CIFAR-10 for users (cntk_core.data): the decoded cache (reuse, fault detection, rebuild), what killed
processes leave, the subset builder, and which data sets are available. All data are fake tarballs
made by the tests (:mod:`cifar_fake`); "downloads" come from ``file://`` URLs into a temporary cache.
The ``cntk-lab data`` commands are tested in test_cli_data.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from cifar_fake import check_same, decoded_folder, make_fake_cifar10

import cntk_core.data as data
import cntk_core.data._cifar as cifar_mod
import cntk_core.data._download as download_mod
from cntk_core.data import DataError, load_cifar10, load_dataset

ROOT = Path(__file__).resolve().parents[1]
#: the reference subset files, when this machine has them (set by conftest before the data_cache fixture clears it)
REFERENCE_SUBSET = os.environ.get("CNTK_CIFAR10_SUBSET")


@pytest.fixture
def as_official(fake_cifar10, monkeypatch):
    """The fake tarball plays the official file (its digests become the official ones)."""
    monkeypatch.setattr(cifar_mod, "CIFAR10_MD5", fake_cifar10.md5)
    monkeypatch.setattr(cifar_mod, "CIFAR10_SHA256", fake_cifar10.sha256)
    return fake_cifar10


def no_tarball_reads(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the tarball was read although its decoded arrays are cached")

    monkeypatch.setattr(cifar_mod, "_read_tarball", boom)


# ----------------------------------------------------------------------------- the decoded cache
def test_decoded_once_then_read_from_the_cache(fake_cifar10, data_cache, monkeypatch):
    check_same(load_cifar10(fake_cifar10.path, expected_md5=fake_cifar10.md5), fake_cifar10)
    folder = decoded_folder(data_cache, fake_cifar10)
    assert sorted(p.name for p in folder.iterdir()) == [
        "manifest.json",
        "x_test.npy",
        "x_train.npy",
        "y_test.npy",
        "y_train.npy",
    ]
    assert not [p for p in (data_cache / "cifar10-decoded").iterdir() if p.name.startswith(".")]  # no temp left
    stale = data_cache / "cifar10-decoded" / ".0123.killed.part"  # what a killed writer leaves
    stale.mkdir()
    os.utime(stale, (0, 0))
    shutil.rmtree(folder)
    load_cifar10(fake_cifar10.path, expected_md5=fake_cifar10.md5)  # rebuilds: removes the stale one
    assert folder.is_dir() and not stale.exists()
    no_tarball_reads(monkeypatch)
    ds = load_cifar10(fake_cifar10.path, expected_md5=fake_cifar10.md5)
    check_same(ds, fake_cifar10)
    assert not ds.x_train.flags.writeable  # a read-only map of the cache: it cannot be altered by accident
    with pytest.raises(DataError, match="md5"):  # the recorded digests are still checked
        load_cifar10(fake_cifar10.path)  # default: the official md5


def test_cached_arrays_serve_the_official_file_without_its_tarball(as_official, data_cache, tmp_path):
    url = as_official.path.as_uri()
    check_same(load_dataset("cifar10", url=url, progress=False), as_official)  # download + decode
    (data_cache / "cifar-10-python.tar.gz").unlink()
    missing = (tmp_path / "nowhere.tar.gz").as_uri()
    check_same(load_dataset("cifar10", url=missing), as_official)  # no download attempted
    assert data.dataset_available("cifar10") and data.data_status()["cifar10_decoded"]


@pytest.mark.parametrize("fault", ["truncated", "flipped", "deleted", "manifest", "emptied"])
def test_corrupt_cache_is_detected_and_rebuilt(fault, fake_cifar10, data_cache):
    load_cifar10(fake_cifar10.path, expected_md5=fake_cifar10.md5)
    folder = decoded_folder(data_cache, fake_cifar10)
    target = folder / "x_train.npy"
    blob = target.read_bytes()
    if fault == "truncated":
        target.write_bytes(blob[: len(blob) - 100])
    elif fault == "flipped":  # one pixel: the file still parses, only the checksum can tell
        target.write_bytes(blob[:-5] + bytes([blob[-5] ^ 0x01]) + blob[-4:])
    elif fault == "deleted":
        (folder / "y_test.npy").unlink()
    elif fault == "manifest":
        (folder / "manifest.json").write_text("{not json")
    else:
        target.write_bytes(b"")
    with pytest.warns(UserWarning, match="rebuilt from the tarball"):
        ds = load_cifar10(fake_cifar10.path, expected_md5=fake_cifar10.md5)
    check_same(ds, fake_cifar10)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rebuilt: the next load is clean
        check_same(load_cifar10(fake_cifar10.path, expected_md5=fake_cifar10.md5), fake_cifar10)


def test_corrupt_cache_without_tarball_is_an_error_not_wrong_data(as_official, data_cache, tmp_path):
    load_dataset("cifar10", url=as_official.path.as_uri(), progress=False)
    (data_cache / "cifar-10-python.tar.gz").unlink()
    target = decoded_folder(data_cache, as_official) / "x_test.npy"
    blob = target.read_bytes()
    target.write_bytes(blob[:-1] + bytes([blob[-1] ^ 0xFF]))
    with pytest.warns(UserWarning, match="sha256 differs"), pytest.raises(FileNotFoundError, match="download=True"):
        load_cifar10(download=False)
    assert not decoded_folder(data_cache, as_official).exists()


def test_a_changed_tarball_is_hashed_again(data_cache, tmp_path):
    first = make_fake_cifar10(tmp_path / "a", seed=1)
    check_same(load_cifar10(first.path, expected_md5=first.md5), first)
    second = make_fake_cifar10(tmp_path / "b", seed=2)
    shutil.copyfile(second.path, first.path)  # same path, new content (new size/mtime/inode)
    check_same(load_cifar10(first.path, expected_md5=second.md5), second)
    with pytest.raises(DataError, match="md5"):
        load_cifar10(first.path, expected_md5=first.md5)


def test_unwritable_cache_still_loads(fake_cifar10, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CNTK_DATA_DIR", str(blocker))
    with pytest.warns(UserWarning, match="could not cache"):
        check_same(load_cifar10(fake_cifar10.path, expected_md5=fake_cifar10.md5), fake_cifar10)


def test_corrupt_cached_tarball_says_how_to_recover(as_official, data_cache):
    data_cache.mkdir(parents=True)
    blob = as_official.path.read_bytes()
    (data_cache / "cifar-10-python.tar.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="md5 .* delete .*cifar-10-python.tar.gz to download it again"):
        load_cifar10(download=False)


def test_a_repacked_tarball_is_told_to_use_its_folder(fake_cifar10, data_cache, tmp_path, monkeypatch):
    """A re-packed copy cannot match the official checksum; its extracted folder needs none: say so."""
    hint = r"if it is a re-packed copy of CIFAR-10, extract it \(tar -xzf .*cifar-10-python.tar.gz -C FOLDER\) and use"
    with pytest.raises(cifar_mod.ChecksumError, match=rf"md5 .*\(corrupt or not that file\); {hint} FOLDER"):
        load_cifar10(fake_cifar10.path)
    with pytest.raises(DataError) as info:  # the caller's own checksum: no official file was expected
        load_cifar10(fake_cifar10.path, expected_md5="0" * 32)
    assert "re-packed" not in str(info.value)
    monkeypatch.setenv("CNTK_CIFAR10", str(fake_cifar10.path))
    with pytest.raises(DataError, match=rf"\(set by CNTK_CIFAR10\); {hint}"):
        load_dataset("cifar10")
    monkeypatch.setenv("CNTK_CIFAR10", str(fake_cifar10.extract(tmp_path / "FOLDER")))  # the advice works
    check_same(load_dataset("cifar10"), fake_cifar10)


def test_env_points_at_a_tarball_or_folder(fake_cifar10, data_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("CNTK_CIFAR10", str(fake_cifar10.extract(tmp_path / "x")))
    check_same(load_dataset("cifar10"), fake_cifar10)
    monkeypatch.setenv("CNTK_CIFAR10", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="set by CNTK_CIFAR10"):
        load_dataset("cifar10")
    assert not data.dataset_available("cifar10")


# ----------------------------------------------------------------------------- what killed processes leave
def _stale(path: Path, hours: float = 2.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"partial")
    t = time.time() - hours * 3600
    os.utime(path, (t, t))
    return path


def _ended_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_a_sigkilled_downloads_part_file_goes_at_the_next_download(as_official, data_cache):
    """SIGKILL runs no ``finally``: the temporary file (170 MB for the real tarball) stayed for good."""
    blob = as_official.path.read_bytes()
    release = threading.Event()

    class Stalls(BaseHTTPRequestHandler):  # half the file, then nothing: the download is in progress
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(blob)))
            self.end_headers()
            self.wfile.write(blob[: len(blob) // 2])
            self.wfile.flush()
            release.wait(30)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Stalls)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/cifar-10-python.tar.gz"
    code = "import sys; from cntk_core.data import download_cifar10; download_cifar10(url=sys.argv[1], progress=False)"
    proc = subprocess.Popen([sys.executable, "-c", code, url], cwd=ROOT)  # CNTK_DATA_DIR: data_cache
    try:
        deadline = time.monotonic() + 30
        while not (parts := list(data_cache.glob(".cifar-10-python.tar.gz.*.part"))):
            assert proc.poll() is None and time.monotonic() < deadline, "the download did not start"
            time.sleep(0.05)
        proc.kill()
        proc.wait(timeout=10)
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        server.shutdown()
        server.server_close()
    (part,) = parts
    assert part.exists()  # what the killed process left
    old = _stale(data_cache / ".cifar-10-python.tar.gz.a1b2c3d4.part")  # untagged (older code), 2 h untouched
    fresh = _stale(data_cache / ".cifar-10-python.tar.gz.e5f6g7h8.part", hours=0)  # may be another machine's, live
    check_same(load_dataset("cifar10", url=as_official.path.as_uri(), progress=False), as_official)
    assert not part.exists() and not old.exists()  # the dead writer's at once, the untouched one by its age
    assert fresh.exists() and (data_cache / "cifar-10-python.tar.gz").is_file()


def test_sweep_removes_only_what_dead_or_idle_writers_left(tmp_path):
    name, machine, ended = "x.npz", download_mod._machine(), _ended_pid()
    gone = {
        "dead writer here": _stale(tmp_path / f".x.npz.{ended}-{machine}.k2j4.part", hours=0),
        "untouched 2 h": _stale(tmp_path / ".x.npz.k2j4.part"),
        "untouched 2 h, live writer": _stale(tmp_path / f"{download_mod.temp_prefix(name)}k2j4.part"),
    }
    kept = {
        "live writer (this process)": _stale(tmp_path / f"{download_mod.temp_prefix(name)}a9b8.part", hours=0),
        "dead pid on another machine": _stale(tmp_path / f".x.npz.{ended}-00000000.k2j4.part", hours=0),
        "fresh, writer unknown": _stale(tmp_path / ".x.npz.a9b8.part", hours=0),
        "the file itself": _stale(tmp_path / "x.npz"),
        "another name's": _stale(tmp_path / ".y.npz.k2j4.part"),
        "not a temporary": _stale(tmp_path / ".x.npz.k2j4.txt"),
    }
    (tmp_path / ".x.npz.dir.part").mkdir()  # folders have their own sweeper
    os.utime(tmp_path / ".x.npz.dir.part", (0, 0))
    download_mod.sweep_stale_temps(tmp_path, name)
    assert [k for k, p in gone.items() if p.exists()] == [] and [k for k, p in kept.items() if not p.exists()] == []
    assert (tmp_path / ".x.npz.dir.part").is_dir()
    download_mod.sweep_stale_temps(tmp_path / "missing", name)  # no folder: nothing to do, no error
    assert download_mod.temp_prefix(name) == f".x.npz.{os.getpid()}-{machine}."


def test_the_subset_builder_sweeps_stale_temporary_files(fake_cifar10, data_cache, tmp_path):
    out = tmp_path / "subset"
    train, test = data.SUBSET_FILES
    planted = [
        _stale(out / f".{train}.k2j4.part"),  # a killed build's, untagged
        _stale(out / f".{test}.{_ended_pid()}-{download_mod._machine()}.k2j4.part", hours=0),  # a dead builder's
        _stale(data_cache / "cifar10-decoded" / ".sources.json.k2j4"),  # the digest list's temporary
    ]
    fresh = _stale(data_cache / "cifar10-decoded" / ".sources.json.a9b8", hours=0)
    data.build_cifar10_subset(fake_cifar10.path, out, n_train=4, n_test=2, expected_md5=fake_cifar10.md5)
    assert [p for p in planted if p.exists()] == [] and fresh.exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(data.SUBSET_FILES)


# ----------------------------------------------------------------------------- the subset builder
def test_subset_builder_end_to_end(fake_cifar10, data_cache, tmp_path, monkeypatch):
    out = tmp_path / "subset"
    train, test = data.build_cifar10_subset(fake_cifar10.path, out, n_train=12, n_test=4, expected_md5=fake_cifar10.md5)
    assert sorted(p.name for p in out.iterdir()) == sorted(data.SUBSET_FILES) and train.parent == out
    assert (train.stat().st_mode & 0o777, test.stat().st_mode & 0o777) == (0o644, 0o644)  # shareable
    with np.load(train, allow_pickle=False) as z:
        assert sorted(z.files) == ["index", "x", "y", "y_all"]
        assert (z["x"].dtype, z["y"].dtype, z["index"].dtype, z["y_all"].dtype) == (
            np.uint8,
            np.uint8,
            np.int32,
            np.uint8,
        )
        np.testing.assert_array_equal(z["index"], np.arange(12))
        np.testing.assert_array_equal(z["y_all"], fake_cifar10.y_train)
    monkeypatch.setenv("CNTK_CIFAR10_SUBSET", str(out))
    ds = load_dataset("cifar10-subset")
    np.testing.assert_array_equal(ds.x_train, fake_cifar10.x_train[:12])
    np.testing.assert_array_equal(ds.y_train, fake_cifar10.y_train[:12])
    np.testing.assert_array_equal(ds.x_test, fake_cifar10.x_test[:4])
    np.testing.assert_array_equal(ds.y_test, fake_cifar10.y_test[:4])
    assert data.available_datasets() == ("digits", "cifar10-subset")


def test_subset_builder_defaults_reproduce_the_exact_subset(data_cache, tmp_path):
    """4,000 + 1,000 first images into <cache>/cifar10-subset; same layout as the reference files."""
    fake = make_fake_cifar10(tmp_path / "big", n_per_batch=1000, n_test=1200)  # 5,000 train / 1,200 test
    train, test = data.build_cifar10_subset(fake.path, expected_md5=fake.md5)
    assert train.parent == data_cache / "cifar10-subset" == data.default_subset_dir()
    ds = load_dataset("cifar10-subset")
    assert ds.x_train.shape == (4000, 32, 32, 3) and ds.x_test.shape == (1000, 32, 32, 3)
    np.testing.assert_array_equal(ds.x_train, fake.x_train[:4000])
    np.testing.assert_array_equal(ds.y_test, fake.y_test[:1000])
    reference = Path(REFERENCE_SUBSET or "/nonexistent")
    if (reference / data.SUBSET_FILES[0]).is_file():  # where a machine has the reference files (conftest)
        for name, ours in zip(data.SUBSET_FILES, (train, test), strict=True):
            with np.load(reference / name) as ref, np.load(ours) as z:  # y_all: the whole split (the fake's is small)
                layout = {k: (ref[k].dtype, ref[k].shape if k != "y_all" else ref[k].ndim) for k in ref.files}
                assert layout == {k: (z[k].dtype, z[k].shape if k != "y_all" else z[k].ndim) for k in z.files}


def test_subset_builder_errors(fake_cifar10, data_cache, tmp_path):
    with pytest.raises(ValueError, match="n_train=21 is more than the 20 images"):
        data.build_cifar10_subset(fake_cifar10.path, tmp_path / "o", n_train=21, expected_md5=fake_cifar10.md5)
    with pytest.raises(FileNotFoundError, match="no CIFAR-10 tarball or folder"):
        data.build_cifar10_subset(tmp_path / "missing.tar.gz", tmp_path / "o")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_missing_subset_message_says_how_to_get_it(data_cache, tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("cifar10-subset")
    msg = str(info.value)
    assert "\n" not in msg and "`cntk-lab data subset`" in msg and "--dataset cifar10" in msg
    assert "CNTK_CIFAR10_SUBSET" in msg and str(data_cache / "cifar10-subset") in msg
    with pytest.raises(FileNotFoundError, match=r"cntk-lab data subset --out .*elsewhere"):
        data.load_cifar10_subset(tmp_path / "elsewhere")


# ----------------------------------------------------------------------------- availability
def test_availability(fake_cifar10, data_cache, tmp_path, monkeypatch):
    assert data.available_datasets() == ("digits",) and data.DATASETS == ("digits", "cifar10-subset", "cifar10")
    assert data.lab_dataset_available("digits") and not data.dataset_available("cifar10")
    with pytest.raises(ValueError, match="unknown data set 'mnist'"):
        data.dataset_available("mnist")
    monkeypatch.setenv("CNTK_CIFAR10", str(fake_cifar10.path))
    assert data.available_datasets() == ("digits", "cifar10")
    status = data.data_status()
    assert status["cifar10_source"] == str(fake_cifar10.path) and status["cache_dir"] == str(data_cache)
    from cntk_widgets.regression_model import available_datasets

    assert available_datasets() == ("digits", "cifar10")  # the lab offers what the core finds


def test_default_folders_are_in_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("CNTK_DATA_DIR", raising=False)
    monkeypatch.delenv("CNTK_CIFAR10_SUBSET", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data.cache_dir() == tmp_path / ".cache" / "cntk-lab"
    assert data.default_subset_dir() == tmp_path / ".cache" / "cntk-lab" / "cifar10-subset"
