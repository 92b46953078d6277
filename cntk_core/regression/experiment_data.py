"""The data of an experiment: which images of a split it uses, and the paper's preprocessing of them.

Images are NHWC arrays ``[n, H, W, C]`` (raw pixels in, standardised float64 out); labels ``[n]``.
"""

from __future__ import annotations

import numpy as np

from ..data import STATS
from ..validation import ParameterError, check_choice


def standardize(dataset, *images, stats: str = "all") -> list[np.ndarray]:
    """The paper's preprocessing of ``images`` (raw NHWC arrays of ``dataset``): ``/ pixel_scale``, then
    per-channel standardisation with training statistics, from all of ``dataset.x_train``
    (``stats="all"``) or from ``images[0]`` (``stats="used"``, the training images in use).
    Returns float64 arrays, one per input.
    """
    from .. import data

    check_choice(stats, "stats", STATS)
    if stats == "used" and not images:
        raise ParameterError(
            "images",
            "standardize(stats='used') fits the statistics on images[0], the training images in use; none given",
        )
    fit_on = dataset.x_train if stats == "all" else images[0]
    if np.ndim(fit_on) and np.shape(fit_on)[0] == 0:
        where = "the data set has no training images (dataset.x_train" if stats == "all" else "images[0] (stats='used'"
        raise ParameterError(
            "dataset" if stats == "all" else "images",
            f"standardize: {where} is empty): cannot compute the per-channel statistics",
        )
    std = data.Standardizer(getattr(dataset, "pixel_scale", 255.0)).fit(fit_on)
    return [std.transform(x) for x in images]


def pick_subset(x, y, n: int | None, name: str, per_class: bool, subset: str, seed: int):
    """``(x [m, H, W, C], y [m])``: ``n`` images of the split ``(x, y)`` (``None``: all; ``n`` per class
    with ``per_class``), drawn as ``subset`` says (one of :data:`cntk_core.data.SUBSETS`; ``"random"`` and
    ``"balanced"`` seeded with ``seed``). Never fewer than asked: :class:`~cntk_core.validation.ParameterError`
    naming ``name`` (``"n_train"`` / ``"n_test"``) when the split has too few.
    """
    if n is None:
        return x, y
    from .. import data

    split = "training" if name == "n_train" else "test"
    if not per_class:
        if n > len(x):
            raise ParameterError(name, f"{name}={n} is more than the {len(x)} {split} images of the data set")
        if n == len(x):
            return x, y
    if per_class or subset == "balanced":
        classes, counts = np.unique(y, return_counts=True)
        if len(classes) == 0:
            raise ParameterError(name, f"{name}={n} per class: the data set has no {split} images")
        if per_class:
            k, what = n, f"{name}={n} per class (per_class=True)"
        else:
            if n % len(classes):
                raise ParameterError(
                    name,
                    f"subset='balanced' needs {name} divisible by the {len(classes)} classes, got {n} "
                    "(subset='first' or subset='random' take any number)",
                )
            k = n // len(classes)
            what = f"{name}={n} with subset='balanced' ({k} per class)"
        if counts.min() < k:
            raise ParameterError(
                name,
                f"{what} is more than the data set has: class {classes[np.argmin(counts)]} has only "
                f"{counts.min()} {split} images",
            )
        return data.balanced_subset(x, y, k, seed=seed)
    if subset == "first":
        return x[:n], y[:n]
    return data.random_subset(x, y, n, seed=seed)
