"""The CUDA kernels built for the CPU (``tests/cuda_host.py``): several emulated threads per block in
barrier phases, every thread order, against the independent float64 reference (:mod:`cntk_core.testing`),
for the GAP, vanilla and LAP readouts;
the float32 range window of the GPU kernel (``cntk_core.scaling.exponent_window``) at both ends, with
flush-to-zero as NVRTC's ``-ftz=true``; and that these tests fail on a kernel with a missing barrier
or a wrong split of entries among threads.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_images, rel_err
from cuda_host import DIVERGENT, ORDERS, PLANES, SHUFFLED, build_host_lib, host_matrix, launch_shift_blocks
from gpu_emulator import emulate_matrix

import cntk_core
from cntk_core.gpu import threads_for
from cntk_core.scaling import exponent_window
from cntk_core.scaling import unit_scaled as _unit_scaled
from cntk_core.testing import reference_kernel, reference_matrix

TOL = {"float32": 1e-4, "float64": 1e-12}


@pytest.fixture(scope="module")
def lib():
    return build_host_lib()


def _pairs(shape, seed, n=2):
    z = make_images(n + 1, shape, seed=seed)
    return z[:n], np.concatenate([z[n:], z[:1]])  # x2 includes an exact self pair


# (shape, depth, readout, fix, kind, threads): 8 threads leave several entries to each thread and
# do not divide Q; threads_for(P, Q) is the engine's block (more threads than entries for 5x7)
CASES = [
    ((5, 7, 2), 3, "gap", True, "ntk", 8),
    ((5, 7, 2), 3, "gap", True, "ntk", None),
    ((6, 6, 3), 4, "gap", False, "ntk", 16),
    ((4, 9, 1), 2, "gap", False, "nngp", None),
    ((9, 13, 3), 5, "vanilla", False, "ntk", 32),
    ((8, 8, 3), 21, "vanilla", True, "ntk", None),
    ((7, 5, 2), 6, "vanilla", False, "nngp", 4),
]


@pytest.mark.parametrize("order", ORDERS, ids=["forward", "reverse", "shuffled"])
@pytest.mark.parametrize("shape,depth,readout,fix,kind,threads", CASES)
def test_host_kernels_match_reference(lib, shape, depth, readout, fix, kind, threads, order):
    x1, x2 = _pairs(shape, depth * 31 + shape[1])
    ref = reference_matrix(x1, x2, depth, readout, fix, fix, kind)
    for dtype in ("float64", "float32"):
        got = host_matrix(lib, x1, x2, depth, readout, fix, fix, kind, dtype, threads=threads, order=order)
        np.testing.assert_allclose(got, ref, rtol=TOL[dtype], atol=TOL[dtype] * np.abs(ref).max())


# LAP (zero padding): (shape, depth, c, fix_first, fix_last, kind, threads). Non-square and odd
# sizes; c = 0 (vanilla), 1, 2, a c whose 4c+1 covers one axis but not the other (7x13, c = 2),
# and c >= max(P, Q) - 1 (every shift block, every weight P*Q; the kernel gets c capped at 4).
LAP_CASES = [
    ((5, 7, 2), 3, 1, True, True, "ntk", 8),
    ((6, 4, 3), 4, 2, False, False, "nngp", None),
    ((7, 6, 1), 3, 0, False, True, "ntk", 16),
    ((7, 13, 2), 3, 2, True, False, "ntk", 32),
    ((4, 5, 2), 3, 6, False, False, "ntk", 8),
    ((3, 8, 3), 5, 1, True, True, "nngp", None),
]


@pytest.mark.parametrize("order", ORDERS, ids=["forward", "reverse", "shuffled"])
@pytest.mark.parametrize("shape,depth,c,fix_first,fix_last,kind,threads", LAP_CASES)
def test_host_lap_kernels_match_reference(lib, shape, depth, c, fix_first, fix_last, kind, threads, order):
    x1, x2 = _pairs(shape, depth * 17 + c)
    ref = reference_matrix(x1, x2, depth, "lap", fix_first, fix_last, kind, lap_c=c)
    for dtype in ("float64", "float32"):
        got = host_matrix(
            lib, x1, x2, depth, "lap", fix_first, fix_last, kind, dtype, lap_c=c, threads=threads, order=order
        )
        np.testing.assert_allclose(got, ref, rtol=TOL[dtype], atol=TOL[dtype] * np.abs(ref).max())


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_host_lap_window_zero_is_vanilla_bit_for_bit(lib, dtype):
    """c = 0: one shift block, (0, 0), every weight 1, scale 1: the vanilla kernel exactly."""
    x1, x2 = _pairs((7, 5, 3), 4)
    args = (x1, x2, 4, "lap", False, True, "ntk", dtype)
    lap = host_matrix(lib, *args, lap_c=0, order=SHUFFLED)
    vanilla = host_matrix(lib, x1, x2, 4, "vanilla", False, True, "ntk", dtype, order=SHUFFLED)
    np.testing.assert_array_equal(lap, vanilla)


def test_host_lap_kernels_agree_with_numpy_emulation(lib):
    """The C++ kernel's closed-form LAP weights and the emulator's literal counts agree to rounding."""
    x = make_images(3, (6, 7, 2), seed=8)
    for c in (1, 2, 9):
        spec = cntk_core.Architecture(4, "lap", False, True, lap_c=c)
        emu = emulate_matrix(x[:2], x[1:], spec, "ntk")
        host = host_matrix(lib, x[:2], x[1:], 4, "lap", False, True, "ntk", "float64", lap_c=c, order=SHUFFLED)
        np.testing.assert_allclose(host, emu, rtol=1e-13)


def test_host_kernels_agree_with_numpy_emulation(lib):
    """Two independent statements of one thread block (C++ and NumPy) agree to float64 rounding."""
    x = make_images(2, (6, 5, 2), seed=5)
    spec = cntk_core.cntk(5, "gap", True).canonical()
    emu = emulate_matrix(x, x, spec, "ntk")
    host = host_matrix(lib, x, x, 5, "gap", True, True, "ntk", "float64", order=SHUFFLED)
    np.testing.assert_allclose(host, emu, rtol=1e-13)


def test_host_vanilla_self_kernel_float32_exact_diagonal(lib):
    """Exact self pairs see rho == 1 exactly: float32 vanilla self-kernel within 1e-6 of float64."""
    x = make_images(3, (16, 16, 3), seed=11)
    ref = np.array([reference_kernel(a, a, 21, "vanilla") for a in x])
    got = np.diag(host_matrix(lib, x, x, 21, "vanilla", False, False, "ntk", "float32"))
    assert np.max(np.abs(got - ref) / np.abs(ref)) <= 1e-6


# ---------------------------------------------------------------------------------------------
# float32 range of the GPU kernel: the window's top is tight, its bottom keeps flush-to-zero harmless
# ---------------------------------------------------------------------------------------------


def test_exponent_window_values():
    assert exponent_window(np.float32, 3) == (-13, 29)
    assert exponent_window(np.float64, 3) == exponent_window("float64", 1) == (-32, 32)
    tops = [exponent_window(np.float32, c)[1] for c in (1, 3, 16, 3072)]
    assert tops == [30, 29, 28, 24]  # more channels, larger variances: a lower top


@pytest.mark.parametrize("channels", [1, 3, 16])
def test_window_top_is_the_last_exponent_the_gpu_products_survive(lib, channels):
    """Worst case for the products va * vb (= 81 C^2 peak^4): a constant image with every pixel just
    below 2^e. At the window's top the float32 kernel is right; one binade higher it is not finite."""
    hi = exponent_window(np.float32, channels)[1]
    x0 = np.full((1, 5, 5, channels), 1 - 2.0**-24)
    for readout in ("vanilla", "gap"):
        ref = reference_matrix(x0, x0, 3, readout, False, False, "ntk")
        top = host_matrix(lib, x0 * 2.0**hi, x0 * 2.0**hi, 3, readout, False, False, "ntk", "float32")
        assert rel_err(top / 4.0**hi, ref, floor=1) <= 1e-6
        with np.errstate(all="ignore"):
            over = host_matrix(
                lib, x0 * 2.0 ** (hi + 1), x0 * 2.0 ** (hi + 1), 3, readout, False, False, "ntk", "float32"
            )
        assert not np.isfinite(over).any()


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_one_window_for_every_engine(backend):
    """The per-layer engine (NumPy here, CuPy's baseline on a GPU) forms va * vb too: float32 images
    at 2^30 overflowed it under the old [-32, 32] window. The shared rule scales them, and exactly:
    the values are the scaled ones bit for bit, on every engine."""
    x = make_images(3, (5, 5, 3), seed=0)
    base = cntk_core.kernel_matrix(x, depth=3, dtype="float32", backend=backend)
    for k in (30, -20):
        got = cntk_core.kernel_matrix(x * 2.0**k, depth=3, dtype="float32", backend=backend)
        np.testing.assert_array_equal(got, base * 4.0**k)


