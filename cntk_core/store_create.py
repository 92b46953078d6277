"""Creating, joining and repairing a Gram store (driver side): the steps before any tile is computed.

**Exclusive creation.** A new store is claimed by publishing its root ``zarr.json`` (the group with
all the job's metadata) in one step: the file is written completely under a temporary name in the
store directory, then hard-linked to ``zarr.json`` with ``link(2)``, which fails if the name exists.
Of two jobs that start on one new path at the same instant exactly one links; the other reads the
winner's metadata and either joins (identical job fingerprint: architecture, data sha256,
precision, engine version, tile size) or is refused with a :class:`StoreMismatchError` that names
the owning job (its description, data, host, pid and start time). A published ``zarr.json`` is
never removed, renamed or rewritten afterwards.

A folder that holds only a group ``zarr.json`` without attributes (what an interrupted creation by
an earlier cntk-lab left) is taken over without removing or renaming that name, because another job
may have published its metadata there since it was read: the contenders link a claim file
(``.cntk-claim``, kept for good) exclusively, and every one of them then replaces ``zarr.json`` with
the claim's content, the one content it can ever take. As a safety net, a job that created the
store computes every tile whatever done markers it finds (they cannot be its own).

**Two drivers of one job at once are harmless.** Everything after the claim is idempotent and
writes bytes that depend only on the job: arrays are created if absent (a concurrent creator of the
same array is fine), image blocks are written only where they do not match the job's per-block
sha256, and a tile is the same bytes whoever computes it. zarr (3.1.3 and later, hence the
``zarr>=3.1.3`` requirement) writes every chunk to a temporary ``*.partial`` file and renames it into
place, so a reader sees a whole old chunk or a whole new one, never a torn one (a killed writer's
``*.partial`` files are removed by a later run); a done marker is written only after its tile. The
worst case is work done twice.

**Damaged arrays.** A re-run rebuilds what it can from the job itself: an array whose ``zarr.json``
is damaged gets it rewritten from the store's layout (its chunks are kept, and each is then checked
by its checksum); lost stored images are re-written from the driver's data; a lost ``gram`` or
``done`` array means every tile is recomputed.

**What this relies on.** ``link(2)`` failing with ``EEXIST`` when the name exists, and ``rename(2)``
replacing a file atomically: both hold on local POSIX file systems and on NFSv3/v4, Lustre, GPFS and
BeeGFS (on NFS, a link whose reply was lost and retried also says ``EEXIST``: the temporary file's
link count tells whether it was ours, the idiom of open(2)'s manual). On a file system without hard
links (some SMB/CIFS or FUSE mounts) creation falls back to ``open(O_CREAT | O_EXCL)`` (exclusive
there too, but the winner's metadata appears in two steps; a joiner waits for it). On file systems
without atomic rename (object-store mounts such as s3fs) two simultaneous drivers may see a
half-written chunk: its checksum then fails and the tile is recomputed on the next run, so a wrong
matrix is still never returned; but exclusivity is not guaranteed there: run one driver at a time.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._atomic import TMP_PREFIX as _TMP_PREFIX
from ._atomic import publish_exclusive, write_atomic
from .store import GramStore, StoreSpaceError, StoreWriteError, all_tiles
from .store import tile_bounds as _bounds
from .store_checks import check_compatible, check_free_space, check_target, required_bytes
from .store_checks import write_error as _write_error
from .store_verify import array_problem, block_digests, layout, read_markers, scan_inputs, scan_tiles

__all__ = ["JobPlan", "check_compatible", "check_free_space", "check_target", "open_or_create", "required_bytes"]

#: seconds after which a temporary file in a store is a killed writer's leftover
_STALE_TEMPORARY = 600.0
#: seconds a contender waits for a creator's metadata to be complete (no-hard-link fallback only)
_PUBLISH_WAIT = 10.0
#: the claim file of a takeover of an earlier version's unfinished creation (never removed)
_CLAIM = f"{_TMP_PREFIX}claim"
#: the name zarr (>= 3.1.3) gives a chunk or metadata file while it writes it
_ZARR_PARTIAL = re.compile(r"\.[0-9a-f]{32}\.partial$")


@dataclass
class JobPlan:
    """What a :func:`gram_to_store` call has to do, found before any tile is computed."""

    todo: list = field(default_factory=list)  #: tiles to compute, row-major
    repair: list = field(default_factory=list)  #: tiles of ``todo`` marked done but damaged or lost (recomputed)
    force: list = field(default_factory=list)  #: tiles of ``todo`` computed even if a done marker says done
    damage: dict = field(default_factory=dict)  #: ``{tile: reason}`` for the damaged tiles and markers found
    already_done: int = 0  #: sound tiles on disk
    inputs_repaired: int = 0  #: stored image blocks re-written from the driver's data
    arrays_repaired: list = field(default_factory=list)  #: arrays re-created or whose metadata was rewritten
    created: bool = False  #: this call created the store


def open_or_create(
    path: str | os.PathLike, meta: dict, x1: np.ndarray, x2: np.ndarray | None, verify: bool = True
) -> tuple[GramStore, JobPlan]:
    """Open the store at ``path`` for the job described by ``meta`` (or create it, exclusively);
    make sure its arrays and images are sound. Returns ``(GramStore, JobPlan)``.

    ``verify``: read every finished tile and count a damaged one as to do (reads the whole Gram,
    one row of tiles at a time; forced when the metadata of ``gram`` or ``done`` had to be
    rewritten). Stored images are checked against the job's per-block sha256 (``meta["blocks"]``)
    whenever tiles remain to compute or an image array was damaged, and re-written where they
    differ. Raises before writing anything: :class:`StoreMismatchError` (another job's store),
    :class:`StoreWriteError` (not writable, a name too long, under a file), :class:`StoreSpaceError`.
    A complete, sound store is only read (apart from removing killed writers' temporary files).
    """
    path = Path(path).expanduser()
    check_target(path, _unfinished_creation)
    inputs = {"x1": x1} if x2 is None else {"x1": x1, "x2": x2}
    specs = layout(meta)
    store = _open_existing(path)
    if store is None:
        n_tiles = len(all_tiles(*specs["done"]["shape"], x2 is None))
        needed = required_bytes(specs["gram"]["chunks"], n_tiles, sum(x.nbytes for x in inputs.values()))
        store, created = _create(path, meta, needed)
    else:
        check_compatible(store.metadata, meta, path)
        created = False
    group = store._group
    _sweep_temporary(path)
    problems = _check_arrays(path, group, specs)
    damaged = [name for name, why in problems.items() if why != "missing"]  # their metadata is rewritten now
    if created:  # (arrays found here are another run's: every tile and image block is written anew)
        plan = JobPlan(todo=store.tiles(), force=store.tiles(), created=True)
        bad_blocks = {name: list(range(len(meta["blocks"][name]))) for name in inputs}
    else:
        plan = _plan(store, verify or bool({"gram", "done"} & set(damaged)), problems)
        if not problems.get("gram") == problems.get("done") == "missing":  # both: a creation stopped before them
            plan.arrays_repaired = list(problems)
        bad_blocks = {}
        if plan.todo or set(problems) & set(inputs):  # images matter for tiles still to compute
            for name, b in scan_inputs(group, meta):
                bad_blocks.setdefault(name, []).append(b)
        if not plan.todo and not bad_blocks:
            return store, plan
        t = meta["tile_size"]
        in_bytes = sum(len(blocks) * t * inputs[name][:1].nbytes for name, blocks in bad_blocks.items())
        check_free_space(path, required_bytes(specs["gram"]["chunks"], len(plan.todo), in_bytes))
        _write_probe(path)
        plan.inputs_repaired = sum(map(len, bad_blocks.values()))
    try:
        _ensure_arrays(group, specs)
        for name, blocks in bad_blocks.items():
            for b in blocks:
                r0, r1 = _bounds(b, meta["tile_size"], len(inputs[name]))
                group[name][r0:r1] = inputs[name][r0:r1]
    except OSError as exc:
        raise _write_error(path, exc) from exc
    return store, plan


def _plan(store: GramStore, verify: bool, problems: dict) -> JobPlan:
    """The tiles to compute in an existing store whose damaged array metadata is rewritten and whose
    lost arrays are listed in ``problems`` (``{name: "missing"}``)."""
    tiles = store.tiles()
    lost = [name for name in ("gram", "done") if problems.get(name) == "missing"]
    if len(lost) == 2:  # neither tiles nor markers: a creation stopped before its arrays (or both lost)
        return JobPlan(todo=tiles)
    if lost:  # every tile, whatever the other array says
        reason = f"the {lost[0]} array was lost"
        return JobPlan(todo=tiles, repair=tiles, force=tiles, damage=dict.fromkeys(tiles, reason))
    counts, bad_markers = read_markers(store._group["done"], store.tile_grid)
    wanted = set(tiles)
    damage = {t: "done marker damaged" for t in bad_markers if t in wanted}
    done = [t for t in tiles if counts[t] > 0]
    if verify:
        damage.update(scan_tiles(store._group["gram"], done, store.tile_size, store.shape))
    good = set(done) - set(damage)
    todo = [t for t in tiles if t not in good]
    repair = [t for t in todo if t in damage]
    return JobPlan(todo=todo, repair=repair, force=repair, damage=damage, already_done=len(good))


# -- creation ---------------------------------------------------------------------------------------
def _create(path: Path, meta: dict, needed: int) -> tuple[GramStore, bool]:
    """Claim ``path`` for this job; ``(store, True)``, or ``(store, False)`` when an identical job
    claimed it first (a different one: :class:`StoreMismatchError`). The folder is made first (the
    one real test that it can be), then ``needed`` bytes of free space are checked; the folders it
    made are removed again if either fails."""
    import zarr

    first_new = None if path.exists() else _first_missing(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        check_free_space(path, needed)
        creator = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        group_meta = {"zarr_format": 3, "node_type": "group", "attributes": {**meta, "created_by": creator}}
        payload = json.dumps(group_meta, indent=2).encode()
        if _stale_group(path):  # an earlier version's interrupted creation: a group without attributes
            won = _claim_stale(path, payload)
        else:
            won = publish_exclusive(path / "zarr.json", payload)
    except StoreSpaceError:
        _remove_created(path, first_new)
        raise
    except OSError as exc:
        _remove_created(path, first_new)
        raise _write_error(path, exc) from exc
    if not won:
        store = _wait_open(path)
        check_compatible(store.metadata, meta, path)
        return store, False
    return GramStore(path, zarr.open_group(store=str(path), mode="r+")), True


def _claim_stale(path: Path, payload: bytes) -> bool:
    """Take over a folder whose ``zarr.json`` is an earlier version's attribute-less group; ``True``
    if this job owns the store.

    That name is never removed or renamed (a contender may have published its metadata there since
    it was read): the job whose claim file links first owns the store, and each contender, the
    owner included, then replaces ``zarr.json`` with the claim's content. So ``zarr.json`` changes
    once, from the stale group to the owner's metadata, whoever does it and in whatever order. The
    claim file is kept: removing it would let a late contender claim the store again."""
    won = publish_exclusive(path / _CLAIM, payload)
    write_atomic(path / "zarr.json", _complete_metadata(path / _CLAIM), prefix=f"{_TMP_PREFIX}publish-")
    return won


def _complete_metadata(file: Path) -> bytes:
    """The bytes of a published metadata file, once complete: on the no-hard-link fallback the
    content follows the name; wait for it (up to ``_PUBLISH_WAIT`` s)."""
    deadline = time.monotonic() + _PUBLISH_WAIT
    while True:
        payload = file.read_bytes()
        try:
            if json.loads(payload).get("attributes"):
                return payload
        except ValueError:
            pass
        if time.monotonic() > deadline:
            raise StoreWriteError(
                f"{str(file)!r} is incomplete (a creator was killed while writing it on a file system without "
                f"hard links); delete the folder {str(file.parent)!r} and re-run"
            )
        time.sleep(0.05)


def _wait_open(path: Path) -> GramStore:
    """Open a store whose ``zarr.json`` exists, waiting (up to ``_PUBLISH_WAIT`` s) while it is being written."""
    deadline = time.monotonic() + _PUBLISH_WAIT
    while True:
        try:
            json.loads((path / "zarr.json").read_bytes())
            break
        except ValueError:
            if time.monotonic() > deadline:
                break  # GramStore.open explains
            time.sleep(0.05)
    return GramStore.open(path, mode="r+")


def _open_existing(path: Path) -> GramStore | None:
    """The store at ``path``; ``None`` if there is none yet (absent, an empty folder, or what an
    interrupted creation left before its metadata was published)."""
    if not path.exists() or _unfinished_creation(path):
        return None
    if not (path / "zarr.json").exists():
        return GramStore.open(path, mode="r+")  # raises: not a zarr store
    return _wait_open(path)


def _unfinished_creation(path: Path) -> bool:
    """Whether ``path`` is a folder holding nothing but this module's temporary files, or only a
    group ``zarr.json`` without attributes (what an interrupted creation by an earlier version left)."""
    if not path.is_dir():
        return False
    entries = {p.name for p in path.iterdir() if not p.name.startswith(_TMP_PREFIX)}
    return not entries or (entries == {"zarr.json"} and _stale_group(path))


def _stale_group(path: Path) -> bool:
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("node_type") == "group" and not meta.get("attributes")


# -- arrays -----------------------------------------------------------------------------------------
def _array_options(spec: dict) -> dict:
    """``create_array`` arguments of an array of the store's layout: every chunk with a crc32c checksum."""
    from zarr.codecs import Crc32cCodec

    return {**spec, "compressors": [Crc32cCodec()]}


def _ensure_arrays(group, specs: dict) -> None:
    """Create the store's arrays (:func:`~cntk_core.store_verify.layout`) that are absent."""
    from zarr.errors import ContainsArrayError

    for name, spec in specs.items():
        if name in group:
            continue
        try:
            group.create_array(name, **_array_options(spec))
        except ContainsArrayError:  # a driver of the same job created it meanwhile
            pass


def _check_arrays(path: Path, group, specs: dict) -> dict[str, str]:
    """``{name: "missing" | "damaged (...)"}`` for the store's arrays that are lost or whose metadata
    does not parse or fit ``specs``; the damaged ones get their metadata rewritten (writes nothing
    when all are sound)."""
    problems = {name: why for name, spec in specs.items() if (why := array_problem(group, name, spec, path=path))}
    damaged = [name for name, why in problems.items() if why != "missing"]
    if damaged:
        _write_probe(path)
        try:
            for name in damaged:
                _rewrite_metadata(path, name, specs[name])
        except OSError as exc:
            raise _write_error(path, exc) from exc
    return problems


def _rewrite_metadata(path: Path, name: str, spec: dict) -> None:
    """Replace the damaged ``zarr.json`` of the array ``name`` with the one it was created with (the
    layout is fixed by the job), keeping its chunks: each is checked by its checksum afterwards."""
    import zarr
    from zarr.core.buffer import default_buffer_prototype

    model = zarr.create_array(store=zarr.storage.MemoryStore(), **_array_options(spec))
    payload = model.metadata.to_buffer_dict(default_buffer_prototype())["zarr.json"].to_bytes()
    write_atomic(path / name / "zarr.json", payload)


def _sweep_temporary(path: Path, age: float = _STALE_TEMPORARY) -> None:
    """Remove temporary files older than ``age`` seconds, left by killed drivers and workers: this
    module's in the store folder (the claim file is kept) and zarr's ``*.partial`` chunk and metadata
    files anywhere in the store (a live writer's exist for milliseconds). Best effort."""
    cutoff = time.time() - age
    stale = [entry for entry in path.glob(f"{_TMP_PREFIX}*") if entry.name != _CLAIM]
    for folder, _, files in os.walk(path):
        stale += [Path(folder, name) for name in files if _ZARR_PARTIAL.search(name)]
    for entry in stale:
        with contextlib.suppress(OSError):
            if entry.is_file() and entry.stat().st_mtime < cutoff:
                entry.unlink()


def _write_probe(path: Path) -> None:
    """An existing store may have become read-only: fail now, not after computing a tile."""
    probe = path / f"{_TMP_PREFIX}write-probe-{uuid.uuid4().hex}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise _write_error(path, exc) from exc


def metadata_blocks(x1: np.ndarray, x2: np.ndarray | None, tile: int) -> dict:
    """``{"x1": [sha256 per block of tile images], "x2": [...] or None}``: the metadata ``blocks``."""
    return {"x1": block_digests(x1, tile), **({} if x2 is None else {"x2": block_digests(x2, tile)})}


# -- folders made by a failed creation --------------------------------------------------------------
def _first_missing(path: Path) -> Path:
    """The outermost not-yet-existing directory on the way to ``path`` (what ``mkdir -p`` creates)."""
    p = path.absolute()
    while not p.parent.exists() and p.parent != p:
        p = p.parent
    return p


def _remove_created(path: Path, first_new: Path | None) -> None:
    """Remove the folders a failed creation made, innermost first, only while they are empty."""
    if first_new is None:
        return
    p = path.absolute()
    while True:
        if p.exists():
            try:
                p.rmdir()
            except OSError:
                return
        if p == first_new or p == p.parent:
            return
        p = p.parent
