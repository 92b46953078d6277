"""Input checks shared by the finite-width modules (messages name the user's parameter)."""

from __future__ import annotations

import numpy as np

from ..backend import to_host
from ..validation import ParameterError, ParameterTypeError, as_images, as_real_array, check_int, check_real


def _images(x, name: str = "x"):
    """Validate NHWC float images. CuPy arrays are returned as is after a shape/dtype check (no host copy)."""
    if type(x).__module__.startswith("cupy"):
        if x.ndim != 4 or x.dtype.kind != "f" or 0 in x.shape:
            raise ParameterError(
                name, f"{name}: expected a non-empty float batch of NHWC images, got {x.dtype} {x.shape}"
            )
        return x
    return as_images(x, name)


def _finite_array(x, name: str) -> np.ndarray:
    """``x`` as a finite float64 NumPy array (CuPy arrays are copied to the host), or raise."""
    return as_real_array(to_host(x), name, finite=True)


def _vector(x, name: str, n: int, hint: str = "") -> np.ndarray:
    """Finite float64 ``(n,)`` array, or raise."""
    arr = _finite_array(x, name)
    if arr.shape != (n,):
        raise ParameterError(name, f"{name} must have shape ({n},){hint}, got {arr.shape}")
    return arr


def _square(x, name: str) -> np.ndarray:
    """Finite float64 ``(N, N)`` array with ``N >= 1``, or raise."""
    arr = _finite_array(x, name)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        raise ParameterError(name, f"{name} must be a non-empty square (N, N) matrix, got shape {arr.shape}")
    return arr


def _step_counts(steps, integer: bool) -> np.ndarray:
    """``steps`` (one value or a sequence) as a float64 ``(T,)`` array of values >= 0.

    ``integer=True``: every value must be a non-bool integer (GD step counts); else any finite real.
    """
    if isinstance(steps, np.ndarray) and steps.ndim == 0:
        steps = steps[()]
    if isinstance(steps, str | bytes):
        raise ParameterTypeError("steps", f"steps must be a number or a sequence of numbers, got {steps!r}")
    try:
        scalar = np.ndim(steps) == 0
    except (TypeError, ValueError):  # ragged nested sequences
        raise ParameterTypeError("steps", f"steps must be a number or a sequence of numbers, got {steps!r}") from None
    items = [steps] if scalar else list(steps)
    if not items:
        raise ParameterError("steps", "steps is empty (give at least one step count)")
    for i, t in enumerate(items):
        label = "steps" if scalar else f"steps[{i}]"
        if integer:
            check_int(t, label, 0)
        elif check_real(t, label) < 0:
            raise ParameterError("steps", f"{label} must be >= 0, got {t!r}")
    return np.asarray(items, dtype=np.float64)


def _seed_list(seeds) -> list[int]:
    """``seeds`` as a non-empty list of non-negative ``int``, or raise."""
    if isinstance(seeds, str | bytes):
        raise ParameterTypeError("seeds", f"seeds must be a sequence of integers, got {seeds!r}")
    try:
        items = list(seeds)
    except TypeError:
        raise ParameterTypeError(
            "seeds", f"seeds must be a sequence of integers (e.g. range(8) or [0]), got {seeds!r}"
        ) from None
    if not items:
        raise ParameterError("seeds", "seeds is empty (give at least one seed)")
    return [check_int(s, f"seeds[{i}]", 0) for i, s in enumerate(items)]
