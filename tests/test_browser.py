"""Real-browser tests: notebook 2 in JupyterLab and in Voila, driven by Playwright in headless Chromium.

Every request that is not to 127.0.0.1/localhost is blocked (and recorded): the lab must work offline.
Screenshots and the blocked list go to ``benchmarks/screenshots/``.

Needs Debian's ``/usr/bin/chromium`` (or ``CNTK_CHROMIUM``) and the ``playwright`` package (never
``playwright install``). Without them the tests skip locally, and FAIL when ``CI=true`` or
``REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SHOTS = ROOT / "benchmarks" / "screenshots"
NOTEBOOK = "02_cntk_explorer.ipynb"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
BLOCKED: dict[str, list[str]] = {}


def _required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("REQUIRE_BROWSER") == "1"


def _missing(what: str):
    if _required():
        pytest.fail(f"browser tests are required here (CI=true or REQUIRE_BROWSER=1) but {what}", pytrace=False)
    pytest.skip(what)


@pytest.fixture(scope="module")
def chromium() -> str:
    path = os.environ.get("CNTK_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        _missing("Chromium is not installed (apt-get install -y --no-install-recommends chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("the playwright package is not installed (pip install playwright; no `playwright install`)")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A Jupyter/Voila server in its own session, with isolated Jupyter dirs; killed on ``stop``."""

    def __init__(self, cmd: list[str], env: dict, log: Path, cwd: Path):
        self.log = log
        self._fh = open(log, "wb")
        self.proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=self._fh, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_http(self, url: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5):
                    return
            except urllib.error.HTTPError as exc:  # any HTTP answer means the server is up
                if exc.code < 500:
                    return
                time.sleep(0.3)
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"server not ready after {timeout} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except Exception:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self._fh.close()


