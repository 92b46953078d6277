"""Plain-Python model of the regression lab: CNTK kernel regression on a small balanced subset.

The recipe is the paper's (``docs/math.md``, section 6): pixels / scale, per-channel standardisation with
training statistics, targets 0.9 / -0.1, ``(K_train + ridge * mean(diag K_train) * I) alpha = Y``,
prediction ``argmax K_test,train alpha``. ``ridge = 0`` is the paper's plain solve.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from cntk_core import data as _data
from cntk_core.data import check_dataset_name
from cntk_core.recurrence import block_mean as _block_mean
from cntk_core.validation import check_real

from .jobs import JobContext, JobModel
from .models import ArchitectureModel, NetworkSpec, chunked_gram, cross_gram, setting_int

MIN_IMAGE_SIDE = 4  # downsampling below this many pixels per side is refused (the kernel sees almost nothing)


def available_datasets() -> tuple[str, ...]:
    """The data sets whose files are present without a download (always ``"digits"``; see
    :func:`cntk_core.data.available_datasets`: ``"cifar10"`` once its tarball is in the cache)."""
    return _data.available_datasets()


def max_downsample(height: int, width: int) -> int:
    """The largest ``downsample`` that keeps ``height x width`` images at least ``MIN_IMAGE_SIDE`` px wide."""
    return max(1, min(height, width) // MIN_IMAGE_SIDE)


def default_downsample(height: int, width: int) -> int:
    """A sensible ``downsample`` for a data set: images of about 8 px per side (CIFAR 32 -> 4, digits 8 -> 1)."""
    return max(1, min(height, width) // 8)


#: how :meth:`RegressionLabModel.control_changes` names a setting (as the lab's controls do)
_LABELS = {
    "n_per_class": "train/class",
    "n_test_per_class": "test/class",
    "fix_first": "fix first layer",
    "fix_last": "fix last layer",
    "pool": "AvgPool",
    "dataset": "data",
}


@dataclass(frozen=True)
class LabSettings:
    """What a run depends on besides the architecture. ``ridge`` is relative to ``mean(diag K)``;
    ``downsample`` averages raw pixels over ``downsample x downsample`` blocks (e.g. 4: CIFAR 32 -> 8)."""

    dataset: str = "digits"
    n_per_class: int = 10
    n_test_per_class: int = 10
    ridge: float = 0.0
    seed: int = 0
    downsample: int = 1

    def __post_init__(self):
        check_dataset_name(self.dataset)
        for name in ("n_per_class", "n_test_per_class", "downsample"):
            object.__setattr__(self, name, setting_int(getattr(self, name), name, 1))
        try:
            ridge = float(check_real(self.ridge, "ridge"))  # a number (not a string), finite
        except (TypeError, ValueError):
            ridge = -1.0
        if ridge < 0:
            raise ValueError(
                f"ridge must be a finite number >= 0 (relative to mean(diag K); 0: no ridge), got {self.ridge!r}"
            )
        object.__setattr__(self, "ridge", ridge)
        object.__setattr__(self, "seed", setting_int(self.seed, "seed", 0))


@dataclass(frozen=True)
class RegressionResult:
    """One run. ``confusion[i, j]`` counts test images of true class i predicted as j.
    ``test_images`` are the raw test pixels divided by the pixel scale (``[n_test, H, W, C]`` in
    0..1, for display); ``predictions`` and ``y_test`` are int ``[n_test]``."""

    spec: NetworkSpec
    settings: LabSettings
    accuracy: float
    confusion: np.ndarray
    predictions: np.ndarray
    y_test: np.ndarray
    test_images: np.ndarray
    class_names: tuple[str, ...]
    seconds: float
    n_train: int = field(default=0)

    def summary(self) -> dict:
        """A flat record for the history table/plots."""
        s = self.spec
        return {
            "dataset": self.settings.dataset,
            "depth": s.depth,
            "readout": s.readout,
            "fix_first": s.fix_first,
            "fix_last": s.fix_last,
            "kind": s.kind,
            "pool": s.pool,
            "n_train": self.n_train,
            "ridge": self.settings.ridge,
            "image_size": int(self.test_images.shape[1]),
            "accuracy": self.accuracy,
            "seconds": self.seconds,
        }


def block_mean(x: np.ndarray, f: int) -> np.ndarray:
    """Average ``[n, H, W, C]`` pixels over ``f x f`` blocks -> float64 ``[n, H // f, W // f, C]``
    (:func:`cntk_core.recurrence.block_mean`, the average pooling of the AvgPool layer)."""
    h, w = x.shape[1:3]
    if h // f == 0 or w // f == 0:
        raise ValueError(f"downsample={f} is larger than the {h}x{w} images")
    return _block_mean(np.asarray(x, dtype=np.float64), f, (1, 2))


def solve_predict(k_train: np.ndarray, k_test: np.ndarray, y_train: np.ndarray, n_classes: int, ridge: float):
    """Predicted labels ``[n_test]``: :func:`cntk_core.regression.kernel_regression` with the absolute
    ridge ``ridge * mean(diag K_train)`` (``ridge`` is relative, as in ``run_experiment``)."""
    from cntk_core.regression import SingularKernelError, kernel_regression

    lam = ridge * float(np.mean(np.diag(k_train)))
    try:
        return kernel_regression(k_train, y_train, k_test, ridge=lam, n_classes=n_classes)[0]
    except SingularKernelError:
        if not np.any(k_train):  # the core's message names the causes of an all-zero kernel
            raise
        hint = f"increase the ridge (now {ridge:g})" if ridge else "turn on the ridge (e.g. 1e-6)"
        raise SingularKernelError(
            "the training kernel is singular to working precision (duplicate or nearly identical training "
            f"images, or images downsampled too far): {hint}; the lab's ridge is relative to mean(diag K)"
        ) from None


class RegressionLabModel(JobModel):
    """Runs kernel regression for the architecture of ``architecture`` and the :class:`LabSettings`.

    ``run()`` computes in the background (or inline with ``synchronous=True``), then publishes a
    :class:`RegressionResult` in :attr:`result` and appends ``result.summary()`` to :attr:`history`.
    ``sweep(depths=..., n_per_class=...)`` runs a list of settings in one job (each finished run is
    added to the history as it completes). ``cancel()`` stops the running job; ``close()`` stops for
    good. Listeners: ``on_change(callback(event, model))`` with events ``"start"``, ``"progress"``,
    ``"result"`` (also after each run of a sweep: ``progress`` < 1 until the sweep ends),
    ``"history"``, ``"error"``, ``"settings"`` (after :meth:`set`), ``"cancelled"`` and ``"closed"``.
    ``notice`` holds a note about the latest submission (e.g. depths a sweep skipped) or None.

    The architecture and settings follow each shown result (after ``sweep(depths=[3, 6])`` they say
    depth 6; a ``"settings"`` event and the architecture's observers report it), so controls bound to
    them show what the figures show; if the user changed them while the job ran they are left alone
    and :meth:`control_changes` lists the differences.
    """

    def __init__(
        self,
        settings: LabSettings | None = None,
        *,
        architecture: ArchitectureModel | None = None,
        backend: str | None = None,
        synchronous: bool = False,
        **fields,
    ):
        self.settings = replace(settings or LabSettings(), **fields)
        self.architecture = architecture or ArchitectureModel()
        self.backend = backend
        self.result: RegressionResult | None = None
        self.history: list[dict] = []
        self.notice: str | None = None
        self._datasets: dict[str, Any] = {}
        self._limits: dict[str, dict] = {}
        self._follow: tuple | None = None  # (spec, settings) the controls must still hold for results to move them
        self._follow_lock = threading.Lock()
        self._start_runner("cntk-regression", synchronous, lambda r: self._publish(r, progress=1.0))

    def set(self, **fields) -> LabSettings:
        """Change settings (validated first: a bad value raises and changes nothing); emits ``"settings"``."""
        new = replace(self.settings, **fields)
        if new != self.settings:
            self._set_state(settings=new, event="settings")
        return self.settings

    def limits(self, name: str | None = None) -> dict:
        """Per data set: ``n_per_class`` / ``n_test_per_class`` (images in the smallest class of the
        training / test split), ``smallest_class`` / ``smallest_test_class`` (which class that is),
        ``height`` and ``width`` (pixels), ``max_downsample``. Computed once per data set."""
        name = name or self.settings.dataset
        if name not in self._limits:
            ds = self.dataset(name)
            h, w = ds.x_train.shape[1:3]
            train, test = (np.bincount(y, minlength=ds.n_classes) for y in (ds.y_train, ds.y_test))
            self._limits[name] = dict(
                n_per_class=int(train.min()),
                n_test_per_class=int(test.min()),
                smallest_class=int(train.argmin()),
                smallest_test_class=int(test.argmin()),
                height=int(h),
                width=int(w),
                max_downsample=max_downsample(h, w),
            )
        return dict(self._limits[name])

    def check_downsample(self, settings: LabSettings | None = None) -> None:
        """``ValueError`` when ``settings.downsample`` would leave images smaller than ``MIN_IMAGE_SIDE``."""
        s = settings or self.settings
        lim = self.limits(s.dataset)
        h, w, top = lim["height"], lim["width"], lim["max_downsample"]
        if s.downsample > top:
            raise ValueError(
                f"downsample={s.downsample} would shrink the {h}x{w} {s.dataset} images to "
                f"{h // s.downsample}x{w // s.downsample} pixels (at least {MIN_IMAGE_SIDE} needed): "
                f"use downsample <= {top}"
            )

    def dataset(self, name: str | None = None):
        """The :class:`cntk_core.data.Dataset` (loaded once per name)."""
        name = name or self.settings.dataset
        if name not in self._datasets:
            from cntk_core.data import load_dataset

            self._datasets[name] = load_dataset(name)
        return self._datasets[name]

    def subset(self, settings: LabSettings | None = None):
        """``(x_train, y_train, x_test, y_test, x_test_raw, class_names)``: a balanced, preprocessed
        subset; float64 NHWC images, int labels; ``x_test_raw`` is raw pixels / pixel scale."""
        from cntk_core.data import balanced_subset, preprocess

        s = settings or self.settings
        ds = self.dataset(s.dataset)
        self.check_downsample(s)
        lim = self.limits(s.dataset)
        for split, setting, smallest in (
            ("training", "n_per_class", "smallest_class"),
            ("test", "n_test_per_class", "smallest_test_class"),
        ):
            n = getattr(s, setting)
            if lim[setting] < n:
                raise ValueError(
                    f"{split} set of {s.dataset}: class {lim[smallest]} has only {lim[setting]} "
                    f"examples, fewer than {setting}={n}"
                )
        xtr, ytr = balanced_subset(ds.x_train, ds.y_train, s.n_per_class, seed=s.seed, n_classes=ds.n_classes)
        xte, yte = balanced_subset(ds.x_test, ds.y_test, s.n_test_per_class, seed=s.seed, n_classes=ds.n_classes)
        if s.downsample > 1:
            xtr, xte = block_mean(xtr, s.downsample), block_mean(xte, s.downsample)
        p = preprocess(xtr, xte, scale=ds.pixel_scale)
        return p.x_train, ytr, p.x_test, yte, xte / ds.pixel_scale, ds.class_names

    def run(self):
        """Start one run with the current architecture and settings."""
        spec, settings = self.architecture.spec, self.settings
        self.notice = self.cancelled = None
        self._follow = (spec, settings)
        return self._runner.submit(lambda ctx: self._one(spec, settings, ctx, 0.0, 1.0))

    def sweep(
        self,
        depths: Sequence[int] | None = None,
        n_per_class: Sequence[int] | None = None,
        *,
        skip_invalid: bool = False,
    ):
        """Run every depth (with the current settings) or every training size (current architecture).

        A depth the current architecture does not allow (depth 2 with both layers fixed) raises
        ``ValueError``, or with ``skip_invalid=True`` is left out and named in :attr:`notice`.
        """
        if (depths is None) == (n_per_class is None):
            raise ValueError("give exactly one of depths= or n_per_class=")
        base_spec, base = self.architecture.spec, self.settings
        plan, skipped = [], []
        for value in depths if depths is not None else n_per_class:
            try:
                if depths is not None:
                    plan.append((replace(base_spec, depth=value), base))
                else:
                    plan.append((base_spec, replace(base, n_per_class=value)))
            except (TypeError, ValueError) as exc:
                if not skip_invalid or depths is None:
                    param = getattr(exc, "param", None)  # the core's ParameterError keeps its parameter
                    args = (f"sweep: {exc}",) if param is None else (param, f"sweep: {exc}")
                    raise type(exc)(*args) from None
                skipped.append(f"depth {value} ({exc})")
        if not plan:
            raise ValueError("empty sweep" + (": skipped " + "; ".join(skipped) if skipped else ""))
        self.notice = "sweep skips " + "; ".join(skipped) if skipped else None
        self.cancelled = None
        self._follow = (base_spec, base)

        def job(ctx: JobContext):
            result = None
            for i, (spec, settings) in enumerate(plan):
                result = self._one(spec, settings, ctx, i / len(plan), (i + 1) / len(plan))
                if i < len(plan) - 1:
                    ctx.check()  # a superseded sweep publishes nothing more
                    self._publish(result)
            return result

        return self._runner.submit(job)

    def wait(self, timeout: float | None = 300.0) -> RegressionResult | None:
        self._runner.wait(timeout)
        return self.result

    def control_changes(self) -> list[str]:
        """How the current architecture and settings differ from the shown :attr:`result`, e.g.
        ``["depth 5 (shown: 3)"]``; ``[]`` when they match (or nothing is shown yet)."""
        r = self.result
        if r is None:
            return []
        now = {**asdict(self.architecture.spec), **asdict(self.settings)}
        shown = {**asdict(r.spec), **asdict(r.settings)}
        return [f"{_LABELS.get(k, k)} {now[k]} (shown: {shown[k]})" for k in now if now[k] != shown[k]]

    # -- internals ----------------------------------------------------------------------------
    def _publish(self, result: RegressionResult, **state) -> None:
        """Show ``result``. The controls follow it (architecture and settings become the result's, so
        what they say is what the figures show, e.g. depth 8 after a depth sweep) unless the user changed
        them since the job started: then :meth:`control_changes` names the differences instead."""
        with self._follow_lock:
            follow = self._follow is not None and self._follow == (self.architecture.spec, self.settings)
            if follow:
                self._follow = (result.spec, result.settings)
        if follow:
            self.architecture.set(**asdict(result.spec))
            self.set(**asdict(result.settings))
        self._set_state(result=result, event="result", **state)

    def _one(self, spec: NetworkSpec, settings: LabSettings, ctx: JobContext, lo: float, hi: float):
        t0 = time.perf_counter()
        xtr, ytr, xte, yte, raw_test, names = self.subset(settings)
        net = spec.network()
        n_tr, n_te = len(xtr), len(xte)
        # progress: the train upper triangle, then test x train, reported by the engine's own hooks
        mid = lo + (hi - lo) * (n_tr * (n_tr + 1) / 2) / (n_tr * (n_tr + 1) / 2 + n_te * n_tr)
        kw = dict(kind=spec.kind, backend=self.backend)
        k_train = chunked_gram(net, xtr, ctx=ctx.scaled(lo, mid), n_chunks=6, **kw)
        k_test = cross_gram(net, xte, xtr, ctx=ctx.scaled(mid, hi), n_chunks=4, **kw)
        n_classes = len(names)
        pred = solve_predict(k_train, k_test, ytr, n_classes, settings.ridge)
        from cntk_core.regression import accuracy, confusion_matrix

        confusion = confusion_matrix(yte, pred, n_classes)
        result = RegressionResult(
            spec=spec,
            settings=settings,
            accuracy=accuracy(yte, pred),
            confusion=confusion,
            predictions=pred,
            y_test=yte,
            test_images=raw_test,
            class_names=tuple(names),
            seconds=time.perf_counter() - t0,
            n_train=n_tr,
        )
        ctx.check()
        self.history.append(result.summary())
        self._set_state(event="history")
        return result
