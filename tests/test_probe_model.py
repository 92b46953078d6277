"""The translation / flip probe's model (cntk_widgets.probe_model), without ipywidgets or a browser.

The invariance the probe is for: with circular padding the GAP kernel does not change under circular
shifts (to 1e-10), the vanilla kernel does. The probe's raw values are checked against the slow 4-D
oracle (cntk_core.testing.reference_kernel) on shifted and flipped copies made here with np.roll and
slicing, for every readout and both paddings.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_images, raises_param

from cntk_core.testing import reference_kernel
from cntk_widgets.probe_model import PROBE_READOUTS, ProbeModel, ProbeSettings, shifted_copies


def _probe(images, **kw) -> ProbeModel:
    model = ProbeModel(images, synchronous=True, **kw)
    assert model.error is None, model.error
    return model


@pytest.fixture(scope="module")
def digits():
    from cntk_widgets.lab_data import lab_images

    return lab_images("digits", 1)


def test_shifted_copies_are_circular_shifts():
    x = make_images(1, (5, 6, 2), seed=3)[0]
    copies, shifts = shifted_copies(x, 2)
    assert copies.shape == (25, 5, 6, 2) and shifts.shape == (25, 2)
    assert np.array_equal(shifts[12], [0, 0]) and np.array_equal(copies[12], x)
    for (dy, dx), c in zip(shifts, copies, strict=True):
        for i in range(5):
            for j in range(6):
                assert np.array_equal(c[(i + dy) % 5, (j + dx) % 6], x[i, j])


def test_gap_with_circular_padding_is_invariant_vanilla_is_not(digits):
    model = _probe(digits.x, labels=digits.y, class_names=digits.class_names, index=4, window=3)
    r = model.result
    gap, vanilla, lap = r.maps["gap"], r.maps["vanilla"], r.maps["lap"]
    assert gap.shape == vanilla.shape == (7, 7)
    assert np.abs(gap - 1).max() <= 1e-10, np.abs(gap - 1).max()
    assert all(r.flip[name] < 1 - 1e-6 for name in PROBE_READOUTS)  # a mirror image is no translation
    for m in (vanilla, lap):
        assert m[3, 3] == pytest.approx(1.0, abs=1e-12)
    assert vanilla.min() < 0.95 and r.invariance_radius("vanilla") == 0
    assert r.invariance_radius("gap") == 3
    # LAP averages translations: closer to invariant than vanilla, not exactly invariant
    assert lap.min() > vanilla.min() and lap.min() < 1 - 1e-6
    assert r.titles == {"vanilla": "CNTK-V-3-circ", "lap": "CNTK-LAP1-3-circ", "gap": "CNTK-GAP-3-circ"}
    assert model.caption() == f"image #4 (class {digits.class_names[digits.y[4]]})"


@pytest.mark.parametrize("padding", ["circular", "zero"])
@pytest.mark.parametrize("kind", ["ntk", "nngp"])
def test_raw_values_match_the_oracle(padding, kind):
    x = make_images(1, (6, 6, 2), seed=11)[0]
    settings = ProbeSettings(depth=3, kind=kind, padding=padding, lap_c=1, window=2)
    r = _probe(x[None], settings=settings).result
    copies, shifts = shifted_copies(x, 2)
    picks = [0, 7, 12, 19, 24]  # corners, the centre and two inner shifts
    for readout in PROBE_READOUTS:
        opts = dict(lap_c=1 if readout == "lap" else None, padding=padding)
        row, diag = r.raw[readout]
        for s in picks:
            shifted = np.roll(x, tuple(shifts[s]), axis=(0, 1))
            assert np.array_equal(shifted, copies[s])
            want = reference_kernel(x, shifted, 3, readout, kind=kind, **opts)
            self_ = reference_kernel(shifted, shifted, 3, readout, kind=kind, **opts)
            assert row[s] == pytest.approx(want, rel=1e-7)
            assert diag[s] == pytest.approx(self_, rel=1e-7)
        flipped = x[:, ::-1]
        k_flip = reference_kernel(x, flipped, 3, readout, kind=kind, **opts)
        k_ff = reference_kernel(flipped, flipped, 3, readout, kind=kind, **opts)
        assert r.flip[readout] == pytest.approx(k_flip / np.sqrt(row[12] * k_ff), rel=1e-7)
        if padding == "zero":  # the edges break the symmetry: no readout is exactly invariant
            assert r.maps[readout].min() < 1 - 1e-6


def test_flip_of_a_mirror_symmetric_image_is_one():
    x = make_images(1, (6, 6, 1), seed=5)[0]
    x = x + x[:, ::-1]
    r = _probe(x[None], window=1, padding="zero").result
    for name in PROBE_READOUTS:
        assert r.flip[name] == pytest.approx(1.0, abs=1e-12)


def test_cache_settings_and_errors(digits):
    model = _probe(digits.x[:3], window=1)
    first = model.result
    model.select(1)
    assert model.result.index == 1 and model.result is not first
    model.select(0)
    assert model.result is first  # from memory
    model.set(padding="zero")
    assert model.result.settings.padding == "zero" and model.result.titles["gap"] == "CNTK-GAP-3"
    with raises_param("index"):
        model.select(3)
    with raises_param("padding"):
        model.set(padding="reflect")
    with raises_param("window"):
        ProbeSettings(window=0)
    assert model.settings.padding == "zero" and model.index == 0
