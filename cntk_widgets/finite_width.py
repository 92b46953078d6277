"""Finite-width view: train finite CNNs and watch them turn into kernel regression as width grows.

Two layers, so that tests need no browser:

* :class:`FiniteWidthModel` (plain Python): data, exact kernels and the four experiments, each
  returning plain NumPy results;
* :func:`finite_width_view` (ipywidgets + plotly ``go.FigureWidget``, in
  :mod:`cntk_widgets.finite_width_view`, re-exported here): controls and four panels,
  (a) relative error of the empirical NTK against width (log-log, with a ``1/sqrt(width)`` guide),
  (b) empirical NNGP entries against the exact NNGP at the width of the slider,
  (c) relative change of the empirical NTK during training against width,
  (d) test predictions of the trained nets against kernel regression.

The view computes its first result as soon as it is built (in the background, with progress);
afterwards work runs when "Run" is pressed. The defaults take about a second on one CPU core.
"""

from __future__ import annotations

import contextlib
from copy import deepcopy
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from cntk_core import Architecture
from cntk_core.finite import (
    FiniteCNN,
    empirical_nngp,
    empirical_ntk_samples,
    kernel_regression_trajectory,
    learning_rate,
    ntk_change,
    relative_error,
    train_gd,
)

from .models import setting_int

#: where the finite-width view's small images come from (:func:`load_small_images`): scikit-learn's
#: bundled digits or Gaussian noise; not a data set of :data:`cntk_core.data.DATASETS`
IMAGE_SOURCES = ("digits", "random")


@dataclass(frozen=True)
class FiniteWidthConfig:
    """Settings of one run. ``widths``: channel counts compared; ``depth``: the paper's depth
    (convs + 1); ``steps``: full-batch GD steps at ``eta = lr_scale / lambda_max(exact NTK)``;
    ``n_seeds``: initialisations averaged per width; images are ``image_size x image_size x 1``, from
    ``dataset`` (one of :data:`IMAGE_SOURCES`). :attr:`architecture` is the network without its width."""

    widths: tuple = (8, 32, 128)
    depth: int = 3
    readout: str = "gap"
    fix: bool = False
    steps: int = 20
    seed: int = 0
    n_seeds: int = 2
    n_train: int = 8
    n_test: int = 4
    image_size: int = 6
    n_nngp_inits: int = 50
    lr_scale: float = 1.0
    dataset: str = "digits"
    xp: object = None  # None: numpy; or the cupy module to run the nets on a GPU
    blas_threads: int | None = 1  # BLAS threads during a computation (small matmuls); None: library default

    @property
    def architecture(self) -> Architecture:
        """The paper's network of ``depth``, ``readout`` and ``fix`` (both halves)."""
        return Architecture.from_options(self.depth, self.readout, self.fix)

    def __post_init__(self):
        from cntk_core.validation import ParameterError, check_choice, check_flag, is_real

        widths = tuple(self.widths) if isinstance(self.widths, list | tuple | np.ndarray) else ()
        if not widths:
            raise ValueError(f"widths must be a non-empty sequence of positive integers, got {self.widths!r}")
        object.__setattr__(
            self, "widths", tuple(sorted(setting_int(w, f"widths[{i}]", 1) for i, w in enumerate(widths)))
        )
        object.__setattr__(self, "fix", check_flag(self.fix, "fix"))
        arch = Architecture.from_options(self.depth, self.readout, self.fix)  # checks depth and readout
        object.__setattr__(self, "depth", arch.depth)
        try:
            arch.check_trainable("ntk")
        except ValueError:  # the view has one fix checkbox and shows both kernels: say it in its words
            raise ParameterError(
                "fix",
                "depth 2 with fix=True (first conv and last layer fixed) has no trained layer: its NTK is zero "
                "(use depth >= 3 or fix=False)",
            ) from None
        for name in ("seed", "steps", "n_seeds", "n_train", "n_test", "image_size", "n_nngp_inits"):
            object.__setattr__(
                self, name, setting_int(getattr(self, name), name, 0 if name in ("seed", "steps") else 1)
            )
        if self.n_train < 2:
            raise ValueError(f"n_train must be >= 2, got {self.n_train}")
        check_choice(self.dataset, "dataset", IMAGE_SOURCES)
        if not is_real(self.lr_scale):
            raise ValueError(f"lr_scale must be a number in (0, 2), got {self.lr_scale!r}")
        if not 0 < self.lr_scale < 2:
            raise ValueError(
                f"lr_scale must be in (0, 2), got {self.lr_scale!r}: eta = lr_scale / lambda_max of the exact NTK, "
                "and gradient descent diverges for lr_scale >= 2"
            )


