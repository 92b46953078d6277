"""Writing files so that a reader never sees half of one, and claiming a name exclusively.

- :func:`atomic_file` / :func:`write_atomic` / :func:`save_npy_atomic`: the content goes to a unique
  temporary sibling (a short name, so that a legal 255-byte final name never fails on the temporary
  one), is flushed and ``fsync``-ed, then ``os.replace``-d over the final name: a reader sees the
  whole old file or the whole new one. On an error the temporary file is removed and the final name
  is left as it was.
- :func:`publish_exclusive`: create a name holding a given content in one atomic step that fails if
  the name exists (``link(2)`` of a complete temporary file), for claims that exactly one of several
  processes may win.
- :func:`name_too_long`: the first component of a path longer than its file system's ``NAME_MAX``,
  found before anything is computed or written (a stat of such a path fails with a raw ``OSError``).

What this relies on: ``rename(2)`` replacing a name atomically and ``link(2)`` failing with
``EEXIST``; both hold on local POSIX file systems and on NFSv3/v4, Lustre, GPFS and BeeGFS.
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

#: prefix of the temporary names made here (callers may sweep their killed writers' leftovers)
TMP_PREFIX = ".cntk-"


def _temporary(path: Path, prefix: str | None, suffix: str = "") -> Path:
    """A new name beside ``path``: ``prefix`` (default ``.cntk-tmp-``), 16 random hex digits, ``suffix``."""
    return path.with_name(f"{prefix or TMP_PREFIX + 'tmp-'}{uuid.uuid4().hex[:16]}{suffix}")


def _write_synced(path: Path, payload: bytes) -> None:
    """Create ``path`` (it must not exist) holding ``payload``, flushed to disk."""
    with open(path, "xb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_file(path, *, prefix: str | None = None, suffix: str = "", mode: int | None = None) -> Iterator[BinaryIO]:
    """Yield a binary file open on a new temporary sibling of ``path`` (named ``prefix``, random
    digits, ``suffix``: a folder's sweeper of killed writers' files may need its own pattern); when
    the block ends without an error, ``fsync`` it, give it the permissions ``mode`` (default: the
    umask's) and rename it over ``path``. On an error, remove it (``path`` untouched)."""
    path = Path(path)
    tmp = _temporary(path, prefix, suffix)
    try:
        with open(tmp, "xb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone after a successful replace


def write_atomic(path, payload: bytes, **options) -> Path:
    """Replace ``path`` with ``payload`` atomically (``options``: see :func:`atomic_file`); returns ``Path(path)``."""
    with atomic_file(path, **options) as f:
        f.write(payload)
    return Path(path)


def save_npy_atomic(path, array) -> Path:
    """``np.save(path, array)`` atomically (no pickles); returns ``Path(path)``."""
    import numpy as np

    with atomic_file(path, prefix=f"{TMP_PREFIX}npy-") as f:
        np.save(f, array, allow_pickle=False)
    return Path(path)


def publish_exclusive(target, payload: bytes, prefix: str = f"{TMP_PREFIX}publish-") -> bool:
    """Create ``target`` holding ``payload`` in one atomic, exclusive step; ``False`` if it exists.

    The payload is written completely under a temporary name beside ``target``, then hard-linked to
    it: readers never see a partial file. On NFS a link whose reply was lost and that was retried
    says ``EEXIST`` too: the temporary file's link count tells whether it was ours (open(2)'s manual).
    On a file system without hard links (some SMB/CIFS or FUSE mounts) it falls back to
    ``open(O_CREAT | O_EXCL)``, exclusive as well, but the content appears in a second step: a reader
    that finds the name must wait for a complete content.
    """
    target = Path(target)
    tmp = _temporary(target, prefix)
    try:
        _write_synced(tmp, payload)
        try:
            os.link(tmp, target)
            return True
        except FileExistsError:
            return os.stat(tmp).st_nlink == 2
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK):
                raise
        try:  # no hard links on this file system
            fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        return True
    finally:
        tmp.unlink(missing_ok=True)


def name_too_long(path) -> tuple[str, int, int] | None:
    """``(name, bytes, NAME_MAX)`` for the first component of ``path`` (made absolute) longer than the
    ``NAME_MAX`` of the file system it would live on, or ``None``. Writes nothing: a component too
    long cannot exist, so only the existing folders above it are asked."""
    p = Path(path).absolute()
    anchor = p
    while not _exists(anchor) and anchor != anchor.parent:
        anchor = anchor.parent
    try:
        name_max = os.pathconf(anchor if anchor.is_dir() else anchor.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    for part in p.relative_to(anchor).parts:
        size = len(os.fsencode(part))
        if size > name_max:
            return part, size, name_max
    return None


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # e.g. ENAMETOOLONG: a name that cannot exist
        return False
