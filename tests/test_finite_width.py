"""The finite-width lab's model (cntk_widgets.finite_width): its small data sets, the checks of its
configuration, a run against an independent kernel regression, and what an update invalidates."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import raises_param

from cntk_core import ParameterTypeError, kernel_matrix
from cntk_widgets.finite_width import FiniteWidthConfig, FiniteWidthModel, inverse_sqrt_guide, load_small_images

TINY = dict(widths=(4, 128), n_seeds=1, steps=5, n_train=4, n_test=2, image_size=4, n_nngp_inits=4)
TINY_SMALL = {**TINY, "widths": (4, 32)}  # narrower: where only the runs' shape matters


def test_load_small_images_digits_and_random():
    x, y = load_small_images(6, 6, "digits", seed=1)
    assert x.shape == (6, 6, 6, 1) and x.dtype == np.float64
    np.testing.assert_array_equal(y, [1, -1, 1, -1, 1, -1])
    assert abs(x.mean()) < 1e-12 and abs(x.std() - 1) < 1e-12
    x10, _ = load_small_images(2, 10, "digits")
    assert x10.shape == (2, 10, 10, 1)
    xr, yr = load_small_images(3, 5, "random", seed=2)
    assert xr.shape == (3, 5, 5, 1) and set(np.unique(yr)) <= {-1.0, 1.0}


def test_config_validation():
    with pytest.raises(ValueError, match="^widths "):
        FiniteWidthConfig(widths=())
    with raises_param("readout"):
        FiniteWidthConfig(readout="max")
    with pytest.raises(ValueError, match="^n_train "):
        FiniteWidthConfig(n_train=1)
    with raises_param("dataset"):
        FiniteWidthConfig(dataset="cifar")
    assert FiniteWidthConfig(widths=(64, 8)).widths == (8, 64)


def test_config_validation_names_the_setting():
    with raises_param("seed"):
        FiniteWidthConfig(seed=-1)
    with pytest.raises(ValueError, match="^seed "):  # not an integer: a ValueError too (the lab's settings)
        FiniteWidthConfig(seed=1.5)
    with raises_param("fix", match="no trained layer"):  # says why depth 2 with fix=True cannot train
        FiniteWidthConfig(depth=2, fix=True)
    with pytest.raises(ValueError, match=r"^widths\[0\] "):
        FiniteWidthConfig(widths=(2.7, 8))
    with pytest.raises(ValueError, match=r"^widths\[0\] "):
        FiniteWidthConfig(widths=("a",))
    with pytest.raises(ValueError, match="^lr_scale "):
        FiniteWidthConfig(lr_scale=float("inf"))
    with pytest.raises(ValueError, match="diverges for lr_scale >= 2"):  # says why
        FiniteWidthConfig(lr_scale=3)
    with raises_param("fix", ParameterTypeError):
        FiniteWidthConfig(fix="no")


def test_model_run_against_independent_kernel_regression():
    m = FiniteWidthModel(**TINY)
    r = m.run()
    xtr, ytr, xte, _ = m.data()
    assert r.ntk_err_seeds.shape == (2, 1) and r.pred.shape == (2, 1, 2)
    assert r.ntk_err[1] < r.ntk_err[0]  # expected ratio ~ sqrt(128 / 4)
    assert np.all(np.isfinite(r.ntk_change)) and np.all(r.ntk_change > 0)
    # kernel regression reference, recomputed here by the plain GD iteration on the exact NTK
    th = kernel_matrix(xtr, depth=3, readout="gap")
    tt = kernel_matrix(xte, xtr, depth=3, readout="gap")
    eta = 1.0 / np.linalg.eigvalsh(th)[-1]
    f, fs = np.zeros(len(ytr)), np.zeros(len(xte))
    for _ in range(TINY["steps"]):
        resid = f - ytr
        f, fs = f - eta * th @ resid, fs - eta * tt @ resid
    assert r.eta == pytest.approx(eta, rel=1e-12)
    np.testing.assert_allclose(r.kr_pred, fs, rtol=1e-9, atol=1e-12)
    # prediction error as documented: distance of the net's test outputs to kernel regression
    np.testing.assert_allclose(r.pred_err, [np.linalg.norm(p[0] - fs) / np.linalg.norm(fs) for p in r.pred], rtol=1e-12)


def test_model_update_invalidates_data_and_nngp_runs():
    m = FiniteWidthModel(**TINY)
    x0 = m.data()[0]
    m.update(image_size=5)
    assert m.data()[0].shape == (4, 5, 5, 1) and x0.shape == (4, 4, 4, 1)
    emp, exact, err = m.nngp(128)
    np.testing.assert_allclose(exact, kernel_matrix(m.data()[0], depth=3, readout="gap", kind="nngp"), rtol=1e-12)
    assert emp.shape == exact.shape and err == pytest.approx(np.linalg.norm(emp - exact) / np.linalg.norm(exact))


def test_inverse_sqrt_guide():
    np.testing.assert_allclose(inverse_sqrt_guide([4, 16, 64], [np.nan, 2.0, 1.0]), [4.0, 2.0, 1.0])


def test_zero_steps_gives_no_prediction_error_instead_of_failing():
    r = FiniteWidthModel(**{**TINY_SMALL, "steps": 0}).run()
    assert np.all(np.isnan(r.pred_err)) and np.all(r.kr_pred == 0)
