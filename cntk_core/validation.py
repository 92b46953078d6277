"""Input checks with messages a user can act on (never a NaN or a traceback from deep in NumPy)."""

from __future__ import annotations

import math
import os
import sys
import warnings
from numbers import Integral, Real

import numpy as np

#: the kernels: the CNTK (``"ntk"``) or the CNN-GP (``"nngp"``, the network at initialisation)
KINDS = ("ntk", "nngp")
#: arithmetic precisions of the engines
DTYPES = ("float32", "float64")


class ParameterError(ValueError):
    """A bad value for one named parameter. ``param`` is its name as the Python API spells it
    (``"depth"``, ``"block_size"``); front ends (the CLI) map it to their own spelling."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


class ParameterTypeError(TypeError):
    """A value of the wrong type for one named parameter; ``param`` as in :class:`ParameterError`."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


def _param(name: str) -> str:
    """The parameter a message's subject names: ``"depths[2]"`` -> ``"depths"``, ``"Conv size"`` ->
    ``"size"`` (a layer's argument, named after its layer in the message)."""
    return name.split("[")[0].split(" ")[-1]


class ChannelsFirstWarning(UserWarning):
    """Images whose shape looks channels-first (NCHW) where NHWC is expected."""


def as_images(x, name: str = "x1") -> np.ndarray:
    """Return ``x`` as a C-contiguous NumPy array of NHWC images, or raise a clear error.

    Accepts NumPy arrays, array-likes and CuPy arrays (copied to the host). The dtype is kept.
    A shape that looks channels-first, such as ``(n, 3, 32, 32)`` (see :func:`looks_channels_first`),
    is used as given but warns (:class:`ChannelsFirstWarning`) with the transpose to NHWC.
    """
    if type(x).__module__.startswith("cupy"):
        x = x.get()
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise ParameterTypeError(_param(name), f"{name}: cannot be read as an array of images ({exc})") from None
    if arr.dtype == object:
        raise ParameterTypeError(_param(name), f"{name}: cannot be read as an array of images (ragged or object input)")
    if arr.ndim != 4:
        hint = " (a single image? use x[None])" if arr.ndim == 3 else ""
        raise ParameterError(
            _param(name),
            f"{name}: expected a batch of NHWC images of rank 4 (n, height, width, channels), "
            f"got shape {arr.shape}{hint}",
        )
    if arr.dtype == bool or np.issubdtype(arr.dtype, np.integer):
        raise ParameterTypeError(
            _param(name),
            f"{name}: integer images ({arr.dtype}) are not accepted, because the kernel depends on "
            "the pixel scale; convert to float and preprocess first (e.g. x / 255 and standardise, "
            "see cntk_core.data.preprocess)",
        )
    if not np.issubdtype(arr.dtype, np.floating):
        raise ParameterTypeError(_param(name), f"{name}: expected real floating-point pixels, got dtype {arr.dtype}")
    n, h, w, c = arr.shape
    if n == 0:
        raise ParameterError(_param(name), f"{name}: empty batch (0 images)")
    if h == 0 or w == 0 or c == 0:
        raise ParameterError(_param(name), f"{name}: images of shape {arr.shape[1:]} have no pixels or no channels")
    if looks_channels_first(arr.shape):
        warnings.warn(
            f"{name}: shape {arr.shape} looks channels-first (NCHW): read as NHWC it is {n} images of "
            f"{h}x{w} pixels with {c} channels, more channels than rows. If these are {h}-channel {w}x{c} "
            f"images, pass np.transpose({name}, (0, 2, 3, 1)) (shape {(n, w, c, h)})",
            ChannelsFirstWarning,
            stacklevel=_user_stacklevel(),
        )
    bad = ~np.isfinite(arr)
    if bad.any():
        first = int(np.argwhere(bad.reshape(n, -1).any(axis=1))[0, 0])
        raise ParameterError(
            _param(name), f"{name}: {int(bad.sum())} non-finite values (NaN or inf), first in image {first}"
        )
    return np.ascontiguousarray(arr)


