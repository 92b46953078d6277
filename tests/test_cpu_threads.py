"""cpu_threads.run_items: every item exactly once, on the threads Numba is told to use, errors raised."""

from __future__ import annotations

import threading
import time

import numba
import numpy as np
import pytest
from numba import njit

from cntk_core.cpu_threads import RUNS_PER_THREAD, run_items


@njit(nogil=True)
def _squares(lo, hi, out):
    for i in range(lo, hi):
        out[i] += i * i


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n_items", [0, 1, 3, 7, 100])
def test_every_item_once_in_contiguous_runs(threads, n_items):
    runs, names = [], set()

    def record(lo, hi, tag):
        assert tag == "x"
        runs.append((lo, hi))
        names.add(threading.current_thread().name)

    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        run_items(record, n_items, "x")
    finally:
        numba.set_num_threads(before)
    covered = sorted(i for lo, hi in runs for i in range(lo, hi))
    assert covered == list(range(n_items)) and all(lo < hi for lo, hi in runs)
    assert len(runs) == (0 if n_items == 0 else 1 if threads == 1 else min(n_items, threads * RUNS_PER_THREAD))
    if threads == 1:
        assert names <= {threading.current_thread().name}  # no pool for one thread


def test_compiled_nogil_runs_write_their_own_items():
    out = np.zeros(1000, np.int64)
    run_items(_squares, len(out), out)
    np.testing.assert_array_equal(out, np.arange(1000) ** 2)  # each item once: += would show a repeat


def test_an_error_in_a_run_is_raised_and_stops_the_rest():
    done = []

    def fail_at_zero(lo, hi):
        if lo == 0:
            raise ZeroDivisionError("run 0")
        time.sleep(0.05)  # the failing run has long set the stop when this one ends
        done.append(lo)

    before = numba.get_num_threads()
    numba.set_num_threads(2)
    try:
        with pytest.raises(ZeroDivisionError, match="run 0"):
            run_items(fail_at_zero, 80)
    finally:
        numba.set_num_threads(before)
    assert len(done) <= 2  # of 7 other runs: those not yet taken were skipped
