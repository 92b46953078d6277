"""An on-disk, resumable, checksummed Gram matrix: a chunked zarr store written one tile at a time.

Layout of a store (a zarr v3 group, a plain directory on a file system that every worker sees):

===========  =====================================  =============================================
name         shape, dtype                           content
===========  =====================================  =============================================
``gram``     ``[n1, n2]`` float64, chunks (t, t)     the kernel values; one chunk = one tile, with a
                                                     crc32c checksum; fill value NaN (never written)
``done``     ``[n_row_tiles, n_col_tiles]`` uint16  0: tile missing; k > 0: tile on disk, computed
             chunks (1, 1), crc32c                   k times (written AFTER the tile's chunk)
``x1``       ``[n1, P, Q, C]`` input dtype, crc32c   the images, so that a worker reads only the
``x2``       ``[n2, P, Q, C]`` (absent: symmetric)   rows of its tile (chunks of ``t`` images)
===========  =====================================  =============================================

The group's attributes hold the metadata that decides whether a store may be resumed: the
architecture (depth, readout, fix_first, fix_last, kind), the data (sha256 of each input's bytes,
shape and dtype), the precision, the engine version and the tile size; also a sha256 per block of
``t`` stored images (``blocks``) and who created the store (``created_by``). A symmetric Gram
(``x2=None``) stores only the tiles on or above the diagonal; :meth:`GramStore.load` mirrors them.

What the store guarantees (format 2): a matrix read by :meth:`~GramStore.load` or
:meth:`~GramStore.as_dask` (or checked by :meth:`~GramStore.verify`) is the one the job computed,
or an error names the damaged or missing tiles, the store and the repair (re-run the same job: it
recomputes exactly those tiles). Every chunk carries zarr's crc32c checksum (a bit flip, a
truncated or 0-byte file fails it); a missing tile chunk reads as NaN, which a finished tile never
holds; an unreadable done marker counts as a missing tile; a lost array, or array metadata that
does not parse or fit the store's layout, is named with its folder. Workers check the images they
read against the driver's per-block sha256. Creation is exclusive (see :mod:`cntk_core.store_create`
for what that relies on on shared file systems).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .validation import ParameterError, ParameterTypeError

if TYPE_CHECKING:
    import dask.array

FORMAT = "cntk-lab-gram/2"
#: formats :meth:`GramStore.open` reads (format 1: no checksums, no image digests)
READABLE_FORMATS = ("cntk-lab-gram/1", FORMAT)
#: metadata fields that must agree before a store may be resumed
IDENTITY_KEYS = ("network", "data", "dtype", "engine_version", "tile_size")
#: how a user repairs a damaged or unfinished store
REPAIR = (
    "re-run the same gram_to_store(...) call (or `cntk-lab gram ... --store PATH`) on this store: "
    "it recomputes exactly the missing and damaged tiles and keeps the others"
)


class StoreMismatchError(ValueError):
    """The store holds tiles of another architecture, data set, precision, engine or tiling."""


class StoreWriteError(OSError):
    """The store cannot be created or written (permissions, a path under a file, ...)."""


class StoreSpaceError(OSError):
    """Not enough free disk space for the rest of the Gram matrix."""


class IncompleteStoreError(RuntimeError):
    """The store is missing tiles; re-run :func:`cntk_core.distributed.gram_to_store` to finish it.

    ``.path``: the store; ``.tiles``: the missing tiles ``(i, j)``, row-major.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None, tiles: Iterable = ()) -> None:
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.tiles = list(tiles)

    def __reduce__(self):  # raised on a Dask worker, it arrives whole
        return type(self), (str(self), self.path, self.tiles)


class CorruptStoreError(IncompleteStoreError):
    """Tiles, done markers or stored images of the store are damaged (checksum, truncation, loss).

    ``.tiles``: the damaged tiles ``(i, j)`` (for stored images: ``("x1", block)`` pairs). Re-running
    the same job repairs the store. A subclass of :class:`IncompleteStoreError`: either way the
    store cannot give the whole matrix until the job is re-run.
    """


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


def tile_list(tiles, limit: int = 6) -> str:
    """``"(0, 1), (2, 2) and 5 more"``: the first ``limit`` tiles of a list, for messages."""
    tiles = list(tiles)
    shown = ", ".join(t if isinstance(t, str) else str(tuple(t)) for t in tiles[:limit])
    return shown + (f" and {len(tiles) - limit} more" if len(tiles) > limit else "")


