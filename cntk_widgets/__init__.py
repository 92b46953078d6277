"""cntk_widgets: the lab's interactive views (ipywidgets + plotly) over plain-Python models.

>>> from cntk_widgets import ArchitecturePicker, KernelExplorer, RegressionLab   # doctest: +SKIP
>>> explorer = KernelExplorer(images, labels)          # float NHWC images, int labels
>>> explorer.picker.depth.value = 6; explorer.wait()   # recomputes off the UI thread

The models (:mod:`cntk_widgets.models`, :mod:`cntk_widgets.regression_model`) import neither
ipywidgets nor plotly, so they work without the lab extra.
"""

from __future__ import annotations

from .dynamics_model import DynamicsSettings, TrainingDynamicsModel
from .explorer_model import KernelExplorerModel, KernelResult
from .models import ArchitectureModel, NetworkSpec
from .probe_model import ProbeModel, ProbeSettings
from .regression_model import LabSettings, RegressionLabModel, RegressionResult
from .teaching_jobs import LearningCurvesModel, Table2Model

try:  # the views need the "lab" extra (ipywidgets, plotly, anywidget)
    from .curves_view import LearningCurvesView
    from .dynamics_view import TrainingDynamicsLab
    from .explorer_view import KernelExplorer
    from .picker import ArchitecturePicker
    from .probe_view import TranslationProbe
    from .regression_view import RegressionLab
    from .table2_view import Table2View
except ImportError as _exc:  # pragma: no cover - depends on the environment
    _VIEW_ERROR = _exc

    def __getattr__(name: str):
        views = ("ArchitecturePicker", "KernelExplorer", "RegressionLab", "LearningCurvesView")
        if name in (*views, "TrainingDynamicsLab", "TranslationProbe", "Table2View"):
            raise ImportError(f"cntk_widgets.{name} needs ipywidgets, plotly and anywidget: {_VIEW_ERROR}")
        raise AttributeError(f"module 'cntk_widgets' has no attribute {name!r}")


__all__ = [
    "ArchitectureModel",
    "ArchitecturePicker",
    "DynamicsSettings",
    "KernelExplorer",
    "KernelExplorerModel",
    "KernelResult",
    "LabSettings",
    "LearningCurvesModel",
    "LearningCurvesView",
    "NetworkSpec",
    "ProbeModel",
    "ProbeSettings",
    "RegressionLab",
    "RegressionLabModel",
    "RegressionResult",
    "Table2Model",
    "Table2View",
    "TrainingDynamicsLab",
    "TrainingDynamicsModel",
    "TranslationProbe",
]
