"""Offline data sources: scikit-learn's 8x8 digits and the exact CIFAR-10 subset (built from the
official tarball by ``cntk-lab data subset``, see :func:`cntk_core.data.build_cifar10_subset`)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import numpy as np

from ..validation import ParameterError, ParameterTypeError
from ._checks import is_real, make_rng
from ._cifar import cache_dir
from ._dataset import CIFAR10_CLASSES, Dataset
from ._errors import DataError

SUBSET_ENV = "CNTK_CIFAR10_SUBSET"
SUBSET_FILES = ("cifar10_exact_train4000.npz", "cifar10_exact_test1000.npz")
DIGITS_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))


def default_subset_dir() -> Path:
    """``$CNTK_CIFAR10_SUBSET``, else ``cifar10-subset`` in the per-user data cache (:func:`cache_dir`)."""
    env = os.environ.get(SUBSET_ENV)
    if env:
        return Path(env).expanduser()
    return cache_dir() / "cifar10-subset"


def load_cifar10_subset(path: str | os.PathLike | None = None) -> Dataset:
    """The exact CIFAR-10 subset: official train images 0..3999 and test images 0..999.

    uint8 NHWC ``[4000, 32, 32, 3]`` / ``[1000, 32, 32, 3]``, int64 labels, pixel_scale 255.
    ``path``: folder with ``cifar10_exact_train4000.npz`` and ``cifar10_exact_test1000.npz``
    (default :func:`default_subset_dir`). The files hold plain arrays; they are read with
    ``allow_pickle=False``. A corrupt file, missing arrays, object arrays, non-integer labels or
    labels outside 0..9 raise :class:`DataError` naming the file.
    """
    folder = Path(path).expanduser() if path is not None else default_subset_dir()
    files = [folder / f for f in SUBSET_FILES]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        out = "" if folder == default_subset_dir() else f" --out {shlex.quote(str(folder))}"
        raise FileNotFoundError(
            f"CIFAR-10 subset not found in {folder} (missing {', '.join(missing)}): build it once with "
            f"`cntk-lab data subset{out}` (from the official CIFAR-10 tarball), use the full data set "
            f"(--dataset cifar10), or set {SUBSET_ENV} to a folder holding both files"
        )
    arrays = [_read_subset_file(f) for f in files]
    (x_train, y_train), (x_test, y_test) = arrays
    return Dataset(x_train, y_train, x_test, y_test, CIFAR10_CLASSES, "cifar10-subset", 255.0)


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip member / an empty zip archive
_NPY_MAGIC = b"\x93NUMPY"


def _read_subset_file(f: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(x uint8 [n, 32, 32, 3], y int64 [n])`` from one subset ``.npz``; DataError naming ``f`` otherwise."""
    with open(f, "rb") as fh:
        head = fh.read(len(_NPY_MAGIC))
    if head.startswith(_NPY_MAGIC):
        raise DataError(f"{f}: is a single .npy array, not an .npz archive holding the arrays 'x' and 'y'")
    if not head.startswith(_ZIP_MAGIC):
        what = "empty" if not head else "not an .npz archive (unrecognised content)"
        raise DataError(f"{f}: {what}; expected an .npz archive holding the arrays 'x' and 'y'")
    try:
        z = np.load(f, allow_pickle=False)
    except Exception as exc:  # truncated or garbled archives raise many different types
        raise DataError(f"{f}: truncated or corrupt .npz archive ({_reason(exc)})") from None
    with z:
        missing = [k for k in ("x", "y") if k not in z.files]
        if missing:
            raise DataError(
                f"{f}: the .npz archive lacks the array(s) {', '.join(map(repr, missing))} "
                f"(it holds {', '.join(map(repr, z.files)) or 'nothing'})"
            )
        x, y = (_read_member(z, k, f) for k in ("x", "y"))
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3) or y.shape != (x.shape[0],):
        raise DataError(f"{f}: expected x uint8 [n, 32, 32, 3] and y [n], got {x.dtype} {x.shape}, {y.shape}")
    if y.dtype == bool or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{f}: labels y must be integers 0..9, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() > 9):
        raise DataError(f"{f}: labels y outside 0..9 (min {y.min()}, max {y.max()})")
    return x, y.astype(np.int64)


def _read_member(z, key: str, f: Path) -> np.ndarray:
    try:
        value = z[key]
    except Exception as exc:  # object arrays, corrupt members (bad CRC, truncated data, bad header)
        raise DataError(f"{f}: cannot read the array {key!r}: {_reason(exc)}") from None
    if not isinstance(value, np.ndarray):  # NpzFile hands back the raw bytes of a member that is no .npy
        raise DataError(
            f"{f}: the member {key!r} is not a .npy array (no NumPy header: a pickle or another format); "
            "only plain numeric arrays are read, nothing is unpickled"
        )
    return value


def _reason(exc: Exception) -> str:
    """NumPy's error in words, except that its object-array message (which names allow_pickle, i.e.
    an unsafe load) is replaced: such files are never unpickled."""
    msg = str(exc)
    if "allow_pickle" in msg or "Object arrays" in msg or "pickled" in msg:
        return "it holds Python objects (a pickled/object array); only plain numeric arrays are read"
    return f"{type(exc).__name__}: {msg}"


def load_digits_dataset(test_size: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download): the offline default.

    uint8 NHWC ``[n, 8, 8, 1]`` with pixel values 0..16 (pixel_scale 16), int64 labels 0..9.
    Split per class (stratified): in each class, a ``seed``-ed permutation puts
    ``round(test_size * count)`` images into the test set; each split is in ascending original order.
    ``test_size`` must be a number in (0, 1) that leaves both splits non-empty.
    """
    from sklearn.datasets import load_digits

    if not is_real(test_size):
        raise ParameterTypeError(
            "test_size", f"test_size must be a number in (0, 1), got {test_size!r} ({type(test_size).__name__})"
        )
    if not 0.0 < float(test_size) < 1.0:
        raise ParameterError("test_size", f"test_size must be a fraction in (0, 1), got {test_size!r}")
    rng = make_rng(seed)
    digits = load_digits()
    images = digits.images
    if not np.array_equal(images, np.round(images)) or images.min() < 0 or images.max() > 16:
        raise ValueError("unexpected digits pixel values (expected integers 0..16)")
    x = images.astype(np.uint8)[..., None]
    y = digits.target.astype(np.int64)
    test = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        test[rng.permutation(idx)[: int(round(test_size * len(idx)))]] = True
    n_test = int(test.sum())
    if n_test == 0 or n_test == len(y):
        empty = "test" if n_test == 0 else "training"
        raise ValueError(
            f"test_size={test_size!r} leaves the {empty} split empty ({n_test} of {len(y)} images in the test "
            "split, round(test_size * count) per class)"
        )
    return Dataset(x[~test], y[~test], x[test], y[test], DIGITS_CLASSES, "digits", 16.0)
