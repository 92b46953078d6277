"""Small-data learning curves on the exact CIFAR-10 subset (issue 26; Arora et al. 2020's setting):
class-balanced training subsets of 10, 20, 40, ... images, many random draws each, test accuracy
(mean ± std over draws) of CNTK-GAP (the paper's fix), CNTK-V and CNN-GP-GAP, the same subsets for
every kernel, each Gram entry computed once (:func:`cntk_core.regression.learning_curves`).

    CNTK_CIFAR10_SUBSET=/path/to/subset .venv/bin/python benchmarks/small_data_curves.py \
        --sizes 10,20,40,80,160,320 --pool-per-class 100 --draws 10 --n-test 500 --downsample 2 --depth 4

Prints one line per kernel and size, and the seconds of each kernel's two Grams as a whole.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cntk_core import Architecture
from cntk_core.data import balanced_subset, load_dataset, preprocess
from cntk_core.recurrence import block_mean
from cntk_core.regression import learning_curves


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10,20,40,80,160,320")
    ap.add_argument("--pool-per-class", type=int, default=100, help="the pool the subsets are drawn from")
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--downsample", type=int, default=2, help="block-average the 32x32 images by this factor")
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args(argv)
    ds = load_dataset("cifar10-subset")
    x_raw, y_pool = balanced_subset(ds.x_train, ds.y_train, args.pool_per_class, seed=0, n_classes=10)
    prep = preprocess(x_raw, ds.x_test[: args.n_test], scale=ds.pixel_scale)
    x_pool, x_test = (
        block_mean(x, args.downsample, (1, 2)) if args.downsample > 1 else x for x in (prep.x_train, prep.x_test)
    )
    kernels = [
        ("CNTK-GAP", Architecture(args.depth, "gap", True, True), "ntk"),
        ("CNTK-V", Architecture(args.depth, "vanilla"), "ntk"),
        ("CNN-GP-GAP", Architecture(args.depth, "gap"), "nngp"),
    ]
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, images {x_pool.shape[1]}x{x_pool.shape[2]}, depth {args.depth}, "
          f"{args.draws} draws, {len(x_test)} test images, {args.dtype}")  # fmt: skip
    for name, arch, kind in kernels:
        t = time.perf_counter()
        y_test = ds.y_test[: args.n_test]
        curve = learning_curves(x_pool, np.asarray(y_pool), x_test, y_test, [(name, arch, kind)], sizes,
                                args.draws, dtype=args.dtype, progress=False)[name]  # fmt: skip
        seconds = time.perf_counter() - t
        for size, mean, std in zip(sizes, curve.mean, curve.std, strict=True):
            print(f"{name} ({arch.title(kind)}): n={size}: {100 * mean:.1f} ± {100 * std:.1f} %")
        print(f"{name}: {seconds:.0f} s for its two Grams and {len(sizes) * args.draws} fits")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
