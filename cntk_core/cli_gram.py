"""``cntk-lab gram``: a Gram matrix into a ``.npy`` file and/or a resumable store (the ``gram`` command of
:mod:`cntk_core.cli`).

    cntk-lab gram --dataset digits --n 100 --depth 3 --out K.npy
    cntk-lab gram --dataset cifar10-subset --n 2000 --depth 11 --fix --store gram.zarr --scheduler local --out K.npy
    cntk-lab gram --dataset cifar10-subset --n 2000 --depth 11 --fix --store gram.zarr --no-verify
    cntk-lab gram --dataset digits --n 100 --myrtle 5 --readout lap --lap-c 1 --padding circular --flip --out K.npy

(``--no-verify``: resume trusting the done markers, without re-reading every finished tile.) The kernel
options are those of ``cntk-lab regress`` (:func:`cntk_core.cli.architecture`); the store records the
whole :class:`~cntk_core.architecture.Architecture`. Every
check that can run before the computation does: the ``--out`` name (and every folder name on
its way), its folder, and for ``--store`` the store path, backend, scheduler and free space.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path


def add_parser(
    sub,
    positive_int: Callable[[str], int],
    data_args: Callable[[argparse.ArgumentParser], None],
    kernel_args: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Add ``gram`` to the ``cntk-lab`` sub-parsers ``sub`` (with the shared data and kernel options)."""
    g = sub.add_parser("gram", help="compute a Gram matrix into a .npy file (or a resumable store)")
    data_args(g)
    g.add_argument("--n", type=positive_int, required=True, help="first N images of the split")
    g.add_argument("--split", choices=("train", "test"), default="train")
    g.add_argument(
        "--cross",
        type=positive_int,
        default=None,
        metavar="M",
        help="cross kernel K(split[:N], train[:M]) instead of the symmetric Gram of split[:N]",
    )
    kernel_args(g)
    g.add_argument("--out", default=None, help="output .npy path (written atomically)")
    g.add_argument("--store", default=None, help="zarr store directory: compute via cntk_core.distributed")
    g.add_argument(
        "--scheduler",
        type=_scheduler,
        default=None,
        help="with --store: 'local' (a LocalCluster, default), 'synchronous', 'cuda' or a Dask scheduler address",
    )
    g.add_argument("--n-workers", type=positive_int, default=None, help="with --store: workers of a local cluster")
    g.add_argument(
        "--tile-size",
        type=positive_int,
        default=None,
        help="with --store: rows/columns per tile (default: the store's, 256 for a new one)",
    )
    g.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="with --store: on resume, trust the done markers instead of re-reading every finished tile "
        "(faster on a large store; a damaged tile is still caught when the Gram is read)",
    )


def npy_path(text: str, store: str | None, usage_error: type[Exception]) -> Path:
    """The output path with a ``.npy`` suffix (as ``np.save`` would add); every name on the way within
    the file system's NAME_MAX, its folder existing and writable, not the Gram store ``store``
    (``--store``) nor inside it. Raises ``usage_error`` (or ``FileNotFoundError``)."""
    from ._atomic import name_too_long

    given = Path(text).expanduser()
    path = given if given.suffix == ".npy" else given.with_name(given.name + ".npy")
    if store is not None:
        root = Path(store).expanduser().absolute()
        if root in (given.absolute(), path.absolute()) or root in path.absolute().parents:
            raise usage_error(f"--out {text!r} must not be the --store {store!r} or inside it")
    # the names first (a stat of a longer name fails); the temporary file's name is short: only these count
    too_long = name_too_long(path)
    if too_long:
        part, size, name_max = too_long
        what = "file" if part == path.name else "folder"
        raise usage_error(
            f"--out: the {what} name {part[:40]!r}... is {size} bytes long; this file system allows {name_max}"
        )
    for folder in (given, path):
        if folder.is_dir():
            raise FileNotFoundError(f"--out {text!r} is a folder; give a file name such as {str(folder / 'K.npy')!r}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder {str(path.parent)!r} does not exist")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise usage_error(f"--out: the folder {str(path.parent)!r} is not writable")
    return path


