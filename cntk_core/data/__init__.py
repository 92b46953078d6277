"""Data for cntk-lab: CIFAR-10 (download, tarball, folder), the exact CIFAR-10 subset, sklearn digits,
subsets, the paper's preprocessing (with optional ZCA whitening, flip augmentation and Coates et al.'s
random-patch features, :class:`RandomPatches`).

>>> from cntk_core.data import load_dataset, preprocess
>>> ds = load_dataset("digits")                     # offline: uint8 [n, 8, 8, 1], pixel_scale 16
>>> p = preprocess(ds.x_train, ds.x_test, scale=ds.pixel_scale)   # float64, train-statistics only

Where CIFAR-10 comes from (no path outside the user's cache or the ones they name):

* ``"cifar10"``: ``$CNTK_CIFAR10`` (a ``cifar-10-python.tar.gz`` or extracted folder), else the tarball in
  the per-user cache ``$CNTK_DATA_DIR`` or ``~/.cache/cntk-lab``, downloaded once (checksums, progress
  bar; ``$CNTK_CIFAR10_URL`` names a mirror). Decoded arrays are cached: repeated loads are fast.
* ``"cifar10-subset"``: two small files in ``$CNTK_CIFAR10_SUBSET`` or ``<cache>/cifar10-subset``, made
  by :func:`build_cifar10_subset` (``cntk-lab data subset``) for machines that stay offline.
"""

from __future__ import annotations

from ._cifar import (
    CIFAR10_ENV,
    CIFAR10_MD5,
    CIFAR10_SHA256,
    load_cifar10,
    read_cifar10_folder,
    read_cifar10_tarball,
)
from ._dataset import CIFAR10_CLASSES, Dataset
from ._download import CACHE_ENV, CIFAR10_URL, URL_ENV, cache_dir, cifar10_url, download_cifar10
from ._errors import DataError, DataUnavailableError
from ._patches import RandomPatches
from ._preprocess import STATS, ZCA, Preprocessed, Standardizer, hflip, hflip_augment, preprocess
from ._safepickle import RestrictedUnpickler, safe_loads
from ._setup import (
    DATASETS,
    available_datasets,
    build_cifar10_subset,
    check_dataset_name,
    cifar10_source,
    data_status,
    dataset_available,
    lab_dataset_available,
)
from ._sources import SUBSET_ENV, SUBSET_FILES, default_subset_dir, load_cifar10_subset, load_digits_dataset
from ._subsets import SUBSETS, balanced_indices, balanced_subset, first_n, random_subset


def load_dataset(name: str, **kw) -> Dataset:
    """Load a data set by name (one of :data:`DATASETS`): ``"digits"`` (offline default,
    :func:`load_digits_dataset`), ``"cifar10-subset"`` (:func:`load_cifar10_subset`) or ``"cifar10"``
    (:func:`load_cifar10`); keyword arguments go to that loader. Without them only the environment
    variables above decide where the files are; :func:`dataset_available` says whether they are there."""
    loaders = {"digits": load_digits_dataset, "cifar10-subset": load_cifar10_subset, "cifar10": load_cifar10}
    return loaders[check_dataset_name(name)](**kw)


__all__ = [
    "STATS",
    "SUBSETS",
    "CACHE_ENV",
    "CIFAR10_CLASSES",
    "CIFAR10_ENV",
    "CIFAR10_MD5",
    "CIFAR10_SHA256",
    "CIFAR10_URL",
    "DATASETS",
    "DataError",
    "DataUnavailableError",
    "Dataset",
    "Preprocessed",
    "RandomPatches",
    "RestrictedUnpickler",
    "Standardizer",
    "SUBSET_ENV",
    "SUBSET_FILES",
    "URL_ENV",
    "ZCA",
    "available_datasets",
    "balanced_indices",
    "balanced_subset",
    "build_cifar10_subset",
    "cache_dir",
    "cifar10_source",
    "cifar10_url",
    "data_status",
    "dataset_available",
    "default_subset_dir",
    "download_cifar10",
    "first_n",
    "hflip",
    "hflip_augment",
    "lab_dataset_available",
    "load_cifar10",
    "load_cifar10_subset",
    "load_dataset",
    "load_digits_dataset",
    "preprocess",
    "random_subset",
    "read_cifar10_folder",
    "read_cifar10_tarball",
    "safe_loads",
]
