"""Host (CPU) build of ``cntk_core/cuda/cntk_planes.cu`` and ``cntk_stages.cu`` for the tests: the
kernels as written, each block's threads emulated in barrier phases (``tests/cuda_host_driver.cpp``).

``CNTK_TEST_CUDA_SOURCE`` points the build at another copy of the source (a deliberately broken one,
to see the tests fail); the default is the package's own. Without g++ the tests that need the build
skip (fail under ``CI=true``).
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

import cntk_core
from cntk_core.gpu import kernel_lap_c, readout_scale, shift_block_list, threads_for

CUDA_DIR = Path(cntk_core.__file__).parent / "cuda"
PLANES = Path(os.environ.get("CNTK_TEST_CUDA_SOURCE") or CUDA_DIR / "cntk_planes.cu")
STAGES = CUDA_DIR / "cntk_stages.cu"
DRIVER = Path(__file__).with_name("cuda_host_driver.cpp")
#: launch flags of the driver
DIVERGENT, EXIT_AT_BARRIER, SMEM_OVERRUN, BAD_ARGS, NO_FTZ = 1, 2, 4, 8, 16
#: thread orders within a barrier phase
FORWARD, REVERSE, SHUFFLED = 0, 1, 2
ORDERS = (FORWARD, REVERSE, SHUFFLED)


def tool(name: str, *fallbacks: str) -> str:
    """Path of a build tool; skips the test without it (fails under ``CI=true``)."""
    path = shutil.which(name) or next((f for f in fallbacks if Path(f).exists()), None)
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{name} not found on PATH, but CI=true requires it")
        pytest.skip(f"{name} not installed")
    return path


def _has_fma() -> bool:
    try:
        return " fma " in Path("/proc/cpuinfo").read_text().replace("\n", " ")
    except OSError:
        return False


_BUILT: dict[tuple, ctypes.CDLL] = {}


def build_host_lib(source: Path | None = None, fma: bool = True, stages: Path | None = None) -> ctypes.CDLL:
    """Compile the driver with ``source`` (default :data:`PLANES`) and ``stages`` (default
    :data:`STAGES`, the pooled networks' kernel) and load it; built once per process for each pair of
    source texts (test modules share it).

    ``fma``: contract ``a * b + c`` into fused multiply-adds where the CPU has them, as nvcc and
    NVRTC do by default (``-fmad=true``).
    """
    gxx = tool("g++")
    source, stages = Path(source or PLANES), Path(stages or STAGES)
    key = (hashlib.sha256(source.read_bytes() + stages.read_bytes() + DRIVER.read_bytes()).hexdigest(), bool(fma))
    if key in _BUILT:
        return _BUILT[key]
    directory = tempfile.mkdtemp(prefix="cntk_host_")
    atexit.register(shutil.rmtree, directory, True)
    so = Path(directory) / f"{source.stem}_{int(fma)}.so"
    flags = ["-ffp-contract=fast", "-mfma"] if fma and _has_fma() else ["-ffp-contract=off"]
    cmd = [gxx, "-x", "c++", "-std=c++17", "-O2", *flags, "-shared", "-fPIC", f'-DCNTK_PLANES_SOURCE="{source}"']
    cmd.append(f'-DCNTK_STAGES_SOURCE="{stages}"')
    res = subprocess.run([*cmd, str(DRIVER), "-o", str(so)], capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr
    lib = ctypes.CDLL(str(so))
    ptr, i32 = ctypes.c_void_p, ctypes.c_int
    for name in ("cntk_host_shift_blocks_f32", "cntk_host_shift_blocks_f64"):
        getattr(lib, name).argtypes = [i32] * 5 + [ptr] * 7 + [i32] * 10 + [ptr]
    for name in ("cntk_host_stage_blocks_f32", "cntk_host_stage_blocks_f64"):
        getattr(lib, name).argtypes = [i32] * 5 + [ptr] * 13
    lib.cntk_host_reduce.argtypes = [i32] * 3 + [ptr, i32, i32, ctypes.c_double, ptr]
    lib.cntk_host_set_ulp_noise.argtypes = [i32]
    lib.cntk_host_set_ulp_noise.restype = None
    _BUILT[key] = lib
    return lib


def _ptr(a) -> int:
    return int(a.ctypes.data)


def kernel_parameters(name: str) -> list:
    """The parameter types of kernel ``name`` as its CuPy launch must pass them, read from the CUDA
    sources: ``"array"`` for a pointer, else the NumPy scalar type of the C type (``int`` ->
    ``np.int32``, ``long long`` -> ``np.int64``, ``double`` -> ``np.float64``)."""
    text = PLANES.read_text() + STAGES.read_text()
    match = re.search(rf"CNTK_GLOBAL void {name}\((.*?)\)\s*\{{", text, re.S)
    assert match, f"kernel {name} not found in the CUDA sources"
    types = []
    for param in match.group(1).split(","):
        words = param.replace("__restrict__", "").split()
        ctype = " ".join(words[:-1])
        if "*" in param:
            types.append("array")
        else:
            types.append({"int": np.int32, "long long": np.int64, "double": np.float64}[ctype])
    return types


def launch_shift_blocks(lib, grid, nt, smem, args, order=FORWARD, ftz=False) -> int:
    """``cntk_shift_blocks<T>`` with CuPy-style ``args`` (the tuple ``FusedGPUEngine._launch`` passes): flags."""
    x1, x2, v1, v2, rows, cols, blocks, n_blocks, p, q, c, L, ff, fl, ntk, record, lap_c, partial = args
    fn = lib.cntk_host_shift_blocks_f32 if x1.dtype == np.float32 else lib.cntk_host_shift_blocks_f64
    arrays = [_ptr(a) for a in (x1, x2, v1, v2, rows, cols, blocks)]
    ints = [int(a) for a in (n_blocks, p, q, c, L, ff, fl, ntk, record, lap_c)]
    return fn(int(grid), int(nt), int(smem), int(order), int(ftz), *arrays, *ints, _ptr(partial))


def launch_stage_blocks(lib, grid, nt, smem, args, order=FORWARD, ftz=False) -> int:
    """``cntk_stage_blocks<T>`` with CuPy-style ``args`` (the tuple ``StagedGPUEngine`` passes): flags."""
    (x1, x2, v1, v2, vstride, voff, rows, cols, blocks, n_blocks, p, q, c, h0, h1, L, ff, fl, ntk, record, lap_c,
     prev, prev_slots, n_prev_slots, pp, qp, prev_stride, prev_mode, nxt, slot0, n_next_slots, next_stride,
     next_mode, partial) = args  # fmt: skip
    fn = lib.cntk_host_stage_blocks_f32 if x1.dtype == np.float32 else lib.cntk_host_stage_blocks_f64
    values = (vstride, voff, n_blocks, p, q, c, h0, h1, L, ff, fl, ntk, record, lap_c, n_prev_slots, pp, qp)
    ints = np.array([int(a) for a in (*values, prev_mode, slot0, n_next_slots, next_mode)], np.int32)
    strides = np.array([int(prev_stride), int(next_stride)], np.int64)
    ptrs = [_ptr(a) for a in (x1, x2, v1, v2, ints, rows, cols, blocks, prev, prev_slots, strides, nxt, partial)]
    return fn(int(grid), int(nt), int(smem), int(order), int(ftz), *ptrs)


def launch_reduce(lib, grid, nt, args, order=FORWARD) -> int:
    partial, n, n_blocks, scale, out = args
    ints = (int(grid), int(nt), int(order))
    return lib.cntk_host_reduce(*ints, _ptr(partial), int(n), int(n_blocks), float(scale), _ptr(out))


def host_matrix(
    lib,
    x1,
    x2,
    depth,
    readout,
    fix_first,
    fix_last,
    kind,
    dtype,
    *,
    lap_c=None,
    threads=None,
    order=FORWARD,
    ftz=False,
) -> np.ndarray:
    """Kernel matrix from the host-built kernels, driven as ``FusedGPUEngine`` drives them: one record
    launch per block of images (variance maps), one launch of a thread block per (pair, shift block)
    of :func:`cntk_core.gpu.shift_block_list`, ``cntk_reduce``. ``lap_c``: LAP's window (with
    ``readout="lap"``; passed to the kernel as ``FusedGPUEngine`` does, :func:`cntk_core.gpu.kernel_lap_c`).
    ``threads`` per thread block (default the engine's :func:`cntk_core.gpu.threads_for`); asserts
    no flags."""
    dt = np.dtype(dtype)
    x1 = np.ascontiguousarray(x1, dt)
    x2 = np.ascontiguousarray(x2, dt)
    _, p, q, c = x1.shape
    L = depth - 1
    nt = threads or threads_for(p, q)
    smem = nt * 8 + 4 * p * q * dt.itemsize
    i32 = np.int32

    def variances(x):
        v = np.zeros((len(x), L, p, q), dt)
        idx = np.arange(len(x), dtype=i32)
        partial = np.empty(len(x))
        args = (x, x, v, v, idx, idx, np.zeros(2, i32), 1, p, q, c, L, 1, 0, 1, 1, -1, partial)
        assert launch_shift_blocks(lib, len(x), nt, smem, args, order, ftz) == 0
        return v

    v1, v2 = variances(x1), variances(x2)
    blocks = np.ascontiguousarray(shift_block_list(p, q, readout, lap_c).ravel())
    n_blocks = len(blocks) // 2
    rows, cols = (a.ravel().astype(i32) for a in np.meshgrid(np.arange(len(x1)), np.arange(len(x2)), indexing="ij"))
    partial = np.empty(len(rows) * n_blocks)
    args = (x1, x2, v1, v2, rows, cols, blocks, n_blocks, p, q, c, L, int(fix_first), int(fix_last))
    args += (int(kind == "ntk"), 0, kernel_lap_c(p, q, readout, lap_c), partial)
    assert launch_shift_blocks(lib, len(rows) * n_blocks, nt, smem, args, order, ftz) == 0
    out = np.empty(len(rows))
    scale = readout_scale(p, q, readout, lap_c)
    assert launch_reduce(lib, (len(rows) + 31) // 32, 32, (partial, len(rows), n_blocks, scale, out), order) == 0
    return out.reshape(len(x1), len(x2))
