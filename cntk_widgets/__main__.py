"""``python -m cntk_widgets``: open the CNTK lab (notebook 2) in JupyterLab, or with ``--voila`` the
code-free classroom page (``notebooks/classroom.ipynb``). The notebooks folder is found next to the
package (a repository checkout).

    python -m cntk_widgets                      # JupyterLab on notebooks/02_cntk_explorer.ipynb
    python -m cntk_widgets --voila --port 8866  # the classroom page in Voila
    python -m cntk_widgets --dataset cifar10    # real CIFAR-10: downloaded once into the per-user cache
    python -m cntk_widgets --cifar10 ~/Downloads/cifar-10-python.tar.gz --n-per-class 10
    python -m cntk_widgets --notebook 03_cifar10_regression.ipynb --no-browser
    python -m cntk_widgets --print-command      # show the command instead of running it

Before any server starts, the data set (``--dataset``, else a ``CNTK_LAB_DATASET`` already set) is
checked (and CIFAR-10 downloaded with a progress bar when it is not in the cache); data that cannot be
had ends the launcher with exit code 2 and one line saying what to do. The notebooks read the choices
from the environment: ``CNTK_LAB_DATASET``, ``CNTK_LAB_N_PER_CLASS`` and, with ``--cifar10``,
``CNTK_CIFAR10``.

JupyterLab opens (and prints the address of) the notebook itself, not the Launcher; its "get notified
about Jupyter news?" question is answered "no" by a default-settings override that this launcher adds
(``cntk_widgets/jupyter_config/labconfig``, via ``JUPYTER_CONFIG_PATH``): a user's own setting still
wins and nothing in the user's Jupyter folders is written. Voila serves the page with the lab's template
``cntk-lab`` (``cntk_widgets/jupyter_data``, via ``JUPYTER_PATH``): no stylesheets from a CDN, and a
closed or reloaded tab stops its kernel (Voila's close-the-tab request; a kernel whose request was lost,
or whose student's connection dropped, is stopped once it has had no page connected and no activity for
``--cull-idle`` seconds, default ``CULL_IDLE``: a classroom server never fills up with dead kernels).
SIGINT, SIGTERM or SIGHUP to the launcher
stop the server: SIGTERM to its process group (the clean shutdown of Jupyter and Voila: kernels
stopped, runtime files removed), then SIGKILL if it has not exited after ``STOP_TIMEOUT`` seconds or
on a second signal. On Linux the server also gets SIGTERM when the launcher dies in a way no handler
sees (SIGKILL, e.g. from a harness or the OOM killer): it never outlives the launcher.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_NOTEBOOK = "02_cntk_explorer.ipynb"
#: what ``--voila`` serves unless ``--notebook`` says otherwise: student-facing text only
CLASSROOM_NOTEBOOK = "classroom.ipynb"
#: Jupyter configuration added for the lab (JUPYTER_CONFIG_PATH): default-setting overrides only
LAB_CONFIG_DIR = Path(__file__).resolve().parent / "jupyter_config"
#: Jupyter data added for Voila (JUPYTER_PATH): the ``cntk-lab`` Voila template, Voila's "lab" template
#: without its two Font Awesome stylesheets from a CDN (the page asks nothing of the internet)
VOILA_DATA_DIR = Path(__file__).resolve().parent / "jupyter_data"
VOILA_TEMPLATE = "cntk-lab"
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
STOP_TIMEOUT = 10.0
#: Voila: seconds a kernel with no page connected and no activity lives on (``--cull-idle``)
CULL_IDLE = 300


def cull_interval(seconds: int) -> int:
    """Seconds between two idle checks for a cull after ``seconds`` (> 0): a third of it, 1 to 60."""
    return max(1, min(60, seconds // 3))


def cull_arguments(seconds: int) -> list[str]:
    """Jupyter server options that stop a kernel after ``seconds`` with no connection and no activity
    (checked every ``seconds / 3``, at most every minute); a kernel a page is connected to, or one that
    is computing, is never stopped. ``seconds = 0``: none (kernels live until the server stops)."""
    if seconds == 0:
        return []
    return [
        f"--MappingKernelManager.cull_idle_timeout={seconds}",
        f"--MappingKernelManager.cull_interval={cull_interval(seconds)}",
        "--MappingKernelManager.cull_connected=False",
        "--MappingKernelManager.cull_busy=False",
    ]


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
    if args.notebook is None:
        args.notebook = CLASSROOM_NOTEBOOK if args.voila else DEFAULT_NOTEBOOK
    notebook = folder / args.notebook
    if Path(args.notebook).name != args.notebook or not notebook.is_file():  # a bare name: the server runs there
        names = ", ".join(sorted(p.name for p in folder.glob("*.ipynb")))
        raise FileNotFoundError(f"--notebook must name a notebook in {folder} ({names}), got {args.notebook!r}")
    if args.voila:
        cmd = [sys.executable, "-m", "voila", notebook.name, f"--port={8866 if args.port is None else args.port}"]
        cmd.append(f"--template={VOILA_TEMPLATE}")
        if args.no_browser:
            cmd.append("--no-browser")
        cmd.append(f"--Voila.ip={args.ip}")
        cmd += cull_arguments(args.cull_idle)
    else:
        # default_url: the address JupyterLab prints (and /) opens the notebook itself, not the Launcher
        cmd = [sys.executable, "-m", "jupyterlab", notebook.name, f"--ServerApp.ip={args.ip}"]
        cmd.append(f"--LabApp.default_url=/lab/tree/{notebook.name}")
        if args.port is not None:
            cmd.append(f"--port={args.port}")
        if args.no_browser:
            cmd.append("--no-browser")
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers and CI machines run as root
            cmd.append("--ServerApp.allow_root=True")
    return cmd, folder


def lab_environment(args: argparse.Namespace, base: dict | None = None) -> dict[str, str]:
    """The variables the launcher sets for the server and its kernels (on top of ``base``, default
    ``os.environ``): the data choices, and for JupyterLab the default-settings override folder."""
    env = dict(os.environ if base is None else base)
    if args.dataset:
        env["CNTK_LAB_DATASET"] = args.dataset
    if args.n_per_class is not None:
        env["CNTK_LAB_N_PER_CLASS"] = str(args.n_per_class)
    if args.cifar10 is not None:
        env["CNTK_CIFAR10"] = str(Path(args.cifar10).expanduser().absolute())
    if args.voila:  # appended: the user's own JUPYTER_PATH entries keep priority
        env["JUPYTER_PATH"] = os.pathsep.join(p for p in (env.get("JUPYTER_PATH"), str(VOILA_DATA_DIR)) if p)
    else:  # appended: the user's own JUPYTER_CONFIG_PATH entries keep priority
        env["JUPYTER_CONFIG_PATH"] = os.pathsep.join(
            p for p in (env.get("JUPYTER_CONFIG_PATH"), str(LAB_CONFIG_DIR)) if p
        )
    return env


def check_data(dataset: str | None, env: dict[str, str]) -> None:
    """Make sure ``dataset`` loads as the notebooks will load it (same environment) before any server
    starts: CIFAR-10 is downloaded (progress bar) and decoded once if needed. Raises ``OSError`` /
    ``ValueError`` with a message saying what to do."""
    if dataset in (None, "digits"):
        return
    saved = {k: os.environ.get(k) for k in ("CNTK_CIFAR10", "CNTK_CIFAR10_SUBSET", "CNTK_DATA_DIR")}
    os.environ.update({k: env[k] for k in saved if k in env})
    try:
        from cntk_core.data import DataUnavailableError, load_dataset
        from cntk_core.data._cifar import ChecksumError

        try:
            load_dataset(dataset)
        except DataUnavailableError as exc:
            raise DataUnavailableError(
                f"{exc}; or start the lab with --cifar10 PATH (a tarball or folder), or with --dataset digits"
            ) from None
        except ChecksumError as exc:
            if not env.get("CNTK_CIFAR10"):  # the cache's or a mirror's file: nothing to extract
                raise
            raise ChecksumError(f"{exc} (start the lab with --cifar10 FOLDER)") from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


#: ``prctl`` option (``<linux/prctl.h>``): the signal a process gets when its parent dies
PR_SET_PDEATHSIG = 1


def _stop_with_launcher():
    """A ``preexec_fn`` (Linux) that makes the server get SIGTERM when this launcher dies, even by SIGKILL,
    which no handler sees: Jupyter's and Voila's clean stop, so the server and its kernels never outlive
    the launcher. ``None`` elsewhere or when ``prctl`` cannot be called (the signal forwarding still works)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - a libc without prctl
        return None
    # everything built before the fork: the child only calls (it may not allocate safely with threads)
    args = tuple(ctypes.c_ulong(v) for v in (signal.SIGTERM, 0, 0, 0))
    option, launcher = ctypes.c_int(PR_SET_PDEATHSIG), os.getpid()

    def preexec() -> None:  # in the child, between fork and exec
        if prctl(option, *args) == 0 and os.getppid() != launcher:  # the launcher died before the prctl
            os._exit(128 + signal.SIGTERM)

    return preexec


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, sig)  # the child leads its own process group (start_new_session)
        else:  # pragma: no cover - Windows
            proc.terminate()
    except ProcessLookupError:
        pass


