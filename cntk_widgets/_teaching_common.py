"""Pieces shared by the teaching views (issue 26): the progress bar, the run / stop row and the
handling of a background job's common events (start, progress, error, cancelled, result)."""

from __future__ import annotations

import ipywidgets as W

from ._display import error_html, note_html

_LABEL = {"description_width": "initial"}

#: the cancelled note's hint on views with a run button
RUN_AGAIN = "press run to start again"


def progress_bar(description: str) -> W.FloatProgress:
    """An empty progress bar (0 to 1) labelled ``description``."""
    return W.FloatProgress(value=0.0, min=0.0, max=1.0, description=description, style=dict(_LABEL))


def run_stop_row(view, on_run) -> W.HBox:
    """Give ``view`` a ``run_button`` (calls ``on_run()``) and a ``stop`` button (cancels
    ``view.model``); returns them with ``view.progress`` in one row."""
    view.run_button = W.Button(description="run", button_style="primary")
    view.stop = W.Button(description="stop")
    view.run_button.on_click(lambda _b: on_run())
    view.stop.on_click(lambda _b: view.model.cancel())
    return W.HBox([view.run_button, view.stop, view.progress])


def show_job_event(event: str, m, progress: W.FloatProgress, error: W.HTML, cancelled_hint: str | None) -> None:
    """Show a job model's common ``event`` on ``progress`` and ``error``: the bar's value and colour,
    the error box, and on ``"cancelled"`` the note ``"<why>: <cancelled_hint>"`` (``<why>`` alone
    without a hint). Other events, and whatever else an event means to a view, are the caller's."""
    if event == "start":
        progress.value, progress.bar_style = 0.0, "info"
    elif event == "progress":
        progress.value = m.progress
    elif event == "error":
        progress.bar_style = "danger"
        error.value = error_html(m.error)
    elif event == "cancelled":
        progress.bar_style = "warning"
        error.value = note_html(f"{m.cancelled}: {cancelled_hint}" if cancelled_hint else m.cancelled)
    elif event == "result":
        progress.value, progress.bar_style = 1.0, "success"
