"""FusedGPUEngine's Python side without a GPU: a fake CuPy (two devices) whose kernels are the ``.cu``
built for the host (``tests/cuda_host.py``), against the float64 references. Covers the launch
arguments, the record pass, shift blocks (LAP's subset included), reduction and scale, OOM retry, the
shared-memory limit per device and kernel, the grid cap on pairs per launch, ``CNTK_GPU_THREADS``,
the float32 range rules as ``kernel_matrix`` applies them to the GPU engine, the networks the engine
refuses, and the flip-symmetrised kernel through the Gram driver on the fused engine."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from conftest import make_images
from cuda_host import (
    FORWARD,
    REVERSE,
    SHUFFLED,
    build_host_lib,
    kernel_parameters,
    launch_reduce,
    launch_shift_blocks,
    launch_stage_blocks,
)
from gpu_emulator import emulate_matrix

import cntk_core
from cntk_core import Architecture, ParameterError
from cntk_core.gpu import NAME_EXPRESSIONS
from cntk_core.testing import reference_arch_matrix, reference_matrix

TOL = {"float32": 1e-4, "float64": 1e-7}


class FakeOOM(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# CPU: FusedGPUEngine's Python side on a fake CuPy whose kernels are the .cu built for the host
# (tests/cuda_host.py: the real kernel wrapper and reduction, several threads per block). The fake
# has devices: arrays remember theirs, a launch with an array of another device fails, and a launch
# asking for more than 48 KB of shared memory fails unless the kernel's limit was raised on the
# launching device (as the CUDA driver does).
# ---------------------------------------------------------------------------------------------

_STATIC_SMEM = 48 * 1024


class _FakeState:
    current = 0
    optin = {0: 232448, 1: 232448}  # MaxSharedMemoryPerBlockOptin per device (H100: 227 KB)
    func_smem: dict = {}  # (device, kernel name) -> max dynamic shared memory attribute
    launches: list = []  # (device, kernel name, shared_mem, grid)


class _HostArray(np.ndarray):
    def __array_finalize__(self, obj):
        self._dev = getattr(obj, "_dev", _FakeState.current)

    def get(self):
        return np.asarray(self)

    @property
    def device(self):
        return _FakeDevice(self._dev)


class _FakeDevice:
    def __init__(self, device=None):
        self.id = _FakeState.current if device is None else int(device)

    @property
    def attributes(self):
        return {"MaxSharedMemoryPerBlockOptin": _FakeState.optin[self.id]}

    def __enter__(self):
        self._prev = _FakeState.current
        _FakeState.current = self.id
        return self

    def __exit__(self, *exc):
        _FakeState.current = self._prev


class _NumpyFallback(type):
    """Names the fake does not define come from NumPy (the per-layer engine's array functions)."""

    def __getattr__(cls, name):
        return getattr(np, name)


class _FakeCupy(metaclass=_NumpyFallback):
    """Just enough of the CuPy namespace for FusedGPUEngine, on NumPy; anything else (the per-layer
    engine's array functions) is NumPy's."""

    int32, float64 = np.int32, np.float64

    class cuda:  # noqa: N801
        Device = _FakeDevice

        class memory:  # noqa: N801
            OutOfMemoryError = FakeOOM

        class runtime:  # noqa: N801
            @staticmethod
            def memGetInfo():  # noqa: N802
                return 1 << 30, 1 << 31

    class _Pool:
        def free_bytes(self):
            return 0

        def free_all_blocks(self):
            pass

    @classmethod
    def get_default_memory_pool(cls):
        return cls._Pool()

    @staticmethod
    def asarray(a):
        return np.ascontiguousarray(a).view(_HostArray)

    @staticmethod
    def empty(n, dtype):
        return np.empty(n, dtype).view(_HostArray)

    @staticmethod
    def zeros(shape, dtype):
        return np.zeros(shape, dtype).view(_HostArray)

    @staticmethod
    def arange(n, dtype):
        return np.arange(n, dtype=dtype).view(_HostArray)


class _FakeKernel:
    """What ``RawModule.get_function`` returns: a new object per call, whose shared-memory attribute
    belongs to the kernel on the current device (shared by every object of that name)."""

    num_regs = local_size_bytes = 0  # what gpu_check reports of a kernel

    def __init__(self, lib, name, order):
        self.lib, self.name, self.order = lib, name, order

    @property
    def max_dynamic_shared_size_bytes(self):
        return _FakeState.func_smem.get((_FakeState.current, self.name), _STATIC_SMEM)

    @max_dynamic_shared_size_bytes.setter
    def max_dynamic_shared_size_bytes(self, nbytes):
        assert nbytes <= _FakeState.optin[_FakeState.current]
        _FakeState.func_smem[(_FakeState.current, self.name)] = int(nbytes)

    def __call__(self, grid, block, args, shared_mem=0):
        dev = _FakeState.current
        if grid[0] < 1:
            raise RuntimeError("CUDA_ERROR_INVALID_VALUE: a grid of no blocks")
        foreign = [a._dev for a in args if isinstance(a, _HostArray) and a._dev != dev]
        if foreign:
            raise RuntimeError(f"CUDA_ERROR_ILLEGAL_ADDRESS: arrays of device {foreign[0]} used on device {dev}")
        if shared_mem > max(_STATIC_SMEM, self.max_dynamic_shared_size_bytes):
            raise RuntimeError(f"CUDA_ERROR_INVALID_VALUE: {shared_mem} bytes of shared memory on device {dev}")
        params = kernel_parameters(self.name.split("<")[0])  # the CUDA signature: count, order, scalar types
        assert len(args) == len(params), (self.name, len(args), len(params))
        for k, (a, want) in enumerate(zip(args, params, strict=True)):
            assert isinstance(a, _HostArray) if want == "array" else type(a) is want, (self.name, k, type(a), want)
        _FakeState.launches.append((dev, self.name, shared_mem, int(grid[0])))
        if self.name == "cntk_reduce":
            assert shared_mem == 0 and launch_reduce(self.lib, grid[0], block[0], args, self.order) == 0
            return
        stage = self.name.startswith("cntk_stage_blocks")
        x1, p, q = args[0], *(args[10:12] if stage else args[8:10])
        assert shared_mem == block[0] * 8 + 4 * int(p) * int(q) * x1.itemsize
        launch = launch_stage_blocks if stage else launch_shift_blocks
        assert launch(self.lib, grid[0], block[0], shared_mem, args, self.order) == 0


class _FakeModule:
    def __init__(self, lib, order):
        self.lib, self.order = lib, order

    def get_function(self, name):
        assert name in ("cntk_reduce", *NAME_EXPRESSIONS), name
        return _FakeKernel(self.lib, name, self.order)


@pytest.fixture(scope="module")
def host_lib():
    return build_host_lib()


@pytest.fixture
def fake_gpu(monkeypatch, host_lib):
    """Installs the fake CuPy (two devices) and host kernels; returns a factory of FusedGPUEngine."""
    import cntk_core.gpu as gpu

    monkeypatch.setitem(sys.modules, "cupy", _FakeCupy)
    monkeypatch.setattr(gpu, "_SMEM_SET", {})
    monkeypatch.setattr(_FakeState, "current", 0)
    monkeypatch.setattr(_FakeState, "optin", {0: 232448, 1: 232448})
    monkeypatch.setattr(_FakeState, "func_smem", {})
    monkeypatch.setattr(_FakeState, "launches", [])
    order = {"order": FORWARD}
    monkeypatch.setattr(gpu, "_module", lambda: _FakeModule(host_lib, order["order"]))

    def make(depth, readout, fix, kind, dtype, shape, order=FORWARD, lap_c=None, **kw):
        spec = Architecture(depth, readout, fix, fix, lap_c=lap_c)
        eng = gpu.FusedGPUEngine(spec, shape, kind, np.dtype(dtype), **kw)
        for k in (eng._shift_block_kernel, eng._reduce_kernel):
            k.order = order
        return eng

    return make


def _matrix(eng, x1, x2):
    s1, s2 = eng.prepare(x1), eng.prepare(x2)
    rows, cols = np.meshgrid(np.arange(len(x1)), np.arange(len(x2)), indexing="ij")
    return eng.pairs(s1, s2, rows.ravel(), cols.ravel()).reshape(len(x1), len(x2))


@pytest.mark.parametrize(
    "shape,depth,readout,fix,kind,dtype,order,c",
    [
        ((5, 7, 2), 3, "gap", True, "ntk", "float64", REVERSE, None),
        ((6, 4, 3), 4, "gap", False, "nngp", "float32", FORWARD, None),
        ((9, 13, 3), 6, "vanilla", False, "ntk", "float32", SHUFFLED, None),
        ((7, 6, 2), 3, "lap", False, "ntk", "float64", SHUFFLED, 1),
        ((9, 5, 3), 4, "lap", True, "nngp", "float32", REVERSE, 2),
        ((5, 5, 2), 3, "lap", True, "ntk", "float32", FORWARD, 0),
        ((4, 6, 1), 3, "lap", False, "ntk", "float64", FORWARD, 8),
    ],
)
def test_engine_python_side_with_host_kernels(fake_gpu, shape, depth, readout, fix, kind, dtype, order, c):
    z = make_images(4, shape, seed=2)
    x1, x2 = z[:3], z[2:]  # one image in both
    eng = fake_gpu(depth, readout, fix, kind, dtype, shape, order=order, max_pairs=4, lap_c=c)
    got = _matrix(eng, x1, x2)
    ref = reference_matrix(x1, x2, depth, readout, fix, fix, kind, lap_c=c)
    np.testing.assert_allclose(got, ref, rtol=TOL[dtype], atol=TOL[dtype] * np.abs(ref).max())


@pytest.mark.parametrize(
    "shape,c,blocks", [((7, 6, 2), 1, 25), ((9, 5, 1), 2, 45), ((6, 6, 1), 0, 1), ((4, 6, 1), 8, 24)]
)
def test_lap_launches_only_the_weighted_shift_blocks(fake_gpu, shape, c, blocks):
    """LAP's pair launch has min(P, 4c+1) * min(Q, 4c+1) thread blocks per pair (counted here by
    hand); c = 0 is the vanilla launch and gives the vanilla kernel bit for bit."""
    x = make_images(3, shape, seed=c)
    eng = fake_gpu(3, "lap", False, "ntk", "float64", shape, lap_c=c)
    assert eng.n_shift_blocks == blocks
    state = eng.prepare(x)
    _FakeState.launches.clear()
    rows, cols = np.triu_indices(3)
    got = eng.pairs(state, state, rows, cols)
    grids = [(name, grid) for _, name, _, grid in _FakeState.launches]
    assert grids == [("cntk_shift_blocks<double>", len(rows) * blocks), ("cntk_reduce", 1)]
    ref = reference_matrix(x, x, 3, "lap", False, False, "ntk", lap_c=c)
    np.testing.assert_allclose(got, ref[rows, cols], rtol=1e-12)
    if c == 0:
        vanilla = fake_gpu(3, "vanilla", False, "ntk", "float64", shape)
        st = vanilla.prepare(x)
        np.testing.assert_array_equal(got, vanilla.pairs(st, st, rows, cols))


@pytest.mark.parametrize(
    "arch,param",
    [
        (cntk_core.myrtle(5), "pools"),
        (Architecture(3, "gap", pools=(1,)), "pools"),
        (Architecture(3, "gap", padding="circular"), "padding"),
        (Architecture(3, "lap", lap_c=1, padding="circular"), "padding"),
    ],
)
def test_engine_refuses_networks_it_does_not_fuse(fake_gpu, arch, param):
    import cntk_core.gpu as gpu

    with pytest.raises(ParameterError) as err:
        gpu.FusedGPUEngine(arch, (8, 8, 3), "ntk", np.dtype("float64"))
    assert err.value.param == param
    assert ("StagedGPUEngine" if param == "pools" else "per-layer") in str(err.value)


@pytest.mark.parametrize(
    "shape,arch,kind,dtype",
    [
        ((6, 7, 2), Architecture(3, "lap", True, True, lap_c=1, flip=True), "ntk", "float64"),
        ((5, 6, 3), Architecture(4, "gap", flip=True), "nngp", "float32"),
        ((5, 5, 2), Architecture(3, "vanilla", flip=True), "ntk", "float64"),
    ],
)
def test_flip_kernel_through_the_driver_on_the_fused_engine(fake_gpu, monkeypatch, shape, arch, kind, dtype):
    """network_kernel(Architecture(..., flip=True), backend="cupy"): the Gram driver wraps the fused
    engine (two evaluations per pair) and matches the oracle's flip-symmetrised kernel."""
    import cntk_core.gram as gram

    monkeypatch.setattr(gram, "resolve_backend", lambda backend=None: "cupy")
    x = make_images(4, shape, seed=shape[1])
    got = cntk_core.network_kernel(arch, x[:3], x[1:], kind=kind, dtype=dtype, backend="cupy")
    assert {name for _, name, _, _ in _FakeState.launches} == {"cntk_shift_blocks<" + _CT[dtype] + ">", "cntk_reduce"}
    ref = reference_arch_matrix(x[:3], x[1:], arch, kind)
    np.testing.assert_allclose(got, ref, rtol=TOL[dtype], atol=TOL[dtype] * np.abs(ref).max())
    gram_ = cntk_core.network_kernel(arch, x, kind=kind, dtype=dtype, backend="cupy")  # symmetric: self pairs
    ref = reference_arch_matrix(x, x, arch, kind)
    np.testing.assert_allclose(gram_, ref, rtol=TOL[dtype], atol=TOL[dtype] * np.abs(ref).max())
    np.testing.assert_array_equal(gram_, gram_.T)


_CT = {"float32": "float", "float64": "double"}


def test_engine_oom_retry_with_host_kernels(fake_gpu):
    x = make_images(4, (5, 5, 2), seed=3)
    eng = fake_gpu(3, "vanilla", False, "ntk", "float64", (5, 5, 2), max_pairs=8)
    state = eng.prepare(x)
    rows, cols = np.triu_indices(4)
    want = eng.pairs(state, state, rows, cols)
    real, raised = eng._launch, []

    def flaky(*args):
        if not raised:
            raised.append(1)
            raise FakeOOM
        return real(*args)

    eng._launch = flaky
    got = eng.pairs(state, state, rows, cols)
    assert raised and eng.max_pairs == 4
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="out of range"):
        eng.pairs(state, state, np.array([0]), np.array([4]))
    empty = eng.prepare(x[:0])  # no launch of no blocks
    assert len(empty[0]) == len(empty[1]) == 0 and len(eng.pairs(empty, empty, [], [])) == 0


