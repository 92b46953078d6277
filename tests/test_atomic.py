"""The one atomic-write helper (cntk_core._atomic) that the CLI's --out, the Gram store's metadata, the
subset builder and the CIFAR digest list share (four hand-written copies before)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from cntk_core import _atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "K.npy"
    _atomic.save_npy_atomic(target, np.arange(3.0))
    with pytest.raises(ValueError, match="Object arrays cannot be saved"):  # no pickles
        _atomic.save_npy_atomic(target, np.array([{}], dtype=object))
    assert np.array_equal(np.load(target), np.arange(3.0)) and os.listdir(tmp_path) == ["K.npy"]
    with pytest.raises(RuntimeError), _atomic.atomic_file(target) as f:
        f.write(b"half")
        raise RuntimeError
    assert np.array_equal(np.load(target), np.arange(3.0)) and os.listdir(tmp_path) == ["K.npy"]


def test_the_temporary_name_is_short_its_pattern_and_mode_chosen_by_the_caller(tmp_path):
    long = tmp_path / ("k" * 251 + ".npy")  # a legal 255-byte name: a longer temporary one would fail
    _atomic.write_atomic(long, b"x")
    seen = []
    with _atomic.atomic_file(tmp_path / "s.json", prefix=".s.json.", suffix=".part", mode=0o640) as f:
        seen += [p.name for p in tmp_path.iterdir() if p.name.startswith(".s.json.")]
        f.write(b"{}")
    assert len(seen) == 1 and seen[0].endswith(".part")
    assert (tmp_path / "s.json").stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == [long.name, "s.json"]


def test_publish_exclusive_has_one_winner_and_never_overwrites(tmp_path):
    target = tmp_path / "zarr.json"
    assert _atomic.publish_exclusive(target, b"first") is True
    assert _atomic.publish_exclusive(target, b"second") is False
    assert target.read_bytes() == b"first" and os.listdir(tmp_path) == ["zarr.json"]


def test_name_too_long_names_the_component(tmp_path):
    assert _atomic.name_too_long(tmp_path / "ok" / "K.npy") is None
    part, size, name_max = _atomic.name_too_long(tmp_path / ("d" * 300) / "K.npy")
    assert (part, size) == ("d" * 300, 300) and name_max < 300
