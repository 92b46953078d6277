"""The paper's Table 2 at class scale (issue 26): the exact CNTK against the random features of one
width-128 net, as an HTML table with a bar per accuracy. A thin view over
:class:`~cntk_widgets.teaching_jobs.Table2Model`; :func:`table2_html` is the picture alone."""

from __future__ import annotations

import html

import ipywidgets as W

from ._teaching_common import RUN_AGAIN, progress_bar, run_stop_row, show_job_event
from .teaching_jobs import Table2Model

#: what Arora et al. (2019) report in their Table 2 (their numbers are not reproduced here: this
#: package states the claim, and the table below measures it on the images at hand)
PAPER_CLAIM = (
    "Arora et al. (2019, Table 2) classify the first two CIFAR-10 classes by kernel regression, once with the "
    "exact CNTK and once with the random features of one randomly initialised CNN of width 128 (its empirical "
    "NTK), and find the exact kernel clearly better, by far the most with global average pooling (GAP)."
)
_BAR = "display:inline-block;height:10px;vertical-align:middle;margin-right:6px"


def _bar(fraction: float, colour: str) -> str:
    return f"<span style='{_BAR};width:{max(0.0, min(1.0, fraction)) * 120:.0f}px;background:{colour}'></span>"


def table2_html(result, n_train: int | None = None, n_test: int | None = None) -> str:
    """An HTML table of a :class:`cntk_core.finite.Table2Result`: per row the network, the exact and
    random-features test accuracies (%, with a bar each; RF ± std over seeds), the difference in points,
    the relative error of the empirical train kernel and the seconds; then the paper's claim and what
    these rows say about it."""
    head = "".join(
        f"<th style='padding:2px 10px;text-align:left'>{h}</th>"
        for h in (
            "network",
            "exact CNTK",
            "random features (width)",
            "exact − RF",
            "kernel error",
            "seconds (exact / RF)",
        )
    )
    rows, gaps = [], {}
    for r in result.rows:
        fix = " fixed" if r["fix_first"] and r["fix_last"] else ""
        name = f"CNTK-{'GAP' if r['readout'] == 'gap' else 'V'}-{r['depth']}{fix}"
        rf = f"{100 * r['rf_accuracy']:.1f} %"
        if len(r["seeds"]) > 1:
            rf += f" ± {100 * r['rf_accuracy_std']:.1f}"
        gap = 100 * (r["exact_accuracy"] - r["rf_accuracy"])
        gaps.setdefault(r["readout"], []).append(gap)
        cells = (
            html.escape(name),
            _bar(r["exact_accuracy"], "#636efa") + f"{100 * r['exact_accuracy']:.1f} %",
            _bar(r["rf_accuracy"], "#ef553b") + f"{rf} ({r['width']}, {len(r['seeds'])} seed(s))",
            f"{gap:+.1f} points",
            f"{r['rel_error']:.3f}",
            f"{r['seconds_exact']:.1f} / {r['seconds_rf']:.1f}",
        )
        rows.append("<tr>" + "".join(f"<td style='padding:2px 10px'>{c}</td>" for c in cells) + "</tr>")
    size = f" ({n_train} training, {n_test} test images)" if n_train is not None else ""
    said = []
    for readout, g in gaps.items():
        mean = sum(g) / len(g)
        name = "GAP" if readout == "gap" else "vanilla"
        if abs(mean) < 0.05:
            said.append(f"with the {name} readout both kernels score the same here")
        else:
            verdict = "better" if mean > 0 else "worse"
            said.append(
                f"with the {name} readout the exact kernel is {verdict} here by {abs(mean):.1f} points on average"
            )
    return (
        "<div class='cntk-table2'>"
        f"<table style='border-collapse:collapse;font-size:13px'><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        f"<p style='font-size:13px;max-width:760px'>{html.escape(PAPER_CLAIM)}</p>"
        f"<p style='font-size:13px;max-width:760px'><b>On these images{html.escape(size)}:</b> "
        f"{html.escape('; '.join(said))}. The kernel error is ||K_RF − K||_F / ||K||_F of the training Gram."
        "</p></div>"
    )


class Table2View(W.VBox):
    """``view.model`` is the :class:`Table2Model` (arguments as its own); ``view.table`` the HTML."""

    def __init__(self, *, synchronous: bool = False, autostart: bool = True, **kwargs):
        self.model = Table2Model(synchronous=synchronous, autostart=False, **kwargs)
        self.progress = progress_bar("kernels")
        row = run_stop_row(self, lambda: self.model.run())
        self.error, self.table = W.HTML(), W.HTML()
        self.model.on_change(self._on_model)
        super().__init__([row, self.error, self.table])
        self.add_class("cntk-table2-view")
        if autostart:
            self.model.run()

    def wait(self, timeout: float | None = 600.0):
        return self.model.wait(timeout)

    def _on_model(self, event: str, m: Table2Model) -> None:
        show_job_event(event, m, self.progress, self.error, RUN_AGAIN)
        if event == "start":
            self.error.value = ""
        elif event == "result":
            self.table.value = table2_html(m.result, len(m.split.y_train), len(m.split.y_test))