# 40x40 float64 needs 53248 bytes of shared memory per block, 39x39 50720: both above 48 KB
BIG, SMALLER = (40, 40, 1), (39, 39, 1)


def _big_reference(x):
    """CNTK-V-3 of 40x40 images from the NumPy thread-block statement (checked against the 4-D reference in
    test_numpy_block_statement_matches_reference; the reference itself takes seconds at 40x40)."""
    return emulate_matrix(x, x, cntk_core.cntk(3, "vanilla", False).canonical(), "ntk")


def test_shared_memory_limit_is_the_largest_any_engine_needs(fake_gpu):
    """A later engine with a smaller need above 48 KB does not lower the limit an earlier one runs on."""
    x = make_images(2, BIG, seed=4)
    big = fake_gpu(3, "vanilla", False, "ntk", "float64", BIG)
    want = _big_reference(x)
    np.testing.assert_allclose(_matrix(big, x, x), want, rtol=1e-12)
    fake_gpu(3, "vanilla", False, "ntk", "float64", SMALLER)
    assert _FakeState.func_smem == {(0, "cntk_shift_blocks<double>"): big.smem}  # not lowered, not set again
    np.testing.assert_allclose(_matrix(big, x, x), want, rtol=1e-12)
    assert _FakeState.func_smem == {(0, "cntk_shift_blocks<double>"): big.smem} and big.smem == 53248
    assert max(s for _, _, s, _ in _FakeState.launches) == 53248


