"""``cntk-lab regress``: one :func:`~cntk_core.regression.run_experiment` from the command line (the
``regress`` command of :mod:`cntk_core.cli`), with a human report and a ``RESULT {json}`` line.

    cntk-lab regress --dataset digits --n-train 200 --n-test 100 --depth 3 --readout gap
    cntk-lab regress --dataset digits --n-train 200 --depth 5 --readout lap --lap-c 1 --flip --zca 0.1
    cntk-lab regress --dataset cifar10-subset --n-train 500 --myrtle 5 --kind nngp --random-patches 64 --patch-pool 2

The kernel options are shared with ``cntk-lab gram`` (:func:`cntk_core.cli.architecture`); the
preprocessing options (``--zca``, ``--random-patches`` and its ``--patch-*`` settings,
``--flip-augment``) are fitted on the training images in use only.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable

from .data import SUBSETS


def _non_negative_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not (0 <= v < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return v


def _ridge(text: str):
    if text in ("none", "cv"):
        return text
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"ridge must be 'none', 'cv' or a number >= 0 (relative to mean(diag(K_train))), got {text!r}"
        ) from None
    if not (v >= 0 and v != float("inf")):
        raise argparse.ArgumentTypeError(f"ridge must be a finite number >= 0, got {text!r}")
    return v


def _preprocessing_args(p: argparse.ArgumentParser, positive_int: Callable[[str], int]) -> None:
    g = p.add_argument_group("preprocessing (after the per-channel standardisation; fitted on training images only)")
    g.add_argument(
        "--zca",
        type=_non_negative_float,
        default=None,
        metavar="EPS",
        help="ZCA whitening with this regulariser (relative to the mean eigenvalue; 0.1 is a good start)",
    )
    g.add_argument(
        "--random-patches",
        type=positive_int,
        default=None,
        metavar="N",
        help="Coates et al.'s first layer: N random whitened training patches, 2N channels (Li et al. 2019)",
    )
    g.add_argument(
        "--patch-size", type=positive_int, default=None, metavar="S", help="with --random-patches: side (default 5)"
    )
    g.add_argument(
        "--patch-bias",
        type=_non_negative_float,
        default=None,
        metavar="B",
        help="with --random-patches: the soft threshold (default 1)",
    )
    g.add_argument(
        "--patch-pool",
        type=positive_int,
        default=None,
        metavar="P",
        help="with --random-patches: average pooling of this side after the threshold (default 1: none)",
    )
    g.add_argument(
        "--patch-zca",
        type=_non_negative_float,
        default=None,
        metavar="EPS",
        help="with --random-patches: the patches' ZCA regulariser (> 0, default 0.01)",
    )
    g.add_argument(
        "--flip-augment",
        action="store_true",
        help="append the mirror image of every training image (twice the training set)",
    )


#: the patch options and run_experiment's defaults for them
_PATCH_OPTIONS = {"patch_size": 5, "patch_bias": 1.0, "patch_pool": 1, "patch_zca": 0.01}


def add_parser(
    sub,
    positive_int: Callable[[str], int],
    data_args: Callable[[argparse.ArgumentParser], None],
    kernel_args: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Add ``regress`` to the ``cntk-lab`` sub-parsers ``sub`` (with the shared data and kernel options)."""
    r = sub.add_parser("regress", help="end-to-end kernel regression experiment")
    data_args(r)
    r.add_argument("--n-train", type=positive_int, default=None, help="training images (default all)")
    r.add_argument("--n-test", type=positive_int, default=None, help="test images (default all)")
    r.add_argument("--per-class", action="store_true", help="--n-train/--n-test count images per class (balanced)")
    r.add_argument(
        "--subset",
        choices=SUBSETS,
        default="balanced",
        help="how N images are drawn: balanced (default: N / classes of each class, seeded; N a multiple of the "
        "number of classes), first (the first N, the paper's '-2K' setting) or random",
    )
    r.add_argument("--seed", type=int, default=0, help="seed of the subsets and of --random-patches (default 0)")
    _preprocessing_args(r, positive_int)
    kernel_args(r)
    r.add_argument(
        "--ridge",
        type=_ridge,
        default="none",
        help="'none' (the paper), 'cv' (k-fold CV on the training kernel) or a float x mean(diag(K_train))",
    )
    r.add_argument("--folds", type=positive_int, default=5, help="folds for --ridge cv (>= 2)")
    r.add_argument("--json", action="store_true", help="print only the JSON result object")
    r.add_argument("--verbose", action="store_true", help="the JSON result holds the whole ridge grid (--ridge cv)")


def cmd_regress(args) -> int:
    """Run ``cntk-lab regress``; returns the exit code (errors raise, :func:`cntk_core.cli.main` reports)."""
    from .cli import OPTION_NAMES, RESULT_PREFIX, _backend, _cli_names, _load, _progress, _UsageError, architecture
    from .regression import run_experiment

    if args.ridge == "cv" and args.folds < 2:
        raise _UsageError("--folds must be >= 2 for --ridge cv")
    patch_given = [name for name in _PATCH_OPTIONS if getattr(args, name) is not None]
    if patch_given and args.random_patches is None:
        raise _UsageError(f"{', '.join(OPTION_NAMES[n] for n in patch_given)} need --random-patches N")
    same_names = "n_train n_test per_class subset kind ridge dtype seed stats zca flip_augment random_patches".split()
    options = {name: getattr(args, name) for name in same_names}  # options named as run_experiment's arguments
    options |= {name: default if getattr(args, name) is None else getattr(args, name) for name, default in
                _PATCH_OPTIONS.items()}  # fmt: skip
    with _cli_names(args):
        arch = architecture(args)  # before the data: a bad kernel option fails at once
        kernel = {"depth": arch.depth, "readout": arch.readout, "fix": args.fix, "lap_c": arch.lap_c,
                  "padding": arch.padding, "pools": arch.pools, "flip": arch.flip}  # fmt: skip
        ds = _load(args)
        res = run_experiment(
            ds, **options, **kernel, n_folds=args.folds, backend=_backend(args), progress=_progress(args)
        )
    payload = json.dumps(res.to_dict()) if args.verbose else json.dumps(_short_record(res), separators=(",", ":"))
    if args.json:
        print(payload)
    else:
        print(res.report())
        print(RESULT_PREFIX + payload)
    return 0


def _short_record(res) -> dict:
    """``res.to_dict()`` for one line: the ridge choice summarised (not its grid), rounded fractions and timings,
    the kernel by its title alone, the preprocessing by the steps it took."""
    d = res.to_dict()
    d["stderr"] = round(d["stderr"], 4)
    d["per_class_accuracy"] = [None if a is None else round(a, 4) for a in d["per_class_accuracy"]]
    d["timings"] = {k: round(v, 3) for k, v in d["timings"].items()}
    del d["architecture"]  # the kernel's title names every field that is set
    prep = d["preprocessing"]  # only the steps taken, and the counts and shapes that differ from the record's
    same = {"n_train_images": d["n_train"], "input_shape": d["image_shape"]}
    d["preprocessing"] = {k: v for k, v in prep.items() if v not in (None, False) and same.get(k, object()) != v}
    sel = res.ridge_selection
    if sel is not None:
        grid = sel.relative_grid
        d["ridge_selection"] = {
            "method": sel.method,
            "n_folds": sel.n_folds,
            "relative_ridge": sel.relative_ridge,
            "cv_accuracy": None if math.isnan(sel.accuracy[sel.best_index]) else float(sel.accuracy[sel.best_index]),
            "grid": {"n": len(grid), "min": float(grid.min()), "max": float(grid.max())},
        }
    return d
