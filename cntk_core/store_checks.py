"""The checks a Gram job makes before it writes anything (driver side, used by :mod:`cntk_core.store_create`):
the store path, whether an existing store belongs to this job, and free disk space."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from ._atomic import name_too_long
from .store import FORMAT, IDENTITY_KEYS, StoreMismatchError, StoreSpaceError, StoreWriteError

#: bytes a file system spends at least per small file (one per marker chunk)
_BLOCK = 4096


def check_target(path: Path, unfinished: Callable[[Path], bool]) -> None:
    """Raise :class:`StoreWriteError` unless ``path`` can become (or is) a store directory: not a
    file nor under one, every new name within the file system's NAME_MAX (the temporary names made
    inside are short), and a writable folder to create it in. ``unfinished(path)``: whether an
    existing folder is still to be created as a store. Writes nothing."""
    too_long = name_too_long(path)  # first: a stat of a longer name fails
    if too_long:
        part, size, name_max = too_long
        reason = f"the name {part[:40]!r}... is {size} bytes, more than this file system's {name_max}"
        raise write_error(path, OSError(errno.ENAMETOOLONG, reason))
    p = path.absolute()
    if p.exists() and not p.is_dir():
        raise write_error(path, NotADirectoryError(f"{str(p)!r} is a file, not a store directory"))
    anchor = existing_ancestor(p)
    if not anchor.is_dir():
        raise write_error(path, NotADirectoryError(f"{str(anchor)!r} is a file"))
    fresh = anchor != p or unfinished(p)
    if fresh and not os.access(anchor, os.W_OK | os.X_OK):
        raise write_error(path, PermissionError(f"the folder {str(anchor)!r} is not writable"))


def check_compatible(have: dict, want: dict, path) -> None:
    """Raise :class:`StoreMismatchError` naming every identity field where ``have`` and ``want``
    differ, and the job that owns the store."""
    if have.get("format") != FORMAT:
        raise StoreMismatchError(
            f"the Gram store {str(path)!r} was written by an earlier cntk-lab (format {have.get('format')!r}, "
            f"without checksums) and cannot be resumed by this version ({FORMAT!r}); GramStore.open(path).load() "
            "still reads it. Compute into a new store path."
        )
    diffs = [
        _short(f"{k}: store {x!r} vs requested {y!r}")
        for k, x, y in _flat_diff({k: have.get(k) for k in IDENTITY_KEYS}, {k: want.get(k) for k in IDENTITY_KEYS})
    ]
    if diffs:
        raise StoreMismatchError(
            f"the Gram store {str(path)!r} belongs to another job ({_owner(have)}); refusing to mix their tiles: "
            + "; ".join(diffs)
            + ". Use a new store path (or delete this one) for a different architecture, data set, "
            "precision, engine version or tile size."
        )


def _owner(meta: dict) -> str:
    """One line on the job that owns a store: its network, data, tiling and creator."""
    by = meta.get("created_by") or {}
    net = meta.get("network") or {}
    data = (meta.get("data") or {}).get("x1") or {}
    fixed = [name for name in ("fix_first", "fix_last") if net.get(name)]
    who = f"created by {by.get('host')} pid {by.get('pid')} at {by.get('time')}" if by else "creator unknown"
    return (
        f"{str(net.get('kind', '?')).upper()} depth {net.get('depth')} readout {net.get('readout')}"
        f"{' ' + '+'.join(fixed) if fixed else ''}, {meta.get('dtype')}, x1 {data.get('shape')} sha256 "
        f"{str(data.get('sha256'))[:12]}..., tile size {meta.get('tile_size')}; {who}"
    )


def _flat_diff(a, b, prefix=""):
    """``[(dotted key, a value, b value)]`` for the leaves where two nested dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _flat_diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [(prefix.rstrip("."), a, b)]


def _short(s: str, limit: int = 160) -> str:
    return s if len(s) <= limit else s[: limit - 3] + "..."


# -- disk space -------------------------------------------------------------------------------------
def required_bytes(chunk: tuple[int, int], n_tiles: int, inputs_nbytes: int) -> int:
    """Disk bytes still needed for ``n_tiles`` tiles (uncompressed float64 chunks of shape ``chunk``
    plus a 4-byte checksum, full size even at the array's edge), their marker files and the inputs."""
    return inputs_nbytes + n_tiles * (max(chunk[0] * chunk[1] * 8 + 4, _BLOCK) + _BLOCK)


def check_free_space(path: Path, needed: int) -> None:
    """Raise :class:`StoreSpaceError` if the file system of ``path`` has less than ``needed`` bytes free.

    A 2 % + 16 MiB margin is kept for zarr metadata and file system overhead.
    """
    if needed <= 0:
        return
    probe = existing_ancestor(path)
    free = shutil.disk_usage(probe).free
    want = int(needed * 1.02) + (16 << 20)
    if free < want:
        raise StoreSpaceError(
            f"not enough free disk space for the Gram store {str(path)!r}: it needs about "
            f"{_human(want)} more, but only {_human(free)} are free on the file system of {str(probe)!r}; "
            "free some space or choose another --store path (nothing was computed)"
        )


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n} B"


# -- small helpers ----------------------------------------------------------------------------------
def existing_ancestor(path: Path) -> Path:
    """``path`` (made absolute) or its nearest existing parent folder."""
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def write_error(path, exc) -> StoreWriteError:
    """The :class:`StoreWriteError` for an ``OSError`` met while checking or writing the store ``path``."""
    return StoreWriteError(
        f"cannot write the Gram store at {str(path)!r}: {type(exc).__name__}: {exc} "
        "(check that the directory is writable and not under a file; nothing was computed)"
    )