def test_shared_memory_limit_is_set_on_the_device_that_launches(fake_gpu):
    x = make_images(2, BIG, seed=5)
    want = _big_reference(x)
    eng = fake_gpu(3, "vanilla", False, "ntk", "float64", BIG)  # built on device 0
    with _FakeCupy.cuda.Device(1):
        s1 = eng.prepare(x)  # on device 1
        np.testing.assert_allclose(eng.pairs(s1, s1, [0, 1], [1, 1]), want[[0, 1], [1, 1]], rtol=1e-12)
    assert _FakeState.func_smem[(1, "cntk_shift_blocks<double>")] == eng.smem
    # device 0 is current again: the pairs still run where their images are
    np.testing.assert_allclose(eng.pairs(s1, s1, [0], [0]), want[0, 0], rtol=1e-12)
    assert _FakeState.launches[-1][0] == 1
    s0 = eng.prepare(x)
    with pytest.raises(ValueError, match="different GPUs"):
        eng.pairs(s0, s1, [0], [0])
    _FakeState.optin[1] = _STATIC_SMEM  # a device that cannot give 53 KB: told, not a failed launch
    _FakeState.func_smem.clear()
    gpu = sys.modules["cntk_core.gpu"]
    gpu._SMEM_SET.clear()
    with _FakeCupy.cuda.Device(1), pytest.raises(ValueError, match="more than GPU 1's 49152"):
        eng.prepare(x)


