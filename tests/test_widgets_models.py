"""The lab's value types and Gram helpers (cntk_widgets.models): a NetworkSpec takes its counts as the
library does (integral floats from sliders and np.linspace are integers) and refuses flags that are not
booleans; the explorer's label checks; and chunked_gram / cross_gram, the lab's Grams in row blocks
that compute every pair once, equal kernel_matrix, and report progress and take a cancel at every engine
call (the engine's own hooks)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_images, raises_param, rel_err

import cntk_core
import cntk_core.gram
import cntk_core.presets
from cntk_core import ParameterTypeError
from cntk_widgets.jobs import Superseded
from cntk_widgets.models import NetworkSpec, check_labels, chunked_gram, cross_gram


@pytest.fixture
def images():
    """11 images 6x6x3, 4 classes."""
    return make_images(11, (6, 6, 3), seed=3), np.arange(11) % 4


# -- NetworkSpec ------------------------------------------------------------------------------------------
def test_network_spec_takes_integral_float_depths():
    spec = NetworkSpec(depth=np.float64(5.0))
    assert spec.depth == 5 and type(spec.depth) is int


def test_network_spec_flags_must_be_booleans():
    with raises_param("fix_first", ParameterTypeError):
        NetworkSpec(fix_first="no")
    with raises_param("pool", ParameterTypeError):
        NetworkSpec(pool=2)
    assert NetworkSpec(fix_last=np.bool_(True)).fix_last is True


def test_network_spec_refuses_an_unknown_readout():
    with raises_param("readout"):
        NetworkSpec(readout="max")


# -- check_labels: what the explorer accepts as labels ---------------------------------------------------
def test_labels_are_checked_with_clear_messages():
    with raises_param("labels", match=r"labels must be >= 0, got -1 \(class indices 0 .. k-1: relabel"):  # the fix
        check_labels([-1, 0, 1, -1, 0, 1], 6)
    with raises_param("labels"):  # float labels: a ValueError in the lab, as every label error
        check_labels(np.array([0, 1, 2, 0, 1, 2], dtype=float), 6)
    with raises_param("labels"):
        check_labels(np.array([0, 1, 1, 0, 1, 0], dtype=bool), 6)
    with raises_param("labels", match="relabel"):  # says how to relabel
        check_labels([0, 10**9, 0, 0, 0, 0], 6)
    with raises_param("labels"):  # 2 class names for labels up to 2
        check_labels([0, 1, 2, 0, 1, 2], 6, ("a", "b"))
    np.testing.assert_array_equal(check_labels(np.array([0, 1, 2], np.uint8), 3, ("a", "b", "c")), [0, 1, 2])


# -- chunked_gram / cross_gram: row blocks ---------------------------------------------------------------
def _pairs_of(calls: list, n: int) -> list[tuple[int, int]]:
    """The (row, col) image pairs, row <= col, that the recorded block calls computed."""
    pairs = []
    for r0, rows, c0, cols in calls:
        for i in range(rows):
            start = i if cols is None else 0  # a symmetric call computes its upper triangle
            for j in range(start, rows if cols is None else cols):
                a, b = r0 + i, (r0 if cols is None else c0) + j
                pairs.append((min(a, b), max(a, b)))
    return pairs


@pytest.mark.parametrize("diagonal_first", [False, True])
@pytest.mark.parametrize("n", [1, 2, 5, 11, 40])
def test_row_blocks_compute_every_pair_once(n, diagonal_first):
    x = np.arange(n, dtype=float)[:, None, None, None] + np.zeros((n, 1, 1, 1))
    calls = []

    def block_fn(rows, cols):
        r0 = int(rows[0, 0, 0, 0])
        c0 = None if cols is None else int(cols[0, 0, 0, 0])
        calls.append((r0, len(rows), c0, None if cols is None else len(cols)))
        a = rows[:, 0, 0, 0][:, None]
        b = (rows if cols is None else cols)[:, 0, 0, 0][None, :]
        return 1000 * np.minimum(a, b) + np.maximum(a, b)  # a symmetric kernel that names its pair

    seen = []
    gram = chunked_gram(None, x, kind="ntk", backend=None, block_fn=block_fn, diagonal_first=diagonal_first,
                        on_block=lambda rows, g: seen.append((rows, g.copy())))  # fmt: skip
    pairs = _pairs_of(calls, n)
    assert sorted(pairs) == [(a, b) for a in range(n) for b in range(a, n)]  # each pair once, none twice
    a, b = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    np.testing.assert_array_equal(gram, 1000 * np.minimum(a, b) + np.maximum(a, b))
    rows = [r for r, _ in seen]
    assert rows == sorted(rows) and rows[-1] == n
    for r, g in seen:  # the first r rows and columns are complete, the rest is NaN or computed
        assert np.isfinite(g[:r]).all() and np.isfinite(g[:, :r]).all()
        known = np.isfinite(g)
        np.testing.assert_array_equal(g[known], gram[known])
        if diagonal_first:
            assert np.isfinite(np.diag(g)).all()


def test_row_blocks_equal_kernel_matrix(images):
    x, _ = images
    k = chunked_gram(cntk_core.cntk(4, "gap", fix=True), x, kind="ntk", backend="numba", n_chunks=3)
    expected = cntk_core.kernel_matrix(x, depth=4, readout="gap", fix=True, backend="numba")
    np.testing.assert_allclose(k, expected, rtol=1e-12, atol=0)


class _Ctx:
    """A job context that records progress and turns stale after ``stop_after`` cancel checks."""

    def __init__(self, stop_after: int | None = None):
        self.fractions: list[float] = []
        self.checks = 0
        self.stop_after = stop_after

    def check(self) -> None:
        self.checks += 1
        if self.stop_after is not None and self.checks > self.stop_after:
            raise Superseded("stale")

    def progress(self, fraction: float) -> None:
        self.fractions.append(fraction)


@pytest.mark.parametrize("cross", [False, True])
def test_row_blocks_use_the_engines_progress_and_cancel_hooks(images, monkeypatch, cross):
    """With a job context, every engine call (here one pair each) reports progress and asks to
    cancel: progress rises to 1 within and across blocks, and a stale job stops at the next call."""
    x, _ = images
    monkeypatch.setattr(cntk_core.gram, "_WORK_PER_CALL", 1.0)
    net = cntk_core.cntk(3, "gap")

    def gram(ctx):
        if cross:
            return cross_gram(net, x[:5], x, kind="ntk", backend="numba", ctx=ctx, n_chunks=2)
        return chunked_gram(net, x, kind="ntk", backend="numba", ctx=ctx, n_chunks=3)

    ctx = _Ctx()
    k = gram(ctx)
    n_pairs = 5 * len(x) if cross else len(x) * (len(x) + 1) // 2
    assert ctx.checks == n_pairs and len(ctx.fractions) == n_pairs  # one of each per engine call
    assert ctx.fractions == sorted(ctx.fractions) and ctx.fractions[-1] == pytest.approx(1.0)
    expected = cntk_core.kernel_matrix(x[:5] if cross else x, x if cross else None, depth=3, backend="numba")
    np.testing.assert_allclose(k, expected, rtol=1e-12, atol=0)
    stale = _Ctx(stop_after=4)
    with pytest.raises(Superseded):
        gram(stale)
    assert len(stale.fractions) == 4  # no engine call after the job turned stale


# -- NetworkSpec: the later networks (LAP, padding, flip, Myrtle presets) ---------------------------------
def test_network_spec_carries_every_field_into_one_architecture():
    from cntk_core.architecture import MYRTLE_POOLS

    spec = NetworkSpec(depth=4, readout="lap", lap_c=np.int64(3), padding="circular", flip=True, fix_first=True)
    arch = spec.architecture
    assert (arch.depth, arch.readout, arch.lap_c, arch.padding, arch.flip, arch.fix_first) == (
        4, "lap", 3, "circular", True, True,
    )  # fmt: skip
    assert type(spec.lap_c) is int and arch.pools == ()
    assert NetworkSpec(depth=3, pool=True).architecture.pools == (1,)  # the paper preset's pooling option
    for depth, pools in MYRTLE_POOLS.items():
        myrtle = NetworkSpec(depth=depth, preset=f"myrtle-{depth}", kind="nngp")
        assert myrtle.architecture == cntk_core.presets.myrtle(depth) and myrtle.architecture.pools == pools
        assert myrtle.title == f"CNN-GP-Myrtle-{depth}"
    assert NetworkSpec(depth=4, readout="lap", lap_c=2, padding="circular", flip=True).title == "CNTK-LAP2-4-circ+flip"
    # the describe() text shows the pools and the LAP readout
    text = NetworkSpec(depth=5, preset="myrtle-5", readout="lap", lap_c=1).describe()
    assert text.count("AvgPool 2x2") == 2 and "LocalAvgPool c=1" in text
    assert "flip" in NetworkSpec(flip=True).describe()


def test_network_spec_refuses_settings_that_do_not_go_together():
    with raises_param("depth", match="Myrtle-7 has depth 7"):
        NetworkSpec(depth=5, preset="myrtle-7")
    with raises_param("pool", match="own pools"):
        NetworkSpec(depth=5, preset="myrtle-5", pool=True)
    with raises_param("preset"):
        NetworkSpec(preset="myrtle-6")
    with raises_param("lap_c"):  # LAP needs its window
        NetworkSpec(readout="lap")
    with raises_param("lap_c"):  # and only LAP has one
        NetworkSpec(readout="gap", lap_c=1)
    with raises_param("lap_c"):
        NetworkSpec(readout="lap", lap_c=-1)
    with raises_param("padding"):
        NetworkSpec(padding="reflect")
    with raises_param("flip", ParameterTypeError):
        NetworkSpec(flip="yes")


def test_network_spec_to_dict_names_each_new_field_only_when_set():
    """The disk cache's keys are made of to_dict: the paper's specs keep the form they had before the new
    fields (entries cached then stay valid), and every new field that is set changes it."""
    old_form = {"depth": 3, "readout": "gap", "fix_first": False, "fix_last": False, "kind": "ntk", "pool": False}
    assert NetworkSpec().to_dict() == old_form
    variants = [
        NetworkSpec(),
        NetworkSpec(readout="lap", lap_c=0),
        NetworkSpec(readout="lap", lap_c=1),
        NetworkSpec(readout="vanilla"),  # LAP c=0 has the vanilla value, but is another spec
        NetworkSpec(padding="circular"),
        NetworkSpec(flip=True),
        NetworkSpec(pool=True),
        NetworkSpec(depth=5),
        NetworkSpec(depth=5, preset="myrtle-5"),
    ]
    dicts = [v.to_dict() for v in variants]
    assert len({repr(sorted(d.items())) for d in dicts}) == len(variants)
    assert dicts[1]["lap_c"] == 0 and dicts[8]["preset"] == "myrtle-5" and dicts[5]["flip"] is True


def test_architecture_model_completes_a_preset_and_the_lap_window():
    from cntk_widgets.models import DEFAULT_LAP_C, ArchitectureModel

    assert ArchitectureModel(preset="myrtle-5").spec.depth == 5  # completed in the constructor too
    assert ArchitectureModel(readout="lap").spec.lap_c == DEFAULT_LAP_C
    with raises_param("depth"):  # but what is given explicitly is kept (and refused here)
        ArchitectureModel(preset="myrtle-5", depth=4)
    m = ArchitectureModel(depth=3, pool=True)
    assert m.set(preset="myrtle-7").depth == 7 and m.spec.pool is False  # the preset brings its depth
    with raises_param("depth"):  # a Myrtle net's depth is fixed
        m.set(depth=4)
    assert m.spec.depth == 7
    assert m.set(preset="paper").depth == 7  # the paper preset keeps the depth
    assert m.set(readout="lap").lap_c == DEFAULT_LAP_C
    m.set(lap_c=4)
    assert m.set(readout="gap").lap_c is None
    assert m.set(readout="lap").lap_c == 4  # the last window used
    seen = []
    m.observe(seen.append)
    m.set(preset="myrtle-5")
    assert [s.depth for s in seen] == [5] and seen[0].lap_c == 4


def test_image_shape_check_of_nets_with_pools():
    NetworkSpec(depth=5, preset="myrtle-5").check_image_shape(8, 12)
    NetworkSpec(pool=True).check_image_shape(6, 2)
    NetworkSpec().check_image_shape(5, 7)  # no pools: any size
    with raises_param("pools", match=r"divisible by 4, got 6x8 px \(hint\)$"):
        NetworkSpec(depth=10, preset="myrtle-10").check_image_shape(6, 8, hint=" (hint)")
    with raises_param("pools", match="AvgPool.*divisible by 2"):
        NetworkSpec(pool=True).check_image_shape(5, 4)


#: specs of the later networks, on images their pools can halve, with the backends that run them
_NEW_SPECS = [
    (NetworkSpec(depth=3, readout="lap", lap_c=1), (5, 5, 2), "numba"),
    (NetworkSpec(depth=4, readout="lap", lap_c=2, kind="nngp", fix_last=True), (4, 6, 1), "numba"),
    (NetworkSpec(depth=3, readout="vanilla", padding="circular"), (4, 5, 2), "numpy"),
    (NetworkSpec(depth=3, readout="lap", lap_c=1, padding="circular", flip=True), (4, 4, 1), "numpy"),
    (NetworkSpec(depth=4, readout="gap", flip=True, fix_first=True), (5, 4, 3), "numba"),
    (NetworkSpec(depth=5, preset="myrtle-5", kind="nngp"), (4, 4, 2), "numpy"),
    (NetworkSpec(depth=3, pool=True, readout="vanilla"), (4, 6, 1), "numpy"),
]


@pytest.mark.parametrize("spec, shape, backend", _NEW_SPECS, ids=[f"{s.title} {b}" for s, _, b, *_ in _NEW_SPECS])
def test_lab_grams_of_the_later_networks_equal_the_oracle(spec, shape, backend):
    """chunked_gram / cross_gram of a spec's Architecture (the flip is no layer: it comes with the
    Architecture, not with spec.network()) against the 4-D oracle, float64."""
    from cntk_core.testing import reference_arch_matrix

    seed = sum(map(ord, spec.title)) + sum(shape)  # reproducible, different per case
    x, y = make_images(5, shape, seed=seed), make_images(3, shape, seed=seed + 1)
    ref = reference_arch_matrix(x, x, spec.architecture, spec.kind)
    got = chunked_gram(spec.architecture, x, kind=spec.kind, backend=backend, n_chunks=2)
    assert rel_err(got, ref) <= 1e-7
    cross = cross_gram(spec.architecture, y, x, kind=spec.kind, backend=backend, n_chunks=2)
    assert rel_err(cross, reference_arch_matrix(y, x, spec.architecture, spec.kind)) <= 1e-7


def test_per_layer_note_warns_only_for_per_layer_nets_on_large_images():
    from cntk_widgets.models import per_layer_note

    assert per_layer_note(NetworkSpec(depth=5, preset="myrtle-5"), 8, 8) is None  # 8x8: quick enough
    assert per_layer_note(NetworkSpec(depth=11, readout="lap", lap_c=3), 32, 32) is None  # fused engine
    assert per_layer_note(NetworkSpec(depth=5, preset="myrtle-5"), 32, 32) is None  # the staged engines
    note = per_layer_note(NetworkSpec(depth=5, padding="circular"), 32, 32)
    assert "CNTK-GAP-5-circ runs on the per-layer engine" in note and "about 256x" in note
    assert "16x16 px take about 16x" in per_layer_note(NetworkSpec(padding="circular"), 16, 16)
