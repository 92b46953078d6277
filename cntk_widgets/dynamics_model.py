"""Plain-Python model of the training-dynamics widget (issue 26): the infinite-width net trained by
gradient descent on squared loss, on the regression lab's data, seen in the kernel's eigenbasis.

One background job per (network, images): the train Gram ``[n, n]`` and the test x train Gram
``[n_test, n]`` (from memory, else from the disk cache, else computed in row blocks with the engine's
progress and cancel hooks), ONE eigendecomposition of the train Gram, then
:func:`cntk_core.regression.kernel_dynamics` (which reuses that decomposition: ``eig=``) and its
loss and accuracy curves on a log-spaced grid of times ``1 .. t_end`` followed by ``inf`` (kernel
regression). The Grams and the decomposition are kept per (network, images), so a new label noise
or time grid costs matrix products only. Moving the time (:meth:`TrainingDynamicsModel.select`)
recomputes none of it: one :meth:`~cntk_core.regression.KernelDynamics.at` (``O(n^2 c + n_test n c)``)
and one :meth:`~cntk_core.regression.KernelDynamics.mode_residuals` (``O(n c)``).

The math: ``docs/math.md``, section 6 (the paper's classifier, targets 0.9 / -0.1), and the module
docstring of :mod:`cntk_core.regression.dynamics` (the residual along eigenvector ``i`` decays as
``(1 - eta lam_i)^t``, ``eta = 1 / lam_max``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING

import numpy as np

from cntk_core.validation import ParameterError, check_real

from .jobs import JobContext, JobModel
from .kernel_cache import KernelDiskCache, entry_key, images_fingerprint, open_disk_cache
from .models import NetworkSpec, chunked_gram, cross_gram, setting_int

if TYPE_CHECKING:  # cntk_core.regression imports scikit-learn: loaded when the first result is made
    from cntk_core.regression import DynamicsCurves, DynamicsState, KernelDynamics

#: label noise levels the view offers (fractions of the training labels replaced by another class)
NOISE_LEVELS = (0.0, 0.1, 0.2, 0.4)
_GRAMS_KEPT = 8  # (network, images) entries of Grams and decompositions kept in memory


@dataclass(frozen=True)
class DynamicsSettings:
    """What the data and the time grid depend on. ``label_noise``: the fraction of training labels
    replaced by another class (drawn with ``seed``; test labels stay clean), which makes early stopping
    pay off; ``n_times``: points of the log-spaced grid (:meth:`KernelDynamics.default_times`)."""

    dataset: str = "digits"
    n_per_class: int = 30
    n_test_per_class: int = 20
    label_noise: float = 0.2
    seed: int = 0
    downsample: int = 1
    n_times: int = 64

    def __post_init__(self):
        from cntk_core.data import check_dataset_name

        check_dataset_name(self.dataset)
        for name, low in (("n_per_class", 1), ("n_test_per_class", 1), ("seed", 0), ("downsample", 1)):
            object.__setattr__(self, name, setting_int(getattr(self, name), name, low))
        object.__setattr__(self, "n_times", setting_int(self.n_times, "n_times", 3, " (points of the time grid)"))
        noise = float(check_real(self.label_noise, "label_noise"))
        if not 0.0 <= noise < 1.0:
            raise ParameterError("label_noise", f"label_noise is a fraction in [0, 1), got {self.label_noise!r}")
        object.__setattr__(self, "label_noise", noise)

    @property
    def images_key(self) -> tuple:
        """The fields that choose the images (not the label noise, not the time grid)."""
        return (self.dataset, self.n_per_class, self.n_test_per_class, self.seed, self.downsample)


@dataclass(frozen=True, eq=False)
class DynamicsData:
    """The images of one run: ``x_train`` ``[n, H, W, C]`` and ``x_test`` ``[n_test, H, W, C]``
    (preprocessed float64), ``y_clean`` / ``y_train`` ``[n]`` (true / trained-on labels),
    ``flipped`` ``[n]`` bool (the labels the noise changed), ``y_test`` ``[n_test]``, ``test_images``
    (raw pixels / pixel scale, for display) and ``class_names``."""

    x_train: np.ndarray
    y_clean: np.ndarray
    y_train: np.ndarray
    flipped: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    test_images: np.ndarray
    class_names: tuple[str, ...]


def load_data(settings: DynamicsSettings) -> DynamicsData:
    """A class-balanced subset of ``settings.dataset`` as the regression lab takes it (train and test
    splits, pixels / scale, optional block-mean downsampling, standardisation with the training
    images' statistics), with ``round(label_noise * n)`` training labels moved to another class."""
    from cntk_core.data import balanced_subset, load_dataset, preprocess
    from cntk_core.recurrence import block_mean

    s = settings
    ds = load_dataset(s.dataset)
    xtr, ytr = balanced_subset(ds.x_train, ds.y_train, s.n_per_class, seed=s.seed, n_classes=ds.n_classes)
    xte, yte = balanced_subset(ds.x_test, ds.y_test, s.n_test_per_class, seed=s.seed, n_classes=ds.n_classes)
    if s.downsample > 1:
        xtr, xte = (block_mean(np.asarray(a, dtype=np.float64), s.downsample, (1, 2)) for a in (xtr, xte))
    p = preprocess(xtr, xte, scale=ds.pixel_scale)
    y_clean = np.asarray(ytr, dtype=np.int64)
    rng = np.random.default_rng([s.seed, 26])
    flipped = np.zeros(len(y_clean), dtype=bool)
    flipped[rng.choice(len(y_clean), int(round(s.label_noise * len(y_clean))), replace=False)] = True
    y_train = y_clean.copy()
    y_train[flipped] = (y_clean[flipped] + rng.integers(1, ds.n_classes, flipped.sum())) % ds.n_classes
    return DynamicsData(
        p.x_train, y_clean, y_train, flipped, p.x_test, np.asarray(yte, np.int64), xte / ds.pixel_scale, ds.class_names
    )


@dataclass(frozen=True, eq=False)
class DynamicsResult:
    """One network's dynamics: ``dynamics`` (:class:`~cntk_core.regression.KernelDynamics`), the
    slider's ``times`` ``[T]`` (log-spaced steps from 1, the last ``inf``), ``curves`` over them
    (losses ``mean((f - Y)^2)``, accuracies as fractions), ``best``: the index of the lowest test loss,
    ``seconds`` of work and ``source``: ``"computed"``, ``"memory"`` or ``"disk"`` (the Grams);
    ``K_train`` ``[n, n]`` and ``K_test`` ``[n_test, n]``: the Grams (shared, read-only)."""

    spec: NetworkSpec
    settings: DynamicsSettings
    data: DynamicsData
    K_train: np.ndarray
    K_test: np.ndarray
    dynamics: KernelDynamics
    times: np.ndarray
    curves: DynamicsCurves
    best: int
    seconds: float
    source: str

    @property
    def early_stopping(self) -> bool:
        """Whether the test loss is lowest at a finite time (below its value at ``t = inf``)."""
        loss = self.curves.test_loss
        return self.best < len(loss) - 1 and loss[self.best] < loss[-1] * (1 - 1e-9)

    @property
    def initial_energy(self) -> np.ndarray:
        """Residual energy per mode at ``t = 0`` (``||(V^T Y)_i||^2``), ``[n]``."""
        return self.dynamics.mode_residuals(0.0)


@dataclass(frozen=True, eq=False)
class TimeSnapshot:
    """The net at one time: ``index`` into the result's ``times`` (None off the grid), ``t``,
    ``state`` (:class:`~cntk_core.regression.DynamicsState`) and ``residuals`` ``[n]``: residual energy
    per eigenmode (modes by decreasing eigenvalue)."""

    index: int | None
    t: float
    state: DynamicsState
    residuals: np.ndarray

    @property
    def predictions(self) -> np.ndarray:
        """Predicted test classes ``[n_test]`` (argmax of the scores; all 0 at ``t = 0``)."""
        return self.state.test_scores.argmax(axis=1)


_BLAS: list = []  # the threadpoolctl controller, made on first use


def _one_blas_thread():
    """A context in which BLAS runs on one thread. The products of one time step are tiny (``[n, n]``
    by ``[n, c]``); with two OpenBLAS threads on a busy 2-core machine they took ~12 ms instead of
    0.1 ms (spin-waiting threads), a quarter of the slider's latency budget."""
    if not _BLAS:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS.append(ThreadpoolController())
        except ImportError:  # pragma: no cover - scikit-learn requires threadpoolctl
            _BLAS.append(None)
    return contextlib.nullcontext() if _BLAS[0] is None else _BLAS[0].limit(limits=1, user_api="blas")


_SPEC_FIELDS = {f.name for f in fields(NetworkSpec)}
_SETTING_FIELDS = {f.name for f in fields(DynamicsSettings)}


class TrainingDynamicsModel(JobModel):
    """Training dynamics of one network on the regression lab's data, driven by a time index.

    ``set(**fields)`` changes the network (:class:`~cntk_widgets.models.NetworkSpec` fields: ``kind``,
    ``fix_first``, ``fix_last``, ``readout``, ``depth``) or the :class:`DynamicsSettings` (validated
    first: a bad value raises and changes nothing), then recomputes what changed. ``select(index)``
    moves along the result's ``times``, ``at_time(t)`` goes to any ``t >= 0``; both emit ``"time"``.
    Events (``on_change(callback(event, model))``): ``"start"``, ``"progress"``, ``"result"`` (then
    ``"time"``), ``"error"``, ``"settings"``, ``"cancelled"``, ``"closed"``.

    Counters for tests: ``gram_computations`` (how often the engine computed the two Grams: once per
    network and images, unless the disk cache had them) and ``eigendecompositions`` (once per Grams).
    Memory: per kept (network, images) the two Grams and the eigenvectors, ``2 n^2 + n_test n`` float64.
    """

    def __init__(
        self,
        settings: DynamicsSettings | None = None,
        *,
        spec: NetworkSpec | None = None,
        backend: str | None = None,
        synchronous: bool = False,
        disk_cache: KernelDiskCache | str | bool | None = None,
        autostart: bool = True,
        **fields,
    ):
        spec_fields = {k: fields.pop(k) for k in list(fields) if k in _SPEC_FIELDS}
        self.settings = replace(settings or DynamicsSettings(), **fields)
        self.spec = replace(spec or NetworkSpec(), **spec_fields)
        self.backend = backend
        self.disk_cache = open_disk_cache(disk_cache)
        self.result: DynamicsResult | None = None
        self.snapshot: TimeSnapshot | None = None
        self.gram_computations = self.eigendecompositions = 0
        self._lock = threading.Lock()
        self._grams: OrderedDict[tuple, tuple] = OrderedDict()  # (spec, images key) -> (K, K_test, eig)
        self._data: dict[tuple, DynamicsData] = {}
        self._start_runner("cntk-dynamics", synchronous, self._publish)
        if autostart:
            self.compute()

    # -- settings -----------------------------------------------------------------------------
    def set(self, **fields) -> None:
        """Change network and/or settings fields (all validated before any changes), then recompute."""
        unknown = set(fields) - _SPEC_FIELDS - _SETTING_FIELDS
        if unknown:
            raise TypeError(
                f"unknown field(s) {sorted(unknown)}; network: {sorted(_SPEC_FIELDS)}, settings: "
                f"{sorted(_SETTING_FIELDS)}"
            )
        spec = replace(self.spec, **{k: v for k, v in fields.items() if k in _SPEC_FIELDS})
        settings = replace(self.settings, **{k: v for k, v in fields.items() if k in _SETTING_FIELDS})
        if (spec, settings) != (self.spec, self.settings):
            self._set_state(spec=spec, settings=settings, event="settings")
            self.compute()

    def data(self, settings: DynamicsSettings | None = None) -> DynamicsData:
        """The images and labels of ``settings`` (default: the current ones); loaded once per choice."""
        s = settings or self.settings
        key = (*s.images_key, s.label_noise)
        if key not in self._data:
            self._data[key] = load_data(s)
        return self._data[key]

    # -- jobs -----------------------------------------------------------------------------------
    def compute(self):
        """Show the dynamics of the current network and settings: at once when its Grams are in
        memory (returns None), else in a background job (returns its future)."""
        spec, settings = self.spec, self.settings
        self.cancelled = None
        with self._lock:
            hit = self._grams.get((spec, settings.images_key))
        if hit is not None:
            t0 = time.perf_counter()
            result = self._result(spec, settings, self.data(settings), hit, "memory", t0)
            self._runner.publish(result)
            return None
        return self._runner.submit(lambda ctx: self._job(spec, settings, ctx))

    def wait(self, timeout: float | None = 300.0) -> DynamicsResult | None:
        self._runner.wait(timeout)
        return self.result

    # -- time -----------------------------------------------------------------------------------
    def select(self, index: int) -> TimeSnapshot:
        """Go to ``result.times[index]`` (negative indices count from the end: -1 is ``inf``)."""
        r = self._shown()
        index = int(index)
        if not -len(r.times) <= index < len(r.times):
            raise ParameterError("index", f"index must be in 0 .. {len(r.times) - 1}, got {index}")
        index %= len(r.times)
        return self._go(r, index, float(r.times[index]))

    def at_time(self, t: float) -> TimeSnapshot:
        """Go to any time ``t >= 0`` (``np.inf``: kernel regression; whole steps for gradient descent);
        ``index`` is its position in ``times`` when it is one of them."""
        r = self._shown()
        hits = np.flatnonzero(r.times == float(t))
        return self._go(r, int(hits[0]) if len(hits) else None, t)

    def nearest_index(self, t: float) -> int:
        """The index of the grid time nearest ``t`` on a log scale (``inf`` only for ``inf``)."""
        times = self._shown().times
        if np.isinf(t):
            return len(times) - 1
        return int(np.argmin(np.abs(np.log(times[:-1]) - np.log(max(float(t), 1.0)))))

    # -- internals ------------------------------------------------------------------------------
    def _shown(self) -> DynamicsResult:
        if self.result is None:
            raise RuntimeError("no dynamics yet: wait() for the first result")
        return self.result

    def _go(self, r: DynamicsResult, index: int | None, t: float) -> TimeSnapshot:
        with _one_blas_thread():  # matrix-vector-sized products: threads only add wake-up latency
            snap = TimeSnapshot(index, float(t), r.dynamics.at(t), r.dynamics.mode_residuals(t))
        self._set_state(snapshot=snap, event="time")
        return snap

    def _job(self, spec: NetworkSpec, settings: DynamicsSettings, ctx: JobContext) -> DynamicsResult:
        t0 = time.perf_counter()
        data = self.data(settings)
        grams, source = self._load_grams(spec, settings, data, ctx)
        ctx.check()
        return self._result(spec, settings, data, grams, source, t0)

    def _disk_key(self, spec: NetworkSpec, data: DynamicsData, part: str) -> str:
        images = images_fingerprint(data.x_train) + images_fingerprint(data.x_test)
        return entry_key(images, {"dynamics": part, "spec": asdict(spec), "dtype": "float64"})

    def _load_grams(self, spec, settings, data: DynamicsData, ctx: JobContext) -> tuple[tuple, str]:
        """``(K, K_test, eig)`` and where the Grams came from (disk or computed); kept in memory."""
        n, n_test = len(data.x_train), len(data.x_test)
        K = K_test = None
        if self.disk_cache is not None:
            K, K_test = (self.disk_cache.get(self._disk_key(spec, data, p)) for p in ("train", "test"))
        source = "disk"
        if K is None or K_test is None or K.shape != (n, n) or K_test.shape != (n_test, n):
            net, kw = spec.architecture, dict(kind=spec.kind, backend=self.backend)  # carries flip
            mid = n * (n + 1) / 2 / (n * (n + 1) / 2 + n_test * n)  # progress: train triangle, then test rows
            K = chunked_gram(net, data.x_train, ctx=ctx.scaled(0.0, mid), n_chunks=6, **kw)
            K_test = cross_gram(net, data.x_test, data.x_train, ctx=ctx.scaled(mid, 1.0), n_chunks=4, **kw)
            self.gram_computations += 1
            source = "computed"
            if self.disk_cache is not None:
                for part, gram in (("train", K), ("test", K_test)):
                    self.disk_cache.put(self._disk_key(spec, data, part), gram, what=f"dynamics {part} {spec.title}")
        ctx.check()
        import scipy.linalg

        eig = scipy.linalg.eigh(K, check_finite=False)
        self.eigendecompositions += 1
        for a in (K, K_test, *eig):
            a.setflags(write=False)
        grams = (K, K_test, eig)
        with self._lock:
            self._grams[(spec, settings.images_key)] = grams
            self._grams.move_to_end((spec, settings.images_key))
            while len(self._grams) > _GRAMS_KEPT:
                self._grams.popitem(last=False)
        return grams, source

    def _result(self, spec, settings, data: DynamicsData, grams: tuple, source: str, t0: float) -> DynamicsResult:
        """Dynamics (reusing the decomposition), the time grid and the curves over it."""
        from cntk_core.regression import kernel_dynamics

        K, K_test, eig = grams
        dyn = kernel_dynamics(K, data.y_train, K_test, data.y_test, n_classes=len(data.class_names), eig=eig)
        times = dyn.default_times(settings.n_times, energy=0.999)
        curves = dyn.curves(times)
        best = int(np.argmin(curves.test_loss))
        seconds = time.perf_counter() - t0
        return DynamicsResult(spec, settings, data, K, K_test, dyn, times, curves, best, seconds, source)

    def _publish(self, result: DynamicsResult) -> None:
        """Show ``result`` at the time nearest the one shown before (at first: the lowest test loss)."""
        old = self.snapshot
        self._set_state(result=result, progress=1.0, error=None, event="result")
        index = result.best if old is None else self.nearest_index(old.t)
        self.select(index)
