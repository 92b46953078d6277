"""The CUDA sources compile the ways the project uses them, and a broken source does not.

``nvcc -ptx`` (every ``.cu``), ``nvcc -arch=sm_90 -c`` and ``-cubin`` (whole-program compiles, which
also type-check the host side of ``__global__`` functions), and an NVRTC-equivalent compile: CuPy's
options plus its ``-ftz=true``, the ``__CUDACC_RTC__`` branches as NVRTC takes them, and the
kernels instantiated from ``cntk_core.gpu.NAME_EXPRESSIONS`` only. Where the NVRTC library itself
is found (``CNTK_NVRTC``, the CUDA toolkit, or the ``nvidia-cuda-nvrtc`` wheel) the source is
compiled through it too, as CuPy does. If nvcc is missing the nvcc tests fail under CI
(``CI=true``) and are skipped otherwise; the NVRTC-library test skips without the library.
The kernels themselves run on the CPU in ``tests/test_cuda_host.py``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cuda_host import CUDA_DIR, PLANES, tool

from cntk_core.gpu import NAME_EXPRESSIONS, NVRTC_OPTIONS, kernel_source

SOURCES = sorted(CUDA_DIR.glob("*.cu"))
MANGLED = {
    "cntk_shift_blocks<float>": "_Z17cntk_shift_blocksIfEv",
    "cntk_shift_blocks<double>": "_Z17cntk_shift_blocksIdEv",
    "cntk_stage_blocks<float>": "_Z17cntk_stage_blocksIfEv",
    "cntk_stage_blocks<double>": "_Z17cntk_stage_blocksIdEv",
}
#: mangled-name suffixes (parameter lists) of the two kernel templates
PARAMS = {"cntk_shift_blocks": "PKT_S2_PS0_S2_PKiS5_S5_iiiiiiiiiiPd",
          "cntk_stage_blocks": "PKT_S2_PS0_S2_iiPKiS5_S5_iiiiiiiiiiiiS2_S5_iiixiS3_iixiPd"}  # fmt: skip
STAGES = CUDA_DIR / "cntk_stages.cu"


@pytest.fixture(scope="module")
def nvcc() -> str:
    return tool("nvcc", "/usr/local/cuda/bin/nvcc")


def _run(cmd: list) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=180)


def _entries(ptx: str) -> list[str]:
    return re.findall(r"\.entry\s+(\w+)", ptx)


def test_sources_exist():
    assert CUDA_DIR / "cntk_planes.cu" in SOURCES and STAGES in SOURCES
    assert kernel_source() == (CUDA_DIR / "cntk_planes.cu").read_text() + "\n" + STAGES.read_text()


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.name)
def test_compiles_to_ptx(nvcc, src, tmp_path):
    res = _run([nvcc, "-ptx", "-arch=compute_80", "-std=c++17", src, "-o", tmp_path / "k.ptx"])
    assert res.returncode == 0, res.stderr
    entries = _entries((tmp_path / "k.ptx").read_text())
    assert {"cntk_reduce"} | {m for m in entries if m.startswith(tuple(MANGLED.values()))} == set(entries)
    assert len(entries) == {"cntk_planes.cu": 3, "cntk_stages.cu": 5}[src.name], entries  # stages includes planes


def test_whole_program_compiles_for_sm90(nvcc, tmp_path):
    """``-c`` also compiles the host side, where a __syncthreads reached from a __host__ function is
    an error; ``-cubin`` assembles every kernel (cntk_stages.cu includes cntk_planes.cu), with no
    spills (ptxas -v)."""
    res = _run([nvcc, "-arch=sm_90", "-std=c++17", "-c", STAGES, "-o", tmp_path / "k.o"])
    assert res.returncode == 0, res.stderr
    res = _run([nvcc, "-cubin", "-arch=sm_90", "-std=c++17", "-Xptxas", "-v", STAGES, "-o", tmp_path / "k.cubin"])
    assert res.returncode == 0, res.stderr
    functions = re.findall(r"Compiling entry function '(\w+)'", res.stderr)
    want = [m + PARAMS[name.split("<")[0]] for name, m in MANGLED.items()]
    assert sorted(functions) == sorted(["cntk_reduce", *want]), res.stderr
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", res.stderr)
    assert len(spills) == 5 and all(s == ("0", "0") for s in spills), res.stderr


def _nvrtc_equivalent(src: Path | str, out: Path) -> Path:
    """A copy of ``src`` as NVRTC compiles it for CuPy: __CUDACC_RTC__ defined (its branches taken),
    and the kernels instantiated from the name expressions alone (as nvrtcAddNameExpression does)."""
    text = src if isinstance(src, str) else src.read_text()
    assert "!defined(__CUDACC_RTC__)" in text
    text = text.replace("!defined(__CUDACC_RTC__)", "0")
    refs = ", ".join(f"(void*)&{name}" for name in NAME_EXPRESSIONS)
    out.write_text(text + f"\nvoid* cntk_name_expressions[] = {{{refs}}};\n")
    return out


def test_nvrtc_equivalent_compile(nvcc, tmp_path):
    src = _nvrtc_equivalent(kernel_source(), tmp_path / "rtc.cu")  # the one text CuPy compiles
    ptx = tmp_path / "rtc.ptx"
    res = _run([nvcc, "-ptx", "-arch=compute_90", *NVRTC_OPTIONS, "-ftz=true", src, "-o", ptx])
    assert res.returncode == 0, res.stderr
    text = ptx.read_text()
    entries = _entries(text)
    assert "cntk_reduce" in entries and len(entries) == 5
    for mangled in MANGLED.values():
        assert any(e.startswith(mangled) for e in entries), entries
    assert len(re.findall(r"\.ftz\.f32", text)) > 20  # float arithmetic flushes subnormals, as under CuPy


def test_broken_source_fails(nvcc, tmp_path):
    broken = tmp_path / "broken.cu"
    text = PLANES.read_text().replace("T acc = T(0);", "T acc = undefined_in_cntk_test;", 1)
    assert "undefined_in_cntk_test" in text
    broken.write_text(text)
    res = _run([nvcc, "-ptx", "-arch=compute_80", "-std=c++17", broken, "-o", tmp_path / "broken.ptx"])
    assert res.returncode != 0
    assert "undefined_in_cntk_test" in res.stderr
    res = _run([nvcc, "-ptx", "-arch=compute_90", "-ftz=true", _nvrtc_equivalent(broken, tmp_path / "b.cu")])
    assert res.returncode != 0


# ---------------------------------------------------------------------------------------------
# NVRTC itself, through ctypes (where the library is installed)
# ---------------------------------------------------------------------------------------------


def _find_nvrtc() -> str | None:
    candidates = [os.environ.get("CNTK_NVRTC", "")]
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    candidates += sorted(glob.glob(os.path.join(cuda_home, "lib64", "libnvrtc.so*")))
    for site in sys.path:
        candidates += sorted(glob.glob(os.path.join(site, "nvidia", "*", "lib", "libnvrtc.so*")))
    candidates.append(ctypes.util.find_library("nvrtc") or "")
    names = ((c, Path(c).name) for c in candidates if c)
    return next((c for c, name in names if "builtins" not in name and ".alt." not in name), None)


def nvrtc_compile(lib_path: str, source: str, options: list[str], names) -> tuple[int, str, str, dict]:
    """``(result, log, ptx, lowered names)`` from NVRTC, as CuPy's RawModule compiles."""
    for builtins in sorted(Path(lib_path).parent.glob("libnvrtc-builtins.so*")):  # NVRTC dlopens it by name
        if ".alt." not in builtins.name:
            ctypes.CDLL(str(builtins), mode=ctypes.RTLD_GLOBAL)
    nv = ctypes.CDLL(lib_path)
    prog = ctypes.c_void_p()
    assert nv.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"cntk_planes.cu", 0, None, None) == 0
    try:
        for name in names:
            assert nv.nvrtcAddNameExpression(prog, name.encode()) == 0
        opts = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
        result = nv.nvrtcCompileProgram(prog, len(options), opts)
        size = ctypes.c_size_t()
        nv.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        nv.nvrtcGetProgramLog(prog, log)
        ptx, lowered = "", {}
        if result == 0:
            nv.nvrtcGetPTXSize(prog, ctypes.byref(size))
            buf = ctypes.create_string_buffer(size.value)
            nv.nvrtcGetPTX(prog, buf)
            ptx = buf.value.decode()
            for name in names:
                out = ctypes.c_char_p()
                assert nv.nvrtcGetLoweredName(prog, name.encode(), ctypes.byref(out)) == 0
                lowered[name] = out.value.decode()
        return result, log.value.decode(errors="replace"), ptx, lowered
    finally:
        nv.nvrtcDestroyProgram(ctypes.byref(prog))


def test_compiles_with_nvrtc_as_cupy_does():
    path = _find_nvrtc()
    if path is None:
        pytest.skip("the NVRTC library is not installed (nvidia-cuda-nvrtc, or CNTK_NVRTC=path)")
    options = [*NVRTC_OPTIONS, "-ftz=true", "-arch=compute_90"]
    result, log, ptx, lowered = nvrtc_compile(path, kernel_source(), options, NAME_EXPRESSIONS)
    assert result == 0, log
    entries = _entries(ptx)
    assert "cntk_reduce" in entries and set(lowered.values()) <= set(entries), (lowered, entries)
    for name, mangled in MANGLED.items():
        assert lowered[name].startswith(mangled)
    broken = kernel_source().replace("T acc = T(0);", "T acc = undefined_in_cntk_test;", 1)
    result, log, _, _ = nvrtc_compile(path, broken, options, NAME_EXPRESSIONS)
    assert result != 0 and "undefined_in_cntk_test" in log
