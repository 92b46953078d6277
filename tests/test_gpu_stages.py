"""StagedGPUEngine (pooled networks on the GPU, ``cntk_core/gpu_stages.py``) without a GPU: its Python
side on the fake CuPy of ``test_gpu_fake_cupy.py``, whose kernels are ``cntk_planes.cu`` and
``cntk_stages.cu`` built for the host (each thread block's threads emulated between barriers, in the
order the test picks, on NaN-poisoned shared memory), against the 4-D reference of
:mod:`cntk_core.testing` (average pooling written out) and the CPU's StagedEngine."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_images
from cuda_host import FORWARD, REVERSE, SHUFFLED
from test_gpu_fake_cupy import _FakeState, _matrix, fake_gpu, host_lib  # noqa: F401  (fixtures: the fake CuPy)

import cntk_core
from cntk_core import Architecture, ParameterError
from cntk_core.gpu_stages import StagedGPUEngine, radius_groups, slot_table, stage_block_lists
from cntk_core.testing import reference_arch_matrix

TOL = {"float32": 1e-4, "float64": 1e-7}
pytestmark = pytest.mark.usefixtures("fake_gpu")  # every test here on the fake CuPy


def _engine(arch, shape, kind, dtype, order=FORWARD, **kw):
    eng = StagedGPUEngine(arch, shape, kind, np.dtype(dtype), **kw)
    for k in (eng._stage_kernel, eng._reduce_kernel):
        k.order = order
    return eng


@pytest.mark.parametrize(
    "shape,arch,kind,dtype,order",
    [
        ((8, 8, 2), Architecture(4, "gap", pools=(1, 2)), "ntk", "float64", SHUFFLED),
        ((8, 6, 3), Architecture(4, "gap", True, True, pools=(2,)), "ntk", "float32", REVERSE),
        ((9, 7, 2), Architecture(4, "vanilla", pools=(1, 3)), "ntk", "float64", FORWARD),
        ((8, 8, 1), Architecture(3, "vanilla", pools=(1, 2)), "nngp", "float64", SHUFFLED),
        ((10, 8, 2), Architecture(4, "lap", lap_c=1, pools=(2,)), "ntk", "float64", REVERSE),
        ((8, 8, 2), Architecture(3, "lap", True, False, lap_c=0, pools=(1,)), "ntk", "float32", FORWARD),
        ((8, 8, 2), cntk_core.myrtle(5), "nngp", "float64", SHUFFLED),
        ((8, 8, 2), Architecture(3, "gap", pools=(1, 2)), "ntk", "float64", FORWARD),  # pooling after the last conv
        ((8, 8, 2), Architecture(3, "vanilla", True, True, pools=(1, 2)), "ntk", "float64", SHUFFLED),  # and fixed
        ((12, 12, 1), Architecture(3, "lap", lap_c=1, pools=(1, 2)), "nngp", "float64", REVERSE),  # and LAP
        # odd 13x13 and LAP: the outermost stored blocks' wrapped parts read beyond the radius (NaN
        # there), entries the LAP readout weighs 0 and skips
        ((13, 13, 1), Architecture(3, "lap", lap_c=1, pools=(1,)), "ntk", "float64", SHUFFLED),
        ((11, 13, 2), Architecture(4, "lap", True, True, lap_c=1, pools=(2,)), "ntk", "float32", FORWARD),
    ],
)
def test_staged_gpu_engine_against_the_4d_reference(shape, arch, kind, dtype, order):
    z = make_images(4, shape, seed=7)
    x1, x2 = z[:3], z[2:]  # one image on both sides
    eng = _engine(arch, shape, kind, dtype, order, max_pairs=2)
    got = _matrix(eng, x1, x2)
    ref = reference_arch_matrix(x1, x2, arch, kind)
    np.testing.assert_allclose(got, ref, rtol=TOL[dtype], atol=TOL[dtype] * np.abs(ref).max())


def test_staged_gpu_engine_equals_the_cpu_staged_engine_at_16x16():
    """Myrtle-5 (three stages: 16, 8, 4, then GAP) and a LAP net, NTK, against the CPU's fused
    StagedEngine (itself tested against the 4-D reference)."""
    from cntk_core.cpu_stages import StagedEngine

    x = make_images(3, (16, 16, 3), seed=3)
    rows, cols = np.triu_indices(3)
    for arch in (cntk_core.myrtle(5), Architecture(4, "lap", lap_c=1, pools=(1,))):
        cpu = StagedEngine(arch, (16, 16, 3), "ntk", np.float64)
        sc = cpu.prepare(x)
        want = cpu.pairs(sc, sc, rows, cols)
        eng = _engine(arch, (16, 16, 3), "ntk", "float64", SHUFFLED)
        sg = eng.prepare(x)
        np.testing.assert_allclose(eng.pairs(sg, sg, rows, cols), want, rtol=1e-12)


def test_launches_visit_only_the_blocks_the_readout_reaches():
    """Vanilla, 8x8 -> 4x4 -> 2x2 (pools after convs 1 and 2): the readout needs shift block (0, 0) of
    the last stage, radius 1 of the 4x4 stage (groups 0, 1, 3: 9 blocks) and radius 3 of the 8x8 one
    (groups 0-3, 5-7: 49 blocks), counted here by hand; GAP runs every block (64, 16, 4). prepare
    records each stage's block (0, 0), then the rest of the same lists as plain self pairs."""
    x = make_images(3, (8, 8, 2), seed=5)
    name = "cntk_stage_blocks<double>"
    for readout, blocks in (("vanilla", [49, 9, 1]), ("gap", [64, 16, 4])):
        eng = _engine(Architecture(4, readout, pools=(1, 2)), (8, 8, 2), "ntk", "float64")
        _FakeState.launches.clear()
        state = eng.prepare(x)
        assert [(n, g) for _, n, _, g in _FakeState.launches] == [
            (name, 3), (name, 3 * 48), (name, 3), (name, 3 * 8), (name, 3), ("cntk_reduce", 1)
        ]  # fmt: skip
        _FakeState.launches.clear()
        rows, cols = np.triu_indices(3)
        eng.pairs(state, state, rows, cols)
        assert [(n, g) for _, n, _, g in _FakeState.launches] == [(name, 6 * b) for b in blocks] + [("cntk_reduce", 1)]
        smem = [s for _, n, s, _ in _FakeState.launches if n == name]
        assert smem == [eng.threads[s] * 8 + 4 * pq * 8 for s, pq in enumerate((64, 16, 4))]


