"""Lab latency on CIFAR-10 (issue 23): the kernel explorer's first picture, then every slider depth.

What a user gets: the lab's 40 CIFAR-10 images (4 per class of the exact subset, preprocessed as the
lab does: :func:`cntk_widgets.lab_data.lab_images`), through :class:`KernelExplorerModel` with its
worker thread, as the explorer widget drives it (times from the call that the slider makes to the
model's ``"result"`` event; drawing in the browser is not included). Cases: CNTK-GAP with the
paper's fix (first and last layer fixed) and plain CNTK-GAP; float32 (the lab's CIFAR setting) and
float64. Per case and dtype, each round measures:

(a) the first picture of depth 6, cold (no memory or disk cache; Numba already compiled, see the
    warm-up line): seconds to the result, and to the first ``"partial"`` event (the heatmap's first
    rows, ready to draw);
(b) the background pass that follows it, to the slider's end (depth 21);
(c) then every depth of the slider as a slider move: all must be memory-cache hits; max and median;
(d) a new session (first picture again, disk cache on, empty) whose user moves the slider quickly
    6 -> 7 -> 8 -> 9 -> 10 (0.25 s apart) right after the first picture, during the background pass:
    seconds from the first press, and from the last press, to depth 10's result;
(e) a second session on the same images with the disk cache of (d): its first picture;
(f) the same in a new Python process (a classroom page's next load starts a fresh kernel): seconds
    from the process start, and how much of it is Python start, imports and loading the images.

Baseline in the same run (what issue 23 measured: 40 images, GAP 6 -> 7 took 4.8 s): the explorer
before this work, each depth computed on demand with no background pass, one pass that reads out
every depth up to the requested one, in the former row blocks (one ``[i0, i1) x [i0, n)`` call per
block; emulated through ``kernel_fn``), in the same dtype: its first picture, the slider steps
6 -> 7 and 7 -> 8, and the same quick presses. The ratios are baseline / now per round, as median
[range]; float32 rows also against the float64 baseline (the explorer's default before).

Engine lines: the bare symmetric ``kernel_matrix`` of the 40 images (entries/s: the bound for a first
picture on this machine), the explorer's row blocks around it now, and its former row blocks.

    CNTK_CIFAR10_SUBSET=/path/to/subset .venv/bin/python benchmarks/bench_lab.py          # 3 rounds, ~16 min
    CNTK_CIFAR10_SUBSET=/path/to/subset .venv/bin/python benchmarks/bench_lab.py --quick  # 1 round, fix f32

Wall-clock on a shared machine: each measurement waits (up to ``--quiet-wait`` s) until other
processes use fewer than ``--quiet`` cores, and each round prints how many cores they kept busy
while it measured (from /proc/stat) and the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time

import numpy as np

FIRST_DEPTH, PRESSES, PRESS_GAP = 6, (7, 8, 9, 10), 0.25
N_PER_CLASS = 4
CASES = {"fix": dict(readout="gap", fix_first=True, fix_last=True), "plain": dict(readout="gap")}


def _cpu_seconds() -> tuple[float, float]:
    """(busy core-seconds of the whole machine, of this process and its waited-for children) so far;
    (0, 0) where /proc is missing."""
    try:
        with open("/proc/stat") as fh:
            f = [int(v) for v in fh.readline().split()[1:]]
        with open("/proc/self/stat") as fh:
            own = [int(v) for v in fh.read().rsplit(")", 1)[1].split()[11:15]]
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    busy = f[0] + f[1] + f[2] + f[5] + f[6] + (f[7] if len(f) > 7 else 0)  # user nice system irq softirq steal
    return busy / tick, sum(own) / tick


class Others:
    """Cores that other processes kept busy while a block of this benchmark ran (its noise)."""

    def __init__(self):
        self.core_s = self.wall = 0.0

    def __enter__(self):
        self._t, self._c = time.perf_counter(), _cpu_seconds()
        return self

    def __exit__(self, *exc):
        busy, own = _cpu_seconds()
        self.core_s += max(0.0, (busy - self._c[0]) - (own - self._c[1]))
        self.wall += time.perf_counter() - self._t

    @property
    def cores(self) -> float:
        return self.core_s / self.wall if self.wall else 0.0


def wait_quiet(limit: float, timeout: float) -> float:
    """Wait (at most ``timeout`` s) until other processes use under ``limit`` cores over 2 s; the
    seconds waited."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        with Others() as o:
            time.sleep(2.0)
        if o.cores < limit:
            break
    return time.perf_counter() - t0


