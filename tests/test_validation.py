"""The shared input checks (cntk_core.validation): what check_int, check_flag, check_positive and
check_labels accept (integral floats from np.linspace, 0-d arrays, 0/1 flags, class indices) and
refuse, the parameter errors they raise (``.param`` names the argument), and the texts every module's
messages are built from.

What each module does with these checks is tested beside the module (test_gram_inputs.py,
test_regression_*.py, test_finite_*.py, test_distributed.py, test_cli.py, test_data.py)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from conftest import raises_param

from cntk_core import validation as V
from cntk_core.validation import ParameterError, ParameterTypeError


@pytest.mark.parametrize("value", [5, np.int32(5), 5.0, np.float64(5.0), np.array(5), np.array(5.0)])
def test_check_int_accepts_integral_values(value):
    out = V.check_int(value, "n", 1)
    assert out == 5 and type(out) is int


@pytest.mark.parametrize(
    "value,exc", [(2.5, ParameterTypeError), ("5", ParameterTypeError), (True, ParameterTypeError),
                  (None, ParameterTypeError), (np.inf, ParameterTypeError), (np.nan, ParameterTypeError),
                  (np.array([5]), ParameterTypeError), (0, ParameterError), (0.0, ParameterError)]
)  # fmt: skip
def test_check_int_refuses_the_rest(value, exc):
    with raises_param("n", exc, match="^n must be an integer >= 1"):  # the text every count's message starts with
        V.check_int(value, "n", 1)


@pytest.mark.parametrize(
    "value,expected", [(True, True), (np.False_, False), (1, True), (0, False), (np.int64(1), True)]
)
def test_check_flag_accepts_bools_and_0_1(value, expected):
    assert V.check_flag(value, "progress") is expected


@pytest.mark.parametrize("value", ["no", "True", 2, -1, 0.5, [True], None])
def test_check_flag_refuses_the_rest(value):
    with raises_param("center", ParameterTypeError, match=r"^center must be True or False, got"):
        V.check_flag(value, "center")


def test_check_flag_hint_only_for_fix():
    with raises_param("fix", ParameterTypeError, match=r"write fix=True or fix=False"):  # the hint is the point
        V.check_flag("yes", "fix")
    with raises_param("prefix", ParameterTypeError) as info:
        V.check_flag("yes", "prefix")
    assert "fix=True" not in str(info.value)
    assert V.check_flag(None, "fix_last", allow_none=True) is None
    with raises_param("fix_last", ParameterTypeError, match=r"True or False \(or None\)"):
        V.check_flag("x", "fix_last", allow_none=True)


def test_check_positive_unwraps_0d_arrays():
    out = V.check_positive(np.array(0.5), "eta")
    assert out == 0.5 and not isinstance(out, np.ndarray)
    with raises_param("eta", match="^eta must be a finite number > 0"):
        V.check_positive(np.array(0.0), "eta")


def test_check_flag_unwraps_0d_arrays_and_check_int_is_exact():
    assert V.check_flag(np.array(True), "fix_first") is True and V.check_flag(np.array(0), "fix") is False
    with raises_param("fix", ParameterTypeError):
        V.check_flag(np.array([True]), "fix")
    assert V.check_int(Fraction(6, 2), "n") == 3
    with raises_param("n", ParameterTypeError):
        V.check_int(Fraction(2**54 + 1, 2), "n")  # rounds to an integer in float64, but is not one


def test_parameter_errors_are_value_and_type_errors_naming_the_argument():
    """``.param`` is the argument's name even where the message names an entry (``depths[1]``); the
    classes stay ValueError / TypeError, so callers catching those still catch them."""
    with raises_param("depths") as info:
        V.check_int(1, "depths[1]", 2)
    assert isinstance(info.value, ValueError) and str(info.value) == "depths[1] must be an integer >= 2, got 1"
    with raises_param("steps", ParameterTypeError) as info:
        V.check_int(2.5, "steps[0]", 0)
    assert isinstance(info.value, TypeError)
    with raises_param("x2", ParameterTypeError):
        V.as_images(np.zeros((1, 2, 2, 1), np.uint8), "x2")
    with raises_param("readout"):
        V.check_choice("max", "readout", ("gap", "vanilla"))


# --- class labels ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "y, kwargs, exc, match",
    [
        (
            np.zeros((2, 2), np.int64),
            {},
            ParameterError,
            r"^y: expected a 1-D array of integer class labels, got shape",
        ),
        (np.array(3), {}, ParameterError, r"^y: expected a 1-D array of integer class labels, got shape \(\)$"),
        ([0, 1, 2], dict(n=4), ParameterError, r"^y: 3 labels where 4 are expected$"),
        (
            [0, 1],
            dict(n=3, name="y_train", for_what="a kernel with 3 rows"),
            ParameterError,
            r"^y_train: 2 labels for a kernel with 3 rows$",
        ),
        ([True, False], {}, ParameterTypeError, r"^y: labels must be integers 0..n_classes-1, got dtype bool$"),
        (["a", "b"], {}, ParameterTypeError, r"^y: labels must be integers 0..n_classes-1, got dtype <U1$"),
        (np.array([0, 1], dtype=object), {}, ParameterTypeError, r"got dtype object$"),
        ([0, 1 + 0j], {}, ParameterTypeError, r"got dtype complex128$"),
        ([0.0, 1.5], {}, ParameterError, r"^y: labels must be integers 0..n_classes-1$"),
        ([0.0, np.nan], {}, ParameterError, r"^y: labels must be integers 0..n_classes-1$"),
        ([0.0, 1.0], dict(floats=False), ParameterTypeError, r"got dtype float64$"),
        ([0, -1, 2], dict(name="labels"), ParameterError, r"^labels: labels must be >= 0, got -1$"),
        ([0, 3], dict(n_classes=3), ParameterError, r"^y: label 3 out of range for n_classes=3$"),
    ],
)
def test_check_labels_refuses_bad_labels(y, kwargs, exc, match):
    with raises_param(kwargs.get("name", "y"), exc, match=match):  # the texts every label error is made of
        V.check_labels(y, **kwargs)


def test_check_labels_accepts_class_indices():
    for y in ([2, 0, 1], np.array([2, 0, 1], np.uint8), np.array([2, 0, 1], np.int32), np.array([2.0, 0.0, 1.0])):
        out = V.check_labels(y, 3, n_classes=3)
        assert out.dtype == np.int64 and out.tolist() == [2, 0, 1]
    assert V.check_labels([]).shape == (0,) and V.check_labels(np.zeros(0, np.int64), 0, n_classes=1).shape == (0,)
    y = np.array([1, 0])
    assert V.check_labels(y) is not y  # a copy: the caller's array is never aliased
    with raises_param("n_classes", ParameterTypeError):
        V.check_labels(y, n_classes=1.5)
