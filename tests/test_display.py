"""The lab's display helpers (cntk_widgets._display): the final widget states are sent again for pages
that were still connecting when a cell ran."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("plotly")

from cntk_widgets._display import resend_state_later  # noqa: E402


def test_final_states_are_sent_again_for_pages_that_were_still_connecting():
    class Widget:
        sent = 0

        def send_state(self):
            self.sent += 1

    w = Widget()
    resend_state_later([w], delays=(0.01, 0.05))
    time.sleep(0.3)
    assert w.sent == 2
