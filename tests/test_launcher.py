"""The lab's launcher, ``python -m cntk_widgets`` (cntk_widgets.__main__): the command it prints, the port
and notebook arguments it refuses (exit 2, before any server starts) and the notebooks folder it follows;
the data check before any server starts, the environment it passes, signal handling (with a fake server),
and a real JupyterLab: the printed URL opens notebook 2, the news question is answered by a default (the
user's settings untouched), SIGTERM stops the server and its kernels."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import cntk_core.data._cifar as cifar_mod
import cntk_widgets.__main__ as launcher

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# ----------------------------------------------------------------------------- the command and its arguments
def test_main_command_finds_notebooks(capsys):
    assert (launcher.notebooks_dir() / "02_cntk_explorer.ipynb").is_file()
    assert launcher.main(["--print-command", "--no-browser", "--port", "8899"]) == 0
    out = capsys.readouterr().out
    assert "jupyterlab 02_cntk_explorer.ipynb" in out and "--port=8899" in out and "--no-browser" in out
    assert launcher.main(["--print-command", "--voila"]) == 0
    assert "voila classroom.ipynb" in capsys.readouterr().out  # the student page
    assert launcher.main(["--print-command", "--voila", "--notebook", "02_cntk_explorer.ipynb"]) == 0
    assert "voila 02_cntk_explorer.ipynb" in capsys.readouterr().out
    assert launcher.main(["--print-command", "--notebook", "nope.ipynb"]) == 2


@pytest.mark.parametrize("port", ["0", "-1", "99999", "http"])
def test_lab_launcher_refuses_bad_ports(port, capsys):
    with pytest.raises(SystemExit) as info:
        launcher.main(["--print-command", "--port", port])
    assert info.value.code == 2 and "port must be an integer 1-65535" in capsys.readouterr().err


@pytest.mark.parametrize("notebook", ["../README.md", "", "/tmp/elsewhere.ipynb"])
def test_lab_launcher_opens_only_the_projects_notebooks(notebook, capsys):
    assert launcher.main(["--print-command", "--notebook", notebook]) == 2
    assert "--notebook must name a notebook in" in capsys.readouterr().err
    assert launcher.main(["--print-command", "--voila", "--port", "9001"]) == 0
    assert "--port=9001" in capsys.readouterr().out


def test_voila_culls_idle_unconnected_kernels(capsys):
    """A classroom server stops kernels whose page is gone (a lost close request, a student gone): Jupyter's
    idle cull of unconnected, idle kernels, default 300 s; the browser test sees it stop a real kernel."""
    assert launcher.main(["--print-command", "--voila"]) == 0
    out = capsys.readouterr().out
    assert "--MappingKernelManager.cull_idle_timeout=300" in out and "--MappingKernelManager.cull_interval=60" in out
    assert "--MappingKernelManager.cull_connected=False" in out and "--MappingKernelManager.cull_busy=False" in out
    assert launcher.main(["--print-command", "--voila", "--cull-idle", "9"]) == 0
    out = capsys.readouterr().out
    assert "cull_idle_timeout=9 " in out + " " and "cull_interval=3" in out
    assert launcher.main(["--print-command", "--voila", "--cull-idle", "0"]) == 0
    assert "cull" not in capsys.readouterr().out
    assert launcher.main(["--print-command"]) == 0  # JupyterLab: a user's own kernels are never culled
    assert "cull" not in capsys.readouterr().out
    for bad in ("-5", "soon"):
        with pytest.raises(SystemExit) as info:
            launcher.main(["--print-command", "--voila", "--cull-idle", bad])
        assert info.value.code == 2 and "expected an integer >= 0" in capsys.readouterr().err


def test_lab_launcher_follows_a_symlinked_notebooks_folder(tmp_path, monkeypatch):
    link = tmp_path / "notebooks"
    link.symlink_to(launcher.notebooks_dir())
    monkeypatch.setattr(launcher, "notebooks_dir", lambda: link)
    assert launcher.main(["--print-command"]) == 0


# ----------------------------------------------------------------------------- data check and environment
@pytest.fixture
def started(monkeypatch):
    """Record run_server calls instead of starting a server."""
    calls = []
    monkeypatch.setattr(launcher, "run_server", lambda cmd, cwd, env: calls.append((cmd, cwd, env)) or 0)
    return calls


def test_digits_needs_no_data_and_sets_nothing(data_cache, started):
    assert launcher.main(["--no-browser"]) == 0
    ((cmd, cwd, env),) = started
    assert "CNTK_LAB_DATASET" not in env and "CNTK_LAB_N_PER_CLASS" not in env
    assert cwd.name == "notebooks" and "--LabApp.default_url=/lab/tree/02_cntk_explorer.ipynb" in cmd
    assert env["JUPYTER_CONFIG_PATH"].split(os.pathsep)[-1] == str(launcher.LAB_CONFIG_DIR)
    assert not data_cache.exists()  # nothing downloaded or written


def test_missing_subset_exits_2_before_any_server(data_cache, started, capsys):
    assert launcher.main(["--dataset", "cifar10-subset"]) == 2
    err = capsys.readouterr().err.strip()
    assert started == [] and len(err.splitlines()) == 1, err
    assert "cntk-lab data subset" in err and "--dataset cifar10" in err and str(data_cache) in err


def test_offline_cifar10_exits_2_with_what_to_do(data_cache, started, capsys, monkeypatch):
    monkeypatch.setenv("CNTK_CIFAR10_URL", f"http://127.0.0.1:{free_port()}/cifar-10-python.tar.gz")  # refused
    assert launcher.main(["--dataset", "cifar10", "--no-browser"]) == 2
    err = capsys.readouterr().err.strip()
    assert started == [] and len(err.splitlines()) == 1, err
    assert "could not be downloaded" in err and "--cifar10 PATH" in err and "--dataset digits" in err
    assert not (data_cache / "cifar-10-python.tar.gz").exists()


def test_cifar10_downloaded_with_progress_then_started(fake_cifar10, data_cache, started, capsys, monkeypatch):
    monkeypatch.setattr(cifar_mod, "CIFAR10_MD5", fake_cifar10.md5)  # the fake plays the official file
    monkeypatch.setattr(cifar_mod, "CIFAR10_SHA256", fake_cifar10.sha256)
    monkeypatch.setenv("CNTK_CIFAR10_URL", fake_cifar10.path.as_uri())
    assert launcher.main(["--dataset", "cifar10", "--n-per-class", "3"]) == 0
    assert "cifar-10-python.tar.gz" in capsys.readouterr().err  # the progress bar
    ((_, _, env),) = started
    assert env["CNTK_LAB_DATASET"] == "cifar10" and env["CNTK_LAB_N_PER_CLASS"] == "3"
    assert (data_cache / "cifar-10-python.tar.gz").is_file() and (data_cache / "cifar10-decoded").is_dir()
    from cntk_core.data import dataset_available

    assert dataset_available("cifar10")


def test_cifar10_path_option(fake_cifar10, data_cache, started, tmp_path):
    folder = fake_cifar10.extract(tmp_path / "extracted")  # a folder needs no checksum
    assert launcher.main(["--cifar10", str(folder), "--voila"]) == 0  # implies --dataset cifar10
    ((cmd, _, env),) = started
    assert env["CNTK_LAB_DATASET"] == "cifar10" and env["CNTK_CIFAR10"] == str(folder)
    assert "voila" in cmd and env.get("JUPYTER_CONFIG_PATH") == os.environ.get("JUPYTER_CONFIG_PATH")  # Lab only


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--cifar10", "/nonexistent/cifar-10-python.tar.gz"], "no CIFAR-10 tarball or folder at"),
        (["--cifar10", "CORRUPT"], "md5"),
        (["--cifar10", "x.tar.gz", "--dataset", "digits"], "--cifar10 is the data of --dataset cifar10"),
        (["--n-per-class", "0"], "positive integer"),
        (["--dataset", "mnist"], "invalid choice"),
    ],
)
def test_bad_data_arguments_exit_2(argv, message, fake_cifar10, data_cache, started, capsys):
    argv = [str(fake_cifar10.path) if a == "CORRUPT" else a for a in argv]  # not the official checksum
    try:
        code = launcher.main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    assert code == 2 and started == []
    assert message in capsys.readouterr().err


def test_a_repacked_cifar10_tarball_says_to_use_its_folder(fake_cifar10, data_cache, started, capsys, tmp_path):
    """The fake tarball is not the official file, as a re-packed copy is not: the checksum fails, and the one
    line says the way out (extract it, --cifar10 FOLDER), which then works."""
    assert launcher.main(["--cifar10", str(fake_cifar10.path)]) == 2
    err = capsys.readouterr().err.strip()
    assert started == [] and len(err.splitlines()) == 1, err
    assert "md5" in err and "re-packed copy" in err and f"tar -xzf {fake_cifar10.path} -C FOLDER" in err
    assert "--cifar10 FOLDER" in err
    folder = fake_cifar10.extract(tmp_path / "FOLDER")
    assert launcher.main(["--cifar10", str(folder)]) == 0 and len(started) == 1


def test_the_users_own_dataset_variable_is_checked_too(fake_cifar10, data_cache, started, capsys, monkeypatch):
    """No --dataset, but CNTK_LAB_DATASET in the user's environment: the notebooks read it, so it is checked."""
    monkeypatch.setenv("CNTK_LAB_DATASET", "cifar10-subset")  # its files are not there
    assert launcher.main(["--no-browser"]) == 2
    err = capsys.readouterr().err.strip()
    assert started == [] and len(err.splitlines()) == 1, err
    assert err.startswith("error: CNTK_LAB_DATASET=cifar10-subset: ") and "cntk-lab data subset" in err
    monkeypatch.setenv("CNTK_LAB_DATASET", "mnist")  # lab_dataset() in the notebooks would refuse it
    assert launcher.main(["--no-browser"]) == 2
    assert "CNTK_LAB_DATASET=mnist: unknown data set" in capsys.readouterr().err and started == []
    monkeypatch.setenv("CNTK_LAB_DATASET", "cifar10")
    monkeypatch.setenv("CNTK_CIFAR10", str(fake_cifar10.path))  # also the user's own, not --cifar10
    assert launcher.main(["--no-browser"]) == 2
    assert "re-packed copy" in capsys.readouterr().err and started == []
    monkeypatch.setenv("CNTK_LAB_DATASET", "cifar10-subset")
    assert launcher.main(["--dataset", "digits", "--no-browser"]) == 0  # --dataset still decides
    assert started[0][2]["CNTK_LAB_DATASET"] == "digits"


