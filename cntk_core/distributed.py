"""Long Gram jobs over many processes, GPUs or machines: one Dask task per tile, into a resumable store.

>>> from cntk_core.distributed import gram_to_store
>>> store = gram_to_store("gram.zarr", x, depth=11, fix=True, tile_size=256)          # doctest: +SKIP
>>> K = store.load()                                                                     # doctest: +SKIP

The unit of work is one tile (``tile_size`` rows x ``tile_size`` columns; for a symmetric Gram only
tiles on or above the diagonal). Each task runs on a Dask worker: it reads only its rows and
columns of the images from the store, computes them with :func:`cntk_core.kernel_matrix` (the
worker's best backend unless ``backend`` is given), writes the tile's chunk, and only then marks
the tile done. The driver records completion and shows progress. Because a finished tile is on
disk with its marker, re-running the same call on the same store computes only the missing tiles
(after a Ctrl-C, a killed driver, or a lost machine); a worker that dies mid-tile has its task
rerun by Dask (the task is idempotent: it skips a tile that is already marked done).

The store must live on a file system that the driver and every worker can see (local disk for a
one-machine cluster, a shared file system such as NFS/Lustre for several machines).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .presets import cntk
from .store import FORMAT, IDENTITY_KEYS, GramStore, create_or_check, fingerprint, store_path, tile_bounds
from .validation import as_images, check_dtype, check_flag, check_int, check_kind, check_pair

#: tile size of a new store when none is given (512 KiB per float64 tile)
DEFAULT_TILE_SIZE = 256

__all__ = ["RunReport", "gram_to_store"]


@dataclass(frozen=True)
class RunReport:
    """What one :func:`gram_to_store` call did. Times in seconds."""

    tiles_total: int  #: tiles the Gram needs
    tiles_already_done: int  #: tiles found on disk when the call started
    tiles_computed: int  #: tiles this call computed (a tile recomputed after a worker death counts once)
    tiles_skipped: int  #: tasks that found their tile already done (finished meanwhile by an earlier run's task)
    seconds: float  #: wall time of the call, cluster start included
    scheduler: str  #: "synchronous", "LocalCluster", "LocalCUDACluster" or the scheduler address


def gram_to_store(
    store,
    x1,
    x2=None,
    *,
    depth: int,
    readout: str = "gap",
    fix: bool = False,
    fix_first: bool | None = None,
    fix_last: bool | None = None,
    kind: str = "ntk",
    dtype="float64",
    tile_size: int | None = None,
    scheduler=None,
    n_workers: int | None = None,
    backend: str | None = None,
    progress: bool | Callable[[int, int], None] | None = None,
) -> GramStore:
    """Compute the Gram of :func:`cntk_core.kernel_matrix` tile by tile into the zarr store ``store``.

    Parameters
    ----------
    store : path (``str`` / ``os.PathLike``) of the store directory (created if absent; resumed if it
        holds tiles of the same job; refused with :class:`~cntk_core.store.StoreMismatchError` if it
        holds another architecture, data set, precision, engine version or tile size).
    x1, x2 : float image arrays ``[n1, P, Q, C]``, ``[n2, P, Q, C]`` (NHWC, preprocessed pixels);
        ``x2=None``: symmetric Gram of ``x1`` (only tiles with row block <= column block are computed).
    depth, readout, fix, fix_first, fix_last, kind, dtype : as in :func:`cntk_core.kernel_matrix`.
    tile_size : rows and columns per tile (= per task and per zarr chunk); a tile costs
        ``8 * tile_size**2`` bytes on disk (512 KiB at 256). ``None``: the existing store's, else 256.
    scheduler : ``None``: a new ``LocalCluster`` of ``n_workers`` processes on this machine (one
        thread each; Numba's threads split the cores); ``"cuda"``: a ``dask_cuda.LocalCUDACluster``
        (one worker per GPU); ``"synchronous"``: no Dask, tiles run one after the other in this
        process; any other string: the address of a running Dask scheduler (``"tcp://host:8786"``);
        or a ``distributed.Client``. Clusters started here are closed at the end; given ones are not.
    n_workers : worker processes (or GPUs) of a cluster started here; default: all cores (GPUs).
    backend : ``"numba"`` | ``"numpy"`` | ``"cupy"`` | ``None`` (each worker picks its best).
    progress : ``True`` / ``False`` for a tqdm bar of tiles with an ETA (a widget in a notebook);
        ``None``: a bar when more than 4 tiles are missing; or a callable ``f(n_done, n_total)``
        called after each finished tile.

    Returns
    -------
    :class:`~cntk_core.store.GramStore`, complete; ``.load()`` gives the float64 ``[n1, n2]`` array
    and ``.last_run`` a :class:`RunReport`.

    Raises
    ------
    StoreWriteError / StoreSpaceError (``OSError``) before any tile is computed if the store cannot
    be written or the disk lacks space for the rest of the Gram; ``RuntimeError`` if a tile fails.
    """
    t_start = time.perf_counter()
    path = store_path(store)
    if tile_size is None:
        tile_size = _existing_tile_size(path) or DEFAULT_TILE_SIZE
    params, x1, x2, n_workers = _validate(
        x1, x2, depth, readout, fix, fix_first, fix_last, kind, dtype, tile_size, backend, n_workers, scheduler
    )
    _check_progress(progress)
    meta = _metadata(params, x1, x2)
    identity = json.dumps([{k: meta[k] for k in IDENTITY_KEYS}, str(path.absolute())], sort_keys=True)
    params["token"] = hashlib.sha256(identity.encode()).hexdigest()[:16]  # Dask keys unique to this job
    gram_store, _, missing = create_or_check(path, meta, x1, None if x2 is None else x2)
    tiles_total = len(gram_store.tiles())
    params["path"] = str(path.absolute())

    bar = _make_progress(progress, len(missing), tiles_total - len(missing))
    computed = skipped = 0
    label = "synchronous"
    try:
        if missing:
            if scheduler == "synchronous":
                computed, skipped = _tally((_compute_tile(params, i, j) for i, j in missing), params, bar)
            else:
                with _client(scheduler, n_workers) as (client, label):
                    computed, skipped = _run_on_client(client, params, missing, bar)
        elif scheduler != "synchronous":
            label = _label(scheduler)
    except KeyboardInterrupt as exc:
        left = len(gram_store.missing_tiles())
        exc.add_note(f"{tiles_total - left} of {tiles_total} tiles are on disk in {str(path)!r}; re-run to resume")
        raise
    finally:
        bar(None)
    gram_store.last_run = RunReport(
        tiles_total, tiles_total - len(missing), computed, skipped, time.perf_counter() - t_start, label
    )
    return gram_store


# -- the task -------------------------------------------------------------------------------------
def _compute_tile(params: dict, i: int, j: int) -> dict:
    """Compute tile ``(i, j)`` and write it to the store, then its marker. Runs on a worker.

    Idempotent: a tile already marked done is skipped (a task rerun after its worker died
    between writing the marker and reporting back costs nothing).
    Returns ``{"tile": (i, j), "computed": bool, "seconds": float}``, plus ``"error"`` when the
    kernel left the float range (a deterministic failure: Dask's retries would repeat it).
    """
    import zarr

    t0 = time.perf_counter()
    group = zarr.open_group(store=params["path"], mode="r+")
    done = group["done"]
    count = int(done[i, j])
    if count > 0:
        return {"tile": (i, j), "computed": False, "seconds": 0.0}
    t, (n1, n2) = params["tile_size"], params["shape"]
    r0, r1 = tile_bounds(i, t, n1)
    c0, c1 = tile_bounds(j, t, n2)
    xa = group["x1"][r0:r1]
    if params["symmetric"] and i == j:
        xb = None
    else:
        xb = group["x1" if params["symmetric"] else "x2"][c0:c1]
    try:
        values = _tile_kernel(params, xa, xb)
    except FloatingPointError as exc:  # deterministic: reported, not retried (see _tally)
        return {"tile": (i, j), "computed": False, "seconds": 0.0, "error": str(exc)}
    group["gram"][r0:r1, c0:c1] = values
    done[i, j] = min(count + 1, np.iinfo(np.uint16).max)  # written after the tile: the tile is complete
    return {"tile": (i, j), "computed": True, "seconds": time.perf_counter() - t0}


def _tile_kernel(params: dict, xa, xb) -> np.ndarray:
    from .gram import kernel_matrix

    return kernel_matrix(
        xa,
        xb,
        depth=params["depth"],
        readout=params["readout"],
        fix_first=params["fix_first"],
        fix_last=params["fix_last"],
        kind=params["kind"],
        dtype=params["dtype"],
        backend=params["backend"],
        progress=False,
        block_size=params["tile_size"],
    )


def _tally(results, params: dict, bar) -> tuple[int, int]:
    """Count the results of :func:`_compute_tile` as they come, advancing ``bar``; returns
    ``(computed, skipped)``. A result with an ``"error"`` is raised on the driver as
    ``FloatingPointError``."""
    computed = skipped = 0
    for result in results:
        if "error" in result:
            raise FloatingPointError(
                f"Gram tile {result['tile']}: {result['error']}. Finished tiles are kept in {params['path']!r}."
            )
        computed += result["computed"]
        skipped += not result["computed"]
        bar(1)
    return computed, skipped


# -- the driver -----------------------------------------------------------------------------------
def _run_on_client(client, params: dict, missing: list, bar) -> tuple[int, int]:
    """Submit one task per missing tile, wait for them in completion order; returns (computed, skipped)."""
    from distributed import as_completed

    token = params["token"]
    futures = [
        client.submit(_compute_tile, params, i, j, key=f"cntk-tile-{token}-{i}-{j}", retries=2) for i, j in missing
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
        return _tally(results(), params, bar)
    finally:
        client.cancel([f for f in futures if not f.done()])


@contextlib.contextmanager
def _client(scheduler, n_workers):
    """Yield ``(client, label)``; closes whatever it started."""
    from distributed import Client

    if isinstance(scheduler, Client):
        yield scheduler, _label(scheduler)
        return
    if scheduler is None:
        from distributed import LocalCluster

        n = n_workers or os.cpu_count() or 1
        threads = str(max(1, (os.cpu_count() or 1) // n))
        env = {"NUMBA_NUM_THREADS": threads, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        with (
            LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=":0",
                env=env,
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client, "LocalCluster"
        return
    if scheduler == "cuda":
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            raise ImportError(
                "scheduler='cuda' needs dask-cuda (pip install dask-cuda, or conda install -c rapidsai dask-cuda); "
                "alternatively start workers yourself and pass the scheduler address"
            ) from None
        with (
            LocalCUDACluster(n_workers=n_workers, host="127.0.0.1", dashboard_address=":0") as cluster,
            Client(cluster) as client,
        ):
            yield client, "LocalCUDACluster"
        return
    try:
        client = Client(scheduler, timeout="30s")
    except OSError as exc:
        raise OSError(f"cannot connect to the Dask scheduler at {scheduler!r}: {exc}") from exc
    with client:
        yield client, scheduler


def _label(scheduler) -> str:
    if scheduler is None:
        return "LocalCluster"
    if scheduler == "cuda":
        return "LocalCUDACluster"
    if isinstance(scheduler, str):
        return scheduler
    return f"Client({getattr(scheduler, 'scheduler', None) and scheduler.scheduler.address})"


def _make_progress(progress, total: int, initial: int):
    """A function ``f(n)``: advance by ``n`` tiles; ``f(None)`` closes the bar."""
    if callable(progress):
        state = {"done": initial}

        def call(n):
            if n is not None:
                state["done"] += n
                progress(state["done"], total + initial)

        return call
    if progress is None:
        progress = total > 4
    if not progress or total == 0:
        return lambda n: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total + initial, initial=initial, unit="tile", desc="Gram tiles", smoothing=0.1)

    def update(n):
        if n is None:
            bar.close()
        else:
            bar.update(n)

    return update


# -- inputs and metadata --------------------------------------------------------------------------
def _validate(x1, x2, depth, readout, fix, fix_first, fix_last, kind, dtype, tile_size, backend, n_workers, scheduler):
    network = cntk(depth, readout, fix, fix_first=fix_first, fix_last=fix_last)  # checks depth / readout
    spec = network.canonical()
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
        raise ValueError("n_workers applies only to a cluster started here (scheduler=None or 'cuda')")
    if backend is not None:
        from .backend import BACKENDS

        if str(backend).lower() not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS} or None")
    params = {
        "depth": int(depth),
        "readout": readout,
        "fix_first": bool(spec.fix_first),
        "fix_last": bool(spec.fix_last),
        "kind": kind,
        "dtype": dt.name,
        "backend": backend,
        "tile_size": tile_size,
        "symmetric": x2 is None,
        "shape": [len(x1), len(x1 if x2 is None else x2)],
    }
    return params, x1, x2, n_workers


#: a Dask scheduler address: [scheme://]host:port (the port optional with a scheme), host a name,
#: an IPv4 address or a bracketed IPv6 address (with an optional %zone); or inproc://anything
_HOST = r"([^\s:/\[\]%]+|\[[0-9A-Fa-f:.]+(%\w+)?\])"
_ADDRESS = rf"[a-z0-9+]+://{_HOST}(:\d+)?/?|{_HOST}:\d+|inproc://\S+"


def _check_progress(progress) -> None:
    """``progress`` must be True, False, None or a callable ``(done, total)``."""
    if callable(progress):
        return
    try:
        check_flag(progress, "progress", allow_none=True)
    except TypeError:
        raise TypeError(f"progress must be True, False, None or a callable (done, total), got {progress!r}") from None


def _check_scheduler(scheduler) -> None:
    """Type of ``scheduler``, the form of an address and, for ``"cuda"``, that dask-cuda is importable
    (before any work: a mistyped name must not leave a half-created store behind)."""
    if isinstance(scheduler, str) and scheduler not in ("synchronous", "cuda"):
        if not re.fullmatch(_ADDRESS, scheduler):
            raise ValueError(
                "scheduler must be 'synchronous', 'cuda' or the address of a running Dask scheduler such as "
                f"'tcp://host:8786', got {scheduler!r}"
            )
    if scheduler is None or isinstance(scheduler, str):
        if scheduler == "cuda" and importlib.util.find_spec("dask_cuda") is None:
            raise ImportError(
                "scheduler='cuda' needs dask-cuda (pip install dask-cuda, or conda install -c rapidsai dask-cuda); "
                "alternatively start dask-cuda-worker processes yourself and pass the scheduler address"
            )
        return
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - distributed is a dependency
        Client = ()
    if not isinstance(scheduler, Client):
        raise TypeError(
            "scheduler must be None (LocalCluster), 'cuda', 'synchronous', a scheduler address string or a "
            f"distributed.Client, got {type(scheduler).__name__}"
        )


def _existing_tile_size(path) -> int | None:
    """The tile size of the Gram store at ``path``, or ``None`` if there is no readable store there."""
    if not path.exists():
        return None
    try:
        return GramStore.open(path).tile_size
    except Exception:  # not a store: create_or_check explains
        return None


def _metadata(params: dict, x1: np.ndarray, x2: np.ndarray | None) -> dict:
    from . import __version__

    data = {"x1": fingerprint(x1), "x2": None if x2 is None else fingerprint(x2)}
    network = {k: params[k] for k in ("depth", "readout", "fix_first", "fix_last", "kind")}
    meta = {
        "format": FORMAT,
        "network": network,
        "data": data,
        "dtype": params["dtype"],
        "engine_version": __version__,
        "tile_size": params["tile_size"],
        "shape": params["shape"],
        "symmetric": params["symmetric"],
        "description": cntk(
            params["depth"], params["readout"], fix_first=params["fix_first"], fix_last=params["fix_last"]
        ).describe(),
    }
    return meta
