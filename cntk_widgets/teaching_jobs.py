"""Plain-Python models of two teaching views (issue 26): small-data learning curves and the paper's
Table 2 at class scale. Each runs one core function in a background job with progress and cancel:

- :class:`LearningCurvesModel`: :func:`cntk_core.regression.learning_curves` for CNTK-GAP, CNTK-V and
  the CNN-GP over training sizes 10, 20, 40, ... with many random class-balanced subsets per size (the
  same subsets for every kernel, each Gram entry computed once);
- :class:`Table2Model`: :func:`cntk_core.finite.table2_comparison`, the exact CNTK against the
  random features (empirical NTK) of one randomly initialised width-128 net, per readout and depth.

The core call holds :data:`~cntk_widgets.jobs.ENGINE_LOCK` for its whole run (the core makes its own
engine calls), so another widget's kernel waits until it ends; run these one at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cntk_core import Architecture
from cntk_core.validation import ParameterError

from .jobs import ENGINE_LOCK, JobContext, JobModel
from .models import setting_int

#: the kernels of the learning curves: name -> (network, kind); the paper's recipes at depth 3
CURVE_KERNELS = {
    "CNTK-GAP": (Architecture(3, "gap", fix_first=True, fix_last=True), "ntk"),
    "CNTK-V": (Architecture(3, "vanilla"), "ntk"),
    "CNN-GP-GAP": (Architecture(3, "gap"), "nngp"),
}


@dataclass(frozen=True, eq=False)
class Split:
    """Preprocessed float64 images ``x_train [n, H, W, C]``, ``x_test [m, H, W, C]``, int labels
    ``y_train [n]`` and ``y_test [m]`` in ``0 .. len(class_names) - 1``, and the data set's name."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    dataset: str


def class_split(
    dataset: str | None = None,
    n_per_class: int | None = None,
    n_test_per_class: int = 10,
    *,
    classes: Sequence[int] | None = None,
    seed: int = 0,
) -> Split:
    """Training and test images of ``classes`` (default: all; relabelled ``0 .. k-1``): ``n_per_class``
    training images per class (``None``: the whole training split of those classes, the learning
    curves' pool) and ``n_test_per_class`` test images per class, drawn with ``seed``; pixels / scale,
    then per-channel standardisation with the training images' statistics (``docs/math.md``, section
    6). ``dataset``: a name of :data:`cntk_core.data.DATASETS` (default :func:`lab_dataset`)."""
    from cntk_core.data import balanced_subset, load_dataset, preprocess

    from .lab_data import lab_dataset

    ds = load_dataset(lab_dataset(dataset))
    classes = list(range(ds.n_classes)) if classes is None else [int(c) for c in classes]
    if len(set(classes)) < 2 or min(classes) < 0 or max(classes) >= ds.n_classes:
        raise ParameterError(
            "classes", f"classes: at least two distinct labels in 0 .. {ds.n_classes - 1}, got {classes}"
        )
    relabel = np.full(ds.n_classes, -1)
    relabel[classes] = np.arange(len(classes))

    def pick(x, y, n):
        keep = relabel[y] >= 0
        x, y = x[keep], relabel[y[keep]]
        if n is None:
            return x, y
        return balanced_subset(x, y, setting_int(n, "n_per_class", 1), seed=seed, n_classes=len(classes))

    xtr, ytr = pick(ds.x_train, ds.y_train, n_per_class)
    xte, yte = pick(ds.x_test, ds.y_test, n_test_per_class)
    p = preprocess(xtr, xte, scale=ds.pixel_scale)
    names = tuple(ds.class_names[c] for c in classes)
    return Split(p.x_train, np.asarray(ytr, np.int64), p.x_test, np.asarray(yte, np.int64), names, ds.name)


