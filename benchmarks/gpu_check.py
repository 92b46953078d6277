"""One-shot GPU check of the fused CuPy engine: correctness, speed, FLOP rate, CIFAR-10 extrapolation.

Run (one command, under 5 minutes on an H100; needs CuPy and a CUDA device):

    .venv/bin/python benchmarks/gpu_check.py [--peak-tflops 67] [--threads 256] [--budget 270]

1. Equality checks (a compact version of tests/test_gpu.py), each printed PASS/FAIL: the fused
   engine (float32 and float64) and the per-layer CuPy baseline against the float64 references
   (cntk_core.testing on tiny images, the Numba engine on 32x32 and 40x40), vanilla float32
   self-kernel relative error <= 1e-6, results independent of the launch size, the OOM
   halve-and-retry path, and float64 at 40x40, whose thread blocks need more than 48 KB of shared memory
   (also after a second engine with a smaller such need was built). ``--threads`` applies to every
   fused engine here, the Gram checks included (through ``CNTK_GPU_THREADS``).
   Tolerances (relative to the largest entry): fused float32 2e-6, float64 1e-7. The float32 one is
   ~8x the largest error of the same kernel built for the host (tests/cuda_host.py) on these very
   configurations, 2.6e-7 (GAP-21 32x32), with fused multiply-adds and +-2-ulp noise on asin/acos as
   on the GPU (benchmarks/RESULTS.md, issue 28). The per-layer float32 baseline computes arccos
   without the stable form: 1e-5 (its NumPy twin on the CPU: <= 1.7e-7 here).
2. Timing on random 32x32x3 images, float32: CNTK-GAP depths 3, 11, 21 (fix=True) and CNTK-V depth
   21 (fix=False), NTK. Pairs per second of the fused engine and of the per-layer baseline
   (:class:`cntk_core.engines.PerLayerEngine` with ``xp=cupy``: full (PQ)^2 tensors, one array op per
   layer, the official code's design) measured in the same run; the baseline runs on few pairs.
   Every timed call's values must be finite (a check per configuration); a configuration that
   raises is a failed check, and the run goes on.
3. Achieved FLOP rate of the fused path against the card's FP32 peak. Count per covariance entry of
   one pair (see :func:`cntk_core.gpu.flops_per_entry`): input ``S0`` 2C; per layer h = 1..L a box sum
   of Sigma (8 adds) and, for the NTK and h >= 2, of Theta (8 adds); the ReLU dual 14 (prod, sqrt,
   division, pi - angle, rho * (.), rho * rho, 1 - (.), sqrt, +, norm * (.), * 1/(9 pi), k_dot's
   * 1/(9 pi), and K_dot * Theta + K as 2), where arccos, sqrt and division count one flop each
   (they cost several instructions: the percentage is a conservative "useful flop" figure);
   readout 1. Entries per pair: (PQ)^2 for GAP, PQ for vanilla. So CNTK-GAP-21 at 32x32x3 is
   1024^2 * (6 + 160 + 152 + 280 + 1) = 6.3e8 flops per pair. Peak FP32 (FMA = 2 flops) from a table
   by device name: H100 SXM 67, H100 PCIe 51, H200 67, A100 19.5 TFLOP/s, or --peak-tflops.
4. Extrapolated time for the full CIFAR-10 Gram: 50k-train upper triangle (50000 * 50001 / 2 pairs)
   plus 10k x 50k test-train = 1.75e9 pairs, on this one GPU.

Prints a short table and the verdict ("n/m checks passed") last and writes ``$OUT/gpu_check.json``
when ``OUT`` is set, whatever fails on the way (an exception, Ctrl-C); exits 1 if any check fails
(2 if no GPU is usable).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's cntk_core, installed or not
import cntk_core  # noqa: E402
from cntk_core.backend import gpu_status

PEAK_TFLOPS = [("H100 PCIe", 51.0), ("H100", 67.0), ("H200", 67.0), ("A100", 19.5)]
#: fused engine, and the per-layer CuPy baseline (see the module docstring)
TOL = {"float32": 2e-6, "float64": 1e-7}
TOL_PER_LAYER = {"float32": 1e-5, "float64": 1e-7}
#: (shape, depth, readout, fix, kind) of the checks against cntk_core.testing
TINY = [
    ((8, 8, 3), 3, "gap", True, "ntk"),
    ((9, 13, 3), 4, "gap", False, "nngp"),
    ((9, 13, 2), 21, "vanilla", False, "ntk"),
    ((11, 8, 3), 11, "vanilla", True, "nngp"),
]
CIFAR_PAIRS = 50_000 * 50_001 // 2 + 10_000 * 50_000
TIMED = [("CNTK-GAP-3", 3, "gap", True), ("CNTK-GAP-11", 11, "gap", True), ("CNTK-GAP-21", 21, "gap", True)]
TIMED += [("CNTK-V-21", 21, "vanilla", False)]


def _rel(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b)))


class Checks:
    def __init__(self):
        self.results: list[dict] = []

    def add(self, name: str, ok: bool, detail: str):
        self.results.append({"check": name, "ok": bool(ok), "detail": detail})
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}", flush=True)

    def run(self, name: str, fn):
        t0 = time.perf_counter()
        try:
            ok, detail = fn()
        except Exception as exc:  # a crash is a failed check, not a lost run
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        self.add(name, ok, f"{detail} [{time.perf_counter() - t0:.1f} s]")


def per_layer_matrix(x1, x2, depth, readout, fix, kind, dtype):
    import cupy

    from cntk_core.engines import PerLayerEngine

    eng = PerLayerEngine(cntk_core.cntk(depth, readout, fix), x1.shape[1:], kind, np.dtype(dtype), xp=cupy)
    s1, s2 = eng.prepare(x1), eng.prepare(x2)
    r, c = np.meshgrid(np.arange(len(x1)), np.arange(len(x2)), indexing="ij")
    return eng.pairs(s1, s2, r.ravel(), c.ravel()).reshape(len(x1), len(x2))


def apply_threads(threads) -> None:
    """Every fused engine of this run, those that ``kernel_matrix`` builds included, uses ``threads``."""
    from cntk_core.gpu import THREADS_ENV

    if threads:
        os.environ[THREADS_ENV] = str(int(threads))


def equality_checks(checks: Checks, threads):
    from cntk_core.gpu import FusedGPUEngine
    from cntk_core.testing import reference_matrix

    apply_threads(threads)
    tol, tol_layer = TOL, TOL_PER_LAYER
    rng = np.random.default_rng(0)
    for shape, depth, readout, fix, kind in TINY:
        x1 = rng.standard_normal((3,) + shape)
        x2 = np.concatenate([x1[:1], rng.standard_normal((2,) + shape)])
        ref = reference_matrix(x1, x2, depth, readout, fix, fix, kind)
        tag = f"{readout}-{depth} fix={fix} {kind} {shape}"
        for dtype in ("float32", "float64"):
            kw = dict(depth=depth, readout=readout, fix=fix, kind=kind, dtype=dtype)

            def fused(kw=kw, ref=ref, dtype=dtype, x1=x1, x2=x2):
                e = _rel(cntk_core.kernel_matrix(x1, x2, backend="cupy", **kw), ref)
                return e <= tol[dtype], f"rel err {e:.2e} (tol {tol[dtype]:.0e})"

            def layered(ref=ref, dtype=dtype, x1=x1, x2=x2, depth=depth, readout=readout, fix=fix, kind=kind):
                e = _rel(per_layer_matrix(x1, x2, depth, readout, fix, kind, dtype), ref)
                return e <= tol_layer[dtype], f"rel err {e:.2e} (tol {tol_layer[dtype]:.0e})"

            checks.run(f"fused {dtype} vs reference, {tag}", fused)
            checks.run(f"per-layer cupy {dtype} vs reference, {tag}", layered)

    grams = [(32, 21, "gap", True, ("float32", "float64")), (32, 3, "gap", False, ("float32", "float64"))]
    grams += [(32, 21, "vanilla", False, ("float32", "float64"))]
    grams += [(40, 3, "gap", False, ("float64",)), (40, 11, "vanilla", False, ("float64",))]  # > 48 KB per thread block
    for size, depth, readout, fix, dtypes in grams:
        x = rng.standard_normal((3, size, size, 3))
        ref = cntk_core.kernel_matrix(x, depth=depth, readout=readout, fix=fix, backend="numba")
        for dtype in dtypes:

            def sym(ref=ref, dtype=dtype, depth=depth, readout=readout, fix=fix, x=x):
                got = cntk_core.kernel_matrix(x, depth=depth, readout=readout, fix=fix, dtype=dtype, backend="cupy")
                e = _rel(got, ref)
                ok = e <= tol[dtype] and np.array_equal(got, got.T)
                return ok, f"rel err {e:.2e} (tol {tol[dtype]:.0e}), symmetric, threads {_threads_used(x)}"

            checks.run(f"fused {dtype} symmetric Gram vs numba, {readout}-{depth} {size}x{size}x3", sym)

    def shared_memory_kept():
        spec = cntk_core.cntk(3, "vanilla", False).canonical()
        xs = rng.standard_normal((4, 40, 40, 3))
        big = FusedGPUEngine(spec, xs.shape[1:], "ntk", np.dtype("float64"), threads=threads)
        st = big.prepare(xs)
        r, c = np.triu_indices(4)
        first = big.pairs(st, st, r, c)
        FusedGPUEngine(spec, (39, 39, 3), "ntk", np.dtype("float64"), threads=threads)  # needs less, > 48 KB
        again = big.pairs(st, st, r, c)
        same = np.array_equal(first, again) and bool(np.isfinite(first).all())
        return same, f"{big.smem} B per thread block, bit-identical after a 39x39 engine was built"

    checks.run("float64 40x40 keeps its > 48 KB shared memory", shared_memory_kept)

    def self_kernel():
        xs = rng.standard_normal((8, 32, 32, 3))
        ref = np.diag(cntk_core.kernel_matrix(xs, depth=21, readout="vanilla", backend="numba"))
        got = np.diag(cntk_core.kernel_matrix(xs, depth=21, readout="vanilla", dtype="float32", backend="cupy"))
        e = float(np.max(np.abs(got - ref) / ref))
        return e <= 1e-6, f"max rel err of K(x, x) {e:.2e} (tol 1e-6)"

    checks.run("vanilla-21 float32 self-kernel", self_kernel)

    def engine(**kw):
        spec = cntk_core.cntk(5, "gap", True).canonical()
        return FusedGPUEngine(spec, (16, 16, 3), "ntk", np.dtype("float32"), threads=threads, **kw)

    xs = rng.standard_normal((12, 16, 16, 3))
    rows, cols = np.triu_indices(12)

    def launch_size():
        a, b = engine(max_pairs=7), engine()
        sa, sb = a.prepare(xs), b.prepare(xs)
        same = np.array_equal(a.pairs(sa, sa, rows, cols), b.pairs(sb, sb, rows, cols))
        return same, "bit-identical with 7 and all pairs per launch"

    def oom_retry():
        import cupy

        eng = engine(max_pairs=64)
        st = eng.prepare(xs)
        want = eng.pairs(st, st, rows, cols)
        real, raised = eng._launch, []

        def flaky(*args):
            if not raised:
                raised.append(1)
                raise cupy.cuda.memory.OutOfMemoryError(1 << 40, 0)
            return real(*args)

        eng._launch = flaky
        got = eng.pairs(st, st, rows, cols)
        return bool(raised) and eng.max_pairs == 32 and np.array_equal(got, want), f"batch 64 -> {eng.max_pairs}"

    checks.run("values independent of launch size", launch_size)
    checks.run("OOM halves the pair batch and retries", oom_retry)


def _threads_used(x) -> int:
    """Threads per thread block of the fused engine that ``kernel_matrix`` builds for ``x``."""
    from cntk_core.gpu import _threads, threads_for

    return int(_threads(None) or threads_for(x.shape[1], x.shape[2]))


def _time_pairs(eng, state, n_images, n_pairs, rng) -> tuple[float, int, bool]:
    """``(seconds, pairs, all values finite)`` of one ``pairs`` call on random pairs."""
    rows = rng.integers(0, n_images, n_pairs)
    cols = rng.integers(0, n_images, n_pairs)
    t0 = time.perf_counter()
    values = eng.pairs(state, state, rows, cols)
    return time.perf_counter() - t0, n_pairs, bool(np.isfinite(values).all())


def rate(eng, x, first: int, target_s: float, cap: int, rng) -> tuple[float, bool]:
    """``(pairs per second, every value finite)``: a warm-up, a first timed call of ``first`` pairs,
    then one sized to take ``target_s``."""
    state = eng.prepare(x)
    finite = _time_pairs(eng, state, len(x), min(first, 8), rng)[2]  # warm-up (compile, allocations)
    t, n, ok = _time_pairs(eng, state, len(x), first, rng)
    finite &= ok
    if t < target_s / 2:
        n = int(min(cap, first * target_s / max(t, 1e-6)))
        t, n, ok = _time_pairs(eng, state, len(x), n, rng)
        finite &= ok
    return n / t, finite


def timings(checks: Checks, threads, deadline: float, size: int = 32, rows: list | None = None) -> list[dict]:
    """One row per timed configuration, appended to ``rows`` as it is done; a configuration that
    raises, or whose values are not all finite, is a failed check (the others still run)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((512, size, size, 3)).astype(np.float32)
    rows = [] if rows is None else rows
    for name, depth, readout, fix in TIMED:
        if time.perf_counter() > deadline:
            print(f"SKIP timing {name}: time budget used up", flush=True)
            continue
        try:
            row = _timing_row(name, depth, readout, fix, x, threads, rng)
        except Exception as exc:
            checks.add(f"timing {name}", False, f"{type(exc).__name__}: {exc}")
            continue
        finite = row.pop("finite")
        checks.add(f"timing {name}: values finite", finite, "fused and per-layer, every timed call")
        rows.append(row)
    return rows


