"""Input checks with messages a user can act on (never a NaN or a traceback from deep in NumPy)."""

from __future__ import annotations

import numpy as np

KINDS = ("ntk", "nngp")
DTYPES = ("float32", "float64")


def as_images(x, name: str = "x1") -> np.ndarray:
    """Return ``x`` as a C-contiguous NumPy array of NHWC images, or raise a clear error.

    Accepts NumPy arrays, array-likes and CuPy arrays (copied to the host). The dtype is kept.
    """
    if type(x).__module__.startswith("cupy"):
        x = x.get()
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name}: cannot be read as an array of images ({exc})") from None
    if arr.dtype == object:
        raise TypeError(f"{name}: cannot be read as an array of images (ragged or object input)")
    if arr.ndim != 4:
        hint = " (a single image? use x[None])" if arr.ndim == 3 else ""
        raise ValueError(
            f"{name}: expected a batch of NHWC images of rank 4 (n, height, width, channels), "
            f"got shape {arr.shape}{hint}"
        )
    if arr.dtype == bool or np.issubdtype(arr.dtype, np.integer):
        raise TypeError(
            f"{name}: integer images ({arr.dtype}) are not accepted, because the kernel depends on "
            "the pixel scale; convert to float and preprocess first (e.g. x / 255 and standardise, "
            "see cntk_core.data.preprocess)"
        )
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{name}: expected real floating-point pixels, got dtype {arr.dtype}")
    n, h, w, c = arr.shape
    if n == 0:
        raise ValueError(f"{name}: empty batch (0 images)")
    if h == 0 or w == 0 or c == 0:
        raise ValueError(f"{name}: images of shape {arr.shape[1:]} have no pixels or no channels")
    bad = ~np.isfinite(arr)
    if bad.any():
        first = int(np.argwhere(bad.reshape(n, -1).any(axis=1))[0, 0])
        raise ValueError(f"{name}: {int(bad.sum())} non-finite values (NaN or inf), first in image {first}")
    return np.ascontiguousarray(arr)


def check_flag(value, name: str, allow_none: bool = False):
    """``value`` as a Python bool, or raise: a truthy string such as ``"no"`` must not read as True."""
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    hint = " (the official --fix yes is fix=True)" if isinstance(value, str) and "fix" in name else ""
    raise TypeError(f"{name} must be True or False, got {value!r}{hint}")


def check_pair(x1: np.ndarray, x2: np.ndarray) -> None:
    if x1.shape[1:] != x2.shape[1:]:
        raise ValueError(
            f"x1 and x2 must have the same image shape (height, width, channels): {x1.shape[1:]} vs {x2.shape[1:]}"
        )


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS} (CNTK or CNN-GP), got {kind!r}")
    return kind


def check_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in DTYPES:
        raise ValueError(f"dtype (the arithmetic precision) must be one of {DTYPES}, got {dtype!r}")
    return dt
