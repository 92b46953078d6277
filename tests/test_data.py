"""Tests of cntk_core.data: CIFAR-10 tarball/download safety, the exact subset, digits, subsets, preprocessing.

The CIFAR-10 fixtures are tiny tarballs in the official format (see :mod:`cifar_fake`), so the loader
is exercised on the same pickle opcodes as the real ``cifar-10-python.tar.gz``. The decoded cache,
the subset builder and availability are tested in ``test_data_setup.py``, ``cntk-lab data`` in
``test_cli_data.py``.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import pickle
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from cifar_fake import N_PER_BATCH, N_TEST, expected_nhwc, md5_of, official_members, py2_dumps, sha256_of, write_tarball
from conftest import raises_param

import cntk_core.data as data
import cntk_core.data._cifar as cifar_mod
from cntk_core.data import (
    CIFAR10_CLASSES,
    SUBSET_FILES,
    ZCA,
    DataError,
    Dataset,
    Standardizer,
    balanced_indices,
    balanced_subset,
    first_n,
    hflip_augment,
    load_cifar10,
    load_cifar10_subset,
    load_dataset,
    load_digits_dataset,
    preprocess,
    random_subset,
    read_cifar10_folder,
    read_cifar10_tarball,
)
from cntk_core.validation import ParameterTypeError


# ----------------------------------------------------------------------------- fixtures: official format
@pytest.fixture(scope="module")
def official(tmp_path_factory):
    members, raw = official_members()
    path = write_tarball(tmp_path_factory.mktemp("cifar") / "cifar-10-python.tar.gz", members)
    return path, raw


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def check_matches_raw(ds: Dataset, raw) -> None:
    train = [raw[f"data_batch_{i}"] for i in range(1, 6)]
    np.testing.assert_array_equal(ds.x_train, np.concatenate([expected_nhwc(a) for a, _ in train]))
    np.testing.assert_array_equal(ds.y_train, np.concatenate([lab for _, lab in train]))
    np.testing.assert_array_equal(ds.x_test, expected_nhwc(raw["test_batch"][0]))
    np.testing.assert_array_equal(ds.y_test, raw["test_batch"][1])
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    assert ds.x_train.shape == (5 * N_PER_BATCH, 32, 32, 3) and ds.x_test.shape == (N_TEST, 32, 32, 3)
    assert ds.class_names == CIFAR10_CLASSES and ds.pixel_scale == 255.0 and ds.name == "cifar10"


# ----------------------------------------------------------------------------- reading the tarball / folder
def test_tarball_layout_is_nhwc(official):
    path, raw = official
    ds = read_cifar10_tarball(path, expected_md5=md5_of(path))
    check_matches_raw(ds, raw)
    a = raw["data_batch_2"][0]  # a few explicit pixels, written out by hand
    assert ds.x_train[N_PER_BATCH + 1, 3, 7, 2] == a[1, 2 * 1024 + 3 * 32 + 7]
    assert ds.x_train[N_PER_BATCH, 31, 0, 1] == a[0, 1024 + 31 * 32]


def test_folder_loading(official, tmp_path):
    path, raw = official
    with tarfile.open(path) as tar:  # our own trusted fixture
        tar.extractall(tmp_path, filter="data")
    check_matches_raw(read_cifar10_folder(tmp_path), raw)
    check_matches_raw(load_cifar10(tmp_path / "cifar-10-batches-py"), raw)
    with pytest.raises(FileNotFoundError, match="test_batch"):
        (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
        read_cifar10_folder(tmp_path)


def test_wrong_checksum_rejected_before_opening(official, monkeypatch):
    path, _ = official

    def boom(*a, **k):
        raise AssertionError("archive opened or unpickled before the checksum was verified")

    monkeypatch.setattr(cifar_mod.tarfile, "open", boom)
    monkeypatch.setattr(cifar_mod, "safe_loads", boom)
    with pytest.raises(DataError, match="md5"):
        read_cifar10_tarball(path)  # default: the official md5
    with pytest.raises(DataError, match="sha256"):
        read_cifar10_tarball(path, expected_md5=md5_of(path), expected_sha256="0" * 64)


def test_truncated_tarball(official, tmp_path):
    path, _ = official
    blob = path.read_bytes()
    short = tmp_path / "short.tar.gz"
    short.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_cifar10_tarball(short, expected_md5=md5_of(short))


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink"])
def test_unsafe_tar_members_rejected(tmp_path, kind):
    members, _ = official_members()
    if kind == "dotdot":
        info = tarfile.TarInfo("cifar-10-batches-py/../../evil.txt")
        info.size = 3
    elif kind == "absolute":
        info = tarfile.TarInfo("/tmp/evil.txt")
        info.size = 3
    else:
        info = tarfile.TarInfo("cifar-10-batches-py/link")
        info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
        info.linkname = "../../etc/passwd"
    path = write_tarball(tmp_path / "bad.tar.gz", members, [info])
    before = files_in(tmp_path)
    with pytest.raises(DataError, match="unsafe path|link or special"):
        read_cifar10_tarball(path, expected_md5=md5_of(path))
    assert files_in(tmp_path) == before and not (tmp_path.parent / "evil.txt").exists()


class _EvilSystem:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class _EvilExec:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import builtins

        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("evil_cls", [_EvilSystem, _EvilExec])
@pytest.mark.parametrize("where", ["tarball", "folder"])
def test_malicious_pickle_does_not_run(tmp_path, evil_cls, where):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({b"data": evil_cls(marker), b"labels": [0]}, protocol=2)
    pickle.loads(payload)  # the payload is live: a plain unpickler runs it ...
    assert marker.exists()
    marker.unlink()
    members, _ = official_members()
    members["data_batch_3"] = payload
    with pytest.raises(DataError, match="refusing to unpickle global"):
        if where == "tarball":
            path = write_tarball(tmp_path / "evil.tar.gz", members)
            read_cifar10_tarball(path, expected_md5=md5_of(path))
        else:
            folder = tmp_path / "cifar-10-batches-py"
            folder.mkdir()
            for name, blob in members.items():
                (folder / name).write_bytes(blob)
            read_cifar10_folder(folder)
    assert not marker.exists()  # ... ours refused it before calling anything


@pytest.mark.parametrize("protocol", [3, 4])
def test_python3_pickles_of_arrays_accepted(protocol):
    """Batches re-pickled by Python 3 (protocols 3/4) use the same NumPy globals and load."""
    arr = np.arange(3072 * 2, dtype=np.uint8).reshape(2, 3072) % 251
    got = data.safe_loads(pickle.dumps({"data": arr, "labels": [1, 2]}, protocol=protocol))
    np.testing.assert_array_equal(got["data"], arr)


def test_missing_member_rejected(tmp_path):
    members, _ = official_members()
    del members["data_batch_4"]
    path = write_tarball(tmp_path / "short.tar.gz", members)
    with pytest.raises(DataError, match="lacks cifar-10-batches-py/data_batch_4"):
        read_cifar10_tarball(path, expected_md5=md5_of(path))


def test_malformed_batch_rejected(tmp_path):
    members, _ = official_members()
    members["test_batch"] = py2_dumps({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]})
    path = write_tarball(tmp_path / "odd.tar.gz", members)
    with pytest.raises(DataError, match="uint8"):
        read_cifar10_tarball(path, expected_md5=md5_of(path))
    members["test_batch"] = b"\x80\x02}q\x00(U\x04data"  # cut-off pickle
    path = write_tarball(tmp_path / "odd2.tar.gz", members)
    with pytest.raises(DataError, match="not a valid pickle"):
        read_cifar10_tarball(path, expected_md5=md5_of(path))


# ----------------------------------------------------------------------------- download
def test_download_file_url_then_cached(official, tmp_path, monkeypatch):
    path, raw = official
    monkeypatch.setattr(cifar_mod, "CIFAR10_MD5", md5_of(path))
    monkeypatch.setattr(cifar_mod, "CIFAR10_SHA256", sha256_of(path))
    src = tmp_path / "src" / "cifar-10-python.tar.gz"
    src.parent.mkdir()
    src.write_bytes(path.read_bytes())
    cache = tmp_path / "cache"
    monkeypatch.setenv("CNTK_DATA_DIR", str(cache))
    check_matches_raw(load_cifar10(url=src.as_uri(), progress=False), raw)  # cache from the env var
    assert files_in(cache) == ["cifar-10-python.tar.gz", "cifar10-decoded"]  # the tarball and its arrays
    src.unlink()  # second call uses the cache, no download
    check_matches_raw(load_dataset("cifar10", url=src.as_uri(), progress=False), raw)


class _Server:
    """A local HTTP server on 127.0.0.1 serving one blob; ``lie`` adds bytes to Content-Length."""

    def __init__(self, blob: bytes, lie: int = 0):
        outer = self
        self.blob, self.lie = blob, lie

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(len(outer.blob) + outer.lie))
                self.end_headers()
                self.wfile.write(outer.blob)
                self.close_connection = True

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/cifar-10-python.tar.gz"

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_download_http_with_progress(official, tmp_path, capsys):
    path, raw = official
    with _Server(path.read_bytes()) as url:
        target = data.download_cifar10(tmp_path / "c", url=url, expected_md5=md5_of(path), progress=True)
    assert target == tmp_path / "c" / "cifar-10-python.tar.gz" and target.read_bytes() == path.read_bytes()
    assert files_in(tmp_path / "c") == ["cifar-10-python.tar.gz"]
    assert "cifar-10-python.tar.gz" in capsys.readouterr().err  # the tqdm bar
    check_matches_raw(read_cifar10_tarball(target, expected_md5=md5_of(path)), raw)


def test_download_wrong_checksum_leaves_nothing(official, tmp_path):
    path, _ = official
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="md5"):
        load_cifar10(cache=cache, url=path.as_uri(), progress=False)  # official md5 cannot match
    assert files_in(cache) == []


def test_truncated_download_leaves_nothing(official, tmp_path):
    path, _ = official
    cache = tmp_path / "cache"
    with _Server(path.read_bytes(), lie=1000) as url, pytest.raises(DataError, match="truncated"):
        data.download_cifar10(cache, url=url, expected_md5=md5_of(path), progress=False)
    assert files_in(cache) == []


def test_no_download_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="CNTK_DATA_DIR"):
        load_cifar10(cache=tmp_path, download=False)


def test_download_flags_must_be_bools(tmp_path):
    """download="no" is truthy: it must not start a download (nor progress="no" show a bar)."""
    missing_url = (tmp_path / "nowhere" / "cifar-10-python.tar.gz").as_uri()
    cache = tmp_path / "cache"
    with raises_param("download", ParameterTypeError):
        load_cifar10(cache=cache, download="no", url=missing_url)
    with raises_param("progress", ParameterTypeError):
        load_cifar10(cache=cache, download=False, progress="no")
    with raises_param("progress", ParameterTypeError):
        data.download_cifar10(cache, url=missing_url, progress="no")
    assert files_in(cache) == []
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_cifar10(cache=cache, download=np.False_)


def test_official_constants():
    """The official tarball's digests and size, written out: a changed digest would refuse the real file."""
    assert data.CIFAR10_MD5 == "c58f30108f718f92721af3b95e74349a"
    assert data.CIFAR10_SHA256 == "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
    assert cifar_mod.CIFAR10_SIZE == 170_498_071
    assert data.CIFAR10_URL == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