class Events:
    """Records the model's events with their times; waits for a condition on them."""

    def __init__(self, model):
        self.log: list[tuple[float, str, object, str]] = []
        self._cond = threading.Condition()
        model.on_change(self._on)

    def _on(self, event, model):
        spec = model.result.spec if event == "result" else None
        source = model.result.source if event == "result" else ""
        with self._cond:
            self.log.append((time.perf_counter(), event, spec, source))
            self._cond.notify_all()

    def first(self, event: str, spec=None, after: float = 0.0, timeout: float = 600.0):
        """``(time, source)`` of the first ``event`` (for ``spec``) at or after ``after``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for t, e, s, src in self.log:
                    if e == event and t >= after and (spec is None or s == spec):
                        return t, src
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {event} for {spec} within {timeout} s; events: {self.log[-5:]}")
                self._cond.wait(left)


def old_row_blocks(spec, x, ctx, dtype="float64", n_chunks=8):
    """The explorer's computation before issue 23: one pass to ``spec``'s depth that reads out
    every shallower depth too, in row blocks of one ``[i0, i1) x [i0, n)`` call each (the block's
    square twice, its self pairs at full cost); returns ``spec``'s Gram."""
    from cntk_core import kernel_matrices
    from cntk_widgets.explorer_model import lowest_depth
    from cntk_widgets.jobs import ENGINE_LOCK

    depths = range(lowest_depth(spec), spec.depth + 1)
    kw = dict(depths=depths, readout=spec.readout, fix_first=spec.fix_first, fix_last=spec.fix_last)
    n = len(x)
    out = np.empty((n, n))
    bounds = sorted({int(round(n - n * np.sqrt(1 - t / n_chunks))) for t in range(n_chunks + 1)})
    for i0, i1 in zip(bounds[:-1], bounds[1:], strict=True):
        if ctx is not None:
            ctx.check()
        with ENGINE_LOCK:
            block = kernel_matrices(x[i0:i1], x[i0:], kind=spec.kind, dtype=dtype, progress=False, **kw)[spec.depth]
        out[i0:i1, i0:] = block
        out[i0:, i0:i1] = block.T
    return out


def warm_up() -> tuple[float, float]:
    """Seconds to import what a first picture needs (``cntk_core.regression`` and so sklearn, for the
    spectrum), and to compile / load from Numba's cache every engine variant the run uses."""
    from cntk_core import kernel_matrices
    from cntk_core.backend import initialise_numba

    t0 = time.perf_counter()
    import cntk_core.regression  # noqa: F401

    imports = time.perf_counter() - t0
    t0 = time.perf_counter()
    initialise_numba()
    x = np.random.default_rng(0).standard_normal((3, 32, 32, 3))
    for dtype in ("float32", "float64"):
        for case in CASES.values():
            kw = dict(depths=[2, 3] if not case.get("fix_first") else [3], dtype=dtype, progress=False, **case)
            kernel_matrices(x, **kw)
            kernel_matrices(x[:2], x[2:], **kw)
    return imports, time.perf_counter() - t0


def new_model(x, y, case: dict, dtype: str, **kw):
    from cntk_widgets import ArchitectureModel, KernelExplorerModel

    arch = ArchitectureModel(depth=FIRST_DEPTH, **case)
    model = KernelExplorerModel(x, y, architecture=arch, dtype=dtype, autostart=False, **kw)
    return model, arch, Events(model)


def stop(model) -> None:
    """Cancel the background pass, wait until its current row block has ended (so it does not run
    into the next measurement), close."""
    model.cancel()
    model.wait(600, background=True)
    model.close()


def quick_presses(arch, events) -> tuple[float, float, str]:
    """Move the slider 6 -> 10 in quick steps; ``(s from the first press, s from the last press, source)``."""
    presses = []
    for d in PRESSES:
        presses.append(time.perf_counter())
        arch.set(depth=d)
        if d != PRESSES[-1]:
            time.sleep(PRESS_GAP)
    t, source = events.first("result", arch.spec, after=presses[-1])
    return t - presses[0], t - presses[-1], source


