"""Small display helpers shared by the lab's views: message boxes and plotly figure state."""

from __future__ import annotations

import html
from copy import deepcopy

import ipywidgets as W
import plotly.graph_objects as go

from .jobs import error_name

_ERROR_STYLE = "color:#b00020;background:#fdecea;padding:4px 8px;border-radius:4px;font-family:monospace"
_NOTE_STYLE = "color:#7a4f00;background:#fff4e0;padding:4px 8px;border-radius:4px;font-family:monospace"


def sync_figure_state(fig: go.FigureWidget) -> None:
    """Copy a FigureWidget's current data/layout into its synced widget state.

    plotly sends updates (restyle/relayout) as one-shot messages, and a front end that renders the
    widget later (Voila runs the whole notebook before the page connects; a reloaded Lab page)
    would show the figure as it was built. Keeping ``_widget_data`` / ``_widget_layout`` current
    (what plotly itself does in ``_repr_mimebundle_``) makes late views show the latest figure.
    """
    fig._widget_layout = deepcopy(fig._layout_obj._props)
    fig._widget_data = deepcopy(fig._data)


def error_html(message: str | BaseException | None) -> str:
    """An error box for ``message``, or for an exception as ``"TypeName: message"``; ``""`` for none."""
    if isinstance(message, BaseException):
        message = f"{error_name(message)}: {message}"
    return "" if not message else f'<div class="cntk-error" style="{_ERROR_STYLE}">⚠ {html.escape(message)}</div>'


def note_html(message: str | None) -> str:
    """A warning-coloured note (not an error): cancelled runs, skipped sweep depths, adjusted settings."""
    return "" if not message else f'<div class="cntk-note" style="{_NOTE_STYLE}">{html.escape(message)}</div>'


def set_int_slider(slider: W.IntSlider, value: int, limit: int) -> None:
    """Set ``value`` and ``max`` = max(``limit``, ``value``) in the order that never clamps the value."""
    hi = max(limit, value)
    if value > slider.max:
        slider.max = hi
        slider.value = value
    else:
        slider.value = value
        slider.max = hi


def png_bytes(rgb, scale: int = 1) -> bytes:
    """A PNG file of a uint8 RGB image ``[h, w, 3]``, each pixel repeated ``scale`` times per side
    (nearest neighbour, so small images stay sharp on a projector). Needs no imaging library."""
    import struct
    import zlib

    import numpy as np

    img = np.repeat(np.repeat(np.asarray(rgb, dtype=np.uint8), scale, axis=0), scale, axis=1)
    h, w = img.shape[:2]
    rows = np.concatenate([np.zeros((h, 1), np.uint8), img.reshape(h, w * 3)], axis=1)  # filter byte 0 per row

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes()))
        + chunk(b"IEND", b"")
    )


#: seconds after a change at which :func:`resend_state_later` sends the widgets' state again
RESEND_DELAYS = (1.0, 3.0, 8.0)


def resend_state_later(widgets, delays: tuple[float, ...] = RESEND_DELAYS) -> None:
    """Send the full state of ``widgets`` again after each of ``delays`` seconds (daemon timers).

    A page that is still connecting when a value changes can lose that update: Voila's page builds
    its widgets from a state snapshot while the kernel keeps working, and an update that arrives
    between the snapshot and the widget's creation is dropped (seen as a status line stuck at
    "computing …" next to a finished picture). Re-sending the final state makes such pages catch up.
    """
    import threading

    widgets = list(widgets)

    def resend() -> None:
        for widget in widgets:
            try:
                widget.send_state()
            except Exception:  # a closed widget or a kernel shutting down: nothing to catch up
                pass

    for delay in delays:
        timer = threading.Timer(delay, resend)
        timer.daemon = True
        timer.start()
