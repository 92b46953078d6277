"""Time per full-batch GD step and per empirical-NTK entry of finite CNNs, against width.

Usage: ``python benchmarks/bench_finite.py [--widths 16 64 256 1024] [--depth 3] [--size 8] [--n 16]
[--threads 1]``. Prints a table (wall-clock, best of ``--repeat``). On a shared machine the
numbers are noisy; ``--threads`` caps BLAS threads (``0``: library default).
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np

from cntk_core.finite import finite_cnn, learning_rate, train_gd


def best_time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[16, 64, 256, 1024])
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--size", type=int, default=8, help="images are size x size x 1")
    ap.add_argument("--n", type=int, default=16, help="number of images (batch and NTK side)")
    ap.add_argument("--readout", default="gap", choices=["gap", "vanilla"])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    ctx = contextlib.nullcontext()
    if args.threads:
        from threadpoolctl import threadpool_limits

        ctx = threadpool_limits(args.threads)
    x = np.random.default_rng(0).standard_normal((args.n, args.size, args.size, 1))
    y = np.sign(x[:, 0, 0, 0])
    print(
        f"depth {args.depth}, {args.readout}, {args.n} images {args.size}x{args.size}x1, float64, "
        f"BLAS threads {args.threads or 'default'}"
    )
    print(f"{'width':>6} {'params':>10} {'GD step ms':>11} {'NTK ms':>9} {'us/NTK entry':>13}")
    with ctx:
        theta = finite_cnn(args.depth, 1, args.readout).exact_kernel(x)
        eta = learning_rate(theta)
        for w in args.widths:
            net = finite_cnn(args.depth, w, args.readout)
            params = net.init(x.shape[1:], seed=0)
            step = best_time(lambda n=net, p=params: train_gd(n, p, x, y, eta=eta, steps=args.steps), args.repeat)
            base = best_time(lambda n=net, p=params: train_gd(n, p, x, y, eta=eta, steps=0), args.repeat)
            per_step = (step - base) / args.steps
            ntk = best_time(lambda n=net, p=params: n.empirical_ntk(p, x), args.repeat)
            entries = args.n * args.n
            print(
                f"{w:>6} {net.n_params(x.shape[1:]):>10} {1e3 * per_step:>11.2f} {1e3 * ntk:>9.2f} "
                f"{1e6 * ntk / entries:>13.1f}"
            )


if __name__ == "__main__":
    main()
