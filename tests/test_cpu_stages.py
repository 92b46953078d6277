"""The staged CPU engine for pooled networks (cntk_core.cpu_stages, Myrtle-style ``pools``) against the
independent 4-D reference (cntk_core.testing, full tensors and a literal 2x2 mean of 16 entries) and
against the per-layer NumPy path (``AvgPool`` layers on full tensors): odd and even sizes, pools in
several places (after the last conv too), GAP / vanilla / LAP, NTK and NNGP, every fix, float64 and
float32, symmetric Grams (self pairs from half the shift blocks) and cross Grams."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import make_images, raises_param, rel_err

from cntk_core import Architecture, network_kernel
from cntk_core.cpu_stages import StagedEngine, block_lists, needed_blocks, stage_geometry
from cntk_core.engines import PerLayerEngine
from cntk_core.gram import _fill
from cntk_core.testing import reference_arch_matrix

FIXES = [(False, False), (True, True), (True, False), (False, True)]

# (image shape, network): sizes even and odd, pools early, late and after the last conv; 2-4 stages
CASES = [
    ((8, 8, 3), dict(depth=3, readout="gap", pools=(1,))),
    ((8, 8, 3), dict(depth=4, readout="gap", pools=(2, 3))),
    ((6, 10, 2), dict(depth=4, readout="vanilla", pools=(1, 3))),
    ((7, 9, 1), dict(depth=5, readout="gap", pools=(1, 2))),  # 7x9 -> 3x4 -> 1x2, trailing rows dropped
    ((12, 12, 3), dict(depth=5, readout="gap", pools=(2, 3))),  # Myrtle-5's shape, 12 -> 6 -> 3
    ((12, 12, 3), dict(depth=5, readout="vanilla", pools=(2, 4))),  # pool after the last conv
    ((6, 10, 2), dict(depth=3, readout="lap", lap_c=1, pools=(2,))),
    ((12, 12, 3), dict(depth=4, readout="lap", lap_c=1, pools=(1, 2))),
    ((7, 9, 1), dict(depth=3, readout="vanilla", pools=(1, 2))),
    ((9, 7, 2), dict(depth=4, readout="lap", lap_c=0, pools=(3,))),
    ((8, 8, 3), dict(depth=2, readout="gap", pools=(1,))),
    ((12, 12, 3), dict(depth=4, readout="gap", pools=(1, 2, 3))),  # 12 -> 6 -> 3 -> 1
]


def staged_gram(spec, x1, x2, kind, dtype=np.float64):
    """The engine's Gram through the driver's tiles (x2=None: symmetric, self pairs on half blocks)."""
    engine = StagedEngine(spec, x1.shape[1:], kind, np.dtype(dtype))
    out = np.empty((len(x1), len(x1 if x2 is None else x2)))
    _fill(engine, x1, x1 if x2 is None else x2, x2 is None, [out], False, None, None)
    return out


def _seed(*parts) -> list[int]:
    return [int(v) for v in np.frombuffer(repr(parts).encode(), np.uint8)]


@pytest.mark.parametrize("shape,net", CASES)
def test_staged_engine_equals_reference(shape, net):
    x = make_images(5, shape, seed=_seed(shape, net))
    x1, x2 = x[:3], x[3:]
    for (fix_first, fix_last), kind in itertools.product(FIXES, ["ntk", "nngp"]):
        if kind == "nngp" and (fix_first or fix_last) and (fix_first, fix_last) != (True, True):
            continue  # NNGP does not depend on fix: one fixed variant is enough
        spec = Architecture(fix_first=fix_first, fix_last=fix_last, **net)
        if kind == "ntk" and spec.depth == 2 and fix_first and fix_last:
            continue  # no trained layer: test_untrained_ntk_is_zero
        sym = staged_gram(spec, x1, None, kind)
        assert rel_err(sym, reference_arch_matrix(x1, x1, spec, kind)) <= 1e-7, (spec, kind)
        assert np.array_equal(sym, sym.T)
        cross = staged_gram(spec, x1, x2, kind)
        assert rel_err(cross, reference_arch_matrix(x1, x2, spec, kind)) <= 1e-7, (spec, kind)


@pytest.mark.parametrize("shape,net", CASES[::3])
@pytest.mark.parametrize("kind", ["ntk", "nngp"])
def test_staged_engine_equals_per_layer_path(shape, net, kind):
    """The per-layer path: the layer list with AvgPool(2) on full (B, P, Q, P, Q) tensors in NumPy."""
    x = make_images(4, shape, seed=_seed("per-layer", shape, net, kind))
    spec = Architecture(fix_first=True, **net)
    ref = network_kernel(spec, x, kind=kind, backend="numpy")
    assert rel_err(staged_gram(spec, x, None, kind), ref) <= 1e-7


@pytest.mark.parametrize("shape,net", CASES[1::3])
@pytest.mark.parametrize("kind", ["ntk", "nngp"])
def test_staged_engine_float32(shape, net, kind):
    x = make_images(5, shape, seed=_seed("f32", shape, net, kind))
    spec = Architecture(fix_last=True, **net)
    assert (
        rel_err(staged_gram(spec, x[:3], None, kind, np.float32), reference_arch_matrix(x[:3], x[:3], spec, kind))
        <= 1e-4
    )
    assert (
        rel_err(staged_gram(spec, x[:3], x[3:], kind, np.float32), reference_arch_matrix(x[:3], x[3:], spec, kind))
        <= 1e-4
    )


def test_myrtle_shapes_on_small_images():
    """Myrtle-5 / -7 / -10 (the presets' pools) on 8x8 images: 8 -> 4 -> 2, then GAP."""
    x = make_images(3, (8, 8, 3), seed=_seed("myrtle"))
    for depth, pools in [(5, (2, 3)), (7, (2, 4)), (10, (3, 6))]:
        spec = Architecture(depth, "gap", pools=pools)
        for kind in ["ntk", "nngp"]:
            assert rel_err(staged_gram(spec, x, None, kind), reference_arch_matrix(x, x, spec, kind)) <= 1e-7


def test_self_pairs_from_half_the_blocks_equal_full_pairs():
    """A symmetric Gram's diagonal sums half the blocks (each also scattered as its transpose);
    the same images as a cross Gram take every block."""
    x = make_images(3, (10, 8, 2), seed=_seed("halves"))
    for spec, kind in [(Architecture(5, "gap", pools=(1, 3)), "ntk"), (Architecture(4, "vanilla", pools=(2,)), "nngp")]:
        sym, cross = staged_gram(spec, x, None, kind), staged_gram(spec, x, x.copy(), kind)
        assert rel_err(sym, cross) <= 1e-13


def test_pair_values_do_not_depend_on_the_batch():
    x = make_images(4, (8, 8, 3), seed=_seed("batch"))
    engine = StagedEngine(Architecture(4, "gap", pools=(1, 2)), x.shape[1:], "ntk", np.float64)
    s1, s2 = engine.prepare(x[:2]), engine.prepare(x[2:])
    rows, cols = np.array([0, 1, 1, 0]), np.array([1, 0, 1, 0])
    together = engine.pairs(s1, s2, rows, cols)
    alone = np.concatenate([engine.pairs(s1, s2, rows[i : i + 1], cols[i : i + 1]) for i in range(4)])
    assert together.shape == (4,) and together.dtype == np.float64
    assert np.array_equal(together, alone)


def test_variance_maps_are_the_self_pairs_diagonals():
    """prepare's maps hold 1/sqrt(v) of every layer's input variances v; the per-layer path's
    prepare holds v itself (diagonals of full self-pair tensors, pooled where a pool comes)."""
    x = make_images(3, (10, 7, 2), seed=_seed("maps"))
    spec = Architecture(6, "gap", pools=(1, 3))  # 10x7 -> 5x3 -> 2x1
    engine = StagedEngine(spec, x.shape[1:], "nngp", np.float64)
    _, maps = engine.prepare(x)
    _, variances = PerLayerEngine(spec.network(), x.shape[1:], "nngp", np.float64).prepare(x)
    for h, v in enumerate(variances):
        n = v[0].size
        inv = maps[:, 1, engine.moff[h] : engine.moff[h] + n]
        np.testing.assert_allclose(inv, 1 / np.sqrt(v.reshape(len(x), n)), rtol=1e-12)
        np.testing.assert_array_equal(maps[:, 1, engine.moff[h] + n : engine.moff[h] + 2 * n], inv)


def test_untrained_ntk_is_zero():
    x = make_images(3, (8, 8, 3), seed=_seed("zero"))
    spec = Architecture(2, "gap", fix_first=True, fix_last=True, pools=(1,))
    assert np.array_equal(staged_gram(spec, x, None, "ntk"), np.zeros((3, 3)))
    assert np.abs(reference_arch_matrix(x, x, spec, "ntk")).max() == 0.0


def test_zero_images_give_finite_zeros():
    """Variance 0 everywhere: rho is taken as 0 and K = 0, in every stage."""
    x = np.zeros((2, 8, 8, 3))
    spec = Architecture(4, "gap", pools=(1, 2))
    for kind in ["ntk", "nngp"]:
        got = staged_gram(spec, x, None, kind)
        assert np.array_equal(got, reference_arch_matrix(x, x, spec, kind))


def test_supports():
    assert StagedEngine.supports(Architecture(5, "gap", pools=(2, 3)))
    assert StagedEngine.supports(Architecture(4, "vanilla", pools=(3,)))
    assert StagedEngine.supports(Architecture(4, "lap", lap_c=2, pools=(1,)))
    assert not StagedEngine.supports(Architecture(5, "gap"))
    assert not StagedEngine.supports(Architecture(5, "gap", padding="circular", pools=(2, 3)))
    with raises_param("pools"):
        StagedEngine(Architecture(5, "gap"), (8, 8, 3), "ntk", np.float64)


def test_too_small_images_name_pools():
    with raises_param("pools"):
        StagedEngine(Architecture(4, "gap", pools=(1, 2, 3)), (5, 9, 1), "ntk", np.float64)  # 5 -> 2 -> 1 -> ?


def test_stage_geometry_and_block_lists():
    geo = stage_geometry(Architecture(7, "gap", pools=(2, 4)), 9, 12)
    assert geo.tolist() == [[9, 12, 0, 2], [4, 6, 2, 4], [2, 3, 4, 6]]
    # displacements |di| <= 1, |dj| <= 2 on a 4x6 grid, block (di Q + dj) mod PQ, from the definition
    want = sorted({(di * 6 + dj) % 24 for di in range(-1, 2) for dj in range(-2, 3)})
    blocks, weights = needed_blocks(4, 6, 1, 2, half=False)
    assert blocks.tolist() == want and np.all(weights == 1)
    half, hw = needed_blocks(4, 6, 1, 2, half=True)
    assert half.tolist() == [k for k in want if 2 * k <= 24]
    assert hw.tolist() == [1.0 if k in (0, 12) else 2.0 for k in half]
    # vanilla on a 2x3 last stage: radius 0 there, 1 on 4x6, 3 on 9x12
    blocks, starts, _ = block_lists(geo, 0, 0, half=False)
    assert blocks[starts[2] : starts[3]].tolist() == [0]
    assert len(blocks[starts[1] : starts[2]]) == 9
    assert len(blocks[starts[0] : starts[1]]) == 49


@pytest.mark.parametrize("chunks", [2, 3, 4])
def test_first_stage_split_into_runs(monkeypatch, chunks):
    """Work items (pair, run of first-stage blocks) with partial pooled tensors added in order: the
    reference for any number of runs, and the same values (to rounding) as one run per pair."""
    import cntk_core.cpu_stages as cs

    x = make_images(4, (9, 10, 2), seed=_seed("runs", chunks))
    spec = Architecture(4, "gap", fix_first=True, pools=(2, 3))
    monkeypatch.setattr(cs, "_MIN_CHUNK_BLOCKS", 1)
    monkeypatch.setattr(cs, "_CHUNKS", 1)
    whole = {kind: staged_gram(spec, x[:2], x[2:], kind) for kind in ["ntk", "nngp"]}
    monkeypatch.setattr(cs, "_CHUNKS", chunks)
    for kind in ["ntk", "nngp"]:
        sym, cross = staged_gram(spec, x[:2], None, kind), staged_gram(spec, x[:2], x[2:], kind)
        assert rel_err(sym, reference_arch_matrix(x[:2], x[:2], spec, kind)) <= 1e-7
        assert rel_err(cross, reference_arch_matrix(x[:2], x[2:], spec, kind)) <= 1e-7
        assert rel_err(cross, whole[kind]) <= 1e-13


def test_larger_images_with_default_runs():
    """16x16: 256 first-stage blocks, split into runs by default; Myrtle-5's pools, 16 -> 8 -> 4."""
    x = make_images(3, (16, 16, 3), seed=_seed("16x16"))
    spec = Architecture(5, "gap", pools=(2, 3))
    for kind in ["ntk", "nngp"]:
        assert rel_err(staged_gram(spec, x[:2], None, kind), reference_arch_matrix(x[:2], x[:2], spec, kind)) <= 1e-7
        assert rel_err(staged_gram(spec, x[:2], x[2:], kind), reference_arch_matrix(x[:2], x[2:], spec, kind)) <= 1e-7
