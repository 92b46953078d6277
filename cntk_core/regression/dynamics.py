"""Training dynamics of the infinite-width net in the kernel's eigenbasis, from ONE eigendecomposition.

Gradient descent with step ``eta`` on ``L = 1/2 ||f(X) - Y||^2`` (sum over images and classes),
started from ``f_0 = 0`` (the net's output at initialisation removed), moves the train residual
``r_t = f_t(X) - Y`` by ``r_{t+1} = (I - eta K) r_t``. With ``K = V diag(lam) V^T`` (modes sorted by
decreasing ``lam``) and ``P = V^T Y``::

    d_t = (1 - eta lam)^t                 (gradient flow: exp(-eta lam t))
    g_t = (1 - d_t) / lam                 (-> eta t as lam -> 0)
    f_t(X)  = V diag(lam g_t) P           r_t = -V diag(d_t) P
    f_t(X*) = K* V diag(g_t) P            t = inf: K* K^+ Y, kernel regression with no ridge

Each mode's residual decays on its own (large ``lam`` first: the spectral bias). ``t`` counts steps
(gradient descent, whole numbers) or is continuous time (flow, in units where ``df/dt = -eta K r``).
Losses are ``mean((f - Y)^2)`` over images and classes (no 1/2), as :class:`RidgeSelection` ``.mse``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..validation import ParameterError, as_real_array, check_flag, check_int, check_labels, check_positive
from ._checks import check_kernel
from .ridge import _eig
from .solve import targets_of_indices

_EPS = np.finfo(np.float64).eps
_CHUNK = 2**22  # floats of scores per block of times in curves()


@dataclass(frozen=True, eq=False)
class DynamicsState:
    """The net at one time ``t``: train scores ``[n, c]``, test scores ``[n_test, c]`` (None without
    ``K_test``), losses ``mean((f - Y)^2)`` and accuracies (fractions; NaN without test labels)."""

    t: float
    train_scores: np.ndarray
    test_scores: np.ndarray | None
    train_loss: float
    test_loss: float
    train_accuracy: float
    test_accuracy: float


@dataclass(frozen=True, eq=False)
class DynamicsCurves:
    """Losses and accuracies ``[n_times]`` against ``times`` ``[n_times]`` (see :class:`DynamicsState`)."""

    times: np.ndarray
    train_loss: np.ndarray
    test_loss: np.ndarray
    train_accuracy: np.ndarray
    test_accuracy: np.ndarray


def _frozen(a: np.ndarray | None) -> np.ndarray | None:
    if a is not None:
        a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class KernelDynamics:
    """The dynamics of one training set, made by :func:`kernel_dynamics`; every time costs matrix
    products only (no decomposition, no solve).

    eigenvalues ``[n]`` (decreasing, the kernel's units), V ``[n, n]``, P ``= V^T Y`` ``[n, c]``,
    KV ``= K_test V`` ``[n_test, n]`` (None without a test set), null ``[n]``: modes with
    ``lam <= n eps lam_max`` (negative round-off included), which are treated as NOT learnt at every
    ``t`` (train residual kept, no test contribution), so that ``t -> inf`` is the pseudo-inverse
    ``K^+`` on the range of ``K`` and predictions stay bounded (exact gradient descent would add
    ``eta t K* v`` along a null mode ``v``; for a PSD joint kernel ``K* v = 0`` there anyway).
    """

    eigenvalues: np.ndarray
    V: np.ndarray
    P: np.ndarray
    KV: np.ndarray | None
    y_train: np.ndarray
    y_test: np.ndarray | None
    Y_test: np.ndarray | None
    eta: float
    flow: bool
    null: np.ndarray

    @property
    def n_classes(self) -> int:
        return self.P.shape[1]

    def _times(self, times, name: str) -> np.ndarray:
        t = np.atleast_1d(as_real_array(times, name, "times >= 0 (np.inf allowed)")).astype(np.float64)
        if t.ndim != 1 or np.isnan(t).any() or (t < 0).any():
            raise ParameterError(name, f"{name}: times must be numbers >= 0 or np.inf, got {times!r}")
        fin = t[np.isfinite(t)]
        if not self.flow and np.any(fin != np.round(fin)):
            raise ParameterError(name, f"{name}: gradient descent counts whole steps, got {times!r} (flow=True: any t)")
        return t

    def factors(self, times) -> tuple[np.ndarray, np.ndarray]:
        """``(d, g)``, each ``[n_times, n]``: residual factor ``d_t`` and test factor ``g_t`` (1/kernel units)."""
        t = self._times(times, "times")[:, None]
        lam = np.where(self.null, 1.0, self.eigenvalues)[None, :]
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            if self.flow:
                x = -self.eta * lam * t
                d, g = np.exp(x), -np.expm1(x) / lam
            else:
                base = 1.0 - self.eta * lam
                pos = base > 0
                x = t * np.log1p(np.where(pos, -self.eta * lam, 0.0))  # accurate for small eta lam
                d = np.where(pos, np.exp(x), np.power(base, t))
                g = np.where(pos, -np.expm1(x), 1.0 - d) / lam
        d = np.where(self.null, 1.0, d)
        g = np.where(self.null, 0.0, g)
        return d, g

    def mode_residuals(self, t) -> np.ndarray:
        """Residual energy per mode ``||(V^T r_t)_i||^2`` (summed over classes), ``[n]`` for one ``t``,
        ``[n_times, n]`` for several; it sums over modes to ``||r_t||_F^2``."""
        d, _ = self.factors(t)
        out = d**2 * np.sum(self.P**2, axis=1)
        return out[0] if np.ndim(t) == 0 else out

    def at(self, t) -> DynamicsState:
        """The state at one time ``t`` (``np.inf``: kernel regression), O(n^2 c + n_test n c)."""
        if np.ndim(t) != 0:
            raise ParameterError("t", f"t: one time, got shape {np.shape(t)} (curves() takes several)")
        return self._evaluate(self._times(t, "t"), scores=True)

    def curves(self, times) -> DynamicsCurves:
        """Losses and accuracies at every time of ``times`` ``[n_times]`` (blocks of times, one gemm each)."""
        t = self._times(times, "times")
        n, c = self.P.shape
        step = max(1, _CHUNK // (c * (n + (0 if self.KV is None else self.KV.shape[0]))))
        parts = [self._evaluate(t[i : i + step], scores=False) for i in range(0, len(t), step)]
        cols = [np.concatenate([p[k] for p in parts]) for k in range(4)]
        return DynamicsCurves(_frozen(t), *(_frozen(col) for col in cols))

    def _evaluate(self, t: np.ndarray, scores: bool):
        d, g = self.factors(t)
        n, c = self.P.shape
        lam = np.where(self.null, 0.0, self.eigenvalues)

        def coef(w: np.ndarray) -> np.ndarray:  # [T, n] factors -> [n, T c] coefficients, one gemm per side
            return (w.T[:, :, None] * self.P[:, None, :]).reshape(n, -1)

        train = (self.V @ coef(lam * g)).reshape(n, len(t), c)
        train_loss = (d**2 @ np.sum(self.P**2, axis=1)) / (n * c)
        train_acc = np.mean(train.argmax(axis=2) == self.y_train[:, None], axis=0)
        test, test_loss, test_acc = None, np.full(len(t), np.nan), np.full(len(t), np.nan)
        if self.KV is not None:
            test = (self.KV @ coef(g)).reshape(len(self.KV), len(t), c)
            if self.y_test is not None:
                test_loss = np.mean((test - self.Y_test[:, None, :]) ** 2, axis=(0, 2))
                test_acc = np.mean(test.argmax(axis=2) == self.y_test[:, None], axis=0)
        if not scores:
            return train_loss, test_loss, train_acc, test_acc
        return DynamicsState(
            float(t[0]),
            _frozen(train[:, 0]),
            None if test is None else _frozen(test[:, 0]),
            float(train_loss[0]),
            float(test_loss[0]),
            float(train_acc[0]),
            float(test_acc[0]),
        )

    def default_times(self, n: int = 64, *, energy: float = 0.99, tol: float = 1e-3) -> np.ndarray:
        """``[<= n]`` log-spaced times from 1 to ``t_end``, then ``np.inf`` (whole steps for gradient descent).

        ``t_end``: when the residual factor ``|d_t|`` has fallen to ``tol`` on every mode of the
        largest-eigenvalue modes that together hold ``energy`` of ``||Y||^2`` (the smallest modes,
        with the rest, may still be learning).
        """
        n = check_int(n, "n", 2)
        w = np.where(self.null, 0.0, np.sum(self.P**2, axis=1))
        k = min(int(np.searchsorted(np.cumsum(w), energy * w.sum())), int(np.sum(~self.null)) - 1)
        rate = self.eta * self.eigenvalues[k]
        rate = rate if self.flow else -np.log(abs(1.0 - rate)) if rate != 1.0 else np.inf
        t_end = min(max(1.0, -np.log(tol) / rate), 1e15)
        grid = np.geomspace(1.0, t_end, n - 1)
        grid = grid if self.flow else np.unique(np.round(grid))
        return np.append(grid, np.inf)


def kernel_dynamics(
    K_train, y_train, K_test=None, y_test=None, *, eta=None, flow: bool = False, n_classes=None, eig=None
) -> KernelDynamics:
    """The training dynamics of the paper's classifier from precomputed kernels.

    K_train ``[n, n]`` symmetric PSD, y_train ``[n]`` class indices; K_test ``[n_test, n]`` (rows test,
    columns train) and y_test ``[n_test]``, both optional. Targets are :func:`one_hot_targets`
    (0.9 / -0.1). eta: the step (1/kernel units); default ``1 / lam_max``, stable with every mode
    decaying monotonically; gradient descent accepts ``0 < eta < 2 / lam_max``, flow any ``eta > 0``.
    eig: ``(lam, U)`` of ``K_train`` as ``scipy.linalg.eigh`` returns it, to reuse a decomposition
    (checked on one random vector); otherwise ONE ``eigh`` here, none afterwards.
    """
    K = check_kernel(K_train, "K_train")
    n = K.shape[0]
    y = check_labels(y_train, n, "y_train", for_what=f"a kernel with {n} rows")
    Y = targets_of_indices(y, n_classes, "y_train")
    flow = check_flag(flow, "flow")
    Kt = None
    if K_test is not None:
        Kt = check_kernel(K_test, "K_test", symmetric=False)
        if Kt.shape[1] != n:
            raise ParameterError("K_test", f"K_test has shape {Kt.shape}; expected [n_test, {n}] (test, train)")
    yt = Yt = None
    if y_test is not None:
        if Kt is None:
            raise ParameterError("y_test", "y_test needs K_test, the kernel of the test images against the train ones")
        yt = check_labels(y_test, Kt.shape[0], "y_test", n_classes=Y.shape[1], for_what="K_test's rows")
        Yt = targets_of_indices(yt, Y.shape[1], "y_test")
    if eig is None:
        lam, U = _eig(K)
    else:
        lam, U = (as_real_array(a, "eig") for a in eig)
        if lam.shape != (n,) or U.shape != (n, n):
            raise ParameterError("eig", f"eig: expected (eigenvalues [{n}], eigenvectors [{n}, {n}]) of K_train")
        z = np.random.default_rng(0).standard_normal(n)
        if np.linalg.norm(K @ z - U @ (lam * (U.T @ z))) > 1e-6 * np.linalg.norm(K) * np.linalg.norm(z):
            raise ParameterError("eig", "eig is not an eigendecomposition (lam, U) of K_train")
    order = np.argsort(lam)[::-1]
    lam, U = lam[order], U[:, order]
    top = float(lam[0])
    if top <= 0:
        raise ParameterError("K_train", "K_train has no positive eigenvalue: nothing can be learnt (a zero kernel?)")
    if lam[-1] < -np.sqrt(_EPS) * top:
        warnings.warn(
            f"K_train is not positive semidefinite (eigenvalue {lam[-1]:.3g}, largest {top:.3g}); its negative "
            "modes are treated as not learnt (gradient descent would diverge along them)",
            RuntimeWarning,
            stacklevel=2,
        )
    if eta is None:
        eta = 1.0 / top
    else:
        eta = float(check_positive(eta, "eta"))
        if not flow and not eta < 2.0 / top:
            raise ParameterError("eta", f"eta={eta:g}: gradient descent needs 0 < eta < 2/lam_max = {2 / top:g}")
    null = lam <= n * _EPS * top
    return KernelDynamics(
        *(_frozen(a) for a in (lam, U, U.T @ Y, None if Kt is None else Kt @ U, y, yt, Yt)),
        eta=float(eta),
        flow=flow,
        null=_frozen(null),
    )
