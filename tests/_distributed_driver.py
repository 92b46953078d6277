"""Driver process for tests/test_distributed.py: runs one gram_to_store job, to be killed mid-way.

Usage: python tests/_distributed_driver.py STORE N SEED DEPTH TILE
Images: ``np.random.default_rng(SEED).standard_normal((N, 8, 8, 2))`` (the test rebuilds them).
Starts its own 2-worker LocalCluster (hence the ``__main__`` guard) and uses the NumPy backend.
"""

import sys

import numpy as np

from cntk_core.distributed import gram_to_store


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 8, 8, 2))


if __name__ == "__main__":
    store, n, seed, depth, tile = sys.argv[1], *map(int, sys.argv[2:6])
    result = gram_to_store(
        store, images(n, seed), depth=depth, tile_size=tile, n_workers=2, backend="numpy", progress=False
    )
    print(result.last_run, flush=True)
