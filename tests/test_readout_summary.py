"""The sentence notebook 3 prints about its depth sweep: computed from the numbers it summarises."""

from __future__ import annotations

import pytest

from cntk_widgets.readout_summary import readout_gap_summary


def _runs(table):
    return [
        {"readout": r, "depth": d, "accuracy": a / 100}
        for d, (v, g) in table.items()
        for r, a in (("vanilla", v), ("gap", g))
    ]


def test_margins_and_depth_moves_are_read_off_the_table():
    text = readout_gap_summary(_runs({3: (28, 35), 4: (29, 31), 6: (27, 28)}))
    assert text.startswith("CNTK-GAP is ahead of CNTK-V at 3 of 3 depths (margins +1 to +7 points)")
    assert "across depths 3-6 accuracy moves by at most 2 points (CNTK-V) and 7 points (CNTK-GAP)." in text


def test_a_table_where_vanilla_wins_says_so():
    text = readout_gap_summary(_runs({3: (40, 30)}))
    assert text == "CNTK-GAP is ahead of CNTK-V at 0 of 1 depth (margins -10 to -10 points)."


def test_the_latest_run_of_a_setting_counts_and_empty_sweeps_are_refused():
    runs = _runs({3: (20, 10)}) + _runs({3: (20, 30)})
    assert "at 1 of 1 depth" in readout_gap_summary(runs)
    with pytest.raises(ValueError, match="both readouts"):
        readout_gap_summary([{"readout": "gap", "depth": 3, "accuracy": 0.5}])
