"""An on-disk, resumable Gram matrix: a chunked zarr store written one tile at a time.

Layout of a store (a zarr v3 group, a plain directory on a file system that every worker sees):

===========  =====================================  =============================================
name         shape, dtype                           content
===========  =====================================  =============================================
``gram``     ``[n1, n2]`` float64, chunks (t, t)     the kernel values; one chunk = one tile;
                                                     uncompressed, fill value NaN (never written)
``done``     ``[n_row_tiles, n_col_tiles]`` uint16  0: tile missing; k > 0: tile on disk, computed
             chunks (1, 1)                           k times (written AFTER the tile's chunk)
``x1``       ``[n1, P, Q, C]`` input dtype           the images, so that a worker reads only the
``x2``       ``[n2, P, Q, C]`` (absent: symmetric)   rows of its tile (chunks of ``t`` images)
===========  =====================================  =============================================

The group's attributes hold the metadata that decides whether a store may be resumed: the
architecture (depth, readout, fix_first, fix_last, kind), the data (sha256 of each input's bytes,
shape and dtype), the precision, the engine version and the tile size. A symmetric Gram
(``x2=None``) stores only the tiles on or above the diagonal; :meth:`GramStore.load` mirrors them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

FORMAT = "cntk-lab-gram/1"
#: metadata fields that must agree before a store may be resumed
IDENTITY_KEYS = ("network", "data", "dtype", "engine_version", "tile_size")
#: bytes a file system spends at least per small file (one per marker chunk)
_BLOCK = 4096


class StoreMismatchError(ValueError):
    """The store holds tiles of another architecture, data set, precision, engine or tiling."""


class StoreWriteError(OSError):
    """The store cannot be created or written (permissions, a path under a file, ...)."""


class StoreSpaceError(OSError):
    """Not enough free disk space for the rest of the Gram matrix."""


class IncompleteStoreError(RuntimeError):
    """The store is missing tiles; re-run :func:`cntk_core.distributed.gram_to_store` to finish it."""


def fingerprint(x: np.ndarray) -> dict:
    """``{"sha256", "shape", "dtype"}`` of a C-contiguous image array (hash of shape, dtype and bytes)."""
    h = hashlib.sha256()
    h.update(repr((tuple(x.shape), x.dtype.str)).encode())
    h.update(memoryview(np.ascontiguousarray(x)).cast("B"))
    return {"sha256": h.hexdigest(), "shape": list(x.shape), "dtype": x.dtype.str}


def tile_bounds(index: int, tile: int, n: int) -> tuple[int, int]:
    """``(start, stop)`` of tile ``index`` along an axis of length ``n``."""
    return index * tile, min((index + 1) * tile, n)


def all_tiles(n_row_tiles: int, n_col_tiles: int, symmetric: bool) -> list[tuple[int, int]]:
    """Tiles a Gram needs, row-major; only ``i <= j`` for a symmetric Gram."""
    return [(i, j) for i in range(n_row_tiles) for j in range(i if symmetric else 0, n_col_tiles)]


class GramStore:
    """A Gram matrix store on disk; see the module docstring for its layout.

    >>> store = GramStore.open("gram.zarr")           # doctest: +SKIP
    >>> store.missing_tiles(), store.is_complete        # doctest: +SKIP
    >>> K = store.load()                                # float64 [n1, n2]   # doctest: +SKIP
    """

    def __init__(self, path, group):
        self.path = Path(path)
        self._group = group
        #: summary of the last :func:`~cntk_core.distributed.gram_to_store` call (``None`` after open)
        self.last_run = None

    # -- opening ---------------------------------------------------------------------------------
    @classmethod
    def open(cls, path, mode: str = "r") -> GramStore:
        """Open an existing store (``mode="r"`` read-only, ``"r+"`` to write); clear error if it is none."""
        import zarr

        path = Path(path).expanduser()
        if mode not in ("r", "r+"):  # zarr's "w" / "w-" / "a" would create or wipe the store
            raise ValueError(f"mode must be 'r' (read-only) or 'r+' (write to an existing store), got {mode!r}")
        if not path.exists():
            raise FileNotFoundError(f"no Gram store at {str(path)!r}")
        try:
            group = zarr.open_group(store=str(path), mode=mode)
        except Exception as exc:
            raise ValueError(f"{str(path)!r} is not a zarr store ({type(exc).__name__}: {exc})") from None
        if group.attrs.get("format") != FORMAT:
            raise ValueError(f"{str(path)!r} is a zarr group but not a cntk-lab Gram store (format {FORMAT!r})")
        return cls(path, group)

    # -- metadata --------------------------------------------------------------------------------
    @property
    def metadata(self) -> dict:
        """The store's attributes (a copy): architecture, data fingerprints, dtype, version, layout."""
        return dict(self._group.attrs)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self._group.attrs["shape"])

    @property
    def tile_size(self) -> int:
        return int(self._group.attrs["tile_size"])

    @property
    def symmetric(self) -> bool:
        return bool(self._group.attrs["symmetric"])

    @property
    def tile_grid(self) -> tuple[int, int]:
        """``(n_row_tiles, n_col_tiles)``."""
        n1, n2 = self.shape
        t = self.tile_size
        return -(-n1 // t), -(-n2 // t)

    def tiles(self) -> list[tuple[int, int]]:
        """All tiles ``(i, j)`` this Gram needs (upper triangle of the tile grid when symmetric)."""
        return all_tiles(*self.tile_grid, self.symmetric)

    # -- progress --------------------------------------------------------------------------------
    def compute_counts(self) -> np.ndarray:
        """uint16 ``[n_row_tiles, n_col_tiles]``: how many times each tile was computed to the end (0: missing)."""
        if "done" not in self._group:
            return np.zeros(self.tile_grid, np.uint16)
        return np.asarray(self._group["done"][...])

    def missing_tiles(self) -> list[tuple[int, int]]:
        """Tiles not yet on disk, row-major."""
        counts = self.compute_counts()
        return [(i, j) for i, j in self.tiles() if counts[i, j] == 0]

    @property
    def is_complete(self) -> bool:
        return not self.missing_tiles()

    def __repr__(self) -> str:
        total = len(self.tiles())
        done = total - len(self.missing_tiles())
        net = self._group.attrs.get("network", {})
        return (
            f"GramStore({str(self.path)!r}, shape={self.shape}, tiles {done}/{total} done, "
            f"depth={net.get('depth')}, readout={net.get('readout')!r}, kind={net.get('kind')!r})"
        )

    # -- reading ---------------------------------------------------------------------------------
    def as_dask(self):
        """Lazy ``dask.array`` ``[n1, n2]`` of the Gram, one dask chunk per tile (mirrored if symmetric).

        Tiles not yet computed read as NaN.
        """
        import dask.array as da

        a = da.from_zarr(self._group["gram"])
        if not self.symmetric:
            return a
        n = self.shape[0]
        upper = da.arange(n, chunks=a.chunks[0])[:, None] <= da.arange(n, chunks=a.chunks[1])[None, :]
        return da.where(upper, a, a.T)

    def load(self) -> np.ndarray:
        """The whole Gram as a float64 ``[n1, n2]`` array; raises :class:`IncompleteStoreError` if tiles are missing."""
        missing = self.missing_tiles()
        if missing:
            total = len(self.tiles())
            raise IncompleteStoreError(
                f"Gram store {str(self.path)!r} is incomplete: {len(missing)} of {total} tiles missing "
                f"(first {missing[:3]}); re-run the same gram_to_store(...) call to compute them"
            )
        out = np.asarray(self._group["gram"][...], dtype=np.float64)
        if self.symmetric:
            lower = np.tril_indices(out.shape[0], -1)
            out[lower] = out.T[lower]
        return out


# -- creation and checks (driver side) ------------------------------------------------------------
def required_bytes(chunk: tuple[int, int], n_tiles: int, inputs_nbytes: int) -> int:
    """Disk bytes still needed for ``n_tiles`` tiles (uncompressed float64 chunks of shape ``chunk``,
    full size even at the array's edge), their marker files and the inputs."""
    return inputs_nbytes + n_tiles * (max(chunk[0] * chunk[1] * 8, _BLOCK) + _BLOCK)


def check_free_space(path: Path, needed: int) -> None:
    """Raise :class:`StoreSpaceError` if the file system of ``path`` has less than ``needed`` bytes free.

    A 2 % + 16 MiB margin is kept for zarr metadata and file system overhead.
    """
    if needed <= 0:
        return
    probe = _existing_ancestor(path)
    free = shutil.disk_usage(probe).free
    want = int(needed * 1.02) + (16 << 20)
    if free < want:
        raise StoreSpaceError(
            f"not enough free disk space for the Gram store {str(path)!r}: it needs about "
            f"{_human(want)} more, but only {_human(free)} are free on the file system of {str(probe)!r}; "
            "free some space or choose another --store path (nothing was computed)"
        )


def _existing_ancestor(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n} B"


def create_or_check(
    path, meta: dict, x1: np.ndarray, x2: np.ndarray | None
) -> tuple[GramStore, bool, list[tuple[int, int]]]:
    """Open the store at ``path`` if its metadata matches ``meta`` (else :class:`StoreMismatchError`),
    or create it; in both cases make sure its arrays and inputs exist. Returns ``(store, created,
    missing)``, ``missing`` the tiles still to compute (its done markers are read once, here).

    Free space is checked (against what is still missing) before anything is written.
    """
    import zarr

    path = Path(path).expanduser()
    existing = None
    if path.exists() and not _unfinished_creation(path):
        existing = GramStore.open(path, mode="r+")
        check_compatible(existing.metadata, meta, path)
        tiles = existing.missing_tiles()
        if not tiles:  # complete: nothing to write (the store may be read-only now)
            return existing, False, tiles

    symmetric = x2 is None
    t = meta["tile_size"]
    grid = (-(-meta["shape"][0] // t), -(-meta["shape"][1] // t))
    if existing is None:
        tiles = all_tiles(*grid, symmetric)
    # chunk shape: the existing array's, or what _ensure_arrays will create (also for a store whose
    # run was interrupted after its metadata was written and before its arrays were)
    has_gram = existing is not None and "gram" in existing._group
    chunk = tuple(existing._group["gram"].chunks) if has_gram else _gram_chunks(meta)
    inputs_done = existing is not None and existing.metadata.get("inputs_written", False)
    in_bytes = 0 if inputs_done else x1.nbytes + (0 if symmetric else x2.nbytes)

    first_new = None
    if existing is None:  # can the directory be made at all? (cleaned up again if space is short)
        try:
            if path.exists():  # an empty folder or an unfinished creation: keep the folder itself
                (path / "zarr.json").unlink(missing_ok=True)
            else:  # exclusive: of two jobs creating one store at once, the second stops here
                first_new = _first_missing(path)
                path.mkdir(parents=True)
        except OSError as exc:
            raise _write_error(path, exc) from exc
    try:
        check_free_space(path, required_bytes(chunk, len(tiles), in_bytes))
    except StoreSpaceError:
        if first_new is not None:
            shutil.rmtree(first_new, ignore_errors=True)
        raise

    try:
        if existing is None:  # the group and its metadata in one write (zarr.json); "w-" never deletes
            group = zarr.open_group(store=str(path), mode="w-", attributes={**meta, "inputs_written": False})
        else:
            group = existing._group
            probe = path / ".write-probe"  # an existing store may have become read-only
            probe.write_bytes(b"")
            probe.unlink()
        _ensure_arrays(group, meta, grid, x1, x2)
        if not group.attrs.get("inputs_written", False):
            group["x1"][...] = x1
            if not symmetric:
                group["x2"][...] = x2
            group.attrs["inputs_written"] = True
    except OSError as exc:
        raise _write_error(path, exc) from exc
    return GramStore(path, group), existing is None, tiles


def _unfinished_creation(path: Path) -> bool:
    """Whether ``path`` is an empty directory, or a zarr group with no attributes and no arrays: what
    an interrupted creation by an earlier version left (it wrote the group, then its attributes).
    Such a path is taken as a new store; anything else is opened (and refused if foreign)."""
    if not path.is_dir():
        return False
    entries = {p.name for p in path.iterdir()}
    if not entries:
        return True
    if entries != {"zarr.json"}:
        return False
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("node_type") == "group" and not meta.get("attributes")


def _write_error(path, exc) -> StoreWriteError:
    return StoreWriteError(
        f"cannot write the Gram store at {str(path)!r}: {type(exc).__name__}: {exc} "
        "(check that the directory is writable and not under a file; nothing was computed)"
    )


def _first_missing(path: Path) -> Path:
    """The outermost not-yet-existing directory on the way to ``path`` (what ``mkdir -p`` creates)."""
    p = path.absolute()
    while not p.parent.exists() and p.parent != p:
        p = p.parent
    return p


def _gram_chunks(meta: dict) -> tuple[int, int]:
    """One tile per chunk, no larger than the Gram (a tile size above n costs no space)."""
    t, (n1, n2) = meta["tile_size"], meta["shape"]
    return min(t, n1), min(t, n2)


def _ensure_arrays(group, meta, grid, x1, x2) -> None:
    t = meta["tile_size"]
    n1, n2 = meta["shape"]
    if "gram" not in group:
        chunks = _gram_chunks(meta)
        group.create_array("gram", shape=(n1, n2), chunks=chunks, dtype="float64", fill_value=np.nan, compressors=None)
    if "done" not in group:
        group.create_array("done", shape=grid, chunks=(1, 1), dtype="uint16", fill_value=0, compressors=None)
    for name, x in (("x1", x1), ("x2", x2)):
        if x is not None and name not in group:
            group.create_array(name, shape=x.shape, chunks=(min(t, len(x)),) + x.shape[1:], dtype=x.dtype)


def check_compatible(have: dict, want: dict, path) -> None:
    """Raise :class:`StoreMismatchError` naming every identity field where ``have`` and ``want`` differ."""
    diffs = [
        _short(f"{k}: store {x!r} vs requested {y!r}")
        for k, x, y in _flat_diff({k: have.get(k) for k in IDENTITY_KEYS}, {k: want.get(k) for k in IDENTITY_KEYS})
    ]
    if diffs:
        raise StoreMismatchError(
            f"the Gram store {str(path)!r} holds tiles of a different job, refusing to mix them: "
            + "; ".join(diffs)
            + ". Use a new store path (or delete this one) for a different architecture, data set, "
            "precision, engine version or tile size."
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


def store_path(store) -> Path:
    """Accept ``str`` / ``os.PathLike`` (a local or shared file system path)."""
    if isinstance(store, GramStore):
        return store.path
    if not isinstance(store, (str, os.PathLike)):
        raise TypeError(f"store must be a path (str or os.PathLike) or a GramStore, got {type(store).__name__}")
    return Path(store).expanduser()
