"""A/B of the fused CPU engine against an earlier version of itself, in one process.

This machine's throughput drifts by 10-25 % between minutes, more than most engine changes gain,
so two separate benchmark runs cannot resolve them. This script loads ``cntk_core/cpu_planes.py``
as it is now and as it was at a git revision (``git show REV:cntk_core/cpu_planes.py``, imported
from a temporary directory under its own name), then calls both versions' ``pair_sums`` on the
same symmetric Gram of random images, alternating, and prints per configuration the median time
per (pair, shift block) of each, the median and quartiles of the per-round ratios base / now (> 1:
the current version is faster; a round's two calls are seconds apart, so drift mostly cancels in
its ratio) and the largest relative difference of the results (0 when the change is bit-exact).

GAP readout, ``fix=False`` NTK (the kernel ``bench_cpu.py`` compares with neural-tangents),
float64 or, with ``--dtype float32``, float32 arithmetic. Allocates the two versions' variance
maps and partial sums: a few MB.

Usage: python benchmarks/bench_engine_ab.py [--against HEAD~1] [--sizes 16,32] [--depths 3,11]
                                            [--images 32] [--rounds 9] [--threads 2] [--dtype float32]
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cntk_core import DTYPES

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load_version(rev: str, tmp: Path):
    """The module ``cntk_core/cpu_planes.py`` at git revision ``rev`` (Numba cache in ``tmp``)."""
    try:
        src = subprocess.run(
            ["git", "show", f"{rev}:cntk_core/cpu_planes.py"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
    except subprocess.CalledProcessError as err:
        raise SystemExit(f"cannot read cntk_core/cpu_planes.py at {rev!r}: {err.stderr.strip()}") from None
    stem = "cpu_planes_" + "".join(ch if ch.isalnum() else "_" for ch in rev)
    path = tmp / f"{stem}.py"
    path.write_text(src)
    # a submodule of the package, so that its relative imports (.recurrence, .cpu_threads) resolve
    name = f"cntk_core.{stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "cntk_core"
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def run_pairs(cp, x, p, maps, rows, cols, layers, c):
    """One ``pair_sums`` call of version ``cp`` (GAP, NTK, fix=False): its (n_pairs, 1) sums."""
    # versions before the rename of shift tiles to shift blocks call the list all_tiles
    blocks = (cp.shift_blocks if hasattr(cp, "shift_blocks") else cp.all_tiles)(p, p, "gap")
    # versions from before per-block weights (self pairs' half sums) take no weights argument
    fn = getattr(cp.pair_sums, "py_func", cp.pair_sums)  # a compiled function in versions before cpu_threads
    weights = (np.ones(len(blocks)),) if "weights" in inspect.signature(fn).parameters else ()
    return cp.pair_sums(x, x, maps, maps, p, rows, cols, blocks, *weights, layers, False, False, True, c)


def compare(versions, size: int, depth: int, n_images: int, rounds: int, dtype=np.float64, seed: int = 0) -> dict:
    """Time each version's ``pair_sums`` on an ``n_images`` Gram, alternating calls: ``ns``, the median
    ns per (pair, shift block) of each; ``ratio`` and ``quartiles`` of the per-round ratios base / now
    (versions[1] / versions[0]); ``diff``, the largest relative difference of their results."""
    x = np.random.default_rng(seed).standard_normal((n_images, 3, size * size)).astype(dtype)
    rows, cols = (idx.astype(np.int64) for idx in np.triu_indices(n_images))
    layers = np.array([depth - 1], np.int64)
    state, results = [], []
    for cp in versions:
        c = cp.constants(dtype)
        maps = cp.image_maps(x, size, depth - 1, c)
        state.append((maps, c))
        results.append(run_pairs(cp, x, size, maps, rows, cols, layers, c))  # compiles, warms up
    times = [[] for _ in versions]
    for _ in range(rounds):
        for i, (cp, (maps, c)) in enumerate(zip(versions, state, strict=True)):
            t0 = time.perf_counter()
            run_pairs(cp, x, size, maps, rows, cols, layers, c)
            times[i].append(time.perf_counter() - t0)
    calls = len(rows) * size * size  # (pair, shift block) evaluations per call
    ratios = np.array(times[1]) / np.array(times[0])  # per round: drift cancels within a round
    return {
        "ns": [float(np.median(t)) / calls * 1e9 for t in times],
        "ratio": float(np.median(ratios)),
        "quartiles": tuple(float(v) for v in np.percentile(ratios, [25, 75])),
        "diff": float(np.abs(results[0] - results[1]).max() / np.abs(results[1]).max()),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", default="HEAD~1", help="git revision of the baseline (default HEAD~1)")
    ap.add_argument("--sizes", default="16,32", help="image sizes P (= Q), comma-separated")
    ap.add_argument("--depths", default="3,11", help="depths (>= 2), comma-separated")
    ap.add_argument("--images", type=int, default=32, help="images in the Gram (pairs: n(n+1)/2)")
    ap.add_argument("--rounds", type=int, default=9, help="alternating timed calls of each version")
    ap.add_argument("--threads", type=int, default=0, help="Numba threads (0: Numba's default)")
    ap.add_argument("--dtype", choices=DTYPES, default="float64", help="arithmetic dtype")
    args = ap.parse_args(argv)
    sizes = [int(v) for v in args.sizes.split(",")]
    depths = [int(v) for v in args.depths.split(",")]
    if min(depths) < 2 or min(sizes) < 1 or args.images < 1 or args.rounds < 1:
        ap.error("depths must be >= 2 and sizes, --images and --rounds >= 1")

    import numba

    from cntk_core import cpu_planes

    if args.threads:
        numba.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        baseline = load_version(args.against, Path(tmp))
        print(f"# bench_engine_ab  {time.strftime('%Y-%m-%d %H:%M')}  working tree vs {args.against}, {args.dtype}, "
              f"{numba.get_num_threads()} threads, {args.images} images, medians of {args.rounds}")  # fmt: skip
        print(f"{'config':<14}{'now ns':>10}{'base ns':>10}{'x base':>8}{'quartiles':>14}{'max rel diff':>14}")
        for size in sizes:
            for depth in depths:
                out = compare([cpu_planes, baseline], size, depth, args.images, args.rounds, np.dtype(args.dtype))
                now, base = out["ns"]
                q25, q75 = out["quartiles"]
                print(
                    f"GAP-{depth} {size}x{size}".ljust(14)
                    + f"{now:10.1f}{base:10.1f}{out['ratio']:7.3f}x{q25:8.3f}-{q75:.3f}{out['diff']:14.1e}"
                )


if __name__ == "__main__":
    main()