def _scheduler(text: str) -> str:
    """``--scheduler``: ``local``, ``synchronous``, ``cuda`` or a Dask scheduler address."""
    import re

    from ._cluster import ADDRESS_PATTERN, SCHEDULER_NAMES

    if text in ("local", *SCHEDULER_NAMES) or re.fullmatch(ADDRESS_PATTERN, text):
        return text
    raise argparse.ArgumentTypeError(
        f"expected local, synchronous, cuda or the address of a running Dask scheduler such as "
        f"tcp://host:8786, got {text!r}"
    )


def _n_workers_need_a_local_cluster(args) -> None:
    if args.n_workers is not None and args.scheduler not in (None, "local", "cuda"):
        raise ValueError("--n-workers applies only to a cluster started here (--scheduler local or cuda)")


def cmd_gram(args) -> int:
    """Run ``cntk-lab gram``; returns the exit code (errors raise, :func:`cntk_core.cli.main` reports)."""
    from ._atomic import save_npy_atomic
    from .cli import RESULT_PREFIX, _backend, _cli_names, _load, _progress, _UsageError, architecture
    from .regression import standardize

    if args.out is None and args.store is None:
        raise _UsageError("gram needs --out PATH.npy and/or --store PATH")
    store_only = (args.scheduler, args.n_workers, args.tile_size) != (None, None, None) or not args.verify
    if args.store is None and store_only:
        raise _UsageError("--scheduler, --n-workers, --tile-size and --no-verify need --store")
    _n_workers_need_a_local_cluster(args)
    out_path = None if args.out is None else npy_path(args.out, args.store, _UsageError)  # before hours of computing
    with _cli_names(args):
        arch = architecture(args)
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
    with _cli_names(args):
        arch.stage_shape(*x1.shape[1:3])  # pools on images too small: refused before any compute
    kw = dict(kind=args.kind, dtype=args.dtype)
    t0 = time.perf_counter()
    info: dict = {}
    K = None
    if args.store is not None:
        store = _run_store(args, x1, x2, {**arch.to_dict(), **kw}, _cli_names, _backend(args), _progress(args))
        shape = store.shape
        if out_path is not None:  # the whole matrix only when it is to be written (a store may exceed memory)
            K = store.load()
        run = store.last_run
        info = {"tiles_repaired": run.tiles_repaired, "inputs_repaired": run.inputs_repaired}
    else:
        from .gram import network_kernel

        K = network_kernel(arch, x1, x2, **kw, backend=_backend(args), progress=_progress(args))
        shape = K.shape
    seconds = time.perf_counter() - t0
    out = None if out_path is None else str(save_npy_atomic(out_path, K))
    info = {"kernel": arch.title(args.kind), "architecture": arch.to_dict(), "shape": list(shape),
            "seconds": round(seconds, 3), "out": out, "store": args.store, **info}  # fmt: skip
    print(f"Gram {shape[0]} x {shape[1]} in {seconds:.2f} s -> {out or args.store}", file=sys.stderr)
    print(RESULT_PREFIX + json.dumps(info))
    return 0


def _run_store(args, x1, x2, kw: dict, cli_names, backend: str | None, progress: bool | None):
    """``gram_to_store`` for ``--store``: the store, complete (every tile checked as it was written,
    or, on resume, re-read unless ``--no-verify``); reports what it repaired on stderr."""
    try:
        from .distributed import gram_to_store
    except ImportError as exc:
        msg = f"--store needs the distributed extra (pip install 'cntk-lab[distributed]'): {exc}"
        raise RuntimeError(msg) from exc
    scheduler = None if args.scheduler in (None, "local") else args.scheduler
    opts = dict(tile_size=args.tile_size, scheduler=scheduler, n_workers=args.n_workers, backend=backend)
    with cli_names(args):
        store = gram_to_store(args.store, x1, x2, **kw, **opts, progress=progress, verify=args.verify)
    run = store.last_run
    if run.tiles_repaired or run.inputs_repaired or run.arrays_repaired:
        arrays = f", rebuilt the arrays {', '.join(run.arrays_repaired)}" if run.arrays_repaired else ""
        print(
            f"repaired the store {args.store!r}: recomputed {run.tiles_repaired} damaged or lost tiles, "
            f"re-wrote {run.inputs_repaired} damaged blocks of stored images{arrays}",
            file=sys.stderr,
        )
    return store
