"""One-shot GPU check of the fused CuPy engine: correctness, speed, FLOP rate, CIFAR-10 extrapolation.

Run (one command, 5 to 8 minutes on an H100; needs CuPy and a CUDA device):

    .venv/bin/python benchmarks/gpu_check.py [--peak-tflops 67] [--threads 256] [--budget 420]

1. Equality checks (a compact version of tests/test_gpu.py), each printed PASS/FAIL: the fused
   engine (float32 and float64) and the per-layer CuPy baseline against the float64 references
   (cntk_core.testing on tiny images, the Numba engine on 32x32 and 40x40), vanilla float32
   self-kernel relative error <= 1e-6, results independent of the launch size, the OOM
   halve-and-retry path, and float64 at 40x40, whose thread blocks need more than 48 KB of shared memory
   (also after a second engine with a smaller such need was built). ``--threads`` applies to every
   fused engine here, the Gram checks included (through ``CNTK_GPU_THREADS``).
   The networks beyond the 2019 paper, each against the CPU: the LAP readout on the fused engine
   (c = 0, 1, 2, 4 and one beyond the image; c = 0 bit-identical to vanilla), the flip-symmetrised
   kernel through ``cntk_core.network_kernel(Architecture(..., flip=True), x, backend="cupy")`` (the
   Gram driver's wrapper around the fused engine), Myrtle-5 networks on the staged engine
   (:mod:`cntk_core.gpu_stages`, one launch per stage) and circular-padding networks, which run on
   the per-layer path with CuPy arrays: against cntk_core.testing on tiny images and against
   ``backend="numba"`` (the CPU's fused or per-layer engine) at 32x32 (staged: fused tolerances).
   Tolerances (relative to the largest entry): fused float32 2e-6, float64 1e-7. The float32 one is
   ~8x the largest error of the same kernel built for the host (tests/cuda_host.py) on these very
   configurations, 2.6e-7 (GAP-21 32x32), with fused multiply-adds and +-2-ulp noise on asin/acos as
   on the GPU (benchmarks/RESULTS.md, issue 28). The per-layer float32 baseline computes arccos
   without the stable form: 1e-5 (its NumPy twin on the CPU: <= 1.7e-7 here).
2. Timing on random 32x32x3 images, float32: CNTK-GAP depths 3, 11, 21 (fix=True) and CNTK-V depth
   21 (fix=False), NTK. Pairs per second of the fused engine and of the per-layer baseline
   (:class:`cntk_core.engines.PerLayerEngine` with ``xp=cupy``: full (PQ)^2 tensors, one array op per
   layer, the official code's design) measured in the same run; the baseline runs on few pairs.
   Then the newer paths: CNTK-LAP4-11 and CNTK-LAP2-21 (fused, against their per-layer baseline),
   CNTK-GAP-11+flip (the flip wrapper of :mod:`cntk_core.flip` around the fused engine and around
   the baseline: two evaluations per pair), CNN-GP-Myrtle-5 and -7 (NNGP) and CNTK-Myrtle-5 on
   the staged engine against the per-layer baseline (no FLOP count: n/a), and CNTK-GAP-5-circ,
   which only the per-layer CuPy path runs (its fused columns read n/a, and its CIFAR-10 hours are
   the per-layer path's).
   Every timed call's values must be finite (a check per configuration); a configuration that
   raises is a failed check, and the run goes on.
3. Achieved FLOP rate of the fused path against the card's FP32 peak. Count per covariance entry of
   one pair (see :func:`cntk_core.gpu.flops_per_entry`): input ``S0`` 2C; per layer h = 1..L a box sum
   of Sigma (8 adds) and, for the NTK and h >= 2, of Theta (8 adds); the ReLU dual 14 (prod, sqrt,
   division, pi - angle, rho * (.), rho * rho, 1 - (.), sqrt, +, norm * (.), * 1/(9 pi), k_dot's
   * 1/(9 pi), and K_dot * Theta + K as 2), where arccos, sqrt and division count one flop each
   (they cost several instructions: the percentage is a conservative "useful flop" figure);
   readout 1 (LAP: 2, the weight's multiply). Entries per pair: (PQ)^2 for GAP, PQ for vanilla,
   PQ * min(P, 4c+1) * min(Q, 4c+1) for LAP (the shift blocks it launches). So CNTK-GAP-21 at 32x32x3 is
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
from cntk_core import Architecture, myrtle  # noqa: E402
from cntk_core.backend import gpu_status  # noqa: E402

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
#: (shape, Architecture, kind) of the checks of the newer paths against cntk_core.testing: LAP on the
#: fused engine (c beyond the image: every weight P*Q), flip through the Gram driver, pooled networks
#: on the staged engine, and circular padding on the per-layer path
TINY_EXTENSIONS = [
    ((9, 13, 3), Architecture(4, "lap", lap_c=1), "ntk"),
    ((8, 8, 3), Architecture(5, "lap", True, True, lap_c=2), "nngp"),
    ((6, 5, 3), Architecture(3, "lap", True, False, lap_c=7), "ntk"),
    ((7, 6, 3), Architecture(3, "gap", True, True, flip=True), "ntk"),
    ((7, 6, 3), Architecture(4, "lap", lap_c=1, flip=True), "nngp"),
    ((8, 8, 3), myrtle(5), "ntk"),
    ((8, 6, 3), myrtle(5, flip=True), "nngp"),
    ((6, 7, 3), Architecture(4, "gap", padding="circular"), "ntk"),
    ((6, 7, 3), Architecture(3, "lap", lap_c=1, padding="circular"), "ntk"),
]
#: (Architecture, side, dtypes) of the symmetric Grams of the newer paths against backend="numba"
GRAM_EXTENSIONS = [
    (Architecture(11, "lap", True, True, lap_c=4), 32, ("float32", "float64")),
    (Architecture(21, "lap", True, True, lap_c=1), 32, ("float32",)),
    (Architecture(11, "gap", True, True, flip=True), 32, ("float32", "float64")),
    (Architecture(5, "lap", lap_c=2, flip=True), 32, ("float32",)),
    (myrtle(5), 32, ("float32", "float64")),
    (Architecture(5, "gap", padding="circular"), 16, ("float32", "float64")),
]
#: the CPU backend the Grams of GRAM_EXTENSIONS are checked against (its fused engine where it has one)
CPU_BACKEND = "numba"
#: images of the check that LAP with c = 0 is the vanilla kernel bit for bit (CNTK-V-11, float32)
LAP0_SHAPE = (4, 32, 32, 3)
CIFAR_PAIRS = 50_000 * 50_001 // 2 + 10_000 * 50_000
#: (name, Architecture, path) of the timings: "fused" (FusedGPUEngine against the per-layer
#: baseline), "flip" (both wrapped by cntk_core.flip.FlipEngine), "per-layer" (PerLayerEngine only)
TIMED = [
    (a.title(), a, "fused")
    for a in (
        Architecture(3, "gap", True, True),
        Architecture(11, "gap", True, True),
        Architecture(21, "gap", True, True),
        Architecture(21, "vanilla"),
        Architecture(11, "lap", True, True, lap_c=4),
        Architecture(21, "lap", True, True, lap_c=2),
    )
]
TIMED += [(a.title(), a, "flip") for a in (Architecture(11, "gap", True, True, flip=True),)]
TIMED += [(a.title(kind), a, "staged", kind) for a, kind in ((myrtle(5), "nngp"), (myrtle(7), "nngp"),
                                                            (myrtle(5), "ntk"))]  # fmt: skip
TIMED += [(a.title(), a, "per-layer") for a in (Architecture(5, "gap", padding="circular"),)]


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
    extension_checks(checks, rng)


def _path(arch: Architecture) -> str:
    """Which GPU path ``network_kernel(arch, backend="cupy")`` takes (flip wraps either)."""
    from cntk_core.gpu import FusedGPUEngine
    from cntk_core.gpu_stages import StagedGPUEngine

    spec = arch.network().canonical()
    path = "fused" if FusedGPUEngine.supports(spec) else "staged" if StagedGPUEngine.supports(spec) else "per-layer"
    return path + (" + flip" if arch.flip else "")


def extension_checks(checks: Checks, rng) -> None:
    """The newer GPU paths against the CPU (the module docstring, item 1): LAP, flip, Myrtle, circular."""
    from cntk_core.testing import reference_arch_matrix

    for shape, arch, kind in TINY_EXTENSIONS:
        x1 = rng.standard_normal((3,) + shape)
        x2 = np.concatenate([x1[:1], rng.standard_normal((2,) + shape)])
        ref = reference_arch_matrix(x1, x2, arch, kind)
        path = _path(arch)
        tol = TOL_PER_LAYER if path.startswith("per-layer") else TOL
        for dtype in ("float32", "float64"):

            def tiny(arch=arch, kind=kind, dtype=dtype, ref=ref, x1=x1, x2=x2, tol=tol):
                got = cntk_core.network_kernel(arch, x1, x2, kind=kind, dtype=dtype, backend="cupy")
                e = _rel(got, ref)
                return e <= tol[dtype], f"rel err {e:.2e} (tol {tol[dtype]:.0e})"

            checks.run(f"{path} {dtype} vs reference, {arch.title(kind)} {shape}", tiny)

    for arch, size, dtypes in GRAM_EXTENSIONS:
        x = rng.standard_normal((3, size, size, 3))
        ref = cntk_core.network_kernel(arch, x, backend=CPU_BACKEND)
        path = _path(arch)
        tol = TOL_PER_LAYER if path.startswith("per-layer") else TOL
        for dtype in dtypes:

            def sym(arch=arch, dtype=dtype, ref=ref, x=x, tol=tol):
                got = cntk_core.network_kernel(arch, x, dtype=dtype, backend="cupy")
                e = _rel(got, ref)
                ok = e <= tol[dtype] and np.array_equal(got, got.T)
                return ok, f"rel err {e:.2e} (tol {tol[dtype]:.0e}), symmetric"

            checks.run(f"{path} {dtype} symmetric Gram vs {CPU_BACKEND}, {arch.title()} {size}x{size}x3", sym)

    def lap0_is_vanilla():
        x = rng.standard_normal(LAP0_SHAPE)
        kw = dict(depth=11, fix=False, dtype="float32", backend="cupy")
        lap = cntk_core.kernel_matrix(x, readout="lap", lap_c=0, **kw)
        vanilla = cntk_core.kernel_matrix(x, readout="vanilla", **kw)
        return np.array_equal(lap, vanilla), "LAP c=0 and vanilla-11 float32 Grams bit-identical"

    checks.run("LAP with c = 0 is vanilla", lap0_is_vanilla)


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
    for name, arch, path, *kind in TIMED:
        if time.perf_counter() > deadline:
            print(f"SKIP timing {name}: time budget used up", flush=True)
            continue
        try:
            row = _timing_row(name, arch, path, x, threads, rng, *kind)
        except Exception as exc:
            checks.add(f"timing {name}", False, f"{type(exc).__name__}: {exc}")
            continue
        finite = row.pop("finite")
        checks.add(f"timing {name}: values finite", finite, "fused and per-layer, every timed call")
        rows.append(row)
    return rows


def _timing_row(name, arch, path, x, threads, rng, kind="ntk") -> dict:
    """One timed configuration: ``path`` "fused" (the fused engine and the per-layer baseline),
    "flip" (both inside :class:`cntk_core.flip.FlipEngine`, as ``network_kernel`` wraps them),
    "staged" (:class:`cntk_core.gpu_stages.StagedGPUEngine` and the baseline; no FLOP count) or
    "per-layer" (the per-layer CuPy engine alone: the fused columns are ``None``)."""
    import cupy

    from cntk_core.engines import PerLayerEngine
    from cntk_core.flip import FlipEngine
    from cntk_core.gpu import FusedGPUEngine
    from cntk_core.gpu_stages import StagedGPUEngine

    net = arch.network()
    f32 = np.dtype("float32")
    wrap = FlipEngine if path == "flip" else (lambda e: e)
    fused, ok_fused, eng, kinfo = None, True, None, {}
    try:
        if path == "staged":
            eng = StagedGPUEngine(net.canonical(), x.shape[1:], kind, f32, threads=threads)
            fused, ok_fused = rate(eng, x, 16, 3.0, 100_000, rng)
            kinfo = {"regs": int(eng._stage_kernel.num_regs), "smem_dynamic": max(eng.smem)}
            kinfo["shift_blocks"] = [len(b) for b in eng.pair_blocks]
        elif path != "per-layer":
            eng = FusedGPUEngine(net.canonical(), x.shape[1:], "ntk", f32, threads=threads)
            vanilla = arch.readout == "vanilla"
            first = 4096 if vanilla else 256 if arch.readout == "lap" else 64
            cap = 2_000_000 if vanilla else 1_000_000 if arch.readout == "lap" else 200_000
            fused, ok_fused = rate(wrap(eng), x, first, 3.0, cap, rng)
            k = eng._shift_block_kernel
            kinfo = {"regs": int(k.num_regs), "local_bytes": int(k.local_size_bytes), "smem_dynamic": eng.smem}
            kinfo["shift_blocks"] = eng.n_shift_blocks
        base_eng = wrap(PerLayerEngine(net, x.shape[1:], kind, f32, xp=cupy))
        base, ok_base = rate(base_eng, x[:64], 8, 1.0 if eng else 2.0, 256 if eng else 4096, rng)
    finally:
        cupy.get_default_memory_pool().free_all_blocks()
    evaluations = 2.0 if path == "flip" else 1.0  # per pair
    flops = eng.flops_per_pair * evaluations if eng and path != "staged" else None
    shown = f"fused {fused:,.0f} pairs/s" if eng else "no fused path"
    print(f"timed {name}: {shown}, per-layer {base:,.1f} pairs/s, {kinfo}", flush=True)
    return {
        "config": name,
        "path": path,
        "fused_pairs_per_s": fused,
        "baseline_pairs_per_s": base,
        "speedup": fused / base if eng else None,
        "flops_per_pair": flops,
        "tflops": flops * fused / 1e12 if flops else None,
        "cifar10_hours": CIFAR_PAIRS / (fused if eng else base) / 3600,
        "kernel": kinfo,
        "threads": eng.threads if eng else None,
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
    ap.add_argument("--budget", type=float, default=420.0, help="seconds after which timings are skipped")
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
        if r["fused_pairs_per_s"] is None:  # per-layer-only rows: no fused columns
            fused = speedup = tflops = pct = "n/a"
        else:
            fused, speedup = f"{r['fused_pairs_per_s']:,.0f}", f"{r['speedup']:,.1f}x"
            tflops = f"{r['tflops']:.2f}" if r["tflops"] else "n/a"
            pct = f"{100 * r['tflops'] / peak:.1f}" if peak and r["tflops"] else "n/a"
        print(
            f"| {r['config']} | {fused} | {r['baseline_pairs_per_s']:,.1f} | "
            f"{speedup} | {tflops} | {pct} | {r['cifar10_hours']:,.1f} |"
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
