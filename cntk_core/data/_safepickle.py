"""A restricted unpickler for the CIFAR-10 python batches (it never imports or calls anything else).

Unpickling runs code: a pickle may name any importable callable (``os.system``, ``builtins.eval``)
and call it. The official batches (written by Python 2's cPickle, protocol 2) only need NumPy's
array reconstruction: ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and
``numpy.dtype``. :class:`RestrictedUnpickler` resolves exactly these names itself, from a fixed
table (no import by name), and rejects every other global with :class:`DataError` before anything
is called. Protocol-5 out-of-band buffers (``_frombuffer``) and ``_codecs.encode`` (Python 3
protocol-2 ``bytes``) are not needed by the official files and are rejected as well.
"""

from __future__ import annotations

import io
import pickle

import numpy as np

from ._errors import DataError

#: NumPy's array reconstructor, taken from NumPy itself (its module moved in NumPy 2).
_RECONSTRUCT = np.zeros(1).__reduce__()[0]

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` allows only NumPy's array reconstruction."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise DataError(
                f"refusing to unpickle global {module}.{name}: only NumPy array reconstruction is allowed "
                "in CIFAR-10 batches (a pickle that names other callables could run code)"
            ) from None

    def persistent_load(self, pid):
        raise DataError("refusing to unpickle a persistent id (not part of the CIFAR-10 format)")


def safe_loads(data: bytes, what: str = "pickle"):
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (``encoding="bytes"``, as the official
    Python 2 batches need). Any failure is a :class:`DataError` naming ``what``."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except DataError as exc:
        raise DataError(f"{what}: {exc}") from None
    except Exception as exc:  # truncated or garbled pickles raise many different types
        raise DataError(f"{what}: not a valid pickle ({type(exc).__name__}: {exc})") from None
