"""Thin ipywidgets + plotly views over the models of :mod:`cntk_widgets.models` (re-exported here).

Each view is an ``ipywidgets.VBox`` (display it directly) holding a ``.model``. Figures are plotly
``go.FigureWidget`` (rendered by anywidget, offline). Model events may arrive from the worker
thread; ipywidgets syncs trait changes from any thread. One module per view:
:mod:`~cntk_widgets.picker`, :mod:`~cntk_widgets.explorer_view`, :mod:`~cntk_widgets.regression_view`.
"""

from __future__ import annotations

from ._display import error_html, note_html, sync_figure_state
from .explorer_view import MAX_HEATMAP_CELLS, KernelExplorer, block_means, image_strip
from .picker import ArchitecturePicker
from .regression_view import RegressionLab, history_group, history_label

__all__ = [
    "MAX_HEATMAP_CELLS",
    "ArchitecturePicker",
    "KernelExplorer",
    "RegressionLab",
    "block_means",
    "error_html",
    "history_group",
    "history_label",
    "image_strip",
    "note_html",
    "sync_figure_state",
]
