"""The decoded CIFAR-10 cache: a verified tarball's arrays, stored once as plain ``.npy`` files.

Reading ``cifar-10-python.tar.gz`` costs seconds (md5 + sha256 of 170 MB, gunzip, unpickling, the
NHWC transpose) and the lab loads its data at every page load, so the decoded arrays are cached::

    <cache>/cifar10-decoded/<sha256 of the tarball>/x_train.npy   uint8 [50000, 32, 32, 3]
                                                    y_train.npy   int64 [50000]
                                                    x_test.npy    uint8 [10000, 32, 32, 3]
                                                    y_test.npy    int64 [10000]
                                                    manifest.json the sha256 of each file, the source's md5
    <cache>/cifar10-decoded/sources.json            tarball (path, size, mtime, inode) -> md5, sha256

Safety model
------------
* A folder is only ever written from a tarball whose checksum was just verified, into a temporary
  folder beside it (each file ``fsync``-ed, the manifest last) that is then renamed into place:
  a folder with the final name is complete.
* Every load checks each file against the manifest's sha256 (memory-mapped: about 0.1 s for the
  184 MB) and the arrays' dtypes, shapes and labels. A missing, truncated or altered file is
  reported with a warning and the folder is rebuilt from the tarball; wrong data is never returned.
* ``sources.json`` lets a tarball that was hashed once be found again without re-hashing it: an
  entry matches only while the file's size, modification time and inode are unchanged.
* The arrays are read-only memory maps, so several lab kernels share one copy in the page cache.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .._atomic import write_atomic
from ._dataset import CIFAR10_CLASSES, Dataset

DECODED_DIR = "cifar10-decoded"
_SOURCES = "sources.json"
_MANIFEST = "manifest.json"
_FORMAT = 1
_MAX_SOURCES = 32
#: array name -> (dtype, shape after the image count)
_ARRAYS = {
    "x_train": (np.uint8, (32, 32, 3)),
    "y_train": (np.int64, ()),
    "x_test": (np.uint8, (32, 32, 3)),
    "y_test": (np.int64, ()),
}


class CorruptCacheError(Exception):
    """A decoded cache folder that does not match its manifest (the message says what differs)."""


def decoded_dir(cache: Path, sha256: str) -> Path:
    """The folder holding the decoded arrays of the tarball whose sha256 is ``sha256``."""
    return cache / DECODED_DIR / sha256.lower()


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return hashlib.sha256(b"").hexdigest()
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return hashlib.sha256(m).hexdigest()


def load_decoded(folder: Path) -> Dataset | None:
    """The cached :class:`Dataset` in ``folder`` (read-only memory-mapped arrays), or ``None`` when the
    folder does not exist. Raises :class:`CorruptCacheError` when any file fails its check."""
    manifest_path = folder / _MANIFEST
    if not folder.is_dir():
        return None
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        entries = manifest["arrays"]
        if manifest.get("format") != _FORMAT or set(entries) != set(_ARRAYS):
            raise CorruptCacheError(f"{manifest_path}: unknown format or array list")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptCacheError(f"{manifest_path}: unreadable ({type(exc).__name__}: {exc})") from None
    arrays = {}
    for name, (dtype, tail) in _ARRAYS.items():
        path = folder / f"{name}.npy"
        try:
            if _file_sha256(path) != entries[name]["sha256"]:
                raise CorruptCacheError(f"{path}: sha256 differs from the manifest (altered or truncated)")
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CorruptCacheError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
        if arr.dtype != dtype or arr.shape[1:] != tail or list(arr.shape) != entries[name]["shape"]:
            raise CorruptCacheError(f"{path}: {arr.dtype} {arr.shape} is not what the manifest records")
        arrays[name] = np.asarray(arr)  # a plain ndarray view of the read-only map
    for split in ("train", "test"):
        y = arrays[f"y_{split}"]
        if len(y) != len(arrays[f"x_{split}"]) or (y.size and (y.min() < 0 or y.max() > 9)):
            raise CorruptCacheError(f"{folder}: y_{split} does not fit x_{split} or has labels outside 0..9")
    return Dataset(**arrays, class_names=CIFAR10_CLASSES, name="cifar10", pixel_scale=255.0)


def fsync_dir(directory: Path) -> None:
    """``fsync`` a folder (so a rename in it is durable); a no-op where folders cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_decoded(folder: Path, ds: Dataset, source_md5: str) -> Path:
    """Write ``ds``'s arrays into ``folder`` atomically (temporary folder + rename) and return it.
    An existing valid folder is kept as it is (another process may have written it meanwhile)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(folder.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name[:16]}.", suffix=".part", dir=folder.parent))
    os.chmod(tmp, 0o755)  # like any folder the user makes (mkdtemp's are private)
    try:
        entries = {}
        for name in _ARRAYS:
            path = tmp / f"{name}.npy"
            with open(path, "wb") as f:
                np.save(f, np.ascontiguousarray(getattr(ds, name)), allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
            entries[name] = {"sha256": _file_sha256(path), "shape": list(getattr(ds, name).shape)}
        manifest = {"format": _FORMAT, "source_sha256": folder.name, "source_md5": source_md5, "arrays": entries}
        with open(tmp / _MANIFEST, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(tmp)
        if folder.exists():  # a corrupt copy (checked by the caller) or a concurrent writer's
            try:
                if load_decoded(folder) is not None:
                    return folder
            except CorruptCacheError:
                pass
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.rename(tmp, folder)
        except OSError:  # a concurrent writer renamed its copy first
            if not (folder / _MANIFEST).is_file():
                raise
        fsync_dir(folder.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _remove_stale_parts(directory: Path, age: float = 3600.0) -> None:
    """Remove temporary folders that a killed writer left behind (older than ``age`` seconds)."""
    now = time.time()
    for part in directory.glob(".*.part"):
        try:
            if part.is_dir() and now - part.stat().st_mtime > age:
                shutil.rmtree(part, ignore_errors=True)
        except OSError:
            pass


def cached_arrays(cache: Path, sha256: str) -> Dataset | None:
    """The decoded arrays of the tarball with this sha256 from ``cache``, or None when absent. A corrupt
    folder is reported (a warning naming the file), removed and None returned, so it gets rebuilt."""
    folder = decoded_dir(cache, sha256)
    try:
        return load_decoded(folder)
    except CorruptCacheError as exc:
        warnings.warn(f"{exc}; removing the decoded CIFAR-10 cache {folder} (rebuilt from the tarball)", stacklevel=2)
        shutil.rmtree(folder, ignore_errors=True)
        return None


def read_through_cache(
    tarball: Path,
    cache: Path,
    read: Callable[[], tuple[Dataset, str, str]],
    check: Callable[[str, str], None],
) -> Dataset:
    """``tarball``'s data set from the decoded cache in ``cache`` when its digests are known (``check``
    raises when they are not the expected ones), else ``read()`` (``(dataset, md5, sha256)`` of the
    verified tarball), which is then cached. An unwritable cache only costs a warning."""
    known = known_digests(cache, tarball)  # hashed before and unchanged since
    if known is not None:
        check(*known)
        ds = cached_arrays(cache, known[1])
        if ds is not None:
            return ds
    ds, md5, sha = read()
    try:
        save_decoded(decoded_dir(cache, sha), ds, md5)
        remember_digests(cache, tarball, md5, sha)
    except OSError as exc:
        warnings.warn(
            f"could not cache the decoded CIFAR-10 arrays in {cache} ({exc}); later loads read {tarball} again",
            stacklevel=2,
        )
        return ds
    return cached_arrays(cache, sha) or ds


# -- tarball stamps: digests of a tarball already hashed --------------------------------------------


def _stamp(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def _read_sources(cache: Path) -> list[dict]:
    try:
        entries = json.loads((cache / DECODED_DIR / _SOURCES).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def known_digests(cache: Path, tarball: Path) -> tuple[str, str] | None:
    """``(md5, sha256)`` recorded for ``tarball`` if it is unchanged since it was hashed, else None."""
    try:
        stamp = _stamp(tarball)
    except OSError:
        return None
    for e in _read_sources(cache):
        if all(e.get(k) == v for k, v in stamp.items()) and isinstance(e.get("md5"), str):
            if isinstance(e.get("sha256"), str):
                return e["md5"], e["sha256"]
    return None


def remember_digests(cache: Path, tarball: Path, md5: str, sha256: str) -> None:
    """Record ``tarball``'s digests (best effort: an unwritable cache only means hashing again)."""
    try:
        entry = {**_stamp(tarball), "md5": md5, "sha256": sha256}
        keep = [e for e in _read_sources(cache) if e.get("path") != entry["path"]][-(_MAX_SOURCES - 1) :]
        folder = cache / DECODED_DIR
        folder.mkdir(parents=True, exist_ok=True)
        payload = json.dumps([*keep, entry], indent=1).encode("utf-8")
        write_atomic(folder / _SOURCES, payload, prefix=f".{_SOURCES}.", mode=0o644)  # as _sweep_cache knows it
    except OSError:
        pass
