"""``python -m cntk_widgets``: open the CNTK lab (notebook 2) in JupyterLab, or with ``--voila`` as a
code-free classroom page. The notebooks folder is found next to the package (a repository checkout).

    python -m cntk_widgets                      # JupyterLab on notebooks/02_cntk_explorer.ipynb
    python -m cntk_widgets --voila --port 8866  # Voila app
    python -m cntk_widgets --notebook 03_cifar10_regression.ipynb --no-browser
    python -m cntk_widgets --print-command      # show the command instead of running it
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

DEFAULT_NOTEBOOK = "02_cntk_explorer.ipynb"


def notebooks_dir() -> Path:
    """``<repo>/notebooks`` (the folder beside the ``cntk_widgets`` package); raises if absent."""
    folder = Path(__file__).resolve().parent.parent / "notebooks"
    if not folder.is_dir():
        raise FileNotFoundError(
            f"notebooks folder not found at {folder}: the lab runs from a repository checkout "
            "(git clone the project and `pip install -e .[lab]`)"
        )
    return folder


def _port(text: str) -> int:
    """A TCP port 1-65535 (argparse type)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be an integer 1-65535, got {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be an integer 1-65535, got {port}")
    return port


def build_command(args: argparse.Namespace) -> tuple[list[str], Path]:
    """``(argv, cwd)`` of the server command for the parsed ``args``."""
    folder = notebooks_dir()
    notebook = folder / args.notebook
    if Path(args.notebook).name != args.notebook or not notebook.is_file():  # a bare name: the server runs there
        names = ", ".join(sorted(p.name for p in folder.glob("*.ipynb")))
        raise FileNotFoundError(f"--notebook must name a notebook in {folder} ({names}), got {args.notebook!r}")
    if args.voila:
        cmd = [sys.executable, "-m", "voila", notebook.name, f"--port={8866 if args.port is None else args.port}"]
        if args.no_browser:
            cmd.append("--no-browser")
        cmd.append(f"--Voila.ip={args.ip}")
    else:
        cmd = [sys.executable, "-m", "jupyterlab", notebook.name, f"--ServerApp.ip={args.ip}"]
        if args.port is not None:
            cmd.append(f"--port={args.port}")
        if args.no_browser:
            cmd.append("--no-browser")
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers and CI machines run as root
            cmd.append("--ServerApp.allow_root=True")
    return cmd, folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cntk_widgets", description=__doc__.split("\n\n")[0])
    parser.add_argument("--voila", action="store_true", help="serve the notebook as a Voila app (no code shown)")
    parser.add_argument("--no-browser", action="store_true", help="do not open a web browser")
    parser.add_argument("--port", type=_port, default=None, help="server port (default: 8888 Lab, 8866 Voila)")
    parser.add_argument("--ip", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--notebook", default=DEFAULT_NOTEBOOK, help=f"notebook to open (default {DEFAULT_NOTEBOOK})")
    parser.add_argument(
        "--dataset",
        default=None,
        choices=("digits", "cifar10-subset"),
        help="data set the notebooks use (sets CNTK_LAB_DATASET; default digits, embedded)",
    )
    parser.add_argument("--print-command", action="store_true", help="print the server command and exit")
    args = parser.parse_args(argv)
    try:
        cmd, cwd = build_command(args)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    if args.dataset:
        env["CNTK_LAB_DATASET"] = args.dataset
    if args.print_command:
        print(f"cd {shlex.quote(str(cwd))} && {shlex.join(cmd)}")
        return 0
    try:
        return subprocess.call(cmd, cwd=cwd, env=env)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
