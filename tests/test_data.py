"""Tests of cntk_core.data: CIFAR-10 tarball/download safety, the shared subset, digits, subsets, preprocessing.

The CIFAR-10 fixtures are tiny tarballs in the official format, pickled like Python 2's cPickle
(protocol 2, byte strings as BINSTRING, ``numpy.core.multiarray._reconstruct``), so the loader is
exercised on the same opcodes as the real ``cifar-10-python.tar.gz``.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import pickle
import struct
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

import cntk_core.data as data
import cntk_core.data._cifar as cifar_mod
from cntk_core.data import (
    CIFAR10_CLASSES,
    ZCA,
    DataError,
    Dataset,
    Standardizer,
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

N_PER_BATCH = 4
N_TEST = 5


# ----------------------------------------------------------------------------- fixtures: official format
class _Py2Pickler(pickle._Pickler):
    """Pickles str/bytes as Python 2 byte strings (SHORT_BINSTRING/BINSTRING), like cPickle did."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        if isinstance(obj, str):
            obj = obj.encode("ascii")
        n = len(obj)
        self.write(
            pickle.SHORT_BINSTRING + bytes([n]) + obj if n < 256 else pickle.BINSTRING + struct.pack("<i", n) + obj
        )
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str


def py2_dumps(obj) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    out = buf.getvalue().replace(b"numpy._core.multiarray\n_reconstruct", b"numpy.core.multiarray\n_reconstruct")
    assert b"_codecs" not in out
    return out


def official_members(seed: int = 0):
    """Batch name -> pickled bytes, plus the raw arrays: data uint8 [n, 3072] (CHW-planar rows), labels."""
    rng = np.random.default_rng(seed)
    members, raw = {}, {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = N_TEST if name == "test_batch" else N_PER_BATCH
        arr = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        raw[name] = (arr, labels)
        members[name] = py2_dumps(
            {b"batch_label": b"batch", b"labels": labels, b"data": arr, b"filenames": [b"f.png"] * n}
        )
    members["batches.meta"] = py2_dumps(
        {b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_cases_per_batch": N_PER_BATCH, b"num_vis": 3072}
    )
    return members, raw


def write_tarball(path: Path, members: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        d = tarfile.TarInfo("cifar-10-batches-py")
        d.type = tarfile.DIRTYPE
        d.mode = 0o755
        tar.addfile(d)
        for name, blob in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        for info in extra:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return path


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    members, raw = official_members()
    path = write_tarball(tmp_path_factory.mktemp("cifar") / "cifar-10-python.tar.gz", members)
    return path, raw


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def expected_nhwc(arr: np.ndarray) -> np.ndarray:
    """Independent layout: pixel [i, r, c, ch] = data[i, ch*1024 + r*32 + c]."""
    r, c, ch = np.indices((32, 32, 3))
    return arr[:, ch * 1024 + r * 32 + c]


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
    assert files_in(cache) == ["cifar-10-python.tar.gz"]
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


def test_official_constants():
    assert data.CIFAR10_MD5 == "c58f30108f718f92721af3b95e74349a"
    assert data.CIFAR10_URL == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert len(data.CIFAR10_SHA256) == 64 and int(data.CIFAR10_SHA256, 16) >= 0


# ----------------------------------------------------------------------------- shared exact subset
def _subset_or_skip() -> Dataset:
    try:
        return load_cifar10_subset()
    except FileNotFoundError as exc:
        pytest.skip(f"shared CIFAR-10 subset absent ({exc})")


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