def _wide_images():
    """8x8x3 images whose amplitude falls 4x per step along i + j (variances spanning 2^56), largest
    |pixel| in [1/2, 1)."""
    i, j = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    x = make_images(2, (8, 8, 3), seed=0) * (4.0 ** -(i + j))[None, :, :, None]
    return np.ldexp(x, -np.frexp(np.abs(x).max(axis=(1, 2, 3)))[1][:, None, None, None])


def test_window_bottom_keeps_flush_to_zero_within_float32_rounding(lib):
    """With flush-to-zero (NVRTC's -ftz=true) images at the window's bottom lose only entries below
    float32's rounding; 12 binades lower the flushed entries change the kernel by > 1e-3, and the
    rule's exact power-of-two rescaling brings it back."""
    lo = exponent_window(np.float32, 3)[0]
    base = _wide_images()
    ref = reference_matrix(base, base, 3, "gap", False, False, "ntk")

    def ftz_error(e):  # images base * 2^e, kernel scaled back by 2^-2e
        x = np.ldexp(base, e)
        got = host_matrix(lib, x, x, 3, "gap", False, False, "ntk", "float32", ftz=True)
        return rel_err(np.ldexp(got, -2 * e), ref, floor=1)

    assert ftz_error(lo) <= 1e-6  # float32's own error on ordinary images: ~2e-8..3e-7
    assert ftz_error(lo - 12) > 1e-3
    scaled, e = _unit_scaled(np.ldexp(base, lo - 12), np.float32)
    assert (e == lo - 12).all()
    np.testing.assert_array_equal(scaled, base)  # which is exponent 0: in the window
    assert ftz_error(0) <= 1e-6


