"""``benchmarks/gpu_check.py`` on the CPU: it always ends with its verdict and writes its JSON, whatever
fails; timing runs check finiteness; ``--threads`` reaches the Gram checks; its float32 tolerance
is what the kernel's arithmetic supports (the host build's error, with FMA and asin/acos noise); and
its checks and timings of the newer paths (LAP, flip, Myrtle, circular padding) run end to end on the
fake CuPy of ``test_gpu_fake_cupy.py`` (the ``.cu`` built for the host, NumPy arrays), at small sizes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from cuda_host import build_host_lib, host_matrix
from test_gpu_fake_cupy import fake_gpu, host_lib  # noqa: F401  (fixtures: the fake CuPy)

from cntk_core import Architecture
from cntk_core.testing import reference_matrix

GPU_CHECK = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
_SPEC = importlib.util.spec_from_file_location("gpu_check", GPU_CHECK)
gpu_check = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(gpu_check)


@pytest.fixture
def fake_run(monkeypatch, tmp_path, capsys):
    """``run(argv)`` -> (exit code, printed lines, JSON report) with the GPU parts replaced."""
    monkeypatch.setenv("OUT", str(tmp_path))
    monkeypatch.setattr(gpu_check, "gpu_status", lambda: (True, "fake"))
    monkeypatch.setattr(gpu_check, "device_info", lambda peak: ("Fake GPU", 67.0, "0"))

    def run(argv=()):
        code = gpu_check.main(["--budget", "1000", *argv])
        lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
        return code, lines, json.loads((tmp_path / "gpu_check.json").read_text())

    return run


def _one_passing_check(checks, threads):
    checks.add("a check", True, "fine")


def test_verdict_and_json_when_every_timing_raises(fake_run, monkeypatch):
    monkeypatch.setattr(gpu_check, "equality_checks", _one_passing_check)

    def boom(*args):
        raise RuntimeError("launch failed")

    monkeypatch.setattr(gpu_check, "_timing_row", boom)
    code, lines, report = fake_run()
    assert code == 1
    assert lines[-1].startswith(f"1/{1 + len(gpu_check.TIMED)} checks passed")
    assert report["device"] == "Fake GPU" and report["timings"] == []
    failed = [c for c in report["checks"] if not c["ok"]]
    assert len(failed) == len(gpu_check.TIMED) and "RuntimeError: launch failed" in failed[0]["detail"]


def test_verdict_and_json_when_the_checks_are_interrupted(fake_run, monkeypatch):
    def interrupted(checks, threads):
        checks.add("a check", True, "fine")
        raise KeyboardInterrupt

    monkeypatch.setattr(gpu_check, "equality_checks", interrupted)
    code, lines, report = fake_run()
    assert code == 1 and lines[-1].startswith("1/2 checks passed")
    assert report["checks"][-1]["check"] == "gpu_check ran to the end" and not report["checks"][-1]["ok"]


def test_non_finite_timing_values_fail_and_rows_are_kept(fake_run, monkeypatch):
    monkeypatch.setattr(gpu_check, "equality_checks", _one_passing_check)
    row = {"config": "x", "fused_pairs_per_s": 1.0, "baseline_pairs_per_s": 1.0, "speedup": 1.0}
    row |= {"flops_per_pair": 1.0, "tflops": 1.0, "cifar10_hours": 1.0, "kernel": {}, "threads": 256}
    results = iter([True, False] + [True] * (len(gpu_check.TIMED) - 2))
    monkeypatch.setattr(gpu_check, "_timing_row", lambda *a: dict(row, finite=next(results)))
    code, lines, report = fake_run()
    assert code == 1 and lines[-1].startswith(f"{len(gpu_check.TIMED)}/{1 + len(gpu_check.TIMED)} checks passed")
    assert len(report["timings"]) == len(gpu_check.TIMED) and "finite" not in report["timings"][0]
    assert any(line.startswith("FAIL  timing CNTK-GAP-11: values finite") for line in lines)


def test_without_a_gpu_the_json_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("OUT", str(tmp_path))
    monkeypatch.setattr(gpu_check, "gpu_status", lambda: (False, "no device"))
    assert gpu_check.main([]) == 2
    assert json.loads((tmp_path / "gpu_check.json").read_text())["error"] == "no usable GPU: no device"


class _NaNEngine:
    def prepare(self, x):
        return None

    def pairs(self, s1, s2, rows, cols):
        out = np.ones(len(rows))
        out[-1] = np.nan
        return out


def test_rate_reports_non_finite_values():
    speed, finite = gpu_check.rate(_NaNEngine(), np.zeros((4, 2, 2, 1)), 16, 0.0, 64, np.random.default_rng(0))
    assert speed > 0 and not finite


def test_threads_reach_the_engines_kernel_matrix_builds(monkeypatch):
    from cntk_core.gpu import THREADS_ENV, _threads

    monkeypatch.setenv(THREADS_ENV, "")  # restored after the test
    x = np.zeros((1, 32, 32, 3))
    assert gpu_check._threads_used(x) == 256
    gpu_check.apply_threads(64)
    assert _threads(None) == 64 and gpu_check._threads_used(x) == 64


def test_float32_tolerance_is_what_the_arithmetic_supports():
    """The kernel built for the host with fused multiply-adds and +-2-ulp asin/acos (CUDA's bounds)
    errs by at most 1/5 of gpu_check's float32 tolerance on its configurations, and the tolerance
    is no more than 20x that error (it was 1e-4, ~700x, before)."""
    lib = build_host_lib(fma=True)
    rng = np.random.default_rng(0)
    worst = 0.0
    lib.cntk_host_set_ulp_noise(2)
    try:
        for shape, depth, readout, fix, kind in gpu_check.TINY:
            x1 = rng.standard_normal((3,) + shape)
            x2 = np.concatenate([x1[:1], rng.standard_normal((2,) + shape)])
            ref = reference_matrix(x1, x2, depth, readout, fix, fix, kind)
            got = host_matrix(lib, x1, x2, depth, readout, fix, fix, kind, "float32", threads=8)
            worst = max(worst, float(np.max(np.abs(got - ref)) / np.max(np.abs(ref))))
    finally:
        lib.cntk_host_set_ulp_noise(0)
    tol = gpu_check.TOL["float32"]
    assert 5 * worst <= tol <= 20 * worst, (worst, tol)


def test_extension_checks_run_and_pass_on_the_fake_gpu(fake_gpu, monkeypatch):  # noqa: F811
    """extension_checks on the fake CuPy: every network of TINY_EXTENSIONS through network_kernel
    (fused with the host-built kernels, or per-layer on NumPy arrays) against cntk_core.testing,
    the Grams at small sizes against the CPU (here the per-layer NumPy path, which the oracle tests
    check; gpu_check itself asks the Numba backend), and LAP c=0 against vanilla bit for bit."""
    import cntk_core.gram as gram

    monkeypatch.setattr(gram, "resolve_backend", lambda backend=None: backend or "cupy")
    small = [(arch, 6, dtypes) for arch, _, dtypes in gpu_check.GRAM_EXTENSIONS if arch.depth <= 11]
    monkeypatch.setattr(gpu_check, "GRAM_EXTENSIONS", small)
    monkeypatch.setattr(gpu_check, "CPU_BACKEND", "numpy")
    monkeypatch.setattr(gpu_check, "LAP0_SHAPE", (3, 7, 6, 3))
    checks = gpu_check.Checks()
    gpu_check.extension_checks(checks, np.random.default_rng(0))
    names = [c["check"] for c in checks.results]
    assert len(names) == 2 * len(gpu_check.TINY_EXTENSIONS) + sum(len(d) for _, _, d in small) + 1
    assert all(c["ok"] for c in checks.results), [c for c in checks.results if not c["ok"]]
    assert sum(n.startswith("fused") for n in names) >= 2 * 5 and sum(n.startswith("per-layer") for n in names) >= 6
    assert sum(n.startswith("staged") for n in names) >= 6  # Myrtle: 2 tiny x 2 dtypes, 1 Gram x 2 dtypes
    assert any("fused + flip" in n for n in names) and any("staged + flip" in n for n in names)


def test_extension_checks_fail_on_a_wrong_kernel(fake_gpu, monkeypatch):  # noqa: F811
    """The same checks see a fused LAP that is off by a factor (here: GAP's scale instead of LAP's)."""
    import cntk_core.gpu as gpu
    import cntk_core.gram as gram

    monkeypatch.setattr(gram, "resolve_backend", lambda backend=None: backend or "cupy")
    monkeypatch.setattr(gpu_check, "TINY_EXTENSIONS", gpu_check.TINY_EXTENSIONS[:1])
    monkeypatch.setattr(gpu_check, "GRAM_EXTENSIONS", [])
    monkeypatch.setattr(gpu, "readout_scale", lambda p, q, readout, lap_c=None: 1.0)
    checks = gpu_check.Checks()
    gpu_check.extension_checks(checks, np.random.default_rng(0))
    assert [c["ok"] for c in checks.results] == [False, False, True]  # float32, float64; c=0 is unscaled


def test_timing_rows_of_every_path_on_the_fake_gpu(fake_gpu, monkeypatch, capsys):  # noqa: F811
    """_timing_row for each TIMED configuration (fused, flip, staged, per-layer) on 8x8 images with few
    pairs: the row's keys, finite values, no fused columns for per-layer rows, no FLOP count for
    per-layer and staged rows, and the table prints them."""
    real_rate = gpu_check.rate
    monkeypatch.setattr(gpu_check, "rate", lambda eng, x, first, t, cap, rng: real_rate(eng, x[:4], 3, 0.0, 3, rng))
    x = np.random.default_rng(1).standard_normal((4, 8, 8, 3)).astype(np.float32)
    rows = []
    for name, arch, path, *kind in gpu_check.TIMED:
        arch = Architecture.from_dict({**arch.to_dict(), "depth": min(arch.depth, 5)})  # Myrtle-5 unchanged
        row = gpu_check._timing_row(name, arch, path, x, None, np.random.default_rng(2), *kind)
        assert row.pop("finite") is True and row["path"] == path
        assert (row["fused_pairs_per_s"] is None) == (path == "per-layer")
        assert (row["tflops"] is None) == (path in ("per-layer", "staged"))
        assert row["baseline_pairs_per_s"] > 0 and row["cifar10_hours"] > 0
        rows.append(row)
    by_name = {r["config"]: r for r in rows}
    assert [r["path"] for r in rows].count("per-layer") == 1 and [r["path"] for r in rows].count("staged") == 3
    assert by_name["CNTK-GAP-11+flip"]["flops_per_pair"] == 2 * by_name["CNTK-GAP-11"]["flops_per_pair"] > 0
    gpu_check._table(rows, 67.0, 8)
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("| CNTK", "| CNN"))]
    assert len(table) == len(gpu_check.TIMED) and sum("| n/a | " in line for line in table) == 4
