"""The one error type of :mod:`cntk_core.data` for bad or unsafe data files."""

from __future__ import annotations


class DataError(ValueError):
    """A data file is corrupt, truncated, fails its checksum, or tries something unsafe."""
