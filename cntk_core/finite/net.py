"""The finite CNN: parameters, forward pass, backpropagation.

The networks are the engine's architectures: ``L = depth - 1`` layers of 3x3 SAME convolution
(stride 1, no bias) each followed by a ReLU, then a readout (``"vanilla"``: flatten + FC, or
``"gap"``: global average pool + FC) with one scalar output. NTK parameterisation, all weights
i.i.d. ``N(0, 1)``; the scale factors are derived from ``docs/math.md``:

* first conv: ``h1[p, k] = sum_{a, b, c} W1[(a, b, c), k] x[p + (a, b), c]`` (no factor), so that
  ``Cov h1 = tr3(S0) = Sigma^(0)`` with no ``1/(9C)``;
* every ReLU carries ``sqrt(c_sigma / 9) = sqrt(2/9)``: ``a = sqrt(2/9) relu(h)``, which gives the
  paper's ``K`` and ``K_dot`` with their ``1/(9 pi)``;
* later convs (input width ``n``): ``h[p, k] = n^{-1/2} sum_{a, b, c} W[(a, b, c), k] a[p + (a, b), c]``
  so that ``Cov h = tr3(K)``;
* vanilla readout ``f = n^{-1/2} sum_{p, c} V[p, c] a_L[p, c]`` (no ``1/sqrt(PQ)``: the kernel
  readout is ``sum_p Theta[p, p]``); GAP readout ``f = n^{-1/2} sum_c V[c] (1/PQ) sum_p a_L[p, c]``.

A fixed layer (``fix_first`` / ``fix_last``) keeps its random weights and contributes no gradient.
Everything is plain array code with ``xp = get_array_module(x)``: NumPy and CuPy arrays both work
(weights are drawn on the host with NumPy, so both backends see identical nets for a seed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..architecture import Architecture
from ..backend import to_host
from ..gram import network_kernel
from ..recurrence import get_array_module
from ..validation import ParameterError, ParameterTypeError, check_dtype, check_int
from ._checks import _images
from .empirical import empirical_ntk as _empirical_ntk

RELU_SCALE = math.sqrt(2.0 / 9.0)  # sqrt(c_sigma / q^2), c_sigma = 2, q = 3


# ----------------------------------------------------------------------------- im2col
def im2col(a):
    """3x3 SAME patches: ``(N, P, Q, C) -> (N, P*Q, 9*C)``, rows ordered ``(da, db, c)``."""
    xp = get_array_module(a)
    n, p, q, c = a.shape
    padded = xp.pad(a, ((0, 0), (1, 1), (1, 1), (0, 0)))
    cols = [padded[:, da : da + p, db : db + q, :] for da in range(3) for db in range(3)]
    return xp.stack(cols, axis=3).reshape(n, p * q, 9 * c)


def col2im(g, shape):
    """Adjoint of :func:`im2col`: ``(N, P*Q, 9*C) -> (N, P, Q, C)`` (sums overlapping patches)."""
    xp = get_array_module(g)
    n, p, q, c = shape
    g = g.reshape(n, p, q, 9, c)
    padded = xp.zeros((n, p + 2, q + 2, c), dtype=g.dtype)
    for k, (da, db) in enumerate((da, db) for da in range(3) for db in range(3)):
        padded[:, da : da + p, db : db + q, :] += g[:, :, :, k, :]
    return padded[:, 1:-1, 1:-1, :]


# ----------------------------------------------------------------------------- the network
@dataclass
class Cache:
    """Forward-pass intermediates of a batch of ``N`` images (``PQ = P*Q`` positions).

    ``patches[l]``: ``(N, PQ, k_l)`` im2col of conv ``l``'s input; ``masks[l]``: ``(N, PQ, n)`` bool
    ``h_l > 0``; ``features``: readout input ``(N, PQ*n)`` (vanilla) or ``(N, n)`` (GAP).
    """

    shape: tuple
    patches: list = field(default_factory=list)
    masks: list = field(default_factory=list)
    features: object = None


@dataclass(frozen=True)
class FiniteCNN:
    """A finite CNN of the paper's architecture (see the module docstring for the scalings).

    ``depth``: the paper's ``d`` = number of 3x3 convs + 1 (>= 2); ``width``: channels ``n`` of
    every conv; ``readout``: ``"gap"`` or ``"vanilla"``; ``fix_first`` / ``fix_last``: first conv /
    final FC not trained. Parameters are a list ``[W_1, ..., W_L, V]`` with ``W_1: (9C, n)``,
    ``W_l: (9n, n)``, ``V: (PQ*n,)`` (vanilla, ordered ``(p, c)``) or ``(n,)`` (GAP).
    The network without its width is :attr:`architecture`; :meth:`from_architecture` builds one
    from that value.
    """

    depth: int
    width: int
    readout: str = "gap"
    fix_first: bool = False
    fix_last: bool = False

    def __post_init__(self):
        # Architecture checks depth, readout and the flags (a string such as "no" must not read as True)
        arch = Architecture(self.depth, self.readout, self.fix_first, self.fix_last)
        object.__setattr__(self, "depth", arch.depth)
        object.__setattr__(self, "width", check_int(self.width, "width", 1))
        object.__setattr__(self, "fix_first", arch.fix_first)
        object.__setattr__(self, "fix_last", arch.fix_last)

    @classmethod
    def from_architecture(cls, architecture: Architecture, width: int) -> FiniteCNN:
        """The net of ``width`` channels per conv whose infinite-width limit is ``architecture``'s kernel."""
        if not isinstance(architecture, Architecture):
            raise ParameterTypeError(
                "architecture", f"architecture must be a cntk_core.Architecture, got {type(architecture).__name__}"
            )
        a = architecture
        return cls(a.depth, width, a.readout, a.fix_first, a.fix_last)

    @property
    def architecture(self) -> Architecture:
        """The network without its width: depth, readout and fixed layers."""
        return Architecture(self.depth, self.readout, self.fix_first, self.fix_last)

    @property
    def n_conv(self) -> int:
        return self.depth - 1

    @property
    def trainable(self) -> list[bool]:
        """Per parameter array: does it receive gradient?"""
        return [not self.fix_first] + [True] * (self.n_conv - 1) + [not self.fix_last]

    def kernel_kwargs(self) -> dict:
        """Keyword arguments of :func:`cntk_core.kernel_matrix` for this architecture's limit."""
        return dict(depth=self.depth, readout=self.readout, fix_first=self.fix_first, fix_last=self.fix_last)

    def exact_kernel(self, x1, x2=None, kind: str = "ntk", **kw) -> np.ndarray:
        """Infinite-width kernel (NTK or NNGP) of this architecture: ``[n1, n2]`` float64 NumPy.

        ``kw``: further keywords of :func:`cntk_core.network_kernel` (``dtype``, ``backend``, ...).
        """
        x2 = None if x2 is None else to_host(x2)
        return network_kernel(self.architecture, to_host(x1), x2, kind=kind, **kw)

    # -- parameters
    def init(self, image_shape: tuple, seed: int = 0, xp=np, dtype="float64") -> list:
        """Draw ``[W_1, ..., W_L, V]`` i.i.d. ``N(0, 1)`` for images ``(P, Q, C)``, on ``xp``'s device.

        ``dtype``: ``"float32"`` or ``"float64"``.
        """
        dtype = check_dtype(dtype)
        if len(image_shape) != 3:
            raise ParameterError("image_shape", f"image_shape must be (P, Q, C), got {image_shape!r}")
        p, q, c = (int(s) for s in image_shape)
        n = self.width
        rng = np.random.default_rng(seed)
        shapes = [(9 * c, n)] + [(9 * n, n)] * (self.n_conv - 1)
        shapes.append((p * q * n,) if self.readout == "vanilla" else (n,))
        return [xp.asarray(rng.standard_normal(s).astype(dtype)) for s in shapes]

    def n_params(self, image_shape: tuple, trainable_only: bool = True) -> int:
        p, q, c = image_shape
        n = self.width
        sizes = [9 * c * n] + [9 * n * n] * (self.n_conv - 1) + [p * q * n if self.readout == "vanilla" else n]
        return sum(s for s, t in zip(sizes, self.trainable, strict=True) if t or not trainable_only)

    def _check(self, params, x):
        x = _images(x)
        if len(params) != self.n_conv + 1:
            raise ParameterError("params", f"expected {self.n_conv + 1} parameter arrays, got {len(params)}")
        if params[0].shape[0] != 9 * x.shape[3] or params[0].shape[1] != self.width:
            raise ValueError(f"W_1 has shape {params[0].shape}, images have {x.shape[3]} channels (need (9C, n))")
        expect_v = x.shape[1] * x.shape[2] * self.width if self.readout == "vanilla" else self.width
        if params[-1].shape != (expect_v,):
            raise ValueError(f"V has shape {params[-1].shape}, expected ({expect_v},) for images {x.shape[1:]}")
        return x.astype(params[0].dtype, copy=False)

    def _scales(self) -> list[float]:
        """Factor of each conv's weights in its output: 1 for the first, ``n^{-1/2}`` after."""
        return [1.0] + [1.0 / math.sqrt(self.width)] * (self.n_conv - 1)

    # -- forward / backward
    def forward(self, params, x):
        """Outputs ``f: (N,)`` and a :class:`Cache` for :meth:`deltas`."""
        x = self._check(params, x)
        xp = get_array_module(params[0])
        x = xp.asarray(x)
        n_img, p, q, _ = x.shape
        cache = Cache(shape=(n_img, p, q))
        a = x
        for layer, w in enumerate(params[:-1]):
            cols = im2col(a)
            h = cols @ w
            if layer > 0:
                h *= 1.0 / math.sqrt(a.shape[3])
            mask = h > 0
            cache.patches.append(cols)
            cache.masks.append(mask)
            a = (RELU_SCALE * xp.where(mask, h, 0)).reshape(n_img, p, q, self.width)
        feats = a.reshape(n_img, p * q * self.width) if self.readout == "vanilla" else a.mean(axis=(1, 2))
        cache.features = feats
        f = feats @ params[-1] / math.sqrt(self.width)
        return f, cache

    def apply(self, params, x):
        """Outputs ``f(x)``: ``(N,)`` array on the parameters' device."""
        return self.forward(params, x)[0]

    def deltas(self, params, cache: Cache, r=None) -> list:
        """Backpropagated ``d(sum_i r_i f_i) / d h_l`` per conv, each ``(N, PQ, n)``, with ``h_l``
        the conv output *before* its ``n^{-1/2}`` factor (so ``dW_l = s_l * cols^T delta_l``).

        ``r=None`` means ones, i.e. the per-example derivatives ``d f_i / d h_l[i]``.
        """
        xp = get_array_module(params[0])
        n_img, p, q = cache.shape
        n = self.width
        v = params[-1] / math.sqrt(n)
        if self.readout == "vanilla":
            g = xp.broadcast_to(v.reshape(1, p * q, n), (n_img, p * q, n))
        else:
            g = xp.broadcast_to((v / (p * q)).reshape(1, 1, n), (n_img, p * q, n))
        if r is not None:
            g = g * xp.asarray(r, dtype=v.dtype).reshape(n_img, 1, 1)
        out = [None] * self.n_conv
        for layer in range(self.n_conv - 1, -1, -1):
            delta = RELU_SCALE * xp.where(cache.masks[layer], g, 0)
            out[layer] = delta
            if layer > 0:
                gcols = (delta @ params[layer].T) / math.sqrt(n)
                g = col2im(gcols, (n_img, p, q, n)).reshape(n_img, p * q, n)
        return out

    def gradient(self, params, x, r) -> list:
        """Gradient of ``sum_i r_i f(x_i)`` w.r.t. every parameter array (zeros for fixed ones)."""
        f, cache = self.forward(params, x)
        return self._gradient(params, cache, r)

    def _gradient(self, params, cache, r) -> list:
        xp = get_array_module(params[0])
        deltas = self.deltas(params, cache, r)
        grads = []
        for cols, delta, s, train, w in zip(
            cache.patches, deltas, self._scales(), self.trainable[:-1], params[:-1], strict=True
        ):
            if not train:
                grads.append(xp.zeros_like(w))
                continue
            k, n = cols.shape[2], delta.shape[2]
            grads.append(s * (cols.reshape(-1, k).T @ delta.reshape(-1, n)))
        rr = xp.asarray(r, dtype=params[-1].dtype)
        gv = (rr @ cache.features) / math.sqrt(self.width) if self.trainable[-1] else xp.zeros_like(params[-1])
        grads.append(gv)
        return grads

    def per_example_gradients(self, params, x):
        """Flattened gradient of each ``f(x_i)`` w.r.t. the *trainable* parameters: ``(N, n_params)``.

        Memory ``N * n_params``: meant for small nets (tests, finite differences); use
        :meth:`empirical_ntk` for wide ones.
        """
        xp = get_array_module(params[0])
        f, cache = self.forward(params, x)
        deltas = self.deltas(params, cache)
        blocks = []
        for cols, delta, s, train in zip(cache.patches, deltas, self._scales(), self.trainable[:-1], strict=True):
            if train:
                g = s * xp.matmul(cols.transpose(0, 2, 1), delta)  # (N, k, n)
                blocks.append(g.reshape(g.shape[0], -1))
        if self.trainable[-1]:
            blocks.append(cache.features / math.sqrt(self.width))
        return xp.concatenate(blocks, axis=1)

    def empirical_ntk(self, params, x1, x2=None, *, method: str = "auto", max_entries: float = 2e7):
        """``Theta_hat[i, j] = <df(x1_i)/dtheta, df(x2_j)/dtheta>`` over trainable parameters: ``(N1, N2)``.

        See :func:`cntk_core.finite.empirical.empirical_ntk` (layer-by-layer contractions, no full
        Jacobian; ``method``: ``"auto"``, ``"gram"`` or ``"jacobian"``; row blocks of about
        ``max_entries`` numbers).
        """
        return _empirical_ntk(self, params, x1, x2, method=method, max_entries=max_entries)


def finite_cnn(
    depth: int,
    width: int,
    readout: str = "gap",
    fix: bool = False,
    *,
    fix_first: bool | None = None,
    fix_last: bool | None = None,
) -> FiniteCNN:
    """The finite net whose limit is ``kernel_matrix(depth=, readout=, fix=, fix_first=, fix_last=)``."""
    arch = Architecture.from_options(depth, readout, fix, fix_first, fix_last)  # the one reading of fix
    return FiniteCNN.from_architecture(arch, width)