def test_max_pairs_is_capped_at_the_grid_limit(fake_gpu):
    from cntk_core.gpu import MAX_BLOCKS

    eng = fake_gpu(3, "gap", False, "ntk", "float32", (40, 40, 1), max_pairs=2**40)
    assert eng.n_shift_blocks == 1600 and eng.max_pairs == eng.pair_cap == MAX_BLOCKS // 1600
    assert fake_gpu(3, "gap", False, "ntk", "float32", (40, 40, 1)).max_pairs <= MAX_BLOCKS // 1600
    eng = fake_gpu(3, "gap", False, "ntk", "float32", (4, 4, 1))
    eng.max_pairs = 2**40  # even when set afterwards, pairs() launches at most pair_cap
    x = make_images(2, (4, 4, 1), seed=6)
    st = eng.prepare(x)
    eng.pairs(st, st, [0], [1])
    assert eng.max_pairs == eng.pair_cap == MAX_BLOCKS // 16
    i32 = np.int32
    rows = _FakeCupy.zeros(3, i32)
    with pytest.raises(ValueError, match="more thread blocks than one launch"):
        eng._launch(st[0], st[0], st[1], st[1], rows, rows, 2**30, False)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_pairs"):
            fake_gpu(3, "gap", False, "ntk", "float32", (4, 4, 1), max_pairs=bad)


