"""The shared test helpers of conftest.py check what they claim: raises_param fails on another
parameter, another class or no error at all; rel_err and the image and matrix factories are what
their docstrings say."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_images, one_hot, raises_param, rel_err, spd_matrix

from cntk_core.validation import ParameterError, ParameterTypeError


def _refuse(param, error=ParameterError):
    raise error(param, f"{param} is wrong")


def test_raises_param_passes_only_for_the_named_parameter_and_class():
    with raises_param("depth") as info:
        _refuse("depth")
    assert info.value.param == "depth"
    with raises_param("fix", ParameterTypeError, match="^fix is wrong$"):
        _refuse("fix", ParameterTypeError)
    with pytest.raises(AssertionError, match="names 'readout', not 'depth'"):
        with raises_param("depth"):
            _refuse("readout")
    with pytest.raises(pytest.fail.Exception, match="DID NOT RAISE"):
        with raises_param("depth"):
            pass
    with pytest.raises(ParameterTypeError):  # another class is not caught
        with raises_param("depth"):
            _refuse("depth", ParameterTypeError)
    with pytest.raises(AssertionError, match="names None"):  # a plain ValueError names no parameter
        with raises_param("depth", ValueError):
            raise ValueError("depth is wrong")
    with pytest.raises(AssertionError, match="Regex pattern did not match"):
        with raises_param("depth", match="something else"):
            _refuse("depth")


def test_rel_err():
    ref = np.array([1.0, 10.0, 1e-6])
    assert rel_err(ref, ref) == 0.0
    assert rel_err(ref * 1.01, ref) == pytest.approx(0.01)
    assert rel_err(ref + np.array([0, 0, 1e-3]), ref) == pytest.approx(1e-3 / (1e-3 * 10))  # the floor
    assert rel_err(ref + 0.1, ref, floor=1) == pytest.approx(0.1 / 10)  # max|got - ref| / max|ref|
    assert rel_err(np.full(3, 0.5), np.zeros(3)) == 0.5


def test_factories():
    x = make_images(3, (4, 5, 2), seed=7)
    assert x.shape == (3, 4, 5, 2) and x.dtype == np.float64
    np.testing.assert_array_equal(x, np.random.default_rng(7).standard_normal((3, 4, 5, 2)))
    np.testing.assert_array_equal(make_images(3, (4, 5, 2), seed=7, scale=2.0), 2.0 * x)
    assert make_images(2).shape == (2, 8, 8, 3) and not np.array_equal(make_images(2), make_images(2, seed=1))
    K = spd_matrix(6, seed=1, boost=0.5)
    np.testing.assert_array_equal(K, K.T)
    assert np.linalg.eigvalsh(K).min() >= 0.5 - 1e-12
    np.testing.assert_array_equal(one_hot([1, 0], 3), [[-0.1, 0.9, -0.1], [0.9, -0.1, -0.1]])
