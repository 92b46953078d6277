"""GPU engine: CPU-checkable parts (shift blocks, NumPy statement of a thread block, OOM retry, quiet import) and,
marked ``gpu``, the CuPy paths against the float64 references (skipped without a usable GPU). The
engine's Python side on a fake CuPy with the kernels built for the host: ``test_gpu_fake_cupy.py``."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import make_images, raises_param, rel_err
from gpu_emulator import emulate_matrix, lap_axis_counts

import cntk_core
from cntk_core import Architecture
from cntk_core.backend import gpu_status
from cntk_core.gpu import FusedGPUEngine, readout_scale, run_batched, shift_block_list
from cntk_core.testing import lap_readout, reference_arch_matrix, reference_matrix

# ---------------------------------------------------------------------------------------------
# CPU: no GPU needed
# ---------------------------------------------------------------------------------------------


def test_import_without_cuda_is_quiet():
    code = "import cntk_core, cntk_core.gpu; import sys; assert 'cupy' not in sys.modules"
    res = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


def test_kernel_source_is_package_data():
    from pathlib import Path

    from cntk_core.gpu import kernel_source

    src = kernel_source()
    cuda = Path(cntk_core.__file__).parent / "cuda"
    assert src == (cuda / "cntk_planes.cu").read_text() + "\n" + (cuda / "cntk_stages.cu").read_text()
    assert "cntk_shift_blocks" in src and "cntk_reduce" in src and "cntk_stage_blocks" in src


@pytest.mark.parametrize("p,q", [(5, 7), (4, 4), (1, 3)])
def test_shift_blocks_partition_all_entries(p, q):
    """Shift block (gi, gj) = entries [(r+gi)%P, (c+gj)%Q, r, c]: every [i, j, i', j'] exactly once."""
    seen = np.zeros((p, q, p, q), int)
    r, c = np.meshgrid(np.arange(p), np.arange(q), indexing="ij")
    for gi, gj in shift_block_list(p, q, "gap"):
        seen[(r + gi) % p, (c + gj) % q, r, c] += 1
    assert (seen == 1).all()
    assert shift_block_list(p, q, "vanilla").tolist() == [[0, 0]]
    assert shift_block_list(p, q, "gap")[0].tolist() == [0, 0]  # the variance pass uses the first one


@pytest.mark.parametrize("p,q,c", [(5, 7, 0), (5, 7, 1), (9, 6, 2), (13, 4, 3), (4, 4, 1), (3, 8, 9)])
def test_lap_shift_blocks_are_exactly_those_with_weight(p, q, c):
    """LAP visits the shift blocks holding an entry of nonzero weight (by the literal count), and no
    other: min(P, 4c+1) * min(Q, 4c+1) of them, (0, 0) first."""
    wp, wq = lap_axis_counts(p, c), lap_axis_counts(q, c)
    r, col = np.meshgrid(np.arange(p), np.arange(q), indexing="ij")
    needed = {(gi, gj) for gi in range(p) for gj in range(q) if (wp[(r + gi) % p, r] * wq[(col + gj) % q, col]).any()}
    blocks = shift_block_list(p, q, "lap", c)
    assert {tuple(b) for b in blocks.tolist()} == needed and len(blocks) == len(needed)
    assert len(blocks) == min(p, 4 * c + 1) * min(q, 4 * c + 1)
    assert blocks[0].tolist() == [0, 0] and blocks.dtype == np.int32
    assert readout_scale(p, q, "lap", c) == (2 * c + 1) ** -4.0
    if c == 0:
        assert blocks.tolist() == [[0, 0]]


@pytest.mark.parametrize("p,q,c", [(4, 5, 0), (4, 5, 1), (6, 3, 2), (3, 4, 5)])
def test_lap_weights_of_the_emulator_are_the_oracles(p, q, c):
    """The separable integer weights n_P x n_Q / (2c+1)^4 give the oracle's LAP of any tensor."""
    t = np.random.default_rng(p * q + c).standard_normal((p, q, p, q))
    w = np.einsum("ik,jl->ijkl", lap_axis_counts(p, c), lap_axis_counts(q, c))
    np.testing.assert_allclose((w * t).sum() / (2 * c + 1) ** 4, lap_readout(t, c), rtol=1e-12)


def test_lap_needs_a_window():
    for bad in (None, -1, 1.5, True):
        with raises_param("lap_c"):
            shift_block_list(5, 5, "lap", bad)