def _timing_row(name, depth, readout, fix, x, threads, rng) -> dict:
    import cupy

    from cntk_core.engines import PerLayerEngine
    from cntk_core.gpu import FusedGPUEngine

    net = cntk_core.cntk(depth, readout, fix)
    f32 = np.dtype("float32")
    try:
        eng = FusedGPUEngine(net.canonical(), x.shape[1:], "ntk", f32, threads=threads)
        first = 4096 if readout == "vanilla" else 64
        fused, ok_fused = rate(eng, x, first, 3.0, 2_000_000 if readout == "vanilla" else 200_000, rng)
        k = eng._shift_block_kernel
        kinfo = {"regs": int(k.num_regs), "local_bytes": int(k.local_size_bytes), "smem_dynamic": eng.smem}
        base_eng = PerLayerEngine(net, x.shape[1:], "ntk", f32, xp=cupy)
        base, ok_base = rate(base_eng, x[:64], 8, 1.0, 256, rng)
    finally:
        cupy.get_default_memory_pool().free_all_blocks()
    print(f"timed {name}: fused {fused:,.0f} pairs/s, per-layer {base:,.1f} pairs/s, {kinfo}", flush=True)
    return {
        "config": name,
        "fused_pairs_per_s": fused,
        "baseline_pairs_per_s": base,
        "speedup": fused / base,
        "flops_per_pair": eng.flops_per_pair,
        "tflops": eng.flops_per_pair * fused / 1e12,
        "cifar10_hours": CIFAR_PAIRS / fused / 3600,
        "kernel": kinfo,
        "threads": eng.threads,
        "finite": ok_fused and ok_base,
    }


