"""The ``cntk-lab`` command line: ``gram``, ``regress``, ``data`` and ``info``.

Examples::

    cntk-lab info
    cntk-lab data download          # CIFAR-10 into the per-user cache, once (see cntk_core.cli_data)
    cntk-lab data subset            # the small exact-subset files for offline machines
    cntk-lab regress --dataset digits --n-train 200 --n-test 100 --depth 3 --readout gap
    cntk-lab regress --dataset cifar10-subset --n-train 2000 --depth 6 --readout vanilla --ridge cv --json
    cntk-lab gram --dataset digits --n 100 --depth 3 --out K.npy       # see cntk_core.cli_gram
    cntk-lab gram --dataset cifar10-subset --n 2000 --depth 11 --fix --store gram.zarr --scheduler local --out K.npy

``regress`` prints a human report and ends with one short line ``RESULT {json}`` on stdout (``--json``:
only the JSON object; ``--verbose``: with the whole ridge grid). Exit codes: 0 success, 2 bad arguments
or unusable input (also data that is missing and cannot be downloaded), 1 other failures, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
from pathlib import Path

from . import cli_data, cli_gram
from .architecture import READOUTS
from .backend import BACKENDS
from .data import DATASETS, STATS, SUBSETS
from .validation import DTYPES, KINDS

RESULT_PREFIX = "RESULT "


class _UsageError(ValueError):
    """A bad combination of arguments found after parsing."""


# -- argument types -----------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _depth(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"depth must be an integer >= 2, got {text!r}") from None
    if v < 2:
        raise argparse.ArgumentTypeError(f"depth must be >= 2 (the paper's d = conv layers + 1), got {v}")
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


def _kernel_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("kernel")
    g.add_argument("--depth", type=_depth, default=3, help="the paper's depth d = conv layers + 1 (default 3)")
    g.add_argument("--readout", choices=READOUTS, default="gap", help="GAP (CNTK-GAP) or vanilla (CNTK-V)")
    g.add_argument("--fix", action="store_true", help="the official --fix: first and last layer not trained")
    g.add_argument("--kind", choices=KINDS, default="ntk", help="CNTK (ntk) or CNN-GP (nngp)")
    g.add_argument("--dtype", choices=DTYPES[::-1], default="float64", help="arithmetic precision")
    g.add_argument("--backend", choices=("auto", *BACKENDS), default="auto")
    g.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar (default: long runs)"
    )


def _data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset",
        choices=DATASETS,
        default="digits",
        help="data set (default digits: bundled, offline). cifar10: the official tarball, downloaded once into "
        "the per-user cache (or $CNTK_CIFAR10); cifar10-subset: the files of `cntk-lab data subset`",
    )
    g.add_argument("--data-path", default=None, help="folder/tarball for cifar10-subset or cifar10")
    g.add_argument(
        "--stats",
        choices=STATS,
        default="all",
        help="per-channel standardisation statistics from all training images (default) or the used ones",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cntk-lab", description="Exact Convolutional Neural Tangent Kernels (Arora et al. 2019)."
    )
    sub = parser.add_subparsers(dest="command", metavar="{gram,regress,data,info}")
    sub.required = True

    cli_gram.add_parser(sub, _positive_int, _data_args, _kernel_args)

    r = sub.add_parser("regress", help="end-to-end kernel regression experiment")
    _data_args(r)
    r.add_argument("--n-train", type=_positive_int, default=None, help="training images (default all)")
    r.add_argument("--n-test", type=_positive_int, default=None, help="test images (default all)")
    r.add_argument("--per-class", action="store_true", help="--n-train/--n-test count images per class (balanced)")
    r.add_argument(
        "--subset",
        choices=SUBSETS,
        default="balanced",
        help="how N images are drawn: balanced (default: N / classes of each class, seeded; N a multiple of the "
        "number of classes), first (the first N, the paper's '-2K' setting) or random",
    )
    r.add_argument("--seed", type=int, default=0)
    _kernel_args(r)
    r.add_argument(
        "--ridge",
        type=_ridge,
        default="none",
        help="'none' (the paper), 'cv' (k-fold CV on the training kernel) or a float x mean(diag(K_train))",
    )
    r.add_argument("--folds", type=_positive_int, default=5, help="folds for --ridge cv (>= 2)")
    r.add_argument("--json", action="store_true", help="print only the JSON result object")
    r.add_argument("--verbose", action="store_true", help="the JSON result holds the whole ridge grid (--ridge cv)")

    cli_data.add_parser(sub, _positive_int)

    i = sub.add_parser("info", help="backend detection and versions")
    i.add_argument("--json", action="store_true", help="print JSON")
    return parser


# -- commands -----------------------------------------------------------------------------------


def _load(args):
    from .data import load_dataset

    kw = {} if args.data_path is None else {"path": args.data_path}
    if args.dataset == "digits" and kw:
        raise _UsageError("--data-path is not used with --dataset digits")
    return load_dataset(args.dataset, **kw)


def _backend(args):
    return None if args.backend == "auto" else args.backend


def _progress(args) -> bool | None:
    if args.progress is None:
        return None if sys.stderr.isatty() else False
    return args.progress


#: run_experiment's parameter names as the command line spells them, for its error messages
#: the library's parameter names (``ParameterError.param``) as this command line spells them
OPTION_NAMES = {
    "depth": "--depth",
    "readout": "--readout",
    "fix": "--fix",
    "fix_first": "--fix",
    "fix_last": "--fix",
    "kind": "--kind",
    "dtype": "--dtype",
    "backend": "--backend",
    "progress": "--progress",
    "dataset": "--dataset",
    "path": "--data-path",
    "stats": "--stats",
    "n_train": "--n-train",
    "n_test": "--n-test",
    "per_class": "--per-class",
    "subset": "--subset",
    "seed": "--seed",
    "ridge": "--ridge",
    "n_folds": "--folds",
    "tile_size": "--tile-size",
    "n_workers": "--n-workers",
    "scheduler": "--scheduler",
    "store": "--store",
    "out": "--out",
}


@contextlib.contextmanager
def _cli_names(args):
    """Re-raise ``ValueError`` / ``TypeError`` / ``FileNotFoundError`` as a usage error. A
    :class:`~cntk_core.validation.ParameterError` names its parameter: the message is prefixed with
    the option that sets it (``--n-train: n_train must be ...``); the text itself is not rewritten."""
    try:
        yield
    except (ValueError, TypeError, FileNotFoundError) as exc:
        option = OPTION_NAMES.get(getattr(exc, "param", None))
        text = f"{option}: {exc}" if option else str(exc)
        raise _UsageError(text + _legend(str(exc), _user_paths(args))) from exc


def _user_paths(args) -> list[str]:
    """The path options as given and as the library may print them (expanded, absolute), longest first."""
    paths = set()
    for name in ("store", "out", "data_path"):
        text = getattr(args, name, None)
        if text:
            path = Path(text).expanduser()
            paths |= {text, str(path), str(path.absolute())}
    return sorted(paths, key=len, reverse=True)


def _legend(message: str, paths: list[str] = ()) -> str:
    """`` [on the command line: n_train = --n-train, ...]`` for the Python spellings of options that
    ``message`` uses (``name=`` anywhere, or a ``snake_case`` name as a word), outside the user's
    ``paths``; ``""`` if none. The message itself stays as the library wrote it."""
    for path in paths:
        message = message.replace(path, " ")
    used = [
        name
        for name in OPTION_NAMES
        if re.search(rf"(?<![\w-]){name}=", message) or ("_" in name and re.search(rf"(?<![\w-]){name}\b", message))
    ]
    pairs = sorted({f"{name} = {OPTION_NAMES[name]}" for name in used if name not in ("fix_first", "fix_last")})
    return f" [on the command line: {', '.join(pairs)}]" if pairs else ""


def cmd_regress(args) -> int:
    from .regression import run_experiment

    if args.ridge == "cv" and args.folds < 2:
        raise _UsageError("--folds must be >= 2 for --ridge cv")
    same_names = "n_train n_test per_class subset depth readout fix kind ridge dtype seed stats".split()
    options = {name: getattr(args, name) for name in same_names}  # options named as run_experiment's arguments
    with _cli_names(args):
        ds = _load(args)
        res = run_experiment(ds, **options, n_folds=args.folds, backend=_backend(args), progress=_progress(args))
    payload = json.dumps(res.to_dict()) if args.verbose else json.dumps(_short_record(res), separators=(",", ":"))
    if args.json:
        print(payload)
    else:
        print(res.report())
        print(RESULT_PREFIX + payload)
    return 0


def _short_record(res) -> dict:
    """``res.to_dict()`` for one line: the ridge choice summarised (not its grid), rounded fractions and timings."""
    d = res.to_dict()
    d["stderr"] = round(d["stderr"], 4)
    d["per_class_accuracy"] = [None if a is None else round(a, 4) for a in d["per_class_accuracy"]]
    d["timings"] = {k: round(v, 3) for k, v in d["timings"].items()}
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


def info_dict() -> dict:
    """Versions, backend detection and data availability (what ``cntk-lab info`` prints)."""
    import platform
    from importlib import metadata

    from . import __version__
    from .backend import gpu_status, numba_available, resolve_backend

    versions = {}
    for pkg in ("numpy", "scipy", "numba", "scikit-learn", "tqdm", "cupy-cuda12x", "cupy-cuda13x", "dask", "zarr"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    gpu_ok, gpu_reason = gpu_status()
    try:
        auto = resolve_backend(None)
    except Exception as exc:  # e.g. a bad CNTK_BACKEND
        auto = f"error: {exc}"
    try:
        from .data import data_status

        data = data_status()
    except Exception as exc:  # e.g. an unreadable cache folder: info still answers
        data = {"error": str(exc)}
    threads = None
    if numba_available():
        import numba

        threads = numba.config.NUMBA_NUM_THREADS
    return {
        "cntk_lab": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "numba_threads": threads,
        "backend_auto": auto,
        "CNTK_BACKEND": os.environ.get("CNTK_BACKEND"),
        "gpu": gpu_ok,
        "gpu_reason": gpu_reason,
        "data_cache_dir": data.get("cache_dir"),
        "cifar10_source": data.get("cifar10_source"),
        "cifar10_subset_dir": data.get("cifar10_subset_dir"),
        "cifar10_subset_found": data.get("cifar10_subset_found", False),
        "datasets_available": data.get("available", ["digits"]),
        "versions": versions,
    }


def cmd_info(args) -> int:
    d = info_dict()
    if args.json:
        print(json.dumps(d))
        return 0
    width = max(len(k) for k in d)
    for k, v in d.items():
        if k == "versions":
            continue
        print(f"{k:<{width}}  {v}")
    print("versions:")
    for k, v in d["versions"].items():
        print(f"  {k:<14} {v or '-'}")
    return 0


COMMANDS = {"gram": cli_gram.cmd_gram, "regress": cmd_regress, "data": cli_data.cmd_data, "info": cmd_info}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cntk-lab`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2, message already printed)
        return int(exc.code or 0)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt as exc:
        import logging

        # zarr's IO loop may still hold tasks: their "Task was destroyed but it is pending!" lines
        # at exit would bury the note on how to resume
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        notes = "".join(f"; {note}" for note in getattr(exc, "__notes__", ()))
        print(f"cntk-lab: interrupted{notes}", file=sys.stderr, flush=True)
        return 130
    except (_UsageError, ValueError, TypeError, FileNotFoundError) as exc:
        print(f"cntk-lab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from .store import StoreSpaceError, StoreWriteError

        if isinstance(exc, StoreWriteError | StoreSpaceError):  # the --store path cannot take the Gram
            print(f"cntk-lab {args.command}: error: --store: {exc}", file=sys.stderr)
            return 2
        print(f"cntk-lab {args.command}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
