"""Driver processes for tests/test_store_faults.py and tests/test_store_race.py.

``python tests/_store_fault_driver.py kill POINT STORE``
    Runs the tiny synchronous job of :func:`job` on STORE and SIGKILLs itself at POINT (no
    ``finally`` block, no cleanup runs, as with ``kill -9`` or a lost machine):

    - ``before_publish``: the store's metadata is written under its temporary name, not yet linked;
    - ``after_publish``: the store is claimed (root ``zarr.json``), no arrays yet;
    - ``after_arrays``: arrays created, no images written;
    - ``mid_inputs``: the first block of images written, not the others;
    - ``mid_tile``: the third tile's chunk written, not its done marker;
    - ``mid_job``: three tiles finished (chunk and marker).

``python tests/_store_fault_driver.py race ROLE FOLDER TRIALS SCALE DEPTH``
    For each trial k: writes ``FOLDER/ready-ROLE-k``, spins until byte k of the file ``FOLDER/go``
    (memory-mapped) is set, then runs
    ``gram_to_store(FOLDER/s-k.zarr, images() * SCALE, depth=DEPTH, ...)`` and writes the outcome
    to ``FOLDER/r-k-ROLE.json``: ``{"ok": true, ...}`` or ``{"error": type name, "message": ...}``,
    with ``"existed"`` (whether the store existed when the driver was released), ``"woke"`` and
    ``"finished"`` (``time.time()`` when it was released and when its call returned).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

TILE, DEPTH, N = 4, 2, 10


def images(n: int = N, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 4, 4, 1))


def job(store, x=None, depth: int = DEPTH, **kw):
    """The tests' tiny job: 10 images 4x4x1, tile 4 (6 tiles of a symmetric Gram), NumPy, synchronous."""
    from cntk_core.distributed import gram_to_store

    x = images() if x is None else x
    opts = dict(tile_size=TILE, scheduler="synchronous", backend="numpy", progress=False)
    return gram_to_store(store, x, depth=depth, **{**opts, **kw})


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_at(point: str, store: str) -> None:
    import zarr

    from cntk_core import store_create

    progress = False
    if point == "before_publish":
        os.link = lambda *args, **kwargs: _die()  # the temporary file exists, the link never happens
    elif point == "after_publish":
        store_create._ensure_arrays = lambda *args, **kwargs: _die()
    elif point == "after_arrays":
        real = store_create._ensure_arrays

        def arrays_then_die(*args, **kwargs):
            real(*args, **kwargs)
            _die()

        store_create._ensure_arrays = arrays_then_die
    elif point in ("mid_inputs", "mid_tile"):
        name, after = ("x1", 1) if point == "mid_inputs" else ("done", 2)
        real_set = zarr.Array.__setitem__
        seen = []

        def set_then_die(self, key, value):
            if self.path == name:
                if len(seen) == after:
                    _die()
                seen.append(key)
            real_set(self, key, value)

        zarr.Array.__setitem__ = set_then_die
    elif point == "mid_job":

        def progress(done, total):
            if done == 3:
                _die()

    else:
        raise SystemExit(f"unknown kill point {point!r}")
    job(store, progress=progress)
    raise SystemExit(f"the job ended without reaching {point!r}")


def _race(role: str, folder: Path, trials: int, scale: float, depth: int) -> None:
    import mmap

    from cntk_core.store import StoreMismatchError

    with open(folder / "go", "r+b") as f:
        flags = mmap.mmap(f.fileno(), trials)

    x = images() * scale
    job(folder / "warm-up" / f"{role}.zarr", x, depth=depth)  # imports and first calls outside the race
    for k in range(trials):
        (folder / f"ready-{role}-{k}").touch()
        while not flags[k]:  # spin on a shared page: both drivers see the test's one write at once
            pass
        path = folder / f"s-{k}.zarr"
        woke = time.time()
        existed = path.exists()  # False for both drivers: a contested creation
        try:
            report = job(path, x, depth=depth).last_run
            result = {"ok": True, "computed": report.tiles_computed, "skipped": report.tiles_skipped}
        except StoreMismatchError as exc:
            result = {"error": "StoreMismatchError", "message": str(exc)}
        except Exception as exc:  # anything else is a failure of the test
            result = {"error": type(exc).__name__, "message": str(exc)}
        result["finished"] = time.time()
        result["existed"], result["woke"] = existed, woke
        tmp = folder / f".r-{k}-{role}.tmp"
        tmp.write_text(json.dumps(result))
        os.replace(tmp, folder / f"r-{k}-{role}.json")  # the test never reads half a file


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "kill":
        _kill_at(args[0], args[1])
    elif mode == "race":
        _race(args[0], Path(args[1]), int(args[2]), float(args[3]), int(args[4]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
