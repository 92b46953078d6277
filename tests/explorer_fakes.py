"""Kernel functions for the explorer's tests (its ``kernel_fn`` hook), shared by the model and view tests."""

from __future__ import annotations

import cntk_core

#: per-layer engine: no JIT, fast on the tests' tiny images
BACKEND = "numpy"


def spec_kernel(spec, imgs, ctx):
    """The raw Gram of ``spec`` (a lab ``NetworkSpec``) on ``imgs``, as the explorer would compute it."""
    return cntk_core.network_kernel(spec.network(), imgs, kind=spec.kind, backend=BACKEND)


def interrupting_kernel(exc_type, depth=11):
    """A ``kernel_fn`` that raises ``exc_type()`` for ``depth`` and computes every other depth."""

    def kernel_fn(spec, imgs, ctx):
        if spec.depth == depth:
            raise exc_type()
        return spec_kernel(spec, imgs, ctx)

    return kernel_fn
