"""Plain-Python model of the regression lab: CNTK kernel regression on a small balanced subset.

The recipe is the paper's (``docs/math.md``, section 6): pixels / scale, per-channel standardisation with
training statistics, targets 0.9 / -0.1, ``(K_train + ridge * mean(diag K_train) * I) alpha = Y``,
prediction ``argmax K_test,train alpha``. ``ridge = 0`` is the paper's plain solve. Optional
preprocessing of the later papers (:class:`LabSettings`): ZCA whitening, flip augmentation of the
training set, and Coates et al.'s random-patch features (:class:`cntk_core.data.RandomPatches`); the
flip-symmetrised kernel is a choice of the architecture (:attr:`NetworkSpec.flip`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from cntk_core.validation import ParameterError

from .jobs import JobContext, JobModel
from .models import ArchitectureModel, NetworkSpec, chunked_gram, cross_gram, per_layer_note
from .regression_data import (
    MIN_IMAGE_SIDE,
    PATCH_BIAS,
    LabSettings,
    available_datasets,
    block_mean,
    default_downsample,
    max_downsample,
    prepare_images,
)

__all__ = [  # the settings and data helpers live in regression_data; importable from here as before
    "MIN_IMAGE_SIDE",
    "PATCH_BIAS",
    "LabSettings",
    "RegressionLabModel",
    "RegressionResult",
    "available_datasets",
    "block_mean",
    "default_downsample",
    "max_downsample",
    "prepare_images",
    "solve_predict",
]

#: how :meth:`RegressionLabModel.control_changes` names a setting (as the lab's controls do)
_LABELS = {
    "n_per_class": "train/class",
    "n_test_per_class": "test/class",
    "fix_first": "fix first layer",
    "fix_last": "fix last layer",
    "pool": "AvgPool",
    "dataset": "data",
    "preset": "network",
    "lap_c": "LAP c",
    "flip": "flip-symmetrised kernel",
    "zca": "ZCA",
    "flip_augment": "flip augmentation",
    "patches": "random patches",
    "patch_size": "patch size",
}


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
            "preset": s.preset,
            "lap_c": s.lap_c,
            "padding": s.padding,
            "flip": s.flip,
            "n_train": self.n_train,
            "ridge": self.settings.ridge,
            "zca": self.settings.zca,
            "flip_augment": self.settings.flip_augment,
            "patches": self.settings.patches,
            "patch_size": self.settings.patch_size,
            "image_size": int(self.test_images.shape[1]),
            "accuracy": self.accuracy,
            "seconds": self.seconds,
        }


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

    def check_image_shape(self, spec: NetworkSpec | None = None, settings: LabSettings | None = None) -> None:
        """``ParameterError("pools")`` when ``spec``'s pools cannot halve the downsampled images whole
        (:meth:`NetworkSpec.check_image_shape`); the message names the downsample factors that can."""
        spec, s = spec or self.architecture.spec, settings or self.settings
        lim = self.limits(s.dataset)
        h, w, m = lim["height"], lim["width"], spec.image_multiple
        by_size = {(h // f, w // f): f for f in range(1, lim["max_downsample"] + 1)}  # the menu's: largest factor
        good = sorted(f for (a, b), f in by_size.items() if a % m == 0 and b % m == 0)
        if good:
            hint = f" ({s.dataset} {h}x{w} with downsample {s.downsample}): use downsample " + (
                " or ".join(", ".join(map(str, good)).rsplit(", ", 1))
            )
        else:
            hint = f" ({s.dataset} {h}x{w}): no downsample factor gives such images; choose the paper preset"
        spec.check_image_shape(h // s.downsample, w // s.downsample, hint=hint)

    def dataset(self, name: str | None = None):
        """The :class:`cntk_core.data.Dataset` (loaded once per name)."""
        name = name or self.settings.dataset
        if name not in self._datasets:
            from cntk_core.data import load_dataset

            self._datasets[name] = load_dataset(name)
        return self._datasets[name]

    def subset(self, settings: LabSettings | None = None):
        """``(x_train, y_train, x_test, y_test, x_test_raw, class_names)``: a balanced, preprocessed
        subset; float64 NHWC images, int labels; ``x_test_raw`` is raw pixels / pixel scale.

        Preprocessing, fitted on the drawn training images only: downsampling, then
        :func:`~cntk_widgets.regression_data.prepare_images` (standardisation, ZCA, flip augmentation:
        ``2 n`` training images, random patches). Allocates the subset's images a few times over."""
        from cntk_core.data import balanced_subset

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
        x_train, ytr, x_test = prepare_images(xtr, ytr, xte, ds.pixel_scale, s)
        return x_train, ytr, x_test, yte, xte / ds.pixel_scale, ds.class_names

    def run(self):
        """Start one run with the current architecture and settings."""
        spec, settings = self.architecture.spec, self.settings
        self.cancelled = None
        self.notice = self._slow_note(spec, settings)
        self._follow = (spec, settings)
        return self._runner.submit(lambda ctx: self._one(spec, settings, ctx, 0.0, 1.0))

    def _slow_note(self, spec: NetworkSpec, settings: LabSettings) -> str | None:
        """:func:`~cntk_widgets.models.per_layer_note` for the run's images (with a downsample hint)."""
        try:
            lim = self.limits(settings.dataset)
        except (OSError, ValueError):  # the run itself says why the data set cannot be used
            return None
        h, w = lim["height"] // settings.downsample, lim["width"] // settings.downsample
        return per_layer_note(spec, h, w, hint="downsample for a quick run")

    def sweep(
        self,
        depths: Sequence[int] | None = None,
        n_per_class: Sequence[int] | None = None,
        *,
        skip_invalid: bool = False,
    ):
        """Run every depth (with the current settings) or every training size (current architecture).

        A depth the current architecture does not allow (depth 2 with both layers fixed) raises
        ``ValueError``, or with ``skip_invalid=True`` is left out and named in :attr:`notice`; a depth
        sweep of a Myrtle preset (a fixed depth) raises ``ValueError``.
        """
        if (depths is None) == (n_per_class is None):
            raise ValueError("give exactly one of depths= or n_per_class=")
        base_spec, base = self.architecture.spec, self.settings
        if depths is not None and base_spec.preset != "paper":
            raise ParameterError(
                "depth", f"sweep: {base_spec.title} has a fixed depth: a depth sweep needs the paper preset"
            )
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
        notes = ["sweep skips " + "; ".join(skipped)] if skipped else []
        notes += [n for n in [self._slow_note(*plan[-1])] if n is not None]  # pools and images: as every step's
        self.notice = "; ".join(notes) or None
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
        self.check_image_shape(spec, settings)
        xtr, ytr, xte, yte, raw_test, names = self.subset(settings)
        net = spec.architecture  # not spec.network(): the flip-symmetrised kernel is no layer
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
