"""Accuracy and time of the kernel zoo on the exact CIFAR-10 subset (issue 25): CNTK-V, LAP at a few
``c``, flips on and off, CNTK-GAP and Myrtle, every kernel on the same images and ridge rule
(:func:`cntk_core.regression.compare_kernels`: k-fold CV ridge on the training Gram, the paper's
classifier, binomial standard errors). The baseline of each row is the vanilla kernel of the same
depth, kind and number of training images in the same run (``x V``: its accuracy difference in points,
± the standard error of the difference paired over the same test images).

    CNTK_CIFAR10_SUBSET=/path/to/subset .venv/bin/python benchmarks/kernel_zoo.py \
        --n-train 2000 --kernels V,LAP1,LAP2,V+flip,LAP1+flip --depth 5 --kind nngp --dtype float32

Kernel names: ``V`` (vanilla), ``GAP``, ``LAP<c>``, ``Myrtle<5|7|10>``, each optionally ``+flip``
(flip-symmetrised kernel) and ``+circ`` (circular padding). Training images are class-balanced
(``--n-train`` / 10 per class, the subset's first draw with ``--seed``), test images the first
``--n-test`` of the 1,000. ``--n-train-for NAME=N`` gives an expensive kernel fewer training images
(the table says so). Writes the rows as JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

from cntk_core import Architecture, myrtle
from cntk_core.data import balanced_subset, load_dataset, preprocess
from cntk_core.regression import compare_kernels, paired_difference, zoo_table


def architecture(name: str, depth: int) -> Architecture:
    """``V``, ``GAP``, ``LAP<c>``, ``Myrtle<d>`` with optional ``+flip`` / ``+circ``."""
    base, *mods = name.split("+")
    opts = {"flip": "flip" in mods, "padding": "circular" if "circ" in mods else "zero"}
    if base == "V":
        return Architecture(depth, "vanilla", **opts)
    if base == "GAP":
        return Architecture(depth, "gap", **opts)
    if m := re.fullmatch(r"LAP(\d+)", base):
        return Architecture(depth, "lap", lap_c=int(m.group(1)), **opts)
    if m := re.fullmatch(r"Myrtle(\d+)", base):
        return myrtle(int(m.group(1)), **opts)
    raise SystemExit(f"unknown kernel {name!r}: V, GAP, LAP<c>, Myrtle<d>, with +flip / +circ")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernels", default="V,LAP1,LAP2,V+flip,LAP1+flip")
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--kind", default="nngp", choices=("ntk", "nngp"))
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--n-train-for", action="append", default=[], metavar="NAME=N")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--zca", type=float, default=None, help="ZCA regulariser (fitted on the training images)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    fewer = dict(item.split("=") for item in args.n_train_for)
    ds = load_dataset("cifar10-subset")
    x_raw, y_train = balanced_subset(ds.x_train, ds.y_train, args.n_train // 10, seed=args.seed, n_classes=10)
    x_test_raw, y_test = ds.x_test[: args.n_test], ds.y_test[: args.n_test]
    prep = preprocess(x_raw, x_test_raw, scale=ds.pixel_scale, zca=args.zca)
    print(f"# {platform.processor() or platform.machine()}, {time.strftime('%Y-%m-%d %H:%M')}, {' '.join(sys.argv)}")
    rows = []

    def report(r):
        acc, se = 100 * r.accuracy, 100 * r.std_error
        print(f"{r.name}: {acc:.1f} ± {se:.1f} % in {r.seconds:.0f} s (n_train {r.n_train})", flush=True)

    for name in args.kernels.split(","):
        arch = architecture(name, args.depth)
        n = int(fewer.get(name, args.n_train))
        idx = np.concatenate([np.flatnonzero(np.asarray(y_train) == c)[: n // 10] for c in range(10)])
        rows += compare_kernels(
            prep.x_train[idx], np.asarray(y_train)[idx], prep.x_test, y_test, [(arch, args.kind)],
            dtype=args.dtype, progress=False, on_row=report,
        )  # fmt: skip
    print(zoo_table(rows))
    vanilla = {r.n_train: r for r in rows if r.architecture["readout"] == "vanilla" and not r.architecture.get("flip")}
    for r in rows:
        if r.n_train in vanilla and r is not vanilla[r.n_train]:
            diff, se = paired_difference(r, vanilla[r.n_train], y_test)
            print(f"{r.name}: {100 * diff:+.1f} ± {100 * se:.1f} points x V (same n_train; paired over test images)")
    if args.json:
        args.json.write_text(json.dumps([r.to_dict() for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
