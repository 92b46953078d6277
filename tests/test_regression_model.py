"""The regression lab's model (cntk_widgets.regression_model): its settings are checked, and a singular
kernel's hint speaks the lab's language (its ridge control, not the library's ``ridge="cv"``)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import raises_param

from cntk_core.regression import SingularKernelError
from cntk_widgets.regression_model import LabSettings, solve_predict


def test_lab_settings_seed_and_ridge_are_validated():
    with raises_param("seed"):
        LabSettings(seed=-1)
    for bad in (1.5, "x", True):  # not an integer: a ValueError too (the lab's error box shows it)
        with pytest.raises(ValueError, match="^seed must be an integer >= 0"):
            LabSettings(seed=bad)
    with pytest.raises(ValueError, match="^ridge must be a finite number >= 0"):
        LabSettings(ridge="cv")


def test_singular_kernel_hint_speaks_the_labs_language():
    k = np.ones((4, 4))
    with pytest.raises(SingularKernelError, match=r"turn on the ridge \(e.g. 1e-6\)") as info:
        solve_predict(k, np.ones((2, 4)), np.array([0, 1, 0, 1]), 2, 0.0)
    assert "cv" not in str(info.value)
