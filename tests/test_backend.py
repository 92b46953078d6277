"""Host and device arrays (cntk_core.backend): to_host keeps NumPy arrays as they are and copies CuPy
arrays to the host. Backend resolution and the GPU status are tested in test_gpu*.py."""

from __future__ import annotations

import numpy as np

from cntk_core.backend import to_host


def test_to_host_keeps_numpy_arrays_and_dtypes_and_copies_cupy_arrays():
    a = np.arange(3, dtype=np.float32)
    assert to_host(a) is a  # no copy, no float64 conversion
    np.testing.assert_array_equal(to_host([1.5, 2.0]), [1.5, 2.0])

    class FakeCupyArray:  # what to_host looks at: the type's module, then .get()
        __module__ = "cupy._core.core"

        def get(self):
            return a

    assert to_host(FakeCupyArray()) is a
