"""Small-data learning curves from one Gram per kernel (the setting of Arora et al., 2020).

For training sizes such as 10, 20, 40, ... images, :func:`learning_curve_subsets` draws ``n_draws``
class-balanced index sets into a pool of images, from the labels and a seed alone, so that every
kernel is scored on the same subsets. :func:`learning_curve` scores them by slicing one pool Gram
and one test x pool Gram (no kernel computation); :func:`learning_curves` computes those two Grams
once per kernel, over only the pool images that some subset uses, then calls it.

Accuracies are fractions in [0, 1]. The ridge is **relative**, as in :func:`run_experiment` and
:class:`CNTKClassifier`: each subset is solved with the absolute ridge ``ridge * mean(diag(K_sub))``
of its own training Gram ``K_sub`` (``0``, the default, is the paper's plain solve).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from ..architecture import Architecture
from ..validation import ParameterError, ParameterTypeError, check_int, check_kind, check_labels
from ._checks import check_kernel, check_ridge
from .metrics import accuracy
from .solve import kernel_regression

#: one kernel of :func:`learning_curves`: the network (an Architecture or any Network) and its kind
KernelSpec = tuple[object, str]


@dataclass(frozen=True)
class LearningCurve:
    """Test accuracy against the training size, over ``n_draws`` random subsets per size.

    sizes ``[n_sizes]`` (images per training subset); accuracies ``[n_sizes, n_draws]`` (fractions in
    [0, 1], draw ``j`` of every size the same subset for every kernel); ridge: the relative ridge used.
    """

    sizes: np.ndarray
    accuracies: np.ndarray
    ridge: float = 0.0

    @property
    def mean(self) -> np.ndarray:
        """Mean accuracy per size, ``[n_sizes]``."""
        return self.accuracies.mean(axis=1)

    @property
    def std(self) -> np.ndarray:
        """Standard deviation of the accuracy over the draws per size (``ddof=0``), ``[n_sizes]``."""
        return self.accuracies.std(axis=1)

    def to_dict(self) -> dict:
        """JSON-ready form: sizes, accuracies (lists), mean, std and the relative ridge."""
        return {
            "sizes": [int(s) for s in self.sizes],
            "accuracies": self.accuracies.tolist(),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "ridge": self.ridge,
        }


def learning_curve_subsets(y_pool, sizes, n_draws: int, seed: int = 0) -> list[list[np.ndarray]]:
    """``n_draws`` class-balanced training subsets of each size: ``subsets[i][j]`` is draw ``j`` of
    ``sizes[i]``, sorted int64 indices ``[sizes[i]]`` into the pool (read-only arrays).

    y_pool ``[N]``: the pool's labels; the classes are the labels present. Each size must be a
    positive multiple of the number of classes, at most the smallest class count times the number
    of classes. Draws are independent (not nested); draw ``j`` of size ``s`` depends only on
    ``(y_pool, s, j, seed)``, not on the other sizes requested nor on any kernel.
    """
    from ..data import balanced_indices

    y = check_labels(y_pool, name="y_pool")
    n_draws = check_int(n_draws, "n_draws", 1, " (random subsets per training size)")
    seed = check_int(seed, "seed", 0)
    sizes = _check_sizes(sizes)
    classes, counts = np.unique(y, return_counts=True)
    n_cls = len(classes)
    if n_cls == 0:
        raise ParameterError("y_pool", "y_pool is empty: the pool has no images to draw subsets from")
    for s in sizes:
        if s % n_cls:
            raise ParameterError(
                "sizes", f"sizes: {s} is not a multiple of the {n_cls} classes (class-balanced subsets)"
            )
        if s // n_cls > counts.min():
            raise ParameterError(
                "sizes",
                f"sizes: {s} needs {s // n_cls} images per class, but class {int(classes[counts.argmin()])} has "
                f"only {int(counts.min())} in the pool (at most {n_cls * int(counts.min())})",
            )
    out = []
    for s in sizes:
        draws = []
        for j in range(n_draws):
            rng = np.random.default_rng(np.random.SeedSequence([seed, s, j]))
            idx = balanced_indices(y, s // n_cls, seed=rng).astype(np.int64)
            idx.setflags(write=False)
            draws.append(idx)
        out.append(draws)
    return out


def learning_curve(
    K_pool, y_pool, K_test_pool, y_test, subsets, *, ridge: float = 0.0, n_classes: int | None = None
) -> LearningCurve:
    """Score precomputed kernels on every subset: slices of ``K_pool`` and ``K_test_pool`` only.

    K_pool ``[N, N]`` symmetric Gram of the pool; y_pool ``[N]``; K_test_pool ``[n_test, N]``
    (rows test images, columns pool images); y_test ``[n_test]``; subsets: as from
    :func:`learning_curve_subsets` (all sizes the same number of draws), indices into the pool.
    For each subset ``idx``: :func:`kernel_regression` on ``K_pool[idx][:, idx]``,
    ``K_test_pool[:, idx]`` with the absolute ridge ``ridge * mean(diag(K_pool[idx][:, idx]))``
    (``ridge`` relative). n_classes: target width (default: largest label of ``y_pool``/``y_test`` + 1).
    """
    K = check_kernel(K_pool, "K_pool")
    Kt = check_kernel(K_test_pool, "K_test_pool", symmetric=False)
    y = check_labels(y_pool, len(K), "y_pool", for_what=f"a pool Gram with {len(K)} rows")
    yt = check_labels(y_test, len(Kt), "y_test", for_what=f"a test Gram with {len(Kt)} rows")
    if Kt.shape[1] != len(K):
        raise ParameterError(
            "K_test_pool", f"K_test_pool has shape {Kt.shape}; expected [n_test, {len(K)}] (test rows, pool columns)"
        )
    rel = check_ridge(ridge)
    if n_classes is None:
        n_classes = int(max(y.max(initial=0), yt.max(initial=0))) + 1
    draws = _check_subsets(subsets, len(K))
    acc = np.empty((len(draws), len(draws[0])))
    for i, row in enumerate(draws):
        for j, idx in enumerate(row):
            K_sub = K[np.ix_(idx, idx)]
            lam = rel * float(np.mean(np.diag(K_sub))) if rel else 0.0
            pred, _ = kernel_regression(K_sub, y[idx], Kt[:, idx], ridge=lam, n_classes=n_classes)
            acc[i, j] = accuracy(yt, pred)
    return LearningCurve(np.array([len(r[0]) for r in draws], dtype=np.int64), acc, rel)


def learning_curves(
    x_pool,
    y_pool,
    x_test,
    y_test,
    architectures: Mapping[str, KernelSpec] | Iterable[tuple[str, object, str]],
    sizes,
    n_draws: int,
    seed: int = 0,
    *,
    ridge: float = 0.0,
    backend: str | None = None,
    dtype="float64",
    progress: bool | None | Callable[[int, int], object] = None,
    cancel: Callable[[], object] | None = None,
) -> dict[str, LearningCurve]:
    """Learning curves of several kernels on the same subsets, each Gram entry computed once.

    x_pool ``[N, P, Q, C]``, y_pool ``[N]``, x_test ``[n_test, P, Q, C]``, y_test ``[n_test]``
    (preprocessed images, e.g. by :func:`standardize`). architectures: ``{name: (network, kind)}``
    or a list of ``(name, network, kind)``; network an :class:`~cntk_core.Architecture` (or any
    ``Network``), kind ``"ntk"`` or ``"nngp"``. sizes, n_draws, seed: see
    :func:`learning_curve_subsets`; ridge: relative, see :func:`learning_curve`.

    Per kernel, two calls of :func:`cntk_core.network_kernel`: the symmetric Gram of the ``U`` pool
    images that some subset uses (the union of the subsets, ``U <= N``; upper triangle computed,
    ``U (U + 1) / 2`` entries) and the cross Gram test x union (``n_test * U`` entries). Allocates
    ``U * U + n_test * U`` float64 per kernel (all are kept until the end). backend, dtype, cancel:
    passed to every call; progress: booleans passed through, a callable ``progress(done, total)``
    counts the entries of all kernels' Grams together. Returns ``{name: LearningCurve}``.
    """
    from ..gram import network_kernel

    specs = _check_specs(architectures)
    y = check_labels(y_pool, len(x_pool), "y_pool", for_what=f"{len(x_pool)} pool images")
    subsets = learning_curve_subsets(y, sizes, n_draws, seed)
    union = np.unique(np.concatenate([idx for row in subsets for idx in row]))
    local = [[np.searchsorted(union, idx) for idx in row] for row in subsets]
    x_u = np.asarray(x_pool)[union]
    u, n_test = len(union), len(x_test)
    per_kernel = u * (u + 1) // 2 + n_test * u
    results = {}
    for k, (name, network, kind) in enumerate(specs):
        kw = dict(kind=kind, dtype=dtype, backend=backend, cancel=cancel)
        base = k * per_kernel
        K_u = network_kernel(network, x_u, progress=_shifted(progress, base, len(specs) * per_kernel), **kw)
        hook = _shifted(progress, base + u * (u + 1) // 2, len(specs) * per_kernel)
        K_tu = network_kernel(network, x_test, x_u, progress=hook, **kw)
        results[name] = learning_curve(K_u, y[union], K_tu, y_test, local, ridge=ridge)
    return results


def _shifted(progress, offset: int, total: int):
    """A callable ``progress`` seen as one count over all Grams; booleans and None unchanged."""
    if not callable(progress):
        return progress
    return lambda done, _n: progress(offset + done, total)


def _check_sizes(sizes) -> list[int]:
    items = [sizes] if isinstance(sizes, int | np.integer) else list(sizes)
    if not items:
        raise ParameterError("sizes", "sizes must name at least one training size")
    return [check_int(s, "sizes", 1, " (training images per subset)") for s in items]


def _check_subsets(subsets, n: int) -> list[list[np.ndarray]]:
    """Subsets as lists of int64 index arrays into ``n`` pool images, each size the same number of draws."""
    rows = [[np.asarray(idx) for idx in row] for row in subsets]
    if not rows or not rows[0]:
        raise ParameterError("subsets", "subsets must hold at least one size with at least one draw")
    if len({len(r) for r in rows}) != 1:
        raise ParameterError("subsets", "subsets: every size must have the same number of draws")
    for row in rows:
        for idx in row:
            if idx.ndim != 1 or not len(idx) or not np.issubdtype(idx.dtype, np.integer):
                raise ParameterError("subsets", "subsets: each subset must be a non-empty 1-D integer index array")
            if idx.min() < 0 or idx.max() >= n:
                raise ParameterError("subsets", f"subsets: indices must lie in 0..{n - 1} (the pool Gram's rows)")
        if len({len(idx) for idx in row}) != 1:
            raise ParameterError("subsets", "subsets: the draws of one size must have the same size")
    return rows


def _check_specs(architectures) -> list[tuple[str, object, str]]:
    """``[(name, network, kind)]`` from a dict ``{name: (network, kind)}`` or a list of triples."""
    if isinstance(architectures, Mapping):
        items = [(name, *spec) for name, spec in architectures.items()]
    else:
        items = [tuple(t) for t in architectures]
    if not items:
        raise ParameterError("architectures", "architectures must name at least one kernel")
    out = []
    for item in items:
        if len(item) != 3 or not isinstance(item[0], str):
            raise ParameterTypeError(
                "architectures",
                f"architectures: expected {{name: (Architecture, kind)}} or [(name, Architecture, kind)], got {item!r}",
            )
        name, network, kind = item
        if not isinstance(network, Architecture) and not hasattr(network, "__iter__"):
            raise ParameterTypeError("architectures", f"architectures[{name!r}]: not a network: {network!r}")
        out.append((name, network, check_kind(kind)))
    if len({n for n, _, _ in out}) != len(out):
        raise ParameterError("architectures", "architectures: kernel names must be distinct")
    return out
