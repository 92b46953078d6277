"""The shared input checks (cntk_core.validation) and the inputs they must still accept: integral
floats from np.linspace, 0-d arrays, 0/1 flags, zarr arrays as ``out``; plus the memory bound of the
extreme-scale rescaling and the messages that name what a user typed."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import cntk_core
from cntk_core import regression as R
from cntk_core import validation as V
from cntk_core.distributed import _check_progress, _check_scheduler
from cntk_core.finite import fc_relu_ntk, kernel_regression_trajectory
from cntk_core.gram import _unit_scaled


def _images(n=4, size=4, seed=0):
    return np.random.default_rng(seed).standard_normal((n, size, size, 2))


# --- check_int / check_flag / check_positive ----------------------------------------------------


@pytest.mark.parametrize("value", [5, np.int32(5), 5.0, np.float64(5.0), np.array(5), np.array(5.0)])
def test_check_int_accepts_integral_values(value):
    out = V.check_int(value, "n", 1)
    assert out == 5 and type(out) is int


@pytest.mark.parametrize(
    "value,exc", [(2.5, TypeError), ("5", TypeError), (True, TypeError), (None, TypeError), (np.inf, TypeError),
                  (np.nan, TypeError), (np.array([5]), TypeError), (0, ValueError), (0.0, ValueError)]
)  # fmt: skip
def test_check_int_refuses_the_rest(value, exc):
    with pytest.raises(exc, match="n must be an integer >= 1"):
        V.check_int(value, "n", 1)


@pytest.mark.parametrize(
    "value,expected", [(True, True), (np.False_, False), (1, True), (0, False), (np.int64(1), True)]
)
def test_check_flag_accepts_bools_and_0_1(value, expected):
    assert V.check_flag(value, "progress") is expected


@pytest.mark.parametrize("value", ["no", "True", 2, -1, 0.5, [True], None])
def test_check_flag_refuses_the_rest(value):
    with pytest.raises(TypeError, match=r"^center must be True or False, got"):
        V.check_flag(value, "center")


def test_check_flag_hint_only_for_fix():
    with pytest.raises(TypeError, match=r"write fix=True or fix=False"):
        V.check_flag("yes", "fix")
    with pytest.raises(TypeError) as info:
        V.check_flag("yes", "prefix")
    assert "fix=True" not in str(info.value)
    assert V.check_flag(None, "fix_last", allow_none=True) is None
    with pytest.raises(TypeError, match=r"True or False \(or None\)"):
        V.check_flag("x", "fix_last", allow_none=True)


def test_check_positive_unwraps_0d_arrays():
    out = V.check_positive(np.array(0.5), "eta")
    assert out == 0.5 and not isinstance(out, np.ndarray)
    with pytest.raises(ValueError, match="eta must be a finite number > 0"):
        V.check_positive(np.array(0.0), "eta")


# --- the engine ---------------------------------------------------------------------------------


def test_integral_floats_and_0d_arrays_as_depths_and_flags():
    x = _images()
    ref = cntk_core.kernel_matrix(x, depth=3, fix=True)
    np.testing.assert_array_equal(cntk_core.kernel_matrix(x, depth=3.0, fix=1), ref)
    np.testing.assert_array_equal(cntk_core.kernel_matrix(x, depth=np.array(3), fix=np.True_), ref)
    both = cntk_core.kernel_matrices(x, depths=np.array([2.0, 3.0]), fix=True)
    np.testing.assert_array_equal(both[3], ref)
    np.testing.assert_array_equal(cntk_core.kernel_matrices(x, depths=np.array(3), fix=True)[3], ref)
    np.testing.assert_array_equal(cntk_core.kernel_matrix(x, depth=3, fix=True, block_size=2.0), ref)
    with pytest.raises(ValueError, match=r"depths\[0\] must be an integer >= 2, got 1"):
        cntk_core.kernel_matrices(x, depths=[1, 3])


def test_out_may_be_a_zarr_array():
    zarr = pytest.importorskip("zarr")
    x1, x2 = _images(3), _images(5, seed=1)
    out = zarr.zeros((3, 5), dtype="f8", chunks=(2, 2))
    assert cntk_core.kernel_matrix(x1, x2, depth=3, out=out) is out
    np.testing.assert_array_equal(out[:], cntk_core.kernel_matrix(x1, x2, depth=3))
    with pytest.raises(ValueError, match=r"float64 array of shape \(3, 5\), got float32"):
        cntk_core.kernel_matrix(x1, x2, depth=3, out=zarr.zeros((3, 5), dtype="f4"))
    with pytest.raises(ValueError, match=r"float64 array of shape \(3, 5\) \(NumPy, np.memmap, zarr\)"):
        cntk_core.kernel_matrix(x1, x2, depth=3, out=[[0.0] * 5] * 3)


def test_finding_the_image_scales_allocates_no_copy_of_the_batch():
    x = np.random.default_rng(0).standard_normal((64, 32, 32, 3))  # 1.5 MB
    tracemalloc.start()
    try:
        y, e = _unit_scaled(x)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert y is x and not e.any()
    assert peak < x.nbytes / 20, f"{peak} bytes traced for a {x.nbytes}-byte batch"
    x[3] *= 2.0**40  # one extreme image: a scaled copy, the others untouched
    y, e = _unit_scaled(x)
    assert e[3] == 42 and not np.delete(e, 3).any()
    np.testing.assert_array_equal(y[3] * 2.0**42, x[3])
    np.testing.assert_array_equal(np.delete(y, 3, 0), np.delete(x, 3, 0))


def test_scale_boundaries_match_the_docstring():
    x = np.ones((4, 1, 1, 1))
    x[:, 0, 0, 0] = [2.0**-33, 2.0**-34, 2.0**32 * 0.99, 2.0**32]
    _, e = _unit_scaled(x)
    assert list(e != 0) == [False, True, False, True]


def test_overflow_message_tells_what_to_do():
    x = np.full((2, 3, 3, 1), 1e200)
    with pytest.raises(OverflowError, match=r"Divide the images by a scale s and keep s apart"):
        cntk_core.kernel_matrix(x, depth=2)


# --- regression ----------------------------------------------------------------------------------


def test_zero_kernel_with_positive_absolute_ridges_is_allowed():
    K = np.zeros((6, 6))
    y = np.arange(6) % 2
    sel = R.select_ridge(K, y, grid=[0.1, 1.0], relative=False, n_folds=2)
    assert sel.ridge in (0.1, 1.0) and np.all(np.isfinite(sel.mse))
    with pytest.raises(R.SingularKernelError, match="identically zero"):
        R.select_ridge(K, y, grid=[0.0], relative=False, n_folds=2)
    with pytest.raises(R.SingularKernelError, match="identically zero"):
        R.select_ridge(K, y, n_folds=2)  # relative ridges of a zero kernel are all 0


def test_select_ridge_takes_0d_arrays_and_skips_n_folds_for_a_holdout():
    K = np.eye(8) + 0.1
    y = np.arange(8) % 2
    a = R.select_ridge(K, y, validation=np.array(0.5), n_folds=np.array(2))
    b = R.select_ridge(K, y, validation=0.5, n_folds=1)  # unused with a hold-out
    assert a.method == b.method == "holdout" and a.ridge == b.ridge


def test_bool_targets_are_read_as_0_and_1():
    K = np.eye(4) + 0.1
    Y = np.array([True, False, True, False])
    np.testing.assert_allclose(R.solve_kernel(K, Y), R.solve_kernel(K, Y.astype(float)))


def test_run_experiment_ignores_n_folds_without_cv():
    from cntk_core.data import load_dataset

    ds = load_dataset("digits")
    res = R.run_experiment(ds, n_train=20, n_test=10, depth=2, ridge=1e-3, n_folds=0, progress=False)
    assert res.n_train == 20


# --- finite width --------------------------------------------------------------------------------


def test_gd_steps_from_linspace_and_seeds_as_floats():
    theta = np.eye(3) + 0.5
    y = np.array([1.0, -1.0, 0.5])
    a, _ = kernel_regression_trajectory(theta, y, eta=0.1, steps=np.linspace(0, 4, 5))
    b, _ = kernel_regression_trajectory(theta, y, eta=0.1, steps=range(5))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match=r"steps\[1\] must be an integer >= 0"):
        kernel_regression_trajectory(theta, y, eta=0.1, steps=[0, 0.5])


@pytest.mark.parametrize("fix_first,fix_last", [(False, False), (True, False), (False, True), (True, True)])
def test_fc_relu_ntk_without_hidden_layers_is_the_linear_kernel(fix_first, fix_last):
    x = np.random.default_rng(0).standard_normal((5, 3))
    linear = x @ x.T
    ntk = fc_relu_ntk(x, n_hidden=0, fix_first=fix_first, fix_last=fix_last)
    np.testing.assert_allclose(ntk, 0 * linear if fix_first or fix_last else linear, atol=1e-15)
    np.testing.assert_allclose(fc_relu_ntk(x, n_hidden=0, kind="nngp"), linear)


# --- distributed and the command line -------------------------------------------------------------


@pytest.mark.parametrize("address", ["tcp://10.0.0.1:8786", "host:8786", "[::1]:8786", "tls://[fe80::1]:8786"])
def test_scheduler_addresses_are_accepted(address):
    _check_scheduler(address)


@pytest.mark.parametrize("address", ["synchronus", "host", "[::1]", "[::1:8786", "host: 8786"])
def test_scheduler_typos_are_refused(address):
    with pytest.raises(ValueError, match="scheduler must be 'synchronous', 'cuda' or the address"):
        _check_scheduler(address)


def test_progress_argument_of_the_store_job():
    for ok in (True, False, None, 0, 1, print):
        _check_progress(ok)
    with pytest.raises(
        TypeError, match=r"^progress must be True, False, None or a callable \(done, total\), got 'yes'$"
    ):
        _check_progress("yes")


@pytest.mark.parametrize(
    "args,message",
    [
        (["--n-train", "100000"], "--n-train=100000 is more than"),
        (["--n-test", "100000"], "--n-test=100000 is more than"),
        (["--ridge", "cv", "--folds", "50", "--n-train", "20"], "--folds=50 is larger than the 20 training images"),
    ],
)
def test_cli_errors_name_the_options(args, message):
    cmd = [sys.executable, "-m", "cntk_core.cli", "regress", "--dataset", "digits", "--depth", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "n_train" not in proc.stderr and "n_folds" not in proc.stderr


# --- second review -------------------------------------------------------------------------------


def test_check_flag_unwraps_0d_arrays_and_check_int_is_exact():
    from fractions import Fraction

    assert V.check_flag(np.array(True), "fix_first") is True and V.check_flag(np.array(0), "fix") is False
    with pytest.raises(TypeError, match="fix must be True or False"):
        V.check_flag(np.array([True]), "fix")
    assert V.check_int(Fraction(6, 2), "n") == 3
    with pytest.raises(TypeError, match="n must be an integer"):
        V.check_int(Fraction(2**54 + 1, 2), "n")  # rounds to an integer in float64, but is not one


def test_zero_kernel_message_explains_relative_ridges():
    x = np.random.default_rng(0).standard_normal((6, 3, 3, 1))
    with pytest.raises(R.SingularKernelError, match=r"A ridge relative to mean\(diag\(K\)\) = 0 is 0 as well"):
        R.CNTKClassifier(depth=2, fix=True, ridge=1e-3).fit(x, np.arange(6) % 2)


def test_cli_spelling_touches_only_argument_names():
    from cntk_core.cli import _cli_names, _UsageError

    with pytest.raises(_UsageError) as info, _cli_names(argparse.Namespace()):
        R.kernel_regression(np.ones((3, 3)), [0, 1, 0], np.ones((3, 3)))
    text = str(info.value)
    assert "--ridge 1e-6" in text and text.count("--ridge cv") == 1 and "ridge=1e-6" not in text
    with pytest.raises(_UsageError, match=r"^n_trainable and x_n_test stay; --subset balanced, --kind nngp$"):
        with _cli_names(argparse.Namespace()):
            raise ValueError("n_trainable and x_n_test stay; subset='balanced', kind='nngp'")


def test_bool_targets_as_lists():
    K = np.eye(3) + 0.1
    np.testing.assert_allclose(R.solve_kernel(K, [True, False, True]), R.solve_kernel(K, [1.0, 0.0, 1.0]))


def test_out_that_cannot_take_coordinate_writes_is_refused_before_work():
    class OnlySlices(np.ndarray):
        pass

    class Store:  # shape and dtype right, but only basic slicing assignment
        shape, dtype = (2, 2), np.dtype("f8")

        def __setitem__(self, key, value):
            if not all(isinstance(k, slice) for k in key):
                raise NotImplementedError("only slices")

    with pytest.raises(ValueError, match=r"out \(Store\) cannot take out\[rows, cols\] = values \(NotImplementedError"):
        cntk_core.kernel_matrix(_images(2), depth=2, out=Store())
    zarr = pytest.importorskip("zarr")
    read_only = zarr.open_array(zarr.storage.MemoryStore(read_only=False), mode="w", shape=(2, 2), dtype="f8")
    read_only = zarr.open_array(read_only.store.with_read_only(True), mode="r")
    with pytest.raises(ValueError, match="cannot take out"):
        cntk_core.kernel_matrix(_images(2), depth=2, out=read_only)


def test_integral_floats_everywhere_counts_are_taken():
    from cntk_core.data import balanced_indices
    from cntk_core.finite import FiniteCNN
    from cntk_widgets.models import NetworkSpec

    assert FiniteCNN(3.0, 4.0) == FiniteCNN(3, 4)
    assert NetworkSpec(depth=np.float64(5.0)).depth == 5
    y = np.arange(10) % 2
    np.testing.assert_array_equal(balanced_indices(y, 2.0), balanced_indices(y, 2))
    with pytest.raises(TypeError, match="depths must be an integer >= 2, got True"):
        cntk_core.kernel_matrices(_images(), depths=True)


def test_store_job_counts(tmp_path):
    from cntk_core.distributed import gram_to_store

    x = _images(3)
    with pytest.raises(TypeError, match=r"n_workers must be an integer >= 1 \(or None\), got True"):
        gram_to_store(tmp_path / "a.zarr", x, depth=2, n_workers=True)
    with pytest.raises(TypeError, match="tile_size must be an integer"):
        gram_to_store(tmp_path / "b.zarr", x, depth=2, tile_size=2.5)
    K = gram_to_store(tmp_path / "c.zarr", x, depth=2, tile_size=2.0, scheduler="synchronous", progress=False)
    np.testing.assert_allclose(K.load(), cntk_core.kernel_matrix(x, depth=2), rtol=1e-12)


@pytest.mark.parametrize("address", ["tcp://[::1:8786", "tcp://host:87a6", "tcp://host:port"])
def test_scheduler_typos_after_a_scheme_are_refused(address):
    with pytest.raises(ValueError, match="scheduler must be"):
        _check_scheduler(address)


@pytest.mark.parametrize("address", ["[fe80::1%eth0]:8786", "tcp://host", "inproc://10.0.0.1/123/1"])
def test_more_scheduler_addresses_are_accepted(address):
    _check_scheduler(address)
