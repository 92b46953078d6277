"""Lab latency: from a picker change to the new normalised kernel matrix in the KernelExplorer.

Cases (n = 100 images, the explorer's asynchronous path with its worker thread and row chunks):

- 16x16 GAP, depth 6 (CNTK-GAP recipe: first and last layer fixed), CIFAR-10 images 2x2-averaged;
- 32x32 vanilla, depth 11 (CNTK-V recipe).

For each: the cold latency (a new, uncached setting), the cached latency (going back to a setting
already seen), and a naive baseline: the per-layer NumPy engine (the official code's design, one full
``(PQ)^2`` tensor per layer and pair) timed on a few pairs and extrapolated to the ``n (n + 1) / 2``
pairs of the Gram. Uses the CIFAR-10 subset when present, else random images.

    .venv/bin/python benchmarks/bench_lab.py            # both cases, n = 100
    .venv/bin/python benchmarks/bench_lab.py --n 40     # quicker
    .venv/bin/python benchmarks/bench_lab.py --dtype float32   # the explorer's fast option
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def images(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """``(x [n, size, size, 3] float64 standardised, labels [n], source)``."""
    try:
        from cntk_core.data import load_dataset, preprocess

        ds = load_dataset("cifar10-subset")
        x, y, src = ds.x_train[:n].astype(np.float64), ds.y_train[:n], "CIFAR-10 subset"
        f = 32 // size
        if f > 1:
            x = x.reshape(n, size, f, size, f, 3).mean(axis=(2, 4))
        x = preprocess(x, scale=255.0).x_train
    except FileNotFoundError:
        rng = np.random.default_rng(seed)
        x, y, src = rng.standard_normal((n, size, size, 3)), rng.integers(0, 10, n), "random"
    return x, y, src


def latency(x, y, spec_kw: dict, warm_kw: dict, dtype: str = "float64") -> tuple[float, float]:
    """Seconds from ``architecture.set(**spec_kw)`` to the published result: (cold, cached)."""
    from cntk_widgets.models import ArchitectureModel, KernelExplorerModel

    arch = ArchitectureModel(**warm_kw)
    model = KernelExplorerModel(x, y, architecture=arch, dtype=dtype)
    model.wait(None)  # the starting setting (also warms up the JIT)
    done = {}
    model.on_change(lambda event, m: event == "result" and done.setdefault(m.result.spec, time.perf_counter()))
    t0 = time.perf_counter()
    arch.set(**spec_kw)
    model.wait(None)
    cold = done[arch.spec] - t0
    assert model.error is None, model.error
    done.clear()
    arch.set(**warm_kw)
    model.wait(None)
    t0 = time.perf_counter()
    arch.set(**spec_kw)
    model.wait(None)
    cached = done[arch.spec] - t0
    model.close()
    return cold, cached


def baseline(x, spec_kw: dict, n_pairs: int = 2) -> float:
    """Extrapolated seconds of the per-layer NumPy engine for the whole symmetric Gram of ``x``."""
    from cntk_core import kernel_matrix

    kw = {k: v for k, v in spec_kw.items() if k in ("depth", "readout", "fix_first", "fix_last")}
    a, b = x[:n_pairs], x[n_pairs : 2 * n_pairs]
    kernel_matrix(a[:1], b[:1], backend="numpy", progress=False, **kw)
    t0 = time.perf_counter()
    kernel_matrix(a, b, backend="numpy", progress=False, **kw)  # n_pairs^2 pairs
    per_pair = (time.perf_counter() - t0) / n_pairs**2
    n = len(x)
    return per_pair * n * (n + 1) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--cases", default="gap16,van32")
    parser.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    args = parser.parse_args()
    cases = {
        "gap16": (16, dict(depth=6, readout="gap", fix_first=True, fix_last=True), "16x16 GAP d6"),
        "van32": (32, dict(depth=11, readout="vanilla"), "32x32 vanilla d11"),
    }
    from cntk_core import resolve_backend

    print(f"backend {resolve_backend()}, {args.dtype}, n = {args.n} images (wall-clock, shared machine: noisy)")
    print(f"{'case':20s} {'cold (s)':>9} {'cached (s)':>11} {'per-layer numpy, extrap. (s)':>29} {'speed-up':>9}")
    for key in args.cases.split(","):
        size, spec_kw, label = cases[key]
        x, y, src = images(args.n, size)
        warm_kw = dict(spec_kw, depth=3)
        cold, cached = latency(x, y, spec_kw, warm_kw, args.dtype)
        base = baseline(x, spec_kw)
        goal = "ok" if cold < 1.0 else "over the 1 s goal"
        print(f"{label:20s} {cold:9.3f} {cached:11.4f} {base:29.1f} {base / cold:8.1f}x   [{src}; {goal}]")


if __name__ == "__main__":
    main()