def test_counts_are_read_by_the_cli_helper():
    """One positive-integer argument type for `cntk-lab` and the launcher (same words for the same mistake)."""
    from cntk_core import cli

    (action,) = [a for a in launcher.build_parser()._actions if a.dest == "n_per_class"]
    assert action.type is cli._positive_int and not hasattr(launcher, "_count")


def test_help_documents_the_options(capsys):
    with pytest.raises(SystemExit):
        launcher.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in ("CNTK_LAB_N_PER_CLASS", "--n-per-class", "--cifar10 PATH", "{digits,cifar10-subset,cifar10}"):
        assert text in out


def test_print_command_shows_environment(capsys):
    assert launcher.main(["--print-command", "--n-per-class", "6", "--notebook", "03_cifar10_regression.ipynb"]) == 0
    out = capsys.readouterr().out
    assert "CNTK_LAB_N_PER_CLASS=6" in out and "--LabApp.default_url=/lab/tree/03_cifar10_regression.ipynb" in out


# ----------------------------------------------------------------------------- signals (a fake server)
FAKE_SERVER = """
import os, signal, subprocess, sys, time
state, mode = sys.argv[1], sys.argv[2]
child = subprocess.Popen(["sleep", "120"])  # a worker in the server's process group
def on_signal(signum, frame):
    with open(os.path.join(state, "signal"), "w") as f:
        f.write(str(signum))
    if mode == "clean":  # as Jupyter's clean stop: its kernels first
        child.terminate()
        sys.exit(0)
signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)
with open(os.path.join(state, "pids.tmp"), "w") as f:
    f.write(f"{os.getpid()} {child.pid}")
os.replace(os.path.join(state, "pids.tmp"), os.path.join(state, "pids"))
while True:
    time.sleep(0.1)
"""

