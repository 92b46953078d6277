"""CIFAR-10 from the official ``cifar-10-python.tar.gz`` or an extracted folder: verify, read without extracting.

Safety model
------------
* Reading a tarball (:func:`read_cifar10_tarball`): the file is opened once, its checksum is
  computed from that open file, and only when it matches is the same file parsed as a tar. Members
  are read straight from the archive (nothing is extracted, so nothing is left half-extracted);
  any absolute path, ``..`` component, link or special file makes the whole archive rejected.
* Unpickling uses :class:`~cntk_core.data._safepickle.RestrictedUnpickler` (NumPy array
  reconstruction only), even after the checksum matched.
* Decoding a tarball takes seconds, so its arrays are cached once, verified at every load (see
  :mod:`cntk_core.data._cifar_cache`): later loads take a fraction of a second.
* Downloading (atomic, checksum-verified) is in :mod:`cntk_core.data._download`; the official
  digests it checks against are defined here (:data:`CIFAR10_MD5`, :data:`CIFAR10_SHA256`).

Where the data comes from (:func:`load_cifar10`): ``path=``, else ``$CNTK_CIFAR10`` (a tarball or an
extracted folder), else the per-user cache ``$CNTK_DATA_DIR`` or ``~/.cache/cntk-lab``, downloaded
there from ``$CNTK_CIFAR10_URL`` (a mirror) or the official URL when absent.
"""

from __future__ import annotations

import os
import shlex
import tarfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from ..validation import check_flag
from ._cifar_cache import cached_arrays, read_through_cache
from ._cifar_cache import fsync_dir as fsync_dir  # re-exported: _setup imports it from here
from ._dataset import CIFAR10_CLASSES, Dataset
from ._download import (
    CACHE_ENV,
    CIFAR10_FILENAME,
    ChecksumError,
    _check_digests,
    _hashes,
    _sweep_cache,
    cache_dir,
    download_cifar10,
)
from ._download import sweep_stale_temps as sweep_stale_temps  # re-exported: _setup uses _cifar.sweep_stale_temps
from ._download import temp_prefix as temp_prefix  # re-exported: _setup uses _cifar.temp_prefix
from ._errors import DataError
from ._safepickle import safe_loads

CIFAR10_FOLDER = "cifar-10-batches-py"
#: official md5 (published on the CIFAR-10 page)
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
#: sha256 of the same file (170,498,071 bytes), as pinned by Keras' ``cifar10.load_data`` and
#: several independent projects that also list the official md5 next to it.
CIFAR10_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
CIFAR10_SIZE = 170_498_071
#: a cifar-10-python.tar.gz or extracted folder to use instead of the cache
CIFAR10_ENV = "CNTK_CIFAR10"

_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST_BATCH = "test_batch"
_META = "batches.meta"
_REQUIRED = (*_TRAIN_BATCHES, _TEST_BATCH, _META)
#: no member of the official archive is larger than ~31 MB; refuse absurd sizes before reading
_MAX_MEMBER = 256 << 20


def _expected(expected_md5: str | None, expected_sha256: str | None) -> tuple[str | None, str | None]:
    """Defaults to the official digests (read at call time). With a custom md5 and no sha256 given,
    only the md5 is checked (the official sha256 cannot match a different file)."""
    if expected_md5 is None:
        return CIFAR10_MD5, (CIFAR10_SHA256 if expected_sha256 is None else expected_sha256)
    return expected_md5, expected_sha256


def _check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
        raise DataError(f"unsafe path in tar archive: {name!r} (absolute or containing '..')")
    if not (member.isfile() or member.isdir()):
        raise DataError(f"tar archive member {name!r} is a link or special file; refusing the archive")
    if member.size > _MAX_MEMBER:
        raise DataError(f"tar archive member {name!r} is implausibly large ({member.size} bytes)")


def read_cifar10_tarball(
    path: str | os.PathLike, *, expected_md5: str | None = None, expected_sha256: str | None = None
) -> Dataset:
    """Load CIFAR-10 from ``cifar-10-python.tar.gz`` without extracting it.

    The checksum (default: the official md5 and sha256; pass ``expected_md5`` for another file,
    e.g. a re-packed copy) is verified on the open file before it is parsed. Raises
    :class:`DataError` for a checksum mismatch, a truncated/corrupt archive, unsafe members or a
    pickle that names anything but NumPy array reconstruction.
    """
    return _read_tarball(Path(path), *_expected(expected_md5, expected_sha256))[0]


