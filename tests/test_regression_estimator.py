"""The scikit-learn classifier CNTKClassifier and precomputed_kernels.

Every expected value is computed independently (numpy.linalg.solve, explicit loops, sklearn.metrics).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_images, one_hot, raises_param

import cntk_core
from cntk_core import regression as R


def _tiny_images(n=6, seed=0):
    return make_images(n, (5, 5, 1), seed)


@pytest.fixture(scope="module")
def digits_small():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images[:60, :, :, None] / 16.0 - 0.3) / 0.4  # float NHWC [60, 8, 8, 1]
    return x, d.target[:60]


def test_classifier_in_cross_val_score(digits_small):
    from sklearn.base import clone
    from sklearn.model_selection import KFold, cross_val_score

    x, y = digits_small
    clf = R.CNTKClassifier(depth=3, readout="vanilla", ridge=0.0)
    assert clone(clf).get_params()["readout"] == "vanilla"
    assert clf.set_params(ridge=1e-3).ridge == 1e-3
    clf.set_params(ridge=0.0)
    cv = KFold(3, shuffle=True, random_state=0)
    scores = cross_val_score(clf, x, y, cv=cv)
    # independent: kernels per fold and numpy.linalg.solve
    K = cntk_core.kernel_matrix(x, depth=3, readout="vanilla")
    for score, (tr, te) in zip(scores, cv.split(x), strict=True):
        classes = np.unique(y[tr])
        enc = np.searchsorted(classes, y[tr])
        alpha = np.linalg.solve(K[np.ix_(tr, tr)], one_hot(enc, len(classes)))
        pred = classes[(K[np.ix_(te, tr)] @ alpha).argmax(1)]
        assert score == pytest.approx(np.mean(pred == y[te]))
    assert scores.mean() > 0.6


def test_classifier_cv_ridge_and_kernel_ridge(digits_small):
    from sklearn.kernel_ridge import KernelRidge

    x, y = digits_small
    xtr, ytr, xte = x[:40], y[:40], x[40:]
    clf = R.CNTKClassifier(depth=3, readout="vanilla", ridge="cv").fit(xtr, ytr)
    assert clf.ridge_selection_ is not None and clf.ridge_ == clf.ridge_selection_.ridge
    assert clf.decision_function(xte).shape == (20, len(np.unique(ytr)))
    K, Kt = R.precomputed_kernels(xtr, xte, depth=3, readout="vanilla")
    lam = 1e-3 * np.mean(np.diag(K))
    Y = R.one_hot_targets(ytr, 10)
    kr = KernelRidge(alpha=lam, kernel="precomputed").fit(K, Y)
    np.testing.assert_allclose(R.predict_scores(Kt, R.solve_kernel(K, Y, lam)), kr.predict(Kt), rtol=1e-7, atol=1e-9)
    fixed = R.CNTKClassifier(depth=3, readout="vanilla", ridge=1e-3).fit(xtr, ytr)
    assert fixed.ridge_ == pytest.approx(lam)
    with raises_param("ridge", match="'cv'"):  # says what else ridge may be
        R.CNTKClassifier(ridge="auto").fit(xtr, ytr)


# -- input checks: every bad input names its argument ------------------------------------------


@pytest.mark.parametrize(
    "y",
    [[0, 1, np.nan, 1], [0.0, 1.0, np.inf, 1.0], np.array([0, 1, None, 1], dtype=object), ["a", None, "b", "a"]],
)
def test_classifier_refuses_missing_labels(y):
    with raises_param("y", match=r"^y: 1 missing or non-finite labels"):  # what is wrong with them, and how many
        R.CNTKClassifier(depth=3).fit(_tiny_images(4), y)


def test_classifier_string_labels_still_work():
    clf = R.CNTKClassifier(depth=3, ridge=1e-3).fit(_tiny_images(4), ["b", "a", "b", "a"])
    np.testing.assert_array_equal(clf.classes_, ["a", "b"])
    assert set(clf.predict(_tiny_images(3, seed=1))) <= {"a", "b"}


@pytest.mark.parametrize("ridge", [0.0, 1e-3, "cv"])
def test_zero_training_kernel_is_explained(ridge):
    x = _tiny_images()
    y = np.arange(6) % 2
    assert not np.any(cntk_core.kernel_matrix(x, depth=2, fix=True))
    with pytest.raises(R.SingularKernelError, match=r"no trained layer .*use kind='nngp', fix=False or a deeper"):
        R.CNTKClassifier(depth=2, fix=True, ridge=ridge).fit(x, y)
    with pytest.raises(R.SingularKernelError, match=r"identically zero"):
        R.CNTKClassifier(depth=3, ridge=ridge).fit(np.zeros_like(x), y)


def test_classifier_cv_ridge_needs_two_images():
    with raises_param("ridge", match="needs at least 2 training images"):  # why one image is not enough
        R.CNTKClassifier(depth=3, ridge="cv").fit(_tiny_images(1), [0])
    clf = R.CNTKClassifier(depth=3, ridge="cv").fit(_tiny_images(2), [0, 1])
    assert clf.ridge_selection_.n_folds == 2


def test_classifier_not_fitted():
    from sklearn.exceptions import NotFittedError

    x = _tiny_images(3)
    clf = R.CNTKClassifier(depth=3)
    for call in (clf.predict, clf.decision_function, lambda a: clf.score(a, [0, 1, 0])):
        with pytest.raises(NotFittedError):
            call(x)


def test_zero_kernel_message_explains_relative_ridges():
    x = make_images(6, (3, 3, 1))
    with pytest.raises(R.SingularKernelError, match=r"A ridge relative to mean\(diag\(K\)\) = 0 is 0 as well"):
        R.CNTKClassifier(depth=2, fix=True, ridge=1e-3).fit(x, np.arange(6) % 2)
