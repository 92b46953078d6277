"""Kernel regression as in Arora et al. (2019), ridge selection, metrics and kernel spectra.

The paper's classifier: targets 0.9 for the true class and -0.1 elsewhere (:func:`one_hot_targets`),
solve ``K_train @ alpha = Y`` in float64 with no ridge, predict ``argmax(K_test,train @ alpha)``.

Ridge conventions
-----------------
- Low-level functions (:func:`solve_kernel`, :func:`ridge_path_alphas`, :func:`kernel_regression`)
  take an **absolute** ridge ``lam``: they solve ``(K + lam I) alpha = Y``.
- High-level entry points (:class:`CNTKClassifier`, :func:`run_experiment`, the CLI) take a ridge
  **relative** to ``mean(diag(K_train))``, because the kernel's scale changes with depth and
  readout. :func:`select_ridge` searches a relative grid and reports both.

Ridge selection (:func:`select_ridge`) uses ONE eigendecomposition per training block,
``K = U diag(s) U^T``, so that ``alpha(lam) = U diag(1 / (s + lam)) U^T Y`` costs only a matrix
product per ``lam``.

Using the CNTK with scikit-learn's ``KernelRidge(kernel="precomputed")``::

    >>> import numpy as np, cntk_core
    >>> from sklearn.kernel_ridge import KernelRidge
    >>> from cntk_core.regression import one_hot_targets
    >>> rng = np.random.default_rng(0)
    >>> x_tr, x_te = rng.standard_normal((12, 6, 6, 1)), rng.standard_normal((4, 6, 6, 1))
    >>> y_tr = np.arange(12) % 3
    >>> K_tr = cntk_core.kernel_matrix(x_tr, depth=3, readout="gap")          # [12, 12]
    >>> K_te = cntk_core.kernel_matrix(x_te, x_tr, depth=3, readout="gap")    # [4, 12]
    >>> kr = KernelRidge(alpha=1e-6 * np.mean(np.diag(K_tr)), kernel="precomputed")
    >>> pred = kr.fit(K_tr, one_hot_targets(y_tr, 3)).predict(K_te).argmax(axis=1)
    >>> pred.shape
    (4,)

(:func:`precomputed_kernels` returns the pair ``(K_tr, K_te)`` in one call.)

Modules
-------
- :mod:`.solve`: one-hot targets, the kernel solve, scores, :func:`kernel_regression`.
- :mod:`.ridge`: the ridge path, the default grid, CV folds, :func:`select_ridge`.
- :mod:`.metrics`: accuracy, confusion matrix, per-class accuracy (counted by scikit-learn).
- :mod:`.dynamics`: gradient-descent / gradient-flow training in the kernel's eigenbasis
  (:func:`kernel_dynamics`, :class:`KernelDynamics`): loss, accuracy and per-mode residual against t.
- :mod:`.spectra`: the normalised Gram, its eigenvalues, effective dimension, participation ratio.
- :mod:`.estimator`: :class:`CNTKClassifier` (scikit-learn) and :func:`precomputed_kernels`.
- :mod:`.experiment`: :func:`run_experiment` and its :class:`ExperimentResult`.
- :mod:`.small_data`: small-data learning curves, one Gram per kernel (:func:`learning_curves`).
- :mod:`.zoo`: several kernels on one split, accuracy with standard errors and times (:func:`compare_kernels`),
  and the paired difference of two kernels on the same test images (:func:`paired_difference`).
- :mod:`.experiment_data`: subset picking and the paper's preprocessing (:func:`standardize`).
- :mod:`._checks`: the input checks (:func:`check_kernel` is public); labels use
  :func:`cntk_core.validation.check_labels`.
"""

from __future__ import annotations

from ._checks import check_kernel
from .dynamics import DynamicsCurves, DynamicsState, KernelDynamics, kernel_dynamics
from .estimator import CNTKClassifier, precomputed_kernels
from .experiment import ExperimentResult, run_experiment
from .experiment_data import standardize
from .metrics import accuracy, confusion_matrix, per_class_accuracy
from .ridge import RidgeSelection, default_ridge_grid, fold_indices, ridge_path_alphas, select_ridge
from .small_data import LearningCurve, learning_curve, learning_curve_subsets, learning_curves
from .solve import (  # the targets 0.9 / -0.1: module constants as before, not in __all__
    OTHER_TARGET,  # noqa: F401
    TRUE_TARGET,  # noqa: F401
    SingularKernelError,
    kernel_regression,
    one_hot_targets,
    predict_scores,
    solve_kernel,
)
from .spectra import effective_dimension, eigenspectrum, normalized_gram, participation_ratio
from .zoo import ZooRow, compare_kernels, paired_difference, zoo_table

__all__ = [
    "CNTKClassifier",
    "DynamicsCurves",
    "DynamicsState",
    "ExperimentResult",
    "KernelDynamics",
    "LearningCurve",
    "RidgeSelection",
    "SingularKernelError",
    "ZooRow",
    "accuracy",
    "check_kernel",
    "compare_kernels",
    "confusion_matrix",
    "default_ridge_grid",
    "effective_dimension",
    "eigenspectrum",
    "fold_indices",
    "kernel_dynamics",
    "kernel_regression",
    "learning_curve",
    "learning_curve_subsets",
    "learning_curves",
    "normalized_gram",
    "one_hot_targets",
    "paired_difference",
    "participation_ratio",
    "per_class_accuracy",
    "precomputed_kernels",
    "predict_scores",
    "ridge_path_alphas",
    "run_experiment",
    "select_ridge",
    "solve_kernel",
    "standardize",
    "zoo_table",
]
