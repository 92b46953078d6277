"""Run inside a neural-tangents virtual environment (see bench_cpu.py): time nt's CNTK.

Usage: python _nt_kernel.py INPUT.npz DEPTH READOUT REPEATS
Reads x1, x2 (NHWC float64) from INPUT.npz and prints one JSON line: the kernel (NTK, float64,
jax_enable_x64) and the best wall time of REPEATS calls after a warm-up (compilation excluded).
The architecture is the paper's: (depth - 1) x [Conv(3x3, SAME, W_std=sqrt(2), no bias), Relu],
then Flatten or GlobalAvgPool, then Dense(1). Its kernel equals ours up to a factor P*Q*C
(vanilla) or C (GAP), which the caller checks before comparing times.
"""

import json
import sys
import time

import numpy as np
from jax import config

config.update("jax_enable_x64", True)
import jax  # noqa: E402
from neural_tangents import stax  # noqa: E402


def main():
    path, depth, readout, repeats = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    data = np.load(path)
    x1, x2 = data["x1"], data["x2"]
    layers = []
    for _ in range(depth - 1):
        layers += [stax.Conv(1, (3, 3), (1, 1), "SAME", W_std=np.sqrt(2.0), b_std=None), stax.Relu()]
    layers += [stax.Flatten() if readout == "vanilla" else stax.GlobalAvgPool(), stax.Dense(1, W_std=1.0, b_std=None)]
    _, _, kernel_fn = stax.serial(*layers)
    kernel_fn = jax.jit(kernel_fn, static_argnames="get")
    k = np.asarray(kernel_fn(x1, x2, get="ntk"))  # warm-up (compile)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        k = np.asarray(kernel_fn(x1, x2, get="ntk").block_until_ready())
        best = min(best, time.perf_counter() - t)
    print(json.dumps({"seconds": best, "kernel": k.tolist()}))


if __name__ == "__main__":
    main()
