"""Real-browser tests of notebook 06 ("What the NTK predicts"): in JupyterLab (Run All) and in Voila
(the page the launcher serves with ``--voila --notebook 06_what_the_ntk_predicts.ipynb``), moving the
training-time slider with the keyboard changes the drawn loss marker, the test predictions and the
line under the slider. Also: no error output, no console error, no request beyond this machine, no
overlap of the named plot elements and no picture cut off (as tests/test_browser.py checks the other
pages). The slider's latency is measured by ``benchmarks/bench_teaching.py`` (with :data:`MEASURE_MOVE`),
not asserted here.

Needs Chromium and playwright as tests/test_browser.py; skips without them (fails with CI=true or
REQUIRE_BROWSER=1).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from browser_support import (
    VIEWPORTS,
    LabData,
    browser_page,
    chromium_or_skip,
    layout_problems,
    open_notebook,
    playwright_session,
    run_all,
    screenshot,
    screenshot_folder,
    start_jupyterlab,
    start_voila,
    wait_for,
)

pytestmark = pytest.mark.browser

NOTEBOOK = "06_what_the_ntk_predicts.ipynb"
N_PER_CLASS = 3  # the dynamics widget's training images per class (CNTK_LAB_N_PER_CLASS): quick on 2 cores
ROOT = ".cntk-dynamics"

#: the dynamics widget as the page shows it (its SVG picture, cntk_widgets/dynamics_svg.py): the markers at
#: t (positions and time label), the drawn class scores and predicted classes as JSON text, the slider's
#: readout and the line under the slider
DYNAMICS_STATE = r"""(root) => {
  const w = typeof root === 'string' ? document.querySelector(root) : root;
  if (!w) return null;
  const svg = w.querySelector('svg.cntk-chart');
  if (!svg) return null;
  const all = (sel, f) => JSON.stringify([...svg.querySelectorAll(sel)].map(f));
  const readout = w.querySelector('.widget-slider .widget-readout, .widget-hslider .widget-readout');
  // textContent, not innerText: JupyterLab skips laying out cells out of view (content-visibility), and
  // innerText of a cell that is not laid out is empty
  const lines = [...w.querySelectorAll('.widget-html-content')].map((h) => h.textContent.trim())
    .filter((t) => /^t = /.test(t));
  const marker = svg.querySelector("circle.cntk-at-t[data-panel='loss']");
  return {
    marker: marker ? marker.getAttribute('data-t') + ' ' + all("circle.cntk-at-t[data-panel='loss']",
      (c) => c.getAttribute('cx')) : '[]',
    markerY: all("circle.cntk-at-t[data-panel='loss']", (c) => c.getAttribute('cy')),
    scores: all('rect.cntk-score', (r) => r.getAttribute('data-score')),
    predicted: all('circle.cntk-pred', (c) => c.getAttribute('data-class')),
    t: readout ? String(readout.value || readout.textContent).trim() : null,
    line: lines.length ? lines[0] : '',
  };
}"""

#: seconds from a key press on the time slider to the picture showing the new time: sets up a keydown
#: listener (capture phase) and a requestAnimationFrame loop that watches the loss marker's time label
MEASURE_MOVE = r"""(root) => {
  const w = document.querySelector(root);
  const label = () => {
    const c = w.querySelector('svg.cntk-chart circle.cntk-at-t');
    return c && c.getAttribute('data-t');
  };
  const before = label();
  const lat = {t0: null, t1: null};
  window.__cntkLatency = lat;
  document.addEventListener('keydown', () => { if (lat.t0 === null) lat.t0 = performance.now(); },
                            {capture: true, once: true});
  const tick = () => {
    if (lat.t0 !== null && label() !== before) { lat.t1 = performance.now(); return; }
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
  return true;
}"""
LATENCY = "() => { const l = window.__cntkLatency; return l && l.t1 !== null ? (l.t1 - l.t0) / 1000 : null; }"


def dynamics_state(page, root: str = ROOT) -> dict | None:
    return page.evaluate(DYNAMICS_STATE, root)


def wait_dynamics(page, predicate, what: str, *, root: str = ROOT, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = dynamics_state(page, root)
        if state and state["marker"] != "[]" and state["line"] and predicate(state):
            return state
        page.wait_for_timeout(200)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; dynamics widget: {state}")


def press_time(page, key: str, root: str = ROOT) -> None:
    """Focus the time slider's handle and press ``key`` (``"ArrowLeft"`` / ``"ArrowRight"``) once."""
    handle = page.locator(f"{root} .noUi-handle").first
    handle.scroll_into_view_if_needed()
    handle.focus()
    page.keyboard.press(key)


def move_and_check(page, root: str = ROOT) -> tuple[dict, dict]:
    """Press the arrow key away from the slider's end; wait until marker, predictions and line change."""
    before = wait_dynamics(page, lambda s: True, "the dynamics widget's first picture", root=root)
    key = "ArrowLeft" if before["t"] == "∞" else "ArrowRight"
    press_time(page, key, root)
    after = wait_dynamics(
        page,
        lambda s: s["marker"] != before["marker"] and s["t"] != before["t"] and s["line"] != before["line"],
        f"the plot to follow the time slider ({key})",
        root=root,
        timeout=30,
    )
    assert after["markerY"] != before["markerY"], "the loss marker did not move"
    assert after["line"].startswith(f"t = {after['t']}"), after["line"]
    before["line"], after["line"] = before["line"].split("Early stopping")[0], after["line"].split("Early stopping")[0]
    # the class scores change with t (predicted classes may stay): a few more steps if they did not yet
    for _ in range(6):
        if dynamics_state(page, root)["scores"] != before["scores"]:
            break
        press_time(page, key, root)
        page.wait_for_timeout(400)
    assert dynamics_state(page, root)["scores"] != before["scores"], "the predictions did not change with t"
    return before, after


@pytest.fixture(scope="module")
def chromium() -> str:
    return chromium_or_skip()


@pytest.fixture(scope="module")
def playwright(chromium):
    yield from playwright_session()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    yield from screenshot_folder(tmp_path_factory, "screenshots-teaching")


def _problems(page, log, scope: str, shots: Path, name: str) -> list[str]:
    """Layout problems at both viewports and the page's console errors / blocked requests."""
    problems = []
    page.mouse.move(1, 1)
    for width, height in VIEWPORTS:
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(800)
        page.locator(ROOT).first.evaluate("(el) => el.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(300)
        screenshot(page, shots / f"{name}_{width}x{height}_dynamics.png", ROOT)
        problems += [f"{name} at {width}x{height}: {p}" for p in layout_problems(page, scope)]
    page.set_viewport_size({"width": VIEWPORTS[0][0], "height": VIEWPORTS[0][1]})
    problems += [f"{name}: {p}" for p in log.problems()]
    if log.blocked:
        problems.append(f"{name}: non-local requests (blocked): {sorted(set(log.blocked))}")
    return problems


def test_jupyterlab_notebook_06(playwright, chromium, shots, tmp_path):
    server, base = start_jupyterlab(tmp_path, LabData("digits", N_PER_CLASS), notebook=NOTEBOOK)
    with browser_page(playwright, chromium, server) as (page, log):
        open_notebook(page, server, base, NOTEBOOK)
        t0 = time.monotonic()
        state = run_all(page, timeout=420)
        print(f"\n{NOTEBOOK}: Run All {time.monotonic() - t0:.1f} s ({state['total']} code cells)")
        assert not state["stderr"], "\n".join(state["stderr"])[:3000]
        assert state["errorNodes"] == 0, f"{NOTEBOOK} shows error output"
        before, after = move_and_check(page)
        print(f"time slider: {before['t']} -> {after['t']}; {after['line']}")
        for widget in (".cntk-probe", ".cntk-curves", ".cntk-table2"):
            assert page.locator(f".jp-Notebook {widget}").count(), f"{widget} is not shown"
        problems = _problems(page, log, ".jp-Notebook .cntk-dynamics, .jp-Notebook .cntk-curves", shots, "lab_06")
        assert not problems, f"{len(problems)} problem(s) (screenshots in {shots}):\n" + "\n".join(problems)


def test_voila_notebook_06(playwright, chromium, shots, tmp_path):
    server, base = start_voila(tmp_path, LabData("digits", N_PER_CLASS), notebook=NOTEBOOK)
    with browser_page(playwright, chromium, server) as (page, log):
        t0 = time.monotonic()
        page.goto(base, timeout=300_000)  # Voila runs the notebook before it serves the page
        wait_for(page, f"() => !!({DYNAMICS_STATE})('{ROOT}')", what="the dynamics widget", timeout=300)
        print(f"\nvoila {NOTEBOOK}: widget shown {time.monotonic() - t0:.1f} s after the request")
        errors = page.locator(
            ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'], "
            ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']"
        ).count()
        assert errors == 0, "the page shows error output"
        before, after = move_and_check(page)
        print(f"time slider: {before['t']} -> {after['t']}; {after['line']}")
        problems = _problems(page, log, ".cntk-dynamics, .cntk-curves", shots, "voila_06")
        assert not problems, f"{len(problems)} problem(s) (screenshots in {shots}):\n" + "\n".join(problems)
