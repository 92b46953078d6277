"""What can be measured of the GPU kernels without a GPU (issue 28, ``benchmarks/RESULTS.md``).

* ``sass [SOURCE ...]``: compile each ``.cu`` for sm_90 (``nvcc -cubin -Xptxas -v``), disassemble it
  (``cuobjdump -sass``, which needs ``nvdisasm`` on PATH) and print per tile kernel: registers,
  spills, SASS instructions in all, and in the per-entry loop of a layer (the smallest loop that
  holds a reciprocal square root), with its instructions on the slow pipes (MUFU, I2F, F2I).
* ``host-error``: the largest relative error of the float32 kernel built for the host
  (``tests/cuda_host.py``) against float64 references on ``gpu_check.py``'s configurations, with
  and without fused multiply-adds, with and without +-2-ulp noise on asin/acos (CUDA's bounds).
  The 32x32 GAP-21 Gram runs with one emulated thread per block (same arithmetic) and takes ~1 min.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "benchmarks"), str(ROOT)]


def _entry_loop(body: list[tuple[int, str]]) -> list[str]:
    loops = []
    for addr, ins in body:
        m = re.search(r"BRA\s.*?(0x[0-9a-f]+)", ins)
        if m and int(m.group(1), 16) < addr:
            inside = [i for a, i in body if int(m.group(1), 16) <= a <= addr]
            if any("MUFU.RSQ" in i for i in inside):
                loops.append(inside)
    return min(loops, key=len)


def sass(sources: list[Path]) -> None:
    for src in sources:
        with tempfile.TemporaryDirectory() as tmp:
            cubin = Path(tmp) / "k.cubin"
            cmd = ["nvcc", "-cubin", "-arch=sm_90", "-std=c++17", "-Xptxas", "-v", str(src), "-o", str(cubin)]
            info = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
            text = subprocess.run(["cuobjdump", "-sass", str(cubin)], capture_output=True, text=True, check=True).stdout
        regs = dict(re.findall(r"entry function '(\w+)'.*?Used (\d+) registers", info, re.S))
        spills = dict(re.findall(r"entry function '(\w+)'.*?(\d+ bytes spill stores)", info, re.S))
        for func in re.split(r"\n\s+Function : ", text)[1:]:
            name = func.split("\n")[0].strip()
            if "cntk_tiles" not in name:
                continue
            body = [(int(a, 16), i) for a, i in re.findall(r"/\*([0-9a-f]{4})\*/\s+([^;]*);", func)]
            loop = _entry_loop(body)
            ops = Counter((i.split()[1] if i.startswith("@") else i.split()[0]).split(".")[0] for i in loop)
            slow = sum(ops[k] for k in ("MUFU", "I2F", "F2I"))
            dtype = "float" if "IfE" in name else "double"
            print(
                f"{src.name:24s} {dtype:6s} regs {regs.get(name)} ({spills.get(name)}), {len(body)} SASS, "
                f"entry loop {len(loop)} (MUFU/I2F/F2I {slow})"
            )


def host_error() -> None:
    from cuda_host import build_host_lib, host_matrix
    from gpu_check import TINY
    from reference import reference_matrix

    import cntk_core

    libs = {fma: build_host_lib(fma=fma) for fma in (False, True)}

    def errors(x1, x2, ref, depth, readout, fix, kind, threads):
        out = []
        for fma in (False, True):
            for noise in (0, 2):
                libs[fma].cntk_host_set_ulp_noise(noise)
                got = host_matrix(libs[fma], x1, x2, depth, readout, fix, fix, kind, "float32", threads=threads)
                libs[fma].cntk_host_set_ulp_noise(0)
                out.append(float(np.max(np.abs(got - ref)) / np.max(np.abs(ref))))
        return " ".join(f"{e:.1e}" for e in out)

    print("columns: plain, plain +-2 ulp, FMA, FMA +-2 ulp")
    rng = np.random.default_rng(0)  # as gpu_check.equality_checks
    for shape, depth, readout, fix, kind in TINY:
        x1 = rng.standard_normal((3,) + shape)
        x2 = np.concatenate([x1[:1], rng.standard_normal((2,) + shape)])
        ref = reference_matrix(x1, x2, depth, readout, fix, fix, kind)
        print(f"{readout}-{depth} {kind} {shape} vs reference:", errors(x1, x2, ref, depth, readout, fix, kind, 8))
    x = rng.standard_normal((3, 32, 32, 3))
    for depth, readout, fix in ((21, "gap", True), (3, "gap", False), (21, "vanilla", False)):
        ref = cntk_core.kernel_matrix(x, depth=depth, readout=readout, fix=fix, backend="numba")
        print(f"{readout}-{depth} 32x32x3 Gram vs numba:", errors(x, x, ref, depth, readout, fix, "ntk", 1))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sass")
    s.add_argument("sources", nargs="*", type=Path, default=[ROOT / "cntk_core" / "cuda" / "cntk_planes.cu"])
    sub.add_parser("host-error")
    args = ap.parse_args(argv)
    sass(args.sources) if args.cmd == "sass" else host_error()


if __name__ == "__main__":
    main()
