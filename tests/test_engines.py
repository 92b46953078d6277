"""The engines behind kernel_matrix (cntk_core.engines) and the backend choice that picks one
(cntk_core.backend.resolve_backend): the per-layer engine (``"numpy"``) against the independent 4-D
reference, float32 arithmetic on both CPU engines, and an import that stays quiet and CuPy-free.
The fused CPU engine's own tests: test_cpu_planes.py; the GPU engine's: test_gpu*.py."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import make_images, raises_param, rel_err

from cntk_core import kernel_matrix
from cntk_core.testing import reference_matrix

FIXES = [(False, False), (True, True), (True, False), (False, True)]


@pytest.mark.parametrize("p,q,c,depth", [(5, 7, 2, 3), (4, 4, 1, 6), (1, 1, 2, 3)])
@pytest.mark.parametrize("readout", ["gap", "vanilla"])
def test_per_layer_numpy_backend_equals_reference(p, q, c, depth, readout):
    x = make_images(5, (p, q, c), seed=[p, q, depth, 1])
    x1, x2 = x[:2], x[2:]
    for (fix_first, fix_last), kind in itertools.product(FIXES, ["ntk", "nngp"]):
        ref = reference_matrix(x1, x2, depth, readout, fix_first, fix_last, kind)
        got = kernel_matrix(
            x1, x2, depth=depth, readout=readout, fix_first=fix_first, fix_last=fix_last, kind=kind, backend="numpy"
        )
        assert rel_err(got, ref) <= 1e-7


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("readout", ["gap", "vanilla"])
def test_float32_within_1e_4(backend, readout):
    x = make_images(3, (7, 6, 3), seed=11)
    for fix, depth in [(False, 3), (True, 9)]:
        ref = reference_matrix(x, x, depth, readout, fix, fix)
        got = kernel_matrix(x, depth=depth, readout=readout, fix=fix, dtype="float32", backend=backend)
        assert got.dtype == np.float64
        assert rel_err(got, ref) <= 1e-4


def test_backend_choice(monkeypatch):
    from cntk_core import backend

    monkeypatch.setenv("CNTK_BACKEND", "numpy")
    assert backend.resolve_backend() == "numpy"
    assert backend.resolve_backend("numba") == "numba"
    monkeypatch.setenv("CNTK_BACKEND", "gpu")
    with raises_param("backend", match="CNTK_BACKEND"):  # says where the bad name came from
        backend.resolve_backend()
    monkeypatch.delenv("CNTK_BACKEND")
    if not backend.gpu_status()[0]:
        assert backend.resolve_backend() == "numba"
        with pytest.raises(RuntimeError, match="unusable"):
            backend.resolve_backend("cupy")


def test_import_is_quiet_and_does_not_import_cupy():
    code = "import sys, cntk_core; assert 'cupy' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, env=os.environ)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok" and out.stderr == ""


def test_numba_engine_supports_zero_padding_without_pools():
    from cntk_core import Architecture
    from cntk_core.engines import NumbaEngine

    assert NumbaEngine.supports(Architecture(3, "gap"))
    assert NumbaEngine.supports(Architecture(4, "vanilla", fix_first=True))
    assert NumbaEngine.supports(Architecture(3, "lap", lap_c=2))
    assert NumbaEngine.supports(Architecture(3, "gap", flip=True))  # the Gram driver flips
    assert not NumbaEngine.supports(Architecture(3, "gap", padding="circular"))
    assert not NumbaEngine.supports(Architecture(3, "lap", lap_c=1, padding="circular"))
    assert not NumbaEngine.supports(Architecture(5, "gap", pools=(2, 3)))
    assert not NumbaEngine.supports(None)  # a layer list of no canonical shape
    with pytest.raises(ValueError, match="does not run"):
        NumbaEngine(Architecture(3, "gap", padding="circular"), (4, 4, 1), "ntk", np.float64)


def test_make_engine_falls_back_to_per_layer_for_what_numba_does_not_run():
    from cntk_core import Architecture, AvgPool, Conv, Dense, GlobalAvgPool, Network, ReLU
    from cntk_core.engines import NumbaEngine, PerLayerEngine, make_engine

    def engine(net, **kw):
        return make_engine("numba", net, (6, 6, 2), "ntk", np.float64, **kw)

    assert isinstance(engine(Architecture(3, "lap", lap_c=1).network()), NumbaEngine)
    assert isinstance(engine(Architecture(3, "lap", lap_c=1).network(), depths=[2, 3]), NumbaEngine)
    circular = Architecture(3, "lap", lap_c=1, padding="circular").network()
    assert isinstance(engine(circular), PerLayerEngine)
    from cntk_core.cpu_stages import StagedEngine

    assert isinstance(engine(Architecture(3, "gap", pools=(1,)).network()), StagedEngine)
    pooled = Network([Conv(3), ReLU(), AvgPool(2), Conv(3), ReLU(), GlobalAvgPool(), Dense()])
    assert isinstance(engine(pooled), StagedEngine)
    assert isinstance(engine(Architecture(3, "gap", pools=(1,), padding="circular").network()), PerLayerEngine)
    with pytest.raises(ValueError, match="several depths"):
        engine(pooled, depths=[2, 3])
    assert isinstance(engine(circular, depths=[3]), PerLayerEngine)
    with pytest.raises(ValueError, match="several depths"):
        engine(circular, depths=[2, 3])


@pytest.mark.parametrize("readout,lap_c", [("gap", None), ("vanilla", None), ("lap", 1)])
def test_circular_padding_on_the_numba_backend_equals_reference(readout, lap_c):
    """The fused CPU engine leaves circular padding to the per-layer path; the answer is the same."""
    from cntk_core import Architecture, network_kernel

    x = make_images(3, (4, 5, 2), seed=[7, len(readout)])
    arch = Architecture(3, readout, lap_c=lap_c, padding="circular")
    for kind in ("ntk", "nngp"):
        ref = reference_matrix(x, x[1:], 3, readout, kind=kind, lap_c=lap_c, padding="circular")
        assert rel_err(network_kernel(arch, x, x[1:], kind=kind, backend="numba"), ref) <= 1e-7
