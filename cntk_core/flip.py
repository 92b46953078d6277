"""The flip-symmetrised kernel ``K_flip(x, x') = (K(x, x') + K(x, flip x')) / 2`` as an engine wrapper.

Flipping both images of a pair leaves the kernel of a left-right symmetric network unchanged
(3x3 convolutions summed over the whole patch, symmetric padding, LAP's symmetric weights,
2x2 pooling of even widths), so ``K(x, flip x') = K(flip x, x') = K(x', flip x)``: ``K_flip`` is
symmetric, and it equals the kernel of the training set augmented with every flipped image,
averaged over the four pairings, at twice the entries of ``K`` (not four times) and with ``n``
unchanged. Any engine can be wrapped; the Gram driver (:mod:`cntk_core.gram`) does it for
``Architecture(..., flip=True)`` or ``flip=True``, on every backend.
"""

from __future__ import annotations

import numpy as np


def flip_images(x: np.ndarray) -> np.ndarray:
    """Horizontal flip of NHWC images ``[n, P, Q, C]``: the width axis (2) reversed, as a copy."""
    return np.ascontiguousarray(np.asarray(x)[:, :, ::-1])


class FlipEngine:
    """``(inner(x, x') + inner(x, flip x')) / 2`` for the pairs the driver asks for.

    ``prepare`` holds the inner engine's state of the images and of their flipped copies (twice the
    inner engine's per-image memory); ``pairs`` makes two inner calls. A self pair's first term keeps
    the inner engine's shortcuts (the same state object on both sides).
    """

    def __init__(self, inner):
        self.inner = inner
        self.pair_cost = 2.0 * inner.pair_cost
        self.dtype = getattr(inner, "dtype", np.float64)

    def prepare(self, x):
        return self.inner.prepare(x), self.inner.prepare(flip_images(x))

    def pairs(self, state1, state2, rows, cols):
        (a, _), (b, b_flipped) = state1, state2
        plain = np.asarray(self.inner.pairs(a, b, rows, cols), dtype=np.float64)
        flipped = np.asarray(self.inner.pairs(a, b_flipped, rows, cols), dtype=np.float64)
        return 0.5 * (plain + flipped)
