"""Getting the official CIFAR-10 ``cifar-10-python.tar.gz`` onto the machine: the per-user cache folder,
the URL, the download itself, the md5/sha256 checks and the temporary files of killed writers.

Safety model
------------
* Download (:func:`download_cifar10`): streamed into a temporary file in the cache directory,
  hashed on the fly, ``fsync``-ed, checked against the official md5 and sha256, and only then
  renamed (``os.replace``, atomic) to ``cifar-10-python.tar.gz``. An interrupted, truncated or
  wrong download leaves no file behind, so a file with the final name is always complete; the
  temporary file of a process killed outright (SIGKILL) is swept at the next load or download
  (:func:`sweep_stale_temps`).

The official digests (``CIFAR10_MD5``, ``CIFAR10_SHA256``) and the defaulting of the expected ones
(``_expected``) belong to :mod:`cntk_core.data._cifar`, which verifies every tarball it reads; a download
looks them up there at call time. Reading and loading the tarball is in :mod:`~cntk_core.data._cifar`.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import os
import socket
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..validation import check_flag
from ._cifar_cache import _SOURCES, DECODED_DIR, fsync_dir
from ._errors import DataError, DataUnavailableError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_FILENAME = "cifar-10-python.tar.gz"
CACHE_ENV = "CNTK_DATA_DIR"
#: a mirror of the official tarball (the official checksums still apply)
URL_ENV = "CNTK_CIFAR10_URL"
_CHUNK = 1 << 20


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The data cache directory: ``path``, else ``$CNTK_DATA_DIR``, else ``~/.cache/cntk-lab``."""
    if path is None:
        path = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "cntk-lab"
    return Path(path).expanduser()


def cifar10_url() -> str:
    """``$CNTK_CIFAR10_URL`` (a mirror), else the official :data:`CIFAR10_URL`."""
    return os.environ.get(URL_ENV) or CIFAR10_URL


# -- temporary files a killed writer leaves (SIGKILL, power loss: no ``finally`` runs) ---------------
#: a temporary file untouched this long is abandoned: a live writer writes it at least every ``timeout``
STALE_AGE = 3600.0


@functools.cache
def _machine() -> str:
    """8 hex digits naming this host, boot and PID namespace: where a writer's pid means something."""
    parts = [socket.gethostname()]
    try:
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:  # not Linux
        pass
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:8]


def temp_prefix(name: str) -> str:
    """``mkstemp`` prefix for a temporary ``name`` in a shared folder: ``.<name>.<pid>-<machine>.``, so that
    :func:`sweep_stale_temps` can tell a dead writer's file without waiting :data:`STALE_AGE`."""
    return f".{name}.{os.getpid()}-{_machine()}."


def _writer_gone(rest: str) -> bool:
    """Whether ``<pid>-<machine>.…`` (the part of a name after ``.<name>.``) names a writer that has ended on
    this machine; False when the name carries no writer or one elsewhere (only the age can tell then)."""
    pid, _, tail = rest.partition("-")
    if os.name != "posix" or not pid.isdigit() or tail[:9] != f"{_machine()}.":
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: alive, another user's
        pass
    return False


def sweep_stale_temps(directory: Path, name: str, suffix: str = ".part", *, age: float = STALE_AGE) -> None:
    """Remove the temporary files ``.<name>.*<suffix>`` in ``directory`` that killed writers left: those
    whose writer (see :func:`temp_prefix`) is gone, and any untouched for ``age`` seconds. Best effort
    (a missing or read-only folder is no error); folders are left to their own sweeper."""
    head = f".{name}."
    try:
        entries = [e for e in os.scandir(directory) if e.name.startswith(head) and e.name.endswith(suffix)]
    except OSError:
        return
    now = time.time()
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False) and (
                now - entry.stat(follow_symlinks=False).st_mtime > age or _writer_gone(entry.name[len(head) :])
            ):
                os.unlink(entry.path)
        except OSError:
            pass


def _sweep_cache(directory: Path) -> None:
    """The cache's own temporary files: a killed download's (up to 170 MB), the digest list's."""
    sweep_stale_temps(directory, CIFAR10_FILENAME)
    sweep_stale_temps(directory / DECODED_DIR, _SOURCES, suffix="")


def _hashes(fileobj) -> tuple[str, str]:
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    while chunk := fileobj.read(_CHUNK):
        md5.update(chunk)
        sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


class ChecksumError(DataError):
    """A file's md5 or sha256 is not the expected one: corrupt, or another file (e.g. a re-packed copy)."""


def _check_digests(md5: str, sha: str, expected_md5: str | None, expected_sha256: str | None, what: str) -> None:
    if expected_md5 is not None and md5 != expected_md5.lower():
        raise ChecksumError(f"{what}: md5 {md5} does not match the expected {expected_md5} (corrupt or not that file)")
    if expected_sha256 is not None and sha != expected_sha256.lower():
        raise ChecksumError(f"{what}: sha256 {sha} does not match the expected {expected_sha256}")


def download_cifar10(
    cache: str | os.PathLike | None = None,
    *,
    url: str | None = None,
    expected_md5: str | None = None,
    expected_sha256: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download the CIFAR-10 python tarball into the cache (see :func:`cache_dir`) and return its path.

    A file already present under the final name is returned as is (it is verified when read).
    The download is atomic: temporary file in the same directory, checksum, ``fsync``, ``os.replace``.
    ``url`` (default :func:`cifar10_url`) may be any URL urllib opens (tests use ``file://`` and a local
    HTTP server). Raises :class:`DataError` on a checksum mismatch or a short download and
    :class:`DataUnavailableError` (a ``FileNotFoundError``) when the server cannot be reached; no
    file is left behind.
    """
    # the official digests live (and are read at call time) in _cifar, which imports this module: import here
    from ._cifar import CIFAR10_ENV, _expected

    progress = check_flag(progress, "progress", allow_none=True) is not False  # None: the default, a bar
    url = cifar10_url() if url is None else url
    directory = cache_dir(cache)
    target = directory / CIFAR10_FILENAME
    _sweep_cache(directory)
    if target.is_file():
        return target
    exp_md5, exp_sha = _expected(expected_md5, expected_sha256)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(CIFAR10_FILENAME), suffix=".part", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
            received = 0
            request = urllib.request.Request(url, headers={"User-Agent": "cntk-lab"})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                bar = _progress_bar(total, url) if progress else None
                try:
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        md5.update(chunk)
                        sha.update(chunk)
                        received += len(chunk)
                        if bar is not None:
                            bar.update(len(chunk))
                finally:
                    if bar is not None:
                        bar.close()
            if total is not None and received != total:
                raise DataError(f"download of {url} is truncated: got {received} of {total} bytes")
            _check_digests(md5.hexdigest(), sha.hexdigest(), exp_md5, exp_sha, f"download of {url}")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
        fsync_dir(directory)
    except http.client.IncompleteRead as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"download of {url} is truncated ({exc})") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException) as exc:
        tmp.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        raise DataUnavailableError(
            f"CIFAR-10 is not in {directory} and could not be downloaded from {url} ({reason}): connect to the "
            f"internet once, or use a cifar-10-python.tar.gz or extracted folder you have (set {CIFAR10_ENV})"
        ) from None
    except BaseException:  # also network errors and Ctrl-C: never leave the temporary file
        tmp.unlink(missing_ok=True)
        raise
    return target


def _progress_bar(total: int | None, url: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=url.rsplit("/", 1)[-1])