#: this package's folder: frames under it are not the user's
_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning issued by the caller of this function point at the
    first line outside ``cntk_core`` (the user's call, however deep in the package it is checked)."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


def looks_channels_first(shape: tuple[int, ...]) -> bool:
    """Whether an ``(n, h, w, c)`` shape reads more naturally as ``(n, C, H, W)``: the "rows" are as
    few as a channel count (1-4) while the "columns" and "channels" are both image-sized (> 4) and
    there are more "channels" than rows, e.g. ``(n, 3, 32, 32)`` or ``(n, 1, 28, 28)``."""
    _, h, w, c = shape
    return h <= 4 < min(w, c) and c > h


def is_float64(dtype) -> bool:
    """A float64 dtype in either byte order (``<f8``, ``>f8``, ``=f8``)."""
    dt = np.dtype(dtype)
    return dt.kind == "f" and dt.itemsize == 8


def _scalar(value, kinds: str):
    """The item of a 0-d NumPy array whose dtype kind is in ``kinds``; anything else unchanged."""
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in kinds:
        return value.item()
    return value


def check_flag(value, name: str, allow_none: bool = False):
    """``value`` as a Python bool, or raise: a truthy string such as ``"no"`` must not read as True.

    Accepted: ``True``/``False`` (NumPy bools and 0-d arrays too), the integers ``0`` and ``1``, and ``None`` when
    ``allow_none``. Refused (``TypeError``): strings, other numbers, containers.
    """
    if value is None and allow_none:
        return None
    value = _scalar(value, "biu")
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, Integral) and value in (0, 1):
        return bool(value)
    allowed = "True or False" + (" (or None)" if allow_none else "")
    hint = ' (write fix=True or fix=False; the official code\'s "--fix yes" is fix=True)' if name == "fix" else ""
    raise ParameterTypeError(_param(name), f"{name} must be {allowed}, got {value!r}{hint}")


def check_int(value, name: str, minimum: int = 1, hint: str = "") -> int:
    """``value`` as a Python int ``>= minimum``: a non-bool integer (NumPy integers and 0-d numeric
    arrays too), or a float with an integral value (``5.0``, as ``np.linspace`` gives).

    ``TypeError`` for anything else (``2.5``, ``"5"``, ``True``, ``None``), ``ValueError`` below ``minimum``.
    """
    value = _scalar(value, "iuf")
    if is_real(value) and not isinstance(value, Integral) and math.isfinite(value) and value % 1 == 0:
        value = int(value)  # exact: value is a whole number in its own type (not rounded through float)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Integral):
        raise ParameterTypeError(
            _param(name), f"{name} must be an integer >= {minimum}{hint}, got {value!r} ({type(value).__name__})"
        )
    if value < minimum:
        raise ParameterError(_param(name), f"{name} must be an integer >= {minimum}{hint}, got {value}")
    return int(value)


def is_real(value) -> bool:
    """A real number (Python or NumPy scalar) that is not a bool (``True`` is an int to Python) nor a string."""
    return isinstance(value, Real) and not isinstance(value, (bool, np.bool_))


def check_real(value, name: str, what: str = "a real number", finite: bool = True):
    """``value`` unchanged if it is a real, non-bool number (finite unless ``finite=False``); 0-d
    arrays give their item. ``TypeError`` for ``True``, ``None``, ``"0.1"`` (a string is refused, not
    parsed), ``[0.1]``; ``ValueError`` for NaN or inf."""
    value = _scalar(value, "iuf")
    if not is_real(value):
        raise ParameterTypeError(_param(name), f"{name} must be {what}, got {value!r} ({type(value).__name__})")
    if finite and not math.isfinite(value):
        raise ParameterError(_param(name), f"{name} must be finite, got {value!r}")
    return value


def check_positive(value, name: str):
    """``value`` if it is a finite real number > 0 (see :func:`check_real`; 0-d arrays give their item), else raise."""
    value = check_real(value, name, "a real number > 0")
    if not value > 0:
        raise ParameterError(_param(name), f"{name} must be a finite number > 0, got {value!r}")
    return value


