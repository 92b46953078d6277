"""Background work for the lab: one worker thread, a generation counter, progress and errors.

A :class:`JobRunner` runs one job at a time on a single worker thread (the Numba engine is
itself parallel, and its default threading layer must not be entered from two threads at once).
Every :meth:`JobRunner.submit` bumps the generation: a job that is still running stops at its next
:meth:`JobContext.check` (the engine asks it before every call, through :func:`engine_hooks`);
if it finishes anyway, its result is dropped.
With ``synchronous=True`` jobs run inline in the caller's thread (for tests and scripts); there a
``KeyboardInterrupt`` (Jupyter's "interrupt kernel") or ``SystemExit`` reports ``on_cancel`` and is
re-raised, so a loop over computations stops instead of carrying on with the previous result.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from typing import Any

#: held around every engine call made by the lab's workers: Numba's default ("workqueue") threading
#: layer aborts the process when two threads launch parallel kernels at once, and the explorer and
#: the regression lab each have their own worker thread. The lab's Grams are computed in row blocks
#: (:func:`cntk_widgets.models.chunked_gram`), one locked call each, so waits are short.
ENGINE_LOCK = threading.RLock()


def engine_hooks(ctx, lo: float = 0.0, hi: float = 1.0) -> dict:
    """The core's ``progress`` and ``cancel`` hooks (:mod:`cntk_core.gram`) for one engine call made
    by a job: ``progress(done, total)`` (kernel entries) reports ``lo + (hi - lo) * done / total``
    through ``ctx.progress``, and ``cancel`` is ``ctx.check``, which raises :class:`Superseded` (or a
    sub-task's own exception) once the job is stale: the engine stops before its next call, within
    about a second of work. ``ctx``: a :class:`JobContext`, a :class:`ScaledContext` or any object
    with ``check()`` and ``progress(fraction)``; ``None`` gives no hooks (``progress=False``)."""
    if ctx is None:
        return {"progress": False}

    def progress(done: int, total: int) -> None:
        ctx.progress(lo + (hi - lo) * (done / total if total else 1.0))

    return {"progress": progress, "cancel": ctx.check}


class Superseded(Exception):
    """Raised inside a job when a newer job was submitted; the runner swallows it."""


class JobContext:
    """Handed to a job: ``progress(fraction)`` reports 0..1, ``check()`` raises if superseded."""

    def __init__(self, runner: JobRunner, generation: int):
        self._runner = runner
        self.generation = generation

    @property
    def stale(self) -> bool:
        return self.generation != self._runner.generation

    def check(self) -> None:
        if self.stale:
            raise Superseded(f"job {self.generation} superseded by {self._runner.generation}")

    def progress(self, fraction: float) -> None:
        if not self.stale:
            self._runner._emit_progress(self.generation, float(min(max(fraction, 0.0), 1.0)))

    def scaled(self, lo: float, hi: float) -> ScaledContext:
        """A view of this context for one part of the job: its progress 0..1 maps to [lo, hi]."""
        return ScaledContext(self, lo, hi)


class ScaledContext:
    """A :class:`JobContext` for a sub-task (see :meth:`JobContext.scaled`)."""

    def __init__(self, parent: JobContext | ScaledContext, lo: float, hi: float):
        self.parent, self.lo, self.hi = parent, lo, hi

    @property
    def stale(self) -> bool:
        return self.parent.stale

    def check(self) -> None:
        self.parent.check()

    def progress(self, fraction: float) -> None:
        self.parent.progress(self.lo + (self.hi - self.lo) * min(max(fraction, 0.0), 1.0))

    def scaled(self, lo: float, hi: float) -> ScaledContext:
        return ScaledContext(self, lo, hi)


class JobRunner:
    """Run ``job(ctx) -> result`` off the UI thread; publish only the newest generation's outcome.

    An asynchronous runner initialises Numba's CPU target on the thread that creates it
    (:func:`cntk_core.backend.initialise_numba`), so that the worker never walks Python's builtins
    while IPython changes them between cells.

    Callbacks (any thread; called from the worker thread in asynchronous mode):
    ``on_start(generation)``, ``on_progress(fraction)``, ``on_result(result)``, ``on_error(message)``,
    ``on_cancel(reason)`` (:meth:`cancel`, or an interrupt of a synchronous job). An exception raised
    by ``on_result`` (drawing the result) is reported through ``on_error``, never dropped.
    """

    def __init__(
        self,
        *,
        synchronous: bool = False,
        on_start: Callable[[int], None] | None = None,
        on_progress: Callable[[float], None] | None = None,
        on_result: Callable[[Any], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        on_cancel: Callable[[str], None] | None = None,
        name: str = "cntk-lab",
    ):
        self.synchronous = synchronous
        self.generation = 0
        self.on_start, self.on_progress, self.on_result, self.on_error = on_start, on_progress, on_result, on_error
        self.on_cancel = on_cancel
        self.dropped = 0  # results of superseded jobs that completed anyway and were not published
        self.closed = False
        self._lock = threading.Lock()
        if not synchronous:  # the first engine call happens on the worker: initialise Numba here
            from cntk_core.backend import initialise_numba

            initialise_numba()
        self._executor = None if synchronous else ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._latest: Future | None = None

    def submit(self, job: Callable[[JobContext], Any]) -> Future:
        """Start ``job`` as the newest generation; older jobs still running become stale.

        Raises ``RuntimeError`` after :meth:`shutdown`. In synchronous mode a ``KeyboardInterrupt`` or
        ``SystemExit`` raised by the job reports ``on_cancel`` and propagates.
        """
        self._check_open()
        with self._lock:
            self.generation += 1
            ctx = JobContext(self, self.generation)
        if not self.synchronous:
            future = self._latest = self._executor.submit(self._run, job, ctx)
            return future
        future = self._latest = Future()
        try:
            result = self._run(job, ctx)
        except BaseException:  # KeyboardInterrupt, SystemExit (_run reports every Exception itself)
            future.cancel()  # so that wait() returns instead of raising the interrupt a second time
            raise
        future.set_result(result)
        return future

    def publish(self, result: Any) -> None:
        """Publish an already known result (e.g. a cache hit) as a new generation, without a job."""
        self._check_open()
        with self._lock:
            self.generation += 1
        self._deliver(result)

    def cancel(self) -> bool:
        """Make the running job stale (it stops at its next check); ``True`` when one was running."""
        busy = self.busy
        with self._lock:
            self.generation += 1
        if busy and self.on_cancel:
            self.on_cancel("cancelled")
        return busy

    def wait(self, timeout: float | None = None) -> None:
        """Block until the newest job has finished (raises ``TimeoutError`` after ``timeout`` s).

        A job cancelled by :meth:`shutdown` or by an interrupt counts as finished.
        """
        while True:
            future = self._latest
            if future is None:
                return
            try:
                future.result(timeout=timeout)
            except CancelledError:
                pass
            if future is self._latest:
                return

    @property
    def busy(self) -> bool:
        return self._latest is not None and not self._latest.done()

    def shutdown(self) -> None:
        """Stop for good: a running job becomes stale, queued ones are cancelled, ``submit`` raises."""
        with self._lock:
            self.generation += 1  # make any running job stale
            self.closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("this model was closed (close()); create a new one to compute again")

    def _emit_progress(self, generation: int, fraction: float) -> None:
        if self.on_progress and generation == self.generation:
            self.on_progress(fraction)

    def _run(self, job, ctx: JobContext):
        if ctx.stale:
            return None  # superseded before it started
        if self.on_start:
            self.on_start(ctx.generation)
        try:
            result = job(ctx)
        except Superseded:
            return None
        except Exception as exc:
            if not ctx.stale and self.on_error:
                self.on_error(format_error(exc))
            return None
        except BaseException as exc:  # KeyboardInterrupt, SystemExit: leave a consistent state, then re-raise
            if not ctx.stale and self.on_cancel:
                self.on_cancel(f"interrupted ({type(exc).__name__})")
            raise
        if ctx.stale:
            self.dropped += 1
            return None
        self._deliver(result)
        return result

    def _deliver(self, result: Any) -> None:
        """``on_result(result)``; an exception there (drawing the result) goes to ``on_error``."""
        if not self.on_result:
            return
        try:
            self.on_result(result)
        except Exception as exc:
            if not self.on_error:
                raise
            self.on_error("while showing the result: " + format_error(exc))


class JobModel:
    """What the lab's models share around their :class:`JobRunner`: the ``progress`` / ``error`` /
    ``cancelled`` state, listeners (``on_change(callback(event, model))``), and ``cancel`` /
    ``close``. A subclass calls :meth:`_start_runner` in its ``__init__``, sets the rest of its
    state with :meth:`_set_state` (which notifies the listeners), and may extend :meth:`_before_close`.
    """

    def _start_runner(self, name: str, synchronous: bool, on_result: Callable[[Any], None]) -> None:
        self.progress = 0.0
        self.error: str | None = None
        self.cancelled: str | None = None
        self._listeners: list[Callable[[str, Any], None]] = []
        self._runner = JobRunner(
            synchronous=synchronous,
            on_start=lambda g: self._set_state(progress=0.0, error=None, event="start"),
            on_progress=lambda f: self._set_state(progress=f, event="progress"),
            on_result=on_result,
            on_error=lambda message: self._set_state(error=message, event="error"),
            on_cancel=lambda why: self._set_state(progress=0.0, cancelled=why, event="cancelled"),
            name=name,
        )

    def on_change(self, callback: Callable[[str, Any], None]) -> None:
        self._listeners.append(callback)

    @property
    def closed(self) -> bool:
        return self._runner.closed

    def cancel(self) -> bool:
        """Stop the running job (what it finished before stays); ``True`` when one was running."""
        return self._runner.cancel()

    def close(self) -> None:
        """Stop the worker for good (a running job is dropped); emits ``"closed"``. Idempotent."""
        if self.closed:
            return
        self._before_close()
        self._runner.shutdown()
        self._set_state(progress=0.0, event="closed")

    def _before_close(self) -> None:
        """Hook for :meth:`close` (e.g. stop following other models)."""

    def _set_state(self, *, event: str, **fields: Any) -> None:
        for name, value in fields.items():
            setattr(self, name, value)
        for callback in list(self._listeners):
            callback(event, self)


def error_name(exc: BaseException) -> str:
    """The exception's class name as the lab's error boxes show it: the core's parameter errors
    (:class:`cntk_core.ParameterError`, :class:`cntk_core.ParameterTypeError`) as the built-in
    ``ValueError`` / ``TypeError`` they are, every other exception by its own name."""
    from cntk_core.validation import ParameterError, ParameterTypeError

    if isinstance(exc, ParameterError | ParameterTypeError):
        return "ValueError" if isinstance(exc, ValueError) else "TypeError"
    return type(exc).__name__


def format_error(exc: BaseException) -> str:
    """``"ValueError: message"`` plus the innermost frame, for an error box a user can read."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (in {frames[-1].name}, {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno})" if frames else ""
    return f"{error_name(exc)}: {exc}{where}"
