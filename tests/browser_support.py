"""Shared helpers of the real-browser tests (``tests/test_browser.py``) and of the README screenshot
script (``benchmarks/screenshots.py``): servers started the way the launcher starts them, headless
Chromium that blocks (and records) every request that is not to this machine, page drivers, and
layout checks (bounding boxes of the named plot elements).

Importable without Playwright or a browser (the tests skip or fail on their own terms). Nothing here
writes into the repository: servers get a copy of ``notebooks/`` and their own Jupyter and data
folders under the temporary folder they are given.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
#: the two viewports of the issue: a projector / laptop, and a full-HD screen
VIEWPORTS = ((1280, 800), (1920, 1080))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


# -- what is installed ------------------------------------------------------------------------------
def find_chromium() -> str | None:
    """``$CNTK_CHROMIUM``, else ``chromium`` on the PATH, else ``/usr/bin/chromium``; None if absent."""
    path = os.environ.get("CNTK_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    return path if Path(path).is_file() else None


def playwright_available() -> bool:
    return importlib.util.find_spec("playwright") is not None


def browser_required() -> bool:
    """Whether a missing browser fails the tests instead of skipping them (``CI=true`` or ``REQUIRE_BROWSER=1``)."""
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("REQUIRE_BROWSER") == "1"


def browser_problem() -> str | None:
    """Why the browser tests cannot run here (no Chromium, no playwright package); ``None`` if they can."""
    if not find_chromium():
        return "Chromium is not installed (apt-get install -y --no-install-recommends chromium)"
    if not playwright_available():
        return "the playwright package is not installed (pip install playwright; no `playwright install`)"
    return None


def chromium_or_skip() -> str:
    """Chromium's path for a browser test; without Chromium or the playwright package the test skips
    (fails where :func:`browser_required`)."""
    import pytest

    problem = browser_problem()
    if problem:
        if browser_required():
            pytest.fail(f"browser tests are required here (CI=true or REQUIRE_BROWSER=1) but {problem}", pytrace=False)
        pytest.skip(problem)
    return find_chromium()


def playwright_session():
    """The body of a (module-scoped) ``playwright`` fixture: yields a started ``sync_playwright()``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


def screenshot_folder(tmp_path_factory, name: str):
    """The body of a ``shots`` fixture: yields a new temporary folder ``name``, printed at the end."""
    folder = tmp_path_factory.mktemp(name)
    yield folder
    print(f"\nbrowser screenshots: {folder}")


@contextmanager
def browser_page(p, chromium: str, server: Server):
    """``(page, log)``: a page of a new browser (:func:`open_browser`, first viewport); afterwards the
    browser is closed and ``server`` stopped (also when opening the browser failed)."""
    browser = None
    try:
        browser, ctx, log = open_browser(p, chromium, VIEWPORTS[0])
        yield ctx.new_page(), log
    finally:
        if browser is not None:
            browser.close()
        server.stop()


