"""Plain-Python models behind the lab's widgets (no ipywidgets, no plotly: tests drive these).

- :class:`NetworkSpec` / :class:`ArchitectureModel`: the architecture a user picks.
- :class:`KernelExplorerModel`: normalised CNTK Gram matrix and eigenspectrum of a class-sorted
  image set, computed off the UI thread, cached per spec, stale results dropped.
- :class:`RegressionLabModel` lives in :mod:`cntk_widgets.regression_model`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np

from cntk_core import kernel_matrices

from .jobs import ENGINE_LOCK, JobContext, JobModel

READOUTS = ("gap", "vanilla")
KINDS = ("ntk", "nngp")
MAX_DEPTH = 21
MAX_UNNAMED_CLASSES = 1000  # labels without class_names beyond this are refused (one name is built per class)


def setting_int(value, name: str, minimum: int = 1, hint: str = "") -> int:
    """:func:`cntk_core.validation.check_int` for the lab's settings, where every bad value is a
    ``ValueError`` (the error box shows it), wrong types included."""
    from cntk_core.validation import check_int

    try:
        return check_int(value, name, minimum, hint)
    except TypeError as exc:
        raise ValueError(str(exc)) from None


@dataclass(frozen=True)
class NetworkSpec:
    """The paper's CNTK plus two lab options; hashable (used as a cache key).

    depth : the paper's depth d = number of 3x3 convs + 1 (2 .. 21).
    readout : ``"gap"`` (CNTK-GAP) or ``"vanilla"`` (CNTK-V).
    fix_first / fix_last : first conv / final FC layer not trained (the official ``--fix``).
    kind : ``"ntk"`` (CNTK) or ``"nngp"`` (CNN-GP).
    pool : insert ``AvgPool(2)`` after the first conv block (halves the image side; runs on the
        engine's per-layer path, so keep images small).
    """

    depth: int = 3
    readout: str = "gap"
    fix_first: bool = False
    fix_last: bool = False
    kind: str = "ntk"
    pool: bool = False

    def __post_init__(self):
        from cntk_core.validation import check_flag, check_int

        object.__setattr__(self, "depth", check_int(self.depth, "depth", 2, " (convs + 1)"))
        if not 2 <= self.depth <= MAX_DEPTH:
            raise ValueError(f"depth must be between 2 and {MAX_DEPTH} (convs + 1), got {self.depth}")
        if self.readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {self.readout!r}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        for name in ("fix_first", "fix_last", "pool"):
            object.__setattr__(self, name, check_flag(getattr(self, name), name))
        if self.kind == "ntk" and self.depth == 2 and self.fix_first and self.fix_last:
            raise ValueError(
                "depth 2 with the first and last layer fixed has no trained layer: its NTK is zero "
                "(use depth >= 3, unfix a layer, or kind='nngp')"
            )

    def network(self):
        """The :class:`cntk_core.Network` (Conv/ReLU blocks, optional AvgPool, readout, Dense)."""
        from cntk_core import AvgPool, cntk

        net = cntk(self.depth, self.readout, fix_first=self.fix_first, fix_last=self.fix_last)
        if self.pool:
            net = type(net)(tuple(net[:2]) + (AvgPool(2),) + tuple(net[2:]))
        return net

    def describe(self) -> str:
        """Header line (name, kind) and the layer list from ``Network.describe()``."""
        return f"{self.title}\n{self.network().describe()}"

    @property
    def title(self) -> str:
        name = "CNTK" if self.kind == "ntk" else "CNN-GP"
        name += "-GAP" if self.readout == "gap" else "-V"
        fixes = [w for w, f in (("first", self.fix_first), ("last", self.fix_last)) if f and self.kind == "ntk"]
        extra = (", fixed " + " & ".join(fixes) if fixes else "") + (", AvgPool(2)" if self.pool else "")
        return f"{name}-{self.depth}{extra}"

    def as_dict(self) -> dict:
        return asdict(self)


class ArchitectureModel:
    """Mutable holder of a :class:`NetworkSpec` with observers.

    ``observe(callback)`` registers ``callback(spec)``, called after every change that produced a
    new valid spec. ``set(**fields)`` validates first: a bad value raises ``ValueError`` /
    ``TypeError`` and leaves the model unchanged.
    """

    def __init__(self, spec: NetworkSpec | None = None, **fields):
        self._spec = replace(spec or NetworkSpec(), **fields)
        self._observers: list[Callable[[NetworkSpec], None]] = []

    @property
    def spec(self) -> NetworkSpec:
        return self._spec

    def set(self, **fields) -> NetworkSpec:
        unknown = set(fields) - set(NetworkSpec.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown architecture field(s) {sorted(unknown)}")
        new = replace(self._spec, **fields)
        if new != self._spec:
            self._spec = new
            for callback in list(self._observers):
                callback(new)
        return new

    def network(self):
        return self._spec.network()

    def describe(self) -> str:
        return self._spec.describe()

    def observe(self, callback: Callable[[NetworkSpec], None]) -> None:
        self._observers.append(callback)

    def unobserve(self, callback: Callable[[NetworkSpec], None]) -> None:
        self._observers.remove(callback)


@dataclass(frozen=True)
class KernelResult:
    """Kernel of one spec: ``raw`` and ``normalized`` ``[n, n]`` float64, ``eigenvalues`` ``[n]``
    (of the normalised matrix, descending), ``seconds`` of compute (0 for cache hits)."""

    spec: NetworkSpec
    raw: np.ndarray
    normalized: np.ndarray
    eigenvalues: np.ndarray
    seconds: float
    cached: bool = False


def chunked_gram(
    network,
    x: np.ndarray,
    *,
    kind: str,
    backend: str | None,
    ctx: JobContext | None = None,
    n_chunks: int = 8,
    dtype: str = "float64",
    block_fn: Callable | None = None,
) -> np.ndarray:
    """Symmetric Gram ``[n, n]`` of ``x`` in row blocks (upper part, mirrored).

    Between blocks the job context can cancel (``ctx.check()``) and report progress. Blocks are
    sized so each holds about the same number of pairs. ``block_fn(x_rows, x_cols)`` replaces
    the engine call; it may return a ``dict`` of blocks (several kernels at once), and then the
    result is a ``dict`` of Grams with the same keys.
    """
    from cntk_core import network_kernel

    if block_fn is None:

        def block_fn(rows, cols):
            return network_kernel(network, rows, cols, kind=kind, backend=backend, progress=False, dtype=dtype)

    n = len(x)
    outs: dict = {}
    # boundaries with equal upper-triangle work: rows i..n cost (n - i); cumulative ~ n^2 - (n-i)^2
    bounds = sorted({int(round(n - n * np.sqrt(1 - t / n_chunks))) for t in range(n_chunks + 1)})
    total = n * (n + 1) / 2
    done = 0.0
    for i0, i1 in zip(bounds[:-1], bounds[1:], strict=True):
        if ctx is not None:
            ctx.check()
        with ENGINE_LOCK:
            blocks = block_fn(x[i0:i1], x[i0:])
        for key, block in blocks.items() if isinstance(blocks, dict) else [(None, blocks)]:
            out = outs.setdefault(key, np.empty((n, n)))
            out[i0:i1, i0:] = block
            out[i0:, i0:i1] = block.T
        done += sum(n - i for i in range(i0, i1))
        if ctx is not None:
            ctx.progress(done / total)
    return outs[None] if list(outs) == [None] else outs


def check_labels(labels, n: int, class_names=None) -> np.ndarray:
    """``labels`` as an integer array ``[n]`` of class indices ``0 .. n_classes - 1``, or a clear error."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != n:
        raise ValueError(f"labels must be a 1-D array with one label per image ({n} images), got shape {labels.shape}")
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be integer class indices 0, 1, ..., got dtype {labels.dtype} "
            "(convert e.g. with labels.astype(int), or np.unique(labels, return_inverse=True)[1])"
        )
    if labels.min() < 0:
        raise ValueError(
            f"labels must be class indices >= 0, got {int(labels.min())} "
            "(relabel with np.unique(labels, return_inverse=True)[1])"
        )
    top = int(labels.max())
    if class_names is not None and top >= len(tuple(class_names)):
        raise ValueError(f"{len(tuple(class_names))} class names for labels up to {top}")
    if class_names is None and top >= max(MAX_UNNAMED_CLASSES, n):
        raise ValueError(
            f"labels go up to {top} for {n} images: relabel them 0 .. k-1 "
            "(np.unique(labels, return_inverse=True)[1]) or give class_names"
        )
    return labels.astype(np.int64, copy=False)