def _copy_notebooks(tmp: Path) -> Path:
    """Serve a copy: JupyterLab autosaves executed notebooks, and the committed ones stay output-free."""
    dest = tmp / "notebooks"
    shutil.copytree(NOTEBOOKS, dest, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    return dest


def _env(tmp: Path) -> dict:
    env = dict(os.environ)
    for var in ("JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR"):
        d = tmp / var.lower()
        d.mkdir()
        env[var] = str(d)
    notify = Path(env["JUPYTERLAB_SETTINGS_DIR"]) / "@jupyterlab" / "apputils-extension"
    notify.mkdir(parents=True)
    (notify / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    env["CNTK_LAB_DATASET"] = "digits"
    env["CNTK_LAB_N_PER_CLASS"] = "3"  # 30 images: quick kernels
    env.pop("CNTK_BACKEND", None)
    return env


def _browser(p, chromium: str, tmp: Path, name: str):
    ctx = p.chromium.launch_persistent_context(
        user_data_dir=str(tmp / f"chromium-{name}"),
        executable_path=chromium,
        headless=True,
        viewport={"width": 1280, "height": 1000},
        args=[
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    )
    blocked = BLOCKED.setdefault(name, [])
    ctx.on("console", lambda m: m.type == "error" and print(f"[{name} console] {m.text[:300]}"))

    def route(r):
        host = urlparse(r.request.url).hostname or ""
        if r.request.url.startswith(("data:", "blob:")) or host in LOCAL_HOSTS:
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    ctx.route("**/*", route)
    return ctx


def _record_blocked() -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, urls in sorted(BLOCKED.items()):
        lines.append(f"# {name}: {len(urls)} blocked non-local request(s)")
        lines += sorted(set(urls))
    (SHOTS / "blocked_requests.txt").write_text("\n".join(lines) + "\n")


PLOT_STATE = """(root) => {
  const ex = document.querySelector(root);
  if (!ex) return null;
  const plot = ex.querySelector('.js-plotly-plot');
  if (!plot || !plot.data || !plot.data.length) return null;
  const title = plot.querySelector('.gtitle');
  const slider = ex.querySelector('.widget-slider .widget-readout, .widget-slider input');
  let readout = null;
  if (slider) readout = slider.value !== undefined && slider.value !== '' ? slider.value : slider.textContent;
  return {z: plot.data[0].z, title: title ? title.textContent : '', readout: readout};
}"""


def _wait_plot(page, predicate, what: str, timeout: float = 90.0, root: str = ".cntk-explorer"):
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = page.evaluate(PLOT_STATE, root)
        if state and predicate(state):
            return state
        page.wait_for_timeout(250)
    debug = Path(os.environ.get("TMPDIR", "/tmp")) / "cntk_browser_timeout.png"
    page.screenshot(path=str(debug))
    raise AssertionError(
        f"(screenshot: {debug}) timed out waiting for {what}; last state: title={state and state['title']!r}"
    )


def _z_sum(state) -> float:
    return float(sum(sum(v for v in row if v is not None) for row in state["z"]))


def _drive_explorer(page, name: str) -> None:
    """Wait for the heatmap of depth 6 (the notebook's last setting), move the depth slider to 8 by
    keyboard, check that the plotted data changed."""
    page.wait_for_selector(".cntk-explorer .widget-slider .noUi-handle", timeout=120_000)
    before = _wait_plot(page, lambda s: "CNTK-GAP-6" in s["title"] and _z_sum(s) > 0, "the depth-6 heatmap")
    handle = page.locator(".cntk-explorer .widget-slider .noUi-handle").first
    handle.focus()
    for _ in range(2):
        page.keyboard.press("ArrowRight")
        page.wait_for_timeout(150)
    # an intermediate value (7) may be sent: wait for the final one, not just "changed"
    after = _wait_plot(page, lambda s: "CNTK-GAP-8" in s["title"], "the depth-8 heatmap")
    assert str(after["readout"]).strip() == "8", after["readout"]
    assert after["z"] != before["z"], "the heatmap data did not change after moving the depth slider"
    n = len(after["z"])
    assert n == 30 and all(abs(after["z"][i][i] - 1.0) < 1e-9 for i in range(n)), "normalised kernel has unit diagonal"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.locator(".cntk-explorer").first.screenshot(path=str(SHOTS / f"{name}_explorer.png"))
    text = page.locator(".cntk-explorer .cntk-picker").first.text_content()
    assert "[Conv 3x3, ReLU] x 7" in text


def test_jupyterlab_explorer(chromium, tmp_path):
    from playwright.sync_api import sync_playwright

    token = secrets.token_hex(16)
    port = _free_port()
    served = _copy_notebooks(tmp_path)
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        f"--port={port}",
        "--ServerApp.ip=127.0.0.1",
        f"--IdentityProvider.token={token}",
        "--ServerApp.password=",
        "--ServerApp.allow_root=True",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={served}",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    server = Server(cmd, _env(tmp_path), tmp_path / "lab.log", served)
    base = f"http://127.0.0.1:{port}"
    try:
        server.wait_http(f"{base}/api/status?token={token}")
        with sync_playwright() as p:
            ctx = _browser(p, chromium, tmp_path, "jupyterlab")
            page = ctx.new_page()
            page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}", timeout=90_000)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
            page.locator(".jp-Notebook .jp-Cell").first.click()
            page.wait_for_function(
                """() => { const app = window.jupyterapp; const w = app && app.shell.currentWidget;
                   const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
                   return !!k && k.status === 'idle' && app.commands.isEnabled('notebook:run-all-cells'); }""",
                timeout=90_000,
            )
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            _drive_explorer(page, "jupyterlab")
            page.screenshot(path=str(SHOTS / "jupyterlab_page.png"))
            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            tracebacks = [t for t in errors.all_text_contents() if "Traceback" in t or "Error" in t]
            assert not tracebacks, tracebacks
            ctx.close()
    finally:
        server.stop()
        _record_blocked()
    print("blocked requests (jupyterlab):", BLOCKED.get("jupyterlab"))


def test_voila_explorer(chromium, tmp_path):
    from playwright.sync_api import sync_playwright

    port = _free_port()
    served = _copy_notebooks(tmp_path)
    cmd = [
        sys.executable,
        "-m",
        "voila",
        NOTEBOOK,
        "--no-browser",
        f"--port={port}",
        "--Voila.ip=127.0.0.1",
        "--Voila.port_retries=0",
    ]
    server = Server(cmd, _env(tmp_path), tmp_path / "voila.log", served)
    base = f"http://127.0.0.1:{port}"
    try:
        server.wait_http(f"{base}/voila/static/", timeout=60)
        with sync_playwright() as p:
            ctx = _browser(p, chromium, tmp_path, "voila")
            page = ctx.new_page()
            page.goto(base, timeout=150_000)  # Voila executes the notebook before serving the page
            _drive_explorer(page, "voila")
            body = page.locator("body").inner_text()
            assert "import numpy" not in body and "balanced_subset(" not in body, "Voila must not show code"
            page.screenshot(path=str(SHOTS / "voila_page.png"))
            ctx.close()
    finally:
        server.stop()
        _record_blocked()
    print("blocked requests (voila):", BLOCKED.get("voila"))
    # the only expected non-local requests are the FontAwesome CSS of Voila's template
    assert all("fontawesome" in u for u in BLOCKED.get("voila", [])), BLOCKED["voila"]
