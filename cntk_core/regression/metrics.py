"""Classification metrics of predicted class indices: accuracy, confusion matrix, per-class accuracy.

The counting is scikit-learn's (``accuracy_score``, ``confusion_matrix`` with ``labels=range(n_classes)``);
this module adds the checks (labels are class indices ``0..n_classes-1``, one prediction per true
label) and the per-class accuracy with NaN for a class absent from ``y_true``.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as sk_metrics

from ..validation import check_labels
from ._checks import check_n_classes


def _pair_labels(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    """Both label arrays as int64 ``[n]``, ``n >= 1``, or a ``ValueError`` / ``TypeError``."""
    t = np.asarray(y_true)
    p = np.asarray(y_pred)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of the same length, got {t.shape} and {p.shape}")
    if len(t) == 0:
        raise ValueError("no labels to score")
    return check_labels(t, name="y_true"), check_labels(p, name="y_pred")


def accuracy(y_true, y_pred) -> float:
    """Fraction of correct predictions (in [0, 1]); y_true and y_pred: class indices ``[n]``."""
    t, p = _pair_labels(y_true, y_pred)
    return float(sk_metrics.accuracy_score(t, p))


def confusion_matrix(y_true, y_pred, n_classes: int | None = None) -> np.ndarray:
    """int64 ``[n_classes, n_classes]`` counts: rows are true classes, columns predicted classes.

    n_classes: the largest label + 1 unless given (then every label must be below it).
    """
    t, p = _pair_labels(y_true, y_pred)
    n_classes = check_n_classes(n_classes)
    c = n_classes if n_classes is not None else int(max(t.max(), p.max())) + 1
    if max(t.max(), p.max()) >= c:
        raise ValueError(f"labels out of range for n_classes={c}")
    if c == 1:  # every pair is (0, 0); scikit-learn would warn that a 1 x 1 matrix may lack labels
        return np.array([[len(t)]], np.int64)
    return sk_metrics.confusion_matrix(t, p, labels=range(c)).astype(np.int64, copy=False)


def per_class_accuracy(y_true, y_pred, n_classes: int | None = None) -> np.ndarray:
    """Recall per true class, float64 ``[n_classes]`` fractions; NaN for a class absent from ``y_true``."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)
