"""Getting CIFAR-10 onto a machine: which data sets are available without a download, and the builder
of the small exact-subset files for offline classrooms (``cntk-lab data subset``)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from .._atomic import atomic_file
from ..validation import ParameterError, check_int
from . import _cifar
from ._cifar import CIFAR10_ENV, CIFAR10_FILENAME, cache_dir, fsync_dir, load_cifar10
from ._cifar_cache import decoded_dir
from ._sources import SUBSET_ENV, SUBSET_FILES, default_subset_dir, load_cifar10_subset

#: the one vocabulary of data set names (the CLI's and the launcher's ``--dataset`` choices, the lab's list)
DATASETS: tuple[str, ...] = ("digits", "cifar10-subset", "cifar10")


def check_dataset_name(name: str) -> str:
    """``name`` if it is one of :data:`DATASETS`, else :class:`~cntk_core.validation.ParameterError`."""
    if not isinstance(name, str) or name not in DATASETS:
        raise ParameterError("dataset", f"unknown data set {name!r}; choose one of {DATASETS}")
    return name


def cifar10_source() -> Path | None:
    """What ``load_dataset("cifar10")`` reads without downloading: ``$CNTK_CIFAR10`` if it exists, else the
    decoded cache of the official tarball, else the cached tarball; ``None`` when none is present (a
    load would download). Nothing is read or verified here: loading does that."""
    env = os.environ.get(CIFAR10_ENV)
    if env:
        p = Path(env).expanduser()
        return p if p.exists() else None
    cache = cache_dir()
    for candidate in (decoded_dir(cache, _cifar.CIFAR10_SHA256) / "manifest.json", cache / CIFAR10_FILENAME):
        if candidate.is_file():
            return candidate.parent if candidate.name == "manifest.json" else candidate
    return None


def dataset_available(name: str) -> bool:
    """Whether :func:`cntk_core.data.load_dataset` ``(name)`` finds its data without a download, using the
    environment only (``CNTK_DATA_DIR``, ``CNTK_CIFAR10``, ``CNTK_CIFAR10_SUBSET``): ``"digits"`` always
    (bundled with scikit-learn), ``"cifar10-subset"`` when both files are in :func:`default_subset_dir`,
    ``"cifar10"`` when :func:`cifar10_source` finds something. Cheap: checks that files exist."""
    check_dataset_name(name)
    if name == "digits":
        return True
    if name == "cifar10-subset":
        return all((default_subset_dir() / f).is_file() for f in SUBSET_FILES)
    return cifar10_source() is not None


#: the name the lab uses
lab_dataset_available = dataset_available


def available_datasets() -> tuple[str, ...]:
    """The names of :data:`DATASETS` for which :func:`dataset_available` is true, in that order."""
    return tuple(name for name in DATASETS if dataset_available(name))


def data_status() -> dict:
    """Where the data lives and what is present (``cntk-lab data where`` and ``cntk-lab info``); paths as str."""
    cache = cache_dir()
    tarball = cache / CIFAR10_FILENAME
    decoded = decoded_dir(cache, _cifar.CIFAR10_SHA256)
    subset = default_subset_dir()
    source = cifar10_source()
    return {
        "cache_dir": str(cache),
        "cifar10_tarball": str(tarball) if tarball.is_file() else None,
        "cifar10_decoded": str(decoded) if (decoded / "manifest.json").is_file() else None,
        "CNTK_CIFAR10": os.environ.get(CIFAR10_ENV),
        "cifar10_source": None if source is None else str(source),
        "cifar10_subset_dir": str(subset),
        "CNTK_CIFAR10_SUBSET": os.environ.get(SUBSET_ENV),
        "cifar10_subset_found": all((subset / f).is_file() for f in SUBSET_FILES),
        "available": list(available_datasets()),
    }


def build_cifar10_subset(
    source: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    *,
    n_train: int = 4000,
    n_test: int = 1000,
    download: bool = True,
    progress: bool = True,
    expected_md5: str | None = None,
    expected_sha256: str | None = None,
) -> tuple[Path, Path]:
    """Write the files ``load_dataset("cifar10-subset")`` reads, from the full CIFAR-10, and return their paths.

    ``source``: a ``cifar-10-python.tar.gz`` or extracted folder (default: as :func:`load_cifar10`, i.e.
    ``$CNTK_CIFAR10`` or the cache, downloaded when absent and ``download``). ``out``: the folder
    (default :func:`default_subset_dir`, created if needed). The files hold the first ``n_train``
    official training and first ``n_test`` test images (defaults: the project's exact subset, 4,000 +
    1,000) in the layout of the reference files: ``x`` uint8 ``[n, 32, 32, 3]``, ``y`` uint8 ``[n]``,
    ``index`` int32 ``[n]`` (official indices), ``y_all`` uint8 (the labels of the whole split);
    compressed, about 14 MB. Other sizes keep the two file names. Each file is written to a temporary
    file in ``out`` and renamed into place (atomic), then read back through the subset loader; a killed
    build's temporary files are swept at the next one (:func:`~cntk_core.data._cifar.sweep_stale_temps`).
    """
    n_train = check_int(n_train, "n_train", 1)
    n_test = check_int(n_test, "n_test", 1)
    ds = load_cifar10(
        source, download=download, progress=progress, expected_md5=expected_md5, expected_sha256=expected_sha256
    )
    for name, n, have in (("n_train", n_train, len(ds.y_train)), ("n_test", n_test, len(ds.y_test))):
        if n > have:
            raise ParameterError(name, f"{name}={n} is more than the {have} images of that CIFAR-10 split")
    folder = Path(out).expanduser() if out is not None else default_subset_dir()
    folder.mkdir(parents=True, exist_ok=True)
    contents = {
        SUBSET_FILES[0]: (ds.x_train, ds.y_train, n_train),
        SUBSET_FILES[1]: (ds.x_test, ds.y_test, n_test),
    }
    for name in contents:  # a killed builder's temporary files (its finally never ran)
        _cifar.sweep_stale_temps(folder, name)
    with contextlib.ExitStack() as files:  # both complete before either replaces an older file (at the exit)
        for name, (x, y, n) in contents.items():
            temp = dict(prefix=_cifar.temp_prefix(name), suffix=".part")  # as sweep_stale_temps knows them
            f = files.enter_context(atomic_file(folder / name, **temp, mode=0o644))  # readable: a class may share it
            np.savez_compressed(
                f,
                x=np.ascontiguousarray(x[:n]),
                y=y[:n].astype(np.uint8),
                index=np.arange(n, dtype=np.int32),
                y_all=y.astype(np.uint8),
            )
    fsync_dir(folder)
    check = load_cifar10_subset(folder)
    if not (np.array_equal(check.x_train, ds.x_train[:n_train]) and np.array_equal(check.y_test, ds.y_test[:n_test])):
        raise OSError(f"the subset files written to {folder} do not read back equal (disk or file system fault)")
    return folder / SUBSET_FILES[0], folder / SUBSET_FILES[1]
