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
from dataclasses import asdict, dataclass, replace

import numpy as np

from cntk_core import KINDS, Architecture
from cntk_core.architecture import MIN_DEPTH, MYRTLE_POOLS
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


#: the picker's network presets: the 2019 paper's CNTK (any depth; optional ``pool``) and the Myrtle
#: networks of Shankar et al. (2020), whose depth and pooling are fixed
PRESETS = ("paper",) + tuple(f"myrtle-{d}" for d in MYRTLE_POOLS)
#: LAP's window when a readout switches to LAP without one (pixels)
DEFAULT_LAP_C = 2
#: the new fields and their defaults: left out of :meth:`NetworkSpec.to_dict` when at them, so that
#: the kernels cached before they existed keep their keys
_EXTENSIONS = {"lap_c": None, "padding": "zero", "flip": False, "preset": "paper"}


def preset_depth(preset: str) -> int | None:
    """The fixed depth of a Myrtle preset (``"myrtle-7"`` -> 7); ``None`` for ``"paper"``."""
    check_choice(preset, "preset", PRESETS)
    return None if preset == "paper" else int(preset.split("-")[1])


@dataclass(frozen=True)
class NetworkSpec:
    """The network (:class:`cntk_core.Architecture`), its kernel and the lab's options; hashable
    (used as a cache key).

    depth : d = number of 3x3 convs + 1 (2 .. :data:`MAX_DEPTH`; a Myrtle preset's own depth).
    readout : one of :data:`cntk_core.READOUTS`: ``"gap"`` (CNTK-GAP), ``"vanilla"`` (CNTK-V) or
        ``"lap"`` (local average pooling of Li et al. 2019, with ``lap_c``).
    fix_first / fix_last : first conv / final FC layer not trained (the official ``--fix``).
    kind : one of :data:`cntk_core.KINDS`: ``"ntk"`` (CNTK) or ``"nngp"`` (CNN-GP).
    pool : the paper preset's ``AvgPool(2)`` after the first conv block (halves the image side).
    lap_c : LAP's window in pixels (an int >= 0) with ``readout="lap"``, else ``None``.
    padding : ``"zero"`` or ``"circular"`` (every conv and LAP wrap around the image).
    flip : the flip-symmetrised kernel ``(K(x, x') + K(x, flip x')) / 2`` (horizontal flip).
    preset : one of :data:`PRESETS`: ``"paper"``, or ``"myrtle-5"`` / ``"myrtle-7"`` /
        ``"myrtle-10"`` (depth 5 / 7 / 10, a 2x2 pool after two convs: image sides divisible by 4).

    Pools, circular padding and flip run on the engine's per-layer path (slower: keep images small).
    :attr:`architecture` is the core's one value of all this but ``kind``; it checks the fields (and
    :meth:`~cntk_core.Architecture.check_trainable` refuses an NTK with no trained layer).
    """

    depth: int = 3
    readout: str = "gap"
    fix_first: bool = False
    fix_last: bool = False
    kind: str = "ntk"
    pool: bool = False
    lap_c: int | None = None
    padding: str = "zero"
    flip: bool = False
    preset: str = "paper"

    def __post_init__(self):
        fixed_depth = preset_depth(self.preset)
        object.__setattr__(self, "pool", check_flag(self.pool, "pool"))
        if fixed_depth is not None:
            name = f"Myrtle-{fixed_depth}"
            if self.depth != fixed_depth:
                raise ParameterError(
                    "depth",
                    f"{name} has depth {fixed_depth}, got depth {self.depth} (other depths: the paper preset)",
                )
            if self.pool:
                raise ParameterError(
                    "pool", f"{name} has its own pools: the 'AvgPool(2) after block 1' option is the paper preset's"
                )
        pools = MYRTLE_POOLS[fixed_depth] if fixed_depth is not None else ((1,) if self.pool else ())
        arch = Architecture(
            self.depth, self.readout, self.fix_first, self.fix_last,
            lap_c=self.lap_c, padding=self.padding, pools=pools, flip=self.flip,
        )  # fmt: skip
        if arch.depth > MAX_DEPTH:
            raise ParameterError(
                "depth", f"depth must be between {MIN_DEPTH} and {MAX_DEPTH} (convs + 1), got {arch.depth}"
            )
        check_choice(self.kind, "kind", KINDS)
        arch.check_trainable(self.kind)
        for name in ("depth", "fix_first", "fix_last", "lap_c", "flip"):
            object.__setattr__(self, name, getattr(arch, name))
        object.__setattr__(self, "_architecture", arch)  # not a field: equality and hash ignore it

    @property
    def architecture(self) -> Architecture:
        """The network as the core's value (pools from ``preset`` / ``pool``), without ``kind``."""
        return self._architecture

    def network(self):
        """The :class:`cntk_core.Network` (Conv/ReLU blocks, AvgPools, readout, Dense). Without
        ``flip``, which is no layer: compute kernels of :attr:`architecture` to have it."""
        return self.architecture.network()

    def to_dict(self) -> dict:
        """The fields with JSON types, each of ``lap_c``, ``padding``, ``flip``, ``preset`` only when
        not at its default (the form the lab's disk cache keys were made of before they existed)."""
        d = asdict(self)
        for key, default in _EXTENSIONS.items():
            if d[key] == default:
                del d[key]
        return d

    def describe(self) -> str:
        """Header line (name, kind) and the layer list from ``Network.describe()`` (and the flip)."""
        flip = "\nkernel: (K(x, x') + K(x, flip x')) / 2 (flip-symmetrised)" if self.flip else ""
        return f"{self.title}\n{self.network().describe()}{flip}"

    @property
    def title(self) -> str:
        """The paper's name (:meth:`cntk_core.Architecture.title`) and the lab's extras, e.g.
        ``"CNTK-GAP-3, fixed first & last, AvgPool(2)"``, ``"CNTK-Myrtle-5"``, ``"CNTK-LAP2-4-circ+flip"``."""
        fixes = [w for w, f in (("first", self.fix_first), ("last", self.fix_last)) if f and self.kind == "ntk"]
        arch = replace(self.architecture, pools=()) if self.pool else self.architecture
        extra = (", fixed " + " & ".join(fixes) if fixes else "") + (", AvgPool(2)" if self.pool else "")
        return arch.title(self.kind) + extra

    @property
    def image_multiple(self) -> int:
        """What the image sides must be a multiple of: 2 per 2x2 pool (1 without pools)."""
        return 2 ** len(self.architecture.pools)

    def check_image_shape(self, height: int, width: int, hint: str = "") -> None:
        """``ParameterError("pools")`` unless ``height x width`` images go through every pool whole
        (sides divisible by :attr:`image_multiple`); ``hint`` ends the message (how to fix it)."""
        m = self.image_multiple
        if height % m or width % m:
            pools = self.architecture.pools
            after = ("convs " if len(pools) > 1 else "conv ") + " and ".join(str(p) for p in pools)
            times = {1: "once", 2: "twice"}.get(m.bit_length() - 1, f"{m.bit_length() - 1} times")
            raise ParameterError(
                "pools",
                f"{self.title} halves the image side {times} (AvgPool(2) after {after}): the images' height "
                f"and width must be divisible by {m}, got {height}x{width} px{hint}",
            )


