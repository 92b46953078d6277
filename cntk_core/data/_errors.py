"""The one error type of :mod:`cntk_core.data` for bad or unsafe data files."""

from __future__ import annotations


class DataError(ValueError):
    """A data file is corrupt, truncated, fails its checksum, or tries something unsafe."""


class DataUnavailableError(FileNotFoundError):
    """A data set is neither on disk nor downloadable now (offline, server unreachable); the message
    says where it was looked for and how to provide it."""