# ----------------------------------------------------------------------------- the exact subset (reference files)
def _subset_or_skip() -> Dataset:
    try:
        return load_cifar10_subset()
    except FileNotFoundError as exc:
        pytest.skip(f"reference CIFAR-10 subset files absent ({exc})")


def test_cifar10_subset_matches_readme():
    ds = _subset_or_skip()
    assert ds.x_train.shape == (4000, 32, 32, 3) and ds.x_test.shape == (1000, 32, 32, 3)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64
    sha = hashlib.sha256
    assert sha(ds.x_train.tobytes()).hexdigest() == "bac45b45504ed1289a3f437be4bfbefece248abbc094a428a0b4dfab00e776ae"
    assert sha(ds.x_test.tobytes()).hexdigest() == "da362006b99671213d1a5d856cab2bedf64d40bad4501630ee60f4ceb2d3ec7f"
    assert np.bincount(ds.y_train).tolist() == [396, 366, 420, 384, 422, 393, 414, 385, 407, 413]
    assert np.bincount(ds.y_test).tolist() == [103, 89, 100, 103, 90, 86, 112, 102, 106, 109]
    assert ds.y_train[0] == 6 and ds.y_test[0] == 3  # frog, cat
    # official row of train[0] begins 59 43 50 68 98 (red plane, row 0) and ends 140 84 72 (blue, row 31)
    assert ds.x_train[0, 0, :5, 0].tolist() == [59, 43, 50, 68, 98]
    assert ds.x_train[0, 31, -3:, 2].tolist() == [140, 84, 72]
    assert ds.class_names == CIFAR10_CLASSES and ds.pixel_scale == 255.0


