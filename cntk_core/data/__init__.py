"""Data for cntk-lab: CIFAR-10 (download, tarball, folder), the exact CIFAR-10 subset, sklearn digits,
subsets and the paper's preprocessing.

>>> from cntk_core.data import load_dataset, preprocess
>>> ds = load_dataset("digits")                     # offline: uint8 [n, 8, 8, 1], pixel_scale 16
>>> p = preprocess(ds.x_train, ds.x_test, scale=ds.pixel_scale)   # float64, train-statistics only
"""

from __future__ import annotations

from ._cifar import (
    CACHE_ENV,
    CIFAR10_MD5,
    CIFAR10_SHA256,
    CIFAR10_URL,
    cache_dir,
    download_cifar10,
    load_cifar10,
    read_cifar10_folder,
    read_cifar10_tarball,
)
from ._dataset import CIFAR10_CLASSES, Dataset
from ._errors import DataError
from ._preprocess import ZCA, Preprocessed, Standardizer, hflip, hflip_augment, preprocess
from ._safepickle import RestrictedUnpickler, safe_loads
from ._sources import SUBSET_ENV, SUBSET_FILES, default_subset_dir, load_cifar10_subset, load_digits_dataset
from ._subsets import balanced_indices, balanced_subset, first_n, random_subset

DATASETS = ("digits", "cifar10-subset", "cifar10")


def load_dataset(name: str, **kw) -> Dataset:
    """Load a data set by name: ``"digits"`` (offline default, :func:`load_digits_dataset`),
    ``"cifar10-subset"`` (:func:`load_cifar10_subset`) or ``"cifar10"`` (:func:`load_cifar10`);
    keyword arguments go to that loader."""
    loaders = {"digits": load_digits_dataset, "cifar10-subset": load_cifar10_subset, "cifar10": load_cifar10}
    if name not in loaders:
        raise ValueError(f"unknown data set {name!r}; choose one of {DATASETS}")
    return loaders[name](**kw)


__all__ = [
    "CACHE_ENV",
    "CIFAR10_CLASSES",
    "CIFAR10_MD5",
    "CIFAR10_SHA256",
    "CIFAR10_URL",
    "DATASETS",
    "DataError",
    "Dataset",
    "Preprocessed",
    "RestrictedUnpickler",
    "Standardizer",
    "SUBSET_ENV",
    "SUBSET_FILES",
    "ZCA",
    "balanced_indices",
    "balanced_subset",
    "cache_dir",
    "default_subset_dir",
    "download_cifar10",
    "first_n",
    "hflip",
    "hflip_augment",
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
