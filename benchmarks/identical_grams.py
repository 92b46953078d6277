"""Are the kernels bit-identical before and after a refactor? Save a sweep once, compare later.

    python benchmarks/identical_grams.py --save /tmp/before.npz     # on the old commit
    python benchmarks/identical_grams.py --compare /tmp/before.npz  # on the new one

The sweep goes through the public API only (which a refactor keeps): ``kernel_matrix``,
``kernel_matrices`` and ``network_kernel`` on the Numba and NumPy backends, both dtypes, both
readouts, every fix setting, both kinds, symmetric and cross Grams, square and non-square images,
one and three channels, images at extreme scales (the power-of-two scaling path), plus the
regression solves and the finite nets' empirical kernels. ``--compare`` exits 1 on any difference
(``np.array_equal``, bits, not a tolerance) and names each case that differs.
"""

from __future__ import annotations

import argparse
import itertools
import sys

import numpy as np


def _images(seed: int, n: int, shape: tuple[int, int, int], scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n,) + shape) * scale


def cases():
    """Yield ``(name, thunk)``; each thunk returns an array (or a tuple of arrays)."""
    import cntk_core
    from cntk_core import AvgPool, Conv, Dense, GlobalAvgPool, ReLU

    fixes = [dict(fix=False), dict(fix=True), dict(fix_first=True), dict(fix_last=True)]
    shapes = [(6, 6, 3), (5, 7, 1)]
    for backend, dtype, readout, kind, (s, shape), fx in itertools.product(
        ("numba", "numpy"), ("float64", "float32"), ("gap", "vanilla"), ("ntk", "nngp"), enumerate(shapes), fixes
    ):
        if backend == "numpy" and (s == 1 or dtype == "float32") and fx != dict(fix=False):
            continue  # the per-layer path is slow; one fix setting at the odd shapes
        x1, x2 = _images(10 + s, 5, shape), _images(20 + s, 3, shape)
        depth = 3 if readout == "gap" else 4
        kw = dict(depth=depth, readout=readout, kind=kind, dtype=dtype, backend=backend, **fx)
        tag = f"{backend}-{dtype}-{readout}-{kind}-{'x'.join(map(str, shape))}-" + "-".join(
            f"{k}{v}" for k, v in fx.items()
        )
        yield f"sym-{tag}", lambda x1=x1, kw=kw: cntk_core.kernel_matrix(x1, **kw)
        yield f"cross-{tag}", lambda x1=x1, x2=x2, kw=kw: cntk_core.kernel_matrix(x1, x2, **kw)
    for backend, dtype in itertools.product(("numba", "numpy"), ("float64", "float32")):
        x = _images(31, 6, (6, 6, 3))
        for readout in ("gap", "vanilla"):
            yield (
                f"multi-{backend}-{dtype}-{readout}",
                lambda x=x, b=backend, d=dtype, r=readout: tuple(
                    cntk_core.kernel_matrices(x, depths=[2, 3, 5], readout=r, fix=True, dtype=d, backend=b).values()
                ),
            )
        for scale in (1e-30, 1e12, 1e150):
            xs = _images(41, 4, (6, 6, 3), scale)
            yield (
                f"scaled-{backend}-{dtype}-{scale:g}",
                lambda xs=xs, b=backend, d=dtype: cntk_core.kernel_matrix(xs, depth=3, dtype=d, backend=b),
            )
    x = _images(51, 4, (6, 6, 2))
    pooled = [Conv(3, fixed=True), ReLU(), AvgPool(2), Conv(3), ReLU(), GlobalAvgPool(), Dense()]
    for kind in ("ntk", "nngp"):
        yield f"network-avgpool-{kind}", lambda kind=kind: cntk_core.network_kernel(pooled, x, kind=kind)
    yield "network-5x5-conv", lambda: cntk_core.network_kernel([Conv(5), ReLU(), GlobalAvgPool(), Dense()], x)
    yield from _regression_cases()
    yield from _finite_cases()


