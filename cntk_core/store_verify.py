"""Integrity checks of a Gram store (:mod:`cntk_core.store`): done markers, tile chunks, stored images.

How each part is checked:

- **tiles** (``gram``): every chunk carries zarr's crc32c checksum, so a flipped bit, a truncated or
  a 0-byte chunk file fails to decode; a chunk file that is gone reads as the fill value NaN, which
  a finished tile never holds (a non-finite kernel is refused before it is written).
- **done markers** (``done``): crc32c as well; an unreadable marker counts as a missing tile.
- **array metadata** (each array's ``zarr.json``): a lost array or metadata that does not parse or
  does not fit the store's layout (:func:`layout`) raises :class:`CorruptStoreError` naming the
  folder; a re-run of the job rewrites the metadata (keeping the chunks, each then re-checked by
  its checksum) or, for a lost ``gram`` or ``done``, recomputes every tile.
- **stored images** (``x1``, ``x2``): crc32c, and a sha256 per block of ``tile_size`` images that
  the driver computed from its own data (metadata ``blocks``); a worker checks the rows it reads
  against the digest it was sent, so a lost chunk (read as zeros) is caught too.

Reads are bounded: a scan reads one row of tiles (at most ~128 MiB) at a time.
"""

from __future__ import annotations

import hashlib
import os
import uuid

import numpy as np

from .store import REPAIR, CorruptStoreError, IncompleteStoreError, tile_bounds

#: bytes read per zarr call while scanning tiles
_READ_BYTES = 1 << 27