def _sibling(name: str):
    """A module of this folder (``tests/``), imported by path when ``tests/`` is not on ``sys.path``
    (the screenshot script); the already imported one when it is (pytest)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def make_cifar10_folder(tmp: Path, *, train_per_class: int = 20, test_per_class: int = 20) -> Path:
    """A fake CIFAR-10 in the official format (:mod:`cifar_fake`): the tarball is written to
    ``tmp / "cifar-tarball"`` and extracted into ``tmp / "cifar"`` (an extracted folder needs no official
    checksum); returns the ``cifar-10-batches-py`` folder. Class-balanced: ``train_per_class`` training
    and ``test_per_class`` test images of every class."""
    fake = _sibling("cifar_fake").make_fake_cifar10(
        tmp / "cifar-tarball", n_per_batch=2 * train_per_class, n_test=10 * test_per_class, balanced=True
    )
    return fake.extract(tmp / "cifar")


# -- servers ----------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server command in its own session (process group), output to ``log``; :meth:`stop` ends the
    whole group (SIGTERM, then SIGKILL)."""

    def __init__(self, cmd: list[str], env: dict, log: Path, cwd: Path):
        self.cmd, self.log, self.cwd = cmd, log, Path(cwd)
        self._fh = open(log, "wb")
        self.proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def wait_http(self, url: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(url, timeout=5):
                    return
            except urllib.error.HTTPError as exc:  # any HTTP answer but a server error: the server is up
                if exc.code < 500:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"server not ready after {timeout} s:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
            except ProcessLookupError:
                pass
        try:  # kernels started by the server live in the same process group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


@dataclass(frozen=True)
class LabData:
    """What the lab's pages show: ``dataset`` (a name of ``--dataset``), ``n_per_class`` and, for
    ``cifar10``, the ``cifar10`` tarball or folder (e.g. :func:`make_cifar10_folder`)."""

    dataset: str = "digits"
    n_per_class: int | None = 3
    cifar10: Path | None = None

    def launcher_args(self) -> list[str]:
        """The launcher's options for this data (``n_per_class`` None: the notebooks' own default)."""
        args = [] if self.n_per_class is None else ["--n-per-class", str(self.n_per_class)]
        if self.dataset == "cifar10" and self.cifar10 is not None:
            return args + ["--cifar10", str(self.cifar10)]
        return args + ["--dataset", self.dataset]


def server_env(tmp: Path, data_dir: Path | None = None) -> dict:
    """``os.environ`` with Jupyter's config/runtime/settings/workspace folders under ``tmp`` (nothing of
    the user's is read or written) and ``CNTK_DATA_DIR`` = ``data_dir`` (default ``tmp / "cntk-data"``:
    its own kernel cache)."""
    env = dict(os.environ)
    for var in ("JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR"):
        d = tmp / var.lower()
        d.mkdir(parents=True, exist_ok=True)
        env[var] = str(d)
    env["CNTK_DATA_DIR"] = str(data_dir or tmp / "cntk-data")
    for var in ("CNTK_BACKEND", "CNTK_LAB_DATASET", "CNTK_LAB_N_PER_CLASS", "CNTK_CIFAR10", "JUPYTER_PATH"):
        env.pop(var, None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


_WARMED = []


def warm_numba_cache() -> None:
    """Compile the fused CPU engines in this process (once): both dtypes, every readout and kind,
    several depths in one pass, and the staged (pooled) engine, so that the on-disk Numba cache holds
    them before a server's kernel needs them. The page tests then time the page, not Numba's first
    compile (a minute or more on a fresh checkout), and a kernel still compiling when its page
    closes is not taken for one left running. The compile is the same one the other tests need."""
    if _WARMED:
        return
    import numpy as np

    import cntk_core

    x = np.random.default_rng(0).standard_normal((2, 4, 4, 1))
    for dtype in ("float32", "float64"):
        for readout, c in (("gap", None), ("vanilla", None), ("lap", 1)):
            for kind in ("ntk", "nngp"):
                cntk_core.kernel_matrix(x, depth=3, readout=readout, lap_c=c, kind=kind, dtype=dtype, progress=False)
        cntk_core.kernel_matrices(x, depths=(2, 3), dtype=dtype, progress=False)
        for kind in ("ntk", "nngp"):
            cntk_core.network_kernel(cntk_core.myrtle(5), x, kind=kind, dtype=dtype, progress=False)
    _WARMED.append(True)


def start_voila(
    tmp: Path, data: LabData, *, notebook: str | None = None, cull_idle: int | None = None
) -> tuple[Server, str]:
    """``python -m cntk_widgets --voila`` (the launcher's own command: its template, its data check) on
    a free port, with ``--cull-idle`` if given; returns the server and its base URL once it answers."""
    warm_numba_cache()
    port = free_port()
    cmd = [sys.executable, "-m", "cntk_widgets", "--voila", "--no-browser", f"--port={port}", *data.launcher_args()]
    if notebook:
        cmd.append(f"--notebook={notebook}")
    if cull_idle is not None:
        cmd.append(f"--cull-idle={cull_idle}")
    server = Server(cmd, server_env(tmp), tmp / "voila.log", ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        server.wait_http(f"{base}/voila/static/", timeout=120)
    except BaseException:
        server.stop()
        raise
    return server, base


def copy_notebooks(tmp: Path) -> Path:
    """A copy of ``notebooks/`` to serve: JupyterLab autosaves executed notebooks, and the committed
    ones stay output-free."""
    dest = tmp / "notebooks"
    shutil.copytree(NOTEBOOKS, dest, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    return dest


def start_jupyterlab(tmp: Path, data: LabData, *, notebook: str = "02_cntk_explorer.ipynb") -> tuple[Server, str]:
    """JupyterLab as the launcher builds it (its command and environment: default-settings overrides,
    the notebook as the start page), serving a copy of ``notebooks/`` on a free port, with a token
    and ``window.jupyterapp`` exposed for the driver. Returns the server and the URL prefix
    ``http://127.0.0.1:PORT`` ; :func:`lab_url` adds the token."""
    warm_numba_cache()
    from cntk_widgets import __main__ as launcher

    args = launcher.build_parser().parse_args(["--no-browser", f"--notebook={notebook}", *data.launcher_args()])
    if args.cifar10 is not None:
        args.dataset = "cifar10"
    cmd, _ = launcher.build_command(args)
    env = launcher.lab_environment(args, base=server_env(tmp))
    served = copy_notebooks(tmp)
    token = secrets.token_hex(16)
    port = free_port()
    cmd += [
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        "--ServerApp.password=",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={served}",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if "--ServerApp.allow_root=True" not in cmd:  # the launcher adds it for root (containers, CI)
        cmd.append("--ServerApp.allow_root=True")
    server = Server(cmd, env, tmp / "jupyterlab.log", served)
    server.token = token
    base = f"http://127.0.0.1:{port}"
    try:
        server.wait_http(f"{base}/api/status?token={token}", timeout=120)
    except BaseException:
        server.stop()
        raise
    return server, base


def lab_url(server: Server, base: str, notebook: str) -> str:
    """``notebook`` in a JupyterLab workspace of its own: no tab another test left open (a notebook saved
    with widget outputs whose kernel has stopped) is restored beside it."""
    return f"{base}/lab/workspaces/{Path(notebook).stem.replace('_', '-')}/tree/{notebook}?token={server.token}"


# -- the browser -----------------------------------------------------------------------------------
@dataclass
class PageLog:
    """What a page reported: console errors (text and source), uncaught page errors, and the
    non-local requests that were blocked."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        return [f"console error: {t}" for t in self.console_errors] + [f"page error: {t}" for t in self.page_errors]


def open_browser(p, chromium: str, viewport: tuple[int, int] = VIEWPORTS[0]):
    """Headless Chromium (``p``: a started ``sync_playwright()``) and one context at ``viewport`` in
    which every request that is not to this machine is aborted and recorded. Returns
    ``(browser, context, log)``; pages of the context report into ``log`` (:class:`PageLog`)."""
    browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
    ctx = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}, device_scale_factor=1)
    log = PageLog()

    def route(r):
        url = r.request.url
        if url.startswith(("data:", "blob:")) or (urlparse(url).hostname or "") in LOCAL_HOSTS:
            r.continue_()
        else:
            log.blocked.append(url)
            r.abort()

    ctx.route("**/*", route)

    def watch(page):
        def console(m):
            if m.type == "error":
                loc = m.location or {}
                where = f" ({loc.get('url', '')}:{loc.get('lineNumber', '')})" if loc.get("url") else ""
                log.console_errors.append(f"{m.text[:500]}{where}")

        page.on("console", console)
        page.on("pageerror", lambda exc: log.page_errors.append(str(exc)[:500]))

    ctx.on("page", watch)
    return browser, ctx, log


# -- layout checks ---------------------------------------------------------------------------------
#: the bounding boxes of every plotly figure under ``root``: the figure, its plot areas, titles,
#: axis titles, colour bars, legends, annotations and tick-label bands (client pixels). Plotly puts
#: titles in ``g.g-gtitle`` / ``g.g-<axis>title``, colour bars in ``g.colorbar``, legends in
#: ``g.legend``, plot areas as ``rect.nsewdrag`` of each subplot, tick labels in ``g.<axis>tick``.
PLOTLY_BOXES = r"""(root) => {
  const scope = typeof root === 'string' ? document.querySelector(root) : root;
  if (!scope) return null;
  const box = (el) => {
    const b = el.getBoundingClientRect();
    return {l: b.left, t: b.top, r: b.right, b: b.bottom};
  };
  const union = (els) => {
    let u = null;
    for (const el of els) {
      const b = el.getBoundingClientRect();
      if (b.width <= 0 || b.height <= 0) continue;
      if (!u) u = {l: b.left, t: b.top, r: b.right, b: b.bottom};
      else u = {l: Math.min(u.l, b.left), t: Math.min(u.t, b.top),
                r: Math.max(u.r, b.right), b: Math.max(u.b, b.bottom)};
    }
    return u;
  };
  const text = (el) => (el.textContent || '').trim().slice(0, 60);
  // the four corners of an SVG text's own box in client pixels (tick labels may be rotated)
  const quad = (el) => {
    const b = el.getBBox(), m = el.getScreenCTM();
    if (!m || b.width <= 0 || b.height <= 0) return null;
    return [[b.x, b.y], [b.x + b.width, b.y], [b.x + b.width, b.y + b.height], [b.x, b.y + b.height]]
      .map(([x, y]) => [m.a * x + m.c * y + m.e, m.b * x + m.d * y + m.f]);
  };
  const figures = [];
  const plots = [...(scope.matches('.js-plotly-plot') ? [scope] : []), ...scope.querySelectorAll('.js-plotly-plot')];
  plots.forEach((plot, index) => {
    const svg = plot.querySelector('.main-svg');
    if (!svg) return;
    const items = [], tickLabels = [];
    const add = (kind, name, b, label) => {
      if (b && b.r - b.l > 0 && b.b - b.t > 0) items.push({kind, name, label, ...b});
    };
    const title = plot.querySelector('.infolayer .g-gtitle');
    if (title) add('title', 'title', union(title.querySelectorAll('text')), text(title));
    plot.querySelectorAll('.infolayer g[class^="g-"][class$="title"]').forEach((g) => {
      const name = g.getAttribute('class').slice(2);
      if (name !== 'gtitle') add('axis-title', name, union(g.querySelectorAll('text')), text(g));
    });
    plot.querySelectorAll('.infolayer g.colorbar').forEach((g, i) => {
      add('colorbar', `colorbar${i}`, union(g.querySelectorAll('.cbfill, .cbaxis text, .cbtitle text')), '');
    });
    plot.querySelectorAll('.infolayer g.legend').forEach((g, i) => {
      add('legend', `legend${i}`, union(g.querySelectorAll('rect.bg')) || union(g.querySelectorAll('text')), text(g));
    });
    plot.querySelectorAll('g.annotation').forEach((g, i) => {
      add('annotation', `annotation${i}`, union(g.querySelectorAll('text')), text(g));
    });
    plot.querySelectorAll('.cartesianlayer g.subplot').forEach((sp) => {
      const name = (sp.getAttribute('class').match(/subplot\s+(\S+)/) || [, '?'])[1];
      const drag = plot.querySelector(`.draglayer .${name} .nsewdrag`);
      if (drag) add('plot-area', name, box(drag), '');
      sp.querySelectorAll('g[class$="axislayer-above"]').forEach((layer) => {
        // the subplot "x2y2" has the axes x2 and y2; its layers are "xaxislayer-above" and "yaxislayer-above"
        const letter = layer.getAttribute('class').replace('axislayer-above', '');
        const ids = name.match(/^(x\d*)(y\d*)$/);
        const axis = ids ? (letter === 'x' ? ids[1] : ids[2]) : letter;
        const texts = [...layer.querySelectorAll('g[class*="tick"] text')];
        add('ticks', `${name}:${axis}ticks`, union(texts), '');
        tickLabels.push({axis: `${name}:${axis}`, labels: texts.map((t) => ({label: text(t), quad: quad(t)}))
          .filter((q) => q.quad)});
      });
    });
    const gtitle = plot.querySelector('.infolayer .g-gtitle');
    figures.push({index, name: gtitle ? text(gtitle) : '', figure: box(svg), items, tickLabels});
  });
  return figures;
}"""


def _overlap(a: dict, b: dict, tol: float) -> float:
    """Overlap area of two boxes shrunk by ``tol`` px on every side (0: they only touch or are apart)."""
    w = min(a["r"], b["r"]) - max(a["l"], b["l"]) - 2 * tol
    h = min(a["b"], b["b"]) - max(a["t"], b["t"]) - 2 * tol
    return w * h if w > 0 and h > 0 else 0.0


def _quads_overlap(a: list, b: list, tol: float) -> bool:
    """Whether two convex quadrilaterals (corner lists) overlap by more than ``tol`` px along every
    separating axis (the edge normals of both): rotated tick labels are compared as drawn."""
    for quad in (a, b):
        for (x0, y0), (x1, y1) in zip(quad, quad[1:] + quad[:1], strict=True):
            nx, ny = y0 - y1, x1 - x0
            norm = (nx * nx + ny * ny) ** 0.5
            if norm == 0:
                continue
            pa = [(x * nx + y * ny) / norm for x, y in a]
            pb = [(x * nx + y * ny) / norm for x, y in b]
            if min(max(pa), max(pb)) - max(min(pa), min(pb)) <= 2 * tol:
                return False
    return True


def _describe(item: dict) -> str:
    label = f" {item['label']!r}" if item.get("label") else ""
    return f"{item['kind']} {item['name']}{label} [{item['l']:.0f},{item['t']:.0f} to {item['r']:.0f},{item['b']:.0f}]"


def _axis_of(item: dict) -> str:
    """``x2`` for ``x2title`` and for ``x2y2:x2ticks``; '' for other kinds."""
    if item["kind"] == "axis-title":
        return item["name"].removesuffix("title")
    if item["kind"] == "ticks":
        return item["name"].split(":")[1].removesuffix("ticks")
    return ""


def plot_overlaps(figures: list[dict], tol: float = 1.0) -> list[str]:
    """Overlapping pairs of named plot elements in the figures of :data:`PLOTLY_BOXES`, and elements
    that stick out of their figure (cut off), as sentences; ``[]`` when the layout is clean.

    Labels (titles, axis titles, colour bars, legends, annotations) may touch no other label, and no
    plot area (but annotations: captions placed in a plot); tick-label bands may touch no label but
    their own axis's title, the figure title and annotations; the tick labels of one axis may not
    touch each other."""
    problems = []
    for fig in figures or []:
        items, f = fig["items"], fig["figure"]
        where = f"plotly figure {fig['index']} {fig.get('name', '')!r}"
        for it in items:
            if it["kind"] == "plot-area":
                continue
            if it["l"] < f["l"] - tol or it["r"] > f["r"] + tol or it["t"] < f["t"] - tol or it["b"] > f["b"] + tol:
                problems.append(f"{where}: {_describe(it)} sticks out of the figure {f}")
        for axis in fig.get("tickLabels", []):  # tick labels of one axis must not run into each other
            labels = axis["labels"]
            for i, a in enumerate(labels):
                for b in labels[i + 1 :]:
                    if _quads_overlap(a["quad"], b["quad"], tol):
                        problems.append(
                            f"{where}: tick labels {a['label']!r} and {b['label']!r} of axis {axis['axis']} overlap"
                        )
        for i, a in enumerate(items):
            for b in items[i + 1 :]:
                kinds = {a["kind"], b["kind"]}
                if kinds <= {"plot-area", "ticks"} or kinds == {"plot-area", "annotation"}:
                    continue  # tick labels meet their plot area; annotations (captions) sit inside plots
                if "ticks" in kinds:
                    other = b if a["kind"] == "ticks" else a
                    ticks = a if a["kind"] == "ticks" else b
                    if other["kind"] == "plot-area":
                        continue  # a tick band meets its plot area at the axis line
                    if other["kind"] == "axis-title" and _axis_of(other) == _axis_of(ticks):
                        continue  # plotly places an axis title beyond its own tick labels
                    if other["kind"] in ("title", "annotation"):
                        continue
                area = _overlap(a, b, tol)
                if area > 0:
                    problems.append(f"{where}: {_describe(a)} overlaps {_describe(b)} ({area:.0f} px²)")
    return problems


#: boxes of the lab's HTML pictures (the comparison: heatmap images, their colour bar, the SVG
#: chart's texts and its legend) under ``root``
HTML_PICTURE_BOXES = r"""(root) => {
  const scope = typeof root === 'string' ? document.querySelector(root) : root;
  if (!scope) return null;
  const box = (el, kind, name) => {
    const b = el.getBoundingClientRect();
    return {kind, name, label: (el.textContent || el.getAttribute('alt') || '').trim().slice(0, 40),
            l: b.left, t: b.top, r: b.right, b: b.bottom};
  };
  const out = [];
  scope.querySelectorAll('.cntk-heatmaps').forEach((h, k) => {
    const items = [], distorted = [], colorbar = [];
    h.querySelectorAll('figure').forEach((f, i) => items.push(box(f, 'heatmap', `heatmap${i}`)));
    h.querySelectorAll('.cntk-colorbar').forEach((c, i) => {
      items.push(box(c, 'colorbar', `colorbar${i}`));
      const ramp = c.querySelector('img');
      if (!ramp) return;
      const r = ramp.getBoundingClientRect();
      // each tick label: its value and where its middle is, as a fraction of the ramp's height from the top
      c.querySelectorAll('span').forEach((t) => {
        const v = parseFloat(t.textContent);
        if (Number.isNaN(v)) return;
        const b = t.getBoundingClientRect();
        colorbar.push({label: t.textContent.trim(), at: ((b.top + b.bottom) / 2 - r.top) / r.height});
      });
    });
    // pictures drawn at another size than their own width/height (stretched by the page's CSS)
    h.querySelectorAll('img[width][height]').forEach((img) => {
      const b = img.getBoundingClientRect();
      const w = +img.getAttribute('width'), ht = +img.getAttribute('height');
      if (Math.abs(b.width - w) > 1 || Math.abs(b.height - ht) > 1)
        distorted.push(`${img.getAttribute('alt') || 'image'}: ${w}x${ht} drawn as `
          + `${b.width.toFixed(0)}x${b.height.toFixed(0)}`);
    });
    out.push({what: `heatmaps${k}`, container: box(h, 'container', 'heatmaps'), items, distorted, colorbar});
  });
  scope.querySelectorAll('.cntk-line-chart').forEach((c, k) => {
    const items = [];
    const svg = c.querySelector('svg.cntk-chart');
    if (svg) {
      // the chart's texts that are titles (not tick labels): larger than 12 px
      svg.querySelectorAll(':scope > text').forEach((t, i) => {
        const size = parseFloat(t.getAttribute('font-size') || '12');
        if (size > 12) items.push(box(t, 'title', `title${i}`));
      });
      const rect = svg.querySelector(':scope > rect');
      if (rect) items.push(box(rect, 'plot-area', 'plot'));
    }
    c.querySelectorAll('.cntk-legend').forEach((l, i) => items.push(box(l, 'legend', `legend${i}`)));
    out.push({what: `line-chart${k}`, container: box(c, 'container', 'chart'), items});
  });
  return out;
}"""


def html_picture_overlaps(groups: list[dict], tol: float = 1.0) -> list[str]:
    """Overlapping parts of the lab's HTML pictures (:data:`HTML_PICTURE_BOXES`), pictures drawn
    stretched, and colour-bar labels that do not sit beside their colour (the top label at the top of
    the ramp, the bottom one at its bottom, the others in order between), as sentences."""
    problems = []
    for g in groups or []:
        problems += [f"{g['what']}: picture distorted: {d}" for d in g.get("distorted", [])]
        ticks = g.get("colorbar", [])
        if ticks:
            values = [float(t["label"]) for t in ticks]
            hi, lo = max(values), min(values)
            for t, v in zip(ticks, values, strict=True):
                want = (hi - v) / (hi - lo) if hi > lo else 0.5
                if abs(t["at"] - want) > 0.08:  # 16 px of a 200 px ramp
                    problems.append(
                        f"{g['what']}: colour-bar label {t['label']} sits at {100 * t['at']:.0f} % of the ramp's "
                        f"height, its colour at {100 * want:.0f} %"
                    )
        items = g["items"]
        for i, a in enumerate(items):
            for b in items[i + 1 :]:
                area = _overlap(a, b, tol)
                if area > 0:
                    problems.append(f"{g['what']}: {_describe(a)} overlaps {_describe(b)} ({area:.0f} px²)")
    return problems


#: elements under ``root`` (plotly figures, HTML pictures, widgets' images) that are cut off: beyond
#: the viewport's width, or beyond an ancestor that clips (overflow other than visible)
CLIPPED = r"""(root) => {
  const scope = typeof root === 'string' ? document.querySelector(root) : root;
  if (!scope) return null;
  const width = document.documentElement.clientWidth;
  const out = [];
  const els = scope.querySelectorAll('.js-plotly-plot .main-svg:first-of-type, .cntk-heatmaps, svg.cntk-chart, '
    + '.cntk-legend, .cntk-findings, .cntk-pair, .widget-image');
  els.forEach((el) => {
    const b = el.getBoundingClientRect();
    if (b.width <= 0) return;
    const plot = el.closest('.js-plotly-plot');
    const title = plot && plot.querySelector('.infolayer .g-gtitle');
    const name = plot ? `plotly figure '${title ? title.textContent.trim().slice(0, 60) : ''}'`
      : (el.getAttribute('class') || el.tagName).split(' ')[0];
    const span = `x ${b.left.toFixed(0)}..${b.right.toFixed(0)}`;
    if (b.right > width + 1 || b.left < -1) out.push(`${name}: ${span} beyond the window (0..${width})`);
    for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
      const ox = getComputedStyle(a).overflowX;
      if (ox === 'visible') continue;
      const p = a.getBoundingClientRect();
      if (b.right > p.right + 1 || b.left < p.left - 1) {
        const cut = `${(a.className || a.tagName).toString().slice(0, 80)} (overflow-x ${ox}, `
          + `x ${p.left.toFixed(0)}..${p.right.toFixed(0)})`;
        out.push(`${name}: ${span} cut off by ${cut}`);
        break;
      }
    }
  });
  return out;
}"""


def layout_problems(page, root: str) -> list[str]:
    """Overlaps of the named plot elements and clipped pictures under the CSS selector ``root``
    (every match), as sentences, each once."""
    problems = []
    for k in range(page.locator(root).count()):
        handle = page.locator(root).nth(k).element_handle()
        problems += plot_overlaps(page.evaluate(PLOTLY_BOXES, handle))
        problems += html_picture_overlaps(page.evaluate(HTML_PICTURE_BOXES, handle))
        problems += page.evaluate(CLIPPED, handle) or []
    return list(dict.fromkeys(problems))


# -- waiting -----------------------------------------------------------------------------------------
def wait_for(page, js: str, arg=None, *, what: str, timeout: float = 120.0, every_ms: int = 250):
    """Poll the JS function ``js(arg)`` until it returns something truthy; return that. On timeout
    an ``AssertionError`` naming ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = page.evaluate(js, arg)
        if value:
            return value
        page.wait_for_timeout(every_ms)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {str(value)[:1500]}")


#: the explorer's state: heatmap data and title, the depth readout, the status line, the pair caption
EXPLORER_STATE = r"""(root) => {
  const ex = typeof root === 'string' ? document.querySelector(root) : root;
  if (!ex) return null;
  const plot = ex.querySelector('.js-plotly-plot');
  const title = plot && plot.querySelector('.gtitle');
  const readout = ex.querySelector('.cntk-picker .widget-slider .widget-readout');
  const caption = ex.querySelector('.cntk-pair-caption');
  const z = plot && plot.data && plot.data.length ? plot.data[0].z : null;
  let sum = 0, n = 0;
  if (z) for (const row of z) { n++; for (const v of row) sum += v || 0; }
  return {
    title: title ? title.textContent : '',
    depth: readout
      ? (readout.value !== undefined && readout.value !== '' ? readout.value : readout.textContent).trim() : null,
    text: ex.innerText,
    caption: caption ? caption.textContent : null,
    n, sum, z,
  };
}"""


def explorer_state(page, root: str = ".cntk-explorer") -> dict | None:
    return page.evaluate(EXPLORER_STATE, root)


def wait_explorer(
    page, predicate, what: str, *, root: str = ".cntk-explorer", timeout: float = 120.0, finished: bool = True
) -> dict:
    """Wait until the explorer's state satisfies ``predicate`` (its picture drawn, etc.). With
    ``finished`` (default) only a finished picture counts, not the row blocks drawn while it is
    computed (their title says "computing")."""
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = explorer_state(page, root)
        if state and state["n"] and not (finished and "computing" in state["title"]) and predicate(state):
            return state
        page.wait_for_timeout(200)
    short = state and {k: v for k, v in state.items() if k != "z"}
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; explorer: {short}")


def press_depth(page, steps: int, root: str = ".cntk-explorer") -> None:
    """Move the explorer's depth slider by ``steps`` with the keyboard (as a user with the arrow keys)."""
    handle = page.locator(f"{root} .cntk-picker .widget-slider .noUi-handle").first
    handle.focus()
    for _ in range(abs(steps)):
        page.keyboard.press("ArrowRight" if steps > 0 else "ArrowLeft")
        page.wait_for_timeout(120)


def click_heatmap_cell(page, fx: float, fy: float, root: str = ".cntk-explorer") -> None:
    """Click the explorer's heatmap at the fractions ``fx``, ``fy`` of its plot area."""
    area = page.locator(f"{root} .js-plotly-plot .draglayer .xy .nsewdrag").first
    area.evaluate("(el) => el.closest('.js-plotly-plot').scrollIntoView({block: 'center'})")
    page.wait_for_timeout(300)
    b = area.bounding_box()
    page.mouse.click(b["x"] + fx * b["width"], b["y"] + fy * b["height"])


# -- JupyterLab ----------------------------------------------------------------------------------------
LAB_KERNEL_READY = """() => { const app = window.jupyterapp; const w = app && app.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle' && app.commands.isEnabled('notebook:run-all-cells'); }"""

#: the open notebook's run state: code cells, how many ran, which are running, error / stderr outputs
LAB_RUN_STATE = r"""() => {
  const w = window.jupyterapp.shell.currentWidget;
  const cells = w.content.widgets;
  let total = 0, done = 0, running = 0;
  const errors = [], stderr = [];
  cells.forEach((c, i) => {
    if (c.model.type !== 'code') return;
    total++;
    if (c.model.executionCount) done++;
    const prompt = c.node.querySelector('.jp-InputPrompt');
    if (prompt && prompt.textContent.includes('*')) running++;
    for (const o of c.model.outputs.toJSON()) {
      const tb = (o.traceback || []).join('\n').replace(/\x1b\[[0-9;]*m/g, '');
      if (o.output_type === 'error') errors.push(`cell ${i}: ${o.ename}: ${o.evalue}\n${tb}`);
      if (o.output_type === 'stream' && o.name === 'stderr') stderr.push(`cell ${i}: ${[].concat(o.text).join('')}`);
    }
  });
  const k = w.sessionContext.session && w.sessionContext.session.kernel;
  const errorNodes = w.node.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"], '
    + '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').length;
  return {total, done, running, errors, stderr, errorNodes, status: k ? k.status : 'none'};
}"""


def open_notebook(page, server: Server, base: str, notebook: str) -> None:
    """Open ``notebook`` in JupyterLab and wait until its kernel is idle and Run All is enabled."""
    page.goto(lab_url(server, base, notebook), timeout=120_000)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    page.wait_for_function(
        f"() => {{ const w = window.jupyterapp && window.jupyterapp.shell.currentWidget; "
        f"return !!w && w.title && w.title.label === {json.dumps(notebook)}; }}",
        timeout=60_000,
    )
    page.wait_for_function(LAB_KERNEL_READY, timeout=120_000)


def run_all(page, *, timeout: float = 300.0) -> dict:
    """Run All in the current notebook and wait until every code cell ran and the kernel is idle.
    Fails at once (with the traceback) when a cell raises. Returns the final run state."""
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    deadline = time.monotonic() + timeout
    state, idle_since = None, None
    while time.monotonic() < deadline:
        state = page.evaluate(LAB_RUN_STATE)
        if state["errors"]:
            raise AssertionError("a cell raised during Run All:\n" + "\n".join(state["errors"])[:4000])
        finished = state["done"] == state["total"] and state["running"] == 0 and state["status"] == "idle"
        if finished:
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since > 1.0:  # idle for a second: not between two cells
                return state
        else:
            idle_since = None
        page.wait_for_timeout(300)
    raise AssertionError(f"Run All did not finish within {timeout:.0f} s: {state}")


def saved_notebook(page, server: Server, notebook: str, *, timeout: float = 60.0):
    """Save the open notebook with JupyterLab's own command and read it back (``nbformat``) from the
    served folder: the outputs the page's Run All produced, as a user's saved notebook holds them."""
    import nbformat

    path = server.cwd / notebook
    before = path.stat().st_mtime_ns
    page.evaluate("async () => { await window.jupyterapp.commands.execute('docmanager:save'); }")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        clean = page.evaluate("() => !window.jupyterapp.shell.currentWidget.context.model.dirty")
        if clean and path.stat().st_mtime_ns != before:
            return nbformat.read(path, as_version=4)
        page.wait_for_timeout(200)
    raise AssertionError(f"JupyterLab did not save {notebook} within {timeout:.0f} s")


def screenshot(page, path: Path, selector: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if selector:
        page.locator(selector).first.screenshot(path=str(path))
    else:
        page.screenshot(path=str(path))
    return path


def parse_number(text: str) -> float | None:
    m = re.search(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", text or "")
    return float(m.group()) if m else None