@pytest.mark.parametrize(
    "arch,fused",
    [
        (Architecture(5, "gap"), True),
        (Architecture(5, "vanilla", True, True), True),
        (Architecture(5, "lap", lap_c=2), True),
        (Architecture(5, "lap", lap_c=2, flip=True), True),  # the Gram driver applies flip
        (Architecture(5, "gap", flip=True), True),
        (cntk_core.myrtle(5), False),
        (Architecture(5, "gap", pools=(2,)), False),
        (Architecture(5, "gap", padding="circular"), False),
        (Architecture(5, "lap", lap_c=1, padding="circular"), False),
    ],
)
def test_fused_gpu_engine_supports(arch, fused):
    assert FusedGPUEngine.supports(arch) is fused
    assert FusedGPUEngine.supports(arch.network().canonical()) is fused
    assert FusedGPUEngine.supports(None) is False


@pytest.mark.parametrize(
    "shape,depth,readout,fix,kind,c",
    [
        ((5, 7, 2), 4, "gap", True, "ntk", None),
        ((6, 4, 3), 3, "gap", False, "nngp", None),
        ((9, 13, 3), 6, "vanilla", False, "ntk", None),
        ((5, 7, 2), 4, "lap", True, "ntk", 1),
        ((6, 4, 3), 3, "lap", False, "nngp", 2),
        ((7, 6, 2), 3, "lap", False, "ntk", 0),
        ((4, 5, 1), 3, "lap", True, "ntk", 5),
    ],
)
def test_numpy_block_statement_matches_reference(shape, depth, readout, fix, kind, c):
    z = make_images(3, shape, seed=depth)
    x1, x2 = z[:2], z[1:]  # one image in both
    spec = Architecture(depth, readout, fix, fix, lap_c=c)
    got = emulate_matrix(x1, x2, spec, kind)
    ref = reference_matrix(x1, x2, depth, readout, fix, fix, kind, lap_c=c)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())


TOL = {"float32": 1e-4, "float64": 1e-7}


class FakeOOM(Exception):
    pass


def test_run_batched_halves_on_oom_and_keeps_finished_work():
    calls = []
    failures = {"left": 2}

    def fn(lo, hi):
        if hi - lo > 3 and failures["left"]:
            failures["left"] -= 1
            raise FakeOOM
        calls.append((lo, hi))

    freed = []
    batch = run_batched(20, 16, fn, (FakeOOM,), lambda: freed.append(1))
    assert batch == 4 and len(freed) == 2
    covered = sorted(i for lo, hi in calls for i in range(lo, hi))
    assert covered == list(range(20))  # every item exactly once, none redone


def test_run_batched_reraises_when_one_item_does_not_fit():
    def fn(lo, hi):
        raise FakeOOM

    with pytest.raises(FakeOOM):
        run_batched(5, 4, fn, (FakeOOM,))


# ---------------------------------------------------------------------------------------------
# GPU: CuPy paths against float64 references
# ---------------------------------------------------------------------------------------------

_GPU_OK, _GPU_WHY = gpu_status()
needs_gpu = pytest.mark.skipif(not _GPU_OK, reason=f"no usable GPU: {_GPU_WHY}")


def _per_layer(x1, x2, arch, kind, dtype):
    import cupy

    from cntk_core.engines import PerLayerEngine

    eng = PerLayerEngine(arch.network(), x1.shape[1:], kind, np.dtype(dtype), xp=cupy)
    s1, s2 = eng.prepare(x1), eng.prepare(x2)
    rows, cols = np.meshgrid(np.arange(len(x1)), np.arange(len(x2)), indexing="ij")
    return eng.pairs(s1, s2, rows.ravel(), cols.ravel()).reshape(len(x1), len(x2))


SMALL = [
    ((8, 8, 3), 2, "gap", True, "ntk", None),
    ((9, 13, 3), 3, "gap", False, "ntk", None),
    ((8, 8, 3), 5, "gap", True, "nngp", None),
    ((9, 13, 2), 21, "vanilla", False, "ntk", None),
    ((11, 8, 3), 11, "vanilla", True, "nngp", None),
    ((9, 13, 3), 4, "lap", False, "ntk", 1),
    ((8, 8, 3), 5, "lap", True, "nngp", 2),
    ((7, 5, 2), 3, "lap", True, "ntk", 0),
    ((5, 6, 3), 4, "lap", False, "ntk", 7),
]


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape,depth,readout,fix,kind,c", SMALL)
def test_gpu_paths_match_reference(shape, depth, readout, fix, kind, c, dtype):
    z = make_images(5, shape, seed=depth + shape[1])
    x1, x2 = z[:3], np.concatenate([z[:1], z[3:]])
    ref = reference_matrix(x1, x2, depth, readout, fix, fix, kind, lap_c=c)
    kw = dict(depth=depth, readout=readout, fix=fix, kind=kind, dtype=dtype, lap_c=c)
    fused = cntk_core.kernel_matrix(x1, x2, backend="cupy", **kw)
    assert rel_err(fused, ref, floor=1) <= TOL[dtype]
    layered = _per_layer(x1, x2, Architecture(depth, readout, fix, fix, lap_c=c), kind, dtype)
    assert rel_err(layered, ref, floor=1) <= TOL[dtype]


