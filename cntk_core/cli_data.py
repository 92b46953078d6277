"""``cntk-lab data``: get CIFAR-10 onto this machine (the ``data`` sub-commands of :mod:`cntk_core.cli`).

    cntk-lab data download     # official tarball -> per-user cache (progress bar, md5 + sha256), decoded once
    cntk-lab data subset       # the two small exact-subset files --dataset cifar10-subset reads (~14 MB)
    cntk-lab data subset --from ~/Downloads/cifar-10-python.tar.gz --out /srv/class/cifar10-subset
    cntk-lab data where        # where each data set is looked for and what is present

The cache is ``$CNTK_DATA_DIR`` or ``~/.cache/cntk-lab``; ``$CNTK_CIFAR10`` names a tarball or folder to
use instead, ``$CNTK_CIFAR10_SUBSET`` the subset folder, ``$CNTK_CIFAR10_URL`` a mirror.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

COMMANDS = ("download", "subset", "where")


def _checksum_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("checksums (only for a file that is not the official tarball, e.g. a re-packed copy)")
    g.add_argument("--md5", default=None, help="expected md5 instead of the official one")
    g.add_argument("--sha256", default=None, help="expected sha256 (with --md5; default: not checked then)")


def add_parser(sub, positive_int: Callable[[str], int]) -> None:
    """Add ``data {download,subset,where}`` to the ``cntk-lab`` sub-parsers ``sub``."""
    d = sub.add_parser(
        "data",
        help="download CIFAR-10, build the offline subset files, show where data is",
        description=__doc__.split("\n\n")[0],
    )
    dsub = d.add_subparsers(dest="data_command", metavar="{" + ",".join(COMMANDS) + "}")
    dsub.required = True
    progress = dict(action=argparse.BooleanOptionalAction, default=True, help="progress bar (default on)")

    dl = dsub.add_parser(
        "download",
        help="fetch and verify the official tarball into the per-user cache, then decode it once",
        description="Download cifar-10-python.tar.gz (170 MB) into the per-user cache ($CNTK_DATA_DIR or "
        "~/.cache/cntk-lab) with a progress bar, verify its md5 and sha256 and decode it once (fast later loads). "
        "Nothing is downloaded when it is already there.",
    )
    dl.add_argument("--url", default=None, help="a mirror (default: $CNTK_CIFAR10_URL, else the official URL)")
    dl.add_argument("--progress", **progress)
    _checksum_args(dl)

    s = dsub.add_parser(
        "subset",
        help="write the small exact-subset files that --dataset cifar10-subset reads (for offline classrooms)",
        description="Write cifar10_exact_train4000.npz and cifar10_exact_test1000.npz (the first N official "
        "training and test images; the defaults reproduce the project's exact subset, ~14 MB) from the official "
        "tarball or an extracted folder. Copy the folder to machines without internet and point "
        "CNTK_CIFAR10_SUBSET at it, or build it there in the default place.",
    )
    s.add_argument(
        "--from",
        dest="source",
        default=None,
        metavar="TARBALL_OR_FOLDER",
        help="cifar-10-python.tar.gz or extracted cifar-10-batches-py folder (default: $CNTK_CIFAR10, else the "
        "cache, downloaded when absent)",
    )
    s.add_argument("--n-train", type=positive_int, default=4000, help="first N training images (default 4000)")
    s.add_argument("--n-test", type=positive_int, default=1000, help="first N test images (default 1000)")
    s.add_argument(
        "--out", default=None, help="folder to write (default: $CNTK_CIFAR10_SUBSET, else <cache>/cifar10-subset)"
    )
    s.add_argument("--no-download", action="store_true", help="fail instead of downloading the tarball")
    s.add_argument("--progress", **progress)
    _checksum_args(s)

    w = dsub.add_parser("where", help="where each data set is looked for and what is present")
    w.add_argument("--json", action="store_true", help="print JSON")


def _checksums(args) -> dict:
    if args.sha256 is not None and args.md5 is None:
        raise ValueError("--sha256 needs --md5 (both describe a file that is not the official tarball)")
    return {"expected_md5": args.md5, "expected_sha256": args.sha256}


def cmd_data(args) -> int:
    """Run ``cntk-lab data <command>``; returns the exit code (errors raise, :func:`cntk_core.cli.main` reports)."""
    from . import data

    if args.data_command == "download":
        sums = _checksums(args)
        target = data.download_cifar10(url=args.url, progress=args.progress, **sums)
        print(f"CIFAR-10 tarball: {target}", flush=True)
        print("decoding it once (later loads are fast) ...", file=sys.stderr, flush=True)
        ds = data.load_cifar10(target, **sums)
        n_train, n_test = len(ds.y_train), len(ds.y_test)
        print(f"ready: {n_train} train / {n_test} test images; --dataset cifar10 now works offline")
        return 0
    if args.data_command == "subset":
        train, test = data.build_cifar10_subset(
            args.source,
            args.out,
            n_train=args.n_train,
            n_test=args.n_test,
            download=not args.no_download,
            progress=args.progress,
            **_checksums(args),
        )
        print(f"wrote {train}\nwrote {test}")
        folder = train.parent
        if folder != data.default_subset_dir():
            print(f"use it with: export {data.SUBSET_ENV}={folder}")
        print("--dataset cifar10-subset now works offline")
        return 0
    status = data.data_status()
    if args.json:
        print(json.dumps(status))
        return 0
    width = max(map(len, status))
    for k, v in status.items():
        print(f"{k:<{width}}  {'-' if v is None else v}")
    return 0
