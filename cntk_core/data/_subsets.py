"""Deterministic training subsets: balanced per class, uniformly random, or the first n."""

from __future__ import annotations

import numpy as np

from ..validation import check_int
from ._checks import make_rng

#: how ``n`` images are drawn from a split: the first ``n``, uniformly at random, or class-balanced
SUBSETS = ("first", "random", "balanced")


def _check_xy(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"y must be a 1-D integer label array, got {y.dtype} {y.shape}")
    if x.ndim < 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same length, got {x.shape[:1]} and {y.shape}")
    return x, y


def balanced_indices(y, n_per_class: int, seed: int = 0, n_classes: int | None = None) -> np.ndarray:
    """Indices (ascending) of ``n_per_class`` randomly chosen examples of each class.

    Classes are ``0 .. n_classes - 1`` when ``n_classes`` is given, else the labels present in ``y``.
    Raises ValueError when a class has fewer than ``n_per_class`` examples.
    """
    y = np.asarray(y)
    _check_xy(y, y)
    n_per_class = check_int(n_per_class, "n_per_class", 0)
    rng = make_rng(seed)
    classes = np.arange(n_classes) if n_classes is not None else np.unique(y)
    picked = []
    for c in classes:
        idx = np.flatnonzero(y == c)
        if len(idx) < n_per_class:
            raise ValueError(f"class {int(c)} has only {len(idx)} examples, fewer than n_per_class={n_per_class}")
        picked.append(rng.choice(idx, size=n_per_class, replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def balanced_subset(x, y, n_per_class: int, seed: int = 0, n_classes: int | None = None):
    """``(x[idx], y[idx])`` with exactly ``n_per_class`` examples per class, in original order.

    Deterministic for a given ``seed``; see :func:`balanced_indices`.
    """
    x, y = _check_xy(x, y)
    idx = balanced_indices(y, n_per_class, seed, n_classes)
    return x[idx], y[idx]


def random_subset(x, y, n: int, seed: int = 0):
    """``n`` examples drawn uniformly without replacement (deterministic for a seed), in original order."""
    x, y = _check_xy(x, y)
    n = check_int(n, "n", 0)
    if n > len(y):
        raise ValueError(f"cannot draw {n} examples from {len(y)}")
    idx = np.sort(make_rng(seed).choice(len(y), size=n, replace=False))
    return x[idx], y[idx]


def first_n(x, y, n: int):
    """The first ``n`` examples (the paper's "first 2,000 training images"): plain slicing."""
    x, y = _check_xy(x, y)
    n = check_int(n, "n", 0)
    if n > len(y):
        raise ValueError(f"asked for the first {n} examples of {len(y)}")
    return x[:n], y[:n]
