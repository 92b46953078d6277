"""Micro-benchmarks behind the CPU engine's design notes (``benchmarks/RESULTS.md``): what one
core of this host does per cycle, and how its speed drifts.

* ``units``: core cycles per element of small Numba loops over 256 float64 values in L1 (one
  thread, best of 3): a square root, a division, a degree-12 polynomial (12 multiply-adds), a
  square root beside that polynomial (do the divider and the multiply-add pipes overlap?), six
  loads, three loads and a store, one load and three stores.
* ``rho``: how often the ReLU dual's correlations take asin's |rho| > 1/2 branch (the one that
  needs a square root for asin's argument), per layer, for a pair of random normal 16x16x3
  images (what the benchmarks use) and a pair of standardised 16x16 centre crops of CIFAR-10
  training images 0 and 1 (the exact subset, ``cntk-lab data subset``): the fraction of entries and of 8-entry
  vectors of consecutive positions with at least one such lane. A vector branch that skips the
  square root where no lane needs it would flatter the random images (1-6 % of vectors need it
  in layers 1-2) against real ones (43-75 %).
* ``drift``: one thread running the engine's ``pair_sums`` (16x16 GAP, depth 2, 32 pairs) for
  ``--seconds``, printing every few calls' cycles per covariance entry: this host switches between
  two speed levels about 15 % apart within seconds.

The clock is measured by a chain of dependent additions (3 cycles each).

Usage: python benchmarks/experiments/microbench.py [units|rho|drift] [--seconds 15]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_F = {"fastmath": {"contract"}, "error_model": "numpy"}


@njit(**_F)
def _sqrt(x, y, reps):
    for _ in range(reps):
        for i in range(np.uint64(x.shape[0])):
            y[i] = np.sqrt(x[i])


@njit(**_F)
def _div(x, y, reps):
    for _ in range(reps):
        for i in range(np.uint64(x.shape[0])):
            y[i] = 1.5 / x[i]


@njit(**_F)
def _poly12(z):
    p = ((((z * 0.1 + 0.2) * z + 0.3) * z + 0.4) * z + 0.5) * z + 0.6
    return ((((((p * z + 0.7) * z + 0.8) * z + 0.9) * z + 1.0) * z + 1.1) * z + 1.2) * z + 1.3


@njit(**_F)
def _poly(x, y, reps):
    for _ in range(reps):
        for i in range(np.uint64(x.shape[0])):
            y[i] = _poly12(x[i])


@njit(**_F)
def _sqrt_and_poly(x, y, reps):
    for _ in range(reps):
        for i in range(np.uint64(x.shape[0])):
            y[i] = np.sqrt(x[i]) + _poly12(x[i])


@njit(**_F)
def _loads6(a, y, reps):
    for _ in range(reps):
        for i in range(np.uint64(y.shape[0])):
            y[i] = a[0, i] + a[1, i] + a[2, i] + a[3, i] + a[4, i] + a[5, i]


@njit(**_F)
def _loads3_store1(a, y, reps):
    for _ in range(reps):
        for i in range(np.uint64(y.shape[0])):
            y[i] = a[0, i] + a[1, i] + a[2, i]


@njit(**_F)
def _load1_stores3(a, y3, reps):
    for _ in range(reps):
        for i in range(np.uint64(y3.shape[1])):
            v = a[0, i]
            y3[0, i] = v
            y3[1, i] = v + 1.0
            y3[2, i] = v + 2.0


def units(ghz: float) -> None:
    n, reps = 256, 200_000
    x = np.random.default_rng(0).random(n) + 0.5
    a = np.random.default_rng(1).random((6, n))
    y, y3 = np.empty(n), np.empty((3, n))
    cases = [
        ("sqrt", _sqrt, x, y),
        ("division", _div, x, y),
        ("degree-12 polynomial", _poly, x, y),
        ("sqrt + polynomial", _sqrt_and_poly, x, y),
        ("6 loads, 1 store", _loads6, a, y),
        ("3 loads, 1 store", _loads3_store1, a, y),
        ("1 load, 3 stores", _load1_stores3, a, y3),
    ]
    for name, fn, src, dst in cases:
        fn(src, dst, 1)
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            fn(src, dst, reps)
            best = min(best, time.perf_counter() - t)
        per = best * ghz * 1e9 / (n * reps)
        print(f"{name:<24} {per:6.3f} cycles per element  {8 * per:6.2f} per 8 elements")


def rho_branches() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
    from reference import _diag, _relu_step, tr3

    def report(name, x, y, layers=4):
        sig_xy, sig_xx, sig_yy = (tr3(np.einsum("ijc,klc->ijkl", a, b)) for a, b in ((x, y), (x, x), (y, y)))
        p = x.shape[0]
        for h in range(layers):
            vx, vy = _diag(sig_xx), _diag(sig_yy)
            prod = vx[:, :, None, None] * vy[None, None, :, :]
            rho = np.where(prod > 0, sig_xy / np.sqrt(np.where(prod > 0, prod, 1.0)), 0.0)
            big = (np.abs(rho) > 0.5).reshape(p * p, p * p)
            vectors = big.reshape(p * p, -1, 8).any(axis=2).mean()
            print(f"{name:<14} layer {h + 1}: |rho| > 1/2 in {big.mean():.3f} of entries, {vectors:.3f} of vectors")
            sig_xy = tr3(_relu_step(sig_xy, vx, vy)[0])
            sig_xx, sig_yy = tr3(_relu_step(sig_xx, vx, vx)[0]), tr3(_relu_step(sig_yy, vy, vy)[0])

    x, y = np.random.default_rng(0).standard_normal((2, 16, 16, 3))
    report("random normal", x, y)
    from cntk_core.data import load_dataset

    images = load_dataset("cifar10-subset").x_train[:2].astype(np.float64) / 255
    images = (images - images.mean((0, 1, 2))) / images.std((0, 1, 2))
    report("CIFAR-10 crops", images[0, 8:24, 8:24], images[1, 8:24, 8:24])


def drift(ghz: float, seconds: float) -> None:
    import numba

    from cntk_core import cpu_planes as cp

    numba.set_num_threads(1)
    p, n_conv, n = 16, 1, 16
    x = np.random.default_rng(0).standard_normal((n, 3, p * p))
    c = cp.constants(np.float64)
    maps = cp.image_maps(x, p, n_conv, c)
    iu = np.triu_indices(n, 1)
    rows, cols = iu[0][:32].astype(np.int64), iu[1][:32].astype(np.int64)
    tiles, weights, outs = np.arange(p * p, dtype=np.int64), np.ones(p * p), np.array([n_conv], np.int64)
    args = (x, x, maps, maps, p, rows, cols, tiles, weights, outs, False, False, True, c)
    cp.pair_sums(*args)
    times, start = [], time.time()
    while time.time() - start < seconds:
        t = time.perf_counter()
        cp.pair_sums(*args)
        times.append(time.perf_counter() - t)
    cycles = np.array(times) * ghz * 1e9 / (32 * (p * p) ** 2)
    step = max(1, len(cycles) // 40)
    print(f"{len(cycles)} calls, cycles per entry (every {step}th):")
    print(" ".join(f"{c_:.1f}" for c_ in cycles[::step]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["units", "rho", "drift"], nargs="?", default="units")
    ap.add_argument("--seconds", type=float, default=15.0)
    args = ap.parse_args(argv)
    from bench_fused import clock_ghz

    ghz = clock_ghz()
    print(f"# microbench {args.what}  {time.strftime('%Y-%m-%d %H:%M')}  clock {ghz:.2f} GHz")
    if args.what == "units":
        units(ghz)
    elif args.what == "rho":
        rho_branches()
    else:
        drift(ghz, args.seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
