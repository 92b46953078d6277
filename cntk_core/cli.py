"""The ``cntk-lab`` command line: ``gram``, ``regress``, ``data`` and ``info``.

Examples::

    cntk-lab info
    cntk-lab data download          # CIFAR-10 into the per-user cache, once (see cntk_core.cli_data)
    cntk-lab data subset            # the small exact-subset files for offline machines
    cntk-lab regress --dataset digits --n-train 200 --n-test 100 --depth 3 --readout gap   # cntk_core.cli_regress
    cntk-lab regress --dataset cifar10-subset --n-train 2000 --depth 6 --readout vanilla --ridge cv --json
    cntk-lab regress --dataset digits --n-train 200 --depth 5 --readout lap --lap-c 1 --flip --zca 0.1
    cntk-lab regress --dataset cifar10-subset --n-train 500 --myrtle 5 --kind nngp --random-patches 64 --patch-pool 2
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
import os
import re
import sys
from pathlib import Path

from . import cli_data, cli_gram, cli_regress
from .architecture import MYRTLE_POOLS, PADDINGS, READOUTS, Architecture
from .backend import BACKENDS
from .data import DATASETS, STATS
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


def _non_negative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
    return v


def _pools(text: str) -> tuple[int, ...]:
    """``--pools 2,3`` -> ``(2, 3)`` (``""`` -> no pooling); order and range are the Architecture's checks."""
    try:
        return tuple(int(part) for part in text.split(",")) if text.strip() else ()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected conv counts separated by commas, such as 2,3, got {text!r}"
        ) from None


def _kernel_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("kernel")
    g.add_argument(
        "--depth", type=_depth, default=None, help="the paper's depth d = conv layers + 1 (default 3; or --myrtle)"
    )
    g.add_argument(
        "--readout",
        choices=READOUTS,
        default="gap",
        help="gap (CNTK-GAP), vanilla (CNTK-V) or lap (local average pooling of Li et al. 2019: needs --lap-c)",
    )
    g.add_argument(
        "--lap-c", type=_non_negative_int, default=None, metavar="C", help="with --readout lap: the largest shift"
    )
    g.add_argument(
        "--padding",
        choices=PADDINGS,
        default="zero",
        help="SAME padding of every convolution (and LAP's boundary): zero (default) or circular (a torus)",
    )
    g.add_argument(
        "--pools",
        type=_pools,
        default=None,
        metavar="K1,K2",
        help="2x2 average pooling after these conv layers (1-based counts, e.g. 2,3)",
    )
    g.add_argument(
        "--myrtle",
        type=int,
        choices=sorted(MYRTLE_POOLS),
        default=None,
        help="the Myrtle network of Shankar et al. 2020 (sets --depth and --pools; not with them)",
    )
    g.add_argument("--flip", action="store_true", help="the flip-symmetrised kernel (K(x, x') + K(x, flip x')) / 2")
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
    cli_regress.add_parser(sub, _positive_int, _data_args, _kernel_args)

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


def architecture(args) -> Architecture:
    """The :class:`~cntk_core.architecture.Architecture` of the kernel options (``--myrtle`` resolved;
    its conflicts with ``--depth`` / ``--pools`` raise the usage error). Call inside :func:`_cli_names`."""
    depth, pools = args.depth, args.pools
    if args.myrtle is not None:
        given = [name for name, v in (("--depth", depth), ("--pools", pools)) if v is not None]
        if given:
            raise _UsageError(
                f"--myrtle {args.myrtle} sets the depth ({args.myrtle}) and the pools "
                f"({','.join(map(str, MYRTLE_POOLS[args.myrtle]))}): give it without {' and '.join(given)}"
            )
        depth, pools = args.myrtle, MYRTLE_POOLS[args.myrtle]
    return Architecture.from_options(
        3 if depth is None else depth,
        args.readout,
        args.fix,
        lap_c=args.lap_c,
        padding=args.padding,
        pools=() if pools is None else pools,
        flip=args.flip,
    )


def _progress(args) -> bool | None:
    if args.progress is None:
        return None if sys.stderr.isatty() else False
    return args.progress


#: run_experiment's parameter names as the command line spells them, for its error messages
#: the library's parameter names (``ParameterError.param``) as this command line spells them
OPTION_NAMES = {
    "depth": "--depth",
    "readout": "--readout",
    "lap_c": "--lap-c",
    "padding": "--padding",
    "pools": "--pools",
    "flip": "--flip",
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
    "zca": "--zca",
    "flip_augment": "--flip-augment",
    "random_patches": "--random-patches",
    "patch_size": "--patch-size",
    "patch_bias": "--patch-bias",
    "patch_pool": "--patch-pool",
    "patch_zca": "--patch-zca",
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
        if isinstance(exc, _UsageError):
            raise
        param = getattr(exc, "param", None)
        myrtle = getattr(args, "myrtle", None)
        option = f"--myrtle {myrtle}" if myrtle is not None and param in ("depth", "pools") else OPTION_NAMES.get(param)
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


COMMANDS = {"gram": cli_gram.cmd_gram, "regress": cli_regress.cmd_regress, "data": cli_data.cmd_data, "info": cmd_info}


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
