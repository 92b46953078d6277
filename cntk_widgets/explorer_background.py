"""The kernel explorer's background pass: after a computed picture, continue to the depth slider's
end so that every later depth of that architecture is a cache hit, and serve a request that waits
for the pass before the pass ends.

The fused CPU engine computes every shallower depth on the way to the deepest one
(:func:`cntk_core.gram.depths_in_one_pass`, for the architectures it runs), so one pass fills the
cache for all of them. A net with pools (a Myrtle preset, the pool option) has no pass: its depth is
its own. A depth
requested while the pass runs is served at the end of the pass's current row block: the rows done
hold every depth, and the other rows are computed to the requested depth only (a *detour*); then
the pass goes on. :class:`BackgroundPasses` is a part of
:class:`~cntk_widgets.explorer_model.KernelExplorerModel` (it uses the model's state: ``images``,
``pending``, ``cache``, ``_background``, ``_runner``, ...).
"""

from __future__ import annotations

from dataclasses import asdict, replace

from cntk_core.architecture import MIN_DEPTH

from .jobs import JobContext, Superseded, error_name
from .models import NetworkSpec, chunked_gram

#: row blocks of a background pass: a request that waits for the pass is served at the next block's end
BACKGROUND_CHUNKS = 16


def family(spec: NetworkSpec) -> tuple:
    """The spec without its depth (every other field): specs of one family come out of one
    multi-depth pass."""
    return tuple(v for k, v in asdict(spec).items() if k != "depth")


def lowest_depth(spec: NetworkSpec) -> int:
    """The smallest depth :class:`NetworkSpec` allows for ``spec``'s family (one more than the
    shallowest network where that has no trained layer: :meth:`cntk_core.Architecture.check_trainable`;
    a Myrtle preset's own depth)."""
    if spec.preset != "paper":
        return spec.depth
    try:
        replace(spec, depth=MIN_DEPTH)
    except ValueError:
        return MIN_DEPTH + 1
    return MIN_DEPTH


class BackgroundDone:
    """What a background pass returns to the runner (it publishes no picture of its own)."""


class _Abandoned(Exception):
    """The request a detour of the background pass computes for is no longer the one waiting."""


class _Detour:
    """Job context of a detour (:meth:`BackgroundPasses._serve_pending`): stops when the pass is
    stale or another request waits (``check`` is the engine's cancel hook, so within about a second
    of work); reports no progress (the pass's own stays on screen)."""

    def __init__(self, model, ctx: JobContext, want: NetworkSpec):
        self.model, self.ctx, self.want = model, ctx, want

    @property
    def stale(self) -> bool:
        return self.ctx.stale or self.model.pending != self.want

    def check(self) -> None:
        self.ctx.check()
        if self.model.pending != self.want:
            raise _Abandoned

    def progress(self, fraction: float) -> None:
        pass


class BackgroundPasses:
    """The background pass of :class:`~cntk_widgets.explorer_model.KernelExplorerModel`."""

    @property
    def background(self) -> bool:
        """Whether a background pass is running (or queued)."""
        bg = self._background
        return bg is not None and not bg[2].done()

    def _background_job(self, spec: NetworkSpec, ctx: JobContext) -> BackgroundDone:
        try:
            self._keep_quietly(self._grams(spec, ctx, background=True))
        except Superseded:
            raise
        except Exception as exc:  # the user asked for none of these: no error box, a note
            self.background_error = f"{error_name(exc)}: {exc}"
        return BackgroundDone()

    def _serve_pending(self, top: NetworkSpec, ctx: JobContext, rows: int, grams: dict) -> None:
        """Between two row blocks of the background pass to ``top`` (``grams``: ``{depth: [n, n]}``
        so far): give a request that waits for the pass its kernel now. The pass's first ``rows``
        rows hold every depth; the other rows are computed to the requested depth only (a fraction
        of the pass's remaining work), and the pass then goes on. A request that changes meanwhile
        is served next (the detour for the old one stops at its next engine call)."""
        n = len(self.images)
        while rows < n and not ctx.stale:
            want = self.pending
            if want is None or family(want) != family(top) or want.depth > top.depth:
                return
            detour = _Detour(self, ctx, want)
            try:
                rest = chunked_gram(
                    None,
                    self.images[rows:],
                    kind=want.kind,
                    backend=self.backend,
                    ctx=detour,
                    block_fn=self._block_fn(want, [want.depth]),  # the pass computes the others
                )
            except _Abandoned:
                continue  # another request is waiting now (or none)
            found = {}
            for d, k in rest.items():
                full = grams[d].copy()
                full[rows:, rows:] = k
                found[replace(want, depth=d)] = full
            self._keep_quietly(found)
            with self._lock:
                if self.pending != want:
                    continue
                if want not in self.cache:  # not a valid kernel: the pass's end computes it alone and shows why
                    return
                self.pending, self._awaited = None, None
            shown = replace(self.cache[want], cached=False, seconds=0.0, source="background")
            self._set_state(result=shown, partial=None, error=None, event="result")

    def _background_done(self) -> None:
        """The pass has ended: show the request still waiting for it (or compute it alone when the
        pass could not make it, which shows its error), then emit ``"background-done"``."""
        with self._lock:
            pending, self.pending, self._background = self.pending, None, None
        shown = self._lookup(pending) if pending is not None else None
        if shown is not None:
            shown = replace(shown, cached=False, source="background")
            self._set_state(result=shown, partial=None, progress=1.0, error=None, event="result")
        elif pending is not None:
            self._awaited = self._runner.submit(lambda ctx: self._job(pending, ctx))
            return
        self._set_state(event="background-done")

    def _prefetch_follows(self, spec: NetworkSpec) -> bool:
        """Whether a background pass will follow ``spec``'s computed picture. Then the picture's own
        pass computes ``spec``'s depth alone: the readouts of the shallower depths cost time (40
        CIFAR images, GAP-6 float32: depths 3-6 in 2.98 s, 6 alone in 2.37 s), and the background
        pass computes them moments later anyway."""
        target = self.prefetch_depth
        return target is not None and target > spec.depth and not self._runner.synchronous

    def _maybe_prefetch(self, spec: NetworkSpec) -> None:
        """Start the background pass to ``prefetch_depth`` unless every depth is already cached
        (only where one pass gives every depth: :meth:`_one_pass`)."""
        target = self.prefetch_depth
        if target is None or self._runner.synchronous or self.closed or target <= spec.depth:
            return
        if self.kernel_fn is not None or not self._one_pass(spec) or self.background:
            return
        depths = [replace(spec, depth=d) for d in range(lowest_depth(spec), target + 1)]
        if all(s in self.cache or self._on_disk(s) for s in depths):
            return
        top = replace(spec, depth=target)
        with self._lock:
            future = self._runner.submit(lambda ctx: self._background_job(top, ctx))
            self._background = (family(spec), target, future)
