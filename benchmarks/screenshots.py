"""Take the README's pictures of the lab in headless Chromium, 1280 px wide (run on purpose; pytest
never writes into the repository):

- ``benchmarks/screenshots/jupyterlab_explorer.png``: notebook 02's kernel explorer in JupyterLab, after
  Run All (the notebook's last setting, depth 6);
- ``benchmarks/screenshots/voila_classroom.png``: the classroom page in Voila (``python -m
  cntk_widgets --voila``), from its title to the end of the explorer.

The servers start as in the browser tests (``tests/browser_support.py``: the launcher's own commands,
their own Jupyter and data folders in a temporary folder, every non-local request blocked)::

    .venv/bin/python benchmarks/screenshots.py                          # the bundled digits
    .venv/bin/python benchmarks/screenshots.py --dataset cifar10-subset # the offline CIFAR-10 subset files
    .venv/bin/python benchmarks/screenshots.py --cifar10 ~/Downloads/cifar-10-python.tar.gz

Needs ``/usr/bin/chromium`` (or ``CNTK_CHROMIUM``) and the ``playwright`` package (no ``playwright
install``). Console errors and blocked requests are printed; the exit code is 1 when there were any.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "screenshots"
WIDTH = 1280


def _support():
    """``tests/browser_support.py``, imported by path (``tests/`` is not a package)."""
    path = ROOT / "tests" / "browser_support.py"
    spec = importlib.util.spec_from_file_location("browser_support", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["browser_support"] = module
    spec.loader.exec_module(module)
    return module


def _height_to(page, selector: str, *, margin: int = 16, most: int = 2400) -> int:
    """Window height that shows the page from its top to the bottom of ``selector``."""
    bottom = page.evaluate(
        "(sel) => { const e = document.querySelector(sel); const b = e.getBoundingClientRect();"
        " return b.bottom + (document.scrollingElement ? document.scrollingElement.scrollTop : 0); }",
        selector,
    )
    return int(min(most, bottom + margin))


def voila_picture(bs, p, chromium: str, tmp: Path, data, out: Path) -> list[str]:
    server, base = bs.start_voila(tmp / "voila", data)
    browser = None
    try:
        browser, ctx, log = bs.open_browser(p, chromium, (WIDTH, 800))
        for attempt in range(3):  # a page that missed a widget update shows a stale status: load it again
            page = ctx.new_page()
            page.goto(base, timeout=180_000)
            try:
                wait = 600 if attempt == 0 else 120
                bs.wait_explorer(page, lambda s: s["sum"] > 0 and "ready" in s["text"], "the explorer", timeout=wait)
                findings = "() => !!document.querySelector('.cntk-comparison .cntk-findings')"
                bs.wait_for(page, findings, what="the findings", timeout=wait)
                break
            except AssertionError as exc:
                print(f"warning: {exc}"[:300] + "; loading the page again", file=sys.stderr)
                page.close(run_before_unload=True)
        else:
            raise RuntimeError("the classroom page never showed its pictures and findings")
        page.mouse.move(1, 1)
        page.set_viewport_size({"width": WIDTH, "height": _height_to(page, ".cntk-explorer")})
        page.wait_for_timeout(800)
        page.evaluate("() => window.scrollTo(0, 0)")
        bs.screenshot(page, out / "voila_classroom.png")
        return log.problems() + [f"blocked: {u}" for u in sorted(set(log.blocked))]
    finally:
        if browser is not None:
            browser.close()
        server.stop()


def jupyterlab_picture(bs, p, chromium: str, tmp: Path, data, out: Path) -> list[str]:
    notebook = "02_cntk_explorer.ipynb"
    server, base = bs.start_jupyterlab(tmp / "lab", data, notebook=notebook)
    browser = None
    try:
        browser, ctx, log = bs.open_browser(p, chromium, (WIDTH, 1100))
        page = ctx.new_page()
        bs.open_notebook(page, server, base, notebook)
        page.evaluate("window.jupyterapp.shell.collapseLeft()")  # the notebook gets the window's width
        bs.run_all(page, timeout=600)
        bs.wait_explorer(
            page, lambda s: "-6" in s["title"] and "ready" in s["text"], "the depth-6 picture", timeout=600
        )
        page.mouse.move(1, 1)
        page.locator(".cntk-explorer").first.evaluate("(el) => el.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(800)
        bs.screenshot(page, out / "jupyterlab_explorer.png", ".cntk-explorer")
        return log.problems() + [f"blocked: {u}" for u in sorted(set(log.blocked))]
    finally:
        if browser is not None:
            browser.close()
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits", help="digits (default), cifar10-subset or cifar10")
    parser.add_argument(
        "--cifar10", default=None, metavar="PATH", help="a CIFAR-10 tarball or folder (implies cifar10)"
    )
    parser.add_argument("--n-per-class", type=int, default=None, help="images per class (default: the notebooks')")
    parser.add_argument("--out", type=Path, default=OUT, help=f"folder for the pictures (default {OUT})")
    parser.add_argument("--only", choices=("voila", "jupyterlab"), default=None, help="take one picture only")
    args = parser.parse_args(argv)

    bs = _support()
    chromium = bs.find_chromium()
    if chromium is None or not bs.playwright_available():
        print("error: needs Chromium (/usr/bin/chromium or CNTK_CHROMIUM) and the playwright package", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    cifar = Path(args.cifar10).expanduser().absolute() if args.cifar10 else None
    data = bs.LabData("cifar10" if cifar else args.dataset, args.n_per_class, cifar)
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="cntk-screenshots-"))
    problems = []
    try:
        with sync_playwright() as p:
            for name, take in (("voila", voila_picture), ("jupyterlab", jupyterlab_picture)):
                if args.only in (None, name):
                    t0 = time.monotonic()
                    problems += [f"{name}: {m}" for m in take(bs, p, chromium, tmp, data, args.out)]
                    print(f"{name}: {time.monotonic() - t0:.0f} s", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for m in problems:
        print(f"warning: {m}", file=sys.stderr)
    print(f"pictures in {args.out}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