def test_a_block_missing_from_the_stored_tensor_gives_nan_not_a_number():
    """The gather reads a block that a wrong list left out as NaN, so a bug in the block lists cannot
    pass as a plausible kernel value."""
    x = make_images(2, (8, 8, 2), seed=6)
    eng = _engine(Architecture(3, "vanilla", pools=(1,)), (8, 8, 2), "ntk", "float64")
    state = eng.prepare(x)
    good = eng.pairs(state, state, [0, 0], [0, 1])
    assert np.isfinite(good).all()
    eng.pair_blocks[0] = eng.pair_blocks[0][:-1]  # radius 1 on 8x8 less one block
    eng._dev.clear()
    assert np.isnan(eng.pairs(state, state, [0, 0], [0, 1])).all()


def test_network_kernel_on_cupy_runs_pooled_nets_on_the_staged_engine(monkeypatch):
    """network_kernel(myrtle(5), backend="cupy") through the Gram driver (tiles, symmetric Gram, flip
    as two evaluations) launches the stage kernel, not the per-layer path, and matches the oracle."""
    import cntk_core.gram as gram

    monkeypatch.setattr(gram, "resolve_backend", lambda backend=None: "cupy")
    x = make_images(4, (8, 8, 2), seed=11)
    for arch, kind, dtype in ((cntk_core.myrtle(5), "ntk", "float64"), (cntk_core.myrtle(5, flip=True), "nngp",
                                                                         "float32")):  # fmt: skip
        _FakeState.launches.clear()
        got = cntk_core.network_kernel(arch, x, kind=kind, dtype=dtype, backend="cupy")
        ct = "double" if dtype == "float64" else "float"
        assert {n for _, n, _, _ in _FakeState.launches} == {f"cntk_stage_blocks<{ct}>", "cntk_reduce"}
        ref = reference_arch_matrix(x, x, arch, kind)
        np.testing.assert_allclose(got, ref, rtol=TOL[dtype], atol=TOL[dtype] * np.abs(ref).max())
        np.testing.assert_array_equal(got, got.T)


def test_threads_per_stage_and_their_override():
    x = make_images(2, (8, 8, 2), seed=4)
    arch = Architecture(4, "gap", pools=(1, 2))
    default = _engine(arch, (8, 8, 2), "ntk", "float64")
    assert default.threads == [64, 32, 32]  # threads_for(8, 8), (4, 4), (2, 2)
    forced = _engine(arch, (8, 8, 2), "ntk", "float64", REVERSE, threads=128)
    assert forced.threads == [128, 128, 128]
    np.testing.assert_allclose(_matrix(forced, x, x), _matrix(default, x, x), rtol=1e-13)
    with pytest.raises(ValueError, match="power of two"):
        _engine(arch, (8, 8, 2), "ntk", "float64", threads=48)


def test_refusals():
    with pytest.raises(ParameterError) as err:
        StagedGPUEngine(Architecture(3, "gap", pools=(1,), padding="circular"), (8, 8, 2), "ntk", np.float64)
    assert err.value.param == "pools"
    assert not StagedGPUEngine.supports(Architecture(3, "gap")) and not StagedGPUEngine.supports(None)
    assert StagedGPUEngine.supports(cntk_core.myrtle(7, flip=True))
    with pytest.raises(ParameterError) as err:  # a pooling of a 1-pixel map
        StagedGPUEngine(Architecture(3, "gap", pools=(1, 2)), (2, 2, 1), "ntk", np.float64)
    assert err.value.param == "pools"
    eng = _engine(cntk_core.myrtle(5), (8, 8, 2), "ntk", "float32")
    with pytest.raises(ValueError, match="expected images of shape"):
        eng.prepare(np.zeros((1, 8, 7, 2)))
    with pytest.raises(ValueError, match="kernel_matrix scales them"):
        eng.prepare(make_images(1, (8, 8, 2), seed=1) * 2.0**30)


