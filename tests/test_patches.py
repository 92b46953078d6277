"""cntk_core.data.RandomPatches (Coates et al.'s random-patch first layer): transform against a literal loop,
fit against an independent cut / normalise / SVD-whitening of the drawn patches, the draw itself
(training images only, inside them, seeded), and the refusals of bad arguments."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import raises_param

from cntk_core.data import RandomPatches
from cntk_core.validation import ParameterTypeError


def _x(seed: int, n: int, h: int = 6, w: int = 5, c: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, h, w, c))


def _literal_transform(x: np.ndarray, filters: np.ndarray, bias: float, pool: int) -> np.ndarray:
    """The definition, one output value at a time: SAME cross-correlation (zeros outside; the extra
    padding of an even size at the bottom/right), both thresholds, then pool x pool block means."""
    m, h, w, c = x.shape
    k, s = filters.shape[0], filters.shape[1]
    t = (s - 1) // 2
    feats = np.zeros((m, h, w, 2 * k))
    for n in range(m):
        for i in range(h):
            for j in range(w):
                for f in range(k):
                    z = 0.0
                    for a in range(s):
                        for b in range(s):
                            r, q = i + a - t, j + b - t
                            if 0 <= r < h and 0 <= q < w:
                                for ch in range(c):
                                    z += x[n, r, q, ch] * filters[f, a, b, ch]
                    feats[n, i, j, f] = max(z - bias, 0.0)
                    feats[n, i, j, k + f] = max(-z - bias, 0.0)
    out = np.zeros((m, h // pool, w // pool, 2 * k))
    for i in range(h // pool):
        for j in range(w // pool):
            for a in range(pool):
                for b in range(pool):
                    out[:, i, j, :] += feats[:, i * pool + a, j * pool + b, :] / pool**2
    return out


@pytest.mark.parametrize(
    "size, pool, shape",
    [(3, 1, (6, 5, 2)), (4, 1, (6, 5, 2)), (1, 2, (4, 6, 2)), (5, 3, (6, 6, 3)), (2, 2, (4, 4, 2))],
)
def test_transform_matches_the_literal_loop(size, pool, shape):
    h, w, c = shape
    x_train, x = _x(1, 5, h, w, c), _x(2, 3, h, w, c)
    rp = RandomPatches(n_patches=4, size=size, bias=0.3, seed=7, pool=pool).fit(x_train)
    got = rp.transform(x)
    assert got.dtype == np.float64 and got.shape == (3, h // pool, w // pool, 8)
    np.testing.assert_allclose(got, _literal_transform(x, rp.filters, 0.3, pool), rtol=1e-12, atol=1e-12)
    assert (got > 0).any()  # the check is not vacuous
    # float32 pixels give the same float64 features; a bigger image works with the same filters
    np.testing.assert_allclose(rp.transform(x.astype(np.float32)), rp.transform(x.astype(np.float32).astype(float)))
    big = _x(3, 1, 2 * h, 2 * w, c)
    want = _literal_transform(big, rp.filters, 0.3, pool)
    np.testing.assert_allclose(rp.transform(big), want, rtol=1e-12, atol=1e-12)


def test_transform_in_several_chunks(monkeypatch):
    import cntk_core.data._patches as patches

    x_train, x = _x(4, 6), _x(5, 7)
    rp = RandomPatches(n_patches=3, size=3, bias=0.0, seed=1).fit(x_train)
    whole = rp.transform(x)
    monkeypatch.setattr(patches, "_CHUNK_VALUES", 1)  # one image per chunk
    np.testing.assert_array_equal(rp.transform(x), whole)
    np.testing.assert_allclose(whole, _literal_transform(x, rp.filters, 0.0, 1), rtol=1e-12, atol=1e-12)


def _whitened_reference(v: np.ndarray, eps: float) -> np.ndarray:
    """ZCA of the rows of ``v`` through the SVD of the centred matrix (not an eigendecomposition of C)."""
    k, d = v.shape
    centred = v - v.mean(axis=0)
    _, sig, vt = np.linalg.svd(centred, full_matrices=True)
    s = np.zeros(d)
    s[: len(sig)] = sig**2 / k
    return centred @ vt.T @ np.diag((s + eps * s.sum() / d) ** -0.5) @ vt


@pytest.mark.parametrize("n_patches, eps", [(10, 0.01), (40, 0.5), (60, 1e-6)])  # fewer and more than d = 18
def test_fit_cuts_normalises_and_whitens_the_drawn_patches(n_patches, eps):
    x_train = _x(6, 4)
    rp = RandomPatches(n_patches=n_patches, size=3, seed=3, zca_eps=eps, norm_eps=1e-3).fit(x_train)
    assert rp.origins.shape == (n_patches, 3) and rp.filters.shape == (n_patches, 3, 3, 2)
    v = np.empty((n_patches, 18))
    for k, (i, r, q) in enumerate(rp.origins):
        assert 0 <= i < 4 and 0 <= r <= 6 - 3 and 0 <= q <= 5 - 3  # inside a training image
        p = np.array([x_train[i, r + a, q + b, ch] for a in range(3) for b in range(3) for ch in range(2)])
        p = p - p.sum() / 18
        v[k] = p / (np.sqrt(np.sum(p * p)) + 1e-3)
    np.testing.assert_allclose(rp.filters.reshape(n_patches, -1), _whitened_reference(v, eps), atol=1e-9)
    if eps < 1e-3:  # nearly plain ZCA: the filters' covariance is the projection off the constant patch
        f = rp.filters.reshape(n_patches, -1)
        np.testing.assert_allclose(f.T @ f / n_patches, np.eye(18) - 1 / 18, atol=1e-4)


def test_the_draw_is_uniform_over_images_and_positions_and_seeded():
    x_train = _x(7, 3, 5, 4, 1)
    rp = RandomPatches(n_patches=3000, size=2, seed=11).fit(x_train)
    counts = np.zeros((3, 4, 3), int)  # images x rows 0..3 x columns 0..2: every origin a 2x2 patch can have
    np.add.at(counts, tuple(rp.origins.T), 1)
    assert counts.min() > 0 and counts.max() < 3 * 3000 / counts.size  # all reached, none favoured much
    again = RandomPatches(n_patches=3000, size=2, seed=11).fit(x_train)
    np.testing.assert_array_equal(again.origins, rp.origins)
    np.testing.assert_array_equal(again.filters, rp.filters)
    other = RandomPatches(n_patches=3000, size=2, seed=12).fit(x_train)
    assert not np.array_equal(other.origins, rp.origins)
    # the fit sees only its argument: other images transformed in between change nothing
    a = RandomPatches(n_patches=5, size=3, seed=2).fit(_x(8, 4))
    a.transform(_x(9, 3) * 100)
    b = RandomPatches(n_patches=5, size=3, seed=2).fit(_x(8, 4))
    np.testing.assert_array_equal(a.filters, b.filters)
    assert RandomPatches(5, 3, 1.0, 2).describe() == {
        "n_patches": 5,
        "size": 3,
        "bias": 1.0,
        "pool": 1,
        "zca_eps": 0.01,
        "norm_eps": 1e-8,
        "seed": 2,
    }


@pytest.mark.parametrize(
    "kwargs, param, error",
    [
        (dict(n_patches=1), "n_patches", None),
        (dict(n_patches=2.5), "n_patches", ParameterTypeError),
        (dict(n_patches="8"), "n_patches", ParameterTypeError),
        (dict(size=0), "size", None),
        (dict(size=True), "size", ParameterTypeError),
        (dict(bias=-0.5), "bias", None),
        (dict(bias=float("nan")), "bias", None),
        (dict(bias="1"), "bias", ParameterTypeError),
        (dict(pool=0), "pool", None),
        (dict(zca_eps=-1.0), "zca_eps", None),
        (dict(zca_eps=0), "zca_eps", None),  # the normalised patches are singular: never plain ZCA
        (dict(norm_eps=-1e-9), "norm_eps", None),
        (dict(seed=-1), "seed", None),
        (dict(seed=True), "seed", ParameterTypeError),
    ],
)
def test_bad_settings_are_refused(kwargs, param, error):
    with raises_param(param, error):
        RandomPatches(**kwargs)


def test_bad_images_are_refused():
    x = _x(10, 3)
    with raises_param("size", match="do not fit in the 6x5 training images"):
        RandomPatches(n_patches=4, size=6).fit(x)
    with raises_param("x_train", ParameterTypeError):  # raw integer pixels: preprocess first
        RandomPatches(n_patches=4, size=3).fit(np.zeros((2, 4, 4, 1), np.uint8))
    with raises_param("x_train"):
        RandomPatches(n_patches=4, size=3).fit(x[0])
    with raises_param("size", match="a patch is one value"):
        RandomPatches(n_patches=4, size=1).fit(x[..., :1])
    with raises_param("x_train", match="equal after normalisation"):
        RandomPatches(n_patches=4, size=3).fit(np.ones((2, 4, 4, 1)))
    with raises_param("zca_eps", match="too small"):
        RandomPatches(n_patches=40, size=3, zca_eps=1e-300).fit(x)
    rp = RandomPatches(n_patches=4, size=3, pool=2)
    with pytest.raises(RuntimeError, match="before fit"):
        rp.transform(x)
    with raises_param("pool", match="does not divide the 6x5 training images"):
        rp.fit(x)
    rp.fit(x[:, :4, :4])
    with raises_param("x", match="x has 1 channels"):
        rp.transform(x[..., :1])
    with raises_param("pool", match="does not divide the 6x5 images"):
        rp.transform(x)
    with raises_param("x"):
        rp.transform(np.full((1, 4, 4, 2), np.nan))
