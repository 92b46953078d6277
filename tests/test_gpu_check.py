"""``benchmarks/gpu_check.py`` on the CPU: it always ends with its verdict and writes its JSON, whatever
fails; timing runs check finiteness; ``--threads`` reaches the Gram checks; and its float32 tolerance
is what the kernel's arithmetic supports (the host build's error, with FMA and asin/acos noise)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from cuda_host import build_host_lib, host_matrix

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
    results = iter([True, False, True, True])
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
