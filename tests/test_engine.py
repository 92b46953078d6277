"""The engine against the independent 4-D reference (tests/reference.py) and against theory."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
from reference import reference_matrix

import cntk_core
from cntk_core import AvgPool, Conv, Dense, Flatten, GlobalAvgPool, Network, ReLU, kernel_matrix, network_kernel

FIXES = [(False, False), (True, True), (True, False), (False, True)]


def rel_err(got, ref):
    """Entrywise relative error, with a floor of 1e-3 x the largest entry for near-zero entries."""
    top = np.abs(ref).max()
    if top == 0:  # e.g. depth 2 with both layers fixed: nothing is trained, Theta == 0
        return float(np.abs(got).max())
    scale = np.maximum(np.abs(ref), 1e-3 * top)
    return float(np.max(np.abs(got - ref) / scale))


def images(rng, n, p, q, c):
    return rng.standard_normal((n, p, q, c))


# (height, width, channels, depth): every size the issue names, depths 2-21, channels 1-3.
CASES = [
    (1, 1, 3, 4),
    (5, 7, 2, 3),
    (5, 7, 1, 21),
    (8, 8, 3, 2),
    (8, 8, 2, 11),
    (16, 16, 3, 3),
    (3, 1, 2, 3),  # one column: every shift tile's column cut is at an edge
    (2, 9, 1, 5),  # two rows: row cuts next to both edges
]


@pytest.mark.parametrize("p,q,c,depth", CASES)
@pytest.mark.parametrize("readout", ["gap", "vanilla"])
def test_fused_cpu_equals_reference(p, q, c, depth, readout):
    rng = np.random.default_rng([p, q, c, depth])
    x1, x2 = images(rng, 2, p, q, c), images(rng, 2, p, q, c)
    for (fix_first, fix_last), kind in itertools.product(FIXES, ["ntk", "nngp"]):
        if kind == "nngp" and (fix_first or fix_last):
            continue  # NNGP does not depend on fix; covered below
        ref = reference_matrix(x1, x2, depth, readout, fix_first, fix_last, kind)
        got = kernel_matrix(
            x1, x2, depth=depth, readout=readout, fix_first=fix_first, fix_last=fix_last, kind=kind, backend="numba"
        )
        assert got.dtype == np.float64 and got.shape == (2, 2)
        assert rel_err(got, ref) <= 1e-7, (fix_first, fix_last, kind)


@pytest.mark.parametrize("kind", ["ntk", "nngp"])
def test_vanilla_grams_larger_than_a_cache_block_equal_reference(kind):
    """The Numba engine visits vanilla pairs in 8 x 8 image blocks; the order must not show."""
    rng = np.random.default_rng(21)
    x1, x2 = images(rng, 19, 4, 3, 2), images(rng, 11, 4, 3, 2)
    gram = kernel_matrix(x1, depth=3, readout="vanilla", kind=kind, backend="numba")
    assert rel_err(gram, reference_matrix(x1, x1, 3, "vanilla", kind=kind)) <= 1e-7
    cross = kernel_matrix(x1, x2, depth=3, readout="vanilla", kind=kind, backend="numba", block_size=7)
    assert rel_err(cross, reference_matrix(x1, x2, 3, "vanilla", kind=kind)) <= 1e-7


@pytest.mark.parametrize("p,q", [(1, 1), (1, 4), (4, 1), (3, 5), (6, 4)])
def test_shift_tile_masks_follow_the_displacement_planes(p, q):
    """Brute force from the definition: in shift tile k, entry f pairs position f of the second
    image with position (f + k) mod PQ of the first; a neighbour may enter tr3 iff it is inside
    the image and has the same displacement (first minus second position)."""
    from cntk_core.cpu_planes import tile_masks

    def displacement(k, r, t):
        a = (r * q + t + k) % (p * q)
        return (a // q - r, a % q - t)

    for k in range(p * q):
        masks = tile_masks(p, q, k, 1.0)
        for r, t in itertools.product(range(p), range(q)):
            for m, (dr, dt) in enumerate([(0, -1), (0, 1), (-1, 0), (1, 0)]):
                inside = 0 <= r + dr < p and 0 <= t + dt < q
                same = inside and displacement(k, r + dr, t + dt) == displacement(k, r, t)
                assert masks[m, r * q + t] == float(same), (k, r, t, m)


def test_fused_cpu_equals_reference_32x32():
    rng = np.random.default_rng(32)
    x1, x2 = images(rng, 1, 32, 32, 3), images(rng, 1, 32, 32, 3)
    for readout, fix in [("gap", True), ("vanilla", False)]:
        ref = reference_matrix(x1, x2, 3, readout, fix, fix)
        got = kernel_matrix(x1, x2, depth=3, readout=readout, fix=fix, backend="numba")
        assert rel_err(got, ref) <= 1e-7


@pytest.mark.parametrize("readout", ["gap", "vanilla"])
@pytest.mark.parametrize("fix", [False, True])
def test_symmetric_gram_equals_reference(readout, fix):
    rng = np.random.default_rng(7)
    x = images(rng, 4, 6, 5, 2)
    ref = reference_matrix(x, x, 4, readout, fix, fix)
    got = kernel_matrix(x, depth=4, readout=readout, fix=fix)
    assert rel_err(got, ref) <= 1e-7
    assert np.array_equal(got, got.T)


@pytest.mark.parametrize("kind", ["ntk", "nngp"])
def test_nngp_does_not_depend_on_fix(kind):
    rng = np.random.default_rng(3)
    x = images(rng, 3, 5, 5, 2)
    a = kernel_matrix(x, depth=3, fix=False, kind="nngp")
    b = kernel_matrix(x, depth=3, fix=True, kind="nngp")
    assert np.array_equal(a, b)


@pytest.mark.parametrize("p,q,c,depth", [(5, 7, 2, 3), (4, 4, 1, 6), (1, 1, 2, 3)])
@pytest.mark.parametrize("readout", ["gap", "vanilla"])
def test_per_layer_numpy_backend_equals_reference(p, q, c, depth, readout):
    rng = np.random.default_rng([p, q, depth, 1])
    x1, x2 = images(rng, 2, p, q, c), images(rng, 3, p, q, c)
    for (fix_first, fix_last), kind in itertools.product(FIXES, ["ntk", "nngp"]):
        ref = reference_matrix(x1, x2, depth, readout, fix_first, fix_last, kind)
        got = kernel_matrix(
            x1, x2, depth=depth, readout=readout, fix_first=fix_first, fix_last=fix_last, kind=kind, backend="numpy"
        )
        assert rel_err(got, ref) <= 1e-7


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("readout", ["gap", "vanilla"])
def test_float32_within_1e_4(backend, readout):
    rng = np.random.default_rng(11)
    x = images(rng, 3, 7, 6, 3)
    for fix, depth in [(False, 3), (True, 9)]:
        ref = reference_matrix(x, x, depth, readout, fix, fix)
        got = kernel_matrix(x, depth=depth, readout=readout, fix=fix, dtype="float32", backend=backend)
        assert got.dtype == np.float64
        assert rel_err(got, ref) <= 1e-4


def test_float32_self_kernel_is_exact_on_the_diagonal():
    """An exact self pair has rho == 1 exactly, so float32 loses nothing to arccos near 1."""
    rng = np.random.default_rng(5)
    x = images(rng, 4, 12, 12, 3)
    ref = np.diag(reference_matrix(x, x, 6, "vanilla"))
    got = np.diag(kernel_matrix(x, depth=6, readout="vanilla", dtype="float32"))
    assert rel_err(got, ref) <= 1e-6


def test_positive_semidefinite():
    rng = np.random.default_rng(2)
    x = images(rng, 12, 6, 6, 2)
    for readout, fix in [("gap", True), ("vanilla", False)]:
        for kind in ["ntk", "nngp"]:
            k = kernel_matrix(x, depth=5, readout=readout, fix=fix, kind=kind)
            eig = np.linalg.eigvalsh(k)
            assert eig.min() >= -1e-10 * eig.max()


def fc_relu_ntk(u, n_conv, fix_first, fix_last):
    """Closed-form fully-connected ReLU NTK (c_sigma = 2) of unit-norm inputs with cosine ``u``.

    rho_0 = u, rho_h = kappa1(rho_{h-1}); Theta = sum_h rho_h prod_{h' > h} kappa0(rho_{h'-1}),
    the h = 0 term dropped for a fixed first layer and the h = L term for a fixed last layer.
    """
    kappa1 = lambda r: (np.sqrt(1 - r**2) + (np.pi - np.arccos(r)) * r) / np.pi  # noqa: E731
    kappa0 = lambda r: (np.pi - np.arccos(r)) / np.pi  # noqa: E731
    rhos = [u]
    for _ in range(n_conv):
        rhos.append(kappa1(rhos[-1]))
    total = 0.0
    for h in range(n_conv + 1):
        if (h == 0 and fix_first) or (h == n_conv and fix_last):
            continue
        term = rhos[h]
        for hp in range(h + 1, n_conv + 1):
            term = term * kappa0(rhos[hp - 1])
        total = total + term
    return total, rhos[n_conv]


@pytest.mark.parametrize("fix_first,fix_last", FIXES)
@pytest.mark.parametrize("readout", ["gap", "vanilla"])
def test_one_pixel_images_reduce_to_fully_connected_relu_ntk(fix_first, fix_last, readout):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 1, 1, 4))
    depth = 5
    ntk = kernel_matrix(x, depth=depth, readout=readout, fix_first=fix_first, fix_last=fix_last)
    nngp = kernel_matrix(x, depth=depth, readout=readout, kind="nngp")
    v = x.reshape(5, 4)
    norms = np.linalg.norm(v, axis=1)
    u = np.clip((v @ v.T) / np.outer(norms, norms), -1, 1)
    theta, sigma = fc_relu_ntk(u, depth - 1, fix_first, fix_last)
    scale = np.outer(norms, norms) / 9.0 ** (depth - 1)  # the 1/9 of each 3x3 conv, folded into ReLU
    assert rel_err(ntk, scale * theta) <= 1e-7
    assert rel_err(nngp, scale * sigma) <= 1e-7


def test_homogeneity():
    rng = np.random.default_rng(8)
    x = images(rng, 3, 5, 5, 2)
    k1 = kernel_matrix(x, depth=4)
    k2 = kernel_matrix(3.0 * x, depth=4)
    assert rel_err(k2, 9.0 * k1) <= 1e-12


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_extreme_pixel_scales_give_the_homogeneous_kernel(backend, dtype):
    """Pixels of 1e150 used to overflow the products into inf and NaN (1e20 in float32): images
    of extreme scale are scaled by a power of two (exact) and the kernel scaled back, so every
    value is c_i c_j K(x, x')_ij, with each image's own factor c_i (homogeneity), against the
    reference on the unscaled images."""
    rng = np.random.default_rng([8, len(dtype)])
    x = images(rng, 5, 4, 5, 2)
    scales = (
        np.array([1e150, 1e-150, 1.0, 2.0**40, 1e30])
        if dtype == "float64"
        else np.array([1e30, 1e-30, 1.0, 2.0**40, 3e-12])
    )
    big = x * scales[:, None, None, None]
    tol = 1e-7 if dtype == "float64" else 1e-4
    for readout, kind in [("gap", "ntk"), ("vanilla", "nngp")]:
        ref = reference_matrix(x, x[:3], 3, readout, False, True, kind) * np.outer(scales, scales[:3])
        got = kernel_matrix(
            big, big[:3], depth=3, readout=readout, fix_last=True, kind=kind, dtype=dtype, backend=backend
        )
        assert np.isfinite(got).all()
        assert rel_err(got, ref) <= tol, (readout, kind)
    sym = kernel_matrix(big, depth=3, dtype=dtype, backend=backend)
    assert (
        np.array_equal(sym, sym.T) and rel_err(sym, reference_matrix(x, x, 3, "gap") * np.outer(scales, scales)) <= tol
    )
    with pytest.raises(OverflowError, match="homogeneous"):
        kernel_matrix(x * 1e200, depth=3, backend=backend)  # the kernel itself is about 1e400


def test_zero_and_constant_images_give_finite_kernels():
    rng = np.random.default_rng(9)
    x = images(rng, 4, 6, 6, 3)
    x[0] = 0.0
    x[1, :3] = 0.0  # a constant (zero) region
    x[2] = 1.5  # a constant image
    for readout in ["gap", "vanilla"]:
        k = kernel_matrix(x, depth=6, readout=readout)
        assert np.isfinite(k).all()
        assert np.all(k[0] == 0.0)
        ref = reference_matrix(x, x, 6, readout)
        assert np.allclose(k, ref, rtol=1e-7, atol=0)


@pytest.mark.parametrize("readout", ["gap", "vanilla"])
@pytest.mark.parametrize(
    "kind,fix_first,fix_last", [("ntk", *fixes) for fixes in FIXES] + [("nngp", False, False)]
)  # the NNGP does not depend on fix (test_nngp_does_not_depend_on_fix)
def test_anticorrelated_images_equal_reference(readout, kind, fix_first, fix_last):
    """Correlations down to -1 in the first layer (x and -x, and nearly so), where the engine's
    angle formula needs the reflection for x < 0; later layers take the nonnegative branch only, and
    their correlations here start near 0 (K^(1) of rho = -1 is 0)."""
    rng = np.random.default_rng(13)
    x = images(rng, 2, 5, 4, 2)
    x2 = np.concatenate([-x, -x + 1e-4 * images(rng, 2, 5, 4, 2), images(rng, 1, 5, 4, 2)])
    ref = reference_matrix(x, x2, 4, readout, fix_first, fix_last, kind=kind)
    got = kernel_matrix(x, x2, depth=4, readout=readout, fix_first=fix_first, fix_last=fix_last, kind=kind)
    assert rel_err(got, ref) <= 1e-7


def test_tiling_and_out_give_identical_results(tmp_path):
    rng = np.random.default_rng(10)
    x1, x2 = images(rng, 7, 5, 5, 2), images(rng, 5, 5, 5, 2)
    a = kernel_matrix(x1, x2, depth=3)
    b = kernel_matrix(x1, x2, depth=3, block_size=2, progress=True)
    out = np.lib.format.open_memmap(tmp_path / "k.npy", mode="w+", dtype=np.float64, shape=(7, 5))
    c = kernel_matrix(x1, x2, depth=3, block_size=3, out=out)
    assert c is out
    assert np.array_equal(a, b) and np.array_equal(a, np.asarray(c))
    s1 = kernel_matrix(x1, depth=3)
    s2 = kernel_matrix(x1, depth=3, block_size=2)
    assert np.array_equal(s1, s2)
    # the symmetric Gram computes (x_i, x_j) for i < j as the cross kernel does, and the self
    # pairs (x_i, x_i) from half of their shift tiles (equal up to the sums' rounding)
    upper = np.triu(np.ones((7, 5), bool), k=1)
    assert np.array_equal(s1[:, :5][upper], kernel_matrix(x1, x1[:5], depth=3)[upper])
    assert np.allclose(s1[:, :5], kernel_matrix(x1, x1[:5], depth=3), rtol=1e-13, atol=0)


@pytest.mark.parametrize("p,q", [(1, 1), (1, 2), (3, 1), (5, 7), (6, 4), (8, 8)])
def test_self_pairs_from_half_the_shift_tiles_equal_the_full_sum(p, q):
    """A symmetric GAP Gram's diagonal comes from shift tiles 0 .. PQ/2 (weights 2 for the tiles
    that stand for their transposes); the cross kernel of the same images sums all PQ tiles."""
    from cntk_core.cpu_planes import self_pair_tiles

    tiles, weights = self_pair_tiles(p, q)
    assert weights.sum() == p * q and tiles[0] == 0 and (weights[1:-1] == 2).all()
    rng = np.random.default_rng([p, q, 11])
    x = images(rng, 3, p, q, 2)
    for (fix_first, fix_last), kind, depth in itertools.product(FIXES, ["ntk", "nngp"], [2, 5]):
        job = dict(depth=depth, fix_first=fix_first, fix_last=fix_last, kind=kind)
        sym, cross = kernel_matrix(x, **job), kernel_matrix(x, x.copy(), **job)
        np.testing.assert_allclose(np.diag(sym), np.diag(cross), rtol=1e-13, atol=1e-300)
        upper = np.triu(np.ones((3, 3), bool), k=1)  # pairs of different images: the same computation
        assert np.array_equal(sym[upper], cross[upper])
    ref = reference_matrix(x, x, 4, "gap", False, False)
    assert rel_err(kernel_matrix(x, depth=4), ref) <= 1e-7


def avgpool_reference(x, y):
    """[Conv, ReLU, AvgPool(2), Conv, ReLU, GlobalAvgPool, Dense] from reference.tr3, written out."""
    from reference import _diag, _relu_step, tr3

    def pool(t):
        p, q = t.shape[0] // 2, t.shape[1] // 2
        return t[: 2 * p, : 2 * q, : 2 * p, : 2 * q].reshape(p, 2, q, 2, p, 2, q, 2).mean(axis=(1, 3, 5, 7))

    sig = {k: tr3(np.einsum("ijc,klc->ijkl", a, b)) for k, (a, b) in {"xy": (x, y), "xx": (x, x), "yy": (y, y)}.items()}
    theta = sig["xy"].copy()
    for block in range(2):
        vx, vy = _diag(sig["xx"]), _diag(sig["yy"])
        k = {
            "xy": _relu_step(sig["xy"], vx, vy),
            "xx": _relu_step(sig["xx"], vx, vx),
            "yy": _relu_step(sig["yy"], vy, vy),
        }
        theta = k["xy"][1] * theta
        sig = {key: val[0] for key, val in k.items()}
        if block == 0:
            sig = {key: tr3(pool(val)) for key, val in sig.items()}
            theta = tr3(pool(theta)) + sig["xy"]
    p, q = theta.shape[0], theta.shape[1]
    return (theta + sig["xy"]).sum() / (p * q) ** 2


def test_layer_api_avgpool_network_matches_written_out_reference():
    rng = np.random.default_rng(12)
    x = images(rng, 3, 6, 5, 2)
    net = Network([Conv(3), ReLU(), AvgPool(2), Conv(3), ReLU(), GlobalAvgPool(), Dense()])
    assert net.canonical() is None
    got = network_kernel(net, x)
    ref = np.array([[avgpool_reference(a, b) for b in x] for a in x])
    assert rel_err(got, ref) <= 1e-7


def test_preset_is_a_plain_layer_list_and_dispatches_to_the_fused_path():
    net = cntk_core.cntk(4, "vanilla", fix=True)
    assert list(net) == [Conv(3, fixed=True), ReLU(), Conv(3), ReLU(), Conv(3), ReLU(), Flatten(), Dense(fixed=True)]
    assert net.canonical() == cntk_core.Architecture(4, "vanilla", True, True)
    assert "[Conv 3x3, ReLU] x 2" in net.describe()
    rng = np.random.default_rng(13)
    x = images(rng, 3, 5, 5, 2)
    assert np.array_equal(network_kernel(net, x), kernel_matrix(x, depth=4, readout="vanilla", fix=True))


def test_network_order_is_validated():
    with pytest.raises(ValueError, match="readout"):
        Network([Conv(3), ReLU()])
    with pytest.raises(ValueError, match="cannot come"):
        Network([Conv(3), GlobalAvgPool(), ReLU(), Dense()])
    with pytest.raises(ValueError, match="odd"):
        Conv(4)
    with pytest.raises(TypeError):
        Network([Conv(3), "relu"])
    with pytest.raises(TypeError, match="list of Layer objects"):
        Network(None)
    with pytest.raises(ValueError, match="then Dense"):
        Network([Conv(3), ReLU(), GlobalAvgPool()])  # no final Dense layer
    x = np.random.default_rng(0).standard_normal((2, 4, 4, 1))
    with pytest.raises(ValueError, match="no layers"):
        network_kernel([], x)


BAD_INPUTS = [
    (lambda x: x[0], ValueError, "rank 4"),
    (lambda x: x.astype(np.uint8), TypeError, "integer"),
    (lambda x: x[:0], ValueError, "empty"),
    (lambda x: np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x), ValueError, "non-finite"),
    (lambda x: x.astype(complex), TypeError, "real floating"),
]


@pytest.mark.parametrize("transform,error,message", BAD_INPUTS)
def test_bad_inputs_give_clear_errors(transform, error, message):
    x = np.random.default_rng(0).standard_normal((2, 4, 4, 3))
    with pytest.raises(error, match=message):
        kernel_matrix(transform(x), depth=3)


def test_bad_arguments_give_clear_errors():
    x = np.random.default_rng(0).standard_normal((2, 4, 4, 3))
    with pytest.raises(ValueError, match="same image shape"):
        kernel_matrix(x, x[..., :2], depth=3)
    with pytest.raises(ValueError, match="same image shape"):
        kernel_matrix(x, x[:, :3], depth=3)
    with pytest.raises(ValueError, match="depth must be an integer >= 2"):
        kernel_matrix(x, depth=1)
    with pytest.raises(ValueError, match="readout"):
        kernel_matrix(x, depth=3, readout="max")
    with pytest.raises(ValueError, match="kind"):
        kernel_matrix(x, depth=3, kind="gp")
    with pytest.raises(ValueError, match="dtype"):
        kernel_matrix(x, depth=3, dtype="float16")
    with pytest.raises(ValueError, match="unknown backend"):
        kernel_matrix(x, depth=3, backend="tpu")
    with pytest.raises(ValueError, match="out must be"):
        kernel_matrix(x, depth=3, out=np.empty((3, 3)))
    for bad, exc in ((0, ValueError), (-1, ValueError), (2.5, TypeError), (True, TypeError)):
        with pytest.raises(exc, match="block_size must be an integer >= 1"):
            kernel_matrix(x, depth=3, block_size=bad)
    with pytest.raises(ValueError, match="block_size"):
        cntk_core.kernel_matrices(x, depths=[2, 3], backend="numpy", block_size=-1)
    with pytest.raises(TypeError, match="depth must be an integer"):
        kernel_matrix(x, depth=3.5)
    with pytest.raises(TypeError, match="progress must be True or False"):
        kernel_matrix(x, depth=3, progress="no")
    with pytest.raises(ValueError, match="float64 array of shape"):
        kernel_matrix(x, depth=3, out=[[0.0, 0.0], [0.0, 0.0]])
    read_only = np.empty((2, 2))
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        kernel_matrix(x, depth=3, out=read_only)
    with pytest.raises(TypeError, match="backend must be a string"):
        kernel_matrix(x, depth=3, backend=1)
    for name in ("fix", "fix_first", "fix_last"):  # "no" is truthy: it must not read as True
        with pytest.raises(TypeError, match=f"{name} must be True or False"):
            kernel_matrix(x, depth=3, **{name: "no"})
    with pytest.raises(TypeError, match="Conv fixed"):
        Conv(3, fixed="no")
    with pytest.raises(TypeError, match="Dense fixed"):
        Dense(fixed=2)
    with pytest.raises(TypeError, match="Conv size must be an integer"):
        Conv(True)
    with pytest.raises(ValueError, match="odd"):
        Conv(4)
    assert Conv(np.int64(3)) == Conv(3) and Dense(np.True_) == Dense(True)
    assert np.array_equal(kernel_matrix(x, depth=3, fix=np.True_), kernel_matrix(x, depth=3, fix=True))
    assert np.array_equal(kernel_matrix(x, depth=np.int64(3)), kernel_matrix(x, depth=3))


def test_backend_choice(monkeypatch):
    from cntk_core import backend

    monkeypatch.setenv("CNTK_BACKEND", "numpy")
    assert backend.resolve_backend() == "numpy"
    assert backend.resolve_backend("numba") == "numba"
    monkeypatch.setenv("CNTK_BACKEND", "gpu")
    with pytest.raises(ValueError, match="CNTK_BACKEND"):  # says where the bad name came from
        backend.resolve_backend()
    monkeypatch.delenv("CNTK_BACKEND")
    if not backend.gpu_status()[0]:
        assert backend.resolve_backend() == "numba"
        with pytest.raises(RuntimeError, match="unusable"):
            backend.resolve_backend("cupy")


@pytest.mark.parametrize("depths", [[2.7], [3, 3.5], "34", ["3"], [True, 3], None, [np.nan]])
def test_kernel_matrices_refuses_depths_that_are_not_integers(depths):
    """int() turned 2.7 into 2, "34" into 34 and True into 1."""
    x = np.random.default_rng(0).standard_normal((2, 4, 4, 1))
    with pytest.raises(TypeError, match=r"depths(\[\d\])? must be"):
        cntk_core.kernel_matrices(x, depths=depths)


def test_kernel_matrices_accepts_integer_collections():
    x = np.random.default_rng(0).standard_normal((2, 4, 4, 1))
    expected = cntk_core.kernel_matrices(x, depths=[2, 3])
    for depths in ([3, 2, 3], np.array([2, 3]), range(2, 4), (np.int64(2), 3)):
        got = cntk_core.kernel_matrices(x, depths=depths)
        assert sorted(got) == [2, 3] and all(np.array_equal(got[d], expected[d]) for d in got)
    assert sorted(cntk_core.kernel_matrices(x, depths=3)) == [3]
    with pytest.raises(ValueError, match="at least one depth"):
        cntk_core.kernel_matrices(x, depths=[])


def test_import_is_quiet_and_does_not_import_cupy():
    code = "import sys, cntk_core; assert 'cupy' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, env=os.environ)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok" and out.stderr == ""


@pytest.mark.parametrize(
    "readout,fix_first,fix_last",
    [
        ("vanilla", False, False),
        ("gap", True, True),
        ("gap", False, True),
        ("gap", True, False),
        ("vanilla", True, False),
    ],
)
@pytest.mark.parametrize("kind", ["ntk", "nngp"])
def test_kernel_matrices_reads_every_depth_out_in_one_pass(readout, fix_first, fix_last, kind):
    rng = np.random.default_rng(14)
    x1, x2 = images(rng, 3, 6, 5, 2), images(rng, 2, 6, 5, 2)
    opts = dict(readout=readout, fix_first=fix_first, fix_last=fix_last, kind=kind)
    many = cntk_core.kernel_matrices(x1, x2, depths=[6, 2, 4], **opts)
    assert sorted(many) == [2, 4, 6]
    for d, k in many.items():
        assert rel_err(k, reference_matrix(x1, x2, d, readout, fix_first, fix_last, kind)) <= 1e-7
    sym = cntk_core.kernel_matrices(x1, depths=[3, 5], backend="numpy", **opts)
    for d, k in sym.items():
        assert rel_err(k, reference_matrix(x1, x1, d, readout, fix_first, fix_last, kind)) <= 1e-7
