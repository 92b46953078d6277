"""Argument checks shared by the data loaders and preprocessing (clear errors naming the argument)."""

from __future__ import annotations

import numpy as np

from ..validation import ParameterError, ParameterTypeError, _param, check_real, is_real  # noqa: F401  (is_real: re-exported for the loaders)


def real_number(value, name: str, what: str = "a number") -> float:
    """``float(value)`` for a real, non-bool number (:func:`cntk_core.validation.check_real`, any
    finiteness); TypeError naming ``name`` for anything else (a string such as ``"0.1"`` is refused
    rather than parsed)."""
    return float(check_real(value, name, what, finite=False))


def make_rng(seed, name: str = "seed") -> np.random.Generator:
    """``np.random.default_rng(seed)``, with an error naming ``name`` instead of NumPy's SeedSequence one.

    Accepts what NumPy accepts (a non-negative int, a sequence of them, None, a SeedSequence,
    BitGenerator or Generator) except bools.
    """
    if isinstance(seed, bool | np.bool_):
        raise ParameterTypeError(_param(name), f"{name} must be a non-negative integer, got {seed!r}")
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError) as exc:
        kind = ParameterTypeError if isinstance(exc, TypeError) else ParameterError
        raise kind(
            _param(name),
            f"{name} must be a non-negative integer (or a sequence of them, None or a numpy SeedSequence/Generator), "
            f"got {seed!r}",
        ) from None
