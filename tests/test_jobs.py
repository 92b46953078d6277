"""The lab's job runner (cntk_widgets.jobs.JobRunner): its first engine call from a worker thread while
IPython changes builtins (issue: an intermittent "dictionary changed size during iteration" on Run All).

Numba builds its CPU target on first use, and that walks ``builtins.__dict__``. IPython adds and
removes builtins at every cell boundary. Each round runs in a fresh interpreter (fresh Numba
state): a worker makes the first engine call while the main thread keeps adding and removing a
builtin, as cell boundaries do. To make the race certain instead of one-in-a-few, Numba's symbol
registration is slowed down (it sleeps, releasing the GIL, between symbols), so the walk spans
many builtin changes. The control (a bare thread, as before the fix) must fail every round; the
lab's :class:`~cntk_widgets.jobs.JobRunner` must pass every round.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

ROUND = textwrap.dedent(
    """
    import builtins, sys, threading, time
    import numpy as np
    import numba.core.base as base

    assert not base._load_global_helpers._ran, "Numba's CPU target was built at import"
    slow = base.ll.add_symbol
    def add_symbol(name, address):  # widen the race window: release the GIL between symbols
        time.sleep(0.0005)
        return slow(name, address)
    base.ll.add_symbol = add_symbol

    MODE = sys.argv[1]
    sys.setswitchinterval(1e-4)  # GIL hand-overs every 0.1 ms, not 5: each slowed symbol costs that, not more
    outcome = {}

    def job(ctx=None):
        import cntk_core
        return cntk_core.kernel_matrix(np.ones((2, 3, 3, 1)), depth=2, backend="numba", progress=False)

    if MODE == "bare-thread":  # what the lab did before: the worker makes the first call
        def target():
            try:
                outcome["result"] = job()
            except Exception as exc:
                outcome["error"] = f"{type(exc).__name__}: {exc}"
        worker = threading.Thread(target=target)
        worker.start()
        busy = worker.is_alive
    else:
        from cntk_widgets.jobs import JobRunner
        runner = JobRunner(on_result=lambda r: outcome.setdefault("result", r),
                           on_error=lambda m: outcome.setdefault("error", m))
        runner.submit(job)
        busy = lambda: runner.busy or not outcome

    changes = 0
    while busy():  # IPython's BuiltinTrap: builtins come and go at cell boundaries
        setattr(builtins, "_cntk_cell_probe", changes)
        delattr(builtins, "_cntk_cell_probe")
        changes += 1
    print("ERROR" if "error" in outcome else "OK", outcome.get("error", ""), changes)
    """
)


def _round(mode: str) -> str:
    proc = subprocess.run([sys.executable, "-c", ROUND, mode], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_first_engine_call_from_a_worker_survives_changing_builtins():
    control = [_round("bare-thread") for _ in range(2)]
    assert all("dictionary changed size during iteration" in line for line in control), (
        "the harness no longer reproduces the race (so it cannot show the fix works):\n" + "\n".join(control)
    )
    lab = [_round("job-runner") for _ in range(4)]
    failures = [line for line in lab if not line.startswith("OK")]
    assert not failures, failures


def test_job_runner_builds_numba_target_on_its_own_thread():
    code = (
        "import numba.core.base as b\n"
        "from cntk_widgets.jobs import JobRunner\n"
        "assert not b._load_global_helpers._ran\n"
        "JobRunner(synchronous=True)\n"
        "print(b._load_global_helpers._ran)\n"
        "JobRunner()\n"
        "print(b._load_global_helpers._ran)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["False", "True"]  # a synchronous runner starts no thread and needs nothing
