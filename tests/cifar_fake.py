"""Small fake CIFAR-10 tarballs in the official format, for tests (data loading, CLI, launcher, browser).

The batches are pickled like Python 2's cPickle (protocol 2, byte strings as BINSTRING,
``numpy.core.multiarray._reconstruct``), so the loader is exercised on the same opcodes as the real
``cifar-10-python.tar.gz``. Pixels and labels are seeded random numbers.

>>> fake = make_fake_cifar10(tmp_path)              # doctest: +SKIP
>>> load_cifar10(fake.path, expected_md5=fake.md5)  # doctest: +SKIP
>>> fake.extract(tmp_path / "folder")               # an extracted copy: needs no checksum (doctest: +SKIP)
"""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cntk_core.data import CIFAR10_CLASSES

N_PER_BATCH = 4
N_TEST = 5
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))


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


def official_members(seed: int = 0, n_per_batch: int = N_PER_BATCH, n_test: int = N_TEST, balanced: bool = False):
    """Batch name -> pickled bytes, plus the raw arrays: data uint8 [n, 3072] (CHW-planar rows), labels
    (random, or with ``balanced`` the classes 0..9 in turn, so every class has n // 10 or more images)."""
    rng = np.random.default_rng(seed)
    members, raw = {}, {}
    for name in (*TRAIN_BATCHES, "test_batch"):
        n = n_test if name == "test_batch" else n_per_batch
        arr = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [i % 10 for i in range(n)] if balanced else [int(v) for v in rng.integers(0, 10, size=n)]
        raw[name] = (arr, labels)
        members[name] = py2_dumps(
            {b"batch_label": b"batch", b"labels": labels, b"data": arr, b"filenames": [b"f.png"] * n}
        )
    members["batches.meta"] = py2_dumps(
        {b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_cases_per_batch": n_per_batch, b"num_vis": 3072}
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


def expected_nhwc(arr: np.ndarray) -> np.ndarray:
    """Independent layout: pixel [i, r, c, ch] = data[i, ch*1024 + r*32 + c]."""
    r, c, ch = np.indices((32, 32, 3))
    return arr[:, ch * 1024 + r * 32 + c]


@dataclass(frozen=True)
class FakeCifar10:
    """A fake ``cifar-10-python.tar.gz`` at ``path`` with its digests and the expected arrays
    (``x_train`` uint8 NHWC ``[5 * n_per_batch, 32, 32, 3]``, ``y_train`` int64, ``x_test``, ``y_test``)."""

    path: Path
    md5: str
    sha256: str
    raw: dict
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def extract(self, folder: Path) -> Path:
        """Extract into ``folder`` (our own trusted archive); returns ``folder / "cifar-10-batches-py"``."""
        folder.mkdir(parents=True, exist_ok=True)
        with tarfile.open(self.path) as tar:
            tar.extractall(folder, filter="data")
        return folder / "cifar-10-batches-py"


def make_fake_cifar10(
    folder: Path,
    seed: int = 0,
    n_per_batch: int = N_PER_BATCH,
    n_test: int = N_TEST,
    name: str = "cifar-10-python.tar.gz",
    balanced: bool = False,
) -> FakeCifar10:
    """Write a fake tarball ``folder / name`` (``5 * n_per_batch`` training, ``n_test`` test images; labels as
    in :func:`official_members`). For the lab's class-balanced views use ``balanced=True``, e.g.
    ``n_per_batch=20`` gives 10 training images per class."""
    folder.mkdir(parents=True, exist_ok=True)
    members, raw = official_members(seed, n_per_batch, n_test, balanced)
    path = write_tarball(folder / name, members)
    train = [raw[b] for b in TRAIN_BATCHES]
    return FakeCifar10(
        path=path,
        md5=md5_of(path),
        sha256=sha256_of(path),
        raw=raw,
        x_train=np.concatenate([expected_nhwc(a) for a, _ in train]),
        y_train=np.concatenate([np.asarray(lab, dtype=np.int64) for _, lab in train]),
        x_test=expected_nhwc(raw["test_batch"][0]),
        y_test=np.asarray(raw["test_batch"][1], dtype=np.int64),
    )


def check_same(ds, fake: FakeCifar10) -> None:
    """``ds`` (a loaded :class:`cntk_core.data.Dataset`) holds exactly the fake's images and labels."""
    for name in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(ds, name), getattr(fake, name), err_msg=name)
    assert ds.name == "cifar10" and ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64


def decoded_folder(cache: Path, fake: FakeCifar10) -> Path:
    """Where the data cache ``cache`` keeps the decoded arrays of the fake tarball."""
    return cache / "cifar10-decoded" / fake.sha256
