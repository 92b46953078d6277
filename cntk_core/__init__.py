"""cntk_core: the exact Convolutional Neural Tangent Kernel (Arora et al. 2019).

>>> import numpy as np, cntk_core
>>> x = np.random.default_rng(0).standard_normal((4, 8, 8, 3))
>>> K = cntk_core.kernel_matrix(x, depth=3, readout="gap", fix=True)   # CNTK-GAP-3, [4, 4]
"""

from .architecture import KINDS, PADDINGS, READOUTS, Architecture
from .backend import BACKENDS, resolve_backend
from .gram import KernelCancelled, kernel_matrices, kernel_matrix, network_kernel
from .layers import AvgPool, Conv, Dense, Flatten, GlobalAvgPool, Layer, LocalAvgPool, Network, ReLU
from .presets import cntk, myrtle
from .validation import DTYPES, ParameterError, ParameterTypeError

__all__ = [
    "Architecture",
    "AvgPool",
    "BACKENDS",
    "DTYPES",
    "KINDS",
    "KernelCancelled",
    "READOUTS",
    "Conv",
    "Dense",
    "Flatten",
    "GlobalAvgPool",
    "Layer",
    "LocalAvgPool",
    "Network",
    "PADDINGS",
    "ParameterError",
    "ParameterTypeError",
    "ReLU",
    "cntk",
    "myrtle",
    "kernel_matrices",
    "kernel_matrix",
    "network_kernel",
    "resolve_backend",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    """``CanonicalSpec``, the name of :class:`Architecture` before 0.1.0's restructuring (deprecated)."""
    if name == "CanonicalSpec":
        import warnings

        warnings.warn(
            "cntk_core.CanonicalSpec is now cntk_core.Architecture (fields depth, readout, fix_first, fix_last)",
            DeprecationWarning,
            stacklevel=2,
        )
        return Architecture
    raise AttributeError(f"module 'cntk_core' has no attribute {name!r}")
