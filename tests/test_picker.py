"""The architecture picker (cntk_widgets.picker), driven headless: an invalid setting shows in its error
box and leaves the model as it was, and its slider end (``max_depth``) is checked and never clamps the
model's depth."""

from __future__ import annotations

import pytest
from conftest import raises_param

pytest.importorskip("ipywidgets")

from cntk_widgets import ArchitectureModel, ArchitecturePicker  # noqa: E402


def test_an_invalid_setting_shows_in_the_error_box_and_leaves_the_model():
    picker = ArchitecturePicker(ArchitectureModel(depth=3))
    picker._from_widget("depth", 99)
    assert "depth must be between 2 and 21" in picker.error.value  # the text the user reads
    assert picker.spec.depth == 3
    picker._from_widget("depth", 5)  # a valid setting clears the box
    assert picker.error.value == "" and picker.spec.depth == 5


def test_picker_max_depth_is_validated_and_never_clamps_the_model():
    with raises_param("max_depth"):
        ArchitecturePicker(max_depth=1)
    for bad in (30, 2.5):  # above the lab's limit, not an integer: ValueErrors too (the lab's settings)
        with pytest.raises(ValueError, match="^max_depth must be an integer"):
            ArchitecturePicker(max_depth=bad)
    picker = ArchitecturePicker(ArchitectureModel(depth=15), max_depth=8)
    assert picker.depth.value == 15
    picker.model.set(depth=18)
    assert picker.depth.value == 18


def test_lap_window_control_shows_only_for_lap_and_drives_the_spec():
    picker = ArchitecturePicker(ArchitectureModel(depth=3))
    assert picker.lap_c.layout.display == "none"  # GAP: no window to choose
    picker.lap_c.value = 3  # hidden: remembered for LAP, the spec keeps no window
    assert picker.spec.lap_c is None and picker.error.value == ""
    picker.readout.value = "lap"
    assert picker.spec.readout == "lap" and picker.spec.lap_c == 3 and picker.lap_c.layout.display is None
    assert "LocalAvgPool c=3" in picker.text.value and "CNTK-LAP3-3" in picker.text.value
    picker.lap_c.value = 0
    assert picker.spec.lap_c == 0
    picker.readout.value = "vanilla"
    assert picker.spec.lap_c is None and picker.lap_c.layout.display == "none"
    picker.model.set(readout="lap", lap_c=40)  # from code: the slider widens, never clamps
    assert picker.lap_c.value == 40 and picker.lap_c.max >= 40


def test_padding_and_flip_controls_drive_the_spec():
    picker = ArchitecturePicker(ArchitectureModel(depth=4))
    picker.padding.value = "circular"
    picker.flip.value = True
    assert picker.spec.padding == "circular" and picker.spec.flip
    assert picker.spec.architecture.padding == "circular" and picker.spec.architecture.flip
    assert "Conv 3x3 circular" in picker.text.value and "flip-symmetrised" in picker.text.value
    picker.model.set(padding="zero", flip=False)  # model -> controls
    assert picker.padding.value == "zero" and picker.flip.value is False


def test_myrtle_presets_fix_the_depth_and_the_pools():
    picker = ArchitecturePicker(ArchitectureModel(depth=3, pool=True), max_depth=8)
    picker.preset.value = "myrtle-10"
    s = picker.spec
    assert (s.depth, s.architecture.pools, s.pool) == (10, (3, 6), False)
    assert picker.depth.value == 10 and picker.depth.max >= 10  # the slider shows the preset's depth
    assert picker.depth.disabled and picker.pool.disabled and picker.pool.value is False
    assert picker.text.value.count("AvgPool 2x2") == 2 and "CNTK-Myrtle-10" in picker.text.value
    picker._from_widget("depth", 4)  # a depth the preset does not have: the error box, the model unchanged
    assert "Myrtle-10 has depth 10" in picker.error.value and picker.spec.depth == 10
    picker._from_widget("pool", True)
    assert "own pools" in picker.error.value and picker.spec.pool is False
    picker.preset.value = "myrtle-5"
    assert picker.spec.depth == 5 and picker.spec.architecture.pools == (2, 3) and picker.error.value == ""
    picker.preset.value = "paper"
    assert not picker.depth.disabled and not picker.pool.disabled and picker.spec.architecture.pools == ()
    picker.depth.value = 3
    picker.pool.value = True
    assert picker.spec.architecture.pools == (1,) and "CNTK-GAP-3, AvgPool(2)" in picker.text.value


def test_a_disabled_picker_stays_disabled():
    picker = ArchitecturePicker()
    picker.disable()
    picker.model.set(preset="myrtle-5")
    picker.model.set(preset="paper")
    assert all(w.disabled for w in picker._controls.values())
