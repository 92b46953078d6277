"""What a depth sweep of both readouts shows, said in one sentence computed from its numbers
(notebook 3 states the paper's Table 1 trend, then this says how much of it shows at class scale)."""

from __future__ import annotations


def readout_gap_summary(history: list[dict]) -> str:
    """Compare CNTK-GAP with CNTK-V at every depth both were run (``history``: the regression lab's
    records, with ``readout``, ``depth`` and ``accuracy`` in 0..1; the latest record per readout and
    depth counts). Returns e.g. ``"CNTK-GAP is ahead of CNTK-V at 2 of 3 depths (margins -1 to +7
    points); across depths 3-6 accuracy moves by at most 4 points (CNTK-V) and 6 points (CNTK-GAP)."``
    """

    def points(x: float) -> str:
        return f"{x:.0f} point" + ("" if round(x) == 1 else "s")

    acc: dict[tuple[str, int], float] = {}
    for h in history:
        acc[(h["readout"], int(h["depth"]))] = 100.0 * float(h["accuracy"])
    depths = sorted(d for (r, d) in acc if r == "gap" and ("vanilla", d) in acc)
    if not depths:
        raise ValueError("the history holds no depth run with both readouts")
    margins = [acc[("gap", d)] - acc[("vanilla", d)] for d in depths]
    ahead = sum(m > 0 for m in margins)
    text = (
        f"CNTK-GAP is ahead of CNTK-V at {ahead} of {len(depths)} depth{'s' if len(depths) > 1 else ''} "
        f"(margins {min(margins):+.0f} to {max(margins):+.0f} points)"
    )
    if len(depths) > 1:
        moves = {
            name: max(acc[(r, d)] for d in depths) - min(acc[(r, d)] for d in depths)
            for r, name in (("vanilla", "CNTK-V"), ("gap", "CNTK-GAP"))
        }
        text += (
            f"; across depths {depths[0]}-{depths[-1]} accuracy moves by at most {points(moves['CNTK-V'])} "
            f"(CNTK-V) and {points(moves['CNTK-GAP'])} (CNTK-GAP)"
        )
    return text + "."
