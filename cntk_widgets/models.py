"""Plain-Python models behind the lab's widgets (no ipywidgets, no plotly: tests drive these).

- :class:`NetworkSpec` / :class:`ArchitectureModel`: the architecture a user picks (a
  :class:`cntk_core.Architecture`, its kernel and the lab's pooling option);
- :func:`chunked_gram` / :func:`cross_gram`: the lab's Grams in row blocks, one engine call at a
  time (:data:`~cntk_widgets.jobs.ENGINE_LOCK`), with the engine's progress and cancel hooks;
- :func:`check_labels`, :func:`check_nonzero_images`: the explorer's input checks.

:class:`~cntk_widgets.explorer_model.KernelExplorerModel` (normalised CNTK Gram and eigenspectrum
of a class-sorted image set) and :class:`~cntk_widgets.regression_model.RegressionLabModel` have
their own modules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from cntk_core import KINDS, Architecture
from cntk_core.architecture import MIN_DEPTH
from cntk_core.validation import ParameterError, check_choice, check_flag

from .jobs import ENGINE_LOCK, JobContext, engine_hooks

#: the depth slider's end: a lab limit (the engine takes any depth >= 2)
MAX_DEPTH = 21
MAX_UNNAMED_CLASSES = 1000  # labels without class_names beyond this are refused (one name is built per class)


def setting_int(value, name: str, minimum: int = 1, hint: str = "") -> int:
    """:func:`cntk_core.validation.check_int` for the lab's settings, where every bad value is a
    ``ValueError`` (the error box shows it), wrong types included."""
    from cntk_core.validation import check_int

    try:
        return check_int(value, name, minimum, hint)
    except TypeError as exc:
        raise ParameterError(getattr(exc, "param", name), str(exc)) from None


@dataclass(frozen=True)
class NetworkSpec:
    """The paper's network (:class:`cntk_core.Architecture`), its kernel and one lab option;
    hashable (used as a cache key).

    depth : the paper's depth d = number of 3x3 convs + 1 (2 .. :data:`MAX_DEPTH`).
    readout : one of :data:`cntk_core.READOUTS`: ``"gap"`` (CNTK-GAP) or ``"vanilla"`` (CNTK-V).
    fix_first / fix_last : first conv / final FC layer not trained (the official ``--fix``).
    kind : one of :data:`cntk_core.KINDS`: ``"ntk"`` (CNTK) or ``"nngp"`` (CNN-GP).
    pool : insert ``AvgPool(2)`` after the first conv block (halves the image side; runs on the
        engine's per-layer path, so keep images small).

    :attr:`architecture` is the first four fields as the core's value; it checks them (and
    :meth:`~cntk_core.Architecture.check_trainable` refuses an NTK with no trained layer).
    """

    depth: int = 3
    readout: str = "gap"
    fix_first: bool = False
    fix_last: bool = False
    kind: str = "ntk"
    pool: bool = False

    def __post_init__(self):
        arch = Architecture(self.depth, self.readout, self.fix_first, self.fix_last)
        if arch.depth > MAX_DEPTH:
            raise ParameterError(
                "depth", f"depth must be between {MIN_DEPTH} and {MAX_DEPTH} (convs + 1), got {arch.depth}"
            )
        check_choice(self.kind, "kind", KINDS)
        object.__setattr__(self, "pool", check_flag(self.pool, "pool"))
        arch.check_trainable(self.kind)
        for name in ("depth", "fix_first", "fix_last"):
            object.__setattr__(self, name, getattr(arch, name))
        object.__setattr__(self, "_architecture", arch)  # not a field: equality and hash ignore it

    @property
    def architecture(self) -> Architecture:
        """The network without the lab's ``pool`` option and without the kernel's ``kind``."""
        return self._architecture

    def network(self):
        """The :class:`cntk_core.Network` (Conv/ReLU blocks, optional AvgPool, readout, Dense)."""
        from cntk_core import AvgPool

        net = self.architecture.network()
        if self.pool:
            net = type(net)(tuple(net[:2]) + (AvgPool(2),) + tuple(net[2:]))
        return net

    def describe(self) -> str:
        """Header line (name, kind) and the layer list from ``Network.describe()``."""
        return f"{self.title}\n{self.network().describe()}"

    @property
    def title(self) -> str:
        """The paper's name (:meth:`cntk_core.Architecture.title`) and the lab's extras, e.g.
        ``"CNTK-GAP-3, fixed first & last, AvgPool(2)"``."""
        fixes = [w for w, f in (("first", self.fix_first), ("last", self.fix_last)) if f and self.kind == "ntk"]
        extra = (", fixed " + " & ".join(fixes) if fixes else "") + (", AvgPool(2)" if self.pool else "")
        return self.architecture.title(self.kind) + extra


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
    diagonal_first: bool = False,
    on_block: Callable | None = None,
) -> np.ndarray:
    """Symmetric Gram ``[n, n]`` of ``x`` ``[n, H, W, C]`` in row blocks (upper part, mirrored): the
    lab's scheduler for Grams drawn as they fill in, and for short turns on :data:`ENGINE_LOCK`.

    Progress and cancellation are the engine's own (:func:`~cntk_widgets.jobs.engine_hooks`): with
    a job context ``ctx`` every engine call of every block reports its kernel entries through
    ``ctx.progress`` (0..1 over the whole Gram) and asks ``ctx.check`` before each engine call (about
    a second of work), which raises once the job is stale. Blocks are sized so each holds about the
    same number of pairs. Each pair is computed once: a block of rows ``[i0, i1)`` is its square (a
    symmetric call: upper triangle, self pairs at half cost) and the rectangle ``[i0, i1) x [i1, n)``
    (one ``[i0, i1) x [i0, n)`` call would compute the square's pairs twice and its self pairs at full
    cost: 19 % more work at 40 images).

    ``block_fn(x_rows, x_cols, **hooks)`` replaces the engine call (``x_cols=None``: the symmetric
    Gram of ``x_rows``); with a ``ctx`` it gets the hooks as keywords ``progress`` and ``cancel`` (pass
    them on to :func:`cntk_core.kernel_matrices` or :func:`cntk_core.network_kernel`), without one
    none. It may return a ``dict`` of blocks (several kernels at once), and then the result is a
    ``dict`` of Grams with the same keys. ``diagonal_first``: first compute the squares of small
    groups of rows (about 5 % of the work; every self pair), so that each later block completes rows
    and columns that can be normalised (for drawing them as they arrive). ``on_block(rows_done,
    grams)`` is called after every block with the Gram(s) so far (``NaN`` where not yet computed; the
    first ``rows_done`` rows and columns are complete).
    """
    if block_fn is None:

        def block_fn(rows, cols, progress=False, cancel=None):
            from cntk_core import network_kernel

            return network_kernel(
                network, rows, cols, kind=kind, backend=backend, dtype=dtype, progress=progress, cancel=cancel
            )

    n = len(x)
    outs: dict = {}
    total = n * (n + 1) / 2
    done = 0.0

    def call(r0: int, r1: int, c0: int | None) -> None:
        """One locked engine call: the square of rows ``[r0, r1)`` (``c0=None``) or their rectangle
        with the columns ``[c0, n)``; stores the block(s) and counts its pairs as done."""
        nonlocal done
        work = (r1 - r0) * (r1 - r0 + 1) / 2 if c0 is None else (r1 - r0) * (n - c0)
        hooks = {} if ctx is None else engine_hooks(ctx, done / total, (done + work) / total)
        with ENGINE_LOCK:
            blocks = block_fn(x[r0:r1], None if c0 is None else x[c0:], **hooks)
        c0 = r0 if c0 is None else c0
        for key, block in blocks.items() if isinstance(blocks, dict) else [(None, blocks)]:
            out = outs.setdefault(key, np.full((n, n), np.nan))
            out[r0 : r0 + block.shape[0], c0 : c0 + block.shape[1]] = block
            if c0 != r0:  # a square is a symmetric call's whole (mirrored) result
                out[c0 : c0 + block.shape[1], r0 : r0 + block.shape[0]] = block.T
        done += work

    def result():
        return outs[None] if list(outs) == [None] else outs

    # boundaries with equal upper-triangle work: rows i..n cost (n - i); cumulative ~ n^2 - (n-i)^2
    bounds = sorted({int(round(n - n * np.sqrt(1 - t / n_chunks))) for t in range(n_chunks + 1)})
    # groups of rows whose squares are computed first (diagonal_first) or with their block
    step = max(1, -(-n // (4 * n_chunks))) if diagonal_first else n
    edges = zip(bounds[:-1], bounds[1:], strict=True)
    groups = [[(a, min(a + step, i1)) for a in range(i0, i1, step)] for i0, i1 in edges]
    if diagonal_first:
        for a, b in (pair for block in groups for pair in block):
            call(a, b, None)
        if on_block is not None:
            on_block(0, result())
    for block in groups:
        for a, b in block:
            if not diagonal_first:
                call(a, b, None)
            if b < n:
                call(a, b, b)
        if on_block is not None:
            on_block(block[-1][1], result())
    return result()


def cross_gram(
    network, x1: np.ndarray, x2: np.ndarray, *, kind: str, backend: str | None, ctx=None, n_chunks: int = 4
) -> np.ndarray:
    """Gram ``[n1, n2]`` of ``x1`` ``[n1, H, W, C]`` against ``x2`` ``[n2, H, W, C]``, in ``n_chunks``
    row blocks of ``x1`` (one locked engine call each, for short turns on :data:`ENGINE_LOCK`), with
    the engine's progress and cancel hooks for ``ctx`` as in :func:`chunked_gram`."""
    from cntk_core import network_kernel

    n1 = len(x1)
    out = np.empty((n1, len(x2)))
    step = max(1, -(-n1 // n_chunks))
    for i0 in range(0, n1, step):
        i1 = min(n1, i0 + step)
        hooks = engine_hooks(ctx, i0 / n1, i1 / n1)
        with ENGINE_LOCK:
            out[i0:i1] = network_kernel(network, x1[i0:i1], x2, kind=kind, backend=backend, **hooks)
    return out


#: how to turn labels into the class indices the lab wants
_RELABEL = "(class indices 0 .. k-1: relabel with np.unique(labels, return_inverse=True)[1])"


def check_labels(labels, n: int, class_names=None) -> np.ndarray:
    """``labels`` as an int64 array ``[n]`` of class indices ``0 .. n_classes - 1``, or a clear
    ``ValueError``: :func:`cntk_core.validation.check_labels` (integer dtypes only), plus the lab's
    checks that ``class_names`` name every class and that unnamed labels stay below
    :data:`MAX_UNNAMED_CLASSES` (one name is made per class)."""
    from cntk_core.validation import check_labels as core_check_labels

    try:
        labels = core_check_labels(labels, n, "labels", floats=False, for_what=f"{n} images")
    except (TypeError, ValueError) as exc:  # a wrong dtype too: the lab's label errors are ValueErrors
        raise ParameterError("labels", f"{exc} {_RELABEL}") from None
    top = int(labels.max())
    if class_names is not None and top >= len(tuple(class_names)):
        raise ParameterError("labels", f"{len(tuple(class_names))} class names for labels up to {top}")
    if class_names is None and top >= max(MAX_UNNAMED_CLASSES, n):
        raise ParameterError(
            "labels",
            f"labels go up to {top} for {n} images: relabel them 0 .. k-1 "
            "(np.unique(labels, return_inverse=True)[1]) or give class_names",
        )
    return labels


def check_nonzero_images(images: np.ndarray) -> None:
    """Refuse all-zero images: their kernel is 0, so the normalised kernel is undefined."""
    zero = np.flatnonzero(~images.reshape(len(images), -1).any(axis=1))
    if len(zero):
        which = ", ".join(f"#{i}" for i in zero[:5]) + (" ..." if len(zero) > 5 else "")
        raise ValueError(
            f"images: {len(zero)} all-zero image(s) ({which}): their kernel with every image is 0, so the "
            "normalised kernel is undefined; drop them"
        )
