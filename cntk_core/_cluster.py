"""Dask plumbing of :mod:`cntk_core.distributed`: schedulers, the backend check on workers, quiet
Ctrl-C and the progress bar."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import re
import signal
import threading

from .validation import ParameterError, ParameterTypeError, check_flag

#: a Dask scheduler address: [scheme://]host:port (the port optional with a scheme), host a name,
#: an IPv4 address or a bracketed IPv6 address (with an optional %zone); or inproc://anything
_HOST = r"([^\s:/\[\]%]+|\[[0-9A-Fa-f:.]+(%\w+)?\])"
#: schedulers named by a word (besides ``None``: a local cluster; a ``Client``; an address)
SCHEDULER_NAMES = ("synchronous", "cuda")
ADDRESS_PATTERN = rf"[a-z0-9+]+://{_HOST}(:\d+)?/?|{_HOST}:\d+|inproc://\S+"
#: how long a scheduler address may take to answer before the job fails (with nothing created)
CONNECT_TIMEOUT = "30s"
#: loggers silenced while a Ctrl-C tears a cluster down (their warnings would bury the one-line note)
_NOISY = ("distributed", "tornado", "asyncio", "bokeh")


def is_remote(scheduler) -> bool:
    """A scheduler whose workers may be other machines: an address or a given ``Client``."""
    return scheduler is not None and scheduler not in SCHEDULER_NAMES


def check_progress(progress) -> None:
    """``progress`` must be True, False, None or a callable ``(done, total)``."""
    if callable(progress):
        return
    try:
        check_flag(progress, "progress", allow_none=True)
    except TypeError:
        raise ParameterTypeError(
            "progress", f"progress must be True, False, None or a callable (done, total), got {progress!r}"
        ) from None


def check_scheduler(scheduler) -> None:
    """Type of ``scheduler``, the form of an address and, for ``"cuda"``, that dask-cuda is importable
    (before any work: a mistyped name must not leave a half-created store behind)."""
    if isinstance(scheduler, str) and scheduler not in SCHEDULER_NAMES:
        if not re.fullmatch(ADDRESS_PATTERN, scheduler):
            raise ParameterError(
                "scheduler",
                "scheduler must be 'synchronous', 'cuda' or the address of a running Dask scheduler such as "
                f"'tcp://host:8786', got {scheduler!r}",
            )
    if scheduler is None or isinstance(scheduler, str):
        if scheduler == "cuda" and importlib.util.find_spec("dask_cuda") is None:
            raise ImportError(
                "scheduler='cuda' needs dask-cuda (pip install dask-cuda, or conda install -c rapidsai dask-cuda); "
                "alternatively start dask-cuda-worker processes yourself and pass the scheduler address"
            )
        return
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - distributed is a dependency
        Client = ()
    if not isinstance(scheduler, Client):
        raise ParameterTypeError(
            "scheduler",
            "scheduler must be None (LocalCluster), 'cuda', 'synchronous', a scheduler address string or a "
            f"distributed.Client, got {type(scheduler).__name__}",
        )


def worker_backend(backend: str | None) -> str:
    """The backend a worker would use for ``backend``, or ``"error: ..."`` (run on each worker)."""
    from .backend import resolve_backend

    try:
        return resolve_backend(backend)
    except Exception as exc:
        return f"error: {type(exc).__name__}: {exc}"


def check_backend(client, backend: str | None, label: str) -> None:
    """Before anything is written: ``backend`` must be usable here (``client=None``) or on every
    worker of ``client`` (``RuntimeError`` naming the workers that cannot use it)."""
    if client is None:
        answers = {"this machine": worker_backend(backend)}
    else:
        answers = client.run(worker_backend, backend)
    bad = {where: answer for where, answer in answers.items() if answer.startswith("error: ")}
    if bad:
        where, answer = next(iter(bad.items()))
        others = f" (and {len(bad) - 1} more workers)" if len(bad) > 1 else ""
        of = "" if client is None else f" of {label}"
        raise RuntimeError(
            f"backend {backend!r} is not usable on {where}{others}{of}: {answer[len('error: ') :]}; "
            "choose another backend (or None: each worker picks its best). Nothing was created or computed."
        )


def _ignore_interrupt_setup(self, worker=None):
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@functools.cache
def _plugin_class():
    """``IgnoreInterrupt``, a ``distributed.WorkerPlugin``: a worker restarted by its nanny ignores
    SIGINT like the first ones (Ctrl-C is the driver's to handle; a worker's traceback would bury its
    one-line note). Built on first use, so that importing this module does not import distributed."""
    from distributed import WorkerPlugin

    attrs = {"name": "cntk-ignore-sigint", "setup": _ignore_interrupt_setup, "__module__": __name__}
    return type("IgnoreInterrupt", (WorkerPlugin,), attrs)


def __getattr__(name: str):
    if name == "IgnoreInterrupt":  # how a worker unpickles the plugin
        return _plugin_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@contextlib.contextmanager
def _workers_ignore_interrupt():
    """Processes spawned inside inherit an ignored SIGINT (kept across exec; Python keeps it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


class _InterruptedSyncFilter(logging.Filter):
    """Drops one known record: interrupted before its future exists, ``distributed.utils.sync``'s
    cancel callback raises ``NameError: ... 'future' ...`` on the event loop, which tornado logs as an
    application error at the moment of the Ctrl-C (before any handler of ours runs). Nothing was lost;
    the user sees the one line on how to resume instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (isinstance(exc, NameError) and "'future'" in str(exc))


@contextlib.contextmanager
def quiet_on_interrupt():
    """On ``KeyboardInterrupt``: silence Dask's loggers before the cluster is torn down (and drop,
    from then on, the one record an interrupt can race into tornado's log)."""
    tornado_log = logging.getLogger("tornado.application")
    if not any(isinstance(f, _InterruptedSyncFilter) for f in tornado_log.filters):
        tornado_log.addFilter(_InterruptedSyncFilter())  # kept: the loop may log after we have returned
    try:
        yield
    except KeyboardInterrupt:
        for name in _NOISY:
            logging.getLogger(name).setLevel(logging.CRITICAL + 1)
        raise


@contextlib.contextmanager
def client_for(scheduler, n_workers):
    """Yield ``(client, label)``; closes whatever it started. Local clusters' workers ignore SIGINT."""
    from distributed import Client

    if isinstance(scheduler, Client):
        yield scheduler, label_of(scheduler)
        return
    if scheduler is None:
        from distributed import LocalCluster

        n = n_workers or os.cpu_count() or 1
        threads = str(max(1, (os.cpu_count() or 1) // n))
        env = {"NUMBA_NUM_THREADS": threads, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        with _workers_ignore_interrupt():
            cluster = LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=":0",
                env=env,
                silence_logs=logging.ERROR,  # a task's failure reaches the driver as its exception
            )
        with cluster, Client(cluster) as client, quiet_on_interrupt():
            _register_ignore_interrupt(client)
            yield client, "LocalCluster"
        return
    if scheduler == "cuda":
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            raise ImportError(
                "scheduler='cuda' needs dask-cuda (pip install dask-cuda, or conda install -c rapidsai dask-cuda); "
                "alternatively start workers yourself and pass the scheduler address"
            ) from None
        with _workers_ignore_interrupt():
            cluster = LocalCUDACluster(
                n_workers=n_workers, host="127.0.0.1", dashboard_address=":0", silence_logs=logging.ERROR
            )
        with cluster, Client(cluster) as client, quiet_on_interrupt():
            _register_ignore_interrupt(client)
            yield client, "LocalCUDACluster"
        return
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT)
    except OSError as exc:
        raise OSError(f"cannot connect to the Dask scheduler at {scheduler!r} (nothing was created): {exc}") from exc
    with client, quiet_on_interrupt():
        yield client, scheduler


def _register_ignore_interrupt(client) -> None:
    with contextlib.suppress(Exception):  # a nicety: never a reason to fail the job
        client.register_plugin(_plugin_class()())


def label_of(scheduler) -> str:
    if scheduler is None:
        return "LocalCluster"
    if scheduler == "cuda":
        return "LocalCUDACluster"
    if isinstance(scheduler, str):
        return scheduler
    return f"Client({getattr(scheduler, 'scheduler', None) and scheduler.scheduler.address})"


def make_progress(progress, total: int, initial: int):
    """A function ``f(n)``: advance by ``n`` tiles; ``f(None)`` closes the bar."""
    if callable(progress):
        state = {"done": initial}

        def call(n):
            if n is not None:
                state["done"] += n
                progress(state["done"], total + initial)

        return call
    if progress is None:
        progress = total > 4
    if not progress or total == 0:
        return lambda n: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total + initial, initial=initial, unit="tile", desc="Gram tiles", smoothing=0.1)

    def update(n):
        if n is None:
            bar.close()
        else:
            bar.update(n)

    return update
