"""The paper's Table 2 at class scale (issue 26): exact CNTK-V / CNTK-GAP against the random features
(empirical NTK) of one randomly initialised width-128 CNN, on the first two CIFAR-10 classes of the
exact subset (:func:`cntk_core.finite.table2_comparison`: same architecture, images and classifier).

    CNTK_CIFAR10_SUBSET=/path/to/subset .venv/bin/python benchmarks/table2_class_scale.py \
        --n-train 200 --depths 3,6 --seeds 0,1 --downsample 1

Training images: the first ``--n-train / 2`` of each of classes 0 and 1; test: every image of those
classes among the subset's 1,000 test images. Prints the table and its total seconds.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cntk_core.data import load_dataset, preprocess
from cntk_core.finite import table2_comparison
from cntk_core.recurrence import block_mean


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-train", type=int, default=200)
    ap.add_argument("--depths", default="3,6")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--downsample", type=int, default=1)
    args = ap.parse_args(argv)
    ds = load_dataset("cifar10-subset")
    y_tr, y_te = np.asarray(ds.y_train), np.asarray(ds.y_test)
    tr = np.concatenate([np.flatnonzero(y_tr == c)[: args.n_train // 2] for c in (0, 1)])
    te = np.flatnonzero(y_te < 2)
    prep = preprocess(ds.x_train[tr], ds.x_test[te], scale=ds.pixel_scale)
    x_tr, x_te = prep.x_train, prep.x_test
    if args.downsample > 1:
        x_tr, x_te = (block_mean(x, args.downsample, (1, 2)) for x in (x_tr, x_te))
    start = time.perf_counter()
    result = table2_comparison(
        x_tr, y_tr[tr], x_te, y_te[te], [int(d) for d in args.depths.split(",")],
        width=args.width, seeds=[int(s) for s in args.seeds.split(",")],
    )  # fmt: skip
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}: {len(tr)} train / {len(te)} test images of classes 0, 1, "
          f"{x_tr.shape[1]}x{x_tr.shape[2]}, width {args.width}")  # fmt: skip
    print(result.table())
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
