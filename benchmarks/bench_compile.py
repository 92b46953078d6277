"""Cold compile of the fused CPU engines: what a fresh checkout, a new lab kernel and CI wait for.

Each measurement is a fresh interpreter with an empty Numba cache (``NUMBA_CACHE_DIR`` in a temporary
folder) that computes one tiny kernel with every compiled variant the tests use: float64 and
float32; GAP, vanilla and LAP; NTK and NNGP; several depths in one pass; the staged (Myrtle) engine
with GAP and LAP. It prints the seconds per group (planes = ``cpu_planes``, staged =
``cpu_stages_kernels``) and in total, for the working tree and, with ``--against REV``, for a git
revision checked out in a temporary worktree, alternating ``--rounds`` times in one run, and the
ratio of the medians (> 1: the working tree compiles faster).

    python benchmarks/bench_compile.py --against 549a781 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
t0 = time.perf_counter()
from cntk_core import Architecture, kernel_matrices, kernel_matrix, myrtle, network_kernel
x = np.random.default_rng(0).standard_normal((3, 6, 6, 2))
out, t = {}, time.perf_counter()
for dt in ("float64", "float32"):
    for ro, c in (("gap", None), ("vanilla", None), ("lap", 1)):
        for kind in ("ntk", "nngp"):
            kernel_matrix(x, depth=3, readout=ro, lap_c=c, kind=kind, dtype=dt, backend="numba", progress=False)
    kernel_matrices(x, depths=(2, 3), dtype=dt, backend="numba", progress=False)
    out[dt + " planes"], t = time.perf_counter() - t, time.perf_counter()
    for kind in ("ntk", "nngp"):
        network_kernel(myrtle(5), x, kind=kind, dtype=dt, backend="numba", progress=False)
        lap = Architecture(3, "lap", lap_c=1, pools=(1,))
        network_kernel(lap, x, kind=kind, dtype=dt, backend="numba", progress=False)
    out[dt + " staged"], t = time.perf_counter() - t, time.perf_counter()
out["total"] = time.perf_counter() - t0
print(json.dumps(out))
"""


def measure(tree: Path) -> dict:
    """Seconds per group of one cold run of the code in ``tree`` (a fresh process, empty cache)."""
    with tempfile.TemporaryDirectory() as cache:
        env = {"NUMBA_CACHE_DIR": cache, "PATH": "/usr/bin:/bin"}
        res = subprocess.run([sys.executable, "-c", PROBE, str(tree)], capture_output=True, text=True, env=env,
                             cwd=tree, check=True)  # fmt: skip
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--against", help="a git revision to compare with (checked out in a temporary worktree)")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args(argv)
    trees = {"now": ROOT}
    tmp = tempfile.TemporaryDirectory() if args.against else None
    try:
        if args.against:
            base = Path(tmp.name) / "base"
            subprocess.run(["git", "worktree", "add", "--detach", str(base), args.against], cwd=ROOT, check=True,
                           capture_output=True)  # fmt: skip
            trees["base"] = base
        runs = {name: [] for name in trees}
        for r in range(args.rounds):
            for name, tree in trees.items():
                runs[name].append(measure(tree))
                print(f"round {r + 1} {name}: " + ", ".join(f"{k} {v:.1f} s" for k, v in runs[name][-1].items()),
                      flush=True)  # fmt: skip
        med = {name: statistics.median(x["total"] for x in rs) for name, rs in runs.items()}
        line = f"cold compile, median total: now {med['now']:.1f} s"
        if "base" in med:
            line += f", {args.against} {med['base']:.1f} s, x base {med['base'] / med['now']:.2f}"
        print(line)
    finally:
        if tmp is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(Path(tmp.name) / "base")], cwd=ROOT,
                           capture_output=True)  # fmt: skip
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
