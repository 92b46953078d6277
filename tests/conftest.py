"""Shared test setup: make ``tests/`` importable (helper modules such as :mod:`cifar_fake`); an isolated
data cache; fake CIFAR-10; and the helpers every test file uses (import them from here)::

    from conftest import cli_result, make_images, one_hot, raises_param, rel_err, spd_matrix
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


# -- helpers: images, matrices, errors ---------------------------------------------------------------
def make_images(n: int, shape: tuple[int, ...] = (8, 8, 3), seed: int = 0, scale: float = 1.0) -> np.ndarray:
    """``n`` float64 NHWC images of standard normal pixels (times ``scale``), reproducible by ``seed``:
    ``scale * default_rng(seed).standard_normal((n, *shape))``."""
    x = np.random.default_rng(seed).standard_normal((n, *shape))
    return x if scale == 1.0 else x * scale


def spd_matrix(n: int, seed: int = 0, boost: float = 1.0) -> np.ndarray:
    """A random symmetric positive-definite ``n x n`` matrix, ``A A^T / n + boost I`` (a kernel stand-in)."""
    a = np.random.default_rng(seed).standard_normal((n, n))
    return a @ a.T / n + boost * np.eye(n)


def one_hot(y, n_classes: int) -> np.ndarray:
    """The paper's regression targets, written out independently: 0.9 for the class, -0.1 elsewhere."""
    targets = -0.1 * np.ones((len(y), n_classes))
    for i, label in enumerate(y):
        targets[i, label] = 0.9
    return targets


def rel_err(got, ref, floor: float = 1e-3) -> float:
    """The largest entrywise relative error of ``got`` against ``ref``. Entries of ``ref`` smaller than
    ``floor`` times its largest are measured against that floor instead (near-zero entries), so
    ``floor=1`` gives ``max|got - ref| / max|ref|``. An all-zero ``ref`` gives ``max|got|``."""
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    top = np.abs(ref).max()
    if top == 0:  # e.g. depth 2 with both layers fixed: nothing is trained, Theta == 0
        return float(np.abs(got).max())
    return float(np.max(np.abs(got - ref) / np.maximum(np.abs(ref), floor * top)))


@contextlib.contextmanager
def raises_param(
    param: str, error: type[Exception] | tuple[type[Exception], ...] | None = None, match: str | None = None
):
    """``pytest.raises`` for a refused argument: the error is ``error`` (by default
    :class:`cntk_core.validation.ParameterError`; pass ``ParameterTypeError`` for a wrong type) and names
    ``param`` in its ``.param``. Pass ``match`` only where the wording itself is the point (a hint on
    what to do, a count the user must see)."""
    if error is None:
        from cntk_core.validation import ParameterError as error  # not at import: conftest sets the env first
    with pytest.raises(error, match=match) as info:
        yield info
    assert getattr(info.value, "param", None) == param, (
        f"the error names {getattr(info.value, 'param', None)!r}, not {param!r}: {info.value}"
    )


def cli_result(stdout: str) -> dict:
    """The record of ``cntk-lab regress`` / ``gram``: the JSON after ``RESULT `` on the last line of its
    output, which must be the only such line."""
    from cntk_core.cli import RESULT_PREFIX

    lines = [ln for ln in stdout.strip().splitlines() if ln.strip()]
    assert lines and lines[-1].startswith(RESULT_PREFIX), lines[-1:]
    assert sum(ln.startswith(RESULT_PREFIX) for ln in lines) == 1, lines
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


# -- data: never the user's cache; fake CIFAR-10 tarballs --------------------------------------------
_SESSION_CACHE: str | None = None


def pytest_configure(config):
    """Tests never read or write the user's data cache: unless CNTK_DATA_DIR is set, it is a fresh folder
    for the session (subprocesses inherit it). The reference CIFAR-10 subset files, where a machine keeps
    them beside the checkout (``../shared/data/cifar10``: the project's CI and benchmark machines), are
    used through CNTK_CIFAR10_SUBSET exactly as a user's own folder would be; tests that need them skip
    without them."""
    global _SESSION_CACHE
    if not os.environ.get("CNTK_DATA_DIR"):
        _SESSION_CACHE = tempfile.mkdtemp(prefix="cntk-test-cache-")
        os.environ["CNTK_DATA_DIR"] = _SESSION_CACHE
    reference = TESTS.parent.parent / "shared" / "data" / "cifar10"
    if not os.environ.get("CNTK_CIFAR10_SUBSET") and (reference / "cifar10_exact_train4000.npz").is_file():
        os.environ["CNTK_CIFAR10_SUBSET"] = str(reference)


def pytest_unconfigure(config):
    if _SESSION_CACHE is not None:
        shutil.rmtree(_SESSION_CACHE, ignore_errors=True)


@pytest.fixture(scope="module")
def one_blas_thread():
    """One BLAS thread for a module (``pytestmark = pytest.mark.usefixtures("one_blas_thread")``): the
    small matmuls of the finite-net tests run far faster single-threaded on a shared 2-core machine
    (no spin-waiting)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


@pytest.fixture(scope="session")
def fake_cifar10(tmp_path_factory):
    """A small fake ``cifar-10-python.tar.gz`` in the official format (20 train / 5 test images), see
    :mod:`cifar_fake`; ``.md5`` / ``.sha256`` for the checksum overrides, ``.extract(folder)``."""
    from cifar_fake import make_fake_cifar10

    return make_fake_cifar10(tmp_path_factory.mktemp("fake-cifar10"))


@pytest.fixture
def data_cache(tmp_path, monkeypatch):
    """An empty per-test data cache (CNTK_DATA_DIR) with no CIFAR-10 overrides set."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("CNTK_DATA_DIR", str(cache))
    for name in ("CNTK_CIFAR10", "CNTK_CIFAR10_SUBSET", "CNTK_CIFAR10_URL"):
        monkeypatch.delenv(name, raising=False)
    return cache


@pytest.fixture(autouse=True)
def _private_cache_dir(tmp_path_factory, monkeypatch):
    """Each test gets its own empty data/kernel cache (``CNTK_DATA_DIR``): tests never read or write
    the user's ``~/.cache/cntk-lab``, and no test sees another's cached kernels."""
    monkeypatch.setenv("CNTK_DATA_DIR", str(tmp_path_factory.mktemp("cntk-cache")))
