"""CPU engine benchmark: kernel entries per second and peak memory, against baselines in the same run.

For CNTK-V (vanilla) and CNTK-GAP (gap) at depths 3, 11, 21 on 32x32x3 and 16x16x3 random
images it prints, per configuration:

* ours: entries/s of ``cntk_core.kernel_matrix`` (symmetric Gram, best of two calls, default backend, float64,
  ``fix=False``: the kernel neural-tangents computes, so that the two times are of the same
  kernel) and the peak resident memory of a fresh process that computes it (``ru_maxrss``, includes
  the interpreter); f32: the same with ``dtype="float32"`` arithmetic (float64 sums, <= 1e-4);
  fix: the same with ``fix=True`` (the paper's CNTK-GAP setting: less work, since the first layer
  needs no Theta and the readout layer no K; GAP only, shown for information, not compared);
* ref: entries/s of the slow 4-D reference of ``cntk_core.testing`` on one pair (``fix=False``),
  and the ratio;
* nt: neural-tangents' float64 CNTK (``jax_enable_x64``; 6-7x faster than its float32 on this CPU)
  when ``--nt-python`` names a Python with neural-tangents 0.6.5 (jax 0.4.23, numpy 1.26; it needs
  its own virtual environment), after checking that its kernel equals ours up to the known factor
  P*Q*C (vanilla) or C (GAP); and the ratio. nt is timed on an n x n cross kernel with n as large
  as ``--nt-memory-gb`` allows (column "nt n", see :func:`nt_batch`): each call also computes the
  full spatial covariances of its 2n images, so small batches understate nt's rate on a large
  Gram (measured at GAP 32x32 depth 3: 4.13 entries/s at n = 2, 5.63 at n = 8).

With ``--rounds R`` ours and nt are each measured R times, alternating, and the table shows the
medians, the median of the R per-round ratios and their range (this host's throughput drifts by
10-20 % between minutes, which one measurement of each side turns into the ratio).

Usage: python benchmarks/bench_cpu.py [--quick] [--nt-python /path/to/venv/bin/python] [--seconds 3]
                                      [--rounds 1] [--readout gap|vanilla] [--nt-memory-gb 18]
                                      [--only GAP-3-32,V-11-16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

CONFIGS = [(32, "vanilla", d) for d in (3, 11, 21)] + [(32, "gap", d) for d in (3, 11, 21)]
CONFIGS += [(16, "vanilla", d) for d in (3, 11, 21)] + [(16, "gap", d) for d in (3, 11, 21)]


def images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, size, size, 3))


def measure_ours(
    size: int, readout: str, depth: int, seconds: float, dtype: str = "float64", fix: bool = False
) -> dict:
    """Run in a fresh process: calibrate n for ~``seconds``, time the symmetric Gram (best of two
    calls, as nt is timed), report RSS."""
    import cntk_core

    kw = dict(depth=depth, readout=readout, fix=fix, dtype=dtype, progress=False)
    cntk_core.kernel_matrix(images(2, size), **kw)  # JIT / cache load
    n, wall = 4, 0.0
    while wall < seconds / 8 and n < 4000:  # calibrate on growing n: small calls are overhead-bound
        n *= 2
        t = time.perf_counter()
        cntk_core.kernel_matrix(images(n, size, 1), **kw)
        wall = time.perf_counter() - t
    per_entry = wall / (n * (n + 1) / 2)
    n = int(np.clip((2 * seconds / per_entry) ** 0.5, 4, 4000))
    x = images(n, size, 2)
    wall = float("inf")
    for _ in range(2):  # best of two, as nt is timed
        t = time.perf_counter()
        cntk_core.kernel_matrix(x, **kw)
        wall = min(wall, time.perf_counter() - t)
    entries = n * (n + 1) / 2
    return {
        "n": n,
        "entries_per_s": entries / wall,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_ours_in_subprocess(size, readout, depth, seconds, dtype="float64", fix=False) -> dict:
    code = (
        f"import json, sys; sys.path.insert(0, {str(HERE)!r}); import bench_cpu; "
        f"print(json.dumps(bench_cpu.measure_ours({size}, {readout!r}, {depth}, {seconds}, {dtype!r}, {fix!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_reference(size: int, readout: str, depth: int) -> float:
    """Entries per second of the 4-D reference (one pair, fix=False like ours in the table)."""
    from cntk_core.testing import reference_kernel

    x = images(2, size, 3)
    t = time.perf_counter()
    reference_kernel(x[0], x[1], depth, readout, False, False)
    return 1.0 / (time.perf_counter() - t)


#: bytes neural-tangents holds per (pair, kernel entry, conv layer) for GAP: three float64 tensors
#: per layer stay alive in its jitted kernel (measured peak RSS: 16x16 n = 16 depth 11 4.45 GB,
#: depth 21 8.46 GB; 32x32 n = 8 depth 11 15.9 GB; depth 21 asked XLA for 31.7 GB and failed)
NT_BYTES_PER_PAIR_ENTRY_LAYER = 24
NT_BASE_BYTES = 1 << 30  # interpreter, jax and TensorFlow


def nt_batch(size: int, readout: str, depth: int, memory_gb: float) -> int:
    """Images per side of the cross kernel that neural-tangents is timed on.

    nt's rate per entry grows with n, because every call also computes the full (PQ)^2 spatial
    covariances of its 2n images (GAP, depth 3, float64, this CPU: 16x16 77 -> 99 entries/s from
    n = 2 to 16, 32x32 4.13 -> 5.63 from n = 2 to 8); a user computing a large Gram with nt would
    batch as large as memory allows. GAP: the largest n in 2, 4, 8, 16 whose predicted peak memory
    fits ``memory_gb``. Vanilla (nt keeps only the diagonal, little memory): 32.
    """
    if readout == "vanilla":
        return 32
    n = 2
    for m in (4, 8, 16):
        need = NT_BYTES_PER_PAIR_ENTRY_LAYER * m * m * (size * size) ** 2 * (depth - 1) + NT_BASE_BYTES
        if need <= memory_gb * 1e9:
            n = m
    return n


def measure_nt(nt_python: str, size: int, readout: str, depth: int, n: int) -> tuple[float, float]:
    """(entries/s of neural-tangents float64 on an n x n cross kernel, max relative deviation from
    ours after the factor)."""
    import cntk_core

    x1, x2 = images(n, size, 4), images(n, size, 5)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "x.npz")
        np.savez(path, x1=x1, x2=x2)
        out = subprocess.run(
            [nt_python, str(HERE / "_nt_kernel.py"), path, str(depth), readout, "2"],
            capture_output=True,
            text=True,
        )
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    result = json.loads(out.stdout.strip().splitlines()[-1])
    ours = cntk_core.kernel_matrix(x1, x2, depth=depth, readout=readout, fix=False, progress=False)
    factor = size * size * 3 if readout == "vanilla" else 3
    nt = np.asarray(result["kernel"]) * factor
    deviation = float(np.max(np.abs(nt - ours) / np.abs(ours)))
    return n * n / result["seconds"], deviation


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="16x16 and depth 3 only, short timings")
    ap.add_argument("--seconds", type=float, default=3.0, help="target wall time per measurement of ours")
    ap.add_argument("--nt-python", default=os.environ.get("CNTK_NT_PYTHON"), help="python with neural-tangents")
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--rounds", type=int, default=1, help="alternate ours / nt this many times; report medians")
    ap.add_argument("--readout", choices=["gap", "vanilla"], help="only this readout's configurations")
    ap.add_argument("--nt-memory-gb", type=float, default=18.0, help="memory nt's batch may use (this machine: 23 GB)")
    ap.add_argument("--only", help="comma-separated configurations to run, e.g. GAP-3-32,V-11-16")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    configs = [c for c in CONFIGS if c[0] == 16 and c[2] == 3] if args.quick else CONFIGS
    configs = [c for c in configs if args.readout in (None, c[1])]
    if args.only:
        wanted = {w.strip().upper() for w in args.only.split(",")}
        configs = [c for c in configs if f"{'V' if c[1] == 'vanilla' else 'GAP'}-{c[2]}-{c[0]}" in wanted]
        if not configs:
            ap.error(f"--only {args.only!r} matches no configuration (names like GAP-3-32, V-11-16)")
    print(
        f"# bench_cpu  {time.strftime('%Y-%m-%d %H:%M')}  {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, python {platform.python_version()}"
    )
    print(f"{'config':<18}{'n':>5}{'nt n':>5}{'ours ent/s':>12}", end="")
    print(f"{'peak MB':>9}{'f32 ent/s':>11}{'fix ent/s':>11}", end="")
    print(f"{'ref ent/s':>11}{'x ref':>10}{'nt ent/s':>11}{'x nt':>8}{'f32 x nt':>10}", end="")
    print(f"{'x nt range':>14}" if args.rounds > 1 else "")
    for size, readout, depth in configs:
        seconds = 1.0 if args.quick else args.seconds
        rounds, nts = [], []
        nt_n = nt_batch(size, readout, depth, args.nt_memory_gb)
        for _ in range(args.rounds):
            rounds.append(run_ours_in_subprocess(size, readout, depth, seconds))
            if args.nt_python:
                nt, dev = measure_nt(args.nt_python, size, readout, depth, nt_n)
                if dev > 1e-6:
                    raise SystemExit(f"neural-tangents disagrees with cntk_core by {dev:.2e} (after the factor)")
                nts.append(nt)
        rates = [r["entries_per_s"] for r in rounds]
        peak = max(r["peak_mb"] for r in rounds)
        ours = {"n": rounds[0]["n"], "entries_per_s": float(np.median(rates)), "peak_mb": peak}
        f32 = run_ours_in_subprocess(size, readout, depth, seconds, "float32")["entries_per_s"]
        fixed = None  # the paper's CNTK-GAP setting, for information
        if readout == "gap":
            fixed = run_ours_in_subprocess(size, readout, depth, seconds, fix=True)["entries_per_s"]
        ref = None if args.no_reference else measure_reference(size, readout, depth)
        nt = float(np.median(nts)) if nts else None
        ratios = [a / b for a, b in zip(rates, nts, strict=False)]  # none without nt
        name = f"{'V' if readout == 'vanilla' else 'GAP'}-{depth} {size}x{size}"
        fmt = lambda v: f"{v:.3g}" if v is not None else "-"  # noqa: E731
        ratio = lambda a, b: f"{a / b:.3g}x" if b else "-"  # noqa: E731
        print(
            f"{name:<18}{ours['n']:>5}{nt_n if nts else '-':>5}{fmt(ours['entries_per_s']):>12}"
            f"{ours['peak_mb']:>9.0f}{fmt(f32):>11}{fmt(fixed):>11}"
            f"{fmt(ref):>11}{ratio(ours['entries_per_s'], ref):>10}{fmt(nt):>11}"
            f"{f'{np.median(ratios):.3g}x' if ratios else '-':>8}{ratio(f32, nt):>10}"
            + (f"{f'{min(ratios):.3g}-{max(ratios):.3g}x':>14}" if len(ratios) > 1 else ""),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
