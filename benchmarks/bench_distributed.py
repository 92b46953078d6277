"""Tiled Gram jobs: in-memory kernel_matrix vs the zarr store (in-process) vs 1 and 2 Dask workers.

    .venv/bin/python benchmarks/bench_distributed.py [--n 96] [--size 16] [--depth 3] [--tile 16]

CIFAR-like random images ``[n, size, size, 3]``, CNTK-GAP, the Numba backend. Cluster start-up and
the workers' first (JIT-cache loading) call are timed separately from the job. Every result is
checked bit for bit against the in-memory Gram. A second table times the store's integrity checks
(re-running a complete job with and without reading every tile, ``load()``, ``verify()``). On a
shared 2-core machine the timings are noisy.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    import cntk_core
    from cntk_core.distributed import gram_to_store

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--tile", type=int, default=16)
    ap.add_argument("--backend", default="numba")
    args = ap.parse_args()

    x = np.random.default_rng(0).standard_normal((args.n, args.size, args.size, 3))
    job = dict(depth=args.depth, readout="gap", fix=True, backend=args.backend)
    cntk_core.kernel_matrix(x[:2], **job)  # JIT / cache load, not timed
    ref, t_mem = _timed(lambda: cntk_core.kernel_matrix(x, progress=False, **job))
    rows = [("kernel_matrix, in memory", t_mem, "-", True)]

    with tempfile.TemporaryDirectory() as tmp:
        store, t_sync = _timed(
            lambda: gram_to_store(
                Path(tmp) / "sync.zarr", x, tile_size=args.tile, scheduler="synchronous", progress=False, **job
            )
        )
        rows.append(("gram_to_store, synchronous", t_sync, "-", np.array_equal(store.load(), ref)))
        n_tiles = len(store.tiles())
        checks = _integrity_costs(Path(tmp) / "sync.zarr", x, args, job)

        cores = os.cpu_count() or 1
        for n_workers in (1, 2):
            rows.append(_on_cluster(n_workers, cores, Path(tmp) / f"w{n_workers}.zarr", x, args, job, ref))

    print(
        f"\nCNTK-GAP-{args.depth}, {args.n} images {args.size}x{args.size}x3, {args.backend}, tile {args.tile} "
        f"({n_tiles} tiles), {cores} cores\n"
    )
    print("| run | wall s | vs in-memory | cluster start + warm-up s | bit-identical |\n|---|---|---|---|---|")
    for name, t, extra, ok in rows:
        print(f"| {name} | {t:.2f} | {t / t_mem:.2f}x | {extra} | {ok} |")
    w1, w2 = rows[2][1], rows[3][1]
    print(f"\n2 workers vs 1 worker: {w1 / w2:.2f}x speed-up (job only)")
    print("\nIntegrity checks on the complete store (the store's own reads; no kernel is computed):\n")
    print("| step | wall s |\n|---|---|")
    for name, t in checks:
        print(f"| {name} | {t:.3f} |")


def _on_cluster(n_workers: int, cores: int, path: Path, x, args, job: dict, ref) -> tuple:
    """One table row: a fresh LocalCluster of ``n_workers`` processes, its start-up, warm-up and job times."""
    from distributed import Client, LocalCluster

    from cntk_core.distributed import gram_to_store

    threads = str(max(1, cores // n_workers))
    env = {"NUMBA_NUM_THREADS": threads, "OMP_NUM_THREADS": threads}
    t0 = time.perf_counter()
    with (
        LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0", env=env
        ) as cluster,
        Client(cluster) as client,
    ):
        t1 = time.perf_counter()
        client.run(_warm, args.size, job)
        t2 = time.perf_counter()
        store = gram_to_store(path, x, tile_size=args.tile, scheduler=client, progress=False, **job)
        t3 = time.perf_counter()
        ok = np.array_equal(store.load(), ref)
    return f"{n_workers} worker(s) x {threads} Numba thread(s)", t3 - t2, f"{t1 - t0:.1f} + {t2 - t1:.1f}", ok


def _integrity_costs(path: Path, x, args, job: dict) -> list[tuple[str, float]]:
    """Seconds for re-running a complete job with and without its tile scan, load() and verify()."""
    from cntk_core.distributed import gram_to_store
    from cntk_core.store import GramStore

    run = dict(tile_size=args.tile, scheduler="synchronous", progress=False, **job)
    rerun_verified = _timed(lambda: gram_to_store(path, x, **run))[1]
    rerun_trusted = _timed(lambda: gram_to_store(path, x, verify=False, **run))[1]
    store = GramStore.open(path)
    return [
        ("re-run of the complete job, verify=True (reads every tile)", rerun_verified),
        ("re-run of the complete job, verify=False (markers only)", rerun_trusted),
        ("GramStore.load() (every tile verified)", _timed(store.load)[1]),
        ("GramStore.verify() (tiles, markers, stored images)", _timed(store.verify)[1]),
    ]


def _warm(size: int, job: dict) -> None:
    """First call in a worker: imports, loads the Numba cache."""
    import cntk_core

    cntk_core.kernel_matrix(np.ones((2, size, size, 3)), **job)


if __name__ == "__main__":
    main()