# -- the arrays ------------------------------------------------------------------------------------
def layout(meta: dict) -> dict[str, dict]:
    """``{name: dict(shape, chunks, dtype, fill_value)}`` of the arrays a store with metadata ``meta``
    holds (``gram``, ``done``, ``x1`` and, for a cross Gram, ``x2``): what they are created with, and
    what their metadata is checked against."""
    t, (n1, n2) = int(meta["tile_size"]), meta["shape"]
    specs = {
        "gram": dict(shape=(n1, n2), chunks=(min(t, n1), min(t, n2)), dtype="float64", fill_value=np.nan),
        "done": dict(shape=(-(-n1 // t), -(-n2 // t)), chunks=(1, 1), dtype="uint16", fill_value=0),
    }
    for name, data in (meta.get("data") or {}).items():
        if data:
            shape = tuple(data["shape"])
            specs[name] = dict(shape=shape, chunks=(min(t, shape[0]), *shape[1:]), dtype=data["dtype"], fill_value=0)
    return specs


def array_problem(
    group, name: str, spec: dict | None = None, keys=("shape", "chunks", "dtype"), path=None
) -> str | None:
    """``None`` if the array ``name`` opens and agrees with ``spec`` on ``keys``; else ``"missing"``
    or ``"damaged (...)"`` (metadata that does not parse, or does not fit the store's layout; with
    the store's ``path``: also a folder of chunks whose ``zarr.json`` is gone)."""
    try:
        arr = group[name]
    except KeyError:
        if path is not None and os.path.isdir(os.path.join(str(path), name)):
            return "damaged (its zarr.json is gone)"
        return "missing"
    except Exception as exc:  # a truncated or altered zarr.json: JSONDecodeError, ValueError, TypeError ...
        return f"damaged ({type(exc).__name__}: {str(exc)[:120]})"
    if not hasattr(arr, "chunks"):
        return "damaged (a group where an array belongs)"
    if spec:
        have = {"shape": tuple(arr.shape), "chunks": tuple(arr.chunks), "dtype": np.dtype(arr.dtype)}
        want = {"shape": tuple(spec["shape"]), "chunks": tuple(spec["chunks"]), "dtype": np.dtype(spec["dtype"])}
        diffs = [f"{k} {have[k]} instead of {want[k]}" for k in keys if have[k] != want[k]]
        if diffs:
            return f"damaged ({', '.join(diffs)})"
    return None


#: ``{array: (what its loss means, what a re-run does then, what a re-run re-checks)}``
_ARRAY_REPAIR = {
    "gram": ("its tiles are lost", "it recomputes every tile", "every tile"),
    "done": ("the done markers are lost", "it recomputes every tile", "every tile"),
    "x1": ("the stored images are lost", "the driver re-writes them from its own data", "every block of images"),
    "x2": ("the stored images are lost", "the driver re-writes them from its own data", "every block of images"),
}


def open_array(group, name: str, path, spec: dict | None = None, tiles=(), keys=("shape",)):
    """``group[name]``, or :class:`CorruptStoreError` naming the store, the array's folder and the
    repair, if it is missing or its metadata damaged (checked against ``spec`` on ``keys``).
    ``tiles``: the tiles (or image blocks) the error lists."""
    problem = array_problem(group, name, spec, keys, path)
    if problem is None:
        return group[name]
    folder = os.path.join(str(path), name)
    lost, rebuilt, checked = _ARRAY_REPAIR.get(name, ("", "it rebuilds it", "its chunks"))
    rerun = "re-run the same gram_to_store(...) call (or `cntk-lab gram ... --store PATH`) on this store: "
    if problem == "missing":
        message = f"the array {name!r} is missing (no folder {folder!r}): {lost}; {rerun}{rebuilt}"
    else:
        message = (
            f"the metadata of the array {name!r} ({os.path.join(folder, 'zarr.json')!r}) is {problem}; "
            f"{rerun}it rewrites that metadata from the store's layout, keeps the chunks and re-checks {checked} "
            "by its checksum, recomputing or re-writing only damaged ones"
        )
    raise CorruptStoreError(f"Gram store {str(path)!r}: {message}", path, list(tiles))


# -- image blocks -----------------------------------------------------------------------------------
def block_digest(x: np.ndarray) -> str:
    """sha256 of a block of images: its shape and its values as little-endian bytes (so that a
    big-endian input and its stored copy, read back in either byte order, give the same digest)."""
    a = np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("<"))
    h = hashlib.sha256(repr(tuple(a.shape)).encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def block_digests(x: np.ndarray, tile: int) -> list[str]:
    """:func:`block_digest` of each block of ``tile`` images of ``x`` (the last one may be shorter)."""
    return [block_digest(x[b : b + tile]) for b in range(0, len(x), tile)]


def read_block(group, name: str, block: int, tile: int, digest: str, n: int) -> tuple[np.ndarray | None, str | None]:
    """``(images, None)``: block ``block`` of the stored array ``name`` (``n`` images) if it matches
    ``digest``; else ``(None, reason)``, also when the array is gone or its metadata unreadable.
    Reads only those ``tile`` images."""
    r0, r1 = tile_bounds(block, tile, n)
    try:
        x = group[name][r0:r1]
    except KeyError:
        return None, f"{r0}:{r1} unreadable (the array {name!r} is missing)"
    except Exception as exc:
        return None, f"{r0}:{r1} unreadable ({_reason(exc)})"
    if block_digest(x) != digest:
        return None, f"{r0}:{r1} differ from the job's images (sha256 mismatch: a lost or altered chunk)"
    return x, None


def scan_inputs(group, meta: dict) -> dict[tuple[str, int], str]:
    """``{(name, block): reason}`` of the stored image blocks that do not match ``meta["blocks"]``."""
    bad = {}
    tile = int(meta["tile_size"])
    for name, digests in (meta.get("blocks") or {}).items():
        n = int(meta["data"][name]["shape"][0])
        for b, digest in enumerate(digests or ()):
            reason = read_block(group, name, b, tile, digest, n)[1]
            if reason:
                bad[(name, b)] = reason
    return bad


# -- done markers -----------------------------------------------------------------------------------
def read_markers(done, grid: tuple[int, int]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """``(counts, damaged)``: int64 ``[n_row_tiles, n_col_tiles]`` compute counts (0 for a missing or
    unreadable marker) and the tiles whose marker chunk is unreadable, from the ``done`` array
    (``None``: no markers at all). One read when all are sound; a damaged marker makes it read row
    by row, then marker by marker in that row."""
    counts = np.zeros(grid, dtype=np.int64)
    if done is None:
        return counts, []
    try:
        counts[...] = done[...]
        return counts, []
    except Exception:
        pass
    damaged = []
    for i in range(grid[0]):
        try:
            counts[i] = done[i, :]
        except Exception:
            for j in range(grid[1]):
                try:
                    counts[i, j] = int(done[i, j])
                except Exception:
                    damaged.append((i, j))
    return counts, damaged


def marker_count(done, i: int, j: int) -> int | None:
    """Compute count of tile ``(i, j)``, ``None`` if its marker is unreadable."""
    try:
        return int(done[i, j])
    except Exception:
        return None


# -- tiles ------------------------------------------------------------------------------------------
def _reason(exc: Exception) -> str:
    text = str(exc)
    if "checksum" in text.lower():
        return "checksum mismatch: flipped bits, or a truncated or 0-byte chunk file"
    return f"unreadable chunk ({type(exc).__name__}: {text[:160]})"


def _tile_problem(values: np.ndarray) -> str | None:
    if np.isfinite(values).all():
        return None
    if np.isnan(values).all():
        return "chunk file missing (its values read as the fill value NaN)"
    return "non-finite values in a finished tile"


def scan_tiles(gram, tiles, tile: int, shape, out: np.ndarray | None = None) -> dict[tuple[int, int], str]:
    """Read and check ``tiles`` of the ``gram`` array; returns ``{(i, j): reason}`` for the damaged ones (row-major).

    With ``out`` (float64 ``[n1, n2]``) the sound tiles are copied into it. Reads the tiles of one
    row of the tile grid together (at most ``_READ_BYTES`` per read); a read that fails is redone
    tile by tile, to name the damaged tiles.
    """
    n1, n2 = shape
    per_read = max(1, _READ_BYTES // (8 * tile * tile))
    rows: dict[int, list[int]] = {}
    for i, j in tiles:
        rows.setdefault(i, []).append(j)
    bad = {}
    for i, cols in rows.items():
        r0, r1 = tile_bounds(i, tile, n1)
        for k in range(0, len(cols), per_read):
            part = cols[k : k + per_read]
            lo, hi = part[0] * tile, tile_bounds(part[-1], tile, n2)[1]
            try:
                span = gram[r0:r1, lo:hi]
            except Exception:
                span = None
            for j in part:
                c0, c1 = tile_bounds(j, tile, n2)
                reason = None
                if span is None:
                    try:
                        values = gram[r0:r1, c0:c1]
                    except Exception as exc:
                        values, reason = None, _reason(exc)
                else:
                    values = span[:, c0 - lo : c1 - lo]
                reason = reason or _tile_problem(values)
                if reason:
                    bad[(i, j)] = reason
                elif out is not None:
                    out[r0:r1, c0:c1] = values
    return bad


def read_tile(path: str, i: int, j: int, allow_missing: bool = False, transpose: bool = False) -> np.ndarray:
    """Tile ``(i, j)`` of the store at ``path``, verified (a task of :func:`tile_array`).

    :class:`IncompleteStoreError` if it is not marked done (unless ``allow_missing``: NaN),
    :class:`CorruptStoreError` if its marker or chunk is damaged."""
    import zarr

    group = zarr.open_group(store=path, mode="r")
    tile, (n1, n2) = int(group.attrs["tile_size"]), group.attrs["shape"]
    r0, r1 = tile_bounds(i, tile, n1)
    c0, c1 = tile_bounds(j, tile, n2)
    gram, done = (open_array(group, name, path, tiles=[(i, j)]) for name in ("gram", "done"))
    count = marker_count(done, i, j)
    where = f"Gram store {path!r}, tile {(i, j)}"
    if count is None:
        raise CorruptStoreError(f"{where}: its done marker is damaged; {REPAIR}", path, [(i, j)])
    if count == 0:
        if allow_missing:
            values = np.full((r1 - r0, c1 - c0), np.nan)
            return values.T if transpose else values
        raise IncompleteStoreError(f"{where} is missing; {REPAIR}", path, [(i, j)])
    try:
        values = np.asarray(gram[r0:r1, c0:c1], dtype=np.float64)
        reason = _tile_problem(values)
    except Exception as exc:
        reason = _reason(exc)
    if reason:
        raise CorruptStoreError(f"{where} is damaged ({reason}); {REPAIR}", path, [(i, j)])
    return values.T if transpose else values


def tile_array(store, allow_missing: bool):
    """The dask array of :meth:`GramStore.as_dask`: one :func:`read_tile` task per dask chunk."""
    import dask.array as da

    t, (n1, n2) = store.tile_size, store.shape
    n_rows, n_cols = store.tile_grid
    chunks = (
        tuple(b - a for a, b in (tile_bounds(i, t, n1) for i in range(n_rows))),
        tuple(b - a for a, b in (tile_bounds(j, t, n2) for j in range(n_cols))),
    )
    name = f"cntk-gram-{uuid.uuid4().hex}"
    path = str(store.path.absolute())
    graph = {}
    for i in range(n_rows):
        for j in range(n_cols):
            mirrored = store.symmetric and i > j
            a, b = (j, i) if mirrored else (i, j)
            graph[(name, i, j)] = (read_tile, path, a, b, allow_missing, mirrored)
    return da.Array(graph, name, chunks, dtype=np.float64)