def as_real_array(
    value, name: str, what: str = "an array of real numbers", finite: bool = False, bools: bool = False
) -> np.ndarray:
    """``value`` as a float64 array, or ``TypeError`` naming ``name``: only integer and floating dtypes
    are read (and bool as 0/1 with ``bools=True``); complex (the imaginary part would be dropped),
    bool, string and object input is refused. ``finite=True``: ``ValueError`` for NaN or inf entries."""
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError) as exc:  # ragged nested lists and the like
        raise ParameterTypeError(_param(name), f"{name}: cannot be read as {what} ({exc})") from None
    if raw.dtype.kind not in ("iufb" if bools else "iuf"):
        kinds = {"c": "complex", "b": "boolean", "U": "string", "S": "bytes", "O": "object"}
        hint = "; take .real explicitly if the imaginary part is round-off" if raw.dtype.kind == "c" else ""
        raise ParameterTypeError(
            _param(name),
            f"{name}: expected {what}, got {kinds.get(raw.dtype.kind, 'non-numeric')} dtype {raw.dtype}{hint}",
        )
    arr = raw.astype(np.float64, copy=False)
    if finite:
        bad = ~np.isfinite(arr)
        if bad.any():
            raise ParameterError(_param(name), f"{name}: {int(bad.sum())} non-finite values (NaN or inf)")
    return arr


def check_pair(x1: np.ndarray, x2: np.ndarray) -> None:
    if x1.shape[1:] != x2.shape[1:]:
        raise ParameterError(
            "x2",
            f"x1 and x2 must have the same image shape (height, width, channels): {x1.shape[1:]} vs {x2.shape[1:]}",
        )


def check_choice(value, name: str, choices: tuple[str, ...], what: str = "") -> str:
    """``value`` if it is one of ``choices`` (a vocabulary tuple), else :class:`ParameterError`."""
    if not isinstance(value, str) or value not in choices:
        raise ParameterError(_param(name), f"{name}{what} must be one of {choices}, got {value!r}")
    return value


def check_kind(kind: str) -> str:
    return check_choice(kind, "kind", KINDS, " (CNTK or CNN-GP)")


def check_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in DTYPES:
        raise ParameterError("dtype", f"dtype (the arithmetic precision) must be one of {DTYPES}, got {dtype!r}")
    return dt


def check_labels(
    y,
    n: int | None = None,
    name: str = "y",
    *,
    n_classes: int | None = None,
    floats: bool = True,
    for_what: str | None = None,
) -> np.ndarray:
    """``y`` as int64 class indices ``[n]`` (``0 .. n_classes - 1``), or an error naming ``name``.

    y: a 1-D array-like of class indices: integers of any NumPy width, and with ``floats`` also
    floats with integral values (``[0.0, 2.0]``, as text files give). n: the number of labels
    expected (``None``: any). n_classes: also require every label ``< n_classes``. for_what: what
    the ``n`` labels belong to, for the length message (``"a kernel with 10 rows"``).

    :class:`ParameterTypeError` for bool, string, object or complex labels (and floats unless
    ``floats``); :class:`ParameterError` for a shape other than 1-D, a wrong length, non-integral or
    non-finite floats, negative labels and labels ``>= n_classes``. An empty array passes.
    """
    param = _param(name)
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ParameterError(param, f"{name}: expected a 1-D array of integer class labels, got shape {arr.shape}")
    if n is not None and len(arr) != n:
        detail = f"for {for_what}" if for_what is not None else f"where {n} are expected"
        raise ParameterError(param, f"{name}: {len(arr)} labels {detail}")
    is_float = np.issubdtype(arr.dtype, np.floating)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or (is_float and floats)):
        raise ParameterTypeError(param, f"{name}: labels must be integers 0..n_classes-1, got dtype {arr.dtype}")
    if is_float:
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ParameterError(param, f"{name}: labels must be integers 0..n_classes-1")
        arr = arr.astype(np.int64)
    if len(arr) and arr.min() < 0:
        raise ParameterError(param, f"{name}: labels must be >= 0, got {arr.min()}")
    if n_classes is not None:
        n_classes = check_int(n_classes, "n_classes", 1)
        if len(arr) and arr.max() >= n_classes:
            raise ParameterError(param, f"{name}: label {int(arr.max())} out of range for n_classes={n_classes}")
    return arr.astype(np.int64)
