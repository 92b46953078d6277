"""The kernel explorer's model: the normalised CNTK Gram matrix and eigenspectrum of a fixed,
class-sorted image set, for the architecture a user picks (no ipywidgets, no plotly).

Where a kernel comes from, fastest first: the in-memory LRU cache (per spec), the on-disk cache
(:mod:`cntk_widgets.kernel_cache`, shared by sessions and page loads), a background pass that is
already computing it (:mod:`cntk_widgets.explorer_background`), or a new computation on the worker
thread. A computed picture arrives in row blocks (``"partial"`` events), the diagonal blocks first,
so the heatmap can be drawn as it fills in; progress moves and a cancel is seen within every block,
through the engine's own hooks (:func:`cntk_widgets.jobs.engine_hooks`).
"""

from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, replace

import numpy as np

from cntk_core import kernel_matrices, network_kernel
from cntk_core.gram import depths_in_one_pass

from .explorer_background import BACKGROUND_CHUNKS, BackgroundDone, BackgroundPasses, family, lowest_depth
from .jobs import JobContext, JobModel
from .kernel_cache import KernelDiskCache, entry_key, images_fingerprint, open_disk_cache
from .models import ArchitectureModel, NetworkSpec, check_labels, check_nonzero_images, chunked_gram, setting_int

#: how to fix images that a net with pools cannot halve whole (the end of its error)
_POOL_HINT = ": choose the paper preset without AvgPool(2) for these images"
#: where a :class:`KernelResult` came from
SOURCES = ("computed", "background", "memory", "disk")


@dataclass(frozen=True)
class KernelResult:
    """Kernel of one spec: ``raw`` and ``normalized`` ``[n, n]`` float64, ``eigenvalues`` ``[n]``
    (of the normalised matrix, descending), ``seconds`` of compute (0 for cache hits), ``source``
    one of :data:`SOURCES` (``cached`` is ``source != "computed"``)."""

    spec: NetworkSpec
    raw: np.ndarray
    normalized: np.ndarray
    eigenvalues: np.ndarray
    seconds: float
    cached: bool = False
    source: str = "computed"


@dataclass(frozen=True)
class KernelPartial:
    """The requested kernel while it is being computed (event ``"partial"``, for drawing the
    heatmap as row blocks arrive): ``spec``; ``normalized`` ``[n, n]`` float64 with ``NaN`` where
    not yet computed (the diagonal blocks come first, then row blocks: the first ``rows`` rows and
    columns are complete); ``fraction`` of the work done. Computed entries equal the final ones."""

    spec: NetworkSpec
    normalized: np.ndarray
    rows: int
    fraction: float


