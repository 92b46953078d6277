"""The kernel explorer's model: the background pass to the slider's deepest depth, requests that wait
for it, the on-disk cache across sessions, and the error a user sees naming the depth they chose."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import cntk_core
import cntk_widgets.explorer_model as em
from cntk_widgets import ArchitectureModel, KernelExplorerModel, NetworkSpec
from cntk_widgets.kernel_cache import KernelDiskCache


@pytest.fixture
def images():
    rng = np.random.default_rng(7)
    return rng.standard_normal((8, 5, 5, 2)), np.arange(8) % 3


def _expected(x, spec: NetworkSpec) -> np.ndarray:
    k = cntk_core.kernel_matrix(
        x, depth=spec.depth, readout=spec.readout, fix_first=spec.fix_first, fix_last=spec.fix_last, kind=spec.kind
    )
    d = np.sqrt(np.diag(k))
    return k / np.outer(d, d)


def _model(images, tmp_path, **kw):
    x, y = images
    kw.setdefault("disk_cache", KernelDiskCache(tmp_path / "kernels"))
    return KernelExplorerModel(x, y, autostart=False, **kw)


def test_background_pass_fills_every_depth_up_to_the_slider_end(images, tmp_path):
    arch = ArchitectureModel(depth=3, readout="vanilla")
    m = _model(images, tmp_path, architecture=arch, prefetch_depth=7)
    events = []
    m.on_change(lambda e, _m: events.append(e))
    m.compute()
    first = m.wait()
    assert first.spec.depth == 3 and first.source == "computed"
    m.wait(background=True)
    assert "background-done" in events and not m.background
    order = np.argsort(images[1], kind="stable")
    for d in range(2, 8):
        spec = NetworkSpec(depth=d, readout="vanilla")
        assert spec in m.cache
        np.testing.assert_allclose(m.cache[spec].normalized, _expected(images[0][order], spec), rtol=1e-10)
    arch.set(depth=6)  # a slider move after the pass: a cache hit, no new job
    assert m.result.spec.depth == 6 and m.result.source == "memory" and not m.busy
    m.close()


def test_a_request_during_the_background_pass_waits_for_it(images, tmp_path, monkeypatch):
    release = threading.Event()
    calls = []

    def gated(*args, depths, **kw):
        calls.append(max(depths))
        if max(depths) == 9:  # the background pass: hold it until the request below is made
            assert release.wait(30)
        return cntk_core.kernel_matrices(*args, depths=depths, **kw)

    monkeypatch.setattr(em, "kernel_matrices", gated)
    arch = ArchitectureModel(depth=3)
    m = _model(images, tmp_path, architecture=arch, prefetch_depth=9)
    events = []
    m.on_change(lambda e, _m: events.append(e))
    m.compute()
    m.wait()
    assert m.background
    arch.set(depth=8)  # covered by the running pass: no new computation
    assert m.pending == NetworkSpec(depth=8) and events[-1] == "waiting" and m.result.spec.depth == 3
    release.set()
    shown = m.wait()
    assert shown.spec.depth == 8 and shown.source == "background" and m.pending is None
    # the first picture's chunks, then the background pass's, which served the request at the end of its
    # first row block: the other rows to depth 8 only (tests/test_explorer_speed.py), then goes on to 9
    seen = list(calls)
    assert seen[0] == 3 and set(seen) == {3, 8, 9} and seen.index(9) < seen.index(8)
    order = np.argsort(images[1], kind="stable")
    np.testing.assert_allclose(shown.normalized, _expected(images[0][order], NetworkSpec(depth=8)), rtol=1e-10)
    m.close()


def test_a_request_outside_the_background_pass_replaces_it(images, tmp_path, monkeypatch):
    release = threading.Event()

    def gated(*args, depths, **kw):
        if max(depths) == 9 and kw["readout"] == "gap":
            release.wait(30)
        return cntk_core.kernel_matrices(*args, depths=depths, **kw)

    monkeypatch.setattr(em, "kernel_matrices", gated)
    arch = ArchitectureModel(depth=3)
    m = _model(images, tmp_path, architecture=arch, prefetch_depth=9)
    m.compute()
    m.wait()
    assert m.background
    arch.set(readout="vanilla", depth=4)  # another family: the background pass is dropped
    release.set()
    shown = m.wait()
    assert shown.spec == NetworkSpec(depth=4, readout="vanilla") and shown.source == "computed"
    m.wait(background=True)
    assert NetworkSpec(depth=9, readout="vanilla") in m.cache  # the new family's own background pass
    m.close()


def test_a_second_session_reads_the_disk_cache(images, tmp_path, monkeypatch):
    first = _model(images, tmp_path, synchronous=True, architecture=ArchitectureModel(depth=4))
    first.compute()
    computed = first.result
    assert computed.source == "computed"

    def forbidden(*_a, **_k):
        raise AssertionError("the second session must not compute")

    monkeypatch.setattr(em, "kernel_matrices", forbidden)
    again = _model(images, tmp_path, synchronous=True, architecture=ArchitectureModel(depth=4))
    again.compute()
    assert again.error is None and again.result.source == "disk" and again.disk_hits == 1
    np.testing.assert_array_equal(again.result.raw, computed.raw)
    again.compute(NetworkSpec(depth=3))  # computed on the way to depth 4: on disk too
    assert again.result.source == "disk"
    other = _model((images[0] * 2, images[1]), tmp_path, synchronous=True, architecture=ArchitectureModel(depth=4))
    other.compute()  # other images: never the first session's kernel
    assert other.result is None and "must not compute" in other.error


def test_a_damaged_disk_entry_is_recomputed(images, tmp_path):
    cache = KernelDiskCache(tmp_path / "kernels")
    first = _model(images, tmp_path, synchronous=True, disk_cache=cache)
    first.compute()
    for path in (tmp_path / "kernels").glob("*.kgram"):
        data = bytearray(path.read_bytes())
        data[-5] ^= 0xFF
        path.write_bytes(bytes(data))
    again = _model(images, tmp_path, synchronous=True, disk_cache=KernelDiskCache(tmp_path / "kernels"))
    again.compute()
    assert again.result.source == "computed" and again.disk_cache.damaged == 1
    np.testing.assert_array_equal(again.result.raw, first.result.raw)


def test_no_disk_cache_with_a_test_kernel_function(images, tmp_path, monkeypatch):
    monkeypatch.setenv("CNTK_DATA_DIR", str(tmp_path / "data"))
    x, y = images
    m = KernelExplorerModel(x, y, synchronous=True, kernel_fn=lambda s, imgs, ctx: np.eye(len(imgs)) + 1)
    assert m.disk_cache is None and m.error is None and not (tmp_path / "data").exists()


def test_the_error_names_the_depth_the_user_chose(images, tmp_path):
    x, y = images
    m = _model((x * 1e-170, y), tmp_path, synchronous=True, architecture=ArchitectureModel(depth=3))
    m.compute()
    assert "CNTK-GAP-3:" in m.error and "GAP-2" not in m.error


def test_the_background_pass_needs_an_asynchronous_model(images, tmp_path):
    m = _model(images, tmp_path, synchronous=True, prefetch_depth=6)
    m.compute()
    assert not m.background and set(m.cache) == {NetworkSpec(depth=2), NetworkSpec(depth=3)}
