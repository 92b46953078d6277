"""What cntk_core.kernel_matrix / kernel_matrices (cntk_core.gram) accept and refuse: integral floats
and 0-d arrays as depths and flags, ``out=`` arrays (zarr, big-endian, ones that cannot take the
writes, left untouched by a failed call), channels-first images, every refusal naming its parameter,
and kernels beyond the float range (the rescaling of extreme images, underflow, overflow).

The values themselves are tested against the reference in test_cpu_planes.py and test_engines.py."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest
from conftest import make_images, raises_param

import cntk_core
from cntk_core.scaling import unit_scaled as _unit_scaled
from cntk_core.validation import ChannelsFirstWarning, ParameterError, ParameterTypeError


def _images(n=4, seed=0):
    return make_images(n, (4, 4, 2), seed)


def _no_gpu(monkeypatch):
    from cntk_core import backend

    monkeypatch.setattr(backend, "gpu_status", lambda: (False, "cupy installed, no usable CUDA device"))


# --- depths, flags and counts ---------------------------------------------------------------------


def test_integral_floats_and_0d_arrays_as_depths_and_flags():
    x = _images()
    ref = cntk_core.kernel_matrix(x, depth=3, fix=True)
    np.testing.assert_array_equal(cntk_core.kernel_matrix(x, depth=3.0, fix=1), ref)
    np.testing.assert_array_equal(cntk_core.kernel_matrix(x, depth=np.array(3), fix=np.True_), ref)
    both = cntk_core.kernel_matrices(x, depths=np.array([2.0, 3.0]), fix=True)
    np.testing.assert_array_equal(both[3], ref)
    np.testing.assert_array_equal(cntk_core.kernel_matrices(x, depths=np.array(3), fix=True)[3], ref)
    np.testing.assert_array_equal(cntk_core.kernel_matrix(x, depth=3, fix=True, block_size=2.0), ref)
    with raises_param("depths", match=r"^depths\[0\] "):  # the message names the entry
        cntk_core.kernel_matrices(x, depths=[1, 3])
    with raises_param("depths", ParameterTypeError):  # a bool is not a count
        cntk_core.kernel_matrices(_images(), depths=True)


def test_library_errors_carry_the_parameter_name():
    x = np.ones((2, 4, 4, 1))
    cases = [
        (dict(depth=1), ParameterError, "depth"),
        (dict(depth=2.5), ParameterTypeError, "depth"),
        (dict(depth=3, readout="max"), ParameterError, "readout"),
        (dict(depth=3, kind="gp"), ParameterError, "kind"),
        (dict(depth=3, dtype="float16"), ParameterError, "dtype"),
        (dict(depth=3, fix="yes"), ParameterTypeError, "fix"),
        (dict(depth=3, block_size=0), ParameterError, "block_size"),
        (dict(depth=3, backend="tpu"), ParameterError, "backend"),
        (dict(depth=3, out=np.zeros((3, 3))), ParameterError, "out"),
    ]
    for kwargs, error, param in cases:
        with raises_param(param, error):
            cntk_core.kernel_matrix(x, **kwargs)
    with raises_param("x2"):
        cntk_core.kernel_matrix(x, x[:, :3], depth=3)


# --- out= -----------------------------------------------------------------------------------------


def test_out_may_be_a_zarr_array():
    zarr = pytest.importorskip("zarr")
    x1, x2 = _images(3), _images(5, seed=1)
    out = zarr.zeros((3, 5), dtype="f8", chunks=(2, 2))
    assert cntk_core.kernel_matrix(x1, x2, depth=3, out=out) is out
    np.testing.assert_array_equal(out[:], cntk_core.kernel_matrix(x1, x2, depth=3))
    with raises_param("out"):
        cntk_core.kernel_matrix(x1, x2, depth=3, out=zarr.zeros((3, 5), dtype="f4"))
    with raises_param("out", match=r"\(NumPy, np.memmap, zarr\)"):  # says what out may be
        cntk_core.kernel_matrix(x1, x2, depth=3, out=[[0.0] * 5] * 3)


def test_out_that_cannot_take_coordinate_writes_is_refused_before_work():
    class Store:  # shape and dtype right, but only basic slicing assignment
        shape, dtype = (2, 2), np.dtype("f8")

        def __setitem__(self, key, value):
            if not all(isinstance(k, slice) for k in key):
                raise NotImplementedError("only slices")

    with raises_param("out", match=r"cannot take out\[rows, cols\] = values \(NotImplementedError"):
        cntk_core.kernel_matrix(_images(2), depth=2, out=Store())
    zarr = pytest.importorskip("zarr")
    read_only = zarr.open_array(zarr.storage.MemoryStore(read_only=False), mode="w", shape=(2, 2), dtype="f8")
    read_only = zarr.open_array(read_only.store.with_read_only(True), mode="r")
    with raises_param("out", match="cannot take out"):
        cntk_core.kernel_matrix(_images(2), depth=2, out=read_only)


def test_a_failed_call_leaves_a_zarr_out_untouched(tmp_path, monkeypatch):
    """The check of out wrote a probe value into out[0, 0] before the call failed."""
    zarr = pytest.importorskip("zarr")
    _no_gpu(monkeypatch)
    x = make_images(3, (4, 4, 1))
    z = zarr.open_array(str(tmp_path / "o.zarr"), mode="w", shape=(3, 3), chunks=(2, 2), dtype="f8", fill_value=7.5)
    with pytest.raises(RuntimeError, match="backend 'cupy' requested but unusable"):
        cntk_core.kernel_matrix(x, depth=2, backend="cupy", out=z)
    assert (z[...] == 7.5).all() and not list((tmp_path / "o.zarr").glob("c/*"))  # no chunk written
    z[1, 2] = -1.0
    with raises_param("depth"):
        cntk_core.kernel_matrix(x, depth=1, out=z)
    assert z[1, 2] == -1.0 and z[0, 0] == 7.5
    K = cntk_core.kernel_matrix(x, depth=2, backend="numpy", out=z)  # and a good call still writes it
    assert np.array_equal(z[...], cntk_core.kernel_matrix(x, depth=2, backend="numpy")) and K is z


def test_a_big_endian_out_is_accepted(tmp_path):
    x = make_images(4, (4, 4, 1))
    out = np.zeros((4, 4), dtype=">f8")
    result = cntk_core.kernel_matrix(x, depth=2, backend="numpy", out=out)
    assert result is out and out.dtype == np.dtype(">f8")
    assert np.array_equal(out, cntk_core.kernel_matrix(x, depth=2, backend="numpy"))
    mm = np.lib.format.open_memmap(tmp_path / "K.npy", mode="w+", dtype=">f8", shape=(4, 4))
    cntk_core.kernel_matrix(x, depth=2, backend="numpy", out=mm)
    assert np.array_equal(np.load(tmp_path / "K.npy"), out)
    with raises_param("out"):  # big-endian float32: still not float64
        cntk_core.kernel_matrix(x, depth=2, out=np.zeros((4, 4), ">f4"))


# --- channels-first images ------------------------------------------------------------------------


def test_channels_first_images_warn_and_say_how_to_transpose():
    x = make_images(2, (3, 8, 8))
    with pytest.warns(ChannelsFirstWarning, match=r"looks channels-first .* np\.transpose\(x1, \(0, 2, 3, 1\)\)"):
        cntk_core.kernel_matrix(x, depth=2, backend="numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cntk_core.kernel_matrix(np.transpose(x, (0, 2, 3, 1)), depth=2, backend="numpy")  # NHWC: silent
        cntk_core.kernel_matrix(make_images(2, (1, 1, 3)), depth=2, backend="numpy")  # 1x1 RGB pixels: silent
        cntk_core.kernel_matrix(make_images(2, (6, 6, 16)), depth=2, backend="numpy")  # many channels: silent


def test_the_channels_first_warning_points_at_the_users_line(tmp_path):
    """It pointed into cntk_core/distributed.py for gram_to_store (a fixed stacklevel of 3)."""
    pytest.importorskip("zarr")
    from cntk_core.distributed import gram_to_store

    x = make_images(2, (3, 8, 8))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cntk_core.kernel_matrix(x, depth=2, backend="numpy")
        gram_to_store(tmp_path / "g.zarr", x, depth=2, backend="numpy", scheduler="synchronous", progress=False)
    found = [w for w in caught if issubclass(w.category, ChannelsFirstWarning)]
    assert len(found) >= 2 and {w.filename for w in found} == {__file__}, [(w.filename, w.lineno) for w in found]


# --- kernels beyond the float range ---------------------------------------------------------------


def test_finding_the_image_scales_allocates_no_copy_of_the_batch():
    x = make_images(64, (32, 32, 3))  # 1.5 MB
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


@pytest.mark.parametrize("depth,dtype", [(3000, "float64"), (1500, "float32")])
def test_a_kernel_that_underflows_raises_instead_of_nan(depth, dtype):
    with pytest.raises(FloatingPointError, match="not finite .* very deep network's kernel shrinks"):
        cntk_core.kernel_matrix(make_images(3, (4, 4, 1)), depth=depth, dtype=dtype)


def test_tiny_pixels_that_underflow_get_the_underflow_message():
    with pytest.raises(FloatingPointError, match="not finite .* very deep network's kernel shrinks"):
        cntk_core.kernel_matrix(make_images(3, (4, 4, 1), scale=1e-12), depth=600, dtype="float32")
