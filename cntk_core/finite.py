"""Finite-width CNNs whose infinite-width limit is exactly :func:`cntk_core.kernel_matrix`.

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

Training dynamics: full-batch gradient descent on ``0.5 ||f(X) - Y||^2``; its linearisation is
kernel regression with the NTK, see :func:`kernel_regression_trajectory`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .gram import kernel_matrix
from .presets import cntk
from .recurrence import get_array_module
from .validation import as_images, as_real_array, check_dtype, check_flag, check_int, check_positive, check_real

READOUTS = ("gap", "vanilla")
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
    """

    depth: int
    width: int
    readout: str = "gap"
    fix_first: bool = False
    fix_last: bool = False

    def __post_init__(self):
        object.__setattr__(self, "depth", check_int(self.depth, "depth", 2, " (depth = number of conv layers + 1)"))
        object.__setattr__(self, "width", check_int(self.width, "width", 1))
        if self.readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {self.readout!r}")
        for name in ("fix_first", "fix_last"):  # a string such as "no" must not read as True
            object.__setattr__(self, name, check_flag(getattr(self, name), name))

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
        """Infinite-width kernel (NTK or NNGP) of this architecture: ``[n1, n2]`` float64 NumPy."""
        x1 = _host(x1)
        x2 = None if x2 is None else _host(x2)
        return kernel_matrix(x1, x2, kind=kind, **self.kernel_kwargs(), **kw)

    # -- parameters
    def init(self, image_shape: tuple, seed: int = 0, xp=np, dtype="float64") -> list:
        """Draw ``[W_1, ..., W_L, V]`` i.i.d. ``N(0, 1)`` for images ``(P, Q, C)``, on ``xp``'s device.

        ``dtype``: ``"float32"`` or ``"float64"``.
        """
        dtype = check_dtype(dtype)
        if len(image_shape) != 3:
            raise ValueError(f"image_shape must be (P, Q, C), got {image_shape!r}")
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
            raise ValueError(f"expected {self.n_conv + 1} parameter arrays, got {len(params)}")
        if params[0].shape[0] != 9 * x.shape[3] or params[0].shape[1] != self.width:
            raise ValueError(f"W_1 has shape {params[0].shape}, images have {x.shape[3]} channels (need (9C, n))")
        expect_v = x.shape[1] * x.shape[2] * self.width if self.readout == "vanilla" else self.width
        if params[-1].shape != (expect_v,):
            raise ValueError(f"V has shape {params[-1].shape}, expected ({expect_v},) for images {x.shape[1:]}")
        return x.astype(params[0].dtype, copy=False)

    # -- forward / backward
    def forward(self, params, x):
        """Outputs ``f: (N,)`` and a :class:`Cache` for :meth:`backward`."""
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

    def _scales(self, params) -> list[float]:
        return [1.0] + [1.0 / math.sqrt(self.width)] * (self.n_conv - 1)

    def gradient(self, params, x, r) -> list:
        """Gradient of ``sum_i r_i f(x_i)`` w.r.t. every parameter array (zeros for fixed ones)."""
        f, cache = self.forward(params, x)
        return self._gradient(params, cache, r)

    def _gradient(self, params, cache, r) -> list:
        xp = get_array_module(params[0])
        deltas = self.deltas(params, cache, r)
        grads = []
        for cols, delta, s, train, w in zip(
            cache.patches, deltas, self._scales(params), self.trainable[:-1], params[:-1], strict=True
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
        for cols, delta, s, train in zip(cache.patches, deltas, self._scales(params), self.trainable[:-1], strict=True):
            if train:
                g = s * xp.matmul(cols.transpose(0, 2, 1), delta)  # (N, k, n)
                blocks.append(g.reshape(g.shape[0], -1))
        if self.trainable[-1]:
            blocks.append(cache.features / math.sqrt(self.width))
        return xp.concatenate(blocks, axis=1)

    def empirical_ntk(self, params, x1, x2=None, *, method: str = "auto", max_entries: float = 2e7):
        """``Theta_hat[i, j] = <df(x1_i)/dtheta, df(x2_j)/dtheta>`` over trainable parameters: ``(N1, N2)``.

        Per conv layer the contraction is done without the full Jacobian, either as
        ``s^2 sum_{p,p'} (cols_i[p].cols_j[p']) (delta_i[p].delta_j[p'])`` (``method="gram"``, cost
        ``PQ^2 (k + n)`` per pair) or through per-example layer gradients ``s cols_i^T delta_i``
        (``method="jacobian"``, ``k * n`` numbers per example); ``"auto"`` picks the cheaper.
        Work is done in row blocks of about ``max_entries`` numbers.
        """
        if method not in ("auto", "gram", "jacobian"):
            raise ValueError(f"method must be 'auto', 'gram' or 'jacobian', got {method!r}")
        xp = get_array_module(params[0])
        _, c1 = self.forward(params, x1)
        d1 = self.deltas(params, c1)
        if x2 is None:
            c2, d2 = c1, d1
        else:
            _, c2 = self.forward(params, x2)
            d2 = self.deltas(params, c2)
        n1, n2 = c1.shape[0], c2.shape[0]
        pq = c1.shape[1] * c1.shape[2]
        theta = xp.zeros((n1, n2), dtype=params[0].dtype)
        for layer, s in enumerate(self._scales(params)):
            if not self.trainable[layer]:
                continue
            a1, a2, e1, e2 = c1.patches[layer], c2.patches[layer], d1[layer], d2[layer]
            k, n = a1.shape[2], e1.shape[2]
            use_gram = method == "gram" or (method == "auto" and pq * pq * (k + n) < k * n * (1 + 2 * pq))
            if use_gram:
                theta += s * s * _gram_contraction(a1, e1, a2, e2, max_entries)
            else:
                theta += s * s * _jacobian_contraction(a1, e1, a2, e2, max_entries)
        if self.trainable[-1]:
            theta += (c1.features @ c2.features.T) / self.width
        return theta


def _gram_contraction(a1, e1, a2, e2, max_entries):
    xp = get_array_module(a1)
    n1, pq, k = a1.shape
    n2 = a2.shape[0]
    a2f, e2f = a2.reshape(n2 * pq, k), e2.reshape(n2 * pq, -1)
    out = xp.empty((n1, n2), dtype=a1.dtype)
    rows = max(1, int(max_entries // (pq * pq * n2)))
    for i in range(0, n1, rows):
        sl = slice(i, min(n1, i + rows))
        b = sl.stop - sl.start
        ga = a1[sl].reshape(b * pq, k) @ a2f.T
        ge = e1[sl].reshape(b * pq, -1) @ e2f.T
        out[sl] = (ga * ge).reshape(b, pq, n2, pq).sum(axis=(1, 3))
    return out


def _jacobian_contraction(a1, e1, a2, e2, max_entries):
    xp = get_array_module(a1)
    n1, n2 = a1.shape[0], a2.shape[0]
    size = a1.shape[2] * e1.shape[2]
    rows = max(1, int(max_entries // size))
    out = xp.empty((n1, n2), dtype=a1.dtype)

    def jac(a, e, sl):
        return xp.matmul(a[sl].transpose(0, 2, 1), e[sl]).reshape(sl.stop - sl.start, size)

    for i in range(0, n1, rows):
        si = slice(i, min(n1, i + rows))
        ji = jac(a1, e1, si)
        for j in range(0, n2, rows):
            sj = slice(j, min(n2, j + rows))
            out[si, sj] = ji @ jac(a2, e2, sj).T
    return out


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
    spec = cntk(depth, readout, fix, fix_first=fix_first, fix_last=fix_last).canonical()  # one reading of fix
    return FiniteCNN(spec.depth, width, spec.readout, spec.fix_first, spec.fix_last)


# ----------------------------------------------------------------------------- empirical kernels
def empirical_ntk_samples(net: FiniteCNN, x1, x2=None, *, seeds=(0,), xp=np, dtype="float64") -> np.ndarray:
    """Empirical NTK at initialisation for each seed: ``(len(seeds), N1, N2)`` float64 NumPy.

    ``seeds``: a non-empty sequence of non-negative integers (e.g. ``range(8)``).
    """
    seeds = _seed_list(seeds)
    dtype = check_dtype(dtype)
    x1 = _images(x1)
    out = []
    for s in seeds:
        params = net.init(x1.shape[1:], seed=s, xp=xp, dtype=dtype)
        xa = xp.asarray(x1.astype(dtype))
        xb = None if x2 is None else xp.asarray(_images(x2).astype(dtype))
        out.append(_host(net.empirical_ntk(params, xa, xb)))
    return np.stack(out).astype(np.float64)


def empirical_nngp(
    net: FiniteCNN,
    x,
    *,
    n_inits: int,
    seed: int = 0,
    readout_average: bool = False,
    xp=np,
    dtype="float64",
) -> np.ndarray:
    """Output covariance over ``n_inits`` random initialisations: ``(N, N)`` float64 NumPy.

    ``E[f] = 0`` is known, so the estimate is ``(1/S) sum_s f_s f_s^T``. With
    ``readout_average=True`` the readout weights are averaged out exactly (the covariance given
    the features is ``features features^T / n``), which removes most of the sampling noise.
    Sampling error of the plain estimate (Gaussian outputs): ``sd = sqrt((K_ii K_jj + K_ij^2) / S)``.
    """
    n_inits = check_int(n_inits, "n_inits", 1)
    x = _images(x)
    xa = xp.asarray(x.astype(dtype))
    acc = np.zeros((x.shape[0], x.shape[0]))
    ss = np.random.SeedSequence(seed)
    for child in ss.spawn(int(n_inits)):
        params = net.init(x.shape[1:], seed=child, xp=xp, dtype=dtype)
        f, cache = net.forward(params, xa)
        if readout_average:
            acc += _host(cache.features @ cache.features.T) / net.width
        else:
            fh = _host(f)
            acc += np.outer(fh, fh)
    return acc / n_inits


def relative_error(a, b) -> float:
    """``||a - b||_F / ||b||_F`` of two finite arrays of the same shape (no broadcasting)."""
    a, b = _finite_array(a, "a"), _finite_array(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    nb = np.linalg.norm(b)
    if not nb > 0:
        raise ValueError("relative error against an all-zero reference (e.g. an NTK with no trained layer)")
    return float(np.linalg.norm(a - b) / nb)


# ----------------------------------------------------------------------------- training
def learning_rate(theta, scale: float = 1.0) -> float:
    """``eta = scale / lambda_max(theta)``. With ``scale = 1`` the top mode of the linearised GD
    is removed in one step and every mode contracts monotonically (``0 <= 1 - eta lambda < 1``);
    GD on the finite net stays stable as long as its own top NTK eigenvalue is below ``2/eta``.

    ``theta``: finite ``(N, N)`` kernel matrix; ``scale``: finite number > 0.
    """
    theta = _square(theta, "theta")
    scale = check_positive(scale, "scale")
    lam = float(np.linalg.eigvalsh(theta)[-1])
    if not lam > 0:
        raise ValueError(f"the kernel's top eigenvalue must be positive, got {lam}")
    return scale / lam


@dataclass
class TrainResult:
    """Trajectory of full-batch GD. ``steps``: ``(T,)`` recorded step indices; ``f_train``:
    ``(T, N)``; ``f_test``: ``(T, M)`` or ``None``; ``loss``: ``(T,)`` = ``0.5 ||f - Y||^2``;
    ``params``: final parameters; ``f0_train`` / ``f0_test``: raw outputs at initialisation."""

    steps: np.ndarray
    f_train: np.ndarray
    f_test: np.ndarray | None
    loss: np.ndarray
    params: list
    f0_train: np.ndarray
    f0_test: np.ndarray | None
    diverged: bool = False


def train_gd(
    net: FiniteCNN,
    params: list,
    x_train,
    y_train,
    *,
    eta: float,
    steps: int,
    x_test=None,
    center: bool = True,
    record_every: int = 1,
) -> TrainResult:
    """Full-batch gradient descent on ``0.5 ||g(X) - Y||^2`` for ``steps`` steps of size ``eta``.

    ``center=True`` trains the centred net ``g(x) = f(x; theta) - f(x; theta_0)`` (same gradients,
    zero initial output), whose wide limit is :func:`kernel_regression_trajectory` with
    ``f0 = 0``; ``center=False`` trains ``f`` itself (compare with ``f0`` = the net's initial
    outputs). ``params`` is not modified. Stops early, with ``diverged=True``, on a non-finite loss
    (inputs are checked to be finite, so that means ``eta`` is too large).

    ``eta``: finite number > 0; ``steps``: integer >= 0; ``record_every``: integer >= 1 (the last
    step is always recorded); ``y_train``: finite ``(N,)``.
    """
    steps = check_int(steps, "steps", 0)
    record_every = check_int(record_every, "record_every", 1)
    eta = check_positive(eta, "eta")
    center = check_flag(center, "center")
    xp = get_array_module(params[0])
    dtype = params[0].dtype
    xtr = xp.asarray(_images(x_train, "x_train").astype(dtype))
    y = _vector(y_train, "y_train", xtr.shape[0], " (one scalar target per image)")
    yd = xp.asarray(y.astype(dtype))
    xte = None if x_test is None else xp.asarray(_images(x_test, "x_test").astype(dtype))
    params = [w.copy() for w in params]
    f0 = net.apply(params, xtr)
    f0_test = None if xte is None else net.apply(params, xte)
    off, off_t = (f0, f0_test) if center else (0.0, 0.0)
    rec_steps, rec_f, rec_t, rec_loss = [], [], [], []
    diverged = False
    for t in range(steps + 1):
        f, cache = net.forward(params, xtr)
        g = f - off
        resid = g - yd
        loss = 0.5 * float((resid * resid).sum())
        if not math.isfinite(loss):
            diverged = True
            break
        if t % record_every == 0 or t == steps:
            rec_steps.append(t)
            rec_f.append(_host(g))
            rec_loss.append(loss)
            if xte is not None:
                rec_t.append(_host(net.apply(params, xte) - off_t))
        if t == steps:
            break
        grads = net._gradient(params, cache, resid)
        for w, gw, train in zip(params, grads, net.trainable, strict=True):
            if train:
                w -= eta * gw
    return TrainResult(
        steps=np.asarray(rec_steps),
        f_train=np.asarray(rec_f),
        f_test=np.asarray(rec_t) if xte is not None else None,
        loss=np.asarray(rec_loss),
        params=params,
        f0_train=_host(f0),
        f0_test=None if f0_test is None else _host(f0_test),
        diverged=diverged,
    )


def kernel_regression_trajectory(
    theta_train,
    y_train,
    *,
    eta: float,
    steps,
    theta_test_train=None,
    f0_train=None,
    f0_test=None,
    mode: str = "gd",
):
    """Outputs of the linearised (infinite-width) net trained on the squared loss, in closed form.

    With ``Theta = U diag(lambda) U^T`` (training Gram, ``(N, N)``) and residual ``r0 = Y - f0``:

    * ``mode="flow"`` (gradient flow, time ``eta * t``):
      ``f_t = f0 + (I - exp(-eta Theta t)) r0``;
      test ``f_t(x*) = f0(x*) + Theta(x*, X) Theta^{-1} (I - exp(-eta Theta t)) r0``;
    * ``mode="gd"`` (discrete GD with step ``eta``, what :func:`train_gd` does):
      ``exp(-eta Theta t)`` replaced by ``(I - eta Theta)^t``.

    ``Theta^{-1}(I - ...)`` is formed per eigenvalue as ``(1 - e^{-eta lambda t}) / lambda``
    (limit ``eta t`` at ``lambda = 0``), so a singular ``Theta`` is fine. ``f0 = None`` means zero
    initial output (the centred net). ``steps``: int or sequence of ``T`` step counts (integers
    >= 0; with ``mode="flow"`` any finite times >= 0). ``eta``: finite number > 0. All arrays must
    be finite: ``theta_test_train`` ``(M, N)``, ``f0_train`` ``(N,)``, ``f0_test`` ``(M,)`` (only
    together with ``theta_test_train``).
    Returns ``(f_train (T, N), f_test (T, M) or None)``; float64 NumPy.
    """
    if mode not in ("gd", "flow"):
        raise ValueError(f"mode must be 'gd' or 'flow', got {mode!r}")
    eta = check_positive(eta, "eta")
    theta = _square(theta_train, "theta_train")
    n = theta.shape[0]
    y = _vector(y_train, "y_train", n)
    ts = _step_counts(steps, integer=mode == "gd")
    f0 = None if f0_train is None else _vector(f0_train, "f0_train", n)
    tt = None
    if theta_test_train is not None:
        tt = _finite_array(theta_test_train, "theta_test_train")
        if tt.ndim != 2 or tt.shape[1] != n:
            raise ValueError(f"theta_test_train must be (M, {n}), got {tt.shape}")
    if f0_test is not None:
        if tt is None:
            raise ValueError("f0_test needs theta_test_train (there are no test outputs without it)")
        f0_test = _vector(f0_test, "f0_test", tt.shape[0])
    lam, u = np.linalg.eigh(0.5 * (theta + theta.T))
    lam = np.clip(lam, 0.0, None)
    r0 = y - (0.0 if f0 is None else f0)
    c = u.T @ r0  # (N,)
    if mode == "flow":
        decay = np.exp(-eta * np.outer(ts, lam))  # (T, N)
    else:
        decay = np.sign(1 - eta * lam) ** ts[:, None] * np.abs(1 - eta * lam) ** ts[:, None]
    base_train = 0.0 if f0 is None else f0
    f_train = base_train + ((1 - decay) * c) @ u.T
    f_test = None
    if tt is not None:
        small = lam <= 1e-12 * max(lam[-1], 1e-300)
        safe = np.where(small, 1.0, lam)
        coef = np.where(small, eta * ts[:, None], (1 - decay) / safe)  # (T, N)
        base_test = 0.0 if f0_test is None else f0_test
        f_test = base_test + (coef * c) @ (tt @ u).T
    return f_train, f_test


def ntk_change(net: FiniteCNN, params0, params1, x) -> float:
    """Relative change ``||Theta_1 - Theta_0||_F / ||Theta_0||_F`` of the empirical NTK on ``x``."""
    t0 = _host(net.empirical_ntk(params0, x))
    t1 = _host(net.empirical_ntk(params1, x))
    return relative_error(t1, t0)


# ----------------------------------------------------------------------------- fully connected
def relu_arccos(rho):
    """Normalised ReLU arc-cosine maps ``(kappa1, kappa0)`` of a correlation ``rho`` in [-1, 1]:
    ``kappa1 = (rho (pi - arccos rho) + sqrt(1 - rho^2)) / pi`` (= ``2 E[relu(u) relu(v)]``) and
    ``kappa0 = (pi - arccos rho) / pi`` (= ``2 E[step(u) step(v)]``) for unit-variance ``u, v``."""
    rho = np.clip(np.asarray(rho, dtype=np.float64), -1.0, 1.0)
    ang = np.arccos(rho)
    return (rho * (np.pi - ang) + np.sqrt(1 - rho * rho)) / np.pi, (np.pi - ang) / np.pi


def fc_relu_ntk(
    x1, x2=None, *, n_hidden: int, kind: str = "ntk", fix_first: bool = False, fix_last: bool = False
) -> np.ndarray:
    """Closed-form NTK / NNGP of a fully-connected ReLU net (``c_sigma = 2``, no biases, NTK param).

    ``x``: ``(N, d)``. ``Sigma^0 = x x'^T``; per hidden layer ``Sigma <- sqrt(v v') kappa1(rho)``,
    ``Theta <- kappa0(rho) Theta + Sigma``. A CNTK of depth ``d`` on ``1 x 1`` images equals this
    with ``n_hidden = d - 1``, divided by ``9^(d-1)`` (the paper folds ``1/9`` into each ReLU).
    ``n_hidden``: number of hidden ReLU layers, an integer >= 0 (``fix_first`` is the input layer,
    ``fix_last`` the readout). ``n_hidden = 0`` is the linear model ``w . x``: its one layer is both,
    so NTK = ``x x'^T``, or 0 when either flag fixes it; NNGP = ``x x'^T``.
    Returns float64 ``(N1, N2)``.
    """
    if kind not in ("ntk", "nngp"):
        raise ValueError(f"kind must be 'ntk' or 'nngp', got {kind!r}")
    n_hidden = check_int(n_hidden, "n_hidden", 0)
    fix_first = check_flag(fix_first, "fix_first")
    fix_last = check_flag(fix_last, "fix_last")
    a = _finite_array(x1, "x1")
    b = a if x2 is None else _finite_array(x2, "x2")
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"x1, x2 must be (N, d) with equal d, got {a.shape} and {b.shape}")
    sym = x2 is None
    sig = a @ b.T
    va, vb = (a * a).sum(1), (b * b).sum(1)
    theta = np.zeros_like(sig) if fix_first else sig.copy()
    k = sig
    for _ in range(n_hidden):
        if sym:  # self pairs get rho == 1 exactly (arccos is ill-conditioned there)
            va = vb = np.diag(sig).copy()
        norm = np.sqrt(np.outer(va, vb))
        rho = np.divide(sig, norm, out=np.zeros_like(sig), where=norm > 0)
        k1, k0 = relu_arccos(rho)
        k = norm * k1
        theta = k0 * theta + k
        sig = k
        # variances of a ReLU layer with c_sigma = 2: kappa1(1) = 1, so v is unchanged
    if n_hidden == 0:  # one layer, both input and readout
        theta = np.zeros_like(sig) if fix_first or fix_last else sig
    elif fix_last:
        theta = theta - k
    return theta if kind == "ntk" else k


# ----------------------------------------------------------------------------- helpers
def _host(a) -> np.ndarray:
    if type(a).__module__.startswith("cupy"):
        return a.get()
    return np.asarray(a)


def _images(x, name: str = "x"):
    """Validate NHWC float images. CuPy arrays are returned as is after a shape/dtype check (no host copy)."""
    if type(x).__module__.startswith("cupy"):
        if x.ndim != 4 or x.dtype.kind != "f" or 0 in x.shape:
            raise ValueError(f"{name}: expected a non-empty float batch of NHWC images, got {x.dtype} {x.shape}")
        return x
    return as_images(x, name)


def _finite_array(x, name: str) -> np.ndarray:
    """``x`` as a finite float64 NumPy array (CuPy arrays are copied to the host), or raise."""
    return as_real_array(_host(x), name, finite=True)


def _vector(x, name: str, n: int, hint: str = "") -> np.ndarray:
    """Finite float64 ``(n,)`` array, or raise."""
    arr = _finite_array(x, name)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},){hint}, got {arr.shape}")
    return arr


def _square(x, name: str) -> np.ndarray:
    """Finite float64 ``(N, N)`` array with ``N >= 1``, or raise."""
    arr = _finite_array(x, name)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty square (N, N) matrix, got shape {arr.shape}")
    return arr


def _step_counts(steps, integer: bool) -> np.ndarray:
    """``steps`` (one value or a sequence) as a float64 ``(T,)`` array of values >= 0.

    ``integer=True``: every value must be a non-bool integer (GD step counts); else any finite real.
    """
    if isinstance(steps, np.ndarray) and steps.ndim == 0:
        steps = steps[()]
    if isinstance(steps, str | bytes):
        raise TypeError(f"steps must be a number or a sequence of numbers, got {steps!r}")
    try:
        scalar = np.ndim(steps) == 0
    except (TypeError, ValueError):  # ragged nested sequences
        raise TypeError(f"steps must be a number or a sequence of numbers, got {steps!r}") from None
    items = [steps] if scalar else list(steps)
    if not items:
        raise ValueError("steps is empty (give at least one step count)")
    for i, t in enumerate(items):
        label = "steps" if scalar else f"steps[{i}]"
        if integer:
            check_int(t, label, 0)
        elif check_real(t, label) < 0:
            raise ValueError(f"{label} must be >= 0, got {t!r}")
    return np.asarray(items, dtype=np.float64)


def _seed_list(seeds) -> list[int]:
    """``seeds`` as a non-empty list of non-negative ``int``, or raise."""
    if isinstance(seeds, str | bytes):
        raise TypeError(f"seeds must be a sequence of integers, got {seeds!r}")
    try:
        items = list(seeds)
    except TypeError:
        raise TypeError(f"seeds must be a sequence of integers (e.g. range(8) or [0]), got {seeds!r}") from None
    if not items:
        raise ValueError("seeds is empty (give at least one seed)")
    return [check_int(s, f"seeds[{i}]", 0) for i, s in enumerate(items)]
