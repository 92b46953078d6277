"""Symmetric GAP Grams with and without the self-pair shortcut, in one process.

A symmetric Gram's self pairs (x, x) need only shift blocks 0 .. PQ/2 (``cpu_planes.self_pair_shift_blocks``):
n of its n(n+1)/2 pairs cost half, so the whole Gram should take ``1 - 1/(n+1)`` of the time.
This script times ``cntk_core.kernel_matrix(x)`` (Numba backend, float64, GAP, ``fix=False``) on
random images with the shortcut and with it switched off (the engine's ``self_blocks`` set to None,
i.e. every pair summed over all PQ shift blocks), alternating, and prints the medians, the measured
speed-up and the expected one. Allocates the Gram and the engine's usual buffers.

Usage: python benchmarks/bench_self_pairs.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cntk_core  # noqa: E402
from cntk_core import engines  # noqa: E402

CONFIGS = [(16, 3, 8), (16, 3, 34), (32, 3, 8), (16, 11, 16)]  # (size, depth, n images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    init = engines.NumbaEngine.__init__
    use_shortcut = {"on": True}

    def patched_init(self, *a, **k):
        init(self, *a, **k)
        if not hasattr(self, "self_blocks"):
            raise SystemExit("cntk_core.engines.NumbaEngine has no self_blocks: this script needs updating")
        if not use_shortcut["on"]:
            self.self_blocks = None

    engines.NumbaEngine.__init__ = patched_init
    print(f"# bench_self_pairs  {time.strftime('%Y-%m-%d %H:%M')}  float64 GAP fix=False, medians of {args.rounds}")
    header = ("config".ljust(18), "n".rjust(4), "half s".rjust(9), "full s".rjust(9), "speed-up".rjust(9))
    print(" ".join(header), "expected".rjust(9), "max rel diff".rjust(13))
    for size, depth, n in CONFIGS:
        x = np.random.default_rng(0).standard_normal((n, size, size, 3))
        cntk_core.kernel_matrix(x[:2], depth=depth, backend="numba", progress=False)  # compile
        times: dict[bool, list[float]] = {True: [], False: []}
        grams = {}
        for _ in range(args.rounds):
            for on in (True, False):
                use_shortcut["on"] = on
                t0 = time.perf_counter()
                grams[on] = cntk_core.kernel_matrix(x, depth=depth, backend="numba", progress=False)
                times[on].append(time.perf_counter() - t0)
        half, full = np.median(times[True]), np.median(times[False])
        pairs = n * (n + 1) / 2
        diff = float(np.max(np.abs(grams[True] - grams[False]) / np.abs(grams[False])))
        print(
            f"GAP-{depth} {size}x{size}{'':8s} {n:4d} {half:9.3f} {full:9.3f} {full / half:8.3f}x "
            f"{pairs / (pairs - n / 2):8.3f}x {diff:13.1e}"
        )


if __name__ == "__main__":
    main()