def test_flush_to_zero_changes_nothing_for_ordinary_images(lib):
    x1, x2 = _pairs((6, 6, 3), 3)
    args = (x1, x2, 5, "gap", False, False, "ntk", "float32")
    np.testing.assert_array_equal(host_matrix(lib, *args, ftz=True), host_matrix(lib, *args))


# ---------------------------------------------------------------------------------------------
# the tests above fail on a broken kernel (mutated copies of the source, built in tmp_path)
# ---------------------------------------------------------------------------------------------

_LAYER_BARRIER = "            }\n        }\n        CNTK_SYNC();\n        T* tmp = s_src;"
MUTATIONS = {
    # the barrier between layers dropped: a layer reads neighbours before the other threads wrote them
    "missing-layer-barrier": [(_LAYER_BARRIER, _LAYER_BARRIER.replace("        CNTK_SYNC();\n", ""))],
    # thread t starts at entry 2t: some entries twice, some never; the same as the real split for
    # one thread, so the old one-thread host build could not see it
    "wrong-split": [("for (int e = tid; e < PQ; e += nt)", "for (int e = 2 * tid; e < PQ; e += nt)")],
}


def _mutant(tmp_path, name):
    text = PLANES.read_text()
    for old, new in MUTATIONS[name]:
        assert old in text, f"mutation {name} no longer applies: {old!r}"
        text = text.replace(old, new)
    path = tmp_path / f"{name}.cu"
    path.write_text(text)
    return build_host_lib(path)


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_broken_kernels_fail_these_tests(tmp_path, name):
    bad = _mutant(tmp_path, name)
    shape, depth, readout, fix, kind, threads = CASES[0]
    x1, x2 = _pairs(shape, depth * 31 + shape[1])
    ref = reference_matrix(x1, x2, depth, readout, fix, fix, kind)
    one = host_matrix(bad, x1, x2, depth, readout, fix, fix, kind, "float64", threads=1)
    np.testing.assert_allclose(one, ref, rtol=1e-12)  # invisible with one thread
    for order in ORDERS:
        with np.errstate(invalid="ignore"):
            got = host_matrix(bad, x1, x2, depth, readout, fix, fix, kind, "float64", threads=threads, order=order)
        assert not np.allclose(got, ref, rtol=1e-4), f"order {order}"


