"""The images the lab's notebooks and classroom page show: a class-balanced, preprocessed subset of a
data set, chosen by name or by the launcher's environment variables.

- ``CNTK_LAB_DATASET``: ``"digits"`` (default; bundled, offline), ``"cifar10-subset"`` or
  ``"cifar10"`` (see :mod:`cntk_core.data` for where each comes from);
- ``CNTK_LAB_N_PER_CLASS``: images per class (default 4: 40 images).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .models import setting_int

DATASET_ENV, N_PER_CLASS_ENV = "CNTK_LAB_DATASET", "CNTK_LAB_N_PER_CLASS"
DEFAULT_N_PER_CLASS = 4
#: how a data set is named in sentences
TITLES = {"digits": "8×8 handwritten digits", "cifar10-subset": "CIFAR-10", "cifar10": "CIFAR-10"}


@dataclass(frozen=True)
class LabImages:
    """``x`` float64 NHWC ``[n, H, W, C]`` (pixels / scale, standardised per channel), ``y`` int
    ``[n]``, ``class_names``, ``dataset`` (its name) and ``n_per_class``."""

    x: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]
    dataset: str
    n_per_class: int

    def describe(self) -> str:
        """One sentence, e.g. ``"40 CIFAR-10 training images (4 per class), 32×32 px"``."""
        h, w = self.x.shape[1:3]
        title = TITLES.get(self.dataset, self.dataset)
        return f"{len(self.x)} {title} training images ({self.n_per_class} per class), {h}×{w} px"


def lab_dataset(name: str | None = None) -> str:
    """``name``, else ``$CNTK_LAB_DATASET``, else ``"digits"``; checked against the data sets."""
    from cntk_core.data import DATASETS

    name = name or os.environ.get(DATASET_ENV) or "digits"
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r} (from {DATASET_ENV} or the argument); choose one of {DATASETS}")
    return name


def lab_n_per_class(n_per_class: int | None = None) -> int:
    """``n_per_class``, else ``$CNTK_LAB_N_PER_CLASS``, else :data:`DEFAULT_N_PER_CLASS`."""
    if n_per_class is None:
        text = os.environ.get(N_PER_CLASS_ENV)
        if not text:
            return DEFAULT_N_PER_CLASS
        try:
            n_per_class = int(text)
        except ValueError:
            raise ValueError(f"{N_PER_CLASS_ENV} must be a whole number of images per class, got {text!r}") from None
    return setting_int(n_per_class, "n_per_class", 1, " (images per class)")


def lab_images(dataset: str | None = None, n_per_class: int | None = None, *, seed: int = 0) -> LabImages:
    """A class-balanced subset of the training split: ``n_per_class`` images of every class, drawn
    with ``seed``, preprocessed as in the paper (pixels / scale, per-channel standardisation with
    the subset's own statistics). Loads the data set (see :func:`cntk_core.data.load_dataset`)."""
    from cntk_core.data import balanced_subset, load_dataset, preprocess

    name, per_class = lab_dataset(dataset), lab_n_per_class(n_per_class)
    ds = load_dataset(name)
    x_raw, y = balanced_subset(ds.x_train, ds.y_train, per_class, seed=seed, n_classes=ds.n_classes)
    x = preprocess(x_raw, scale=ds.pixel_scale).x_train
    return LabImages(x, np.asarray(y), tuple(ds.class_names), name, per_class)
