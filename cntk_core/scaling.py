"""Images of extreme scale, computed exactly: a power-of-two window and the scaling around it.

The kernel is homogeneous, ``K(a x, b x') = a b K(x, x')`` for ``a, b > 0``, and multiplying by a
power of two is exact in floating point. So images whose largest |pixel| would push the engines'
intermediate products out of the arithmetic dtype's range are scaled into range
(:func:`unit_scaled`), their kernel is computed, and the values are scaled back
(:func:`scaled_back`). :func:`exponent_window` is the one rule for when that is needed, set by the
tightest engine (the CUDA kernel's products of two variances).
"""

from __future__ import annotations

import math

import numpy as np

#: images whose largest |pixel| lies outside [2^-_SAFE_EXPONENT, 2^_SAFE_EXPONENT] are scaled by a
#: power of two before the engine sees them (their products would leave float32's range, or at
#: 1e150 float64's, and give inf / NaN), and their kernel values scaled back; float32 narrows this
#: window further (:func:`exponent_window`)
_SAFE_EXPONENT = 32
#: bits by which the largest variance of an image may shrink over the layers (measured: 2^-6.5 for
#: one bright corner pixel of a 32x32 image at depth 21, 2^-7.4 for a 5x5 one), kept in float range
_DEPTH_HEADROOM = 10


def exponent_window(dtype, channels: int) -> tuple[int, int]:
    """``(lo, hi)``: images whose largest |pixel| is ``m 2^e`` (1/2 <= m < 1) with ``lo <= e <= hi``
    go to the engines unscaled in arithmetic ``dtype``; :func:`unit_scaled` scales the others.

    The one rule for every engine; the tightest is the GPU kernel (``cntk_core/cuda/cntk_planes.cu``),
    which forms products of two variances, ``va * vb`` and ``s * s``. Every variance is at most
    ``9 C peak^2`` (layer 1's 3x3 box sum of C-channel products; the ReLU map and the later box sums
    never grow the largest one), so the products stay below ``81 C^2 2^(4e)``: ``hi`` keeps that
    under half the dtype's largest number. At the small end, NVRTC's ``-ftz=true`` (CuPy always adds
    it) flushes float32 products below the smallest normal number to zero, and the entry's K with
    them; such an entry's K is below ``sqrt(tiny)``, while the image's largest layer-1 variance is
    at least ``peak^2 >= 2^(2e - 2)``: ``lo`` keeps the flushed entries below ``2^-(digits +
    _DEPTH_HEADROOM)`` of it, i.e. under the dtype's rounding after the shrinking over depth. Both
    ends stay within ``[-_SAFE_EXPONENT, _SAFE_EXPONENT]``. float32 with 3 channels: ``(-13, 29)``;
    float64: ``(-32, 32)``. Scaling by a power of two is exact, so the window never changes a value
    that is inside the range.
    """
    info = np.finfo(dtype)
    top, bottom = math.log2(float(info.max)), math.log2(float(info.tiny))
    hi = math.floor((top - 1 - 2 * math.log2(9 * max(int(channels), 1))) / 4)
    lo = math.ceil((bottom / 2 + info.nmant + 1 + _DEPTH_HEADROOM + 2) / 2)
    return max(lo, -_SAFE_EXPONENT), max(0, min(hi, _SAFE_EXPONENT))


def unit_scaled(x: np.ndarray, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """``(x', e)``: x' = x * 2^-e per image, e (int32 ``[n]``) nonzero only for images whose largest
    |pixel| has its exponent outside :func:`exponent_window` (float64: [2^-33, 2^32)); their largest
    |pixel| becomes [1/2, 1). Returns ``x`` itself when no image needs it; else allocates one scaled
    copy of ``x``. The peaks are found without a temporary copy (per-image max and min of a view)."""
    flat = x.reshape(len(x), -1)
    peak = np.maximum(flat.max(axis=1), -flat.min(axis=1))
    exponent = np.frexp(peak)[1].astype(np.int32)  # peak = m 2^e, 1/2 <= m < 1 (e = 0 for 0)
    lo, hi = exponent_window(dtype, x.shape[-1])
    exponent[(exponent >= lo) & (exponent <= hi)] = 0
    if not exponent.any():
        return x, exponent
    return np.ldexp(x, -exponent[:, None, None, None]), exponent


def scaled_back(values: np.ndarray, exponents: np.ndarray) -> np.ndarray:
    """Kernel values of scaled images (:func:`unit_scaled`) times 2^(e1 + e2), or ``OverflowError``."""
    with np.errstate(over="ignore"):
        values = np.ldexp(values, exponents[:, None])
    if not np.isfinite(values).all():
        raise OverflowError(
            "kernel values exceed float64's range (~1.8e308): the images' pixels are too large for the "
            "kernel itself to be a float64 number. Divide the images by a scale s and keep s apart: the "
            "kernel is homogeneous, K(x / s, x' / s) = K(x, x') / s^2"
        )
    return values
