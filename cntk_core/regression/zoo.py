"""The kernel zoo: several kernels on one train/test split, with accuracies, standard errors and times.

Each kernel is an :class:`~cntk_core.architecture.Architecture` and a ``kind``; every kernel sees the
same images, labels and ridge rule, so the table compares kernels and nothing else. Per kernel:
the training Gram ``[n, n]`` and the test-by-train Gram ``[n_test, n]`` (timed together: what a user
waits for), the ridge chosen by k-fold cross-validation on the training Gram alone
(:func:`~cntk_core.regression.ridge.select_ridge`), the paper's classifier
(:func:`~cntk_core.regression.solve.kernel_regression`), and the accuracy with its binomial
standard error ``sqrt(a (1 - a) / n_test)`` (the spread of the accuracy over test sets of this size).
Rows keep their test predictions, so two kernels on the same test images compare by a paired
difference (:func:`paired_difference`), whose standard error is usually much smaller than that of
two independent accuracies (the images that are easy or hard are so for both kernels).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ..architecture import Architecture
from ..gram import network_kernel
from ..validation import ParameterError, check_kind
from .metrics import accuracy as accuracy_score
from .ridge import select_ridge
from .solve import kernel_regression


@dataclass(frozen=True)
class ZooRow:
    """One kernel's result: ``accuracy`` and ``std_error`` are fractions; ``seconds`` the wall time of
    its two Grams; ``relative_ridge`` the chosen ridge over ``mean(diag(K_train))``; ``predictions``
    the predicted class of each test image, in order (``n_test`` ints)."""

    name: str
    architecture: dict
    kind: str
    accuracy: float
    std_error: float
    seconds: float
    relative_ridge: float
    n_train: int
    n_test: int
    predictions: tuple[int, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)


def compare_kernels(
    x_train,
    y_train,
    x_test,
    y_test,
    kernels: Sequence[tuple[Architecture, str]],
    *,
    dtype="float64",
    backend: str | None = None,
    n_folds: int = 5,
    on_row: Callable[[ZooRow], object] | None = None,
    progress=None,
    warm_up: bool = True,
) -> list[ZooRow]:
    """One :class:`ZooRow` per ``(architecture, kind)`` of ``kernels``, in order.

    x_train ``[n, P, Q, C]``, y_train ``[n]`` class indices, x_test ``[n_test, P, Q, C]``, y_test
    ``[n_test]``. ``on_row(row)`` is called as each kernel finishes (a notebook prints the table as
    it grows). ``warm_up``: compute each kernel once on two images before timing it, so that the
    one-time compilation of a fused engine (seconds, the first time in a process) is not charged to
    the first kernel that uses it. Allocates per kernel one float64 ``[n, n]`` and one
    ``[n_test, n]`` Gram (freed before the next); the engines' buffers as in
    :func:`cntk_core.kernel_matrix`.
    """
    y_train = np.asarray(y_train)
    y_test = np.asarray(y_test)
    if len(y_test) != len(x_test) or len(y_train) != len(x_train):
        raise ParameterError("y_test", "each image needs one label (x_train/y_train, x_test/y_test lengths differ)")
    checked = []
    for k, item in enumerate(kernels):
        try:
            arch, kind = item
        except (TypeError, ValueError):
            raise ParameterError("kernels", f"kernels[{k}] must be an (Architecture, kind) pair: {item!r}") from None
        if not isinstance(arch, Architecture):
            raise ParameterError("kernels", f"kernels[{k}][0] must be an Architecture, got {type(arch).__name__}")
        checked.append((arch, check_kind(kind)))
    if not checked:
        raise ParameterError("kernels", "kernels must name at least one (Architecture, kind) pair")
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    rows = []
    for arch, kind in checked:
        opts = {"kind": kind, "dtype": dtype, "backend": backend, "progress": progress}
        if warm_up:
            network_kernel(arch, x_train[:2], **{**opts, "progress": False})
        start = time.perf_counter()
        K_train = network_kernel(arch, x_train, **opts)
        K_test = network_kernel(arch, x_test, x_train, **opts)
        seconds = time.perf_counter() - start
        ridge = select_ridge(K_train, y_train, n_folds=n_folds, n_classes=n_classes)
        pred, _ = kernel_regression(K_train, y_train, K_test, ridge=ridge.ridge, n_classes=n_classes)
        acc = accuracy_score(y_test, pred)
        row = ZooRow(
            name=arch.title(kind),
            architecture=arch.to_dict(),
            kind=kind,
            accuracy=acc,
            std_error=float(np.sqrt(acc * (1 - acc) / len(y_test))),
            seconds=seconds,
            relative_ridge=ridge.relative_ridge,
            n_train=len(x_train),
            n_test=len(x_test),
            predictions=tuple(int(p) for p in np.asarray(pred)),
        )
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


def paired_difference(row: ZooRow, baseline: ZooRow, y_test) -> tuple[float, float]:
    """``(difference, std_error)`` of ``row``'s accuracy minus ``baseline``'s on the same test images
    ``y_test`` (fractions): the mean of ``d_i = correct_row(i) - correct_baseline(i)`` and its standard
    error ``std(d, ddof=1) / sqrt(n_test)`` (paired: per image, both kernels' answers)."""
    y = np.asarray(y_test)
    a, b = np.asarray(row.predictions), np.asarray(baseline.predictions)
    if a.shape != y.shape or b.shape != y.shape:
        raise ParameterError("y_test", "both rows need one prediction per test label (rows of the same test set)")
    d = (a == y).astype(float) - (b == y).astype(float)
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return float(d.mean()), se


def zoo_table(rows: Sequence[ZooRow]) -> str:
    """A Markdown table of :func:`compare_kernels` rows: kernel, accuracy ± standard error (%),
    seconds, train/test sizes and the chosen relative ridge."""
    lines = ["| kernel | accuracy | seconds | n train | n test | ridge (rel.) |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r.name} | {100 * r.accuracy:.1f} ± {100 * r.std_error:.1f} % | {r.seconds:.1f} | "
            f"{r.n_train} | {r.n_test} | {r.relative_ridge:.0e} |"
        )
    return "\n".join(lines)
