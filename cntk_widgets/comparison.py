"""The lab's static comparison: a few architectures side by side on one image set, the measures
that describe what their normalised kernels look like, and the findings a notebook states about
them, each checked on the data it is shown with (so the text cannot contradict the numbers).

>>> cmp = KernelComparison(x, y, class_names)          # doctest: +SKIP
>>> cmp.heatmaps_html(); cmp.spectra_html(); cmp.findings_html()     # HTML strings

Measures of a normalised kernel ``K̂`` ``[n, n]`` (unit diagonal) with labels ``y`` ``[n]``, all
over the off-diagonal entries:

- ``mean``, ``low``, ``high``: their mean, 5th and 95th percentiles; ``spread = high - low``;
- ``top_share``: the largest eigenvalue's share of the trace (1: every image looks the same);
- ``contrast``: mean within-class entry minus mean between-class entry;
- ``relative_contrast``: ``contrast / (1 - mean)``, class structure relative to how far the
  entries are from a constant matrix (comparable between kernels of different spread).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .explorer_model import KernelExplorerModel, KernelResult
from .models import NetworkSpec

#: the architectures of the comparison, by short name (shallow and deep, both readouts, NTK and NNGP)
COMPARISON_SPECS: dict[str, NetworkSpec] = {
    "V-3": NetworkSpec(depth=3, readout="vanilla"),
    "V-11": NetworkSpec(depth=11, readout="vanilla"),
    "GAP-3": NetworkSpec(depth=3, readout="gap"),
    "GP-V-3": NetworkSpec(depth=3, readout="vanilla", kind="nngp"),
    "GP-V-11": NetworkSpec(depth=11, readout="vanilla", kind="nngp"),
    "GAP-3 fixed": NetworkSpec(depth=3, readout="gap", fix_first=True, fix_last=True),
}


def kernel_measures(normalized: np.ndarray, labels: np.ndarray, eigenvalues: np.ndarray | None = None) -> dict:
    """The measures of the module docstring for one normalised kernel ``[n, n]``; floats."""
    k = np.asarray(normalized, dtype=np.float64)
    y = np.asarray(labels)
    off = ~np.eye(len(k), dtype=bool)
    same = (y[:, None] == y[None, :]) & off
    values = k[off]
    low, high = np.percentile(values, [5, 95])
    ev = np.linalg.eigvalsh(k)[::-1] if eigenvalues is None else np.asarray(eigenvalues)
    mean = float(values.mean())
    contrast = float(k[same].mean() - k[~same & off].mean()) if same.any() and (~same & off).any() else 0.0
    return {
        "mean": mean,
        "low": float(low),
        "high": float(high),
        "spread": float(high - low),
        "top_share": float(ev[0] / ev.sum()),
        "contrast": contrast,
        "relative_contrast": contrast / (1.0 - mean) if mean < 1.0 else 0.0,
    }


@dataclass(frozen=True)
class Finding:
    """One sentence a notebook says about the comparison, and the check that it holds on the data.

    ``check(m)`` takes ``{short name: measures}`` and returns whether the sentence is true;
    ``evidence(m)`` the numbers that decide it, as text.
    """

    text: str
    check: Callable[[dict], bool]
    evidence: Callable[[dict], str]


def _f(m: dict, name: str, key: str) -> str:
    return f"{m[name][key]:.3f}"


FINDINGS: tuple[Finding, ...] = (
    Finding(
        "GAP makes every pair of images look alike: its normalised entries crowd near 1 and one eigenvalue "
        "holds most of the trace, far more than with the vanilla readout.",
        lambda m: m["GAP-3"]["top_share"] > m["V-3"]["top_share"] + 0.1 and m["GAP-3"]["mean"] > m["V-3"]["mean"],
        lambda m: (
            f"top eigenvalue share GAP-3 {_f(m, 'GAP-3', 'top_share')} vs V-3 {_f(m, 'V-3', 'top_share')}; "
            f"mean entry {_f(m, 'GAP-3', 'mean')} vs {_f(m, 'V-3', 'mean')}"
        ),
    ),
    Finding(
        "With depth, the NNGP (the untrained net) makes all images look alike: its entries rise towards 1 "
        "and its top eigenvalue takes over.",
        lambda m: m["GP-V-11"]["mean"] > m["GP-V-3"]["mean"] and m["GP-V-11"]["top_share"] > m["GP-V-3"]["top_share"],
        lambda m: (
            f"NNGP mean entry depth 3 {_f(m, 'GP-V-3', 'mean')} → depth 11 {_f(m, 'GP-V-11', 'mean')}; "
            f"top share {_f(m, 'GP-V-3', 'top_share')} → {_f(m, 'GP-V-11', 'top_share')}"
        ),
    ),
    Finding(
        "The NTK (the trained net) does not collapse that way: with depth its entries gather around a middle "
        "value well below 1, their spread shrinks, and its top eigenvalue does not take over.",
        lambda m: (
            m["V-11"]["spread"] < m["V-3"]["spread"]
            and m["V-11"]["mean"] < m["GP-V-11"]["mean"] - 0.1
            and m["V-11"]["top_share"] < m["GP-V-11"]["top_share"]
        ),
        lambda m: (
            f"NTK spread depth 3 {_f(m, 'V-3', 'spread')} → depth 11 {_f(m, 'V-11', 'spread')}; "
            f"mean entry at depth 11: NTK {_f(m, 'V-11', 'mean')}, NNGP {_f(m, 'GP-V-11', 'mean')}"
        ),
    ),
    Finding(
        "Class structure fades with depth: the within-class minus between-class contrast, relative to the "
        "spread of the entries, is lower at depth 11 than at depth 3.",
        lambda m: m["V-11"]["relative_contrast"] < m["V-3"]["relative_contrast"],
        lambda m: (
            f"relative contrast V-3 {_f(m, 'V-3', 'relative_contrast')} → V-11 {_f(m, 'V-11', 'relative_contrast')}"
        ),
    ),
    Finding(
        "Fixing the first and last layer (the paper's CNTK-GAP recipe) changes the kernel only a little.",
        lambda m: (
            abs(m["GAP-3 fixed"]["mean"] - m["GAP-3"]["mean"]) < 0.05
            and abs(m["GAP-3 fixed"]["top_share"] - m["GAP-3"]["top_share"]) < 0.05
        ),
        lambda m: (
            f"GAP-3 mean entry {_f(m, 'GAP-3', 'mean')} vs fixed {_f(m, 'GAP-3 fixed', 'mean')}; "
            f"top share {_f(m, 'GAP-3', 'top_share')} vs {_f(m, 'GAP-3 fixed', 'top_share')}"
        ),
    ),
)


class KernelComparison:
    """Kernels of :data:`COMPARISON_SPECS` (or ``specs``) on one image set, their measures and the
    :data:`FINDINGS` checked on them. Computes synchronously on creation, through a
    :class:`KernelExplorerModel` (so the disk cache makes a second page load instant).

    ``results``: ``{name: KernelResult}``; ``measures``: ``{name: dict}``; ``labels``: the
    class-sorted labels; ``progress(fraction)`` is called before each kernel. Memory: two ``[n, n]``
    float64 matrices per spec.
    """

    def __init__(
        self,
        images,
        labels,
        class_names=None,
        *,
        specs: dict[str, NetworkSpec] | None = None,
        backend: str | None = None,
        dtype: str = "float64",
        disk_cache=None,
        progress: Callable[[float], None] | None = None,
    ):
        self.specs = dict(COMPARISON_SPECS if specs is None else specs)
        model = KernelExplorerModel(
            images,
            labels,
            class_names,
            backend=backend,
            dtype=dtype,
            synchronous=True,
            disk_cache=disk_cache,
            autostart=False,
        )
        self.labels, self.class_names = model.labels, model.class_names
        self.results: dict[str, KernelResult] = {}
        # deepest first: one multi-depth pass also fills the shallower depth of its family
        for i, (name, spec) in enumerate(sorted(self.specs.items(), key=lambda item: -item[1].depth)):
            if progress is not None:
                progress(i / len(self.specs))
            model.compute(spec)
            if model.error is not None:
                raise RuntimeError(f"{spec.title}: {model.error}")
            self.results[name] = model.result
        model.close()
        self.results = {name: self.results[name] for name in self.specs}
        self.measures = {
            name: kernel_measures(r.normalized, self.labels, r.eigenvalues) for name, r in self.results.items()
        }

    def findings(self, findings: tuple[Finding, ...] = FINDINGS) -> list[tuple[Finding, bool, str]]:
        """``(finding, holds here, evidence)`` for each finding."""
        return [(f, bool(f.check(self.measures)), f.evidence(self.measures)) for f in findings]

    def findings_html(self, findings: tuple[Finding, ...] = FINDINGS) -> str:
        """The findings as an HTML list, each with ✓ or ✗ on this data and its numbers."""
        items = []
        for f, holds, evidence in self.findings(findings):
            mark = "<span style='color:#1a7f37'>✓</span>" if holds else "<span style='color:#b00020'>✗ not here:</span>"
            items.append(
                f"<li>{mark} {html.escape(f.text)}<br><span style='color:#555;font-size:90%'>"
                f"{html.escape(evidence)}</span></li>"
            )
        return "<ul class='cntk-findings' style='line-height:1.4'>" + "".join(items) + "</ul>"

    def heatmaps_html(self, columns: int = 3, size: int = 200) -> str:
        """Heatmaps of every normalised kernel on one fixed 0–1 colour scale with one colour bar, as
        HTML (PNG pictures; no plotly): ``columns`` per row, each ``size`` px wide."""
        from .static_plots import heatmap_grid_html

        panels = [(r.spec.title, r.normalized) for r in self.results.values()]
        return heatmap_grid_html(panels, columns=columns, size=size)

    def spectra_html(self, width: int = 720, height: int = 320) -> str:
        """Eigenvalues of every normalised kernel on a log axis, legend below the plot, as HTML (SVG)."""
        from .static_plots import line_chart_svg

        series = [
            (r.spec.title, np.arange(1, len(r.eigenvalues) + 1), np.clip(r.eigenvalues, 1e-12, None))
            for r in self.results.values()
        ]
        return line_chart_svg(
            series,
            title="spectra of the normalised kernels",
            x_title="eigenvalue number",
            y_title="eigenvalue",
            log_y=True,
            width=width,
            height=height,
        )

    def html(self) -> str:
        """Heatmaps, spectra and findings in one HTML block."""
        return self.heatmaps_html() + self.spectra_html() + self.findings_html()