def _read_tarball(path: Path, exp_md5: str | None, exp_sha: str | None) -> tuple[Dataset, str, str]:
    """:func:`read_cifar10_tarball` that also returns the file's ``(md5, sha256)``."""
    with open(path, "rb") as f:
        md5, sha = _hashes(f)
        _check_digests(md5, sha, exp_md5, exp_sha, str(path))
        f.seek(0)
        try:
            blobs = _read_members(tarfile.open(fileobj=f, mode="r:*"), str(path))
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise DataError(f"{path}: truncated or corrupt tar archive ({type(exc).__name__}: {exc})") from None
    # only now, with every member checked, is anything unpickled (one batch at a time)
    return _assemble({k: safe_loads(blobs.pop(k), f"{path}:{k}") for k in _REQUIRED}, str(path)), md5, sha


def _read_members(tar: tarfile.TarFile, source: str) -> dict[str, bytes]:
    """One sequential pass: check every member (see :func:`_check_member`), keep the bytes of the
    required batch files. Nothing is written to disk."""
    seen: set[str] = set()
    blobs: dict[str, bytes] = {}
    with tar:
        for m in tar:
            _check_member(m)
            key = PurePosixPath(m.name).as_posix()
            if key in seen:
                raise DataError(f"{source}: tar archive has duplicate member {m.name!r}")
            seen.add(key)
            folder, _, base = key.rpartition("/")
            if folder == CIFAR10_FOLDER and base in _REQUIRED and m.isfile():
                blob = tar.extractfile(m).read()
                if len(blob) != m.size:
                    raise DataError(f"{source}: member {m.name} is truncated")
                blobs[base] = blob
    missing = [b for b in _REQUIRED if b not in blobs]
    if missing:
        raise DataError(f"{source}: tar archive lacks {', '.join(f'{CIFAR10_FOLDER}/{b}' for b in missing)}")
    return blobs


