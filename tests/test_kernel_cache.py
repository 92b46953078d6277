"""The lab's on-disk kernel cache (cntk_widgets.kernel_cache): round trips, keys, and faults injected
into its files (killed writers, concurrent writers, truncated and flipped bytes, unusable folders).
A damaged entry must be a miss (recomputed), never a wrong matrix."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import spd_matrix

from cntk_widgets.kernel_cache import MAGIC, SUFFIX, KernelDiskCache, entry_key, images_fingerprint


def test_round_trip_is_bit_identical(tmp_path):
    cache = KernelDiskCache(tmp_path)
    k = spd_matrix(5)
    assert cache.get("a" * 64) is None and cache.misses == 1
    assert cache.put("a" * 64, k, what="test")
    got = cache.get("a" * 64)
    assert got.dtype == np.float64 and np.array_equal(got, k) and cache.hits == 1


def test_keys_separate_images_architectures_and_dtypes():
    x = np.arange(24.0).reshape(2, 2, 2, 3)
    fp = images_fingerprint(x)
    assert fp != images_fingerprint(x[::-1]) and fp != images_fingerprint(x.astype(np.float32))
    assert fp != images_fingerprint(x.reshape(2, 2, 3, 2))  # same bytes, another shape
    keys = {
        entry_key(fp, {"spec": {"depth": 3}, "dtype": "float64"}),
        entry_key(fp, {"spec": {"depth": 4}, "dtype": "float64"}),
        entry_key(fp, {"spec": {"depth": 3}, "dtype": "float32"}),
        entry_key(images_fingerprint(x + 1), {"spec": {"depth": 3}, "dtype": "float64"}),
    }
    assert len(keys) == 4


@pytest.mark.parametrize(
    "damage",
    ["truncate-payload", "truncate-header", "flip-payload", "flip-header", "empty", "garbage", "wrong-shape"],
)
def test_damaged_entries_are_misses_and_removed(tmp_path, damage):
    cache = KernelDiskCache(tmp_path)
    k = spd_matrix(6)
    cache.put("k" * 64, k)
    path = cache.path("k" * 64)
    data = bytearray(path.read_bytes())
    header_end = data.index(b"\n", len(MAGIC))
    if damage == "truncate-payload":
        data = data[:-8]
    elif damage == "truncate-header":
        data = data[: header_end - 3]
    elif damage == "flip-payload":
        data[header_end + 1 + 17] ^= 0x10
    elif damage == "flip-header":
        data[len(MAGIC) + 3] ^= 0x01
    elif damage == "empty":
        data = bytearray()
    elif damage == "garbage":
        data = bytearray(os.urandom(200))
    elif damage == "wrong-shape":  # a consistent file whose header claims another shape than its bytes
        data = data.replace(b"[6, 6]", b"[5, 6]", 1)
    path.write_bytes(bytes(data))
    assert cache.get("k" * 64) is None
    assert cache.damaged == 1 and not path.exists()
    cache.put("k" * 64, k)  # the recomputed kernel is stored again
    assert np.array_equal(cache.get("k" * 64), k)


def test_a_killed_writer_leaves_no_entry(tmp_path):
    """A writer killed while writing (after the temporary file is open, before the rename)."""
    code = textwrap.dedent(
        f"""
        import os, signal, numpy as np
        import cntk_widgets.kernel_cache as kc
        real_fsync = os.fsync
        def die(fd):
            os.kill(os.getpid(), signal.SIGKILL)
        kc.os.fsync = die
        kc.KernelDiskCache({str(tmp_path)!r}).put("z" * 64, np.ones((300, 300)))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    cache = KernelDiskCache(tmp_path)
    leftovers = list(tmp_path.glob(f".tmp-*{SUFFIX}"))
    assert leftovers and cache.get("z" * 64) is None and cache.damaged == 0  # never seen as an entry
    assert cache.clean(stale_seconds=-1) == len(leftovers) and not list(tmp_path.glob(".tmp-*"))


def test_concurrent_writers_of_one_key(tmp_path):
    """Four processes write the same entry at the same time, many rounds: every read is whole."""
    code = textwrap.dedent(
        f"""
        import sys, numpy as np
        from cntk_widgets.kernel_cache import KernelDiskCache
        cache = KernelDiskCache({str(tmp_path)!r})
        k = np.arange(40000, dtype=float).reshape(200, 200)
        for _ in range(30):
            cache.put("c" * 64, k)
            got = cache.get("c" * 64)
            assert got is not None and np.array_equal(got, k), "torn read"
        print(cache.damaged)
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0] * 4 and outs == ["0"] * 4
    assert not list(tmp_path.glob(".tmp-*"))


def test_unusable_folder_turns_the_cache_off_with_one_warning(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cache = KernelDiskCache(blocker / "kernels")
    with pytest.warns(RuntimeWarning, match="not usable"):
        assert cache.put("a" * 64, spd_matrix(5)) is False
    assert not cache.enabled and cache.get("a" * 64) is None
    assert cache.put("a" * 64, spd_matrix(5)) is False  # no second warning: already off


def test_size_limit_drops_least_recently_used(tmp_path):
    k = spd_matrix(40)  # 12.8 kB per entry
    cache = KernelDiskCache(tmp_path, max_bytes=4 * k.nbytes + 2000)  # room for four entries
    for name in "abcd":
        cache.put(name * 64, k)
        os.utime(cache.path(name * 64), (1e9 + ord(name), 1e9 + ord(name)))  # a, b, c, d: oldest to newest
    cache.get("a" * 64)  # used again: now the newest
    cache.put("e" * 64, k)
    kept = {p.name[0] for p in tmp_path.glob(f"*{SUFFIX}")}
    assert kept == {"a", "c", "d", "e"}
