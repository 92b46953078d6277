"""The random-patch first layer of Coates, Lee and Ng (2011), as Li et al. (2019, "Enhanced CNTK") put it
in front of the kernel: a fixed convolution with whitened patches of the training images and a
two-sided soft threshold, turning ``[n, H, W, C]`` images into ``[n, H / pool, W / pool, 2 K]`` features.

>>> rp = RandomPatches(n_patches=64, size=5, bias=1.0, seed=0).fit(x_train)   # doctest: +SKIP
>>> f_train, f_test = rp.transform(x_train), rp.transform(x_test)             # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from ..validation import ParameterError, as_images, check_int, check_positive, check_real
from ._checks import make_rng
from ._preprocess import ZCA

#: float64 values a chunk of :meth:`RandomPatches.transform` may hold in one temporary (about 64 MB)
_CHUNK_VALUES = 8 * 1024 * 1024


class RandomPatches:
    """Coates et al.'s random-patch features, fitted on training images only.

    Parameters (all checked; a bad one raises :class:`~cntk_core.validation.ParameterError` or
    ``ParameterTypeError`` naming it):

    - ``n_patches`` (K >= 2): patches sampled, i.e. filters; the output has ``2 K`` channels.
    - ``size`` (>= 1): patches are ``size x size x C``; must fit in the training images.
    - ``bias`` (finite, >= 0): the soft threshold.
    - ``seed``: anything :func:`numpy.random.default_rng` takes; the same seed and training images
      give the same filters.
    - ``pool`` (>= 1): the side of the non-overlapping average pooling after the threshold
      (``1``: none); image heights and widths must be multiples of it (checked by fit and transform).
    - ``zca_eps`` (> 0): the whitening regulariser, relative to the mean eigenvalue (as :class:`ZCA`);
      never 0, as the normalised patches are all orthogonal to the constant patch (a singular set).
    - ``norm_eps`` (>= 0): added to each patch's norm before dividing by it.

    :meth:`fit` ``(x_train [n, H, W, C])`` does, in this order:

    1. draws K patch origins ``(image, row, col)`` independently and uniformly, the image from
       ``0..n-1`` and the top-left corner from ``0..H-size`` x ``0..W-size`` (every patch lies inside
       its image; the same origin may be drawn twice), and cuts the patches ``x[image, row:row+size,
       col:col+size, :]``, flattened to ``d = size * size * C`` values (row, column, channel order);
    2. normalises each patch: ``v = (p - mean(p)) / (||p - mean(p)||_2 + norm_eps)`` (the mean over
       its ``d`` values);
    3. ZCA-whitens the set ``V [K, d]``: ``mu = mean_k V[k]``, ``C = (V - mu)^T (V - mu) / K =
       U diag(S) U^T``, ``W = U diag(S + zca_eps * mean(S))^(-1/2) U^T``, and the filters are
       ``F = (V - mu) W`` (:class:`ZCA` on the patches).

    Fitted attributes: ``origins`` (int64 ``[K, 3]``: image, row, col), ``filters`` (float64
    ``[K, size, size, C]``), ``zca`` (the fitted :class:`ZCA`) and ``n_channels`` (C).
    The fit allocates ``O(K d + d^2)`` floats and never looks at anything but ``x_train``.

    :meth:`transform` ``(x [m, H', W', C])`` (any image size, the fitted C) gives float64
    ``[m, H' / pool, W' / pool, 2 K]``:

    1. ``z[n, i, j, k] = sum_{a, b < size, c} x[n, i + a - t, j + b - t, c] F[k, a, b, c]`` with
       ``t = (size - 1) // 2`` and pixels outside the image read as 0: a SAME-padded stride-1
       cross-correlation (as a CNN's convolution; for an even ``size`` the extra padded row/column
       is at the bottom/right, as TensorFlow's SAME);
    2. channels ``k`` and ``K + k`` of the result are ``max(z - bias, 0)`` and ``max(-z - bias, 0)``;
    3. with ``pool > 1``, the mean over each ``pool x pool`` block of pixels (stride ``pool``).

    It works in chunks of images; besides the output it allocates about 64 MB of temporaries.
    """

    def __init__(
        self,
        n_patches: int = 256,
        size: int = 5,
        bias: float = 1.0,
        seed=0,
        *,
        pool: int = 1,
        zca_eps: float = 0.01,
        norm_eps: float = 1e-8,
    ):
        self.n_patches = check_int(n_patches, "n_patches", 2, " (patches sampled, the filters)")
        self.size = check_int(size, "size", 1, " (the patch side in pixels)")
        self.bias = _non_negative(bias, "bias")
        self.pool = check_int(pool, "pool", 1, " (the side of the average pooling; 1: none)")
        self.zca_eps = float(check_positive(zca_eps, "zca_eps"))
        self.norm_eps = _non_negative(norm_eps, "norm_eps")
        make_rng(seed)  # refuse a bad seed now, not at fit
        self.seed = seed
        self.origins: np.ndarray | None = None
        self.filters: np.ndarray | None = None
        self.zca: ZCA | None = None
        self.n_channels: int | None = None

    def fit(self, x_train) -> RandomPatches:
        """Sample, normalise and whiten the patches of the training images ``x_train`` (NHWC float)."""
        x = as_images(x_train, "x_train")
        n, h, w, c = x.shape
        s = self.size
        if s > h or s > w:
            raise ParameterError("size", f"size={s}: the patches do not fit in the {h}x{w} training images")
        if h % self.pool or w % self.pool:
            raise ParameterError("pool", f"pool={self.pool} does not divide the {h}x{w} training images")
        if s * s * c == 1:
            raise ParameterError("size", "size=1 on 1-channel images: a patch is one value, 0 once its mean is removed")
        rng = make_rng(self.seed)
        k = self.n_patches
        origins = np.stack(
            [rng.integers(0, n, k), rng.integers(0, h - s + 1, k), rng.integers(0, w - s + 1, k)], axis=1
        ).astype(np.int64)
        patches = np.stack([x[i, r : r + s, q : q + s, :] for i, r, q in origins]).astype(np.float64)
        v = patches.reshape(k, -1)
        v = v - v.mean(axis=1, keepdims=True)
        v = v / (np.linalg.norm(v, axis=1, keepdims=True) + self.norm_eps)
        if not np.any(v - v.mean(axis=0)):
            raise ParameterError(
                "x_train",
                f"all {k} sampled patches are equal after normalisation (constant images?): nothing to whiten",
            )
        try:
            zca = ZCA(eps=self.zca_eps).fit(v.reshape(k, s, s, c))
        except ValueError:
            raise ParameterError(
                "zca_eps", f"zca_eps={self.zca_eps!r} is too small: the patches' covariance is singular"
            ) from None
        self.origins, self.zca, self.n_channels = origins, zca, c
        self.filters = zca.transform(v.reshape(k, s, s, c))
        return self

    def transform(self, x) -> np.ndarray:
        """float64 ``[m, H / pool, W / pool, 2 K]`` features of the NHWC images ``x`` (see the class)."""
        if self.filters is None:
            raise RuntimeError("RandomPatches.transform called before fit")
        x = as_images(x, "x")
        m, h, w, c = x.shape
        if c != self.n_channels:
            raise ParameterError("x", f"x has {c} channels, the patches were fitted on {self.n_channels}")
        p = self.pool
        if h % p or w % p:
            raise ParameterError("pool", f"pool={p} does not divide the {h}x{w} images")
        k, s = self.n_patches, self.size
        top = (s - 1) // 2
        flat = self.filters.reshape(k, s * s * c).T  # [(a, b, c), K], the order of the windows below
        out = np.empty((m, h // p, w // p, 2 * k))
        step = max(1, _CHUNK_VALUES // (h * w * max(s * s * c, 2 * k)))
        for lo in range(0, m, step):
            xp = np.pad(x[lo : lo + step].astype(np.float64), ((0, 0), (top, s - 1 - top), (top, s - 1 - top), (0, 0)))
            win = np.lib.stride_tricks.sliding_window_view(xp, (s, s), axis=(1, 2))  # [b, h, w, C, s, s]
            cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(-1, s * s * c)  # one copy: [b h w, (a, b, c)]
            z = (cols @ flat).reshape(-1, h, w, k)
            feats = np.concatenate([np.maximum(z - self.bias, 0.0), np.maximum(-z - self.bias, 0.0)], axis=3)
            if p > 1:
                feats = feats.reshape(-1, h // p, p, w // p, p, 2 * k).mean(axis=(2, 4))
            out[lo : lo + step] = feats
        return out

    def fit_transform(self, x_train) -> np.ndarray:
        """:meth:`fit` on ``x_train``, then :meth:`transform` of it."""
        return self.fit(x_train).transform(x_train)

    def describe(self) -> dict:
        """The settings as JSON types (an experiment's record)."""
        return {
            "n_patches": self.n_patches,
            "size": self.size,
            "bias": self.bias,
            "pool": self.pool,
            "zca_eps": self.zca_eps,
            "norm_eps": self.norm_eps,
            "seed": self.seed if isinstance(self.seed, int | None) else repr(self.seed),
        }

    def __repr__(self) -> str:
        return (
            f"RandomPatches(n_patches={self.n_patches}, size={self.size}, bias={self.bias}, seed={self.seed!r}, "
            f"pool={self.pool}, zca_eps={self.zca_eps}, norm_eps={self.norm_eps})"
        )


def _non_negative(value, name: str) -> float:
    value = float(check_real(value, name, "a finite number >= 0"))
    if value < 0:
        raise ParameterError(name, f"{name} must be a finite number >= 0, got {value!r}")
    return value
