"""The classroom page (``notebooks/classroom.ipynb``, served by Voila): the pieces it shows, so that
the page itself holds only student-facing text and one call per picture.

Everything is computed off the page's main thread and kept in the disk cache
(:mod:`cntk_widgets.kernel_cache`): the page renders at once, and a second load of the same page
(in a new kernel) shows every picture without computing.
"""

from __future__ import annotations

import ipywidgets as W

from ._display import error_html, resend_state_later
from .comparison import KernelComparison
from .explorer_view import KernelExplorer
from .jobs import JobRunner
from .lab_data import LabImages, lab_images


def classroom_dtype(data: LabImages) -> str:
    """Engine arithmetic for the page: float64 for the 8×8 digits (instant anyway), float32 for
    larger images (about twice as fast, within 1e-4 relative: invisible in a picture)."""
    return "float64" if max(data.x.shape[1:3]) <= 8 else "float32"


def classroom_data(dataset: str | None = None, n_per_class: int | None = None) -> LabImages:
    """The page's images: :func:`cntk_widgets.lab_data.lab_images` (the launcher's choice)."""
    return lab_images(dataset, n_per_class)


def classroom_explorer(data: LabImages, **kwargs) -> KernelExplorer:
    """The kernel explorer with its architecture picker, for ``data``; ``kwargs`` go to
    :class:`KernelExplorer`."""
    kwargs.setdefault("dtype", classroom_dtype(data))
    return KernelExplorer(data.x, data.y, data.class_names, **kwargs)


class ComparisonPanel(W.VBox):
    """:class:`KernelComparison` of ``data`` computed in the background: a status line until the
    kernels are ready, then the heatmaps, the spectra and the checked findings. ``panel.wait()``
    blocks until done; ``panel.comparison`` is the :class:`KernelComparison` (or None). With
    ``after`` (an explorer), the panel starts once the explorer's first picture is shown, so that
    the two do not share the processor for the picture a student looks at first."""

    def __init__(self, data: LabImages, *, after: KernelExplorer | None = None, synchronous: bool = False, **kwargs):
        kwargs.setdefault("dtype", classroom_dtype(data))
        self.comparison: KernelComparison | None = None
        self.status = W.HTML("<i>computing the six kernels …</i>")
        self.status.add_class("cntk-comparison-status")
        self.shown = W.HTML()  # plain HTML pictures: no plotly widget to load in the page
        super().__init__([self.status, self.shown])
        self.add_class("cntk-comparison")
        self._runner = JobRunner(
            synchronous=synchronous,
            on_progress=lambda f: setattr(self.status, "value", f"<i>computing the six kernels … {100 * f:.0f} %</i>"),
            on_result=self._show,
            on_error=self._failed,
            name="cntk-comparison",
        )

        def job(ctx):
            if after is not None:
                after.wait(timeout=None)
            return KernelComparison(data.x, data.y, data.class_names, progress=ctx.progress, **kwargs)

        self._runner.submit(job)

    def wait(self, timeout: float | None = 600.0) -> KernelComparison | None:
        self._runner.wait(timeout)
        return self.comparison

    def _show(self, comparison: KernelComparison) -> None:
        self.comparison = comparison
        self.shown.value = comparison.html()
        self.status.value = ""
        resend_state_later([self.status, self.shown])

    def _failed(self, message: str) -> None:
        self.status.value = error_html(message)
        resend_state_later([self.status])


def classroom_comparison(data: LabImages, **kwargs) -> ComparisonPanel:
    """The six-architecture comparison panel for ``data`` (see :class:`ComparisonPanel`)."""
    return ComparisonPanel(data, **kwargs)