def run_server(cmd: list[str], cwd: Path, env: dict[str, str], stop_timeout: float | None = None) -> int:
    """Run the server in its own process group until it exits; SIGINT/SIGTERM/SIGHUP to this process
    stop it (SIGTERM to the group, SIGKILL after ``stop_timeout`` s, default :data:`STOP_TIMEOUT`, or on
    a second signal); on Linux, the death of this process (even by SIGKILL) sends the server SIGTERM
    (``PR_SET_PDEATHSIG``: call this from the thread that lives as long as the server, e.g. the main one).
    Returns the server's exit code, or 128 + the signal number when stopped by one."""
    stop_timeout = STOP_TIMEOUT if stop_timeout is None else stop_timeout
    received: list[int] = []
    running: list[subprocess.Popen] = []

    def stop(signum, frame):
        received.append(signum)
        for proc in running:
            _signal_group(proc, signal.SIGTERM if len(received) == 1 else signal.SIGKILL)

    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}  # before the start: no signal is lost
    try:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_stop_with_launcher(),  # SIGKILL to the launcher: SIGTERM to the server (Linux)
        )
        running.append(proc)
        if received:  # arrived while starting
            _signal_group(proc, signal.SIGTERM)
        deadline = None
        while True:
            try:
                code = proc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if received and deadline is None:
                    deadline = time.monotonic() + stop_timeout
                if deadline is not None and time.monotonic() > deadline:
                    _signal_group(proc, signal.SIGKILL)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for proc in running:
            if proc.poll() is None:  # an exception in this loop: never leave the server behind
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
    return 128 + received[0] if received else code


