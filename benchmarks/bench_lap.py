"""What the LAP readout costs on the fused CPU engine, against vanilla and GAP in the same run.

LAP with window ``c`` visits only the shift blocks holding a displacement within ``2c`` per axis
(at most ``(4c + 1)^2`` of GAP's ``PQ``; ``c = 0``: block 0 alone, as vanilla), each summed with
per-entry weights. This script times the whole symmetric Gram ``cntk_core.network_kernel(arch, x)``
(Numba backend, NTK, ``fix=False``) of ``n`` random ``size x size x 3`` images for vanilla, GAP and
LAP at each ``c``, rounds alternating between the networks, and prints the number of shift blocks
each visits, the median wall-clock seconds, the median and smallest CPU seconds
(``time.process_time``, all threads: the steadier measure of work on a shared machine) and the
ratios of the smallest CPU times against vanilla and GAP. The first call of each network
(compilation, warm-up) is not timed. Allocates the Grams and the engine's usual buffers.

Usage: python benchmarks/bench_lap.py [--n 16] [--size 32] [--depth 3] [--c 0 1 2 4 8]
       [--dtype float64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cntk_core import Architecture, network_kernel  # noqa: E402
from cntk_core.engines import NumbaEngine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=16, help="images (a symmetric n x n Gram)")
    parser.add_argument("--size", type=int, default=32, help="image height and width")
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--c", type=int, nargs="+", default=[0, 1, 2, 4, 8], help="LAP windows")
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    shape = (args.size, args.size, 3)
    x = np.random.default_rng(0).standard_normal((args.n, *shape))
    nets = {"vanilla": Architecture(args.depth, "vanilla"), "gap": Architecture(args.depth, "gap")}
    nets.update({f"lap c={c}": Architecture(args.depth, "lap", lap_c=c) for c in args.c})
    for arch in nets.values():
        network_kernel(arch, x[:2], dtype=args.dtype, backend="numba", progress=False)  # compile, warm up
    wall: dict[str, list[float]] = {name: [] for name in nets}
    cpu: dict[str, list[float]] = {name: [] for name in nets}
    for _ in range(args.rounds):
        for name, arch in nets.items():
            time.sleep(0.2)  # let the previous call's OpenMP workers stop spinning (CPU time counts them)
            t0, c0 = time.perf_counter(), time.process_time()
            network_kernel(arch, x, dtype=args.dtype, backend="numba", progress=False)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    best = {name: min(t) for name, t in cpu.items()}
    print(
        f"# bench_lap  {time.strftime('%Y-%m-%d %H:%M')}  {args.n} images {args.size}x{args.size}x3, depth "
        f"{args.depth}, {args.dtype}, NTK fix=False, whole symmetric Gram, medians of {args.rounds}"
    )
    head = ("network".ljust(10), "blocks".rjust(7), "wall s".rjust(9), "cpu s".rjust(9), "min cpu s".rjust(10))
    print(*head, "/ vanilla".rjust(10), "/ gap".rjust(7))
    for name, arch in nets.items():
        blocks = len(NumbaEngine(arch, shape, "ntk", np.dtype(args.dtype)).shift_blocks)
        ratio_v, ratio_g = best[name] / best["vanilla"], best[name] / best["gap"]
        row = (name.ljust(10), str(blocks).rjust(7), f"{np.median(wall[name]):9.4f}", f"{np.median(cpu[name]):9.4f}")
        print(*row, f"{best[name]:10.4f}", f"{ratio_v:10.2f}", f"{ratio_g:7.3f}")


if __name__ == "__main__":
    main()
