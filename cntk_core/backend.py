"""Backend choice, made in one place: ``numba`` (fused CPU), ``numpy`` (per-layer) or ``cupy`` (GPU).

``resolve_backend(None)`` picks, in order: the ``CNTK_BACKEND`` environment variable, CuPy when a
usable CUDA device answers a smoke test, Numba when it imports, else NumPy. Detection is quiet:
importing ``cntk_core`` never imports CuPy, and a machine without CUDA gets no warning.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from .validation import ParameterError, ParameterTypeError

BACKENDS = ("numba", "numpy", "cupy")


@functools.cache
def gpu_status() -> tuple[bool, str]:
    """``(usable, reason)`` for CuPy: imports it, asks for a device and runs a tiny kernel."""
    if os.environ.get("CNTK_FORCE_CPU"):
        return False, "CNTK_FORCE_CPU is set"
    try:
        import cupy as cp
    except Exception as exc:  # ImportError, or a broken CUDA install raising at import
        return False, f"cupy not importable: {type(exc).__name__}"
    try:
        if not cp.is_available():
            return False, "cupy installed, no usable CUDA device"
        cp.cuda.runtime.getDeviceCount()
        (cp.arange(4, dtype=cp.float32) * 2).sum().item()  # also exercises NVRTC
    except Exception as exc:
        return False, f"cupy installed, CUDA unusable: {type(exc).__name__}: {exc}"
    return True, "cupy with a CUDA device"


@functools.cache
def numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except Exception:
        return False
    return True


@functools.cache
def initialise_numba() -> bool:
    """Build Numba's CPU target on the calling thread, once per process; ``False`` without Numba.

    Building it walks ``builtins.__dict__`` (numba.core.base's ``_load_global_helpers``). IPython
    adds and removes builtins at every cell boundary, so when the first engine call is made from a
    worker thread while cells run, that walk can fail with "dictionary changed size during
    iteration". Code that starts worker threads calls this first, on the thread that owns the
    builtins (the lab's :class:`cntk_widgets.jobs.JobRunner` does). Costs about 0.3 s once.
    """
    if not numba_available():
        return False
    from numba.core.registry import cpu_target

    cpu_target.target_context  # noqa: B018 - the property builds the context (and its global helpers)
    return True


def resolve_backend(backend: str | None = None) -> str:
    """Name of the backend to use; raises ``ValueError`` for an unknown or unusable request."""
    if backend is not None and not isinstance(backend, str):
        raise ParameterTypeError("backend", f"backend must be a string such as 'numba' or None, got {backend!r}")
    source = "backend" if backend else "the environment variable CNTK_BACKEND"
    requested = backend or os.environ.get("CNTK_BACKEND") or "auto"
    requested = requested.strip().lower()
    if requested == "auto":
        if gpu_status()[0]:
            return "cupy"
        return "numba" if numba_available() else "numpy"
    if requested not in BACKENDS:
        raise ParameterError(
            "backend", f"unknown backend {requested!r} (from {source}); choose one of {BACKENDS + ('auto',)}"
        )
    if requested == "cupy" and not gpu_status()[0]:
        raise RuntimeError(f"backend 'cupy' requested but unusable: {gpu_status()[1]}")
    if requested == "numba" and not numba_available():
        raise RuntimeError("backend 'numba' requested but numba is not installed (pip install numba)")
    return requested


def to_host(a) -> np.ndarray:
    """``a`` as a NumPy array on the host: a CuPy array is copied (``.get()``), anything else goes
    through ``np.asarray`` (no copy for a NumPy array). The dtype is kept: callers that need
    float64 convert themselves. Tells CuPy arrays by their type's module, without importing CuPy."""
    if type(a).__module__.startswith("cupy"):
        return a.get()
    return np.asarray(a)