def session(x, y, case: dict, dtype: str, max_depth: int) -> dict:
    """(a)-(e) for one case and dtype; seconds."""
    from cntk_widgets.models import NetworkSpec

    r = {}
    # (a) - (c): disk cache off
    model, arch, ev = new_model(x, y, case, dtype, disk_cache=False, prefetch_depth=max_depth)
    t0 = time.perf_counter()
    model.compute()
    r["first"] = ev.first("result", arch.spec)[0] - t0
    partials = [t for t, e, _, _ in ev.log if e == "partial"]
    r["partial"] = partials[0] - t0 if partials else None
    r["background"] = ev.first("background-done")[0] - t0 - r["first"]
    model.wait(600, background=True)
    assert model.error is None and model.background_error is None, (model.error, model.background_error)
    lowest = 3 if case.get("fix_first") else 2
    steps, sources = [], set()
    for d in list(range(lowest, max_depth + 1)) + [FIRST_DEPTH]:
        if d == arch.spec.depth:
            continue
        t = time.perf_counter()
        arch.set(depth=d)
        t1, source = ev.first("result", NetworkSpec(depth=d, **case), after=t)
        steps.append(t1 - t)
        sources.add(source)
    r["slider_max"], r["slider_median"], r["slider_sources"] = max(steps), statistics.median(steps), sources
    r["slider_steps"] = len(steps)
    model.close()
    # (d), (e): a user's default, a disk cache (empty at first)
    with tempfile.TemporaryDirectory() as folder:
        model, arch, ev = new_model(x, y, case, dtype, disk_cache=folder, prefetch_depth=max_depth)
        t0 = time.perf_counter()
        model.compute()
        r["first_disk_on"] = ev.first("result", arch.spec)[0] - t0
        while not model.background:
            time.sleep(0.001)
        r["presses_total"], r["presses_last"], r["presses_source"] = quick_presses(arch, ev)
        stop(model)  # depths 6 and 10 are on disk
        model, arch, ev = new_model(x, y, case, dtype, disk_cache=folder, prefetch_depth=max_depth)
        t0 = time.perf_counter()
        model.compute()
        t1, r["second_source"] = ev.first("result", arch.spec)
        r["second_session"] = t1 - t0
        model.close()
        r["new_process"], r["new_process_imports"], r["new_process_source"] = new_process(folder, case, dtype)
    return r


NEW_PROCESS = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from cntk_widgets import ArchitectureModel, KernelExplorerModel
from cntk_widgets.lab_data import lab_images
lab = lab_images("cifar10-subset", int(sys.argv[4]))
t1 = time.perf_counter()
arch = ArchitectureModel(depth=int(sys.argv[3]), **json.loads(sys.argv[2]))
m = KernelExplorerModel(lab.x, lab.y, architecture=arch, dtype=sys.argv[5], disk_cache=sys.argv[1], prefetch_depth=None)
t2 = time.perf_counter()
r = m.wait(600)
print(json.dumps([time.perf_counter() - t0, t1 - t0, t2 - t1, time.perf_counter() - t2, r.source]))
"""


def new_process(folder: str, case: dict, dtype: str) -> tuple[float, float, str]:
    """(f) A new Python process (a classroom page's next load: a fresh kernel) on the disk cache:
    ``(s from process start to the first picture, s of it for Python start, imports and data, source)``;
    prints the rest's split (model construction, its first picture from the disk cache)."""
    import json
    import subprocess
    import sys

    t = time.perf_counter()
    args = [folder, json.dumps(case), str(FIRST_DEPTH), str(N_PER_CLASS), dtype]
    out = subprocess.run([sys.executable, "-c", NEW_PROCESS, *args], capture_output=True, text=True, check=True)
    total = time.perf_counter() - t
    inner, imports, construct, picture, source = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"    new process: model constructed in {construct:.2f} s, then its first picture in {picture:.3f} s")
    return total, imports + (total - inner), source


