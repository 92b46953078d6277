"""The Gram driver (cntk_core.gram: kernel_matrix, kernel_matrices, network_kernel) against the 4-D
reference and against theory: symmetric Grams, positive semidefiniteness, the fully-connected ReLU NTK
that one-pixel images reduce to, homogeneity and the rescaling of extreme images, tiles and ``out=``,
every depth from one pass, and the refusals of bad images and arguments (each naming its parameter).
More of what kernel_matrix accepts and refuses: test_gram_inputs.py."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_images, raises_param, rel_err

import cntk_core
from cntk_core import ParameterError, ParameterTypeError, kernel_matrix
from cntk_core.testing import reference_matrix

FIXES = [(False, False), (True, True), (True, False), (False, True)]


@pytest.mark.parametrize("readout", ["gap", "vanilla"])
@pytest.mark.parametrize("fix", [False, True])
def test_symmetric_gram_equals_reference(readout, fix):
    x = make_images(4, (6, 5, 2), seed=7)
    ref = reference_matrix(x, x, 4, readout, fix, fix)
    got = kernel_matrix(x, depth=4, readout=readout, fix=fix)
    assert rel_err(got, ref) <= 1e-7
    assert np.array_equal(got, got.T)


def test_nngp_does_not_depend_on_fix():
    x = make_images(3, (5, 5, 2), seed=3)
    a = kernel_matrix(x, depth=3, fix=False, kind="nngp")
    b = kernel_matrix(x, depth=3, fix=True, kind="nngp")
    assert np.array_equal(a, b)


def test_positive_semidefinite():
    x = make_images(12, (6, 6, 2), seed=2)
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
    x = make_images(5, (1, 1, 4), seed=4)
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
    x = make_images(3, (5, 5, 2), seed=8)
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
    x = make_images(5, (4, 5, 2), seed=[8, len(dtype)])
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
    with pytest.raises(OverflowError, match="homogeneous"):  # the message explains the way out
        kernel_matrix(x * 1e200, depth=3, backend=backend)  # the kernel itself is about 1e400


def test_zero_and_constant_images_give_finite_kernels():
    x = make_images(4, (6, 6, 3), seed=9)
    x[0] = 0.0
    x[1, :3] = 0.0  # a constant (zero) region
    x[2] = 1.5  # a constant image
    for readout in ["gap", "vanilla"]:
        k = kernel_matrix(x, depth=6, readout=readout)
        assert np.isfinite(k).all()
        assert np.all(k[0] == 0.0)
        ref = reference_matrix(x, x, 6, readout)
        assert np.allclose(k, ref, rtol=1e-7, atol=0)


def test_tiling_and_out_give_identical_results(tmp_path):
    z = make_images(12, (5, 5, 2), seed=10)
    x1, x2 = z[:7], z[7:]
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
    # pairs (x_i, x_i) from half of their shift blocks (equal up to the sums' rounding)
    upper = np.triu(np.ones((7, 5), bool), k=1)
    assert np.array_equal(s1[:, :5][upper], kernel_matrix(x1, x1[:5], depth=3)[upper])
    assert np.allclose(s1[:, :5], kernel_matrix(x1, x1[:5], depth=3), rtol=1e-13, atol=0)


# -- kernel_matrices: every depth from one pass ------------------------------------------------------------
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
    z = make_images(5, (6, 5, 2), seed=14)
    x1, x2 = z[:3], z[3:]
    opts = dict(readout=readout, fix_first=fix_first, fix_last=fix_last, kind=kind)
    many = cntk_core.kernel_matrices(x1, x2, depths=[6, 2, 4], **opts)
    assert sorted(many) == [2, 4, 6]
    for d, k in many.items():
        assert rel_err(k, reference_matrix(x1, x2, d, readout, fix_first, fix_last, kind)) <= 1e-7
    sym = cntk_core.kernel_matrices(x1, depths=[3, 5], backend="numpy", **opts)
    for d, k in sym.items():
        assert rel_err(k, reference_matrix(x1, x1, d, readout, fix_first, fix_last, kind)) <= 1e-7


@pytest.mark.parametrize("depths", [[2.7], [3, 3.5], "34", ["3"], [True, 3], None, [np.nan]])
def test_kernel_matrices_refuses_depths_that_are_not_integers(depths):
    """int() turned 2.7 into 2, "34" into 34 and True into 1."""
    with raises_param("depths", ParameterTypeError):
        cntk_core.kernel_matrices(make_images(2, (4, 4, 1)), depths=depths)


def test_kernel_matrices_accepts_integer_collections():
    x = make_images(2, (4, 4, 1))
    expected = cntk_core.kernel_matrices(x, depths=[2, 3])
    for depths in ([3, 2, 3], np.array([2, 3]), range(2, 4), (np.int64(2), 3)):
        got = cntk_core.kernel_matrices(x, depths=depths)
        assert sorted(got) == [2, 3] and all(np.array_equal(got[d], expected[d]) for d in got)
    assert sorted(cntk_core.kernel_matrices(x, depths=3)) == [3]
    with raises_param("depths"):
        cntk_core.kernel_matrices(x, depths=[])


# -- refusals --------------------------------------------------------------------------------------------------
BAD_INPUTS = [  # one parameter (x1), five refusals: the message says which
    (lambda x: x[0], ParameterError, "rank 4"),
    (lambda x: x.astype(np.uint8), ParameterTypeError, "integer"),
    (lambda x: x[:0], ParameterError, "empty"),
    (lambda x: np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x), ParameterError, "non-finite"),
    (lambda x: x.astype(complex), ParameterTypeError, "real floating"),
]


@pytest.mark.parametrize("transform,error,message", BAD_INPUTS)
def test_bad_inputs_give_clear_errors(transform, error, message):
    x = make_images(2, (4, 4, 3))
    with raises_param("x1", error, match=message):
        kernel_matrix(transform(x), depth=3)


def test_bad_arguments_give_clear_errors():
    x = make_images(2, (4, 4, 3))
    with raises_param("x2"):  # the same image shape as x1
        kernel_matrix(x, x[..., :2], depth=3)
    with raises_param("x2"):
        kernel_matrix(x, x[:, :3], depth=3)
    with raises_param("depth"):
        kernel_matrix(x, depth=1)
    with raises_param("readout"):
        kernel_matrix(x, depth=3, readout="max")
    with raises_param("kind"):
        kernel_matrix(x, depth=3, kind="gp")
    with raises_param("dtype"):
        kernel_matrix(x, depth=3, dtype="float16")
    with raises_param("backend"):
        kernel_matrix(x, depth=3, backend="tpu")
    with raises_param("out"):  # the wrong shape
        kernel_matrix(x, depth=3, out=np.empty((3, 3)))
    for bad, error in (
        (0, ParameterError),
        (-1, ParameterError),
        (2.5, ParameterTypeError),
        (True, ParameterTypeError),
    ):
        with raises_param("block_size", error):
            kernel_matrix(x, depth=3, block_size=bad)
    with raises_param("block_size"):
        cntk_core.kernel_matrices(x, depths=[2, 3], backend="numpy", block_size=-1)
    with raises_param("depth", ParameterTypeError):
        kernel_matrix(x, depth=3.5)
    with raises_param("progress", ParameterTypeError):
        kernel_matrix(x, depth=3, progress="no")
    with raises_param("out"):  # not an array
        kernel_matrix(x, depth=3, out=[[0.0, 0.0], [0.0, 0.0]])
    read_only = np.empty((2, 2))
    read_only.flags.writeable = False
    with raises_param("out", match="writeable"):  # says what to pass instead
        kernel_matrix(x, depth=3, out=read_only)
    with raises_param("backend", ParameterTypeError):
        kernel_matrix(x, depth=3, backend=1)
    for name in ("fix", "fix_first", "fix_last"):  # "no" is truthy: it must not read as True
        with raises_param(name, ParameterTypeError):
            kernel_matrix(x, depth=3, **{name: "no"})
    assert np.array_equal(kernel_matrix(x, depth=3, fix=np.True_), kernel_matrix(x, depth=3, fix=True))
    assert np.array_equal(kernel_matrix(x, depth=np.int64(3)), kernel_matrix(x, depth=3))
