"""Training dynamics: full-batch gradient descent on ``0.5 ||f(X) - Y||^2`` and its linearisation.

The wide-net limit of :func:`train_gd` is kernel regression with the NTK in closed form,
:func:`kernel_regression_trajectory`; :func:`ntk_change` measures how far a finite net's NTK moved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..backend import to_host
from ..recurrence import get_array_module
from ..validation import ParameterError, check_flag, check_int, check_positive
from ._checks import _finite_array, _images, _square, _step_counts, _vector
from .empirical import relative_error

if TYPE_CHECKING:
    from .net import FiniteCNN


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
        raise ParameterError("theta", f"the kernel's top eigenvalue must be positive, got {lam}")
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
            rec_f.append(to_host(g))
            rec_loss.append(loss)
            if xte is not None:
                rec_t.append(to_host(net.apply(params, xte) - off_t))
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
        f0_train=to_host(f0),
        f0_test=None if f0_test is None else to_host(f0_test),
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
        raise ParameterError("mode", f"mode must be 'gd' or 'flow', got {mode!r}")
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
            raise ParameterError("theta_test_train", f"theta_test_train must be (M, {n}), got {tt.shape}")
    if f0_test is not None:
        if tt is None:
            raise ParameterError("f0_test", "f0_test needs theta_test_train (there are no test outputs without it)")
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
    t0 = to_host(net.empirical_ntk(params0, x))
    t1 = to_host(net.empirical_ntk(params1, x))
    return relative_error(t1, t0)