def load_small_images(n: int, size: int, dataset: str = "digits", seed: int = 0):
    """``n`` images ``(n, size, size, 1)`` float64, standardised, with targets ``+-1`` ``(n,)``.

    ``"digits"``: scikit-learn's bundled 8x8 digits, classes 3 (+1) and 8 (-1) alternating, centre
    crop (``size <= 8``) or bilinear zoom (``size > 8``), pixels / 16 then standardised with the
    batch's mean and std. ``"random"``: Gaussian pixels, random signs.
    """
    rng = np.random.default_rng(seed)
    if dataset == "random":
        return rng.standard_normal((n, size, size, 1)), rng.choice([-1.0, 1.0], size=n)
    from sklearn.datasets import load_digits

    d = load_digits()
    pos = rng.permutation(np.flatnonzero(d.target == 3))
    neg = rng.permutation(np.flatnonzero(d.target == 8))
    if n > len(pos) + len(neg):
        raise ValueError(f"only {len(pos) + len(neg)} digit images of classes 3 and 8, asked for {n}")
    idx = np.empty(n, dtype=int)
    idx[0::2], idx[1::2] = pos[: (n + 1) // 2], neg[: n // 2]
    img = d.images[idx] / 16.0
    if size <= 8:
        o = (8 - size) // 2
        img = img[:, o : o + size, o : o + size]
    else:
        from scipy.ndimage import zoom

        img = zoom(img, (1, size / 8, size / 8), order=1)[:, :size, :size]
    img = (img - img.mean()) / img.std()
    y = np.where(d.target[idx] == 3, 1.0, -1.0)
    return img[..., None].astype(np.float64), y


@dataclass
class FiniteWidthResults:
    """Per width (arrays of ``len(widths)``): ``ntk_err`` (rms over seeds of ``||Theta_hat - Theta|| /
    ||Theta||``), ``ntk_err_seeds`` ``(W, S)``, ``ntk_change`` (mean over seeds of the relative change
    of the empirical NTK over training), ``pred_err`` (mean over seeds of the relative distance of
    test predictions to kernel regression); ``pred`` ``(W, S, M)`` trained-net test predictions,
    ``kr_pred`` ``(M,)`` kernel regression at the same step; ``eta``: the learning rate."""

    widths: np.ndarray
    ntk_err: np.ndarray
    ntk_err_seeds: np.ndarray
    ntk_change: np.ndarray
    pred_err: np.ndarray
    pred: np.ndarray
    kr_pred: np.ndarray
    y_test: np.ndarray
    eta: float
    diverged: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))


