"""The two float64 CPU paths on the same pairs, in one process: the wavefront path
(:mod:`cntk_core.cpu_fused`, explicit 8-lane vectors, all layers in one loop per pass) against
the per-layer loops of :mod:`cntk_core.cpu_planes` (what float64 used before, and what float32 and
sizes whose P*Q is not a multiple of 8 still use).

Per configuration: ``pair_sums`` of both paths on the same GAP pairs (``fix=False`` NTK, all shift
tiles, the kernel ``bench_cpu.py`` compares with neural-tangents), called alternately; it prints
core cycles per covariance entry (wall time x clock x threads / entries; the clock is measured by a
chain of dependent additions, 3 cycles each) as the minimum and the median over the rounds, the
median and range of the per-round ratios planes / fused (> 1: fused is faster) and the largest
relative difference of the two results. This host's speed flips between two levels about 15 %
apart from one second to the next, so the minima compare the paths at the same level; the ratio
of the medians and the per-round ratios mix the levels. Allocates a few MB.

``--check`` instead compares the two paths' results on random images over sizes 4x6 to 32x32,
1-3 channels (one image all zero), 1-5 layers with several readout depths, both fix flags, NTK and
NNGP, all pairs of a symmetric Gram, and prints the largest relative difference.

Usage: python benchmarks/bench_fused.py [--sizes 16,32] [--depths 3,11] [--rounds 11] [--threads 1]
                                        [--trace] [--check]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent / "experiments"))


def clock_ghz() -> float:
    """Core clock from a chain of dependent float64 additions (3 cycles each on x86-64 cores)."""
    from numba import njit

    @njit(cache=False)
    def chain(n):
        x = 1.0
        for _ in range(n):
            x = x + 1e-9
            x = x + 1e-9
        return x

    chain(10)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        chain(20_000_000)
        best = min(best, time.perf_counter() - t)
    return 2 * 20_000_000 * 3 / best / 1e9


def check(cp, cf) -> int:
    """Largest relative difference of the two paths over many configurations (0: none above 1e-12)."""
    rng = np.random.default_rng(0)
    c = cp.constants(np.float64)
    worst = 0.0
    for p, q, ch, n_conv, outs in [(16, 16, 3, 2, [2]), (8, 8, 1, 1, [1]), (4, 6, 2, 3, [1, 3]), (16, 16, 3, 5, [2, 5]),
                                   (8, 4, 3, 4, [4]), (32, 32, 3, 2, [2])]:  # fmt: skip
        n = 5
        x = rng.standard_normal((n, ch, p * q))
        x[2] = 0.0
        maps = cp.image_maps(x, p, n_conv, c)
        rows, cols = (a.astype(np.int64) for a in np.triu_indices(n))
        tiles, weights, out_layers = np.arange(p * q, dtype=np.int64), np.ones(p * q), np.array(outs, np.int64)
        xs, flat = cf.stored_twice(x), maps.reshape(-1)
        for fix_first in (False, True):
            for fix_last in (False, True):
                for ntk in (True, False):
                    args = (rows, cols, tiles, weights)
                    ref = cp.pair_sums(x, x, maps, maps, p, *args, out_layers, fix_first, fix_last, ntk, c)
                    plan = cf.layer_plan(n_conv, out_layers, fix_first, fix_last, ntk)
                    got = cf.pair_sums(xs, xs, ch * 2 * p * q, flat, flat, p, p * q, n_conv, *args, len(outs), plan, c)
                    err = float(np.max(np.abs(got - ref) / np.maximum(np.abs(ref), 1e-300)))
                    worst = max(worst, err)
                    if err > 1e-12:
                        where = f"{p}x{q}x{ch} L={n_conv} outs={outs} fix={fix_first},{fix_last} ntk={ntk}"
                        print(f"DIFFERS: {where}: {err:.1e}")
    print(f"largest relative difference over all configurations: {worst:.1e}")
    return 0 if worst <= 1e-12 else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="16,32")
    ap.add_argument("--depths", default="3,11")
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--trace", action="store_true", help="also print every round's two figures")
    ap.add_argument("--check", action="store_true", help="compare the results over many configurations")
    args = ap.parse_args(argv)
    import numba
    import wavefront as cf

    from cntk_core import cpu_planes as cp

    numba.set_num_threads(args.threads)
    if args.check:
        return check(cp, cf)
    ghz = clock_ghz()
    c = cp.constants(np.float64)
    rng = np.random.default_rng(0)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    print(f"# bench_fused  {stamp}  {args.threads} threads, clock {ghz:.2f} GHz, {args.rounds} rounds")
    head = ("config", 14), ("pairs", 6), ("planes min", 11), ("fused min", 10), ("x (min)", 9), ("planes med", 11)
    head += ("fused med", 10), ("x rounds", 9), ("range", 14), ("max rel diff", 13)
    print("".join(f"{name:<{width}}" if name == "config" else f"{name:>{width}}" for name, width in head))
    for size in map(int, args.sizes.split(",")):
        for depth in map(int, args.depths.split(",")):
            n_conv, n_img = depth - 1, 16
            x = rng.standard_normal((n_img, 3, size * size))
            maps = cp.image_maps(x, size, n_conv, c)
            iu = np.triu_indices(n_img, 1)
            n_pairs = max(2, 8192 // (size * size))  # 32 at 16x16, 8 at 32x32
            rows, cols = iu[0][:n_pairs].astype(np.int64), iu[1][:n_pairs].astype(np.int64)
            tiles = np.arange(size * size, dtype=np.int64)
            weights = np.ones(size * size)
            outs = np.array([n_conv], np.int64)
            xs, flat = cf.stored_twice(x), maps.reshape(-1)
            plan = cf.layer_plan(n_conv, outs, False, False, True)

            planes_args = (x, x, maps, maps, size, rows, cols, tiles, weights, outs, False, False, True, c)
            fused_args = (xs, xs, 6 * size * size, flat, flat, size, size * size, n_conv, rows, cols, tiles, weights)
            fused_args += (1, plan, c)

            def planes(args=planes_args):
                return cp.pair_sums(*args)

            def fused(args=fused_args):
                return cf.pair_sums(*args)

            a, b = planes(), fused()
            diff = float(np.max(np.abs(a - b) / np.abs(a)))
            ta, tb = [], []
            for _ in range(args.rounds):
                t = time.perf_counter()
                planes()
                ta.append(time.perf_counter() - t)
                t = time.perf_counter()
                fused()
                tb.append(time.perf_counter() - t)
            cyc = ghz * 1e9 * args.threads / (n_pairs * (size * size) ** 2)
            if args.trace:
                print(
                    "  rounds (planes/fused cycles):",
                    " ".join(f"{a_ * cyc:.1f}/{b_ * cyc:.1f}" for a_, b_ in zip(ta, tb, strict=True)),
                )
            ratio = np.array(ta) / np.array(tb)
            print(
                f"{f'GAP-{depth} {size}x{size}':<14}{n_pairs:>6}{min(ta) * cyc:>11.2f}{min(tb) * cyc:>10.2f}"
                f"{min(ta) / min(tb):>8.3f}x{np.median(ta) * cyc:>11.2f}{np.median(tb) * cyc:>10.2f}"
                f"{np.median(ratio):>8.3f}x{f'{ratio.min():.3f}-{ratio.max():.3f}':>14}{diff:>13.1e}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
