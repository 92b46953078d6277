"""Regression solve: one-hot targets, the kernel solve, scores, kernel_regression and their input checks.

Every expected value is computed independently (numpy.linalg.solve, explicit loops, sklearn.metrics).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import make_images, one_hot, raises_param, spd_matrix

from cntk_core import regression as R
from cntk_core.validation import ParameterError, ParameterTypeError


def _tiny_images(n=6, seed=0):
    return make_images(n, (5, 5, 1), seed)


# -- targets, solve, predict -------------------------------------------------------------------


def test_one_hot_targets():
    y = np.array([2, 0, 1, 2])
    np.testing.assert_array_equal(R.one_hot_targets(y, 4), one_hot(y, 4))
    assert R.one_hot_targets(y).shape == (4, 3)
    with pytest.raises(ValueError, match="out of range"):
        R.one_hot_targets(y, 2)


@pytest.mark.parametrize("ridge", [0.0, 0.3])
def test_solve_matches_numpy(ridge):
    K = spd_matrix(40)
    y = np.arange(40) % 5
    Y = one_hot(y, 5)
    alpha = R.solve_kernel(K, Y, ridge)
    ref = np.linalg.solve(K + ridge * np.eye(40), Y)
    np.testing.assert_allclose(alpha, ref, rtol=1e-10, atol=1e-12)


def test_solve_indefinite_falls_back_to_lu():
    K = spd_matrix(40) - 1.5 * np.eye(40)  # symmetric, not positive definite, still invertible
    assert np.linalg.eigvalsh(K).min() < 0
    Y = one_hot(np.arange(40) % 3, 3)
    np.testing.assert_allclose(R.solve_kernel(K, Y), np.linalg.solve(K, Y), rtol=1e-8, atol=1e-10)


def test_kernel_regression_predictions():
    rng = np.random.default_rng(3)
    K = spd_matrix(30)
    Kt = rng.standard_normal((12, 30))
    y = rng.integers(0, 4, 30)
    pred, scores = R.kernel_regression(K, y, Kt, n_classes=4)
    ref_scores = Kt @ np.linalg.solve(K, one_hot(y, 4))
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(pred, ref_scores.argmax(axis=1))


# -- errors ------------------------------------------------------------------------------------


def test_singular_kernel_errors_and_lstsq():
    rng = np.random.default_rng(5)
    f = rng.standard_normal((20, 4))
    K = f @ f.T  # rank 4 of 20
    Y = one_hot(np.arange(20) % 3, 3)
    with pytest.raises(R.SingularKernelError, match="ridge"):
        R.solve_kernel(K, Y)
    with pytest.warns(RuntimeWarning, match="least-squares"):
        alpha = R.solve_kernel(K, Y, on_singular="lstsq")
    np.testing.assert_allclose(alpha, np.linalg.lstsq(K, Y, rcond=None)[0], atol=1e-6)
    # duplicate images: two identical rows and columns
    K2 = spd_matrix(10)
    K2[5, :] = K2[4, :]
    K2[:, 5] = K2[:, 4]
    K2[5, 5] = K2[4, 4]
    with pytest.raises(R.SingularKernelError, match="use a ridge"):
        R.kernel_regression(K2, np.arange(10) % 2, K2[:3])
    R.solve_kernel(K2, one_hot(np.arange(10) % 2, 2), ridge=1e-3)  # a ridge fixes it
    # every grid point singular -> clear error
    with pytest.raises(R.SingularKernelError, match="grid"):
        R.select_ridge(K, np.arange(20) % 3, grid=[0.0], n_folds=2)


@pytest.mark.parametrize(
    "K, reason",
    [
        (np.ones((3, 4)), "square"),
        (np.array([[1.0, 0.5], [0.2, 1.0]]), "not symmetric"),
        (np.array([[1.0, np.nan], [np.nan, 1.0]]), "non-finite"),
        (np.array([[1.0, np.inf], [np.inf, 1.0]]), "non-finite"),
        (np.ones(3), "2-D"),
    ],
)
def test_bad_kernels(K, reason):
    with raises_param("K_train", match=reason):  # which of the kernel's checks refused it
        R.solve_kernel(K, np.ones((K.shape[0], 2)))


def test_shape_mismatches():
    K = spd_matrix(6)
    with raises_param("y_train"):
        R.kernel_regression(K, np.arange(5), K)
    with raises_param("K_test"):
        R.kernel_regression(K, np.arange(6) % 2, np.ones((3, 5)))
    with raises_param("Y"):
        R.solve_kernel(K, np.ones((5, 2)))
    with raises_param("ridge"):
        R.solve_kernel(K, np.ones((6, 2)), ridge=-1.0)


# -- input checks: every bad input names its argument ------------------------------------------


@pytest.mark.parametrize(
    "K, kind",
    [
        (np.eye(2) * (1 + 1j), "complex"),
        (np.eye(2) + 0j, "complex"),
        (np.array([["1", "0"], ["0", "1"]]), "string"),
        (np.array([[1.0, 0.0], [0.0, 1.0]], dtype=object), "object"),
        (np.eye(2, dtype=bool), "boolean"),
    ],
)
def test_check_kernel_refuses_non_real_dtypes(K, kind):
    with raises_param("K", ParameterTypeError, match=f"got {kind}"):  # names the kind of values it got
        R.check_kernel(K)
    with raises_param("K_train", ParameterTypeError):
        R.solve_kernel(K, np.ones((2, 1)))


def test_check_kernel_accepts_real_dtypes():
    for K in ([[2, 1], [1, 2]], np.eye(2, dtype=np.int32), np.eye(2, dtype=np.float32)):
        out = R.check_kernel(K)
        assert out.dtype == np.float64 and out.shape == (2, 2)


@pytest.mark.parametrize(
    "ridge, exc",
    [
        ("1e-3", ParameterTypeError),
        ("abc", ParameterTypeError),
        (None, ParameterTypeError),
        ([0.1], ParameterTypeError),
        (True, ParameterTypeError),
        (np.nan, ParameterError),
    ],
)
def test_ridge_must_be_a_real_number(ridge, exc):
    K = spd_matrix(6)
    y = np.arange(6) % 2
    with raises_param("ridge", exc):
        R.kernel_regression(K, y, K, ridge=ridge)
    with raises_param("ridge", exc):
        R.solve_kernel(K, one_hot(y, 2), ridge=ridge)
    match = None
    if isinstance(ridge, str):  # the classifier also takes the string "cv": its message says so
        exc, match = ParameterError, r"ridge must be 'cv' or a number >= 0"
    with raises_param("ridge", exc, match=match):
        R.CNTKClassifier(depth=3, ridge=ridge).fit(_tiny_images(), y)


def test_ridge_accepts_numpy_numbers():
    K = spd_matrix(6)
    y = np.arange(6) % 2
    ref = R.kernel_regression(K, y, K, ridge=0.5)[1]
    for lam in (np.float32(0.5), np.float64(0.5), np.array(0.5)):
        np.testing.assert_allclose(R.kernel_regression(K, y, K, ridge=lam)[1], ref, rtol=1e-6)
    assert R.kernel_regression(K, y, K, ridge=1)[1].shape == (6, 2)


@pytest.mark.parametrize(
    "n_classes, exc",
    [(2.5, ParameterTypeError), ("2", ParameterTypeError), (True, ParameterTypeError), (-1, ParameterError),
     (0, ParameterError)],
)  # fmt: skip
def test_n_classes_must_be_a_positive_integer(n_classes, exc):
    y = np.array([0, 1, 1, 0])
    K = spd_matrix(4)
    calls = [
        lambda: R.one_hot_targets(y, n_classes),
        lambda: R.confusion_matrix(y, y, n_classes),
        lambda: R.per_class_accuracy(y, y, n_classes),
        lambda: R.kernel_regression(K, y, K, n_classes=n_classes),
        lambda: R.select_ridge(K, y, n_folds=2, n_classes=n_classes),
    ]
    for call in calls:
        with raises_param("n_classes", exc):
            call()
    np.testing.assert_array_equal(R.confusion_matrix(y, y, np.int64(3)), np.diag([2, 2, 0]))


def test_alpha_and_target_shapes():
    K = spd_matrix(6)
    with raises_param("alpha"):
        R.predict_scores(K, 1.0)
    with raises_param("alpha"):
        R.predict_scores(K, np.ones((6, 2, 2)))
    with raises_param("alpha", ParameterTypeError):
        R.predict_scores(K, np.ones((6, 2)) * 1j)
    with raises_param("Y", match=r"\[n\] or \[n, n_classes\]"):  # says which shapes targets may have
        R.ridge_path_alphas(K, np.ones((6, 2, 2)), [0.1])
    with raises_param("Y"):
        R.ridge_path_alphas(K, 1.0, [0.1])
    with raises_param("Y"):
        R.solve_kernel(K, np.ones((6, 2, 2)))
    with raises_param("Y"):
        R.ridge_path_alphas(K, np.full(6, np.nan), [0.1])
    assert R.predict_scores(K[:2], np.ones(6)).shape == (2,)
    assert R.ridge_path_alphas(K, np.ones(6), 0.1).shape == (1, 6)


# -- labels and parameter errors ---------------------------------------------------------------


def test_regression_label_errors_name_the_argument():
    K = spd_matrix(4)
    with raises_param("y_train"):
        R.kernel_regression(K, [0, 1, 0.5, 1], K)
    with raises_param("y_train", ParameterTypeError):
        R.select_ridge(K, [True, False, True, False], n_folds=2)
    with raises_param("y_train", match=r"^y_train: 3 labels for a kernel with 4 rows$"):  # the counts to compare
        R.select_ridge(K, [0, 1, 0], n_folds=2)
    with raises_param("y"):
        R.one_hot_targets([0, -2])
    with raises_param("y"):
        R.one_hot_targets(3)  # a scalar: a clear error, not len() of an unsized object
    with raises_param("y", match=r"Map them to 0..1 first"):  # says what to do
        R.one_hot_targets([0, 2**40])


@pytest.mark.parametrize(
    "call, exc, param",
    [
        (lambda K: R.solve_kernel(K, np.ones(4), ridge=-1.0), ParameterError, "ridge"),
        (lambda K: R.solve_kernel(K, np.ones(4), ridge="x"), ParameterTypeError, "ridge"),
        (lambda K: R.solve_kernel(K, np.ones(4), on_singular="ignore"), ParameterError, "on_singular"),
        (lambda K: R.solve_kernel(K, np.ones((3, 2))), ParameterError, "Y"),
        (lambda K: R.solve_kernel(np.ones((3, 4)), np.ones(3)), ParameterError, "K_train"),
        (lambda K: R.kernel_regression(K, [0, 1, 0, 1], np.ones((2, 3))), ParameterError, "K_test"),
        (lambda K: R.kernel_regression(K, [0, 1, 0, 1], K, n_classes=0), ParameterError, "n_classes"),
        (lambda K: R.check_kernel(np.ones((2, 3))), ParameterError, "K"),
        (lambda K: R.predict_scores(K, np.ones((4, 2, 2))), ParameterError, "alpha"),
        (lambda K: R.ridge_path_alphas(K, np.ones(4), [0.1, -1.0]), ParameterError, "ridges"),
    ],
)
def test_parameter_errors_name_the_parameter(call, exc, param):
    with raises_param(param, exc):
        call(spd_matrix(4))


# -- labels that are identifiers, booleans ----------------------------------------------------------
@pytest.mark.parametrize("big", [2**40, 10**7])
def test_kernel_regression_refuses_identifier_labels_instead_of_allocating(big):
    K = np.eye(2) + 0.1
    t0 = time.perf_counter()
    with pytest.raises(ParameterError, match=r"labels must be class indices .* np.unique\(y, return_inverse=True\)"):
        R.kernel_regression(K, [0, big], K)  # the message says what to do
    assert time.perf_counter() - t0 < 1.0
    pred, scores = R.kernel_regression(K, [0, 1], K)  # class indices work as before
    assert pred.tolist() == [0, 1] and scores.shape == (2, 2)


def test_kernel_regression_identifier_label_error_names_y_train():
    K = np.eye(2) + 0.1
    with raises_param("y_train"):
        R.kernel_regression(K, [0, 2**40], K)


def test_bool_targets_are_read_as_0_and_1():
    K = np.eye(4) + 0.1
    Y = np.array([True, False, True, False])
    np.testing.assert_allclose(R.solve_kernel(K, Y), R.solve_kernel(K, Y.astype(float)))


def test_bool_targets_as_lists():
    K = np.eye(3) + 0.1
    np.testing.assert_allclose(R.solve_kernel(K, [True, False, True]), R.solve_kernel(K, [1.0, 0.0, 1.0]))
