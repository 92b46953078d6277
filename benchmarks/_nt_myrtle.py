"""Run inside a neural-tangents virtual environment (see bench_myrtle.py): time nt's Myrtle kernel.

Usage: python _nt_myrtle.py INPUT.npz DEPTH KIND REPEATS
Reads x (NHWC float64) from INPUT.npz and prints one JSON line: the symmetric Gram of x (float64,
jax_enable_x64; ``kernel_fn(x, None)``, the whole matrix as a user gets it) and the best wall time
of REPEATS calls after a warm-up (compilation excluded). The network is the one of
neural-tangents' Myrtle notebook (Shankar et al. 2020): stages of [Conv(3x3, SAME, W_std=sqrt(2),
no bias), Relu] x (2,1,1 | 2,2,2 | 3,3,3) with AvgPool(2, 2) after the first two stages, three
AvgPool(2, 2) on the 8x8 map, Flatten, Dense. Its kernel equals cntk_core's ``myrtle(depth)`` up to
one constant factor (the normalisations of conv and ReLU differ by constants), which the caller
checks before comparing times.
"""

import json
import sys
import time

import numpy as np
from jax import config

config.update("jax_enable_x64", True)
import jax  # noqa: E402
from neural_tangents import stax  # noqa: E402

STAGES = {5: (2, 1, 1), 7: (2, 2, 2), 10: (3, 3, 3)}


def main():
    path, depth, kind, repeats = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    x = np.load(path)["x"]
    conv = [stax.Conv(1, (3, 3), (1, 1), "SAME", W_std=np.sqrt(2.0), b_std=None), stax.Relu()]
    pool = [stax.AvgPool((2, 2), strides=(2, 2))]
    a, b, c = STAGES[depth]
    layers = conv * a + pool + conv * b + pool + conv * c + pool * 3 + [stax.Flatten(), stax.Dense(1, 1.0, None)]
    _, _, kernel_fn = stax.serial(*layers)
    kernel_fn = jax.jit(kernel_fn, static_argnames="get")
    k = np.asarray(kernel_fn(x, None, get=kind))  # warm-up (compile)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        k = np.asarray(kernel_fn(x, None, get=kind).block_until_ready())
        best = min(best, time.perf_counter() - t)
    print(json.dumps({"seconds": best, "kernel": k.tolist()}))


if __name__ == "__main__":
    main()