#: image area (pixels) up to which the per-layer engine is quick enough for the lab (8x8)
QUICK_PER_LAYER_AREA = 64


def per_layer_note(spec: NetworkSpec, height: int, width: int, hint: str = "use smaller images") -> str | None:
    """A warning for nets that run on the per-layer engine (circular padding: full ``(H W)^2``
    tensors per pair, cost growing as the image area squared) on images larger than 8x8 px, ending
    in ``(hint)``; ``None`` otherwise. Pooled (Myrtle) nets run on the fused staged engines."""
    arch = spec.architecture
    if arch.padding != "circular" or height * width <= QUICK_PER_LAYER_AREA:
        return None
    factor = (height * width / QUICK_PER_LAYER_AREA) ** 2
    return (
        f"{spec.title} runs on the per-layer engine (circular padding), whose cost grows as the image "
        f"area squared: {height}x{width} px take about {factor:.0f}x as long per pair as 8x8 px ({hint})"
    )


class ArchitectureModel:
    """Mutable holder of a :class:`NetworkSpec` with observers.

    ``observe(callback)`` registers ``callback(spec)``, called after every change that produced a
    new valid spec. ``set(**fields)`` validates first: a bad value raises ``ValueError`` /
    ``TypeError`` and leaves the model unchanged. It completes what a control changes alone: a
    Myrtle ``preset`` brings its depth (and turns ``pool`` off); a readout other than LAP drops
    ``lap_c``, and LAP without one takes the last window used (:attr:`lap_c`, first
    :data:`DEFAULT_LAP_C`).
    """

    def __init__(self, spec: NetworkSpec | None = None, **fields):
        self._spec = spec or NetworkSpec()
        self.lap_c = DEFAULT_LAP_C if self._spec.lap_c is None else self._spec.lap_c
        if fields:  # completed as by set(): ArchitectureModel(preset="myrtle-5") has depth 5
            self._spec = replace(self._spec, **self._completed(fields))
            self.lap_c = self.lap_c if self._spec.lap_c is None else self._spec.lap_c
        self._observers: list[Callable[[NetworkSpec], None]] = []

    @property
    def spec(self) -> NetworkSpec:
        return self._spec

    def set(self, **fields) -> NetworkSpec:
        unknown = set(fields) - set(NetworkSpec.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown architecture field(s) {sorted(unknown)}")
        new = replace(self._spec, **self._completed(fields))
        if new.lap_c is not None:
            self.lap_c = new.lap_c
        if new != self._spec:
            self._spec = new
            for callback in list(self._observers):
                callback(new)
        return new

    def _completed(self, fields: dict) -> dict:
        """``fields`` with what a change of ``preset`` or ``readout`` implies (see the class)."""
        fields = dict(fields)
        if "preset" in fields and fields["preset"] != self._spec.preset:
            depth = preset_depth(fields["preset"])
            if depth is not None:
                fields.setdefault("depth", depth)
                fields.setdefault("pool", False)
        if "lap_c" not in fields:
            lap = fields.get("readout", self._spec.readout) == "lap"
            fields["lap_c"] = (self._spec.lap_c if self._spec.lap_c is not None else self.lap_c) if lap else None
        return fields

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
