"""Shared test setup: make ``tests/`` importable (for the reference); an isolated data cache; fake CIFAR-10."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


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
