"""The faults found beside the Gram store (issue 24): output names, pickled .npz members, ``out=``
arrays left untouched by a failed call, big-endian ``out=``, labels that are identifiers rather
than class indices, channels-first images, and Ctrl-C on a ``--scheduler local`` job."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
import warnings
import zipfile

import numpy as np
import pytest

import cntk_core
from cntk_core.cli import main
from cntk_core.validation import ChannelsFirstWarning


def _x(n=4, shape=(4, 4, 1), seed=0):
    return np.random.default_rng(seed).standard_normal((n, *shape))


def _no_gpu(monkeypatch):
    from cntk_core import backend

    monkeypatch.setattr(backend, "gpu_status", lambda: (False, "cupy installed, no usable CUDA device"))


# -- cntk-lab gram --out -----------------------------------------------------------------------------------
def test_a_legal_249_character_out_name_is_written(tmp_path, capsys):
    """The temporary file was '.NAME.npy.tmp-PID', longer than NAME_MAX: it failed after computing."""
    out = tmp_path / ("k" * 245 + ".npy")  # 249 characters
    assert main(["gram", "--n", "3", "--depth", "2", "--backend", "numpy", "--out", str(out)]) == 0
    assert np.load(out).shape == (3, 3)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left


def test_an_out_name_too_long_fails_before_computing(tmp_path, capsys, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("computed before checking --out")

    monkeypatch.setattr(cntk_core.gram, "kernel_matrix", boom)
    out = tmp_path / ("k" * 296 + ".npy")
    assert main(["gram", "--n", "3", "--depth", "2", "--out", str(out)]) == 2
    assert "is 300 bytes long; this file system allows 255" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# -- .npz subsets with pickled members -------------------------------------------------------------------
def test_an_npz_whose_members_are_pickles_is_a_data_error(tmp_path):
    from cntk_core.data import SUBSET_FILES, DataError, load_cifar10_subset

    for name in SUBSET_FILES:
        with zipfile.ZipFile(tmp_path / name, "w") as z:  # members named .npy, holding pickles
            z.writestr("x.npy", pickle.dumps(np.zeros((2, 32, 32, 3), np.uint8)))
            z.writestr("y.npy", pickle.dumps(np.zeros(2, np.int64)))
    with pytest.raises(DataError, match=r"cifar10_exact_train4000.npz: the member 'x' is not a .npy array"):
        load_cifar10_subset(tmp_path)


# -- out= ----------------------------------------------------------------------------------------------------
def test_a_failed_call_leaves_a_zarr_out_untouched(tmp_path, monkeypatch):
    """The check of out wrote a probe value into out[0, 0] before the call failed."""
    zarr = pytest.importorskip("zarr")
    _no_gpu(monkeypatch)
    z = zarr.open_array(str(tmp_path / "o.zarr"), mode="w", shape=(3, 3), chunks=(2, 2), dtype="f8", fill_value=7.5)
    with pytest.raises(RuntimeError, match="backend 'cupy' requested but unusable"):
        cntk_core.kernel_matrix(_x(3), depth=2, backend="cupy", out=z)
    assert (z[...] == 7.5).all() and not list((tmp_path / "o.zarr").glob("c/*"))  # no chunk written
    z[1, 2] = -1.0
    with pytest.raises(ValueError, match="depth"):
        cntk_core.kernel_matrix(_x(3), depth=1, out=z)
    assert z[1, 2] == -1.0 and z[0, 0] == 7.5
    K = cntk_core.kernel_matrix(_x(3), depth=2, backend="numpy", out=z)  # and a good call still writes it
    assert np.array_equal(z[...], cntk_core.kernel_matrix(_x(3), depth=2, backend="numpy")) and K is z


def test_a_big_endian_out_is_accepted(tmp_path):
    out = np.zeros((4, 4), dtype=">f8")
    result = cntk_core.kernel_matrix(_x(), depth=2, backend="numpy", out=out)
    assert result is out and out.dtype == np.dtype(">f8")
    assert np.array_equal(out, cntk_core.kernel_matrix(_x(), depth=2, backend="numpy"))
    mm = np.lib.format.open_memmap(tmp_path / "K.npy", mode="w+", dtype=">f8", shape=(4, 4))
    cntk_core.kernel_matrix(_x(), depth=2, backend="numpy", out=mm)
    assert np.array_equal(np.load(tmp_path / "K.npy"), out)
    with pytest.raises(ValueError, match="must be a float64 array of shape"):
        cntk_core.kernel_matrix(_x(), depth=2, out=np.zeros((4, 4), ">f4"))


# -- labels that are identifiers ------------------------------------------------------------------------------
@pytest.mark.parametrize("big", [2**40, 10**7])
def test_kernel_regression_refuses_identifier_labels_instead_of_allocating(big):
    from cntk_core.regression import kernel_regression

    K = np.eye(2) + 0.1
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"labels must be class indices .* np.unique\(y, return_inverse=True\)"):
        kernel_regression(K, [0, big], K)
    assert time.perf_counter() - t0 < 1.0
    pred, scores = kernel_regression(K, [0, 1], K)  # class indices work as before
    assert pred.tolist() == [0, 1] and scores.shape == (2, 2)


# -- channels-first images ---------------------------------------------------------------------------------------
def test_channels_first_images_warn_and_say_how_to_transpose():
    x = _x(2, (3, 8, 8))
    with pytest.warns(ChannelsFirstWarning, match=r"looks channels-first .* np\.transpose\(x1, \(0, 2, 3, 1\)\)"):
        cntk_core.kernel_matrix(x, depth=2, backend="numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cntk_core.kernel_matrix(np.transpose(x, (0, 2, 3, 1)), depth=2, backend="numpy")  # NHWC: silent
        cntk_core.kernel_matrix(_x(2, (1, 1, 3)), depth=2, backend="numpy")  # 1x1 RGB pixels: silent
        cntk_core.kernel_matrix(_x(2, (6, 6, 16)), depth=2, backend="numpy")  # many channels: silent


def test_the_channels_first_warning_points_at_the_users_line(tmp_path):
    """It pointed into cntk_core/distributed.py for gram_to_store (a fixed stacklevel of 3)."""
    from cntk_core.distributed import gram_to_store

    x = _x(2, (3, 8, 8))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cntk_core.kernel_matrix(x, depth=2, backend="numpy")
        gram_to_store(tmp_path / "g.zarr", x, depth=2, backend="numpy", scheduler="synchronous", progress=False)
    found = [w for w in caught if issubclass(w.category, ChannelsFirstWarning)]
    assert len(found) >= 2 and {w.filename for w in found} == {__file__}, [(w.filename, w.lineno) for w in found]


# -- Ctrl-C on a local cluster ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ctrl_c_on_a_local_cluster_job_prints_one_line(tmp_path):
    """Before, the note on how to resume came after about 70 lines of Dask warnings and tracebacks."""
    pytest.importorskip("distributed")
    store = tmp_path / "g.zarr"
    cmd = [sys.executable, "-m", "cntk_core.cli", "gram", "--n", "300", "--depth", "3", "--backend", "numpy"]
    cmd += ["--store", str(store), "--scheduler", "local", "--n-workers", "2", "--tile-size", "8", "--no-progress"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not (store / "done" / "c").is_dir() or not any((store / "done" / "c").iterdir()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends: the driver and its workers
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("cntk-lab: interrupted; ") and lines[0].endswith("re-run to resume")
    assert f"tiles are on disk in {str(store)!r}" in lines[0]