def baseline(x, y, case: dict, dtype: str) -> dict:
    """The explorer before issue 23 (see the module docstring); seconds."""
    r = {}

    def kernel_fn(spec, images, ctx):
        return old_row_blocks(spec, images, ctx, dtype=dtype)

    model, arch, ev = new_model(x, y, case, dtype, kernel_fn=kernel_fn, prefetch_depth=None)
    t0 = time.perf_counter()
    model.compute()
    r["first"] = ev.first("result", arch.spec)[0] - t0
    for a, b in ((6, 7), (7, 8)):
        t = time.perf_counter()
        arch.set(depth=b)
        r[f"step{a}{b}"] = ev.first("result", arch.spec, after=t)[0] - t
    model.close()
    model, arch, ev = new_model(x, y, case, dtype, kernel_fn=kernel_fn, prefetch_depth=None)
    model.compute()
    ev.first("result", arch.spec)
    r["presses_total"], r["presses_last"], _ = quick_presses(arch, ev)
    model.close()
    return r


def engine(x, case: dict, dtype: str) -> dict:
    """Bare engine calls on the 40 images at depth 6: the symmetric Gram, and the explorer's row blocks."""
    from cntk_core import kernel_matrices, kernel_matrix
    from cntk_widgets.models import NetworkSpec, chunked_gram

    n = len(x)
    r = {}
    t = time.perf_counter()
    kernel_matrix(x, depth=FIRST_DEPTH, dtype=dtype, progress=False, **case)
    r["gram"] = time.perf_counter() - t

    def one_depth(rows, cols):
        return kernel_matrices(rows, cols, depths=[FIRST_DEPTH], dtype=dtype, progress=False, backend="numba", **case)

    t = time.perf_counter()
    chunked_gram(None, x, kind="ntk", backend=None, block_fn=one_depth, diagonal_first=True)
    r["blocks"] = time.perf_counter() - t
    t = time.perf_counter()
    old_row_blocks(NetworkSpec(depth=FIRST_DEPTH, **case), x, None, dtype=dtype)
    r["old_blocks"] = time.perf_counter() - t
    r["entries_per_s"] = n * (n + 1) / 2 / r["gram"]
    p, q = x.shape[1:3]
    n_conv = FIRST_DEPTH - 1
    r["layer_entries_per_s"] = n * (n + 1) / 2 * (p * q) ** 2 * n_conv / r["gram"]
    return r