def _regression_cases():
    from cntk_core import regression as reg

    rng = np.random.default_rng(61)
    f = rng.standard_normal((30, 12))
    k = f @ f.T / 12 + 0.1 * np.eye(30)
    y = np.arange(30) % 3
    kt = rng.standard_normal((7, 12)) @ f.T / 12
    yield "reg-kernel_regression", lambda: reg.kernel_regression(k, y, kt, ridge=0.01)
    yield "reg-ridge-path", lambda: reg.ridge_path_alphas(k, reg.one_hot_targets(y), [0.0, 0.1, 1.0])
    yield (
        "reg-select_ridge-cv",
        lambda: (
            np.array([reg.select_ridge(k, y, n_folds=3).ridge]),
            reg.select_ridge(k, y, n_folds=3).accuracy,
        ),
    )
    yield "reg-select_ridge-holdout", lambda: np.array([reg.select_ridge(k, y, validation=0.3).ridge])
    yield "reg-eigenspectrum", lambda: reg.eigenspectrum(k)
    yield "reg-normalized", lambda: reg.normalized_gram(k)
    yield "reg-confusion", lambda: reg.confusion_matrix(y, (y + (np.arange(30) % 4 == 0)) % 3)
    yield "reg-classifier", lambda: _classifier(reg)
    yield "reg-run_experiment", lambda: _experiment(reg)


def _classifier(reg):
    x = _images(71, 12, (6, 6, 3))
    y = np.arange(12) % 3
    clf = reg.CNTKClassifier(depth=3, ridge=0.0).fit(x[:9], y[:9])
    return clf.decision_function(x[9:]), clf.predict(x[9:])


def _experiment(reg):
    r = reg.run_experiment("digits", n_train=30, n_test=10, depth=3, ridge="cv", n_folds=3, keep_kernels=True)
    return np.asarray([r.accuracy, r.ridge]), r.per_class_accuracy, r.confusion, r.K_train, r.K_test


def _finite_cases():
    from cntk_core import finite

    x = _images(81, 4, (6, 6, 3))
    for readout, fix in itertools.product(("gap", "vanilla"), (False, True)):
        net = finite.finite_cnn(3, 16, readout, fix)
        yield f"finite-entk-{readout}-{fix}", lambda net=net: finite.empirical_ntk_samples(net, x, seeds=(0, 1))
        yield f"finite-nngp-{readout}-{fix}", lambda net=net: finite.empirical_nngp(net, x, n_inits=2)
    net = finite.finite_cnn(3, 8, "gap", True)
    y = np.where(np.arange(4) % 2, 1.0, -1.0)

    def trained():
        params = net.init(x.shape[1:], seed=3)
        r = finite.train_gd(net, params, x, y, eta=0.5, steps=5, x_test=x[:2])
        return tuple(np.asarray(v, dtype=np.float64) for v in vars(r).values() if isinstance(v, np.ndarray))

    yield "finite-train_gd", trained
    v = np.random.default_rng(91).standard_normal((5, 4))
    for kind in ("ntk", "nngp"):
        yield f"finite-fc-{kind}", lambda kind=kind: finite.fc_relu_ntk(v, n_hidden=2, kind=kind, fix_first=True)


def _flat(value) -> list[np.ndarray]:
    if isinstance(value, tuple | list):
        return [a for v in value for a in _flat(v)]
    return [np.asarray(value)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--save", metavar="NPZ")
    group.add_argument("--compare", metavar="NPZ")
    args = ap.parse_args(argv)
    results = {}
    for name, thunk in cases():
        for i, a in enumerate(_flat(thunk())):
            results[f"{name}#{i}"] = a
    if args.save:
        np.savez(args.save, **results)
        print(f"saved {len(results)} arrays to {args.save}")
        return 0
    before = np.load(args.compare)
    differ = [k for k in before.files if k not in results or not np.array_equal(before[k], results[k], equal_nan=True)]
    new = sorted(set(results) - set(before.files))
    for k in differ:
        print("DIFFERS:", k)
    for k in new:
        print("new (not in the saved sweep):", k)
    print(f"{len(before.files) - len(differ)}/{len(before.files)} arrays bit-identical")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