def build_parser() -> argparse.ArgumentParser:
    # the `cntk-lab` command's argument types: the same words for the same mistake
    from cntk_core.cli import _non_negative_int, _positive_int
    from cntk_core.data import DATASETS

    parser = argparse.ArgumentParser(
        prog="python -m cntk_widgets",
        description=__doc__.split("\n\n")[0],
        epilog="Data: digits are bundled (offline). cifar10 is the official tarball, downloaded once into the "
        "per-user cache ($CNTK_DATA_DIR or ~/.cache/cntk-lab), or --cifar10 PATH. cifar10-subset reads the files "
        "of `cntk-lab data subset` (for machines that stay offline).",
    )
    parser.add_argument("--voila", action="store_true", help="serve the notebook as a Voila app (no code shown)")
    parser.add_argument("--no-browser", action="store_true", help="do not open a web browser; open the printed URL")
    parser.add_argument("--port", type=_port, default=None, help="server port (default: 8888 Lab, 8866 Voila)")
    parser.add_argument("--ip", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument(
        "--notebook",
        default=None,
        help=f"notebook to open (default {DEFAULT_NOTEBOOK}; with --voila {CLASSROOM_NOTEBOOK})",
    )
    parser.add_argument(
        "--dataset",
        default=None,
        choices=DATASETS,
        help="data set the notebooks use (sets CNTK_LAB_DATASET; default: the CNTK_LAB_DATASET already set, else "
        "digits, bundled)",
    )
    parser.add_argument(
        "--cifar10",
        default=None,
        metavar="PATH",
        help="a cifar-10-python.tar.gz or extracted folder to use for --dataset cifar10 (implies it; sets "
        "CNTK_CIFAR10) instead of the cached download",
    )
    parser.add_argument(
        "--n-per-class",
        type=_positive_int,
        default=None,
        metavar="N",
        help="images per class the notebooks' views use (sets CNTK_LAB_N_PER_CLASS; default: each notebook's "
        "own, e.g. 4 in the explorer). Larger N: slower kernels (N^2 pairs), especially on CIFAR-10",
    )
    parser.add_argument(
        "--cull-idle",
        type=_non_negative_int,
        default=CULL_IDLE,
        metavar="SECONDS",
        help=f"Voila: stop a kernel no page has been connected to, and that has done nothing, for SECONDS (a "
        f"closed tab whose stop request was lost, a student gone; default {CULL_IDLE}; 0 = never)",
    )
    parser.add_argument("--print-command", action="store_true", help="print the server command and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    from cntk_core.data import DATASETS

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cifar10 is not None:
        if args.dataset not in (None, "cifar10"):
            parser.error(f"--cifar10 is the data of --dataset cifar10, not of --dataset {args.dataset}")
        args.dataset = "cifar10"
    try:
        cmd, cwd = build_command(args)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    env = lab_environment(args)
    if args.print_command:
        changed = {k: v for k, v in env.items() if os.environ.get(k) != v}
        prefix = "".join(f"{k}={shlex.quote(v)} " for k, v in sorted(changed.items()))
        print(f"cd {shlex.quote(str(cwd))} && {prefix}{shlex.join(cmd)}")
        return 0
    # what the notebooks will read: --dataset, else the user's own CNTK_LAB_DATASET (checked all the same)
    dataset = env.get("CNTK_LAB_DATASET") or None
    source = f"--dataset {dataset}" if args.dataset else f"CNTK_LAB_DATASET={dataset}"
    try:
        if dataset is not None and dataset not in DATASETS:
            raise ValueError(f"unknown data set; choose one of {', '.join(DATASETS)}")
        check_data(dataset, env)
    except KeyboardInterrupt:
        return 130
    except (OSError, ValueError) as exc:  # missing, not downloadable, corrupt (DataError is a ValueError)
        print(f"error: {source}: {exc}", file=sys.stderr)
        return 2
    what = "Voila" if args.voila else "JupyterLab"
    print(
        f"Starting {what} on notebooks/{args.notebook} (data: {dataset or 'digits'}); "
        "open the address it prints below. Stop with Ctrl-C.",
        file=sys.stderr,
        flush=True,
    )
    return run_server(cmd, cwd, env)


if __name__ == "__main__":
    sys.exit(main())
