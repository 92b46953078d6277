"""Work items of the fused CPU engines on threads: nogil compiled loops over item ranges, run by a pool.

The engines' loops over work items (:mod:`cntk_core.cpu_planes`, :mod:`cntk_core.cpu_stages_kernels`)
were Numba ``parallel=True`` functions, and their parfor lowering was about half of the engines'
cold compile, which every fresh machine, every new lab kernel and CI pays (2-core Zen 4 host: the
staged engine's first float64 call 33 s with ``prange``, 15 s without; every CPU engine variant the
tests use, both dtypes, 294 s at 549a781 and 107 s with this module and fewer compiled
specialisations). Each loop body is now an ordinary ``nogil`` compiled function over an item range
``[lo, hi)``, and :func:`run_items` hands the ranges to threads, which run it without the GIL; the
speed is unchanged (``benchmarks/bench_engine_ab.py``: 1.01x, bit-identical results).

Threads: ``numba.get_num_threads()`` of the calling thread (``NUMBA_NUM_THREADS`` and
``numba.set_num_threads`` decide, as they did for ``prange``), the caller being one of them. Items
go out in contiguous runs, about :data:`RUNS_PER_THREAD` per thread, taken from a shared counter,
so runs of unequal cost balance. A result never depends on the threads: every item writes outputs
of its own. One process-wide pool of ``NUMBA_NUM_THREADS - 1`` threads serves every caller, so
concurrent callers (Dask's threads, the lab's jobs) share the cores instead of multiplying threads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numba

#: runs of items per thread (more balance unequal items; each run costs one compiled call)
RUNS_PER_THREAD = 4

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_pid: int | None = None


def _get_pool() -> ThreadPoolExecutor:
    """The process-wide pool (recreated in a forked child, whose copy has no threads)."""
    global _pool, _pool_pid
    with _lock:
        if _pool is None or _pool_pid != os.getpid():
            workers = max(1, int(numba.config.NUMBA_NUM_THREADS) - 1)
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cntk-cpu")
            _pool_pid = os.getpid()
        return _pool


def run_items(fn: Callable, n_items: int, *args) -> None:
    """Call the compiled ``fn(lo, hi, *args)`` over ``range(n_items)`` in contiguous runs on
    ``numba.get_num_threads()`` threads (the caller included); returns when every run is done and
    re-raises the first exception of any run (the runs not yet started are then skipped)."""
    n_items = int(n_items)
    if n_items <= 0:
        return
    threads = max(1, min(numba.get_num_threads(), n_items))
    if threads == 1:
        fn(0, n_items, *args)
        return
    n_runs = min(n_items, threads * RUNS_PER_THREAD)
    bounds = [n_items * k // n_runs for k in range(n_runs + 1)]
    taken = [0]
    guard = threading.Lock()

    def worker() -> None:
        while True:
            with guard:
                k = taken[0]
                taken[0] += 1
            if k >= n_runs:
                return
            try:
                fn(bounds[k], bounds[k + 1], *args)
            except BaseException:
                with guard:
                    taken[0] = n_runs  # the others stop after their current run
                raise

    futures = [_get_pool().submit(worker) for _ in range(threads - 1)]
    try:
        worker()
    finally:
        errors = [f.exception() for f in futures]  # waits for every thread
    for error in errors:
        if error is not None:
            raise error
