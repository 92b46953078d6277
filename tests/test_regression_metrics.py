"""Classification metrics: accuracy, confusion matrix, per-class accuracy.

Every expected value is computed independently (numpy.linalg.solve, explicit loops, sklearn.metrics).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import raises_param

from cntk_core import regression as R
from cntk_core.validation import ParameterTypeError


def test_metrics_against_direct_computation():
    from sklearn.metrics import confusion_matrix as sk_cm

    rng = np.random.default_rng(7)
    t = rng.integers(0, 5, 200)
    p = np.where(rng.random(200) < 0.6, t, rng.integers(0, 5, 200))
    assert R.accuracy(t, p) == pytest.approx(sum(int(a == b) for a, b in zip(t, p, strict=True)) / 200)
    cm = R.confusion_matrix(t, p, 6)
    np.testing.assert_array_equal(cm, sk_cm(t, p, labels=range(6)))
    pc = R.per_class_accuracy(t, p, 6)
    for c in range(5):
        assert pc[c] == pytest.approx(np.mean(p[t == c] == c))
    assert np.isnan(pc[5])  # class 5 never occurs
    with pytest.raises(ValueError, match="same length"):
        R.accuracy(t, p[:-1])


def test_metrics_match_explicit_counts():
    """scikit-learn does the counting: checked against a loop, classes without a label are rows and columns of 0."""
    rng = np.random.default_rng(11)
    for n, c in ((1, 1), (7, 3), (300, 10)):
        t = rng.integers(0, c, n)
        p = rng.integers(0, c, n)
        cm = np.zeros((c + 2, c + 2), np.int64)
        for a, b in zip(t, p, strict=True):
            cm[a, b] += 1
        out = R.confusion_matrix(t, p, c + 2)
        assert out.dtype == np.int64
        np.testing.assert_array_equal(out, cm)
        top = int(max(t.max(), p.max())) + 1
        np.testing.assert_array_equal(R.confusion_matrix(t, p), cm[:top, :top])
        assert R.accuracy(t, p) == np.mean(t == p) == np.trace(cm) / n  # the same float, bit for bit
        assert type(R.accuracy(t, p)) is float


def test_confusion_of_one_class_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(R.confusion_matrix([0, 0, 0], [0, 0, 0]), [[3]])
        np.testing.assert_array_equal(R.per_class_accuracy([0, 0], [0, 0], 1), [1.0])


def test_metrics_refuse_bad_labels():
    with pytest.raises(ValueError, match="no labels to score"):
        R.accuracy([], [])
    with pytest.raises(ValueError, match=r"^labels out of range for n_classes=2$"):
        R.confusion_matrix([0, 2], [0, 1], 2)
    with raises_param("y_pred"):
        R.accuracy([0, 1], [0, -1])
    with raises_param("y_true", ParameterTypeError):
        R.accuracy(["a", "b"], [0, 1])
    with pytest.raises(ValueError, match="same length"):
        R.confusion_matrix([[0]], [[0]])
    np.testing.assert_array_equal(R.confusion_matrix([0.0, 1.0], [1, 1]), [[0, 1], [0, 1]])  # integral floats