WRAPPER = """
import sys
from pathlib import Path
import cntk_widgets.__main__ as m
server, state, mode = sys.argv[1:4]
m.STOP_TIMEOUT = 1.5
m.build_command = lambda args: ([sys.executable, "-c", server, state, mode], Path(state))
sys.exit(m.main(["--no-browser"]))
"""


def _start_with_fake_server(tmp_path: Path, mode: str):
    proc = subprocess.Popen(
        [sys.executable, "-c", WRAPPER, FAKE_SERVER, str(tmp_path), mode],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a signal to the launcher alone, not to the group (as `kill PID` does)
    )
    pids = wait_for(lambda: (tmp_path / "pids").is_file() and (tmp_path / "pids").read_text(), 30, "the fake server")
    return proc, [int(p) for p in pids.split()]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_stops_the_server_and_its_group(tmp_path, sig):
    proc, (server, worker) = _start_with_fake_server(tmp_path, "clean")
    try:
        os.kill(proc.pid, sig)
        assert proc.wait(timeout=15) == 128 + sig
        assert (tmp_path / "signal").read_text() == str(int(signal.SIGTERM))  # Jupyter's clean-stop signal
        wait_for(lambda: not alive(server) and not alive(worker), 10, "server and worker to exit")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in (server, worker):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_server_ignoring_sigterm_is_killed(tmp_path):
    proc, (server, worker) = _start_with_fake_server(tmp_path, "stubborn")
    try:
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=15) == 128 + signal.SIGTERM
        assert 1.0 < time.monotonic() - t0 < 10  # STOP_TIMEOUT = 1.5 s, then SIGKILL
        wait_for(lambda: not alive(server) and not alive(worker), 10, "server and worker to be killed")
    finally:
        for pid in (server, worker):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("target", ["launcher", "its process group"])
