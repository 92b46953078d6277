"""The LAP readout on the fused CPU engine (cntk_core.cpu_lap through cntk_core.cpu_planes, the
``"numba"`` backend) against the independent 4-D reference (cntk_core.testing, which sums LAP's
definition literally): sizes, depths, windows, kinds and fixed layers, both dtypes, symmetric and
cross Grams, several depths in one pass; the shift blocks it visits, c = 0 against vanilla and a
window larger than the image against scaled GAP."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import make_images, rel_err

from cntk_core import Architecture, kernel_matrices, network_kernel
from cntk_core.testing import reference_matrix

FIXES = [(False, False), (True, True), (True, False), (False, True)]
SETTINGS = [("ntk", *fixes) for fixes in FIXES] + [("nngp", False, False)]  # the NNGP ignores fix


def _lap(depth, c, fix_first=False, fix_last=False):
    return Architecture(depth, "lap", fix_first, fix_last, lap_c=c)


@pytest.mark.parametrize("p,q,ch,depth", [(5, 6, 2, 2), (7, 7, 3, 3), (8, 5, 1, 4)])
@pytest.mark.parametrize("c", [0, 1, 2])
def test_lap_equals_reference(p, q, ch, depth, c):
    x = make_images(5, (p, q, ch), seed=[p, q, ch, depth, c])
    x1, x2 = x[:3], x[3:]
    for kind, fix_first, fix_last in SETTINGS:
        arch = _lap(depth, c, fix_first, fix_last)
        ref_cross = reference_matrix(x1, x2, depth, "lap", fix_first, fix_last, kind, lap_c=c)
        ref_sym = reference_matrix(x1, x1, depth, "lap", fix_first, fix_last, kind, lap_c=c)
        cross = network_kernel(arch, x1, x2, kind=kind, backend="numba")
        sym = network_kernel(arch, x1, kind=kind, backend="numba")
        assert cross.dtype == np.float64 and cross.shape == (3, 2) and sym.shape == (3, 3)
        assert rel_err(cross, ref_cross) <= 1e-7, (kind, fix_first, fix_last)
        assert rel_err(sym, ref_sym) <= 1e-7, (kind, fix_first, fix_last)


@pytest.mark.parametrize("c", [1, 2])
def test_lap_float32_within_1e_4(c):
    x = make_images(4, (6, 7, 3), seed=[c, 32])
    for kind, fix_first, fix_last in [("ntk", False, False), ("ntk", True, True), ("nngp", False, False)]:
        arch = _lap(4, c, fix_first, fix_last)
        ref = reference_matrix(x, x[1:], 4, "lap", fix_first, fix_last, kind, lap_c=c)
        got = network_kernel(arch, x, x[1:], kind=kind, dtype="float32", backend="numba")
        assert got.dtype == np.float64
        assert rel_err(got, ref) <= 1e-4, kind
        sym = network_kernel(arch, x, kind=kind, dtype="float32", backend="numba")
        assert rel_err(sym, reference_matrix(x, x, 4, "lap", fix_first, fix_last, kind, lap_c=c)) <= 1e-4


def test_lap_window_as_large_as_the_image_equals_reference():
    """c >= max(P, Q) - 1: every entry's weight is the same (P Q / (2c + 1)^4), all blocks visited."""
    x = make_images(4, (4, 3, 2), seed=43)
    for kind, fix_first, fix_last in SETTINGS:
        ref = reference_matrix(x[:2], x[2:], 3, "lap", fix_first, fix_last, kind, lap_c=3)
        got = network_kernel(_lap(3, 3, fix_first, fix_last), x[:2], x[2:], kind=kind, backend="numba")
        assert rel_err(got, ref) <= 1e-7, (kind, fix_first, fix_last)


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-7), ("float32", 1e-4)])
def test_large_window_is_scaled_gap(dtype, tol):
    """LAP with c >= P - 1, Q - 1 is (PQ)^3 / (2c + 1)^4 times GAP (GAP from the reference)."""
    p, q, c = 5, 6, 9
    x = make_images(4, (p, q, 2), seed=44)
    factor = (p * q) ** 3 / (2 * c + 1) ** 4
    for kind in ("ntk", "nngp"):
        gap = reference_matrix(x, x[1:], 3, "gap", kind=kind)
        got = network_kernel(_lap(3, c), x, x[1:], kind=kind, dtype=dtype, backend="numba")
        assert rel_err(got, factor * gap) <= tol, kind
        sym = network_kernel(_lap(3, c), x, kind=kind, dtype=dtype, backend="numba")
        assert rel_err(sym, factor * reference_matrix(x, x, 3, "gap", kind=kind)) <= tol, kind


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_window_zero_is_vanilla(dtype):
    x = make_images(5, (6, 5, 3), seed=45)
    for kind, fix_first, fix_last in SETTINGS:
        lap = network_kernel(_lap(4, 0, fix_first, fix_last), x, x[2:], kind=kind, dtype=dtype, backend="numba")
        vanilla = Architecture(4, "vanilla", fix_first, fix_last)
        ref = network_kernel(vanilla, x, x[2:], kind=kind, dtype=dtype, backend="numba")
        np.testing.assert_allclose(lap, ref, rtol=1e-13, atol=0)


def _visited(monkeypatch):
    """Record the shift blocks of every ``pair_sums`` call the engine makes."""
    from cntk_core import cpu_planes

    calls = []
    original = cpu_planes.pair_sums

    def recording(*args):
        calls.append(np.array(args[7]))  # blocks
        return original(*args)

    monkeypatch.setattr(cpu_planes, "pair_sums", recording)
    return calls