def test_threads_from_the_environment(fake_gpu, monkeypatch):
    x = make_images(2, (6, 5, 2), seed=7)
    monkeypatch.setenv("CNTK_GPU_THREADS", "64")
    eng = fake_gpu(4, "gap", True, "ntk", "float64", (6, 5, 2))
    assert eng.threads == 64 and eng.smem == 64 * 8 + 4 * 30 * 8
    np.testing.assert_allclose(_matrix(eng, x, x), reference_matrix(x, x, 4, "gap", True, True, "ntk"), rtol=1e-12)
    assert fake_gpu(4, "gap", True, "ntk", "float64", (6, 5, 2), threads=128).threads == 128
    for bad in ("abc", "48"):
        monkeypatch.setenv("CNTK_GPU_THREADS", bad)
        with pytest.raises(ValueError, match="CNTK_GPU_THREADS|power of two"):
            fake_gpu(4, "gap", True, "ntk", "float64", (6, 5, 2))


def _gpu_kernel_matrix(monkeypatch, x, **kw):
    """kernel_matrix through FusedGPUEngine on the fake CuPy (the real driver: tiles, rescaling)."""
    import cntk_core.gram as gram

    monkeypatch.setattr(gram, "resolve_backend", lambda backend=None: "cupy")
    return cntk_core.kernel_matrix(x, backend="cupy", **kw)


def test_kernel_matrix_rescales_images_outside_the_float32_window(fake_gpu, monkeypatch):
    """2^40 and 2^-30 times ordinary images: the float32 GPU kernel would overflow / flush; the
    driver scales them into the window exactly, so the values are the scaled ones."""
    x = make_images(3, (6, 6, 3), seed=8)
    kw = dict(depth=4, readout="gap", dtype="float32")
    base = _gpu_kernel_matrix(monkeypatch, x, **kw)
    np.testing.assert_allclose(base, reference_matrix(x, x, 4, "gap", False, False, "ntk"), rtol=1e-5)
    for k in (40, 30, -30):
        np.testing.assert_array_equal(_gpu_kernel_matrix(monkeypatch, x * 2.0**k, **kw), base * 4.0**k)
    eng = fake_gpu(4, "gap", False, "ntk", "float32", (6, 6, 3))
    with pytest.raises(ValueError, match="kernel_matrix scales them"):
        eng.prepare(x * 2.0**30)  # the engine alone refuses what it would compute wrong
    eng.prepare(x * 2.0**26)


def test_float32_gpu_refuses_variances_that_flush_to_zero(fake_gpu, monkeypatch):
    """A 1x1 image's variance shrinks 9x per layer: at depth 21 below 2^-39, where flush-to-zero
    drops entries. float32 on the GPU says so; float64 computes it."""
    x = make_images(2, (1, 1, 3), seed=9)
    with pytest.raises(FloatingPointError, match="flush-to-zero"):
        _gpu_kernel_matrix(monkeypatch, x, depth=21, readout="vanilla", dtype="float32")
    got = _gpu_kernel_matrix(monkeypatch, x, depth=21, readout="vanilla", dtype="float64")
    np.testing.assert_allclose(got, reference_matrix(x, x, 21, "vanilla", False, False, "ntk"), rtol=1e-12)
    ok = make_images(2, (6, 6, 3), seed=9)
    _gpu_kernel_matrix(monkeypatch, ok, depth=21, readout="vanilla", dtype="float32")
