"""Latency of the training-dynamics widget's time slider (issue 26): from a change of the slider's value
to the picture updated, on the widget's default data (the regression lab's digits: 30 training and 20
test images per class, 20 % label noise, CNTK-GAP-3), which must stay under 200 ms.

Measured:

(a) once: the kernels and the eigendecomposition behind the widget (cold, no disk cache), i.e. what a
    move of the slider must NOT redo;
(b) in this process: the model's work alone (``KernelDynamics.at`` and the mode residuals), and
    ``lab.time.value = i`` (the slider's handler: the model, then the picture's dynamic SVG layer into
    one HTML widget, :mod:`cntk_widgets.dynamics_svg`); every grid time, in a shuffled order,
    ``--rounds`` times; engine calls and eigendecompositions are counted to show that none happen;
(c) unless ``--no-browser`` (skipped without Chromium or playwright): JupyterLab in headless Chromium,
    a notebook holding ``TrainingDynamicsLab()`` (written into the server's copy of ``notebooks/``);
    each arrow-key press on the slider until the page's picture shows the marker at the new time (a
    ``keydown`` listener and a ``requestAnimationFrame`` loop in the page: the kernel round trip, the
    Python handler and the browser's redraw).

    .venv/bin/python benchmarks/bench_teaching.py                 # in-process and browser, ~3 min
    .venv/bin/python benchmarks/bench_teaching.py --no-browser --rounds 5
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LIMIT_MS = 200.0


def _tests_module(name: str):
    """A module of ``tests/`` (not a package), imported by path."""
    if str(ROOT / "tests") not in sys.path:
        sys.path.insert(0, str(ROOT / "tests"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _summary(ms: list[float]) -> str:
    a = np.asarray(ms)
    return (
        f"median {statistics.median(ms):7.2f} ms, p95 {np.percentile(a, 95):7.2f} ms, max {a.max():7.2f} ms "
        f"({len(ms)} moves){'  OVER ' + str(LIMIT_MS) + ' ms' if a.max() >= LIMIT_MS else ''}"
    )


def in_process(rounds: int) -> None:
    import scipy.linalg

    import cntk_core
    from cntk_widgets.dynamics_view import TrainingDynamicsLab

    calls = {"engine": 0, "eigh": 0}

    def counted(key, fn):
        def call(*a, **k):
            calls[key] += 1
            return fn(*a, **k)

        return call

    cntk_core.network_kernel = counted("engine", cntk_core.network_kernel)
    scipy.linalg.eigh = counted("eigh", scipy.linalg.eigh)
    t0 = time.perf_counter()
    lab = TrainingDynamicsLab(synchronous=True, disk_cache=False)
    built = time.perf_counter() - t0
    m = lab.model
    r = m.result
    assert m.error is None, m.error
    d = r.data
    print(
        f"default data: {len(d.y_train)} training images ({int(d.flipped.sum())} labels flipped), "
        f"{len(d.y_test)} test images, {d.x_train.shape[1]}x{d.x_train.shape[2]} px; {r.spec.title}; "
        f"{len(r.times)} slider positions (t = 1 .. {r.times[-2]:,.0f}, inf)"
    )
    print(
        f"(a) widget built, kernels + eigendecomposition + curves: {built:.2f} s "
        f"({calls['engine']} engine calls, {calls['eigh']} eigendecomposition)"
    )
    before = dict(calls)
    rng = np.random.default_rng(0)
    model_ms, view_ms = [], []
    from cntk_widgets.dynamics_model import _one_blas_thread

    for _ in range(rounds):
        for i in rng.permutation(len(r.times)):  # what select() computes, without the view's redraw
            t = time.perf_counter()
            with _one_blas_thread():
                r.dynamics.at(r.times[i]), r.dynamics.mode_residuals(r.times[i])
            model_ms.append(1e3 * (time.perf_counter() - t))
        for i in rng.permutation(len(r.times)):
            if lab.time.value == i:
                continue
            t = time.perf_counter()
            lab.time.value = int(i)
            view_ms.append(1e3 * (time.perf_counter() - t))
    assert calls == before, f"a slider move recomputed something: {calls} (before {before})"
    print(f"(b) the model's work (at(t), mode residuals): {_summary(model_ms)}")
    print(f"    slider value -> picture updated (view):    {_summary(view_ms)}")
    print(f"    engine calls and eigendecompositions during the moves: {calls['engine'] - before['engine']}, "
          f"{calls['eigh'] - before['eigh']}")  # fmt: skip


BENCH_NOTEBOOK = (
    "from cntk_widgets.dynamics_view import TrainingDynamicsLab\nlab = TrainingDynamicsLab()\nlab.wait()\nlab"
)


def in_browser(moves: int) -> None:
    bs = _tests_module("browser_support")
    tb = _tests_module("test_browser_teaching")
    chromium = bs.find_chromium()
    if chromium is None or not bs.playwright_available():
        print("(c) browser: skipped (no Chromium or playwright)")
        return
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="bench-teaching-"))
    server, base = bs.start_jupyterlab(tmp, bs.LabData("digits", None), notebook="06_what_the_ntk_predicts.ipynb")
    try:
        nb = new_notebook(
            cells=[new_code_cell(BENCH_NOTEBOOK)],
            metadata={"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        )
        nbformat.write(nb, tmp / "notebooks" / "bench_teaching.ipynb")  # the served copy, not the repository
        with sync_playwright() as p:
            browser, ctx, log = bs.open_browser(p, chromium)
            page = ctx.new_page()
            bs.open_notebook(page, server, base, "bench_teaching.ipynb")
            bs.run_all(page, timeout=600)
            state = tb.wait_dynamics(page, lambda s: True, "the widget", timeout=120)
            key = "ArrowLeft" if state["t"] == "∞" else "ArrowRight"
            seconds = []
            for _ in range(moves):
                state = tb.dynamics_state(page)
                if state["t"] in ("∞", "1"):
                    key = "ArrowLeft" if state["t"] == "∞" else "ArrowRight"
                page.evaluate(tb.MEASURE_MOVE, tb.ROOT)
                tb.press_time(page, key)
                seconds.append(bs.wait_for(page, tb.LATENCY, what="the marker at the new time", timeout=30))
                page.wait_for_timeout(250)
            browser.close()
        ms = [1e3 * s for s in seconds]
        print(f"(c) browser (JupyterLab, Chromium): key press -> picture shows the new time: {_summary(ms)}")
        if log.problems():
            print("    page problems:", log.problems())
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="passes over every slider position (in-process)")
    parser.add_argument("--moves", type=int, default=20, help="arrow-key presses in the browser")
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    in_process(args.rounds)
    if not args.no_browser:
        in_browser(args.moves)


if __name__ == "__main__":
    main()