def _blocks_with_displacement_up_to(p, q, reach):
    """From the definition: shift block k pairs position f of the second image with (f + k) mod PQ
    of the first; the blocks holding a displacement (first minus second) within ``reach`` per axis."""
    out = set()
    for k, f in itertools.product(range(p * q), range(p * q)):
        a = (f + k) % (p * q)
        if abs(a // q - f // q) <= reach and abs(a % q - f % q) <= reach:
            out.add(k)
    return out


def _counts(n, c, circular):
    """LAP's per-axis weight from its definition: the number of (i, s, s'), i in 0 .. n-1 and
    s, s' in [-c, c], with i + s = u and i + s' = u' (modulo n when circular, else inside 0 .. n-1)."""
    out = np.zeros((n, n))
    for i, s, s2 in itertools.product(range(n), range(-c, c + 1), range(-c, c + 1)):
        u, u2 = i + s, i + s2
        if circular:
            out[u % n, u2 % n] += 1
        elif 0 <= u < n and 0 <= u2 < n:
            out[u, u2] += 1
    return out


@pytest.mark.parametrize("p,q", [(1, 1), (1, 5), (4, 1), (3, 7), (6, 5), (8, 8)])
@pytest.mark.parametrize("c", [0, 1, 2, 6])
@pytest.mark.parametrize("padding", ["zero", "circular"])
def test_entry_weights_and_visited_blocks_follow_the_definition(p, q, c, padding):
    """Entry f of shift block k pairs position (f + k) mod PQ of the first image with f of the
    second; its weight is the product of the two axes' counts; a block is visited iff it holds a
    nonzero weight."""
    from cntk_core.cpu_lap import lap_shift_blocks, lap_tables
    from cntk_core.cpu_planes import lap_entry_weights

    cp, cq = _counts(p, c, padding == "circular"), _counts(q, c, padding == "circular")
    wp, wq = lap_tables(p, q, c, padding)
    out, nonzero = np.empty(p * q), []
    for k in range(p * q):
        lap_entry_weights(wp, wq, q, k, out)
        a = (np.arange(p * q) + k) % (p * q)
        f = np.arange(p * q)
        expected = cp[a // q, f // q] * cq[a % q, f % q]
        assert np.array_equal(out, expected), k
        if expected.any():
            nonzero.append(k)
    assert lap_shift_blocks(wp, wq).tolist() == nonzero


def test_window_zero_visits_one_shift_block(monkeypatch):
    calls = _visited(monkeypatch)
    x = make_images(4, (8, 8, 3), seed=46)
    network_kernel(_lap(3, 0), x, backend="numba")
    network_kernel(_lap(3, 0), x[:2], x[2:], backend="numba")
    assert calls and all(list(blocks) == [0] for blocks in calls)


@pytest.mark.parametrize("c", [1, 2])
def test_lap_visits_only_blocks_within_2c(monkeypatch, c):
    p, q = 12, 11
    calls = _visited(monkeypatch)
    x = make_images(3, (p, q, 1), seed=[47, c])
    network_kernel(_lap(2, c), x[:1], x[1:], backend="numba")  # a cross Gram: every block
    expected = _blocks_with_displacement_up_to(p, q, 2 * c)
    assert len(expected) <= (4 * c + 1) ** 2 < p * q
    assert [set(blocks.tolist()) for blocks in calls] == [expected]
    calls.clear()
    network_kernel(_lap(2, c), x, backend="numba")  # symmetric: the self pairs visit about half
    self_calls = [set(blocks.tolist()) for blocks in calls if len(blocks) < len(expected)]
    assert self_calls and all(s <= expected and max(s) <= p * q // 2 for s in self_calls)


def test_self_pairs_from_half_the_blocks_equal_the_cross_value():
    x = make_images(3, (6, 7, 2), seed=48)
    for c, (kind, fix_first, fix_last) in itertools.product([1, 3], SETTINGS):
        arch = _lap(3, c, fix_first, fix_last)
        sym, cross = network_kernel(arch, x, kind=kind), network_kernel(arch, x, x.copy(), kind=kind)
        np.testing.assert_allclose(np.diag(sym), np.diag(cross), rtol=1e-13, atol=1e-300)
        upper = np.triu(np.ones((3, 3), bool), k=1)
        assert np.array_equal(sym[upper], cross[upper])


def test_self_pair_blocks_need_a_closed_set():
    from cntk_core.cpu_planes import self_pair_shift_blocks

    blocks, weights = self_pair_shift_blocks(3, 4, np.array([0, 1, 11]))
    assert blocks.tolist() == [0, 1] and weights.tolist() == [1.0, 2.0]
    blocks, weights = self_pair_shift_blocks(3, 4, np.array([0, 5, 6, 7]))
    assert blocks.tolist() == [0, 5, 6] and weights.tolist() == [1.0, 2.0, 1.0]
    with pytest.raises(ValueError, match="closed"):
        self_pair_shift_blocks(3, 4, np.array([0, 1]))


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-7), ("float32", 1e-4)])
def test_several_depths_in_one_pass(dtype, tol):
    x = make_images(4, (5, 5, 2), seed=49)
    for kind, fix_first, fix_last in [("ntk", False, False), ("ntk", True, True), ("nngp", False, False)]:
        fixes = dict(fix_first=fix_first, fix_last=fix_last)
        job = dict(depths=[2, 3, 5], readout="lap", lap_c=1, kind=kind, dtype=dtype, backend="numba", **fixes)
        sym, cross = kernel_matrices(x, **job), kernel_matrices(x[:1], x[1:], **job)
        for depth in (2, 3, 5):
            ref = reference_matrix(x, x, depth, "lap", fix_first, fix_last, kind, lap_c=1)
            assert rel_err(sym[depth], ref) <= tol, (kind, fix_first, fix_last, depth)
            assert rel_err(cross[depth], ref[:1, 1:]) <= tol, (kind, fix_first, fix_last, depth)