class FiniteWidthModel:
    """The experiments behind the view. ``config`` is a :class:`FiniteWidthConfig`; change it
    with :meth:`update` (clears caches that depend on the changed fields).

    :meth:`ntk_errors` and :meth:`training` remember their last few results per config (they are
    deterministic), so a view created after a notebook's cells computed them shows them at once.
    Both, and :meth:`run`, take ``progress``: a callback ``progress(fraction)``, 0..1.
    """

    MEMO_SIZE = 4  # configs whose results are kept

    def __init__(self, config: FiniteWidthConfig | None = None, **kw):
        self.config = replace(config or FiniteWidthConfig(), **kw)
        self._data = None
        self._exact = {}
        self._memo: dict[tuple, Any] = {}

    def _remembered(self, name: str, compute):
        """``compute()`` once per (name, config); callers get copies, so the memo stays as computed."""
        key = (name, self.config)
        if key not in self._memo:
            value = compute()
            while len(self._memo) >= self.MEMO_SIZE:
                self._memo.pop(next(iter(self._memo)))
            self._memo[key] = value
        return deepcopy(self._memo[key])

    def update(self, **kw) -> None:
        old = self.config
        self.config = replace(old, **kw)
        if any(
            getattr(old, k) != getattr(self.config, k) for k in ("n_train", "n_test", "image_size", "dataset", "seed")
        ):
            self._data = None
            self._exact = {}

    @property
    def xp(self):
        return self.config.xp if self.config.xp is not None else np

    def net(self, width: int) -> FiniteCNN:
        return FiniteCNN.from_architecture(self.config.architecture, int(width))

    def data(self):
        """``(x_train, y_train, x_test, y_test)`` NumPy arrays."""
        if self._data is None:
            c = self.config
            x, y = load_small_images(c.n_train + c.n_test, c.image_size, c.dataset, seed=c.seed)
            self._data = (x[: c.n_train], y[: c.n_train], x[c.n_train :], y[c.n_train :])
        return self._data

    def exact(self, kind: str = "ntk"):
        """Exact kernels ``(K(train, train), K(test, train))`` for the current architecture."""
        key = (kind, self.config.architecture)
        if key not in self._exact:
            xtr, _, xte, _ = self.data()
            net = self.net(1)
            self._exact[key] = (net.exact_kernel(xtr, kind=kind), net.exact_kernel(xte, xtr, kind=kind))
        return self._exact[key]

    def _threads(self):
        n = self.config.blas_threads
        if n is None:
            return contextlib.nullcontext()
        from threadpoolctl import threadpool_limits

        return threadpool_limits(int(n))

    def _seeds(self):
        c = self.config
        return [1000 * c.seed + s for s in range(c.n_seeds)]

    def ntk_errors(self, progress=None):
        """``(rms error per width (W,), per-seed errors (W, S))`` of the empirical NTK on the training set."""
        return self._remembered("ntk_errors", lambda: self._ntk_errors(progress or _no_progress))

    def _ntk_errors(self, progress):
        xtr = self.data()[0]
        exact = self.exact("ntk")[0]
        per = []
        for i, w in enumerate(self.config.widths):
            samples = empirical_ntk_samples(self.net(w), xtr, seeds=self._seeds(), xp=self.xp)
            per.append([relative_error(t, exact) for t in samples])
            progress((i + 1) / len(self.config.widths))
        per = np.array(per)
        return np.sqrt(np.mean(per**2, axis=1)), per

    def nngp(self, width: int):
        """``(empirical (N, N), exact (N, N), relative error)`` of the NNGP on the training set at ``width``.

        The readout weights are averaged out exactly (``readout_average=True``) over
        ``n_nngp_inits`` initialisations.
        """
        c = self.config
        xtr = self.data()[0]
        exact = self.exact("nngp")[0]
        with self._threads():
            emp = empirical_nngp(
                self.net(width), xtr, n_inits=c.n_nngp_inits, seed=c.seed, readout_average=True, xp=self.xp
            )
        return emp, exact, relative_error(emp, exact)

    def training(self, progress=None):
        """Train every width for ``steps`` GD steps from each seed; compare with kernel regression.

        Returns ``dict(eta, kr_pred (M,), pred (W, S, M), pred_err (W,), ntk_change (W,), diverged (W, S))``.
        Nets are centred (zero initial output), so the reference is ``f_t = (I - (I - eta Theta)^t) Y``
        on the training set and its test counterpart (:func:`kernel_regression_trajectory`, ``mode="gd"``).
        """
        return self._remembered("training", lambda: self._training(progress or _no_progress))

    def _training(self, progress):
        c = self.config
        xtr, ytr, xte, _ = self.data()
        th, tt = self.exact("ntk")
        eta = learning_rate(th, c.lr_scale)
        _, kr = kernel_regression_trajectory(th, ytr, eta=eta, steps=c.steps, theta_test_train=tt)
        kr = kr[-1]
        xp = self.xp
        W, S = len(c.widths), c.n_seeds
        pred = np.full((W, S, len(xte)), np.nan)
        change = np.full((W, S), np.nan)
        diverged = np.zeros((W, S), dtype=bool)
        for i, w in enumerate(c.widths):
            net = self.net(w)
            for j, s in enumerate(self._seeds()):
                p0 = net.init(xtr.shape[1:], seed=s, xp=xp)
                res = train_gd(net, p0, xtr, ytr, eta=eta, steps=c.steps, x_test=xte, record_every=max(c.steps, 1))
                diverged[i, j] = res.diverged
                if res.diverged:
                    continue
                pred[i, j] = res.f_test[-1]
                change[i, j] = ntk_change(net, p0, res.params, xp.asarray(xtr))
            progress((i + 1) / W)
        if c.steps == 0:  # kernel regression after 0 steps predicts 0: a relative error is undefined
            pred_err = np.full(W, np.nan)
        else:
            pred_err = np.array(
                [np.nanmean([relative_error(p, kr) for p in row if np.all(np.isfinite(p))] or [np.nan]) for row in pred]
            )
        return dict(
            eta=eta, kr_pred=kr, pred=pred, pred_err=pred_err, ntk_change=np.nanmean(change, axis=1), diverged=diverged
        )

    def run(self, progress=None) -> FiniteWidthResults:
        """All experiments of panels (a), (c) and (d); ``progress(fraction)`` is called as widths finish."""
        progress = progress or _no_progress
        with self._threads():
            err, per = self.ntk_errors(lambda f: progress(0.3 * f))  # training takes about twice as long
            tr = self.training(lambda f: progress(0.3 + 0.7 * f))
        return FiniteWidthResults(
            widths=np.asarray(self.config.widths),
            ntk_err=err,
            ntk_err_seeds=per,
            ntk_change=tr["ntk_change"],
            pred_err=tr["pred_err"],
            pred=tr["pred"],
            kr_pred=tr["kr_pred"],
            y_test=self.data()[3],
            eta=tr["eta"],
            diverged=tr["diverged"],
        )


def _no_progress(_fraction: float) -> None:
    """The default ``progress`` callback: report nothing."""


def inverse_sqrt_guide(widths, values) -> np.ndarray:
    """``c / sqrt(width)`` through the first finite value: a reference line for log-log plots."""
    widths = np.asarray(widths, dtype=float)
    values = np.asarray(values, dtype=float)
    ok = np.flatnonzero(np.isfinite(values) & (values > 0))
    if len(ok) == 0:
        return np.full_like(widths, np.nan)
    i = ok[0]
    return values[i] * np.sqrt(widths[i] / widths)


# the view (ipywidgets and plotly are imported when one is built, so the model works without them)
from .finite_width_view import FiniteWidthView, finite_width_view  # noqa: E402

__all__ = [
    "IMAGE_SOURCES",
    "FiniteWidthConfig",
    "FiniteWidthModel",
    "FiniteWidthResults",
    "FiniteWidthView",
    "finite_width_view",
    "inverse_sqrt_guide",
    "load_small_images",
]