def peak_for(name: str, override: float | None) -> float | None:
    if override:
        return override
    for key, peak in PEAK_TFLOPS:
        if all(part in name for part in key.split()):
            return peak
    return None


def device_info(override: float | None) -> tuple[str, float | None, str]:
    """``(device name, FP32 peak TFLOP/s or None, cupy version)`` of the current device."""
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    device = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return device, peak_for(device, override), cupy.__version__


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peak-tflops", type=float, default=None, help="FP32 peak of this card (TFLOP/s)")
    ap.add_argument("--threads", type=int, default=None, help="threads per thread block of every fused engine")
    ap.add_argument("--budget", type=float, default=270.0, help="seconds after which timings are skipped")
    ap.add_argument("--skip-checks", action="store_true", help="timings only")
    ap.add_argument("--size", type=int, default=32, help="image side for the timings (default 32: CIFAR-10)")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    report = {"device": None, "peak_tflops": None, "cifar10_pairs": CIFAR_PAIRS, "checks": [], "timings": []}
    checks, rows, code = Checks(), [], 1
    try:
        ok, why = gpu_status()
        if not ok:
            print(f"no usable GPU: {why}")
            report["error"] = f"no usable GPU: {why}"
            code = 2
            return code
        device, peak, version = device_info(args.peak_tflops)
        report.update(device=device, peak_tflops=peak)
        print(f"device: {device}; FP32 peak {peak} TFLOP/s; cupy {version}", flush=True)
        if not args.skip_checks:
            equality_checks(checks, args.threads)
        print(f"checks done after {time.perf_counter() - t_start:.0f} s", flush=True)
        timings(checks, args.threads, t_start + args.budget, args.size, rows)
    except BaseException as exc:  # even Ctrl-C ends with the verdict and the JSON
        checks.add("gpu_check ran to the end", False, f"{type(exc).__name__}: {exc}")
    finally:
        if code != 2:
            _table(rows, report["peak_tflops"], args.size)
            n_fail = sum(not c["ok"] for c in checks.results)
            print(
                f"\n{len(checks.results) - n_fail}/{len(checks.results)} checks passed; "
                f"{time.perf_counter() - t_start:.0f} s"
            )
            code = 1 if n_fail or not checks.results else 0
        report.update(checks=checks.results, timings=rows)
        _write_report(report)
    return code


def _table(rows: list[dict], peak, size: int) -> None:
    print("\n| config | fused pairs/s | per-layer pairs/s | speedup | TFLOP/s | % FP32 peak | CIFAR-10 Gram (h) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        pct = f"{100 * r['tflops'] / peak:.1f}" if peak else "n/a"
        print(
            f"| {r['config']} | {r['fused_pairs_per_s']:,.0f} | {r['baseline_pairs_per_s']:,.1f} | "
            f"{r['speedup']:,.1f}x | {r['tflops']:.2f} | {pct} | {r['cifar10_hours']:,.1f} |"
        )
    if size != 32:
        print(f"(timings on {size}x{size} images: the CIFAR-10 column assumes 32x32 and does not apply)")


def _write_report(report: dict) -> None:
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    sys.exit(main())
