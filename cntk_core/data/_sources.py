"""Offline data sources: scikit-learn's 8x8 digits and the exact CIFAR-10 subset in ``shared/``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._dataset import CIFAR10_CLASSES, Dataset

SUBSET_ENV = "CNTK_CIFAR10_SUBSET"
SUBSET_FILES = ("cifar10_exact_train4000.npz", "cifar10_exact_test1000.npz")
DIGITS_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))


def default_subset_dir() -> Path:
    """``$CNTK_CIFAR10_SUBSET``, else ``<repo root>/../shared/data/cifar10``."""
    env = os.environ.get(SUBSET_ENV)
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cifar10"


def load_cifar10_subset(path: str | os.PathLike | None = None) -> Dataset:
    """The exact CIFAR-10 subset: official train images 0..3999 and test images 0..999.

    uint8 NHWC ``[4000, 32, 32, 3]`` / ``[1000, 32, 32, 3]``, int64 labels, pixel_scale 255.
    ``path``: folder with ``cifar10_exact_train4000.npz`` and ``cifar10_exact_test1000.npz``
    (default :func:`default_subset_dir`). The files hold plain arrays; they are read with
    ``allow_pickle=False``.
    """
    folder = Path(path).expanduser() if path is not None else default_subset_dir()
    files = [folder / f for f in SUBSET_FILES]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 subset not found in {folder} (missing {', '.join(missing)}); "
            f"set the environment variable {SUBSET_ENV} to the folder holding {' and '.join(SUBSET_FILES)}, "
            "or pass path="
        )
    arrays = []
    for f in files:
        with np.load(f, allow_pickle=False) as z:
            x, y = z["x"], z["y"]
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3) or y.shape != (x.shape[0],):
            raise ValueError(f"{f}: expected x uint8 [n, 32, 32, 3] and y [n], got {x.dtype} {x.shape}, {y.shape}")
        arrays.append((x, y.astype(np.int64)))
    (x_train, y_train), (x_test, y_test) = arrays
    return Dataset(x_train, y_train, x_test, y_test, CIFAR10_CLASSES, "cifar10-subset", 255.0)


def load_digits_dataset(test_size: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download): the offline default.

    uint8 NHWC ``[n, 8, 8, 1]`` with pixel values 0..16 (pixel_scale 16), int64 labels 0..9.
    Split per class (stratified): in each class, a ``seed``-ed permutation puts
    ``round(test_size * count)`` images into the test set; each split is in ascending original order.
    """
    from sklearn.datasets import load_digits

    if not 0.0 < float(test_size) < 1.0:
        raise ValueError(f"test_size must be a fraction in (0, 1), got {test_size!r}")
    digits = load_digits()
    images = digits.images
    if not np.array_equal(images, np.round(images)) or images.min() < 0 or images.max() > 16:
        raise ValueError("unexpected digits pixel values (expected integers 0..16)")
    x = images.astype(np.uint8)[..., None]
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        test[rng.permutation(idx)[: int(round(test_size * len(idx)))]] = True
    return Dataset(x[~test], y[~test], x[test], y[test], DIGITS_CLASSES, "digits", 16.0)