#: networks of the new dispatch on CuPy: flip on the fused engine, pooling on the staged engine
#: (cntk_core.gpu_stages), circular padding on the per-layer path with CuPy arrays
DISPATCH = [
    ((6, 7, 3), Architecture(3, "lap", True, True, lap_c=1, flip=True), "ntk"),
    ((6, 6, 2), Architecture(4, "gap", flip=True), "nngp"),
    ((8, 8, 2), cntk_core.myrtle(5), "ntk"),
    ((8, 6, 2), cntk_core.myrtle(5, flip=True), "nngp"),
    ((5, 6, 2), Architecture(3, "gap", padding="circular"), "ntk"),
    ((5, 7, 2), Architecture(3, "lap", lap_c=1, padding="circular"), "ntk"),
]


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape,arch,kind", DISPATCH)
def test_gpu_network_kernel_dispatch_matches_reference(shape, arch, kind, dtype):
    z = make_images(5, shape, seed=shape[0] * shape[1])
    x1, x2 = z[:3], np.concatenate([z[:1], z[3:]])
    ref = reference_arch_matrix(x1, x2, arch, kind)
    got = cntk_core.network_kernel(arch, x1, x2, kind=kind, dtype=dtype, backend="cupy")
    assert rel_err(got, ref, floor=1) <= TOL[dtype]
    gram = cntk_core.network_kernel(arch, z, kind=kind, dtype=dtype, backend="cupy")
    assert rel_err(gram, reference_arch_matrix(z, z, arch, kind), floor=1) <= TOL[dtype]
    np.testing.assert_array_equal(gram, gram.T)


GRAM_CASES = [
    ((32, 32, 3), 21, "gap", True, None),
    ((9, 13, 3), 11, "vanilla", False, None),
    ((16, 16, 3), 3, "gap", False, None),
    ((32, 32, 3), 11, "lap", True, 4),
    ((16, 16, 3), 5, "lap", False, 2),
]


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape,depth,readout,fix,c", GRAM_CASES)
def test_gpu_symmetric_gram_matches_numba(shape, depth, readout, fix, c, dtype):
    x = make_images(3, shape, seed=3)
    kw = dict(depth=depth, readout=readout, fix=fix, lap_c=c)
    ref = cntk_core.kernel_matrix(x, backend="numba", **kw)
    got = cntk_core.kernel_matrix(x, dtype=dtype, backend="cupy", **kw)
    assert rel_err(got, ref, floor=1) <= TOL[dtype]
    np.testing.assert_array_equal(got, got.T)


@pytest.mark.gpu
@needs_gpu
def test_gpu_vanilla_float32_self_kernel():
    x = make_images(4, (32, 32, 3), seed=4)
    got = cntk_core.kernel_matrix(x, depth=21, readout="vanilla", dtype="float32", backend="cupy")
    ref = np.diag(cntk_core.kernel_matrix(x, depth=21, readout="vanilla", backend="numba"))
    assert np.max(np.abs(np.diag(got) - ref) / ref) <= 1e-6


def _engine(readout="gap", depth=4, shape=(8, 8, 3), **kw):
    from cntk_core.gpu import FusedGPUEngine

    spec = cntk_core.cntk(depth, readout, True).canonical()
    return FusedGPUEngine(spec, shape, "ntk", np.dtype("float32"), **kw)


@pytest.mark.gpu
@needs_gpu
def test_gpu_values_independent_of_launch_size():
    x = make_images(5, (8, 8, 3), seed=6)
    rows, cols = np.triu_indices(5)
    a = _engine(max_pairs=1)
    b = _engine()
    sa, sb = a.prepare(x), b.prepare(x)
    np.testing.assert_array_equal(a.pairs(sa, sa, rows, cols), b.pairs(sb, sb, rows, cols))


@pytest.mark.gpu
@needs_gpu
def test_gpu_oom_halves_batch_and_retries(monkeypatch):
    import cupy

    x = make_images(6, (8, 8, 3), seed=7)
    rows, cols = np.triu_indices(6)
    eng = _engine(max_pairs=64)
    state = eng.prepare(x)
    want = eng.pairs(state, state, rows, cols)
    real = eng._launch
    raised = []

    def flaky(*args, **kw):
        if not raised:
            raised.append(1)
            raise cupy.cuda.memory.OutOfMemoryError(1 << 40, 0)
        return real(*args, **kw)

    monkeypatch.setattr(eng, "_launch", flaky)
    got = eng.pairs(state, state, rows, cols)
    assert raised and eng.max_pairs == len(rows) // 2
    np.testing.assert_array_equal(got, want)
