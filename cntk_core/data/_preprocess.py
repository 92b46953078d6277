"""The paper's preprocessing (pixels / scale, per-channel standardisation with training statistics),
optional ZCA whitening and horizontal-flip augmentation. All outputs are float64 NHWC."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..validation import ParameterError, ParameterTypeError, check_flag
from ._checks import is_real, real_number

_CHUNK = 2048  # images per chunk when computing statistics (bounds the float64 temporaries)
#: channels whose largest |value| lies outside [2**-_RANGE, 2**_RANGE] are rescaled by an exact power
#: of two before their statistics are computed (squares would overflow or underflow float64)
_RANGE = 256

#: where standardisation statistics come from: all training images, or only the ones in use
STATS = ("all", "used")


def _images(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"{name}: expected NHWC images of rank 4 (n, height, width, channels), got shape {x.shape}")
    if x.dtype == bool or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise TypeError(f"{name}: expected integer or float pixels, got dtype {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError(f"{name}: empty batch (0 images)")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return x


class Standardizer:
    """Per-channel standardisation: ``(x / scale - mean[c]) / std[c]`` with statistics of the data
    given to :meth:`fit` (the training set only). ``mean``/``std`` are float64 ``[C]`` in units of
    ``x / scale``; ``std`` is the population standard deviation (ddof=0) over all train pixels.
    Pixels of any magnitude are handled (statistics of channels beyond about ``1e77`` or below
    ``1e-77`` are computed on an exactly rescaled copy); a constant channel is an error."""

    def __init__(self, scale: float = 255.0):
        scale = real_number(scale, "scale", "a positive number (the largest raw pixel value)")
        if not np.isfinite(scale) or scale <= 0:
            raise ParameterError(
                "scale", f"scale must be a positive number (the largest raw pixel value), got {scale!r}"
            )
        self.scale = scale
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    def fit(self, x) -> Standardizer:
        """Compute per-channel mean and std of ``x / scale`` (``x``: NHWC, any real dtype)."""
        x = _images(x, "x")
        factor = _range_factor(x)
        n_pix = x.shape[0] * x.shape[1] * x.shape[2]

        def chunks():
            for i in range(0, x.shape[0], _CHUNK):
                c = x[i : i + _CHUNK]
                yield c if factor is None else c.astype(np.float64) * factor

        total = np.zeros(x.shape[3])
        for c in chunks():
            total += c.sum(axis=(0, 1, 2), dtype=np.float64)
        mean = total / n_pix
        sq = np.zeros(x.shape[3])
        for c in chunks():
            sq += ((c.astype(np.float64) - mean) ** 2).sum(axis=(0, 1, 2))
        std = np.sqrt(sq / n_pix)
        if factor is not None:  # undo the power-of-two rescaling (exact)
            mean, std = mean / factor, std / factor
        with np.errstate(over="ignore"):  # reported below
            unit_mean, unit_std = mean / self.scale, std / self.scale
        bad = ~(np.isfinite(unit_mean) & np.isfinite(unit_std) & (unit_std > 0))
        if bad.any():  # constant channels were refused above: this is overflow or underflow
            raise OverflowError(
                f"channel(s) {np.flatnonzero(bad).tolist()}: the statistics of x / scale are out of the float64 "
                f"range (scale={self.scale!r}; raw mean {mean.tolist()}, raw std {std.tolist()}): "
                "use a scale near the largest raw pixel value"
            )
        self.mean, self.std = unit_mean, unit_std
        return self

    def transform(self, x) -> np.ndarray:
        """float64 NHWC ``(x / scale - mean) / std``, same shape as ``x``."""
        return self._transform(x, "x")

    def _transform(self, x, name: str) -> np.ndarray:
        if self.mean is None:
            raise RuntimeError("Standardizer.transform called before fit")
        x = _images(x, name)
        if x.shape[3] != self.mean.shape[0]:
            raise ValueError(f"{name} has {x.shape[3]} channels, the statistics were fitted on {self.mean.shape[0]}")
        with np.errstate(over="ignore"):  # reported below
            out = (x.astype(np.float64) / self.scale - self.mean) / self.std
        if not (np.isfinite(out.min()) and np.isfinite(out.max())):  # +-inf only: x, mean, std are finite
            raise OverflowError(
                f"{name}: standardised values overflow float64 (pixels far beyond the training range "
                f"mean {self.mean.tolist()}, std {self.std.tolist()} in units of x / scale)"
            )
        return out

    def fit_transform(self, x) -> np.ndarray:
        return self.fit(x).transform(x)

    def __repr__(self) -> str:
        return f"Standardizer(scale={self.scale}, mean={self.mean}, std={self.std})"


class ZCA:
    """Regularised ZCA whitening of flattened images (Shankar et al. 2020; Lee et al. 2020).

    Fitted on the (standardised) training images ``X`` ``[n, d]`` with ``d = H*W*C``:
    ``C = (X - mu)^T (X - mu) / n`` with ``C = U diag(S) U^T``, and
    ``W = U diag(S + eps * mean(S))^(-1/2) U^T``; ``transform(x) = (x - mu) W`` reshaped back.
    ``eps`` is relative to the mean eigenvalue ``mean(S) = trace(C) / d`` (Lee et al.'s ``zca_reg``;
    0.1 is about their best value on CIFAR-10); ``eps = 0`` is plain ZCA and needs a full-rank ``C``
    (``n > d``). The whitened training covariance is ``U diag(S / (S + eps mean(S))) U^T``: close to
    identity along strong directions, damped along weak ones. ``center=False`` uses the second
    moment ``X^T X / n`` and no mean (Lee et al.'s variant). Cost: a ``d x d`` eigendecomposition
    (d = 3072 for CIFAR-10: ~75 MB, seconds).
    """

    def __init__(self, eps: float = 0.1, center: bool = True):
        what = "a number >= 0 (ZCA regulariser, relative to the mean eigenvalue)"
        eps = real_number(eps, "eps", what)
        if not np.isfinite(eps) or eps < 0:
            raise ParameterError(
                "eps", f"eps (ZCA regulariser, relative to the mean eigenvalue) must be >= 0, got {eps!r}"
            )
        self.eps, self.center = eps, check_flag(center, "center")
        self.mean: np.ndarray | None = None
        self.W: np.ndarray | None = None
        self.eigenvalues: np.ndarray | None = None

    def fit(self, x) -> ZCA:
        x = _images(x, "x")
        flat = x.reshape(x.shape[0], -1).astype(np.float64)
        self.mean = flat.mean(axis=0) if self.center else np.zeros(flat.shape[1])
        flat -= self.mean
        cov = flat.T @ flat / flat.shape[0]
        s, u = np.linalg.eigh(cov)
        s = np.clip(s, 0.0, None)
        reg = s + self.eps * s.mean()
        if not (reg > 1e-12 * max(s.max(), 1e-300)).all():
            raise ValueError("the covariance is singular (fewer images than pixels?): use eps > 0")
        self.eigenvalues = s
        self.W = (u * reg**-0.5) @ u.T
        self._shape = x.shape[1:]
        return self

    def transform(self, x) -> np.ndarray:
        return self._transform(x, "x")

    def _transform(self, x, name: str) -> np.ndarray:
        if self.W is None:
            raise RuntimeError("ZCA.transform called before fit")
        x = _images(x, name)
        if x.shape[1:] != self._shape:
            raise ValueError(f"{name} has image shape {x.shape[1:]}, ZCA was fitted on {self._shape}")
        flat = x.reshape(x.shape[0], -1).astype(np.float64) - self.mean
        return (flat @ self.W).reshape(x.shape)

    def fit_transform(self, x) -> np.ndarray:
        return self.fit(x).transform(x)


def hflip(x) -> np.ndarray:
    """Mirror NHWC images left-right (``x[:, :, ::-1, :]``, a copy)."""
    x = _images(x, "x")
    return x[:, :, ::-1, :].copy()


def hflip_augment(x, y):
    """Originals followed by their horizontal mirrors: ``(concat[x, hflip(x)], concat[y, y])``."""
    x = _images(x, "x")
    y = np.asarray(y)
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must have shape ({x.shape[0]},), got {y.shape}")
    return np.concatenate([x, hflip(x)]), np.concatenate([y, y])


class Preprocessed(NamedTuple):
    x_train: np.ndarray  # float64 NHWC; 2n images (originals, then mirrors) when flip=True
    x_test: np.ndarray | None  # float64 NHWC, transformed with the training statistics
    standardizer: Standardizer
    zca: ZCA | None


def preprocess(x_train, x_test=None, *, scale: float = 255.0, zca: bool | float | None = None, flip: bool = False):
    """The paper's preprocessing, fitted on ``x_train`` only and applied to both sets.

    1. ``x / scale`` (use the dataset's ``pixel_scale``), 2. per-channel standardisation with the
    training mean/std (:class:`Standardizer`), 3. optionally ZCA (``zca=True`` for eps 0.1, or a
    float eps; :class:`ZCA`, fitted on the standardised training images), 4. with ``flip=True`` the
    training set is augmented with mirrored raw images that go through the same fitted transforms
    (labels: ``np.concatenate([y_train, y_train])``). Statistics come from the original training
    images only (the per-channel ones are mirror-invariant anyway).
    Returns :class:`Preprocessed` ``(x_train, x_test, standardizer, zca)``; arrays are float64.
    """
    flip = check_flag(flip, "flip")
    whitener = _whitener(zca)
    x_train = _images(x_train, "x_train")
    if x_test is not None:
        x_test = _images(x_test, "x_test")
        if x_test.shape[3] != x_train.shape[3]:
            raise ValueError(f"x_test has {x_test.shape[3]} channels, x_train has {x_train.shape[3]}")
        if whitener is not None and x_test.shape[1:] != x_train.shape[1:]:
            raise ValueError(
                f"x_test has image shape {x_test.shape[1:]}, x_train {x_train.shape[1:]} (ZCA needs the same shape)"
            )
    std = Standardizer(scale).fit(x_train)

    def apply(x, name):
        out = std._transform(x, name)
        return whitener._transform(out, name) if whitener is not None else out

    train = std._transform(x_train, "x_train")
    if whitener is not None:
        train = whitener.fit_transform(train)
    if flip:
        train = np.concatenate([train, apply(hflip(x_train), "x_train")])
    test = None if x_test is None else apply(x_test, "x_test")
    return Preprocessed(train, test, std, whitener)


def _whitener(zca) -> ZCA | None:
    """``preprocess``'s ``zca``: None/False -> no ZCA, True -> eps 0.1, a number -> that eps."""
    if zca is None or isinstance(zca, bool | np.bool_):
        return ZCA() if zca else None
    if not is_real(zca):
        raise ParameterTypeError(
            "zca", f"zca must be True, False, None or a number (the ZCA eps), got {zca!r} ({type(zca).__name__})"
        )
    return ZCA(eps=float(zca))


def _range_factor(x: np.ndarray) -> np.ndarray | None:
    """Per-channel powers of two that bring each channel's largest |value| near 1, or None when every
    channel is within [2**-_RANGE, 2**_RANGE] (then the statistics are computed on ``x`` as it is).
    Raises the constant-channel error here when a channel is constant (exactly: min == max), and
    OverflowError for values beyond float64 (e.g. long double input)."""
    lo = hi = None
    for i in range(0, x.shape[0], _CHUNK):
        c = x[i : i + _CHUNK]
        c_lo, c_hi = c.min(axis=(0, 1, 2)), c.max(axis=(0, 1, 2))
        lo = c_lo if lo is None else np.minimum(lo, c_lo)
        hi = c_hi if hi is None else np.maximum(hi, c_hi)
    constant = lo == hi  # exact, in the input dtype (a float mean/std could hide it behind rounding)
    if constant.any():
        raise ValueError(f"channel(s) {np.flatnonzero(constant).tolist()} are constant in the training data")
    if not np.issubdtype(x.dtype, np.floating):
        return None  # integers: |value| < 2**64, squares fit float64
    with np.errstate(over="ignore"):  # long double beyond float64: reported below
        peak = np.maximum(np.abs(lo.astype(np.float64)), np.abs(hi.astype(np.float64)))
    if not np.isfinite(peak).all():
        raise OverflowError(f"x: pixel values beyond the float64 range (|value| > {np.finfo(np.float64).max:.4g})")
    if ((peak <= 2.0**_RANGE) & (peak >= 2.0**-_RANGE)).all():
        return None
    exponent = np.frexp(peak)[1]  # peak = m * 2**exponent with 0.5 <= m < 1
    return np.ldexp(1.0, np.clip(-exponent, -1000, 1000))  # exact powers of two (finite)