class KernelExplorerModel(BackgroundPasses, JobModel):
    """Normalised kernel matrix and spectrum of a fixed, class-sorted image set for a chosen spec.

    Parameters
    ----------
    images : float ``[n, H, W, C]`` preprocessed NHWC images; ``labels`` int ``[n]``.
        They are stably sorted by label (``self.order`` maps back to the input order).
    architecture : the :class:`ArchitectureModel` to follow (observed; a change triggers a compute).
    backend : engine backend for :func:`cntk_core.network_kernel` (``None``: automatic).
    dtype : engine arithmetic, ``"float64"`` (default, exact) or ``"float32"`` (about 1.5-2x faster
        on CPU, within 1e-4 relative: plenty for a picture).
    synchronous : compute in the caller's thread (tests, scripts); else one worker thread.
    cache_size : in-memory LRU entries kept (keyed by spec; at least 1). Changing ``dtype`` or
        ``backend`` afterwards empties it.
    disk_cache : ``None`` (default: :class:`~cntk_widgets.kernel_cache.KernelDiskCache` in the
        user's cache folder), ``False`` (off), a folder, or a cache object. Off by default when
        ``kernel_fn`` is given.
    prefetch_depth : after a picture, continue in the background to this depth (the depth
        slider's end), so that later depths are cache hits; ``None``: no background pass. Only
        where one pass gives every depth (the fused CPU engine) and not in synchronous mode.
    kernel_fn : optional ``kernel_fn(spec, images, ctx) -> raw [n, n]`` replacing the engine
        (tests inject blocking or failing functions here).

    Listeners: ``on_change(callback(event, model))`` with events ``"start"``, ``"progress"``,
    ``"partial"`` (``partial``: a :class:`KernelPartial` of the requested kernel, once the diagonal
    blocks and then after every row block of a computed picture), ``"result"``, ``"waiting"`` (the
    requested kernel will come from the running background pass),
    ``"background-done"``, ``"error"``, ``"cancelled"`` and ``"closed"``. State: ``result``
    (latest :class:`KernelResult` or None), ``partial`` (latest :class:`KernelPartial`, None once
    its result is shown), ``error``, ``progress`` (0..1), ``busy``,
    ``background`` (True while a background pass runs), ``pending`` (the spec waiting for it),
    ``closed``, ``cache_hits``, ``cache_misses``, ``disk_hits``.

    Memory: the images (sorted copy), per cached spec two ``[n, n]`` float64 matrices; a pass
    holds one ``[n, n]`` float64 matrix per depth it computes.
    """

    def __init__(
        self,
        images,
        labels,
        class_names: tuple[str, ...] | None = None,
        *,
        architecture: ArchitectureModel | None = None,
        backend: str | None = None,
        dtype: str = "float64",
        synchronous: bool = False,
        cache_size: int = 48,
        disk_cache: KernelDiskCache | str | bool | None = None,
        prefetch_depth: int | None = None,
        kernel_fn: Callable[[NetworkSpec, np.ndarray, JobContext], np.ndarray] | None = None,
        autostart: bool = True,
    ):
        from cntk_core.validation import as_images

        images = as_images(images, "images")
        labels = check_labels(labels, len(images), class_names)
        check_nonzero_images(images)
        self._lock = threading.RLock()
        self.order = np.argsort(labels, kind="stable")
        self.images = images[self.order]
        self.labels = labels[self.order]
        n_classes = int(self.labels.max()) + 1
        self.class_names = tuple(class_names) if class_names is not None else tuple(str(c) for c in range(n_classes))
        self.cache: OrderedDict[NetworkSpec, KernelResult] = OrderedDict()
        self.backend = backend
        self.dtype = dtype
        self.cache_size = cache_size
        self.prefetch_depth = None if prefetch_depth is None else setting_int(prefetch_depth, "prefetch_depth", 2)
        self.architecture = architecture or ArchitectureModel()
        self.kernel_fn = kernel_fn
        self.disk_cache = open_disk_cache(disk_cache, default=kernel_fn is None)
        self._fingerprint = images_fingerprint(self.images) if self.disk_cache else ""
        self.cache_hits = self.cache_misses = self.disk_hits = 0
        self.result: KernelResult | None = None
        self.partial: KernelPartial | None = None
        self.pending: NetworkSpec | None = None
        self.background_error: str | None = None
        self._background: tuple[tuple, int, Future] | None = None  # (family, depth, future)
        self._awaited: Future | None = None
        self._start_runner("cntk-explorer", synchronous, self._publish)
        self.architecture.observe(self._on_spec)
        if autostart:
            self.compute()

    # -- settings -----------------------------------------------------------------------------
    @property
    def spec(self) -> NetworkSpec:
        return self.architecture.spec

    @property
    def dtype(self) -> str:
        """Engine arithmetic (``"float64"`` or ``"float32"``); setting it empties the memory cache."""
        return self._dtype

    @dtype.setter
    def dtype(self, value) -> None:
        from cntk_core.validation import check_dtype

        name = check_dtype(value).name
        if name != getattr(self, "_dtype", name):
            self.cache.clear()
        self._dtype = name

    @property
    def backend(self) -> str | None:
        """Engine backend (``None``: automatic); checked when set, and setting it empties the cache."""
        return self._backend

    @backend.setter
    def backend(self, value: str | None) -> None:
        from cntk_core import resolve_backend

        resolve_backend(value)  # unknown or unusable backends raise here, not at the first compute
        if value != getattr(self, "_backend", value):
            self.cache.clear()
        self._backend = value

    @property
    def cache_size(self) -> int:
        """In-memory LRU entries kept (an integer >= 1)."""
        return self._cache_size

    @cache_size.setter
    def cache_size(self, value: int) -> None:
        self._cache_size = setting_int(value, "cache_size", 1)
        self._trim_cache()

    # -- state --------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._runner.busy

    @property
    def generation(self) -> int:
        return self._runner.generation

    @property
    def dropped(self) -> int:
        """Number of stale computations that completed and whose result was not shown."""
        return self._runner.dropped

    # -- public API ---------------------------------------------------------------------------
    def compute(self, spec: NetworkSpec | None = None):
        """Show the kernel of ``spec`` (default: the current one): from a cache, from the running
        background pass, or computed. Returns the job's future (``None`` for a cache hit).
        Raises ``RuntimeError`` after :meth:`close`."""
        self._runner._check_open()
        spec = spec or self.spec
        self.cancelled = None
        hit = self._lookup(spec)
        with self._lock:
            self.pending = None
            if hit is None:
                self.cache_misses += 1
                bg = self._background
                covered = bg is not None and not bg[2].done() and bg[0] == family(spec) and spec.depth <= bg[1]
                if covered:
                    self.pending, self._awaited = spec, bg[2]
                else:
                    self._background = None
        if hit is not None:
            self.cache_hits += 1
            if self.background:  # keep the background pass going: no new generation
                self._publish(hit)
            else:
                self._runner.publish(hit)
            return None
        if self.pending is not None:
            self._set_state(event="waiting")
            return self._awaited
        future = self._awaited = self._runner.submit(lambda ctx: self._job(spec, ctx))
        return future

    def wait(self, timeout: float | None = 120.0, *, background: bool = False) -> KernelResult | None:
        """Block until the requested kernel is shown (``background=True``: until the background pass
        has ended too); return :attr:`result`. Raises ``TimeoutError`` after ``timeout`` s."""
        if background:
            self._runner.wait(timeout)
            return self.result
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            future = self._awaited
            if future is None:
                return self.result
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            # a request waiting for the background pass may be served before the pass ends: look again
            step = remaining if self.pending is None else min(0.05, 0.05 if remaining is None else remaining)
            try:
                future.result(timeout=step)
            except CancelledError:
                pass
            except TimeoutError:
                if step == remaining:
                    raise
                continue
            if future is self._awaited:
                return self.result

    def cancel(self) -> bool:
        """Stop the running job and any background pass; ``True`` when one was running."""
        with self._lock:
            self.pending, self._background = None, None
        return super().cancel()

    def _before_close(self) -> None:
        with self._lock:
            self.pending, self._background = None, None
        self.architecture.unobserve(self._on_spec)  # close() stops following the architecture

    # -- internals ----------------------------------------------------------------------------
    def _on_spec(self, spec: NetworkSpec) -> None:
        self.compute(spec)

    def _disk_key(self, spec: NetworkSpec) -> str:
        """The disk cache's key: images, :meth:`NetworkSpec.to_dict` (every field that is set), dtype."""
        return entry_key(self._fingerprint, {"gram": "raw", "spec": spec.to_dict(), "dtype": self.dtype})

    def _lookup(self, spec: NetworkSpec) -> KernelResult | None:
        """A cached result (memory, then disk) marked as such, or ``None``."""
        hit = self.cache.get(spec)
        if hit is not None:
            self.cache.move_to_end(spec)
            return replace(hit, cached=True, seconds=0.0, source="memory")
        if self.disk_cache is None:
            return None
        raw = self.disk_cache.get(self._disk_key(spec))
        if raw is None or raw.shape != (len(self.images),) * 2:
            return None
        try:
            result = replace(self._result(spec, raw, 0.0, store=False), cached=True, source="disk")
        except ValueError:
            return None
        self.disk_hits += 1
        self._store(result)
        return result

    def _on_disk(self, spec: NetworkSpec) -> bool:
        return self.disk_cache is not None and self.disk_cache.path(self._disk_key(spec)).is_file()

    def _grams(
        self, spec: NetworkSpec, ctx: JobContext, partial: bool = False, background: bool = False, alone: bool = False
    ) -> dict[NetworkSpec, np.ndarray]:
        """Raw Grams ``[n, n]``: of ``spec``, and of every shallower depth of its family when the
        engine gives them in the same pass (unless ``alone``). ``partial``: emit ``"partial"`` events
        as blocks arrive; ``background``: a background pass (finer blocks; serves waiting requests
        between them). A net with pools refuses images whose sides it cannot halve whole."""
        spec.check_image_shape(*self.images.shape[1:3], hint=_POOL_HINT)
        if self.kernel_fn is not None:
            return {spec: np.asarray(self.kernel_fn(spec, self.images, ctx), dtype=np.float64)}  # test hook
        show = {}  # what happens after each row block: serve a waiting request, or draw the partial picture
        if background:
            show = dict(n_chunks=BACKGROUND_CHUNKS, on_block=functools.partial(self._serve_pending, spec, ctx))
        elif partial:
            show = dict(diagonal_first=True, on_block=functools.partial(self._show_partial, spec, ctx))
        one_pass = self._one_pass(spec) and not alone
        depths = list(range(lowest_depth(spec), spec.depth + 1)) if one_pass else [spec.depth]
        block_fn = self._block_fn(spec, depths)
        grams = chunked_gram(
            None, self.images, kind=spec.kind, backend=self.backend, ctx=ctx, block_fn=block_fn, **show
        )
        return {replace(spec, depth=d): k for d, k in grams.items()}

    def _block_fn(self, spec: NetworkSpec, depths: list[int]) -> Callable:
        """``block_fn(rows, cols, **hooks) -> {depth: block}`` for :func:`chunked_gram`: ``spec``'s
        family at ``depths`` (:func:`cntk_core.kernel_matrices`; a net with pools, whose depth is its
        own, at that depth by :func:`cntk_core.network_kernel` of its Architecture)."""
        kw = dict(kind=spec.kind, backend=self.backend, dtype=self.dtype)
        arch = spec.architecture
        if arch.pools:
            return lambda rows, cols, **hooks: {spec.depth: network_kernel(arch, rows, cols, **kw, **hooks)}
        kw.update(
            readout=arch.readout, fix_first=arch.fix_first, fix_last=arch.fix_last,
            lap_c=arch.lap_c, padding=arch.padding, flip=arch.flip,
        )  # fmt: skip
        return lambda rows, cols, **hooks: kernel_matrices(rows, cols, depths=depths, **kw, **hooks)

    def _one_pass(self, spec: NetworkSpec) -> bool:
        """Whether one pass gives every depth up to ``spec.depth`` at the cost of the deepest
        (:func:`cntk_core.gram.depths_in_one_pass` for its architecture: the fused CPU engine; never
        for a net with pools, whose depth is fixed)."""
        arch = spec.architecture
        return not arch.pools and depths_in_one_pass(self.backend, arch)

    def _show_partial(self, spec: NetworkSpec, ctx: JobContext, rows: int, grams) -> None:
        """Emit ``"partial"`` with what is known of ``spec``'s normalised kernel (as :meth:`_result`
        normalises it; ``NaN`` where not computed yet); nothing once the job is stale or complete."""
        raw = grams[spec.depth] if isinstance(grams, dict) else grams
        if ctx.stale or rows >= len(raw):
            return
        with np.errstate(divide="ignore", invalid="ignore"):
            r = 1.0 / np.sqrt(np.diag(raw))
            normalized = raw * r[:, None] * r[None, :]
        np.fill_diagonal(normalized, 1.0)
        self._set_state(partial=KernelPartial(spec, normalized, rows, self.progress), event="partial")

    def _job(self, spec: NetworkSpec, ctx: JobContext) -> KernelResult:
        t0 = time.perf_counter()
        grams = self._grams(spec, ctx, partial=True, alone=self._prefetch_follows(spec))
        seconds = time.perf_counter() - t0
        result = self._result(spec, grams.pop(spec), seconds, store=False)  # its error is the one shown
        self._keep_quietly(grams)
        self._store(result)  # last: the most recently used entry
        return result

    def _keep_quietly(self, grams: dict) -> None:
        """Cache every Gram that makes a valid result; skip the others (their own request will say why)."""
        for key, raw in grams.items():
            try:
                self._store(self._result(key, raw, 0.0, store=False))
            except ValueError:
                pass

    def _result(self, spec: NetworkSpec, raw: np.ndarray, seconds: float, store: bool = True) -> KernelResult:
        """Normalise and take the spectrum of one spec's raw Gram; with ``store``, :meth:`_store` it."""
        n = len(self.images)
        if raw.shape != (n, n) or not np.isfinite(raw).all():
            raise ValueError(f"kernel computation returned a {raw.shape} matrix with non-finite entries or bad shape")
        from cntk_core.regression import eigenspectrum, normalized_gram

        zero = np.flatnonzero(np.diag(raw) <= 0)
        if len(zero):
            which = ", ".join(f"#{i}" for i in sorted(self.order[zero][:5]))
            raise ValueError(
                f"{spec.title}: image(s) {which} (input order) have a zero kernel with themselves, so the "
                "normalised kernel is undefined: their pixels are too small and underflowed; rescale the "
                "images (e.g. standardise them)"
            )
        normalized = normalized_gram(raw)
        result = KernelResult(spec, raw, normalized, eigenspectrum(normalized, normalize=False), seconds)
        if store:
            self._store(result)
        return result

    def _store(self, result: KernelResult) -> None:
        """Keep ``result`` in the memory LRU (as the most recent entry) and on disk."""
        with self._lock:
            self.cache[result.spec] = result
            self.cache.move_to_end(result.spec)
            self._trim_cache()
        if self.disk_cache is not None and result.source == "computed":
            self.disk_cache.put(self._disk_key(result.spec), result.raw, what=f"{result.spec.title} {self.dtype}")

    def _trim_cache(self) -> None:
        with self._lock:
            while len(self.cache) > self.cache_size:
                self.cache.popitem(last=False)

    def _publish(self, result: KernelResult | BackgroundDone) -> None:
        if isinstance(result, BackgroundDone):
            self._background_done()
            return
        self._set_state(result=result, partial=None, progress=1.0, error=None, event="result")
        self._maybe_prefetch(result.spec)
