"""Simultaneous starts on one new store path: two driver processes released at the same instant.

Each trial, two processes (tests/_store_fault_driver.py ``race``) spin on one byte of a shared
memory-mapped file; the test sets it and both call gram_to_store on the same new path. Different
jobs (the issue's s=1, d=3 against s=2, d=4): exactly one creates and finishes; the other is
refused with a StoreMismatchError naming the owner; the store holds the winner's Gram bit for bit.
The same job twice: both finish (the second joins), and the store is the Gram bit for bit. Before,
both different jobs "succeeded" with mixed tiles in some trials, and the loser failed with raw
zarr errors in others. Each test checks that the drivers really overlapped (and that in some
trials both found no store at all).
"""

from __future__ import annotations

import json
import mmap
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("zarr")

import cntk_core  # noqa: E402
from cntk_core.store import GramStore  # noqa: E402

HERE = Path(__file__).parent
DRIVER = HERE / "_store_fault_driver.py"
from _store_fault_driver import images  # noqa: E402

TRIALS = 24


def _wait_for(paths, procs, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        for proc in procs:
            if proc.poll():  # exit 0 is a driver done with its last trial
                raise AssertionError(f"a racing driver failed: {proc.stderr.read().decode()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {paths}")
        time.sleep(0.002)


def race(folder: Path, jobs: dict[str, tuple[float, int]]) -> list[dict]:
    """Run TRIALS simultaneous starts of the two ``{role: (scale, depth)}`` jobs; their outcomes."""
    (folder / "go").write_bytes(bytes(TRIALS))
    procs = [
        subprocess.Popen(
            [sys.executable, str(DRIVER), "race", role, str(folder), str(TRIALS), str(scale), str(depth)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for role, (scale, depth) in jobs.items()
    ]
    outcomes = []
    try:
        with open(folder / "go", "r+b") as f:
            flags = mmap.mmap(f.fileno(), TRIALS)
            for k in range(TRIALS):
                _wait_for([folder / f"ready-{role}-{k}" for role in jobs], procs)
                time.sleep(0.003)  # both drivers spinning on the flag
                flags[k] = 1  # one write releases both
                results = [folder / f"r-{k}-{role}.json" for role in jobs]
                _wait_for(results, procs)
                outcomes.append({role: json.loads(r.read_text()) for role, r in zip(jobs, results, strict=True)})
            flags.close()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    return outcomes


def overlapping(outcomes: list[dict]) -> int:
    """Trials in which each driver was released before the other's call returned."""
    return sum(
        outcome["a"]["woke"] < outcome["b"]["finished"] and outcome["b"]["woke"] < outcome["a"]["finished"]
        for outcome in outcomes
    )


def _reference(scale: float, depth: int) -> np.ndarray:
    return cntk_core.kernel_matrix(images() * scale, depth=depth, backend="numpy")


def test_two_different_jobs_started_at_once_exactly_one_owns_the_store(tmp_path):
    jobs = {"a": (1.0, 3), "b": (2.0, 4)}
    expected = {role: _reference(*job) for role, job in jobs.items()}
    winners = []
    outcomes = race(tmp_path, jobs)
    for k, outcome in enumerate(outcomes):
        ok = [role for role, result in outcome.items() if result.get("ok")]
        assert len(ok) == 1, f"trial {k}: {outcome}"
        winner, loser = ok[0], ({"a", "b"} - set(ok)).pop()
        assert outcome[loser]["error"] == "StoreMismatchError", f"trial {k}: {outcome}"
        message = outcome[loser]["message"]
        assert "belongs to another job" in message and f"depth {jobs[winner][1]} " in message
        assert "created by" in message and "pid" in message
        store = GramStore.open(tmp_path / f"s-{k}.zarr")
        assert store.metadata["network"]["depth"] == jobs[winner][1]
        assert np.array_equal(store.load(), expected[winner]), f"trial {k}: the store mixes the two jobs"
        assert not [p.name for p in store.path.iterdir() if p.name.startswith(".cntk-")]  # no temporary files
        winners.append(winner)
    both_new = sum(not any(result["existed"] for result in outcome.values()) for outcome in outcomes)
    assert overlapping(outcomes) >= TRIALS // 2 and both_new >= 1, (overlapping(outcomes), both_new)


def test_two_drivers_of_the_same_job_started_at_once_both_finish_one_gram(tmp_path):
    jobs = {"a": (1.0, 3), "b": (1.0, 3)}
    expected = _reference(1.0, 3)
    computed = []
    outcomes = race(tmp_path, jobs)
    for k, outcome in enumerate(outcomes):
        assert all(result.get("ok") for result in outcome.values()), f"trial {k}: {outcome}"
        store = GramStore.open(tmp_path / f"s-{k}.zarr")
        assert np.array_equal(store.load(), expected), f"trial {k}"
        assert store.verify() == 6 and (store.compute_counts()[np.triu_indices(3)] >= 1).all()
        computed.append(sum(result["computed"] for result in outcome.values()))
    assert min(computed) >= 6  # every tile computed at least once, some by both drivers
    both_new = sum(not any(result["existed"] for result in outcome.values()) for outcome in outcomes)
    assert overlapping(outcomes) >= TRIALS // 2 and both_new >= 1, (overlapping(outcomes), both_new)
