"""An on-disk cache of the lab's kernel matrices, so that a page (re)load or a new kernel does not
recompute what an earlier session already computed.

Each entry is one file ``<key>.kgram`` in the cache folder (default
``cntk_core.data.cache_dir() / "kernels"``, i.e. ``$CNTK_DATA_DIR/kernels`` or
``~/.cache/cntk-lab/kernels``). The key is the sha256 of the images' fingerprint (their bytes,
shape and dtype), the architecture, the arithmetic dtype and the package version, so a changed
image set, network or engine never meets an old entry.

File format: the magic ``b"CNTKGRAM1\\n"``, one JSON header line (``shape``, ``dtype``, ``sha256``
of the payload, ``what``), then the raw C-order float64 payload. Writes go to a unique temporary
file in the same folder, are flushed and ``fsync``-ed, then ``os.replace``-d into place: a killed
writer leaves at most a temporary file (removed later by :meth:`KernelDiskCache.clean`), never a
half-written entry under the final name; two writers of one key both write the same bytes and the
last rename wins. Every read checks the header, the size and the sha256: a truncated or damaged
entry is deleted and reported as a miss (the kernel is recomputed), never returned.

An unusable folder (read-only, a file in the way) turns the cache off with one warning; the lab
still works.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

MAGIC = b"CNTKGRAM1\n"
SUFFIX = ".kgram"
#: temporary files older than this are left-overs of killed writers
STALE_SECONDS = 3600.0
#: default size limit of the folder; the least recently used entries go first
DEFAULT_MAX_BYTES = 512 << 20


def default_folder() -> Path:
    """``cntk_core.data.cache_dir() / "kernels"``."""
    from cntk_core.data import cache_dir

    return cache_dir() / "kernels"


def images_fingerprint(images: np.ndarray) -> str:
    """sha256 hex of an image array's shape, dtype and bytes."""
    x = np.ascontiguousarray(images)
    h = hashlib.sha256(repr((x.shape, x.dtype.str)).encode())
    h.update(memoryview(x).cast("B"))
    return h.hexdigest()


def entry_key(images_sha256: str, what: dict) -> str:
    """sha256 hex naming one entry: the images' fingerprint, ``what`` (the architecture, dtype, ...)
    and the package version."""
    from cntk_core import __version__

    text = json.dumps({"images": images_sha256, "what": what, "version": __version__}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def open_disk_cache(value, default: bool = True) -> KernelDiskCache | None:
    """A model's ``disk_cache`` argument as a cache or ``None`` (off): ``None`` means ``default``,
    ``True`` the default folder (:func:`default_folder`), ``False`` off, a :class:`KernelDiskCache`
    itself, anything else a folder."""
    if value is None:
        value = default
    if value is True:
        return KernelDiskCache()
    if value is False:
        return None
    return value if isinstance(value, KernelDiskCache) else KernelDiskCache(value)


class KernelDiskCache:
    """Kernel matrices on disk (see the module docstring for the format and its guarantees).

    ``get(key)`` returns a float64 array or ``None``; ``put(key, array)`` stores one. Counters:
    ``hits``, ``misses``, ``damaged`` (entries found damaged and removed), ``writes``.
    ``enabled`` is False once the folder proved unusable.
    """

    def __init__(self, folder: str | os.PathLike | None = None, *, max_bytes: int = DEFAULT_MAX_BYTES):
        self.folder = Path(folder).expanduser() if folder is not None else default_folder()
        self.max_bytes = int(max_bytes)
        self.enabled = True
        self.hits = self.misses = self.damaged = self.writes = 0

    def __repr__(self) -> str:
        state = "" if self.enabled else ", disabled"
        return f"KernelDiskCache({str(self.folder)!r}{state})"

    def path(self, key: str) -> Path:
        return self.folder / f"{key}{SUFFIX}"

    def get(self, key: str) -> np.ndarray | None:
        """The stored array, or ``None`` (absent, damaged: then removed, or cache disabled)."""
        if not self.enabled:
            return None
        path = self.path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            self.misses += 1
            return None
        except OSError:
            self.misses += 1
            return None
        array = _decode(data)
        if array is None:
            self.damaged += 1
            self.misses += 1
            _unlink(path)
            return None
        self.hits += 1
        try:
            os.utime(path)  # least recently used goes first when the folder is over its limit
        except OSError:
            pass
        return array

    def put(self, key: str, array: np.ndarray, what: str = "") -> bool:
        """Store ``array`` (written as C-order float64) atomically; ``False`` when the cache is off or
        the write failed (the first failure turns the cache off with a warning)."""
        if not self.enabled:
            return False
        payload = np.ascontiguousarray(array, dtype=np.float64)
        header = {
            "shape": list(payload.shape),
            "dtype": "<f8",
            "sha256": hashlib.sha256(memoryview(payload).cast("B")).hexdigest(),
            "what": what,
        }
        tmp = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=SUFFIX, dir=self.folder)
            with os.fdopen(fd, "wb") as fh:
                fh.write(MAGIC + json.dumps(header).encode() + b"\n")
                fh.write(memoryview(payload.astype("<f8", copy=False)).cast("B"))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path(key))
        except OSError as exc:
            if tmp is not None:
                _unlink(Path(tmp))
            self.enabled = False
            warnings.warn(
                f"kernel cache at {self.folder} is not usable ({type(exc).__name__}: {exc}); kernels are "
                "recomputed in every session (set CNTK_DATA_DIR to a writable folder to keep them)",
                RuntimeWarning,
                stacklevel=2,
            )
            return False
        self.writes += 1
        self._trim()
        return True

    def clean(self, stale_seconds: float = STALE_SECONDS) -> int:
        """Remove temporary files older than ``stale_seconds`` (left by killed writers); their count."""
        removed = 0
        now = time.time()
        for tmp in self.folder.glob(f".tmp-*{SUFFIX}"):
            try:
                if now - tmp.stat().st_mtime > stale_seconds:
                    tmp.unlink()
                    removed += 1
            except OSError:
                pass
        return removed

    def _trim(self) -> None:
        """Delete least recently used entries while the folder holds more than ``max_bytes``."""
        try:
            entries = [(p.stat(), p) for p in self.folder.glob(f"*{SUFFIX}") if not p.name.startswith(".")]
        except OSError:
            return
        total = sum(st.st_size for st, _ in entries)
        for st, p in sorted(entries, key=lambda e: e[0].st_mtime):
            if total <= self.max_bytes:
                break
            _unlink(p)
            total -= st.st_size


def _decode(data: bytes) -> np.ndarray | None:
    """The array in an entry's bytes, or ``None`` when anything about it is wrong."""
    if not data.startswith(MAGIC):
        return None
    end = data.find(b"\n", len(MAGIC))
    if end < 0:
        return None
    try:
        header = json.loads(data[len(MAGIC) : end])
        shape = tuple(int(s) for s in header["shape"])
        digest = str(header["sha256"])
        if header["dtype"] != "<f8" or any(s < 0 for s in shape):
            return None
    except (ValueError, KeyError, TypeError):
        return None
    payload = data[end + 1 :]
    if len(payload) != 8 * int(np.prod(shape, dtype=np.int64)):
        return None
    if hashlib.sha256(payload).hexdigest() != digest:
        return None
    return np.frombuffer(payload, dtype="<f8").reshape(shape).astype(np.float64)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