def spread(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    med = statistics.median(values)
    fmt = (lambda v: f"{v:.2f}") if med >= 0.1 else (lambda v: f"{v * 1e3:.2f}m")
    if len(values) == 1:
        return fmt(med)
    return f"{fmt(med)} [{fmt(min(values))}-{fmt(max(values))}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n-per-class", type=int, default=4)
    parser.add_argument("--cases", default="fix,plain")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--max-depth", type=int, default=21)
    parser.add_argument("--quick", action="store_true", help="1 round, fix, float32 (and its baseline)")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument(
        "--quiet", type=float, default=0.3, help="start each measurement once other processes use fewer cores"
    )
    parser.add_argument("--quiet-wait", type=float, default=120.0, help="but wait at most this long (s)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.cases, args.dtypes = 1, "fix", "float32"
    global N_PER_CLASS
    N_PER_CLASS = args.n_per_class
    cases, dtypes = args.cases.split(","), args.dtypes.split(",")

    from cntk_core import resolve_backend
    from cntk_widgets.lab_data import lab_images

    t = time.perf_counter()
    lab = lab_images("cifar10-subset", args.n_per_class)
    load = time.perf_counter() - t
    x, y = lab.x, lab.y
    imports, warm = warm_up()
    print(f"{lab.describe()} (loaded in {load:.2f} s); backend {resolve_backend()}; {os.cpu_count()} CPUs")
    print(f"once per process, before any timing: import of cntk_core.regression (sklearn) {imports:.2f} s, ", end="")
    print(f"Numba compile / cache load {warm:.2f} s")

    runs: dict = {}
    for rnd in range(args.rounds):
        load0, others, waits = os.getloadavg()[0], Others(), []

        def measured(fn, *a, others=others, waits=waits):
            waits.append(wait_quiet(args.quiet, args.quiet_wait))
            with others:
                return fn(*a)

        for c in cases:
            for dt in dtypes:
                runs.setdefault(("engine", c, dt), []).append(measured(engine, x, CASES[c], dt))
                runs.setdefault(("lab", c, dt), []).append(measured(session, x, y, CASES[c], dt, args.max_depth))
                if not args.no_baseline:
                    runs.setdefault(("base", c, dt), []).append(measured(baseline, x, y, CASES[c], dt))
        print(
            f"round {rnd + 1}/{args.rounds}: load average {load0:.2f} before, {os.getloadavg()[0]:.2f} after; "
            f"other processes kept {others.cores:.2f} of the {os.cpu_count()} cores busy while it measured "
            f"({others.wall:.0f} s; {sum(waits):.0f} s spent waiting for a quiet machine)"
        )

    def col(key, field):
        return [r[field] for r in runs.get(key, [])]

    print(f"\nseconds, median [min-max] over {args.rounds} round(s); m = milliseconds")
    for c in cases:
        print(f"\n== CNTK-GAP {c}: n = {len(x)}, first picture depth {FIRST_DEPTH}, slider to {args.max_depth} ==")
        for dt in dtypes:
            lab_runs, key = runs[("lab", c, dt)], ("lab", c, dt)
            e, b = ("engine", c, dt), ("base", c, dt)
            print(f"-- {dt}")
            if runs.get(b):
                print(
                    "  baseline (before: on demand, no background pass, every depth to the requested one, former "
                    f"row blocks): first {spread(col(b, 'first'))}, step 6->7 {spread(col(b, 'step67'))}, "
                    f"7->8 {spread(col(b, 'step78'))}, presses 6->10: {spread(col(b, 'presses_total'))} "
                    f"from the first, {spread(col(b, 'presses_last'))} from the last"
                )
            print(
                f"  engine alone, depth {FIRST_DEPTH}: symmetric Gram {spread(col(e, 'gram'))} "
                f"({statistics.median(col(e, 'entries_per_s')):.0f} entries/s, "
                f"{statistics.median(col(e, 'layer_entries_per_s')):.3g} layer-entries/s); the explorer's row "
                f"blocks now {spread(col(e, 'blocks'))} (diagonal first, depth 6 alone), former "
                f"{spread(col(e, 'old_blocks'))} (every depth to 6, squares twice)"
            )
            first, partial = col(key, "first"), col(key, "partial")
            print(f"  (a) first picture {spread(first)} (goal <= 3 s); first rows drawn after {spread(partial)}")
            print(f"      with the disk cache on (empty): {spread(col(key, 'first_disk_on'))}")
            print(f"  (b) background pass to depth {args.max_depth}: {spread(col(key, 'background'))}")
            sources = set().union(*(r["slider_sources"] for r in lab_runs))
            print(
                f"  (c) {lab_runs[0]['slider_steps']} slider moves after it: max {spread(col(key, 'slider_max'))}, "
                f"median {spread(col(key, 'slider_median'))} (goal <= 0.2 s; sources {sorted(sources)})"
            )
            print(
                f"  (d) presses 6->10 during the background pass: depth 10 shown {spread(col(key, 'presses_total'))} "
                f"after the first press, {spread(col(key, 'presses_last'))} after the last "
                f"(from {sorted({r['presses_source'] for r in lab_runs})})"
            )
            print(
                f"  (e) second session, disk cache: first picture {spread(col(key, 'second_session'))} "
                f"(from {sorted({r['second_source'] for r in lab_runs})})"
            )
            print(
                f"  (f) a new process on that disk cache (a classroom page's next load): first picture "
                f"{spread(col(key, 'new_process'))} after the process start, of which Python start, imports "
                f"and data {spread(col(key, 'new_process_imports'))} (from "
                f"{sorted({r['new_process_source'] for r in lab_runs})})"
            )
            pairs = [
                ("first picture", "first", "first"),
                ("step 6->7 vs slider max", "step67", "slider_max"),
                ("presses 6->10 (from the first)", "presses_total", "presses_total"),
            ]
            for against in dict.fromkeys([dt, "float64"]):
                base = runs.get(("base", c, against))
                if not base:
                    continue
                ratios = []
                for label, bk, nk in pairs:
                    rs = [old[bk] / new[nk] for old, new in zip(base, lab_runs, strict=False)]
                    ratios.append(f"{label} {statistics.median(rs):.3g}x [{min(rs):.3g}-{max(rs):.3g}]")
                print(f"  baseline {against} / now: " + "; ".join(ratios))


if __name__ == "__main__":
    main()
