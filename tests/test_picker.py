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
