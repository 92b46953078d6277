"""The CUDA sources compile (nvcc -ptx), a broken source does not, and the block routine is right.

Without a GPU the kernels cannot run, but ``cntk_planes.cu`` also compiles as plain host C++
(g++): its block routine ``tile_thread`` then runs on the CPU with one thread, and is checked here
against the independent float64 reference (``tests/reference.py``). If nvcc is missing the compile
tests fail under CI (``CI=true``) and are skipped otherwise.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from reference import reference_kernel, reference_matrix

import cntk_core
from cntk_core.gpu import emulate_matrix, tile_list

CUDA_DIR = Path(cntk_core.__file__).parent / "cuda"
SOURCES = sorted(CUDA_DIR.glob("*.cu"))
PLANES = CUDA_DIR / "cntk_planes.cu"


def _tool(name: str, *fallbacks: str) -> str:
    path = shutil.which(name) or next((f for f in fallbacks if Path(f).exists()), None)
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{name} not found on PATH, but CI=true requires it")
        pytest.skip(f"{name} not installed")
    return path


@pytest.fixture(scope="module")
def nvcc() -> str:
    return _tool("nvcc", "/usr/local/cuda/bin/nvcc")


def _ptx(nvcc: str, src: Path, out: Path) -> subprocess.CompletedProcess:
    cmd = [nvcc, "-ptx", "-arch=compute_80", "-std=c++17", str(src), "-o", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_sources_exist():
    assert PLANES in SOURCES


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.name)
def test_compiles_to_ptx(nvcc, src, tmp_path):
    res = _ptx(nvcc, src, tmp_path / "k.ptx")
    assert res.returncode == 0, res.stderr
    ptx = (tmp_path / "k.ptx").read_text()
    if src == PLANES:
        entries = [line for line in ptx.splitlines() if ".entry" in line]
        assert any("cntk_tilesIf" in e for e in entries), entries  # float instantiation
        assert any("cntk_tilesId" in e for e in entries), entries  # double instantiation
        assert any("cntk_reduce" in e for e in entries), entries


def test_broken_source_fails(nvcc, tmp_path):
    broken = tmp_path / "broken.cu"
    text = PLANES.read_text().replace("T acc = T(0);", "T acc = undefined_in_cntk_test;", 1)
    assert "undefined_in_cntk_test" in text
    broken.write_text(text)
    res = _ptx(nvcc, broken, tmp_path / "broken.ptx")
    assert res.returncode != 0
    assert "undefined_in_cntk_test" in res.stderr


# ---------------------------------------------------------------------------------------------
# the .cu block routine on the CPU (host C++ build)
# ---------------------------------------------------------------------------------------------


def build_host_lib(directory: Path) -> ctypes.CDLL:
    """Compile ``cntk_planes.cu`` as host C++ into ``directory`` and load it (skips without g++)."""
    gxx = _tool("g++")
    so = directory / "cntk_planes_host.so"
    cmd = [gxx, "-x", "c++", "-std=c++17", "-O2", "-shared", "-fPIC", str(PLANES), "-o", str(so)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    lib = ctypes.CDLL(str(so))
    for name in ("cntk_host_tile_f64", "cntk_host_tile_f32"):
        fn = getattr(lib, name)
        fn.restype = ctypes.c_double
        fn.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int] * 10
    return lib


@pytest.fixture(scope="module")
def host_lib(tmp_path_factory):
    return build_host_lib(tmp_path_factory.mktemp("cuda_host"))


def host_matrix(lib, x1, x2, depth, readout, fix_first, fix_last, kind, dtype) -> np.ndarray:
    """Kernel matrix from the .cu's ``tile_thread`` on the host: record pass, all tiles, tile-order sum."""
    dt = np.dtype(dtype)
    fn = lib.cntk_host_tile_f64 if dt == np.float64 else lib.cntk_host_tile_f32
    x1 = np.ascontiguousarray(x1, dt)
    x2 = np.ascontiguousarray(x2, dt)
    _, p, q, c = x1.shape
    L = depth - 1
    buf = np.zeros(4 * p * q, dt)

    def ptr(a):
        return a.ctypes.data

    def variances(x):
        v = np.zeros((len(x), L, p, q), dt)
        for n in range(len(x)):
            fn(ptr(x[n]), ptr(x[n]), ptr(v[n]), ptr(v[n]), ptr(buf), 0, 0, p, q, c, L, 1, 0, 1, 1)
        return v

    v1, v2 = variances(x1), variances(x2)
    scale = 1.0 if readout == "vanilla" else 1.0 / (p * q) ** 2
    out = np.empty((len(x1), len(x2)))
    for a in range(len(x1)):
        for b in range(len(x2)):
            acc = 0.0
            for gi, gj in tile_list(p, q, readout):
                args = (int(gi), int(gj), p, q, c, L, int(fix_first), int(fix_last), int(kind == "ntk"), 0)
                acc += fn(ptr(x1[a]), ptr(x2[b]), ptr(v1[a]), ptr(v2[b]), ptr(buf), *args)
            out[a, b] = acc * scale
    return out


CASES = [
    # (shape, depth, readout, fix, kind)
    ((5, 7, 2), 3, "gap", True, "ntk"),
    ((6, 6, 3), 4, "gap", False, "ntk"),
    ((4, 9, 1), 2, "gap", False, "nngp"),
    ((9, 13, 3), 5, "vanilla", False, "ntk"),
    ((8, 8, 3), 21, "vanilla", True, "ntk"),
    ((7, 5, 2), 6, "vanilla", False, "nngp"),
]


@pytest.mark.parametrize("shape,depth,readout,fix,kind", CASES)
def test_host_block_matches_reference(host_lib, shape, depth, readout, fix, kind):
    rng = np.random.default_rng(depth * 31 + shape[1])
    x1 = rng.standard_normal((2,) + shape)
    x2 = np.concatenate([rng.standard_normal((1,) + shape), x1[:1]])  # includes an exact self pair
    ref = reference_matrix(x1, x2, depth, readout, fix, fix, kind)
    got64 = host_matrix(host_lib, x1, x2, depth, readout, fix, fix, kind, "float64")
    np.testing.assert_allclose(got64, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
    got32 = host_matrix(host_lib, x1, x2, depth, readout, fix, fix, kind, "float32")
    np.testing.assert_allclose(got32, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


def test_host_block_agrees_with_numpy_emulation(host_lib):
    """Two independent statements of one block (C++ and NumPy) agree to float64 rounding."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 6, 5, 2))
    spec = cntk_core.cntk(5, "gap", True).canonical()
    emu = emulate_matrix(x, x, spec, "ntk")
    host = host_matrix(host_lib, x, x, 5, "gap", True, True, "ntk", "float64")
    np.testing.assert_allclose(host, emu, rtol=1e-13)


def test_host_vanilla_self_kernel_float32_exact_diagonal(host_lib):
    """Exact self pairs see rho == 1 exactly: float32 vanilla self-kernel within 1e-6 of float64."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 16, 16, 3))
    ref = np.array([reference_kernel(a, a, 21, "vanilla") for a in x])
    got = np.diag(host_matrix(host_lib, x, x, 21, "vanilla", False, False, "ntk", "float32"))
    assert np.max(np.abs(got - ref) / np.abs(ref)) <= 1e-6
