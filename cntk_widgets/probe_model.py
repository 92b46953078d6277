"""Plain-Python model of the translation and flip probe (issue 26): how much does a kernel change when
an image is shifted or mirrored?

For one image ``x`` and each shift ``(dy, dx)`` in ``[-w, w]^2`` the probe takes the circular shift
``s = np.roll(x, (dy, dx), axis=(0, 1))`` (pixels leaving one edge come back at the other) and the
normalised kernel

    k̂(x, s) = k(x, s) / sqrt(k(x, x) k(s, s))          (1 at (0, 0); 1 everywhere = invariant)

for several readouts of the same network: vanilla (position by position), LAP with window ``c``
(translations of both images by up to ``c`` pixels averaged, Li et al. 2019) and GAP (every position
pair). With circular padding (``padding="circular"``: every convolution wraps around, a torus) GAP is
exactly invariant to circular shifts, while vanilla is not; with zero padding the image's edges break
the symmetry a little. The flip probe is ``k̂(x, flip x)`` (width axis reversed). The readouts are
``docs/math.md``, section 3, step 5, and the section on local average pooling.

Cost per readout and image: the row ``k(x, s)`` (``(2w + 1)^2`` pairs) and the self pairs ``k(s, s)``;
on the fused CPU engine (zero padding) one symmetric Gram of the shifted copies (its diagonal), on the
per-layer path (circular padding) one call per copy (a symmetric Gram there would cost ``(2w+1)^2 / 2``
times more). Keep images small (8x8 digits: about a second per readout on two cores).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, replace

import numpy as np

from cntk_core import Architecture
from cntk_core.architecture import PADDINGS
from cntk_core.validation import KINDS, ParameterError, as_images, check_choice

from .jobs import ENGINE_LOCK, JobContext, JobModel, engine_hooks
from .models import setting_int

#: the readouts the probe compares, in the order drawn (LAP's window is ``ProbeSettings.lap_c``)
PROBE_READOUTS = ("vanilla", "lap", "gap")


@dataclass(frozen=True)
class ProbeSettings:
    """The network (``depth``, ``kind``, ``padding``, LAP's ``lap_c``) and the shift window ``w``
    (shifts ``-w .. w`` pixels per axis)."""

    depth: int = 3
    kind: str = "ntk"
    padding: str = "circular"
    lap_c: int = 1
    window: int = 3

    def __post_init__(self):
        object.__setattr__(self, "depth", setting_int(self.depth, "depth", 2))
        check_choice(self.kind, "kind", KINDS)
        check_choice(self.padding, "padding", PADDINGS)
        object.__setattr__(self, "lap_c", setting_int(self.lap_c, "lap_c", 0, " (LAP's window in pixels)"))
        object.__setattr__(self, "window", setting_int(self.window, "window", 1, " (largest shift in pixels)"))

    def architecture(self, readout: str) -> Architecture:
        """The network of one readout (``"vanilla"``, ``"lap"`` or ``"gap"``)."""
        lap_c = self.lap_c if readout == "lap" else None
        return Architecture(self.depth, readout, lap_c=lap_c, padding=self.padding)


def shifted_copies(image: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """``(copies [S, H, W, C], shifts [S, 2])``: ``np.roll(image, (dy, dx), axis=(0, 1))`` for every
    ``(dy, dx)`` in ``[-window, window]^2``, row-major in ``dy`` then ``dx`` (``S = (2 window + 1)^2``)."""
    r = range(-window, window + 1)
    shifts = np.array([(dy, dx) for dy in r for dx in r], dtype=np.int64)
    return np.stack([np.roll(image, (dy, dx), axis=(0, 1)) for dy, dx in shifts]), shifts


@dataclass(frozen=True, eq=False)
class ProbeResult:
    """The probe of one image. ``maps[name]`` ``[2w + 1, 2w + 1]``: ``k̂(x, shift(x))`` at row
    ``dy + w``, column ``dx + w``; ``flip[name]``: ``k̂(x, flip x)``; ``raw[name]``: ``(k(x, s) [S],
    k(s, s) [S])`` with ``S = (2w + 1)^2`` in the order of ``shifts`` ``[S, 2]``; ``titles[name]``: the
    network's name (e.g. ``CNTK-GAP-3-circ``); ``image`` ``[H, W, C]`` as given."""

    index: int
    image: np.ndarray
    settings: ProbeSettings
    shifts: np.ndarray
    maps: dict
    flip: dict
    raw: dict
    titles: dict
    seconds: float

    def invariance_radius(self, name: str, tol: float = 1e-6) -> int:
        """The largest ``r`` such that ``k̂ >= 1 - tol`` for every shift with ``max(|dy|, |dx|) <= r``
        (0: only the unshifted image)."""
        w = self.settings.window
        m = self.maps[name]
        r = 0
        while r < w and m[w - r - 1 : w + r + 2, w - r - 1 : w + r + 2].min() >= 1 - tol:
            r += 1
        return r


def probe_kernels(
    arch: Architecture, image: np.ndarray, window: int, *, kind: str = "ntk", backend=None, ctx=None
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """``(k(x, s) [S], k(s, s) [S], k(x, flip x), k(flip x, flip x))`` for one image ``[H, W, C]`` and
    its shifted copies (:func:`shifted_copies`), each engine call under :data:`ENGINE_LOCK` with the
    job's hooks. Allocates the ``S`` copies and, on the fused path, an ``S x S`` Gram."""
    from cntk_core import network_kernel
    from cntk_core.flip import flip_images

    x = image[None]
    copies, _ = shifted_copies(image, window)
    kw = dict(kind=kind, backend=backend)

    def call(a, b=None, lo=0.0, hi=1.0):
        with ENGINE_LOCK:
            return network_kernel(arch, a, b, **kw, **engine_hooks(ctx, lo, hi))

    row = call(x, copies, 0.0, 0.3)[0]
    if arch.padding == "zero" and not arch.pools:  # the fused CPU engine: a symmetric Gram is cheap per pair
        diag = np.diag(call(copies, None, 0.3, 0.9)).copy()
    else:  # the per-layer path: one self pair per call
        diag = np.array([call(copies[i : i + 1], None, 0.3 + 0.6 * i / len(copies))[0, 0] for i in range(len(copies))])
    flipped = flip_images(x)
    k_flip = float(call(x, flipped, 0.9, 0.95)[0, 0])
    k_ff = float(call(flipped, None, 0.95, 1.0)[0, 0])
    return row, diag, k_flip, k_ff


class ProbeModel(JobModel):
    """The translation and flip probe of ``images[index]`` for the readouts of :data:`PROBE_READOUTS`.

    images ``[n, H, W, C]`` float (preprocessed; small, e.g. 8x8 digits), labels ``[n]`` (for the
    caption) and class names. ``select(index)`` and ``set(**settings)`` (:class:`ProbeSettings`
    fields, validated first) compute in the background (or inline with ``synchronous=True``);
    results are kept in memory per (image, settings). Events as :class:`TrainingDynamicsModel`:
    ``"start"``, ``"progress"``, ``"result"``, ``"error"``, ``"settings"``, ``"cancelled"``, ``"closed"``.
    """

    def __init__(
        self,
        images,
        labels=None,
        class_names=None,
        *,
        index: int = 0,
        backend: str | None = None,
        synchronous: bool = False,
        autostart: bool = True,
        settings: ProbeSettings | None = None,
        **fields,
    ):
        self.images = as_images(images, "images")
        self.labels = None if labels is None else np.asarray(labels)
        self.class_names = None if class_names is None else tuple(class_names)
        self.settings = replace(settings or ProbeSettings(), **fields)
        self.index = self._check_index(index)
        self.backend = backend
        self.result: ProbeResult | None = None
        self.cache: OrderedDict[tuple, ProbeResult] = OrderedDict()
        self._start_runner("cntk-probe", synchronous, self._publish)
        if autostart:
            self.compute()

    def _check_index(self, index) -> int:
        index = setting_int(index, "index", 0, " (an image number)")
        if index >= len(self.images):
            raise ParameterError("index", f"index must be in 0 .. {len(self.images) - 1}, got {index}")
        return index

    def caption(self, index: int | None = None) -> str:
        """``"image #3 (class 7)"``."""
        i = self.index if index is None else index
        if self.labels is None:
            return f"image #{i}"
        label = int(self.labels[i])
        name = self.class_names[label] if self.class_names else str(label)
        return f"image #{i} (class {name})"

    def select(self, index: int):
        """Probe another image."""
        self.index = self._check_index(index)
        return self.compute()

    def set(self, **fields):
        """Change :class:`ProbeSettings` fields (validated first), then probe again."""
        new = replace(self.settings, **fields)
        if new != self.settings:
            self._set_state(settings=new, event="settings")
        return self.compute()

    def compute(self):
        """Show the probe of the current image and settings: from memory (returns None) or computed."""
        key = (self.index, self.settings)
        self.cancelled = None
        hit = self.cache.get(key)
        if hit is not None:
            self._runner.publish(hit)
            return None
        index, settings = key
        return self._runner.submit(lambda ctx: self._job(index, settings, ctx))

    def wait(self, timeout: float | None = 300.0) -> ProbeResult | None:
        self._runner.wait(timeout)
        return self.result

    def _job(self, index: int, settings: ProbeSettings, ctx: JobContext) -> ProbeResult:
        t0 = time.perf_counter()
        image = self.images[index]
        maps, flips, raw, titles = {}, {}, {}, {}
        w = settings.window
        for k, readout in enumerate(PROBE_READOUTS):
            arch = settings.architecture(readout)
            sub = ctx.scaled(k / len(PROBE_READOUTS), (k + 1) / len(PROBE_READOUTS))
            row, diag, k_flip, k_ff = probe_kernels(arch, image, w, kind=settings.kind, backend=self.backend, ctx=sub)
            k_xx = row[len(row) // 2]  # the (0, 0) shift is the image itself
            if not (k_xx > 0 and np.all(diag > 0) and k_ff > 0):
                raise ValueError(f"{arch.title(settings.kind)}: a zero kernel value (an all-zero image?)")
            maps[readout] = (row / np.sqrt(k_xx * diag)).reshape(2 * w + 1, 2 * w + 1)
            flips[readout] = k_flip / np.sqrt(k_xx * k_ff)
            raw[readout] = (row, diag)
            titles[readout] = arch.title(settings.kind)
        _, shifts = shifted_copies(image, w)
        result = ProbeResult(index, image, settings, shifts, maps, flips, raw, titles, time.perf_counter() - t0)
        self.cache[(index, settings)] = result
        while len(self.cache) > 32:
            self.cache.popitem(last=False)
        return result

    def _publish(self, result: ProbeResult) -> None:
        self._set_state(result=result, progress=1.0, error=None, event="result")
