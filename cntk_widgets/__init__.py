"""cntk_widgets: the lab's interactive views (ipywidgets + plotly) over plain-Python models.

>>> from cntk_widgets import ArchitecturePicker, KernelExplorer, RegressionLab   # doctest: +SKIP
>>> explorer = KernelExplorer(images, labels)          # float NHWC images, int labels
>>> explorer.picker.depth.value = 6; explorer.wait()   # recomputes off the UI thread

The models (:mod:`cntk_widgets.models`, :mod:`cntk_widgets.regression_model`) import neither
ipywidgets nor plotly, so they work without the lab extra.
"""

from __future__ import annotations

from .explorer_model import KernelExplorerModel, KernelResult
from .models import ArchitectureModel, NetworkSpec
from .regression_model import LabSettings, RegressionLabModel, RegressionResult

try:  # the views need the "lab" extra (ipywidgets, plotly, anywidget)
    from .explorer_view import KernelExplorer
    from .picker import ArchitecturePicker
    from .regression_view import RegressionLab
except ImportError as _exc:  # pragma: no cover - depends on the environment
    _VIEW_ERROR = _exc

    def __getattr__(name: str):
        if name in ("ArchitecturePicker", "KernelExplorer", "RegressionLab"):
            raise ImportError(f"cntk_widgets.{name} needs ipywidgets, plotly and anywidget: {_VIEW_ERROR}")
        raise AttributeError(f"module 'cntk_widgets' has no attribute {name!r}")


__all__ = [
    "ArchitectureModel",
    "ArchitecturePicker",
    "KernelExplorer",
    "KernelExplorerModel",
    "KernelResult",
    "LabSettings",
    "NetworkSpec",
    "RegressionLab",
    "RegressionLabModel",
    "RegressionResult",
]