def test_cifar10_subset_missing_names_env(tmp_path, monkeypatch):
    monkeypatch.setenv("CNTK_CIFAR10_SUBSET", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="CNTK_CIFAR10_SUBSET"):
        load_dataset("cifar10-subset")


def _subset_arrays(n: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, size=n)


def write_subset(folder: Path, train: dict | None = None, test: dict | None = None) -> Path:
    """The two subset .npz files in ``folder`` (tiny valid ones unless ``train``/``test`` arrays are given)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, arrays, seed in [(data.SUBSET_FILES[0], train, 0), (data.SUBSET_FILES[1], test, 1)]:
        if arrays is None:
            x, y = _subset_arrays(seed=seed)
            arrays = {"x": x, "y": y}
        np.savez(folder / name, **arrays)
    return folder


def test_cifar10_subset_small_files(tmp_path):
    x, y = _subset_arrays(5)
    ds = load_cifar10_subset(write_subset(tmp_path, train={"x": x, "y": y.astype(np.uint8)}))
    np.testing.assert_array_equal(ds.x_train, x)
    np.testing.assert_array_equal(ds.y_train, y)
    assert ds.y_train.dtype == np.int64 and ds.name == "cifar10-subset"


@pytest.mark.parametrize(
    "labels, match",
    [
        (np.array([0, 1.7, 2.2, 3.9]), "integers 0..9, got dtype float64"),  # used to load as [0, 1, 2, 3]
        (np.array([0.0, 1.0, 2.0, 3.0]), "integers 0..9, got dtype float64"),
        (np.array(["0", "1", "2", "3"]), "integers 0..9, got dtype <U1"),
        (np.array([True, False, True, True]), "integers 0..9, got dtype bool"),
        (np.array([0, 1, 10, 3]), "outside 0..9"),
        (np.array([0, -1, 2, 3]), "outside 0..9"),
    ],
)
def test_cifar10_subset_labels_must_be_integers(tmp_path, labels, match):
    x, _ = _subset_arrays(4)
    write_subset(tmp_path, train={"x": x, "y": labels})
    with pytest.raises(DataError, match=rf"cifar10_exact_train4000\.npz: labels y .*{match}"):
        load_cifar10_subset(tmp_path)


def _valid_npz_bytes(tmp_path: Path, **arrays) -> bytes:
    f = tmp_path / "valid.npz"
    np.savez(f, **arrays)
    return f.read_bytes()


def _corrupt_member(blob: bytes) -> bytes:
    """Flip bytes in the middle of the stored x array (the zip CRC no longer matches)."""
    i = len(blob) // 3
    return blob[:i] + bytes(b ^ 0xFF for b in blob[i : i + 16]) + blob[i + 16 :]


@pytest.mark.parametrize(
    "kind, match",
    [
        ("garbage", "not an .npz archive"),
        ("empty", "empty"),
        ("truncated", "truncated or corrupt .npz archive"),
        ("bad_crc", "cannot read the array 'x': BadZipFile"),
        ("no_x", r"lacks the array\(s\) 'x' \(it holds 'y', 'z'\)"),
        ("npy", "a single .npy array, not an .npz archive"),
        ("object_labels", "cannot read the array 'y': it holds Python objects"),
    ],
)
def test_cifar10_subset_corrupt_files_name_the_file(tmp_path, kind, match):
    folder = write_subset(tmp_path / "subset")
    target = folder / data.SUBSET_FILES[1]
    x, y = _subset_arrays()
    if kind == "garbage":
        target.write_bytes(os.urandom(64) + b"not numpy at all")
    elif kind == "empty":
        target.write_bytes(b"")
    elif kind == "truncated":
        blob = target.read_bytes()
        target.write_bytes(blob[: len(blob) // 2])
    elif kind == "bad_crc":
        target.write_bytes(_corrupt_member(target.read_bytes()))
    elif kind == "no_x":
        target.write_bytes(_valid_npz_bytes(tmp_path, y=y, z=y))
    elif kind == "npy":
        with open(target, "wb") as f:
            np.save(f, x)
    else:
        target.write_bytes(_valid_npz_bytes(tmp_path, x=x, y=np.array([0, 1, "two"], dtype=object)))
    with pytest.raises(DataError, match=rf"cifar10_exact_test1000\.npz: .*{match}") as info:
        load_cifar10_subset(folder)
    assert "allow_pickle" not in str(info.value)  # never invite an unsafe load


def test_an_npz_whose_members_are_pickles_is_a_data_error(tmp_path):
    for name in SUBSET_FILES:
        with zipfile.ZipFile(tmp_path / name, "w") as z:  # members named .npy, holding pickles
            z.writestr("x.npy", pickle.dumps(np.zeros((2, 32, 32, 3), np.uint8)))
            z.writestr("y.npy", pickle.dumps(np.zeros(2, np.int64)))
    with pytest.raises(DataError, match=r"cifar10_exact_train4000.npz: the member 'x' is not a .npy array"):
        load_cifar10_subset(tmp_path)


# ----------------------------------------------------------------------------- digits, Dataset, load_dataset
def test_digits_split():
    from sklearn.datasets import load_digits

    ds = load_digits_dataset()
    ref = load_digits()
    assert ds.x_train.shape[1:] == (8, 8, 1) and ds.x_train.dtype == np.uint8 and ds.pixel_scale == 16.0
    assert len(ds.y_train) + len(ds.y_test) == 1797
    # stratified: per class, round(0.25 * count) in test
    counts = np.bincount(ref.target)
    np.testing.assert_array_equal(np.bincount(ds.y_test, minlength=10), np.round(0.25 * counts).astype(int))
    # the two splits together are exactly sklearn's images with their labels
    rows = np.concatenate([ds.x_train, ds.x_test]).reshape(1797, 64).astype(float)
    labs = np.concatenate([ds.y_train, ds.y_test])
    got = sorted(map(tuple, np.column_stack([labs, rows]).tolist()))
    want = sorted(map(tuple, np.column_stack([ref.target, ref.data]).tolist()))
    assert got == want
    again, other = load_dataset("digits"), load_digits_dataset(seed=1)
    np.testing.assert_array_equal(again.x_test, ds.x_test)
    assert not np.array_equal(other.x_test, ds.x_test)


def test_digits_test_size_checked():
    for bad in (0.001, 1e-9):  # round(test_size * count) is 0 in every class
        with pytest.raises(ValueError, match=r"test_size=.* leaves the test split empty"):
            load_digits_dataset(test_size=bad)
    with pytest.raises(ValueError, match=r"test_size=0\.999 leaves the training split empty"):
        load_digits_dataset(test_size=0.999)
    for bad in (0, 1, 0.0, 1.5, -0.2, float("nan")):
        with pytest.raises(ValueError, match=r"test_size must be a fraction in \(0, 1\)"):
            load_digits_dataset(test_size=bad)
    for bad in ("0.25", None, True, np.True_, [0.25]):
        with pytest.raises(TypeError, match="test_size must be a number"):
            load_digits_dataset(test_size=bad)
    ds = load_digits_dataset(test_size=0.01)  # small but not empty
    assert 0 < len(ds.y_test) < 50


def test_bad_seeds_named():
    x, y = np.zeros((6, 2, 2, 1)), np.array([0, 1, 0, 1, 0, 1])
    calls = [
        lambda s: load_digits_dataset(seed=s),
        lambda s: balanced_subset(x, y, 2, seed=s),
        lambda s: random_subset(x, y, 2, seed=s),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="seed must be a non-negative integer .*got -1"):
            call(-1)
        for bad in ("a", 1.5, True):
            with pytest.raises(TypeError, match="seed must be a non-negative integer"):
                call(bad)
    np.testing.assert_array_equal(random_subset(x, y, 2, seed=np.int64(3))[1], random_subset(x, y, 2, seed=3)[1])


def test_dataset_validation_and_names():
    x = np.zeros((2, 4, 4, 1), np.uint8)
    with pytest.raises(ValueError, match="int64"):
        Dataset(x, np.zeros(2, np.int32), x, np.zeros(2, np.int64), ("a", "b"), "t", 1)
    with pytest.raises(ValueError, match="outside"):
        Dataset(x, np.array([0, 2]), x, np.zeros(2, np.int64), ("a", "b"), "t", 1)
    with pytest.raises(ValueError, match="unknown data set"):
        load_dataset("mnist")


# ----------------------------------------------------------------------------- subsets
def test_subsets():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 5, size=300)
    x = np.arange(300)[:, None, None, None] * np.ones((1, 2, 2, 1))  # x encodes the index
    xs, ys = balanced_subset(x, y, 7, seed=1)
    assert np.bincount(ys).tolist() == [7] * 5
    idx = xs[:, 0, 0, 0].astype(int)
    assert len(set(idx)) == 35 and np.array_equal(y[idx], ys) and np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(balanced_subset(x, y, 7, seed=1)[0], xs)
    assert not np.array_equal(balanced_subset(x, y, 7, seed=2)[0], xs)
    with pytest.raises(ValueError, match="class 4 has only"):
        balanced_subset(x[y != 4], y[y != 4], 1, n_classes=5)
    with pytest.raises(ValueError, match="fewer than n_per_class"):
        balanced_subset(x, y, int(np.bincount(y).min()) + 1)
    xr, yr = random_subset(x, y, 50, seed=0)
    ir = xr[:, 0, 0, 0].astype(int)
    assert len(set(ir)) == 50 and np.array_equal(y[ir], yr)
    with pytest.raises(ValueError):
        random_subset(x, y, 301)
    xf, yf = first_n(x, y, 20)
    np.testing.assert_array_equal(xf, x[:20])
    np.testing.assert_array_equal(yf, y[:20])


def test_balanced_indices_take_integral_float_counts():
    y = np.arange(10) % 2
    np.testing.assert_array_equal(balanced_indices(y, 2.0), balanced_indices(y, 2))


# ----------------------------------------------------------------------------- preprocessing
def _images(seed, n, h=6, w=5, c=3):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(n, h, w, c)).astype(np.uint8)
    return base


def test_preprocess_uses_train_statistics():
    xtr, xte = _images(0, 40), _images(1, 9)
    p = preprocess(xtr, xte, scale=255.0)
    ftr = xtr.astype(np.float64) / 255.0
    mean = np.array([ftr[..., k].mean() for k in range(3)])
    std = np.array([ftr[..., k].std() for k in range(3)])
    np.testing.assert_allclose(p.standardizer.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(p.standardizer.std, std, rtol=1e-12)
    assert p.x_train.dtype == np.float64 and p.x_test.dtype == np.float64
    np.testing.assert_allclose(p.x_train.mean(axis=(0, 1, 2)), 0, atol=1e-12)
    np.testing.assert_allclose(p.x_train.std(axis=(0, 1, 2)), 1, rtol=1e-12)
    np.testing.assert_allclose(p.x_test, (xte / 255.0 - mean) / std, rtol=1e-12, atol=1e-12)
    assert abs(p.x_test.mean()) > 1e-6  # test is not re-standardised with its own statistics
    assert p.zca is None
    with pytest.raises(ValueError, match="constant"):
        Standardizer().fit(np.ones((3, 2, 2, 1)))
    with pytest.raises(ValueError, match="rank 4"):
        preprocess(np.zeros((3, 4, 4)))


def _zca_reference(x_std: np.ndarray, eps: float):
    """Independent ZCA via the SVD of the centred data matrix (not an eigendecomposition of C)."""
    n = x_std.shape[0]
    X = x_std.reshape(n, -1)
    mu = X.mean(axis=0)
    _, sig, vt = np.linalg.svd(X - mu, full_matrices=True)
    d = X.shape[1]
    s = np.zeros(d)
    s[: len(sig)] = sig**2 / n  # eigenvalues of C; the rest are 0 when n < d
    lam = eps * s.sum() / d
    W = vt.T @ np.diag((s + lam) ** -0.5) @ vt
    return mu, W, vt.T @ np.diag(s / (s + lam)) @ vt


@pytest.mark.parametrize("n", [30, 400])  # fewer and more images than the 90 dimensions
def test_zca_against_independent_formula(n):
    xtr, xte = _images(2, n), _images(3, 7)
    eps = 0.1
    p = preprocess(xtr, xte, zca=eps)
    st = Standardizer().fit(xtr)
    mu, W, white_cov = _zca_reference(st.transform(xtr), eps)
    np.testing.assert_allclose(p.x_test.reshape(7, -1), (st.transform(xte).reshape(7, -1) - mu) @ W, atol=1e-9)
    Z = p.x_train.reshape(n, -1)
    np.testing.assert_allclose(Z.T @ Z / n, white_cov, atol=1e-9)
    # whitened covariance eigenvalues are s / (s + eps*mean(s)) <= 1, and ~1 along strong directions
    ev = np.linalg.eigvalsh(Z.T @ Z / n)
    assert ev.max() < 1 + 1e-9 and ev.max() > 0.9


def test_zca_without_regulariser_whitens_fully():
    x = _images(4, 500, 4, 4, 2)
    z = ZCA(eps=0.0).fit_transform(Standardizer().fit_transform(x)).reshape(500, -1)
    np.testing.assert_allclose(z.T @ z / 500, np.eye(32), atol=1e-9)
    with pytest.raises(ValueError, match="singular"):
        ZCA(eps=0.0).fit(_images(5, 10, 4, 4, 2).astype(float))


def test_hflip_augment_and_preprocess_flip():
    x, y = _images(6, 5), np.arange(5)
    xa, ya = hflip_augment(x, y)
    assert xa.shape == (10, 6, 5, 3) and ya.tolist() == [0, 1, 2, 3, 4] * 2
    np.testing.assert_array_equal(xa[:5], x)
    for i, r, c, k in [(0, 0, 0, 0), (3, 5, 1, 2), (4, 2, 4, 1)]:
        assert xa[5 + i, r, c, k] == x[i, r, 4 - c, k]
    p = preprocess(x, scale=255.0, flip=True)
    plain = preprocess(x, scale=255.0)
    np.testing.assert_allclose(p.x_train[:5], plain.x_train)
    np.testing.assert_allclose(p.x_train[5:], plain.x_train[:, :, ::-1, :])


def test_preprocess_flags_must_be_bools():
    x = _images(7, 6)
    with raises_param("flip", ParameterTypeError):
        preprocess(x, flip="no")  # used to double the training set (6 -> 12 images)
    assert preprocess(x, flip=np.True_).x_train.shape[0] == 12
    assert preprocess(x, flip=np.False_).x_train.shape[0] == 6
    with raises_param("center", ParameterTypeError):
        ZCA(center="no")
    assert ZCA(center=np.False_).center is False


def test_preprocess_zca_argument():
    x = _images(8, 40, 3, 3, 2)
    ref = preprocess(x, zca=True)
    assert ref.zca.eps == 0.1
    p = preprocess(x, zca=np.True_)  # used to give eps 1.0 (float(np.True_))
    assert p.zca.eps == 0.1
    np.testing.assert_array_equal(p.x_train, ref.x_train)
    assert preprocess(x, zca=np.False_).zca is None and preprocess(x, zca=False).zca is None
    assert preprocess(x, zca=np.float32(0.5)).zca.eps == 0.5 and preprocess(x, zca=1).zca.eps == 1.0
    for bad in ("yes", "0.1", [0.1]):
        with pytest.raises(TypeError, match="zca must be True, False, None or a number"):
            preprocess(x, zca=bad)
    for bad in ("x", "0.1", None, True):
        with raises_param("eps", ParameterTypeError):
            ZCA(eps=bad)
    for bad in ("x", "255", None, True):
        with raises_param("scale", ParameterTypeError):
            Standardizer(bad)
    with raises_param("scale", ParameterTypeError):
        preprocess(x, scale="255")


@pytest.mark.parametrize("factor", [1e160, 1e300, 1e-200, 1e-310])
def test_preprocess_extreme_pixel_magnitudes(factor):
    """Statistics of huge or tiny pixels: the std used to overflow (all-zero output) or underflow
    (a "constant" error); now the standardised result is that of the unscaled images."""
    xtr, xte = _images(9, 20), _images(10, 4)
    ref = preprocess(xtr, xte)
    p = preprocess(xtr * factor, xte * factor)
    np.testing.assert_allclose(p.x_train, ref.x_train, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(p.x_test, ref.x_test, rtol=1e-12, atol=1e-12)
    assert np.all(np.isfinite(p.standardizer.std)) and np.all(p.standardizer.std > 0)
    q = preprocess(xtr * factor, xte * factor, scale=255.0 * factor)  # a matching scale: the same units
    np.testing.assert_allclose(q.standardizer.mean, ref.standardizer.mean, rtol=1e-12)
    np.testing.assert_allclose(q.x_train, ref.x_train, rtol=1e-12, atol=1e-12)
    mixed = np.concatenate([xtr[..., :1] * 1e-250, xtr[..., 1:] * 1e250], axis=-1)  # per-channel ranges
    np.testing.assert_allclose(preprocess(mixed).x_train, ref.x_train, rtol=1e-12, atol=1e-12)


def test_preprocess_out_of_range_statistics_and_constant_channels():
    x = _images(11, 6)
    with pytest.raises(OverflowError, match="statistics of x / scale are out of the float64 range"):
        preprocess(x * 1e300, scale=1e-10)
    with pytest.raises(OverflowError, match="x_test: standardised values overflow"):
        preprocess(x, np.full((1, 6, 5, 3), 1e307), scale=1e-3)
    with pytest.raises(OverflowError, match="beyond the float64 range"):
        preprocess(x.astype(np.longdouble) * np.longdouble(2) ** 1100)
    const = x.astype(np.float64)
    const[..., 1] = 0.1  # the float mean of 0.1s is not exactly 0.1: used to give std ~1e-17 and garbage
    with pytest.raises(ValueError, match=r"channel\(s\) \[1\] are constant"):
        preprocess(const)
    with pytest.raises(ValueError, match=r"channel\(s\) \[0, 2\] are constant"):
        preprocess(np.stack([np.full((4, 2, 2), 3), np.arange(16).reshape(4, 2, 2), np.zeros((4, 2, 2))], -1))


def test_preprocess_x_test_named():
    x = _images(12, 40, 3, 3, 2)
    with pytest.raises(ValueError, match="x_test has 1 channels, x_train has 2"):
        preprocess(x, x[..., :1])
    with pytest.raises(ValueError, match="x_test has image shape"):
        preprocess(x, x[:, :2], zca=True)
    with pytest.raises(ValueError, match="x has 1 channels"):  # the classes still say x
        Standardizer().fit(x).transform(x[..., :1])
