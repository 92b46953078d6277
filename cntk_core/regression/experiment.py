"""The end-to-end experiment: data -> preprocessing -> kernels -> solve -> metrics, in one call.

Preprocessing is the paper's standardisation, optionally followed by ZCA whitening, Coates et al.'s
random-patch features and flip augmentation (:func:`~.experiment_data.preprocess_split`); the kernel
is any :class:`~cntk_core.architecture.Architecture` (LAP, circular padding, pools, flip).

Accuracies are fractions in [0, 1], timings seconds; the reported ridge is absolute (in the kernel's
units) and relative to ``mean(diag(K_train))``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..architecture import Architecture
from ..data import SUBSETS
from ..validation import ParameterError, ParameterTypeError, check_choice, check_flag, check_int, check_labels
from ._checks import check_ridge_choice
from .experiment_data import check_preprocessing, pick_subset, preprocess_split
from .metrics import accuracy, confusion_matrix, per_class_accuracy
from .ridge import RidgeSelection, select_ridge
from .solve import kernel_regression


@dataclass
class ExperimentResult:
    """Outcome of :func:`run_experiment`. Accuracies are fractions in [0, 1]; timings in seconds."""

    dataset: str
    n_train: int
    n_test: int
    image_shape: tuple
    depth: int
    readout: str
    fix: bool
    kind: str
    dtype: str
    backend: str
    accuracy: float
    per_class_accuracy: np.ndarray
    confusion: np.ndarray
    class_names: list
    ridge: float
    relative_ridge: float
    ridge_mode: str
    timings: dict
    ridge_selection: RidgeSelection | None = None
    K_train: np.ndarray | None = field(default=None, repr=False)
    K_test: np.ndarray | None = field(default=None, repr=False)
    kernel: str = ""  # the Architecture's title, e.g. "CNTK-LAP2-5+flip"
    architecture: dict = field(default_factory=dict)  # Architecture.to_dict()
    preprocessing: dict = field(default_factory=dict)  # see experiment_data.preprocess_split

    @property
    def stderr(self) -> float:
        """Binomial standard error of the accuracy, ``sqrt(a (1 - a) / n_test)``."""
        a = self.accuracy
        return float(np.sqrt(a * (1 - a) / self.n_test))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no kernels)."""
        return {
            "dataset": self.dataset,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "image_shape": list(self.image_shape),
            "depth": self.depth,
            "readout": self.readout,
            "fix": self.fix,
            "kind": self.kind,
            "kernel": self.kernel,
            "architecture": dict(self.architecture),
            "preprocessing": dict(self.preprocessing),
            "dtype": self.dtype,
            "backend": self.backend,
            "accuracy": self.accuracy,
            "stderr": self.stderr,
            "per_class_accuracy": [None if np.isnan(a) else float(a) for a in self.per_class_accuracy],
            "confusion": self.confusion.tolist(),
            "class_names": list(self.class_names),
            "ridge": self.ridge,
            "relative_ridge": self.relative_ridge,
            "ridge_mode": self.ridge_mode,
            "ridge_selection": None if self.ridge_selection is None else self.ridge_selection.to_dict(),
            "timings": dict(self.timings),
        }

    def report(self) -> str:
        """Human-readable multi-line report."""
        names = [str(c) for c in self.class_names]
        width = max(5, *(len(n) for n in names))
        lines = [
            f"dataset {self.dataset}: {self.n_train} train / {self.n_test} test images of shape {self.image_shape}",
            f"kernel: {self.kernel or 'CNTK'} (depth {self.depth}, readout {self.readout}, fix={self.fix}, "
            f"kind {self.kind}), dtype {self.dtype}, backend {self.backend}",
            f"preprocessing: {_describe_preprocessing(self.preprocessing)}",
            f"ridge: {self.ridge_mode} -> {self.ridge:.4g} ({self.relative_ridge:.3g} x mean diag)",
            f"accuracy: {100 * self.accuracy:.2f} % (+/- {100 * self.stderr:.2f} binomial s.e.)",
            "per-class accuracy:",
        ]
        for n, a in zip(names, self.per_class_accuracy, strict=True):
            lines.append(f"  {n:<{width}} {'   n/a' if np.isnan(a) else f'{100 * a:6.2f} %'}")
        lines.append("confusion (rows true, columns predicted):")
        cw = max(3, len(str(int(self.confusion.max()))) + 1)
        lines.append(" " * (width + 2) + "".join(f"{i:>{cw}}" for i in range(len(names))))
        for i, row in enumerate(self.confusion):
            lines.append(f"  {names[i]:<{width}}" + "".join(f"{v:>{cw}}" for v in row))
        t = self.timings
        lines.append("timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in t.items()))
        return "\n".join(lines)


def run_experiment(
    dataset,
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    per_class: bool = False,
    subset: str = "balanced",
    depth: int = 3,
    readout: str = "gap",
    fix: bool = False,
    kind: str = "ntk",
    lap_c: int | None = None,
    padding: str = "zero",
    pools: tuple[int, ...] = (),
    flip: bool = False,
    zca: float | bool | None = None,
    flip_augment: bool = False,
    random_patches: int | None = None,
    patch_size: int = 5,
    patch_bias: float = 1.0,
    patch_pool: int = 1,
    patch_zca: float = 0.01,
    ridge: str | float = "none",
    n_folds: int = 5,
    backend: str | None = None,
    dtype: str = "float64",
    progress: bool | None = None,
    seed: int = 0,
    stats: str = "all",
    keep_kernels: bool = False,
) -> ExperimentResult:
    """Data -> paper preprocessing -> kernels -> solve -> metrics, in one call.

    dataset: a name for :func:`cntk_core.data.load_dataset` (``"digits"``, ``"cifar10-subset"``,
    ``"cifar10"``) or a ``Dataset``. n_train / n_test: number of images (an integer >= 1, ``None``: all),
    or per class with ``per_class=True`` (balanced, seeded); asking for more than the data set has is
    a ``ValueError``, never a silently smaller experiment. subset: how ``n`` total images are drawn:
    ``"balanced"`` (the default, as ``cntk-lab regress --subset``: ``n / classes`` of each class, seeded;
    ``n`` must be a multiple of the number of classes), the ``"first"`` n (the paper's "-2K" setting) or
    ``"random"`` (seeded).
    ridge: ``"none"`` (the paper, 0), ``"cv"`` (k-fold CV on the training kernel, ``2 <= n_folds <= n_train``)
    or a float relative to ``mean(diag(K_train))``. stats: per-channel preprocessing statistics from
    ``"all"`` training images of the data set (as the official code, which standardises the whole
    training set before any subset is taken) or only the ``"used"`` ones (see :func:`standardize`).
    ``keep_kernels`` stores K_train / K_test in the result.

    The kernel: ``depth``, ``readout`` (``"gap"``, ``"vanilla"``, ``"lap"`` with ``lap_c``), ``fix``,
    ``padding``, ``pools`` and ``flip`` (the flip-symmetrised kernel) make the
    :class:`~cntk_core.architecture.Architecture` (its title is the result's ``kernel``); ``kind``
    is CNTK or CNN-GP.

    Preprocessing after the standardisation, each step fitted on the training images in use only
    (never on test images; see :func:`~.experiment_data.preprocess_split`): ``zca`` (a number >= 0,
    the ZCA regulariser relative to the mean eigenvalue, ``True`` for 0.1); ``random_patches = K``
    (>= 2): Coates et al.'s features of :class:`~cntk_core.data.RandomPatches` with ``patch_size``,
    ``patch_bias``, ``patch_pool``, ``patch_zca`` and ``seed`` (``2 K`` channels); ``flip_augment``:
    the training set followed by its mirror images (twice the images and labels: the result's
    ``n_train`` counts both, ``preprocessing["n_train_images"]`` the originals).
    """
    from .. import data
    from ..backend import resolve_backend
    from ..gram import kernel_matrix

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    ds = data.load_dataset(dataset) if isinstance(dataset, str) else dataset
    for attr in ("x_train", "y_train", "x_test", "y_test"):
        if not hasattr(ds, attr):
            raise ParameterTypeError(
                "dataset", f"dataset must be a name or a cntk_core.data.Dataset, got {type(dataset).__name__}"
            )
    ridge = check_ridge_choice(ridge, ("none", "cv"))
    n_train = None if n_train is None else check_int(n_train, "n_train", 1)
    n_test = None if n_test is None else check_int(n_test, "n_test", 1)
    if ridge == "cv":
        n_folds = check_int(n_folds, "n_folds", 2, " (k-fold cross-validation of the ridge)")
    per_class = check_flag(per_class, "per_class")
    keep_kernels = check_flag(keep_kernels, "keep_kernels")
    check_choice(subset, "subset", SUBSETS)
    arch = Architecture.from_options(depth, readout, fix, lap_c=lap_c, padding=padding, pools=pools, flip=flip)
    title = arch.title(kind)  # checks kind too
    zca, flip_augment, patches = check_preprocessing(
        zca, flip_augment, random_patches, patch_size, patch_bias, patch_pool, patch_zca, seed
    )
    x_tr, y_tr = pick_subset(ds.x_train, np.asarray(ds.y_train), n_train, "n_train", per_class, subset, seed)
    x_te, y_te = pick_subset(ds.x_test, np.asarray(ds.y_test), n_test, "n_test", per_class, subset, seed)
    if ridge == "cv" and n_folds > len(y_tr):
        raise ParameterError(
            "n_folds",
            f"n_folds={n_folds} is larger than the {len(y_tr)} training images: ridge='cv' needs n_folds <= n_train",
        )
    x_tr, y_tr, x_te, prep = preprocess_split(
        ds, x_tr, y_tr, x_te, stats=stats, zca=zca, flip_augment=flip_augment, patches=patches
    )
    y_tr = check_labels(y_tr, name="y_train")  # before the kernels: bad labels fail in a second, not an hour
    y_te = check_labels(y_te, name="y_test")
    arch.stage_shape(*x_tr.shape[1:3])  # pools on images too small: refused before the kernels
    class_names = list(getattr(ds, "class_names", None) or range(int(max(y_tr.max(), y_te.max())) + 1))
    n_classes = len(class_names)
    timings["data"] = time.perf_counter() - t0

    be = resolve_backend(backend)
    kw = dict(depth=depth, readout=readout, fix=fix, kind=kind, dtype=dtype, backend=be, progress=progress)
    kw.update(lap_c=arch.lap_c, padding=arch.padding, pools=arch.pools, flip=arch.flip)
    t = time.perf_counter()
    K_train = kernel_matrix(x_tr, **kw)
    timings["gram_train"] = time.perf_counter() - t
    t = time.perf_counter()
    K_test = kernel_matrix(x_te, x_tr, **kw)
    timings["gram_test"] = time.perf_counter() - t

    t = time.perf_counter()
    kscale = float(np.mean(np.diag(K_train)))
    selection = None
    if ridge == "cv":
        selection = select_ridge(K_train, y_tr, n_folds=n_folds, n_classes=n_classes, seed=seed)
        lam, mode = selection.ridge, f"cv ({selection.n_folds}-fold)"
    elif ridge == "none":
        lam, mode = 0.0, "none"
    else:
        lam, mode = float(ridge) * kscale, "fixed"
    pred, _ = kernel_regression(K_train, y_tr, K_test, ridge=lam, n_classes=n_classes)
    timings["solve"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0

    return ExperimentResult(
        dataset=str(getattr(ds, "name", dataset)),
        n_train=len(y_tr),
        n_test=len(y_te),
        image_shape=tuple(int(s) for s in x_tr.shape[1:]),
        depth=int(depth),
        readout=readout,
        fix=bool(fix),
        kind=kind,
        dtype=str(dtype),
        backend=be,
        accuracy=accuracy(y_te, pred),
        per_class_accuracy=per_class_accuracy(y_te, pred, n_classes),
        confusion=confusion_matrix(y_te, pred, n_classes),
        class_names=class_names,
        ridge=float(lam),
        relative_ridge=float(lam / kscale) if kscale else float("nan"),
        ridge_mode=mode,
        timings=timings,
        ridge_selection=selection,
        K_train=K_train if keep_kernels else None,
        K_test=K_test if keep_kernels else None,
        kernel=title,
        architecture=arch.to_dict(),
        preprocessing=prep,
    )


def _describe_preprocessing(p: dict) -> str:
    """One line for :meth:`ExperimentResult.report` from the ``preprocessing`` record."""
    if not p:
        return "standardised"
    parts = [f"standardised ({p.get('stats')} training statistics)"]
    if p.get("zca") is not None:
        parts.append(f"ZCA eps {p['zca']:g}")
    rp = p.get("random_patches")
    if rp:
        parts.append(
            f"{rp['n_patches']} random {rp['size']}x{rp['size']} patches (bias {rp['bias']:g}, pool {rp['pool']})"
        )
    if p.get("flip_augment"):
        parts.append(f"flip-augmented ({p.get('n_train_images')} -> {2 * p.get('n_train_images', 0)} training images)")
    return ", ".join(parts)