def read_cifar10_folder(path: str | os.PathLike) -> Dataset:
    """Load CIFAR-10 from an extracted ``cifar-10-batches-py`` folder (or its parent).

    Trusted less than the tarball: there is no official checksum for the individual batch files,
    so they are not verified. They are still read with the restricted unpickler (NumPy array
    reconstruction only), so a tampered batch cannot run code; it can only give wrong pixels.
    """
    folder = Path(path)
    if (folder / CIFAR10_FOLDER).is_dir():
        folder = folder / CIFAR10_FOLDER
    missing = [b for b in _REQUIRED if not (folder / b).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not an extracted CIFAR-10 python folder: missing {', '.join(missing)}")
    batches = {b: safe_loads((folder / b).read_bytes(), str(folder / b)) for b in _REQUIRED}
    return _assemble(batches, str(folder))


def _get(d: dict, key: str, what: str):
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise DataError(f"{what}: missing key {key!r}")


def _decode_batch(batch, what: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch dict -> NHWC uint8 ``[n, 32, 32, 3]`` and int64 labels ``[n]``.

    Each row of ``data`` is 3072 bytes, channel-planar: ``row[ch*1024 + r*32 + c]``.
    """
    if not isinstance(batch, dict):
        raise DataError(f"{what}: expected a dict, got {type(batch).__name__}")
    data, labels = _get(batch, "data", what), _get(batch, "labels", what)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{what}: 'data' must be a uint8 array [n, 3072], got {getattr(data, 'dtype', type(data))}")
    if not isinstance(labels, list | tuple) or not all(type(v) is int for v in labels):
        raise DataError(f"{what}: 'labels' must be a list of int")
    y = np.asarray(labels, dtype=np.int64)
    if y.shape != (data.shape[0],):
        raise DataError(f"{what}: {len(y)} labels for {data.shape[0]} images")
    if y.size and (y.min() < 0 or y.max() > 9):
        raise DataError(f"{what}: labels outside 0..9")
    x = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return x, y


def _assemble(batches: dict, source: str) -> Dataset:
    meta = batches[_META]
    if not isinstance(meta, dict):
        raise DataError(f"{source}:{_META}: expected a dict")
    names = _get(meta, "label_names", f"{source}:{_META}")
    if not isinstance(names, list) or len(names) != 10 or not all(isinstance(n, bytes | str) for n in names):
        raise DataError(f"{source}:{_META}: 'label_names' must be a list of 10 names")
    names = tuple(n.decode("ascii", "replace") if isinstance(n, bytes) else n for n in names)
    if names != CIFAR10_CLASSES:
        raise DataError(f"{source}:{_META}: unexpected class names {names}")
    train = [_decode_batch(batches[b], f"{source}:{b}") for b in _TRAIN_BATCHES]
    x_test, y_test = _decode_batch(batches[_TEST_BATCH], f"{source}:{_TEST_BATCH}")
    return Dataset(
        x_train=np.concatenate([t[0] for t in train]),
        y_train=np.concatenate([t[1] for t in train]),
        x_test=x_test,
        y_test=y_test,
        class_names=CIFAR10_CLASSES,
        name="cifar10",
        pixel_scale=255.0,
    )


def load_cifar10(
    path: str | os.PathLike | None = None,
    *,
    cache: str | os.PathLike | None = None,
    download: bool = True,
    url: str | None = None,
    expected_md5: str | None = None,
    expected_sha256: str | None = None,
    progress: bool = True,
    decoded_cache: bool = True,
) -> Dataset:
    """The full CIFAR-10 (50,000 train / 10,000 test, uint8 NHWC ``[n, 32, 32, 3]``, pixel_scale 255).

    ``path``: a ``cifar-10-python.tar.gz`` you already have (checksum-verified), an extracted
    ``cifar-10-batches-py`` folder or its parent (not verifiable, see :func:`read_cifar10_folder`); a
    tarball that fails the official checksum (e.g. a re-packed copy) raises :class:`ChecksumError`, whose
    message says to extract it and use the folder (or pass ``expected_md5``).
    Without ``path``: ``$CNTK_CIFAR10`` (the same choices), else the tarball in the cache
    (:func:`cache_dir`), downloaded first from ``url`` (default :func:`cifar10_url`) when absent and
    ``download`` is true (``DataUnavailableError`` when that fails, e.g. offline).

    A tarball is decoded once (a few seconds, about 0.5 GB of memory): with ``decoded_cache`` its
    arrays are kept in the cache and later loads of the same file return read-only memory-mapped
    arrays, verified against their sha256, in a fraction of a second (see ``_cifar_cache``).
    """
    download, progress = check_flag(download, "download"), check_flag(progress, "progress", allow_none=True)
    decoded_cache = check_flag(decoded_cache, "decoded_cache")
    directory = cache_dir(cache)
    _sweep_cache(directory)  # a listing: the downloads and digest lists of killed processes go at the next load
    origin = ""
    if path is None and os.environ.get(CIFAR10_ENV):
        path, origin = os.environ[CIFAR10_ENV], f" (set by {CIFAR10_ENV})"
    if path is not None:
        p = Path(path).expanduser()
        if p.is_dir():
            if (p / CIFAR10_FILENAME).is_file() and not (p / CIFAR10_FOLDER).is_dir():
                p = p / CIFAR10_FILENAME
            else:
                return read_cifar10_folder(p)
        elif not p.is_file():
            raise FileNotFoundError(f"no CIFAR-10 tarball or folder at {p}{origin}")
        try:
            return _load_tarball(p, directory, expected_md5, expected_sha256, decoded_cache)
        except ChecksumError as exc:
            if expected_md5 is not None:  # the caller's own checksum: no official file was expected
                raise
            # a re-packed tarball cannot match the official checksums, its extracted folder needs none
            raise ChecksumError(
                f"{exc}{origin}; if it is a re-packed copy of CIFAR-10, extract it (tar -xzf {shlex.quote(str(p))} "
                "-C FOLDER) and use FOLDER instead of the tarball"
            ) from None
    exp_md5, exp_sha = _expected(expected_md5, expected_sha256)
    if decoded_cache and exp_sha is not None:  # that file's arrays, even if the tarball was deleted since
        ds = cached_arrays(directory, exp_sha)
        if ds is not None:
            return ds
    target = directory / CIFAR10_FILENAME
    if not target.is_file():
        if not download:
            raise FileNotFoundError(
                f"{target} not found; call with download=True, set {CACHE_ENV} to a folder holding "
                f"{CIFAR10_FILENAME}, or pass path="
            )
        download_cifar10(cache, url=url, expected_md5=expected_md5, expected_sha256=expected_sha256, progress=progress)
    try:
        return _load_tarball(target, directory, expected_md5, expected_sha256, decoded_cache)
    except DataError as exc:
        raise DataError(f"{exc}; delete {target} to download it again") from None


def _load_tarball(
    path: Path, directory: Path, expected_md5: str | None, expected_sha256: str | None, use_cache: bool
) -> Dataset:
    """Read ``path`` (checksum-verified), through the decoded cache in ``directory`` when ``use_cache``."""
    exp_md5, exp_sha = _expected(expected_md5, expected_sha256)
    if not use_cache:
        return _read_tarball(path, exp_md5, exp_sha)[0]
    return read_through_cache(
        path,
        directory,
        read=lambda: _read_tarball(path, exp_md5, exp_sha),
        check=lambda md5, sha: _check_digests(md5, sha, exp_md5, exp_sha, str(path)),
    )