def check_nonzero_images(images: np.ndarray) -> None:
    """Refuse all-zero images: their kernel is 0, so the normalised kernel is undefined."""
    zero = np.flatnonzero(~images.reshape(len(images), -1).any(axis=1))
    if len(zero):
        which = ", ".join(f"#{i}" for i in zero[:5]) + (" ..." if len(zero) > 5 else "")
        raise ValueError(
            f"images: {len(zero)} all-zero image(s) ({which}): their kernel with every image is 0, so the "
            "normalised kernel is undefined; drop them"
        )


class KernelExplorerModel(JobModel):
    """Normalised kernel matrix and spectrum of a fixed, class-sorted image set for a chosen spec.

    Parameters
    ----------
    images : float ``[n, H, W, C]`` preprocessed NHWC images; ``labels`` int ``[n]``.
        They are stably sorted by label (``self.order`` maps back to the input order).
    architecture : the :class:`ArchitectureModel` to follow (observed; a change triggers a compute).
    backend : engine backend for :func:`cntk_core.network_kernel` (``None``: automatic).
    dtype : engine arithmetic, ``"float64"`` (default, exact) or ``"float32"`` (about 1.5-2x faster
        on CPU; plenty for a picture).
    synchronous : compute in the caller's thread (tests, scripts); else one worker thread.
    cache_size : LRU entries kept (keyed by spec; at least 1). Changing ``dtype`` or ``backend``
        afterwards empties the cache.
    kernel_fn : optional ``kernel_fn(spec, images, ctx) -> raw [n, n]`` replacing the engine
        (tests inject blocking or failing functions here).

    Listeners: ``on_change(callback(event, model))`` with events ``"start"``, ``"progress"``,
    ``"result"``, ``"error"``, ``"cancelled"`` (:meth:`cancel`, or an interrupted synchronous
    compute: ``cancelled`` holds the reason) and ``"closed"``. State: ``result`` (latest
    :class:`KernelResult` or None), ``error`` (str or None), ``progress`` (0..1), ``busy``,
    ``closed``, ``cache_hits``, ``cache_misses``.
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
        cache_size: int = 32,
        kernel_fn: Callable[[NetworkSpec, np.ndarray, JobContext], np.ndarray] | None = None,
        autostart: bool = True,
    ):
        from cntk_core.validation import as_images

        images = as_images(images, "images")
        labels = check_labels(labels, len(images), class_names)
        check_nonzero_images(images)
        self.order = np.argsort(labels, kind="stable")
        self.images = images[self.order]
        self.labels = labels[self.order]
        n_classes = int(self.labels.max()) + 1
        self.class_names = tuple(class_names) if class_names is not None else tuple(str(c) for c in range(n_classes))
        self.cache: OrderedDict[NetworkSpec, KernelResult] = OrderedDict()
        self.backend = backend
        self.dtype = dtype
        self.cache_size = cache_size
        self.architecture = architecture or ArchitectureModel()
        self.kernel_fn = kernel_fn
        self.cache_hits = 0
        self.cache_misses = 0
        self.result: KernelResult | None = None
        self._start_runner("cntk-explorer", synchronous, self._publish)
        self.architecture.observe(self._on_spec)
        if autostart:
            self.compute()

    # -- public API ---------------------------------------------------------------------------
    @property
    def spec(self) -> NetworkSpec:
        return self.architecture.spec

    @property
    def dtype(self) -> str:
        """Engine arithmetic (``"float64"`` or ``"float32"``); setting it empties the cache."""
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
        """LRU entries kept (an integer >= 1)."""
        return self._cache_size

    @cache_size.setter
    def cache_size(self, value: int) -> None:
        self._cache_size = setting_int(value, "cache_size", 1)
        self._trim_cache()

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

    def compute(self, spec: NetworkSpec | None = None):
        """Compute (or fetch from the cache) the kernel of ``spec`` (default: the current one).

        Raises ``RuntimeError`` after :meth:`close`.
        """
        spec = spec or self.spec
        self.cancelled = None
        hit = self.cache.get(spec)
        if hit is not None:
            self.cache.move_to_end(spec)
            self.cache_hits += 1
            self._runner.publish(replace(hit, cached=True, seconds=0.0))
            return None
        self.cache_misses += 1
        return self._runner.submit(lambda ctx: self._job(spec, ctx))

    def wait(self, timeout: float | None = 120.0) -> KernelResult | None:
        """Block until the newest computation is done; return :attr:`result`."""
        self._runner.wait(timeout)
        return self.result

    def _before_close(self) -> None:
        self.architecture.unobserve(self._on_spec)  # close() stops following the architecture

    # -- internals ----------------------------------------------------------------------------
    def _on_spec(self, spec: NetworkSpec) -> None:
        self.compute(spec)

    def _job(self, spec: NetworkSpec, ctx: JobContext) -> KernelResult:
        import time

        t0 = time.perf_counter()
        if self.kernel_fn is not None:
            raws = {spec: np.asarray(self.kernel_fn(spec, self.images, ctx), dtype=np.float64)}  # test hook
        elif self._multi_depth(spec):
            # depth d's recurrence passes through every shallower depth: read them all out on the way
            # (same cost), so moving the depth slider down afterwards is a cache hit
            lo = 3 if spec.kind == "ntk" and spec.fix_first and spec.fix_last else 2
            opts = dict(readout=spec.readout, fix_first=spec.fix_first, fix_last=spec.fix_last, kind=spec.kind)

            def all_depths(rows, cols):
                return kernel_matrices(
                    rows,
                    cols,
                    depths=range(lo, spec.depth + 1),
                    backend="numba",
                    dtype=self.dtype,
                    progress=False,
                    **opts,
                )

            grams = chunked_gram(None, self.images, kind=spec.kind, backend=None, ctx=ctx, block_fn=all_depths)
            raws = {replace(spec, depth=d): k for d, k in grams.items()}
        else:
            raws = {
                spec: chunked_gram(
                    spec.network(), self.images, kind=spec.kind, backend=self.backend, ctx=ctx, dtype=self.dtype
                )
            }
        seconds = time.perf_counter() - t0
        results = {key: self._result(key, raw, seconds if key == spec else 0.0) for key, raw in raws.items()}
        return results[spec]

    def _multi_depth(self, spec: NetworkSpec) -> bool:
        """Whether one pass can give every depth up to ``spec.depth`` (the fused CPU engine)."""
        from cntk_core import resolve_backend

        return not spec.pool and resolve_backend(self.backend) == "numba"

    def _result(self, spec: NetworkSpec, raw: np.ndarray, seconds: float) -> KernelResult:
        """Normalise, take the spectrum, and cache (LRU) the result of one spec."""
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
        self.cache[spec] = result
        self.cache.move_to_end(spec)
        self._trim_cache()
        return result

    def _trim_cache(self) -> None:
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)

    def _publish(self, result: KernelResult) -> None:
        self._set_state(result=result, progress=1.0, error=None, event="result")