def test_a_sigkilled_launcher_takes_the_server_down(tmp_path, target):
    """SIGKILL runs no handler, and the server has a session of its own (a group kill misses it): without
    the parent-death signal the server and its kernels would run on, orphaned."""
    proc, (server, worker) = _start_with_fake_server(tmp_path, "clean")
    try:
        if target == "launcher":
            os.kill(proc.pid, signal.SIGKILL)
        else:  # what a harness or a terminal's hang-up does
            os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
        wait_for(lambda: not alive(server) and not alive(worker), 5, "the server to stop with its launcher")
        assert (tmp_path / "signal").read_text() == str(int(signal.SIGTERM))  # the clean stop, not a kill
    finally:
        for pid in (server, worker):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


# ----------------------------------------------------------------------------- a real JupyterLab
class _Lines:
    """Collect a process's output lines in a thread (so reading never blocks the test)."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream):
        for raw in stream:
            self.lines.append(raw.decode(errors="replace"))

    def text(self) -> str:
        return "".join(self.lines)


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read()


def test_real_jupyterlab_url_news_default_and_sigterm(tmp_path):
    pytest.importorskip("jupyterlab")
    port = free_port()
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"), JUPYTER_CONFIG_DIR=str(tmp_path / "cfg"))
    env["JUPYTERLAB_SETTINGS_DIR"] = str(tmp_path / "settings")
    env["JUPYTERLAB_WORKSPACES_DIR"] = str(tmp_path / "ws")
    env.pop("JUPYTER_CONFIG_PATH", None)
    # the user's own notification setting: must still hold, and the file must stay as it was
    user_file = tmp_path / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    user_file.parent.mkdir(parents=True)
    user_file.write_text('{"checkForUpdates": true}')
    proc = subprocess.Popen(
        [sys.executable, "-m", "cntk_widgets", "--no-browser", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    out = _Lines(proc.stdout)
    try:
        pattern = rf"http://127\.0\.0\.1:{port}(/\S*)\?token=([0-9a-f]+)"
        match = wait_for(lambda: proc.poll() is None and re.search(pattern, out.text()), 60, "the server's URL")
        path, token = match.groups()
        assert path == "/lab/tree/02_cntk_explorer.ipynb", out.text()[-3000:]
        status, body = _get(f"http://127.0.0.1:{port}{path}?token={token}")
        assert status == 200 and b"JupyterLab" in body

        settings = f"http://127.0.0.1:{port}/lab/api/settings/@jupyterlab/apputils-extension:notification"
        got = json.loads(_get(f"{settings}?token={token}")[1])
        assert got["schema"]["properties"]["fetchNews"]["default"] == "false"  # no "get notified?" question
        assert json.loads(got["raw"]) == {"checkForUpdates": True}  # the user's own choice is kept
        assert user_file.read_text() == '{"checkForUpdates": true}'

        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/kernels?token={token}", data=b'{"name": "python3"}', method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            kernel_id = json.loads(r.read())["id"]
        kernel_pid = wait_for(lambda: _pid_with(f"kernel-{kernel_id}.json"), 30, "the kernel process")
        server_pid = wait_for(lambda: _pid_with("-m jupyterlab", f"--port={port}"), 10, "the server process")

        os.kill(proc.pid, signal.SIGTERM)  # the launcher only, as a service manager or `kill` would
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
        wait_for(lambda: not alive(server_pid) and not alive(kernel_pid), 20, "server and kernel to stop")
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            _get(f"http://127.0.0.1:{port}/api/status?token={token}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for args in (("-m jupyterlab", f"--port={port}"), ("ipykernel_launcher", str(tmp_path / "rt"))):
            pid = _pid_with(*args)
            if pid:
                os.kill(pid, signal.SIGKILL)


def _pid_with(text: str, also: str | None = None) -> int | None:
    """A live process whose command line contains ``text`` (and ``also``, when given); None if none."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and (also is None or also in cmdline) and alive(int(entry.name)):
            return int(entry.name)
    return None