def test_block_lists_and_slots():
    geo = np.array([[8, 6, 0, 1], [4, 3, 1, 2]])
    lists = stage_block_lists(geo, 0)
    assert lists[1].tolist() == [[0, 0]]
    assert lists[0].tolist() == [[gi, gj] for gi in (0, 1, 7) for gj in (0, 1, 5)]
    assert radius_groups(5, 9).tolist() == [0, 1, 2, 3, 4]
    table = slot_table(lists[0], 8, 6)
    assert table[7 * 6 + 5] == 8 and table[1 * 6 + 0] == 3 and (table >= 0).sum() == 9


#: mutations of cntk_stages.cu that the tests above must see: the barrier after a block's input
#: dropped (layer 1 reads neighbours before other threads gathered them), the gather reading the
#: first image's row parity for the second's, and Theta not stored between stages
STAGE_MUTATIONS = {
    "missing-input-barrier": ("    CNTK_SYNC();\n    T* va = v1", "    T* va = v1"),
    "wrong-gather-row": ("const int at = (2 * r + a2) * Qp", "const int at = (2 * r + a) * Qp"),
    "theta-not-stored": ("if (next_mode == 2) out[", "if (next_mode == 3) out["),
}


@pytest.mark.parametrize("name", sorted(STAGE_MUTATIONS))
def test_broken_stage_kernels_fail_these_tests(monkeypatch, tmp_path, name):
    from cuda_host import STAGES, build_host_lib
    from test_gpu_fake_cupy import _FakeModule

    import cntk_core.gpu as gpu

    old, new = STAGE_MUTATIONS[name]
    text = STAGES.read_text()
    assert old in text, f"mutation {name} no longer applies: {old!r}"
    path = tmp_path / f"{name}.cu"
    path.write_text(text.replace(old, new))
    bad = build_host_lib(stages=path)
    arch, shape = Architecture(4, "gap", pools=(1, 2)), (8, 8, 2)
    x = make_images(3, shape, seed=12)
    ref = reference_arch_matrix(x, x, arch, "ntk")
    wrong = 0
    for order in (FORWARD, REVERSE, SHUFFLED):
        monkeypatch.setattr(gpu, "_module", lambda order=order: _FakeModule(bad, order))
        try:
            with np.errstate(invalid="ignore"):
                got = _matrix(_engine(arch, shape, "ntk", "float64", order), x, x)
        except RuntimeError as err:  # prepare's check of the variance maps caught it
            assert "variance maps with NaN" in str(err)
            wrong += 1
            continue
        wrong += not np.allclose(got, ref, rtol=1e-4)
    assert wrong > 0


def test_shared_memory_beyond_48_kb_and_a_second_device():
    """float64 at 48x48: stage 0's thread blocks need 4 * 2304 * 8 + 256 * 8 = 75,776 bytes, so the
    kernel's limit is raised on the device that launches (the fake refuses a launch over its
    kernel's limit); on device 1 as well, where the images live. Against the CPU's StagedEngine."""
    from test_gpu_fake_cupy import _FakeCupy

    from cntk_core.cpu_stages import StagedEngine

    arch, shape = Architecture(3, "vanilla", pools=(1,)), (48, 48, 1)
    x = make_images(2, shape, seed=13)
    cpu = StagedEngine(arch, shape, "nngp", np.float64)
    sc = cpu.prepare(x)
    want = cpu.pairs(sc, sc, [0, 0], [0, 1])
    with _FakeCupy.cuda.Device(1):
        eng = _engine(arch, shape, "nngp", "float64")
        assert max(eng.smem) == 75776
        state = eng.prepare(x)
    _FakeState.launches.clear()
    np.testing.assert_allclose(eng.pairs(state, state, [0, 0], [0, 1]), want, rtol=1e-12)
    assert {dev for dev, *_ in _FakeState.launches} == {1}
    assert _FakeState.func_smem[(1, "cntk_stage_blocks<double>")] == 75776


def test_a_variance_map_block_left_out_is_an_error():
    """prepare checks the maps: a map block list one block short (a bug) raises instead of feeding
    NaN variances, which the ReLU rule would turn into plausible zeros."""
    eng = _engine(Architecture(3, "gap", pools=(1,)), (8, 8, 2), "ntk", "float64")
    eng.map_blocks[0] = eng.map_blocks[0][:-1]
    eng._dev.clear()
    with pytest.raises(RuntimeError, match="variance maps with NaN"):
        eng.prepare(make_images(2, (8, 8, 2), seed=14))