class GramStore:
    """A Gram matrix store on disk; see the module docstring for its layout and guarantees.

    >>> store = GramStore.open("gram.zarr")           # doctest: +SKIP
    >>> store.missing_tiles(), store.is_complete        # doctest: +SKIP
    >>> K = store.load()                                # float64 [n1, n2], verified   # doctest: +SKIP
    """

    def __init__(self, path, group):
        self.path = Path(path)
        self._group = group
        #: summary of the last :func:`~cntk_core.distributed.gram_to_store` call (``None`` after open)
        self.last_run = None

    # -- opening ---------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r") -> GramStore:
        """Open an existing store (``mode="r"`` read-only, ``"r+"`` to write); clear error if it is none."""
        import zarr

        path = Path(path).expanduser()
        if mode not in ("r", "r+"):  # zarr's "w" / "w-" / "a" would create or wipe the store
            raise ParameterError(
                "mode", f"mode must be 'r' (read-only) or 'r+' (write to an existing store), got {mode!r}"
            )
        if not path.exists():
            raise FileNotFoundError(f"no Gram store at {str(path)!r}")
        try:
            group = zarr.open_group(store=str(path), mode=mode)
        except Exception as exc:
            raise ValueError(f"{str(path)!r} is not a zarr store ({type(exc).__name__}: {exc})") from None
        if group.attrs.get("format") not in READABLE_FORMATS:
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

    # -- arrays and progress ----------------------------------------------------------------------
    def _array(self, name: str):
        """The zarr array ``name``; :class:`CorruptStoreError` naming its folder if it is missing or
        its metadata damaged (does not parse, or a shape that does not fit the store)."""
        from .store_verify import layout, open_array

        try:
            spec = layout(self.metadata).get(name)
        except (KeyError, TypeError, ValueError):  # metadata of an unexpected form: no shape check
            spec = None
        if name in ("gram", "done"):
            tiles = self.tiles()
        else:
            tiles = [(name, b) for b in range(len((self.metadata.get("blocks") or {}).get(name) or ()))]
        return open_array(self._group, name, self.path, spec, tiles)

    def _markers(self) -> tuple[np.ndarray, list[tuple[int, int]]]:
        from .store_verify import array_problem, read_markers

        done = None if array_problem(self._group, "done") == "missing" else self._array("done")
        return read_markers(done, self.tile_grid)

    def compute_counts(self) -> np.ndarray:
        """uint16 ``[n_row_tiles, n_col_tiles]``: how many times each tile was computed to the end
        (0: missing, or its done marker is unreadable)."""
        return self._markers()[0].astype(np.uint16)

    def missing_tiles(self) -> list[tuple[int, int]]:
        """Tiles not marked done (never computed, or their marker is damaged), row-major.

        Reads only the done markers; :meth:`verify` also reads the tiles."""
        counts = self._markers()[0]
        return [(i, j) for i, j in self.tiles() if counts[i, j] == 0]

    @property
    def is_complete(self) -> bool:
        """Every tile is marked done (markers only; :meth:`verify` checks the tiles themselves)."""
        return not self.missing_tiles()

    def __repr__(self) -> str:
        total = len(self.tiles())
        try:
            done = f"{total - len(self.missing_tiles())}/{total} done"
        except CorruptStoreError:  # the done array's metadata is damaged: a repr must not raise
            done = f"?/{total} done (damaged done markers)"
        net = self._group.attrs.get("network", {})
        return (
            f"GramStore({str(self.path)!r}, shape={self.shape}, tiles {done}, "
            f"depth={net.get('depth')}, readout={net.get('readout')!r}, kind={net.get('kind')!r})"
        )

    # -- reading and verifying ---------------------------------------------------------------------
    def _check_markers(self) -> None:
        """Raise :class:`CorruptStoreError` (a lost array or damaged array metadata, damaged markers) or
        :class:`IncompleteStoreError` (missing tiles)."""
        self._array("gram")
        self._array("done")
        counts, bad = self._markers()
        damaged = set(bad)
        missing = [(i, j) for i, j in self.tiles() if counts[i, j] == 0 and (i, j) not in damaged]
        where = f"Gram store {str(self.path)!r}"
        if bad:
            more = f"; {len(missing)} further tiles missing" if missing else ""
            raise CorruptStoreError(
                f"{where}: the done markers of {len(bad)} tiles are damaged ({tile_list(bad)}){more}; {REPAIR}",
                self.path,
                bad,
            )
        if missing:
            total = len(self.tiles())
            raise IncompleteStoreError(
                f"{where} is incomplete: {len(missing)} of {total} tiles missing ({tile_list(missing)}); {REPAIR}",
                self.path,
                missing,
            )

    def load(self) -> np.ndarray:
        """The whole Gram as a float64 ``[n1, n2]`` array, every tile verified.

        Raises :class:`IncompleteStoreError` if tiles are missing and :class:`CorruptStoreError` if
        tiles or their done markers are damaged (checksum mismatch, truncated or lost chunk files),
        or the ``gram`` / ``done`` array is lost or its metadata damaged; each names the tiles (or
        the array's folder), the store and the repair. Allocates the result plus one row of tiles (bounded at
        about 128 MiB) at a time.
        """
        from .store_verify import scan_tiles

        self._check_markers()
        out = np.empty(self.shape, dtype=np.float64)
        bad = scan_tiles(self._array("gram"), self.tiles(), self.tile_size, self.shape, out=out)
        if bad:
            raise CorruptStoreError(_damaged_message(self.path, bad), self.path, list(bad))
        if self.symmetric:
            lower = np.tril_indices(out.shape[0], -1)
            out[lower] = out.T[lower]
        return out

    def as_dask(self, allow_missing: bool = False) -> dask.array.Array:
        """Lazy ``dask.array`` ``[n1, n2]`` float64 of the Gram, one dask chunk per tile (mirrored if symmetric).

        The done markers are checked now (:class:`IncompleteStoreError` / :class:`CorruptStoreError`
        if tiles are missing or markers damaged); each tile is verified when its chunk is computed
        (a damaged tile raises :class:`CorruptStoreError` naming it). ``allow_missing=True``: tiles
        not yet computed read as NaN instead (for a look at an unfinished store).
        """
        from .store_verify import tile_array

        if not allow_missing:
            self._check_markers()
        else:
            self._array("gram")
        return tile_array(self, allow_missing)

    def verify(self) -> int:
        """Check every done marker, every tile and the stored images; returns the number of tiles checked.

        Raises :class:`IncompleteStoreError` / :class:`CorruptStoreError` as :meth:`load` does, and
        :class:`CorruptStoreError` for stored images that are lost or do not match the job's recorded
        per-block sha256. Reads the whole store, one row of tiles at a time; allocates no ``[n1, n2]`` array.
        """
        from .store_verify import scan_inputs, scan_tiles

        self._check_markers()
        bad = scan_tiles(self._array("gram"), self.tiles(), self.tile_size, self.shape)
        if bad:
            raise CorruptStoreError(_damaged_message(self.path, bad), self.path, list(bad))
        for name in self.metadata.get("blocks") or {}:
            self._array(name)
        bad_inputs = scan_inputs(self._group, self.metadata)
        if bad_inputs:
            blocks = tile_list([f"{name} rows {reason}" for (name, _), reason in bad_inputs.items()])
            raise CorruptStoreError(
                f"Gram store {str(self.path)!r}: stored images damaged ({blocks}); re-run the same job with the "
                "same images: the driver rewrites them from its own data (tiles are unaffected: they were "
                "computed from verified images)",
                self.path,
                list(bad_inputs),
            )
        return len(self.tiles())


def _damaged_message(path, bad: dict) -> str:
    shown = "; ".join(f"tile {t}: {reason}" for t, reason in list(bad.items())[:4])
    more = f"; and {len(bad) - 4} more" if len(bad) > 4 else ""
    return f"Gram store {str(path)!r}: {len(bad)} damaged tiles ({shown}{more}); {REPAIR}"


def store_path(store: str | os.PathLike | GramStore) -> Path:
    """The path of a store given as ``str`` / ``os.PathLike`` (a local or shared file system path) or
    as a :class:`GramStore`."""
    if isinstance(store, GramStore):
        return store.path
    if not isinstance(store, (str, os.PathLike)):
        raise ParameterTypeError(
            "store", f"store must be a path (str or os.PathLike) or a GramStore, got {type(store).__name__}"
        )
    return Path(store).expanduser()


def __getattr__(name: str):
    """The creation checks moved to :mod:`cntk_core.store_checks`; old imports keep working."""
    if name in ("check_free_space", "required_bytes", "check_compatible"):
        from . import store_checks

        return getattr(store_checks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
