"""Plain-Python models behind the lab's widgets (no ipywidgets, no plotly: tests drive these).

- :class:`NetworkSpec` / :class:`ArchitectureModel`: the architecture a user picks.
- :class:`~cntk_widgets.explorer_model.KernelExplorerModel` (own module): normalised CNTK Gram and
  eigenspectrum of a class-sorted image set.
- :class:`RegressionLabModel` lives in :mod:`cntk_widgets.regression_model`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np

from .jobs import ENGINE_LOCK, JobContext

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
    """Symmetric Gram ``[n, n]`` of ``x`` in row blocks (upper part, mirrored).

    Between blocks the job context can cancel (``ctx.check()``) and report progress. Blocks are
    sized so each holds about the same number of pairs. Each pair is computed once: a block of
    rows ``[i0, i1)`` is its square (a symmetric call: upper triangle, self pairs at half cost)
    and the rectangle ``[i0, i1) x [i1, n)`` (one ``[i0, i1) x [i0, n)`` call would compute the
    square's pairs twice and its self pairs at full cost: 19 % more work at 40 images).

    ``block_fn(x_rows, x_cols)`` replaces the engine call (``x_cols=None``: the symmetric Gram of
    ``x_rows``); it may return a ``dict`` of blocks (several kernels at once), and then the result
    is a ``dict`` of Grams with the same keys. ``diagonal_first``: first compute the squares of
    small groups of rows (about 5 % of the work; every self pair), so that each later block
    completes rows and columns that can be normalised (for drawing them as they arrive).
    ``on_block(rows_done, grams)`` is called after every block with the Gram(s) so far (``NaN``
    where not yet computed; the first ``rows_done`` rows and columns are complete).
    """
    from cntk_core import network_kernel

    if block_fn is None:

        def block_fn(rows, cols):
            return network_kernel(network, rows, cols, kind=kind, backend=backend, progress=False, dtype=dtype)

    n = len(x)
    outs: dict = {}

    def put(r0: int, c0: int, blocks) -> None:
        for key, block in blocks.items() if isinstance(blocks, dict) else [(None, blocks)]:
            out = outs.setdefault(key, np.full((n, n), np.nan))
            out[r0 : r0 + block.shape[0], c0 : c0 + block.shape[1]] = block
            if c0 != r0:  # a square is a symmetric call's whole (mirrored) result
                out[c0 : c0 + block.shape[1], r0 : r0 + block.shape[0]] = block.T

    def result(grams: dict):
        return grams[None] if list(grams) == [None] else grams

    # boundaries with equal upper-triangle work: rows i..n cost (n - i); cumulative ~ n^2 - (n-i)^2
    bounds = sorted({int(round(n - n * np.sqrt(1 - t / n_chunks))) for t in range(n_chunks + 1)})
    total = n * (n + 1) / 2
    done = 0.0
    # groups of rows whose squares are computed first (diagonal_first) or with their block
    step = max(1, -(-n // (4 * n_chunks))) if diagonal_first else n
    edges = zip(bounds[:-1], bounds[1:], strict=True)
    groups = [[(a, min(a + step, i1)) for a in range(i0, i1, step)] for i0, i1 in edges]
    if diagonal_first:
        for block in groups:
            if ctx is not None:
                ctx.check()
            for a, b in block:
                with ENGINE_LOCK:
                    put(a, a, block_fn(x[a:b], None))
                done += (b - a) * (b - a + 1) / 2
            if ctx is not None:
                ctx.progress(done / total)
        if on_block is not None:
            on_block(0, result(outs))
    for block in groups:
        if ctx is not None:
            ctx.check()
        for a, b in block:
            with ENGINE_LOCK:
                if not diagonal_first:
                    put(a, a, block_fn(x[a:b], None))
                if b < n:
                    put(a, b, block_fn(x[a:b], x[b:]))
            done += (b - a) * (n - b) + (0 if diagonal_first else (b - a) * (b - a + 1) / 2)
        if ctx is not None:
            ctx.progress(done / total)
        if on_block is not None:
            on_block(block[-1][1], result(outs))
    return result(outs)


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
