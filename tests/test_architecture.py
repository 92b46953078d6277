"""The network as a value (cntk_core.architecture): the one reading of ``fix``, its checks (each naming
its parameter), its JSON form, its layer list and the paper's names, and that the keywords of
``kernel_matrix`` and an ``Architecture`` give the same kernel."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_images, raises_param

import cntk_core
from cntk_core import Architecture, ParameterTypeError
from cntk_core.architecture import MIN_DEPTH, READOUTS, family_name


# -- Architecture.from_options: the one reading of fix -------------------------------------------------
@pytest.mark.parametrize("fix", [False, True])
def test_fix_sets_both_halves(fix):
    assert Architecture.from_options(3, fix=fix) == Architecture(3, "gap", fix, fix)


@pytest.mark.parametrize("fix", [False, True])
@pytest.mark.parametrize("fix_first", [None, False, True])
@pytest.mark.parametrize("fix_last", [None, False, True])
def test_fix_first_and_fix_last_override_fix_and_none_keeps_it(fix, fix_first, fix_last):
    arch = Architecture.from_options(5, "vanilla", fix=fix, fix_first=fix_first, fix_last=fix_last)
    assert arch.fix_first is (fix if fix_first is None else fix_first)
    assert arch.fix_last is (fix if fix_last is None else fix_last)
    assert (arch.depth, arch.readout) == (5, "vanilla")
    assert arch.fix == (arch.fix_first if arch.fix_first == arch.fix_last else None)


def test_defaults_and_derived_counts():
    arch = Architecture(4)
    assert (arch.readout, arch.fix_first, arch.fix_last, arch.fix) == ("gap", False, False, False)
    assert arch.n_conv == 3 and MIN_DEPTH == 2 and READOUTS == ("gap", "vanilla", "lap")


# -- checks, each naming its parameter -----------------------------------------------------------------
@pytest.mark.parametrize("depth", [1, 0, -3])
def test_depth_below_two_is_refused(depth):
    with raises_param("depth", match=r"depth = number of conv layers \+ 1"):  # the hint: what depth counts
        Architecture(depth)
    with raises_param("depth"):
        Architecture.from_options(depth)


def test_a_depth_that_is_not_an_integer_is_a_type_error():
    with raises_param("depth", ParameterTypeError):
        Architecture(2.5)
    with raises_param("depth", ParameterTypeError):
        Architecture("3")
    assert Architecture(3.0).depth == 3 and type(Architecture(np.int64(3)).depth) is int


@pytest.mark.parametrize("readout", ["max", "GAP", None])
def test_an_unknown_readout_is_refused(readout):
    with raises_param("readout"):
        Architecture(3, readout)
    with raises_param("readout"):
        family_name(readout)


@pytest.mark.parametrize("name", ["fix_first", "fix_last"])
@pytest.mark.parametrize("bad", ["no", 2, None, 0.5])
def test_flags_that_are_not_booleans_are_type_errors(name, bad):
    with raises_param(name, ParameterTypeError):
        Architecture(3, **{name: bad})
    if bad is not None:  # None is "keep fix" in from_options
        with raises_param(name, ParameterTypeError):
            Architecture.from_options(3, **{name: bad})


def test_fix_that_is_not_a_boolean_is_a_type_error_with_a_hint():
    with raises_param("fix", ParameterTypeError, match="write fix=True or fix=False"):
        Architecture.from_options(3, fix="yes")
    with raises_param("fix", ParameterTypeError):
        Architecture.from_options(3, fix=None)


def test_numpy_flags_are_plain_bools():
    arch = Architecture(3, "gap", np.True_, np.array(False))
    assert arch.fix_first is True and arch.fix_last is False
    assert arch == Architecture(3, "gap", True, False) and hash(arch) == hash(Architecture(3, "gap", True, False))


def test_check_trainable_refuses_only_an_ntk_with_no_trained_layer():
    frozen = Architecture(2, "gap", True, True)
    with raises_param("fix", match="no trained layer"):  # says why the kernel would be zero
        frozen.check_trainable("ntk")
    frozen.check_trainable("nngp")  # the CNN-GP does not depend on training
    for arch in (Architecture(3, "gap", True, True), Architecture(2, "gap", True, False), Architecture(2, "vanilla")):
        arch.check_trainable("ntk")
    # the core computes it (identically zero); the lab's models call check_trainable to refuse it
    assert not cntk_core.kernel_matrix(make_images(2, (3, 3, 1)), depth=2, fix=True).any()


# -- value semantics and JSON form -----------------------------------------------------------------------
def test_to_dict_from_dict_round_trip_through_json():
    for arch in (Architecture(3), Architecture(11, "vanilla", True, False), Architecture(21, "gap", False, True)):
        d = arch.to_dict()
        assert d == {
            "depth": arch.depth,
            "readout": arch.readout,
            "fix_first": arch.fix_first,
            "fix_last": arch.fix_last,
        }
        assert Architecture.from_dict(json.loads(json.dumps(d))) == arch
        assert Architecture.from_dict({**d, "kind": "nngp"}) == arch  # extra keys are ignored


def test_from_dict_checks_like_the_constructor():
    with raises_param("depth"):
        Architecture.from_dict({"depth": 1, "readout": "gap", "fix_first": False, "fix_last": False})
    with raises_param("fix_last", ParameterTypeError):
        Architecture.from_dict({"depth": 3, "readout": "gap", "fix_first": False, "fix_last": "no"})


def test_hashable_immutable_and_equal_by_value():
    a, b = Architecture(3, "gap", True, True), Architecture.from_options(3, fix=True)
    assert a == b and hash(a) == hash(b) and len({a, b, Architecture(3)}) == 2
    assert {a: "cached"}[b] == "cached"
    with pytest.raises(AttributeError):  # frozen: a cache key cannot change under its entry
        a.depth = 4


# -- the layer list and the names --------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [2, 3, 7])
@pytest.mark.parametrize("readout", ["gap", "vanilla"])
@pytest.mark.parametrize("fix_first,fix_last", [(False, False), (True, True), (True, False), (False, True)])
def test_network_is_the_presets_layer_list_and_canonical_gives_it_back(depth, readout, fix_first, fix_last):
    arch = Architecture(depth, readout, fix_first, fix_last)
    net = arch.network()
    preset = cntk_core.cntk(depth, readout, fix_first=fix_first, fix_last=fix_last)
    assert list(net) == list(preset)
    readout_layer = cntk_core.GlobalAvgPool() if readout == "gap" else cntk_core.Flatten()
    blocks = [cntk_core.Conv(3, fixed=fix_first), cntk_core.ReLU()]
    blocks += [cntk_core.Conv(3), cntk_core.ReLU()] * (depth - 2)
    assert list(net) == [*blocks, readout_layer, cntk_core.Dense(fixed=fix_last)]
    assert net.canonical() == arch and preset.canonical() == arch


def test_titles_are_the_papers_names():
    assert Architecture(3).title() == "CNTK-GAP-3"
    assert Architecture(11, "vanilla").title() == "CNTK-V-11"
    assert Architecture(5).title("nngp") == "CNN-GP-GAP-5"
    assert Architecture(11, "vanilla", True, True).title("nngp") == "CNN-GP-V-11"
    assert [family_name(r, k, 2) for k in ("ntk", "nngp") for r in READOUTS] == [
        "CNTK-GAP",
        "CNTK-V",
        "CNTK-LAP2",
        "CNN-GP-GAP",
        "CNN-GP-V",
        "CNN-GP-LAP2",
    ]
    with raises_param("kind"):
        Architecture(3).title("gp")


# -- the keywords and the value give one kernel ----------------------------------------------------------
def test_kernel_matrix_keywords_equal_network_kernel_of_the_architecture():
    x = make_images(3, (5, 5, 2), seed=3)
    by_keywords = cntk_core.kernel_matrix(x, depth=3, fix=True)
    by_value = cntk_core.network_kernel(Architecture(3, "gap", True, True), x)
    assert np.array_equal(by_keywords, by_value)  # bit for bit: the same engine call
    assert np.array_equal(cntk_core.network_kernel(Architecture(3, "gap", True, True).network(), x), by_keywords)
    assert not np.array_equal(cntk_core.network_kernel(Architecture(3), x), by_keywords)  # fix matters
