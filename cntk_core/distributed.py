"""Long Gram jobs over many processes, GPUs or machines: one Dask task per tile, into a resumable store.

>>> from cntk_core.distributed import gram_to_store
>>> store = gram_to_store("gram.zarr", x, depth=11, fix=True, tile_size=256)          # doctest: +SKIP
>>> K = store.load()                                                                     # doctest: +SKIP

The unit of work is one tile (``tile_size`` rows x ``tile_size`` columns; for a symmetric Gram only
tiles on or above the diagonal). Each task runs on a Dask worker: it reads only its rows and
columns of the images from the store, checks them against the sha256 of those rows in the driver's
data, computes them with :func:`cntk_core.kernel_matrix` (the worker's best backend unless
``backend`` is given), writes the tile's chunk (with a crc32c checksum), and only then marks the
tile done. The driver records completion and shows progress.

Re-running the same call on the same store resumes and repairs it: it computes the tiles that are
missing (after a Ctrl-C, a killed driver, or a lost machine), recomputes those whose chunk or done
marker is damaged, and re-writes stored images that no longer match the driver's data; the
:class:`RunReport` counts the repairs. A worker that dies mid-tile has its task rerun by Dask (the
task is idempotent: it skips a tile that is already marked done). Creation is exclusive and two
drivers of the same job at once are harmless (see :mod:`cntk_core.store_create`).

Every check that can run before the computation does, and nothing is created on disk until they
pass: the arguments, the store path (a file? a name too long? writable?), the backend (here, or on
the workers of a given scheduler), the scheduler (connected first), free disk space, and whether
an existing store belongs to this job.

The store must live on a file system that the driver and every worker can see (local disk for a
one-machine cluster, a shared file system such as NFS/Lustre for several machines).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ._cluster import check_backend, check_progress, check_scheduler, client_for, is_remote, label_of, make_progress
from .architecture import Architecture
from .store import FORMAT, IDENTITY_KEYS, CorruptStoreError, GramStore, fingerprint, store_path, tile_bounds
from .store_create import metadata_blocks, open_or_create
from .store_verify import marker_count, read_block
from .validation import ParameterError, as_images, check_dtype, check_flag, check_int, check_kind, check_pair

#: tile size of a new store when none is given (512 KiB per float64 tile)
DEFAULT_TILE_SIZE = 256
#: the argument checks under their earlier names (tests and callers import them from here)
_check_progress, _check_scheduler = check_progress, check_scheduler

__all__ = ["RunReport", "gram_to_store"]

if TYPE_CHECKING:
    from distributed import Client


@dataclass(frozen=True)
class RunReport:
    """What one :func:`gram_to_store` call did. Times in seconds."""

    tiles_total: int  #: tiles the Gram needs
    tiles_already_done: int  #: sound tiles found on disk when the call started
    tiles_computed: int  #: tiles this call computed (a tile recomputed after a worker death counts once)
    tiles_skipped: int  #: tasks that found their tile already done (finished meanwhile by an earlier run's task)
    seconds: float  #: wall time of the call, cluster start included
    scheduler: str  #: "synchronous", "LocalCluster", "LocalCUDACluster" or the scheduler address
    tiles_repaired: int = 0  #: of tiles_computed: tiles marked done whose chunk or done marker was damaged or lost
    inputs_repaired: int = 0  #: blocks of stored images re-written from the driver's data (damaged or lost)
    arrays_repaired: tuple[str, ...] = ()  #: arrays re-created, or whose damaged metadata was rewritten


def gram_to_store(
    store: str | os.PathLike | GramStore,
    x1: Any,
    x2: Any | None = None,
    *,
    depth: int,
    readout: str = "gap",
    fix: bool = False,
    fix_first: bool | None = None,
    fix_last: bool | None = None,
    lap_c: int | None = None,
    padding: str = "zero",
    pools: tuple[int, ...] = (),
    flip: bool = False,
    kind: str = "ntk",
    dtype: str | np.dtype | type = "float64",
    tile_size: int | None = None,
    scheduler: str | Client | None = None,
    n_workers: int | None = None,
    backend: str | None = None,
    progress: bool | Callable[[int, int], None] | None = None,
    verify: bool = True,
) -> GramStore:
    """Compute the Gram of :func:`cntk_core.kernel_matrix` tile by tile into the zarr store ``store``.

    Parameters
    ----------
    store : path (``str`` / ``os.PathLike``) of the store directory (created if absent; resumed and
        repaired if it holds tiles of the same job; refused with
        :class:`~cntk_core.store.StoreMismatchError`, naming the owning job, if it holds another
        architecture, data set, precision, engine version or tile size).
    x1, x2 : float image arrays ``[n1, P, Q, C]``, ``[n2, P, Q, C]`` (NHWC, preprocessed pixels);
        ``x2=None``: symmetric Gram of ``x1`` (only tiles with row block <= column block are computed).
    depth, readout, fix, fix_first, fix_last, lap_c, padding, pools, flip, kind, dtype : as in
        :func:`cntk_core.kernel_matrix` (the store records the Architecture they make).
    tile_size : rows and columns per tile (= per task and per zarr chunk); a tile costs
        ``8 * tile_size**2`` bytes on disk (512 KiB at 256). ``None``: the existing store's, else 256.
    scheduler : ``None``: a new ``LocalCluster`` of ``n_workers`` processes on this machine (one
        thread each; Numba's threads split the cores); ``"cuda"``: a ``dask_cuda.LocalCUDACluster``
        (one worker per GPU); ``"synchronous"``: no Dask, tiles run one after the other in this
        process; any other string: the address of a running Dask scheduler (``"tcp://host:8786"``);
        or a ``distributed.Client``. Clusters started here are closed at the end; given ones are not.
        A given scheduler is connected to before the store is created (an address that does not
        answer within 30 s fails with nothing on disk).
    n_workers : worker processes (or GPUs) of a cluster started here; default: all cores (GPUs).
    backend : ``"numba"`` | ``"numpy"`` | ``"cupy"`` | ``None`` (each worker picks its best); checked
        before anything is created, here or on the workers of a given scheduler.
    progress : ``True`` / ``False`` for a tqdm bar of tiles with an ETA (a widget in a notebook);
        ``None``: a bar when more than 4 tiles are missing; or a callable ``f(n_done, n_total)``
        called after each finished tile.
    verify : read every finished tile of an existing store before computing and recompute those
        whose chunk is damaged or lost (a full read of the store, one row of tiles at a time);
        ``False`` trusts the done markers (damage is still caught by ``load()``).

    Returns
    -------
    :class:`~cntk_core.store.GramStore`, complete; ``.load()`` gives the float64 ``[n1, n2]`` array
    and ``.last_run`` a :class:`RunReport` (with the number of tiles and image blocks it repaired).

    Raises
    ------
    StoreWriteError / StoreSpaceError (``OSError``) before any tile is computed if the store cannot
    be written or the disk lacks space for the rest of the Gram; ``RuntimeError`` if the backend is
    unusable or a tile fails; :class:`~cntk_core.store.CorruptStoreError` if stored images change
    under a running job.
    """
    t_start = time.perf_counter()
    path = store_path(store)
    if tile_size is None:
        tile_size = _existing_tile_size(path) or DEFAULT_TILE_SIZE
    arch_options = {
        "depth": depth, "readout": readout, "fix": fix, "fix_first": fix_first, "fix_last": fix_last,
        "lap_c": lap_c, "padding": padding, "pools": pools, "flip": flip,
    }  # fmt: skip
    params, x1, x2, n_workers = _validate(x1, x2, arch_options, kind, dtype, tile_size, backend, n_workers, scheduler)
    check_progress(progress)
    verify = check_flag(verify, "verify")
    meta = _metadata(params, x1, x2)
    identity = json.dumps([{k: meta[k] for k in IDENTITY_KEYS}, str(path.absolute())], sort_keys=True)
    params["token"] = hashlib.sha256(identity.encode()).hexdigest()[:16]  # Dask keys unique to this job
    params["path"] = str(path.absolute())
    blocks = meta["blocks"]
    label = "synchronous" if scheduler == "synchronous" else label_of(scheduler)

    with contextlib.ExitStack() as stack:
        client = None

        def connect():
            nonlocal client, label
            client, label = stack.enter_context(client_for(scheduler, n_workers))
            if is_remote(scheduler):  # a cluster started here runs on this machine: checked below
                check_backend(client, backend, label)

        if not is_remote(scheduler):
            check_backend(None, backend, label)
        elif not (path / "zarr.json").is_file():  # a new store: reachable and usable before it is created
            connect()
        gram_store, plan = open_or_create(path, meta, x1, x2, verify=verify)
        tiles_total = len(gram_store.tiles())
        repair, force = set(plan.repair), set(plan.force)
        col_blocks = blocks["x1" if x2 is None else "x2"]
        tasks = [(i, j, (blocks["x1"][i], col_blocks[j]), (i, j) in force) for i, j in plan.todo]
        bar = make_progress(progress, len(tasks), tiles_total - len(tasks))
        counts = {"computed": 0, "skipped": 0, "repaired": 0}
        try:
            if tasks and scheduler == "synchronous":
                _tally((_compute_tile(params, *task) for task in tasks), params, bar, repair, counts)
            elif tasks:
                if client is None:
                    connect()
                _run_on_client(client, params, tasks, bar, repair, counts)
        except KeyboardInterrupt as exc:
            left = len(gram_store.missing_tiles())
            exc.add_note(f"{tiles_total - left} of {tiles_total} tiles are on disk in {str(path)!r}; re-run to resume")
            raise
        finally:
            bar(None)
    gram_store.last_run = RunReport(
        tiles_total,
        plan.already_done,
        counts["computed"],
        counts["skipped"],
        time.perf_counter() - t_start,
        label,
        counts["repaired"],
        plan.inputs_repaired,
        tuple(plan.arrays_repaired),
    )
    return gram_store


# -- the task -------------------------------------------------------------------------------------
def _compute_tile(params: dict, i: int, j: int, digests: tuple[str, str], force: bool = False) -> dict:
    """Compute tile ``(i, j)`` and write it to the store, then its marker. Runs on a worker.

    ``digests``: the sha256 (:func:`~cntk_core.store_verify.block_digest`) of the driver's row block
    ``i`` and column block ``j``; the images read from the store must match them, else nothing is
    computed. Idempotent: a tile already marked done is skipped (a task rerun after its worker died
    between writing the marker and reporting back costs nothing), unless ``force`` (its chunk was
    found damaged or lost, or this job created the store: a marker there cannot be its own).
    Returns ``{"tile": (i, j), "computed": bool, "seconds": float}``, plus ``"error"`` when the
    kernel left the float range or ``"corrupt"`` when the stored images do not match (deterministic
    failures: Dask's retries would repeat them).
    """
    import zarr

    t0 = time.perf_counter()
    group = zarr.open_group(store=params["path"], mode="r+")
    done = group["done"]
    count = marker_count(done, i, j) or 0  # an unreadable marker: not done
    if count > 0 and not force:
        return {"tile": (i, j), "computed": False, "seconds": 0.0}
    t, (n1, n2) = params["tile_size"], params["shape"]
    r0, r1 = tile_bounds(i, t, n1)
    c0, c1 = tile_bounds(j, t, n2)
    col_name = "x1" if params["symmetric"] else "x2"
    xa, bad = read_block(group, "x1", i, t, digests[0], n1)
    where = f"x1 rows {bad}"
    xb = None
    if bad is None and not (params["symmetric"] and i == j):
        xb, bad = read_block(group, col_name, j, t, digests[1], n2)
        where = f"{col_name} rows {bad}"
    if bad is not None:
        return {"tile": (i, j), "computed": False, "seconds": 0.0, "corrupt": f"the stored images {where}"}
    try:
        values = _tile_kernel(params, xa, xb)
    except FloatingPointError as exc:  # deterministic: reported, not retried (see _tally)
        return {"tile": (i, j), "computed": False, "seconds": 0.0, "error": str(exc)}
    group["gram"][r0:r1, c0:c1] = values
    done[i, j] = min(count + 1, np.iinfo(np.uint16).max)  # written after the tile: the tile is complete
    return {"tile": (i, j), "computed": True, "seconds": time.perf_counter() - t0}


def _tile_kernel(params: dict, xa, xb) -> np.ndarray:
    from .gram import network_kernel

    return network_kernel(
        Architecture.from_dict(params["architecture"]),
        xa,
        xb,
        kind=params["kind"],
        dtype=params["dtype"],
        backend=params["backend"],
        progress=False,
        block_size=params["tile_size"],
    )


def _tally(results, params: dict, bar, repair: set, counts: dict) -> None:
    """Count the results of :func:`_compute_tile` as they come into ``counts`` (computed, skipped,
    repaired), advancing ``bar``. A result with an ``"error"`` is raised on the driver as
    ``FloatingPointError``, one with ``"corrupt"`` as :class:`~cntk_core.store.CorruptStoreError`."""
    for result in results:
        if "error" in result:
            raise FloatingPointError(
                f"Gram tile {result['tile']}: {result['error']}. Finished tiles are kept in {params['path']!r}."
            )
        if "corrupt" in result:
            raise CorruptStoreError(
                f"Gram store {params['path']!r}, tile {result['tile']}: {result['corrupt']}; they were not used. "
                "Re-run the same job with the same images: the driver re-writes damaged stored images from its "
                "own data before computing. Finished tiles are kept.",
                params["path"],
                [result["tile"]],
            )
        counts["computed"] += result["computed"]
        counts["skipped"] += not result["computed"]
        counts["repaired"] += result["computed"] and tuple(result["tile"]) in repair
        bar(1)


# -- the driver -----------------------------------------------------------------------------------
def _run_on_client(client, params: dict, tasks: list, bar, repair: set, counts: dict) -> None:
    """Submit one task per tile, wait for them in completion order, counting into ``counts``."""
    from distributed import as_completed

    token, run = params["token"], uuid.uuid4().hex[:8]
    futures = [  # a forced task gets a key of its own: a scheduler may still hold the tile's old task (and result)
        client.submit(
            _compute_tile,
            params,
            i,
            j,
            digests,
            force,
            key=f"cntk-repair-{token}-{run}-{i}-{j}" if force else f"cntk-tile-{token}-{i}-{j}",
            retries=2,
        )
        for i, j, digests, force in tasks
    ]

    def results():
        for fut in as_completed(futures):
            try:
                yield fut.result()
            except Exception as exc:
                raise RuntimeError(
                    f"Gram tile task {fut.key} failed: {type(exc).__name__}: {exc}. Finished tiles are kept "
                    f"in {params['path']!r}; fix the cause and re-run to resume."
                ) from exc

    try:
        _tally(results(), params, bar, repair, counts)
    finally:
        client.cancel([f for f in futures if not f.done()])


# -- inputs and metadata --------------------------------------------------------------------------
def _validate(x1, x2, arch_options, kind, dtype, tile_size, backend, n_workers, scheduler):
    arch = Architecture.from_options(**arch_options)
    check_kind(kind)
    dt = check_dtype(dtype)
    x1 = as_images(x1, "x1")
    if x2 is not None:
        x2 = as_images(x2, "x2")
        check_pair(x1, x2)
    tile_size = check_int(tile_size, "tile_size", 1, " (rows/columns per tile)")
    if n_workers is not None:
        n_workers = check_int(n_workers, "n_workers", 1, " (or None)")
    _check_scheduler(scheduler)
    if n_workers is not None and scheduler not in (None, "cuda"):
        raise ParameterError("n_workers", "n_workers applies only to a cluster started here (scheduler=None or 'cuda')")
    if backend is not None:
        from .backend import BACKENDS

        if str(backend).lower() not in BACKENDS:
            raise ParameterError("backend", f"unknown backend {backend!r}; choose one of {BACKENDS} or None")
    params = {
        "architecture": arch.to_dict(),
        "kind": kind,
        "dtype": dt.name,
        "backend": backend,
        "tile_size": tile_size,
        "symmetric": x2 is None,
        "shape": [len(x1), len(x1 if x2 is None else x2)],
    }
    return params, x1, x2, n_workers


def _existing_tile_size(path) -> int | None:
    """The tile size of the Gram store at ``path``, or ``None`` if there is no readable store there."""
    if not path.exists():
        return None
    try:
        return GramStore.open(path).tile_size
    except Exception:  # not a store: open_or_create explains
        return None


def _metadata(params: dict, x1: np.ndarray, x2: np.ndarray | None) -> dict:
    from . import __version__

    data = {"x1": fingerprint(x1), "x2": None if x2 is None else fingerprint(x2)}
    arch = Architecture.from_dict(params["architecture"])
    network = {**arch.to_dict(), "kind": params["kind"]}  # the store's record of the network
    meta = {
        "format": FORMAT,
        "network": network,
        "data": data,
        "dtype": params["dtype"],
        "engine_version": __version__,
        "tile_size": params["tile_size"],
        "shape": params["shape"],
        "symmetric": params["symmetric"],
        "description": arch.network().describe(),
        "blocks": metadata_blocks(x1, x2, params["tile_size"]),
    }
    return meta