class _CoreJob(JobModel):
    """One core computation in a background job; its result in :attr:`result` (event ``"result"``)."""

    def _init(self, name: str, synchronous: bool, autostart: bool) -> None:
        self.result = None
        self._start_runner(name, synchronous, lambda r: self._set_state(result=r, progress=1.0, event="result"))
        if autostart:
            self.run()

    def run(self):
        """Start (or restart) the computation; returns the job's future."""
        self.cancelled = None
        return self._runner.submit(self._job)

    def _job(self, ctx: JobContext):
        hooks = {"progress": lambda done, total: ctx.progress(done / total if total else 1.0), "cancel": ctx.check}
        core = self._core()
        with ENGINE_LOCK:
            return core(self.split, hooks)

    def _core(self):
        """The core call, as ``core(split, hooks)`` (imported here, outside the engine lock)."""
        raise NotImplementedError

    def wait(self, timeout: float | None = 600.0):
        self._runner.wait(timeout)
        return self.result


class LearningCurvesModel(_CoreJob):
    """Learning curves on a pool of training images (default: the whole training split of the lab's
    data set) and a class-balanced test set, for ``kernels`` (default :data:`CURVE_KERNELS`).

    ``run()`` starts the job (also at construction with ``autostart``); :attr:`result` is
    ``{name: LearningCurve}`` (accuracies fractions ``[n_sizes, n_draws]``). ``sizes`` must be
    multiples of the number of classes. Memory: per kernel the Grams of the pool images that some
    subset uses (``U^2 + n_test U`` float64, ``U`` at most the sum of sizes times ``n_draws``).
    """

    def __init__(
        self,
        split: Split | None = None,
        *,
        sizes: Sequence[int] = (10, 20, 40, 80, 160),
        n_draws: int = 10,
        n_test_per_class: int = 10,
        kernels: dict | None = None,
        seed: int = 0,
        backend: str | None = None,
        synchronous: bool = False,
        autostart: bool = True,
    ):
        self.split = split or class_split(None, None, n_test_per_class, seed=seed)
        self.sizes = tuple(setting_int(s, "sizes", 1, " (training images)") for s in sizes)
        self.n_draws = setting_int(n_draws, "n_draws", 1, " (random subsets per size)")
        self.kernels = dict(CURVE_KERNELS if kernels is None else kernels)
        self.seed, self.backend = seed, backend
        from cntk_core.regression import learning_curve_subsets

        learning_curve_subsets(self.split.y_train, self.sizes, 1, seed)  # bad sizes raise here, not in the job
        self._init("cntk-curves", synchronous, autostart)

    def _core(self):
        from cntk_core.regression import learning_curves

        return lambda s, hooks: learning_curves(
            s.x_train, s.y_train, s.x_test, s.y_test, self.kernels, self.sizes, self.n_draws, self.seed,
            backend=self.backend, **hooks,
        )  # fmt: skip


class Table2Model(_CoreJob):
    """The exact CNTK against the random features of one width-``width`` net (Arora et al. 2019,
    Table 2), on a class split (default: the first two classes of the lab's data set, as the paper's
    first two CIFAR-10 classes). :attr:`result` is a :class:`cntk_core.finite.Table2Result`.
    Cost: the empirical NTK is mostly per image (forward and backward passes of the width-128 net,
    per seed): keep the split small (tens of images) on a laptop."""

    def __init__(
        self,
        split: Split | None = None,
        *,
        depths: Sequence[int] = (3,),
        readouts: Sequence[str] = ("vanilla", "gap"),
        seeds: Sequence[int] = (0,),
        width: int = 128,
        n_per_class: int = 20,
        n_test_per_class: int = 20,
        classes: Sequence[int] = (0, 1),
        backend: str | None = None,
        synchronous: bool = False,
        autostart: bool = True,
    ):
        self.split = split or class_split(None, n_per_class, n_test_per_class, classes=classes)
        self.depths, self.readouts, self.seeds = tuple(depths), tuple(readouts), tuple(seeds)
        self.width = setting_int(width, "width", 1)
        self.backend = backend
        self._init("cntk-table2", synchronous, autostart)

    def _core(self):
        from cntk_core.finite import table2_comparison

        return lambda s, hooks: table2_comparison(
            s.x_train, s.y_train, s.x_test, s.y_test, self.depths, width=self.width, seeds=self.seeds,
            readouts=self.readouts, backend=self.backend, **hooks,
        )  # fmt: skip
