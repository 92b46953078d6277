"""The fused CPU engine (cntk_core.cpu_planes, the ``"numba"`` backend) against the independent 4-D
reference (cntk_core.testing): every image size and depth the issue names, its shift blocks and their
masks, the self pairs from half the shift blocks, and anticorrelated images."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import make_images, rel_err

from cntk_core import kernel_matrix
from cntk_core.testing import reference_matrix

FIXES = [(False, False), (True, True), (True, False), (False, True)]

# (height, width, channels, depth): every size the issue names, depths 2-21, channels 1-3.
CASES = [
    (1, 1, 3, 4),
    (5, 7, 2, 3),
    (5, 7, 1, 21),
    (8, 8, 3, 2),
    (8, 8, 2, 11),
    (16, 16, 3, 3),
    (3, 1, 2, 3),  # one column: every shift block's column cut is at an edge
    (2, 9, 1, 5),  # two rows: row cuts next to both edges
]


@pytest.mark.parametrize("p,q,c,depth", CASES)
@pytest.mark.parametrize("readout", ["gap", "vanilla"])
def test_fused_cpu_equals_reference(p, q, c, depth, readout):
    x = make_images(4, (p, q, c), seed=[p, q, c, depth])
    x1, x2 = x[:2], x[2:]
    for (fix_first, fix_last), kind in itertools.product(FIXES, ["ntk", "nngp"]):
        if kind == "nngp" and (fix_first or fix_last):
            continue  # NNGP does not depend on fix; covered in test_gram.py
        ref = reference_matrix(x1, x2, depth, readout, fix_first, fix_last, kind)
        got = kernel_matrix(
            x1, x2, depth=depth, readout=readout, fix_first=fix_first, fix_last=fix_last, kind=kind, backend="numba"
        )
        assert got.dtype == np.float64 and got.shape == (2, 2)
        assert rel_err(got, ref) <= 1e-7, (fix_first, fix_last, kind)


@pytest.mark.parametrize("kind", ["ntk", "nngp"])
def test_vanilla_grams_larger_than_a_cache_block_equal_reference(kind):
    """The Numba engine visits vanilla pairs in 8 x 8 image blocks; the order must not show."""
    x = make_images(30, (4, 3, 2), seed=21)
    x1, x2 = x[:19], x[19:]
    gram = kernel_matrix(x1, depth=3, readout="vanilla", kind=kind, backend="numba")
    assert rel_err(gram, reference_matrix(x1, x1, 3, "vanilla", kind=kind)) <= 1e-7
    cross = kernel_matrix(x1, x2, depth=3, readout="vanilla", kind=kind, backend="numba", block_size=7)
    assert rel_err(cross, reference_matrix(x1, x2, 3, "vanilla", kind=kind)) <= 1e-7


@pytest.mark.parametrize("p,q", [(1, 1), (1, 4), (4, 1), (3, 5), (6, 4)])
def test_shift_block_masks_follow_the_displacement_planes(p, q):
    """Brute force from the definition: in shift block k, entry f pairs position f of the second
    image with position (f + k) mod PQ of the first; a neighbour may enter tr3 iff it is inside
    the image and has the same displacement (first minus second position)."""
    from cntk_core.cpu_planes import shift_block_masks

    def displacement(k, r, t):
        a = (r * q + t + k) % (p * q)
        return (a // q - r, a % q - t)

    for k in range(p * q):
        masks = shift_block_masks(p, q, k, 1.0)
        for r, t in itertools.product(range(p), range(q)):
            for m, (dr, dt) in enumerate([(0, -1), (0, 1), (-1, 0), (1, 0)]):
                inside = 0 <= r + dr < p and 0 <= t + dt < q
                same = inside and displacement(k, r + dr, t + dt) == displacement(k, r, t)
                assert masks[m, r * q + t] == float(same), (k, r, t, m)


def test_fused_cpu_equals_reference_32x32():
    x1, x2 = np.split(make_images(2, (32, 32, 3), seed=32), 2)
    for readout, fix in [("gap", True), ("vanilla", False)]:
        ref = reference_matrix(x1, x2, 3, readout, fix, fix)
        got = kernel_matrix(x1, x2, depth=3, readout=readout, fix=fix, backend="numba")
        assert rel_err(got, ref) <= 1e-7


@pytest.mark.parametrize("p,q", [(1, 1), (1, 2), (3, 1), (5, 7), (6, 4), (8, 8)])
def test_self_pairs_from_half_the_shift_blocks_equal_the_full_sum(p, q):
    """A symmetric GAP Gram's diagonal comes from shift blocks 0 .. PQ/2 (weights 2 for the blocks
    that stand for their transposes); the cross kernel of the same images sums all PQ tiles."""
    from cntk_core.cpu_planes import self_pair_shift_blocks

    tiles, weights = self_pair_shift_blocks(p, q)
    assert weights.sum() == p * q and tiles[0] == 0 and (weights[1:-1] == 2).all()
    x = make_images(3, (p, q, 2), seed=[p, q, 11])
    for (fix_first, fix_last), kind, depth in itertools.product(FIXES, ["ntk", "nngp"], [2, 5]):
        job = dict(depth=depth, fix_first=fix_first, fix_last=fix_last, kind=kind)
        sym, cross = kernel_matrix(x, **job), kernel_matrix(x, x.copy(), **job)
        np.testing.assert_allclose(np.diag(sym), np.diag(cross), rtol=1e-13, atol=1e-300)
        upper = np.triu(np.ones((3, 3), bool), k=1)  # pairs of different images: the same computation
        assert np.array_equal(sym[upper], cross[upper])
    ref = reference_matrix(x, x, 4, "gap", False, False)
    assert rel_err(kernel_matrix(x, depth=4), ref) <= 1e-7


def test_float32_self_kernel_is_exact_on_the_diagonal():
    """An exact self pair has rho == 1 exactly, so float32 loses nothing to arccos near 1."""
    x = make_images(4, (12, 12, 3), seed=5)
    ref = np.diag(reference_matrix(x, x, 6, "vanilla"))
    got = np.diag(kernel_matrix(x, depth=6, readout="vanilla", dtype="float32"))
    assert rel_err(got, ref) <= 1e-6


@pytest.mark.parametrize("readout", ["gap", "vanilla"])
@pytest.mark.parametrize(
    "kind,fix_first,fix_last", [("ntk", *fixes) for fixes in FIXES] + [("nngp", False, False)]
)  # the NNGP does not depend on fix (test_gram.py::test_nngp_does_not_depend_on_fix)
def test_anticorrelated_images_equal_reference(readout, kind, fix_first, fix_last):
    """Correlations down to -1 in the first layer (x and -x, and nearly so), where the engine's
    angle formula needs the reflection for x < 0; later layers take the nonnegative branch only, and
    their correlations here start near 0 (K^(1) of rho = -1 is 0)."""
    z = make_images(5, (5, 4, 2), seed=13)
    x = z[:2]
    x2 = np.concatenate([-x, -x + 1e-4 * z[2:4], z[4:]])
    ref = reference_matrix(x, x2, 4, readout, fix_first, fix_last, kind=kind)
    got = kernel_matrix(x, x2, depth=4, readout=readout, fix_first=fix_first, fix_last=fix_last, kind=kind)
    assert rel_err(got, ref) <= 1e-7
