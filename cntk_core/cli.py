"""The ``cntk-lab`` command line: ``gram``, ``regress`` and ``info``.

Examples::

    cntk-lab info
    cntk-lab regress --dataset digits --n-train 200 --n-test 100 --depth 3 --readout gap
    cntk-lab regress --dataset cifar10-subset --n-train 2000 --depth 6 --readout vanilla --ridge cv --json
    cntk-lab gram --dataset digits --n 100 --depth 3 --out K.npy
    cntk-lab gram --dataset cifar10-subset --n 2000 --depth 11 --fix --store gram.zarr --scheduler local --out K.npy

``regress`` prints a human report and ends with one line ``RESULT {json}`` on stdout (``--json``: only
the JSON object). Exit codes: 0 success, 2 bad arguments or unusable input, 1 other failures,
130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import time
from pathlib import Path

RESULT_PREFIX = "RESULT "
DATASETS = ("digits", "cifar10-subset", "cifar10")


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
    g.add_argument("--readout", choices=("gap", "vanilla"), default="gap", help="GAP (CNTK-GAP) or vanilla (CNTK-V)")
    g.add_argument("--fix", action="store_true", help="the official --fix: first and last layer not trained")
    g.add_argument("--kind", choices=("ntk", "nngp"), default="ntk", help="CNTK (ntk) or CNN-GP (nngp)")
    g.add_argument("--dtype", choices=("float64", "float32"), default="float64", help="arithmetic precision")
    g.add_argument("--backend", choices=("auto", "numba", "numpy", "cupy"), default="auto")
    g.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar (default: long runs)"
    )


def _data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASETS, default="digits", help="data set (default digits: offline)")
    g.add_argument("--data-path", default=None, help="folder/tarball for cifar10-subset or cifar10")
    g.add_argument(
        "--stats",
        choices=("all", "used"),
        default="all",
        help="per-channel standardisation statistics from all training images (default) or the used ones",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cntk-lab", description="Exact Convolutional Neural Tangent Kernels (Arora et al. 2019)."
    )
    sub = parser.add_subparsers(dest="command", metavar="{gram,regress,info}")
    sub.required = True

    g = sub.add_parser("gram", help="compute a Gram matrix into a .npy file (or a resumable store)")
    _data_args(g)
    g.add_argument("--n", type=_positive_int, required=True, help="first N images of the split")
    g.add_argument("--split", choices=("train", "test"), default="train")
    g.add_argument(
        "--cross",
        type=_positive_int,
        default=None,
        metavar="M",
        help="cross kernel K(split[:N], train[:M]) instead of the symmetric Gram of split[:N]",
    )
    _kernel_args(g)
    g.add_argument("--out", default=None, help="output .npy path (written atomically)")
    g.add_argument("--store", default=None, help="zarr store directory: compute via cntk_core.distributed")
    g.add_argument(
        "--scheduler",
        default=None,
        help="with --store: 'local' (a LocalCluster, default), 'synchronous', 'cuda' or a Dask scheduler address",
    )
    g.add_argument("--n-workers", type=_positive_int, default=None, help="with --store: workers of a local cluster")
    g.add_argument(
        "--tile-size",
        type=_positive_int,
        default=None,
        help="with --store: rows/columns per tile (default: the store's, 256 for a new one)",
    )

    r = sub.add_parser("regress", help="end-to-end kernel regression experiment")
    _data_args(r)
    r.add_argument("--n-train", type=_positive_int, default=None, help="training images (default all)")
    r.add_argument("--n-test", type=_positive_int, default=None, help="test images (default all)")
    r.add_argument("--per-class", action="store_true", help="--n-train/--n-test count images per class (balanced)")
    r.add_argument("--subset", choices=("first", "random", "balanced"), default="first", help="how N images are drawn")
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


def _npy_path(text: str, store: str | None = None) -> Path:
    """The output path with a ``.npy`` suffix (as ``np.save`` would add); its folder must exist, and
    it must not be the Gram store ``store`` (``--store``) or lie inside it."""
    given = Path(text).expanduser()
    path = given if given.suffix == ".npy" else given.with_name(given.name + ".npy")
    if store is not None:
        root = Path(store).expanduser().absolute()
        if root in (given.absolute(), path.absolute()) or root in path.absolute().parents:
            raise _UsageError(f"--out {text!r} must not be the --store {store!r} or inside it")
    for folder in (given, path):
        if folder.is_dir():
            raise FileNotFoundError(f"--out {text!r} is a folder; give a file name such as {str(folder / 'K.npy')!r}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder {str(path.parent)!r} does not exist")
    return path


def _atomic_save(path: Path, array) -> Path:
    """Write ``array`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    import numpy as np

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            np.save(f, array)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def cmd_gram(args) -> int:
    from .regression import standardize

    if args.out is None and args.store is None:
        raise _UsageError("gram needs --out PATH.npy and/or --store PATH")
    if args.store is None and (args.scheduler is not None or args.n_workers is not None or args.tile_size is not None):
        raise _UsageError("--scheduler, --n-workers and --tile-size need --store")
    out_path = None if args.out is None else _npy_path(args.out, args.store)  # fail before hours of computing
    with _cli_names(args):
        ds = _load(args)
    x_split = ds.x_train if args.split == "train" else ds.x_test
    if args.n > len(x_split):
        raise _UsageError(f"--n {args.n} exceeds the {len(x_split)} {args.split} images of {args.dataset}")
    if args.cross is not None and args.cross > len(ds.x_train):
        raise _UsageError(f"--cross {args.cross} exceeds the {len(ds.x_train)} training images of {args.dataset}")
    raw = [x_split[: args.n]] + ([] if args.cross is None else [ds.x_train[: args.cross]])
    # "used" statistics always come from training images: the split itself for train, else train[:M or N]
    if args.stats == "used":
        fit = ds.x_train[: args.cross or args.n]
        x = standardize(ds, fit, *raw, stats="used")[1:]
    else:
        x = standardize(ds, *raw, stats="all")
    x1, x2 = x[0], (x[1] if len(x) > 1 else None)
    kw = dict(depth=args.depth, readout=args.readout, fix=args.fix, kind=args.kind, dtype=args.dtype)
    t0 = time.perf_counter()
    if args.store is not None:
        try:
            from .distributed import gram_to_store
        except ImportError as exc:
            msg = f"--store needs the distributed extra (pip install 'cntk-lab[distributed]'): {exc}"
            raise RuntimeError(msg) from exc
        scheduler = None if args.scheduler in (None, "local") else args.scheduler
        opts = dict(tile_size=args.tile_size, scheduler=scheduler, n_workers=args.n_workers, backend=_backend(args))
        with _cli_names(args):
            store = gram_to_store(args.store, x1, x2, **kw, **opts, progress=_progress(args))
        K = store.load()
    else:
        from .gram import kernel_matrix

        K = kernel_matrix(x1, x2, **kw, backend=_backend(args), progress=_progress(args))
    seconds = time.perf_counter() - t0
    out = None if out_path is None else str(_atomic_save(out_path, K))
    info = {"shape": list(K.shape), "seconds": round(seconds, 3), "out": out, "store": args.store}
    print(f"Gram {K.shape[0]} x {K.shape[1]} in {seconds:.2f} s -> {out or args.store}", file=sys.stderr)
    print(RESULT_PREFIX + json.dumps(info))
    return 0


#: run_experiment's parameter names as the command line spells them, for its error messages
_CLI_SPELLING = {
    r"\bper_class=True\b": "--per-class",
    r"\bridge=1e-6 \* mean\(diag\(K\)\)": "--ridge 1e-6",  # the command line's ridge is relative
    r"\bridge='(\w+)'": r"--ridge \1",
    r"\bsubset='(\w+)'": r"--subset \1",
    r"\bkind='(\w+)'": r"--kind \1",
    r"\bfix=False\b": "no --fix",
    r"\bfix=True\b": "--fix",
    r"\bn_train\b": "--n-train",
    r"\bn_test\b": "--n-test",
    r"\bn_folds\b": "--folds",
    r"\bscheduler must be 'synchronous', 'cuda'": "--scheduler must be 'local', 'synchronous', 'cuda'",
    r"\(scheduler=None or 'cuda'\)": "(--scheduler local or cuda)",
    r"\bn_workers\b": "--n-workers",
    r"\btile_size\b": "--tile-size",
    r"\bseed must be\b": "--seed must be",
    r"\bor pass path=": "or pass --data-path",
}


@contextlib.contextmanager
def _cli_names(args):
    """Re-raise ``ValueError`` / ``TypeError`` / ``FileNotFoundError`` as a usage error naming the
    command-line options; the paths the user gave (``--store``, ``--out``, ``--data-path``) are
    left as they are, whatever they contain."""
    try:
        yield
    except (ValueError, TypeError, FileNotFoundError) as exc:
        # split around the user's paths (longest first, so that a path's own prefix cannot split it):
        # the odd parts are those paths, kept as they are; only the text between them is rewritten
        paths = _user_paths(args)
        parts = re.split("(" + "|".join(map(re.escape, paths)) + ")", str(exc)) if paths else [str(exc)]
        for k in range(0, len(parts), 2):
            for pattern, option in _CLI_SPELLING.items():
                parts[k] = re.sub(pattern, option, parts[k])
        raise _UsageError("".join(parts)) from exc


def _user_paths(args) -> list[str]:
    """The path options as given and as the library may print them (expanded, absolute), longest first."""
    paths = set()
    for name in ("store", "out", "data_path"):
        text = getattr(args, name, None)
        if text:
            path = Path(text).expanduser()
            paths |= {text, str(path), str(path.absolute())}
    return sorted(paths, key=len, reverse=True)


def cmd_regress(args) -> int:
    from .regression import run_experiment

    if args.ridge == "cv" and args.folds < 2:
        raise _UsageError("--folds must be >= 2 for --ridge cv")
    same_names = "n_train n_test per_class subset depth readout fix kind ridge dtype seed stats".split()
    options = {name: getattr(args, name) for name in same_names}  # options named as run_experiment's arguments
    with _cli_names(args):
        ds = _load(args)
        res = run_experiment(ds, **options, n_folds=args.folds, backend=_backend(args), progress=_progress(args))
    payload = json.dumps(res.to_dict())
    if args.json:
        print(payload)
    else:
        print(res.report())
        print(RESULT_PREFIX + payload)
    return 0


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
        from .data import default_subset_dir

        subset_dir = str(default_subset_dir())
        subset_ok = (Path(subset_dir) / "cifar10_exact_train4000.npz").is_file()
    except Exception:
        subset_dir, subset_ok = None, False
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
        "cifar10_subset_dir": subset_dir,
        "cifar10_subset_found": subset_ok,
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


COMMANDS = {"gram": cmd_gram, "regress": cmd_regress, "info": cmd_info}


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