#: mutations of the LAP weight (lap_count): the window's top edge not clamped to the axis (weights
#: of entries near the far edge too large), and the count one short (the closed form's "+ 1" lost)
LAP_MUTATIONS = {
    "lap-top-unclamped": ("b = hi < n - 1 ? hi : n - 1", "b = hi"),
    "lap-count-short": ("return b >= a ? b - a + 1 : 0;", "return b >= a ? b - a : 0;"),
}


@pytest.mark.parametrize("name", sorted(LAP_MUTATIONS))
def test_broken_lap_weights_fail_these_tests(tmp_path, name):
    old, new = LAP_MUTATIONS[name]
    text = PLANES.read_text()
    assert old in text, f"mutation {name} no longer applies: {old!r}"
    path = tmp_path / f"{name}.cu"
    path.write_text(text.replace(old, new))
    bad = build_host_lib(path)
    shape, depth, c, fix_first, fix_last, kind, threads = LAP_CASES[0]
    x1, x2 = _pairs(shape, depth * 17 + c)
    ref = reference_matrix(x1, x2, depth, "lap", fix_first, fix_last, kind, lap_c=c)
    got = host_matrix(bad, x1, x2, depth, "lap", fix_first, fix_last, kind, "float64", lap_c=c, threads=threads)
    assert not np.allclose(got, ref, rtol=1e-4)
    # GAP and vanilla do not use the weights: unchanged
    np.testing.assert_array_equal(
        host_matrix(bad, x1, x2, depth, "gap", True, True, kind, "float64"),
        host_matrix(build_host_lib(), x1, x2, depth, "gap", True, True, kind, "float64"),
    )


def test_emulation_reports_a_divergent_barrier(tmp_path):
    """A barrier inside the per-entry loop is reached a different number of times by different
    threads (undefined behaviour on the GPU): the launch says so."""
    text = PLANES.read_text().replace("        s0[e] = acc;\n", "        s0[e] = acc;\n        CNTK_SYNC();\n", 1)
    assert "s0[e] = acc;\n        CNTK_SYNC();" in text
    path = tmp_path / "divergent.cu"
    path.write_text(text)
    bad = build_host_lib(path)
    x = make_images(1, (5, 7, 2), seed=0)
    v = np.zeros((1, 2, 5, 7))
    idx = np.zeros(1, np.int32)
    nt = threads_for(5, 7)
    args = (x, x, v, v, idx, idx, np.zeros(2, np.int32), 1, 5, 7, 2, 2, 1, 0, 1, 1, -1, np.zeros(1))
    assert launch_shift_blocks(bad, 1, 8, 8 * 8 + 4 * 35 * 8, args) & DIVERGENT
    assert launch_shift_blocks(build_host_lib(), 1, nt, nt * 8 + 4 * 35 * 8, args) == 0
