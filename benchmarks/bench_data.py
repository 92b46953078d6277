"""Load time of the full CIFAR-10: reading the tarball every time (the old path) vs the decoded cache.

    python benchmarks/bench_data.py                      # a full-size fake tarball (random pixels) in a temp dir
    python benchmarks/bench_data.py --tarball cifar-10-python.tar.gz   # the real file

The fake has the official layout and size (50,000 + 10,000 images, ~185 MB gzip: random pixels do not
compress, the real file is 170 MB). Each "page load" is timed in a fresh Python process, as a Voila
kernel would do it: ``load_dataset("cifar10")`` with ``CNTK_CIFAR10`` pointing at the tarball and
``CNTK_DATA_DIR`` at an empty temporary cache. Prints seconds (wall clock, best of ``--repeat``; the
import of ``cntk_core.data``, ~0.3 s, is not included). Random pixels make gunzip cheaper than on the
real file (stored deflate blocks), so "before" is a lower bound there.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LOAD = """
import sys, time
import cntk_core.data as d
t = time.perf_counter()
ds = d.load_dataset("cifar10", expected_md5=sys.argv[1] or None, decoded_cache=sys.argv[2] == "1", progress=False)
print(time.perf_counter() - t, ds.x_train.shape[0] + ds.x_test.shape[0])
"""


def _make_fake_cifar10(folder: Path):
    """``tests/cifar_fake.py``'s official-format writer, imported by path (``tests/`` is not a package)."""
    spec = importlib.util.spec_from_file_location("cifar_fake", ROOT / "tests" / "cifar_fake.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["cifar_fake"] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module.make_fake_cifar10(folder, n_per_batch=10_000, n_test=10_000)


def timed_load(env: dict, md5: str, cached: bool) -> float:
    out = subprocess.run(
        [sys.executable, "-c", LOAD, md5, "1" if cached else "0"], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert int(out[1]) == 60000, out
    return float(out[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tarball", default=None, help="a real cifar-10-python.tar.gz (default: a full-size fake)")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="cntk-bench-data-") as tmp:
        tmp = Path(tmp)
        if args.tarball:
            tarball, md5 = Path(args.tarball).resolve(), ""
        else:
            t = time.perf_counter()
            fake = _make_fake_cifar10(tmp / "src")
            tarball, md5 = fake.path, fake.md5
            print(f"fake tarball: {tarball.stat().st_size / 1e6:.0f} MB, written in {time.perf_counter() - t:.1f} s")
        env = dict(os.environ, CNTK_CIFAR10=str(tarball), CNTK_DATA_DIR=str(tmp / "cache"), PYTHONPATH=str(ROOT))
        old = min(timed_load(env, md5, cached=False) for _ in range(args.repeat))
        first = timed_load(env, md5, cached=True)  # decodes and writes the cache
        warm = min(timed_load(env, md5, cached=True) for _ in range(args.repeat))
        print(f"tarball every load (before) : {old:6.2f} s")
        print(f"first load, writes the cache: {first:6.2f} s")
        print(f"later loads (decoded cache) : {warm:6.2f} s  ({old / warm:.0f}x faster)")


if __name__ == "__main__":
    main()
