"""The Architecture's extensions (LAP, circular padding, pooling, flip): the value, its JSON form,
its layer list, and the per-layer path against the independent 4-D oracle of cntk_core.testing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_images, raises_param, rel_err

import cntk_core
from cntk_core import Architecture, ParameterTypeError, network_kernel
from cntk_core.architecture import MYRTLE_POOLS, PADDINGS
from cntk_core.testing import lap_readout, reference_arch_matrix, reference_matrix


def test_defaults_leave_the_2019_network_and_its_json_form_unchanged():
    arch = Architecture(3, "gap", True, True)
    assert arch.to_dict() == {"depth": 3, "readout": "gap", "fix_first": True, "fix_last": True}
    assert repr(arch) == "Architecture(depth=3, readout='gap', fix_first=True, fix_last=True)"
    assert arch.is_paper and arch.title() == "CNTK-GAP-3"


@pytest.mark.parametrize(
    "arch",
    [
        Architecture(4, "lap", lap_c=2),
        Architecture(3, "vanilla", padding="circular", flip=True),
        Architecture(5, "gap", True, False, pools=(2, 3)),
        Architecture(6, "lap", lap_c=0, padding="circular", pools=(1, 4), flip=True),
    ],
)
def test_extensions_round_trip_through_json_and_the_layer_list(arch):
    d = json.loads(json.dumps(arch.to_dict()))
    assert Architecture.from_dict(d) == arch
    assert not arch.is_paper
    back = arch.network().canonical()
    assert back == Architecture.from_dict({**d, "flip": False})  # flip is the driver's, not a layer


def test_titles_name_the_extensions():
    assert Architecture(5, "lap", lap_c=2).title() == "CNTK-LAP2-5"
    assert cntk_core.myrtle(5).title("nngp") == "CNN-GP-Myrtle-5"
    assert cntk_core.myrtle(10, flip=True).title() == "CNTK-Myrtle-10+flip"
    assert Architecture(4, "vanilla", pools=(1,), padding="circular").title() == "CNTK-V-4-pool1-circ"


@pytest.mark.parametrize(
    "kwargs, param",
    [
        ({"readout": "lap"}, "lap_c"),
        ({"readout": "gap", "lap_c": 1}, "lap_c"),
        ({"readout": "lap", "lap_c": -1}, "lap_c"),
        ({"padding": "reflect"}, "padding"),
        ({"pools": (2, 2)}, "pools"),
        ({"pools": (3, 1)}, "pools"),
        ({"pools": (4,)}, "pools"),
        ({"pools": (0,)}, "pools"),
        ({"pools": 2}, "pools"),
    ],
)
def test_bad_extensions_are_refused_naming_the_field(kwargs, param):
    with raises_param(param, (cntk_core.ParameterError, ParameterTypeError)):
        Architecture(4, **kwargs)


def test_flip_must_be_a_boolean_and_unknown_options_are_type_errors():
    with raises_param("flip", ParameterTypeError):
        Architecture(3, flip="yes")
    with pytest.raises(TypeError, match="unexpected keyword"):
        Architecture.from_options(3, lap=2)


def test_myrtle_presets_are_the_published_stages():
    assert MYRTLE_POOLS == {5: (2, 3), 7: (2, 4), 10: (3, 6)}
    for depth, stages in ((5, (2, 1, 1)), (7, (2, 2, 2)), (10, (3, 3, 3))):
        layers = [type(layer).__name__ for layer in cntk_core.myrtle(depth).network()]
        runs = "".join("c" if n == "Conv" else "|" if n == "AvgPool" else "" for n in layers).split("|")
        assert tuple(len(r) for r in runs) == stages
        assert layers[-2:] == ["GlobalAvgPool", "Dense"]
    with raises_param("depth"):
        cntk_core.myrtle(6)


def test_stage_shape_halves_and_refuses_too_small_maps():
    assert cntk_core.myrtle(5).stage_shape(32, 32) == (8, 8)
    assert Architecture(3, pools=(1, 2)).stage_shape(7, 9) == (1, 2)
    with raises_param("pools"):
        Architecture(4, pools=(1, 2, 3)).stage_shape(4, 4)


# -- the oracle's own facts, from the definitions ---------------------------------------------------
def test_oracle_lap_with_c0_is_the_vanilla_readout_and_large_c_is_a_multiple_of_gap():
    t = np.random.default_rng(3).standard_normal((4, 5, 4, 5))
    assert lap_readout(t, 0) == pytest.approx(np.einsum("ijij->", t), rel=1e-12)
    c = 4  # >= P - 1 and Q - 1: every weight is P Q / (2c+1)^4
    assert lap_readout(t, c) == pytest.approx(t.sum() * 20 / (2 * c + 1) ** 4, rel=1e-12)


def test_oracle_lap_is_the_vanilla_kernel_averaged_over_translations_of_both_images():
    """With circular padding, LAP_c(x, y) = mean over shifts s, s' in [-c, c]^2 of CNTK-V(roll_s x, roll_s' y)."""
    x, y = make_images(2, (5, 6, 2), seed=4)
    c = 1
    shifts = [(a, b) for a in range(-c, c + 1) for b in range(-c, c + 1)]
    values = [
        reference_matrix(
            np.roll(x, s, axis=(0, 1))[None], np.roll(y, t, axis=(0, 1))[None], 3, "vanilla", padding="circular"
        )[0, 0]
        for s in shifts
        for t in shifts
    ]
    lap = reference_matrix(x[None], y[None], 3, "lap", lap_c=c, padding="circular")[0, 0]
    assert lap == pytest.approx(np.mean(values), rel=1e-12)


def test_oracle_circular_gap_is_invariant_to_circular_shifts_and_zero_padding_is_not():
    x, y = make_images(2, (6, 5, 3), seed=5)
    shifted = np.roll(y, (2, -1), axis=(0, 1))
    for padding, invariant in (("circular", True), ("zero", False)):
        k = reference_matrix(x[None], np.stack([y, shifted]), 3, "gap", padding=padding)[0]
        assert bool(abs(k[0] - k[1]) <= 1e-12 * abs(k[0])) is invariant


# -- the per-layer path (and the default engine) against the oracle --------------------------------
CASES = [
    Architecture(3, "lap", lap_c=1),
    Architecture(4, "lap", lap_c=2, fix_first=True),
    Architecture(3, "lap", lap_c=6, fix_last=True),
    Architecture(3, "gap", padding="circular"),
    Architecture(4, "vanilla", padding="circular", fix_first=True, fix_last=True),
    Architecture(3, "lap", lap_c=1, padding="circular"),
    Architecture(4, "gap", pools=(1,)),
    Architecture(4, "vanilla", pools=(2, 3)),
    Architecture(5, "lap", lap_c=1, pools=(2,), padding="circular"),
    Architecture(3, "gap", flip=True),
    Architecture(3, "vanilla", pools=(1,), flip=True, fix_last=True),
]


@pytest.mark.parametrize("arch", CASES, ids=lambda a: a.title())
@pytest.mark.parametrize("kind", ["ntk", "nngp"])
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_every_extension_matches_the_4d_oracle(arch, kind, backend):
    shape = (6, 6, 2) if arch.pools else (5, 7, 2)
    x1, x2 = make_images(3, shape, seed=11), make_images(2, shape, seed=12)
    ref = reference_arch_matrix(x1, x2, arch, kind)
    assert rel_err(network_kernel(arch, x1, x2, kind=kind, backend=backend), ref) <= 1e-7
    sym = network_kernel(arch, x1, kind=kind, backend=backend)
    assert rel_err(sym, reference_arch_matrix(x1, x1, arch, kind)) <= 1e-7
    np.testing.assert_array_equal(sym, sym.T)


@pytest.mark.parametrize("arch", [CASES[0], CASES[3], CASES[6]], ids=lambda a: a.title())
def test_float32_extensions_within_1e4(arch):
    shape = (6, 6, 3)
    x = make_images(3, shape, seed=13)
    got = network_kernel(arch, x, dtype="float32", backend="numpy")
    assert rel_err(got, reference_arch_matrix(x, x, arch, "ntk")) <= 1e-4


def test_flip_kernel_is_the_mean_of_two_ordinary_kernel_calls():
    x1, x2 = make_images(3, (6, 5, 3), seed=14), make_images(4, (6, 5, 3), seed=15)
    plain = cntk_core.kernel_matrix(x1, x2, depth=3, readout="lap", lap_c=1)
    mirrored = cntk_core.kernel_matrix(x1, x2[:, :, ::-1], depth=3, readout="lap", lap_c=1)
    flipped = cntk_core.kernel_matrix(x1, x2, depth=3, readout="lap", lap_c=1, flip=True)
    assert rel_err(flipped, (plain + mirrored) / 2) <= 1e-12
    # invariant to flipping either side, and symmetric
    assert rel_err(cntk_core.kernel_matrix(x1[:, :, ::-1], x2, depth=3, flip=True),
                   cntk_core.kernel_matrix(x1, x2, depth=3, flip=True)) <= 1e-10  # fmt: skip
    sym = cntk_core.kernel_matrix(x1, depth=3, flip=True)
    assert rel_err(sym, cntk_core.kernel_matrix(x1, x1, depth=3, flip=True)) <= 1e-12


def test_network_kernel_flip_keyword_overrides_the_architecture_and_applies_to_layer_lists():
    x = make_images(3, (5, 5, 2), seed=16)
    arch = Architecture(3, "gap")
    a = network_kernel(arch, x, flip=True, backend="numpy")
    b = network_kernel(arch.network(), x, flip=True, backend="numpy")
    c = network_kernel(Architecture(3, "gap", flip=True), x, backend="numpy")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    assert rel_err(network_kernel(Architecture(3, "gap", flip=True), x, flip=False), network_kernel(arch, x)) == 0


def test_kernel_matrices_sweeps_depths_of_the_extended_networks():
    x = make_images(3, (5, 6, 2), seed=17)
    for opts in ({"readout": "lap", "lap_c": 1}, {"readout": "gap", "padding": "circular"}, {"flip": True}):
        got = cntk_core.kernel_matrices(x, depths=[2, 4], **opts)
        for d in (2, 4):
            assert rel_err(got[d], reference_matrix(x, x, d, opts.get("readout", "gap"), **{
                k: v for k, v in opts.items() if k != "readout"})) <= 1e-7  # fmt: skip


def test_paddings_vocabulary_is_exported():
    assert PADDINGS == ("zero", "circular") and cntk_core.PADDINGS is PADDINGS
