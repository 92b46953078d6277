"""Myrtle networks on the CPU: the staged fused engine against the per-layer NumPy path, same run.

For Myrtle-5 and Myrtle-7 (``Architecture(depth, "gap", pools=MYRTLE_POOLS[depth])``: 3x3 convs in
stages of 2,1,1 / 2,2,2 with 2x2 average pooling, 32 -> 16 -> 8, then GAP) on ``n`` random
32x32x3 images, it times the whole symmetric Gram as a user gets it (the Gram driver
``cntk_core.gram._fill``: tiles, per-image ``prepare``, pairs, mirroring) with

* staged: :class:`cntk_core.cpu_stages.StagedEngine` (Numba, all cores), after a warm-up call that
  compiles it;
* per-layer: :class:`cntk_core.engines.PerLayerEngine` (NumPy, full ``(B, P, Q, P, Q)`` tensors),
* nt: neural-tangents' kernel of the same network (its Myrtle notebook's definition, float64,
  ``kernel_fn(x, None)``: the whole matrix) when ``--nt-python`` names a Python with
  neural-tangents (``_nt_myrtle.py`` runs there; compilation excluded, best of ``--rounds``); its
  Gram must equal ours times one constant (the two conventions of conv and ReLU scaling differ by
  constant factors), checked to 1e-10 before its time is shown,

checks that the two Grams agree (relative error, float64), and prints seconds and the ratio, one
JSON object per configuration after the table (``{"net", "kind", "n", "dtype", "seconds": {engine:
s}, "rel_err"}``) so that other engines (neural-tangents) can be added as further keys of
``seconds``. Each engine is timed ``--rounds`` times (best shown).

Usage: python benchmarks/bench_myrtle.py [--n 8] [--depths 5,7] [--kind nngp] [--dtype float64]
                                         [--rounds 1] [--skip-per-layer]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from cntk_core import Architecture
from cntk_core.architecture import MYRTLE_POOLS
from cntk_core.cpu_stages import StagedEngine
from cntk_core.engines import PerLayerEngine
from cntk_core.gram import _fill


def images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, size, size, 3))


def symmetric_gram(engine, x: np.ndarray) -> tuple[np.ndarray, float]:
    """The symmetric Gram of ``x`` through the driver, and its wall-clock seconds."""
    out = np.empty((len(x), len(x)))
    t0 = time.perf_counter()
    _fill(engine, x, x, True, [out], False, None, None)
    return out, time.perf_counter() - t0


def nt_gram(nt_python: str, x: np.ndarray, depth: int, kind: str, rounds: int) -> tuple[np.ndarray, float]:
    """neural-tangents' Gram of ``x`` and its best seconds, from ``_nt_myrtle.py`` in ``nt_python``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "x.npz")
        np.savez(path, x=x)
        script = str(Path(__file__).with_name("_nt_myrtle.py"))
        done = subprocess.run(
            [nt_python, script, path, str(depth), kind, str(rounds)], capture_output=True, text=True, check=True
        )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return np.array(out["kernel"]), float(out["seconds"])


def run(depth: int, kind: str, n: int, dtype: str, rounds: int, per_layer: bool, nt_python=None) -> dict:
    spec = Architecture(depth, "gap", pools=MYRTLE_POOLS[depth])
    x = images(n)
    engines = {"staged": StagedEngine(spec, x.shape[1:], kind, np.dtype(dtype))}
    if per_layer:
        engines["per-layer"] = PerLayerEngine(spec.network(), x.shape[1:], kind, np.dtype(dtype))
    symmetric_gram(engines["staged"], x[:2])  # compile (or load the cache) outside the timing
    grams, seconds = {}, {}
    for name, engine in engines.items():
        for _ in range(rounds):
            grams[name], s = symmetric_gram(engine, x)
            seconds[name] = min(seconds.get(name, np.inf), s)
    rel = None
    if per_layer:
        ref = grams["per-layer"]
        rel = float(np.max(np.abs(grams["staged"] - ref)) / np.max(np.abs(ref)))
    result = {"net": f"Myrtle-{depth}", "kind": kind, "n": n, "dtype": dtype, "seconds": seconds, "rel_err": rel}
    if nt_python:
        k_nt, seconds["nt"] = nt_gram(nt_python, x, depth, kind, rounds)
        ratio = k_nt / grams["staged"]
        factor = float(np.median(ratio))
        result["nt_factor"], result["nt_dev"] = factor, float(np.max(np.abs(ratio / factor - 1)))
        if result["nt_dev"] > (1e-10 if dtype == "float64" else 1e-4):
            raise SystemExit(f"neural-tangents differs from cntk_core by more than a constant: {result['nt_dev']:.2e}")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=8, help="images (symmetric Gram of n x n)")
    ap.add_argument("--depths", default="5,7", help="Myrtle depths, of " + ",".join(map(str, MYRTLE_POOLS)))
    ap.add_argument("--kind", default="nngp", choices=["nngp", "ntk"])
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--skip-per-layer", action="store_true", help="time the staged engine alone")
    ap.add_argument("--nt-python", default=os.environ.get("CNTK_NT_PYTHON"), help="python with neural-tangents")
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()}, NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS', 'default')}")
    results = [
        run(int(d), args.kind, args.n, args.dtype, args.rounds, not args.skip_per_layer, args.nt_python)
        for d in args.depths.split(",")
    ]
    for r in results:
        if "nt" in r["seconds"]:
            s = r["seconds"]
            print(
                f"{r['net']} {r['kind']}: neural-tangents {s['nt']:.2f} s, staged {s['staged']:.3f} s: "
                f"{s['nt'] / s['staged']:.1f}x (nt = {r['nt_factor']:.6g} x ours, max deviation {r['nt_dev']:.1e})"
            )
    print(f"{'net':<10} {'kind':<5} {'n':>4} {'staged s':>9} {'per-layer s':>12} {'ratio':>7} {'rel err':>9}")
    for r in results:
        s = r["seconds"]
        slow = s.get("per-layer")
        ratio = f"{slow / s['staged']:7.1f}" if slow else f"{'-':>7}"
        rel = f"{r['rel_err']:9.1e}" if r["rel_err"] is not None else f"{'-':>9}"
        slow_s = f"{slow:12.2f}" if slow else f"{'-':>12}"
        print(f"{r['net']:<10} {r['kind']:<5} {r['n']:>4} {s['staged']:9.3f} {slow_s} {ratio} {rel}")
    for r in results:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
