"""Finite-width CNNs whose infinite-width limit is exactly :func:`cntk_core.kernel_matrix`.

* :mod:`~cntk_core.finite.net`: :class:`FiniteCNN` (the paper's network at a finite width, NTK
  parameterisation; its module docstring derives the scalings), :func:`finite_cnn`, im2col;
* :mod:`~cntk_core.finite.empirical`: empirical NTK and NNGP of random initialisations;
* :mod:`~cntk_core.finite.dynamics`: full-batch gradient descent and its linearisation, kernel
  regression with the NTK in closed form (:func:`kernel_regression_trajectory`);
* :mod:`~cntk_core.finite.closed_form`: the fully-connected ReLU net's NTK / NNGP and the
  normalised arc-cosine maps;
* :mod:`~cntk_core.finite.random_features`: the paper's Table 2, kernel regression with the exact
  CNTK against the empirical NTK of one finite net (:func:`table2_comparison`).

Everything is plain array code: NumPy and CuPy arrays both work (weights are drawn on the host
with NumPy, so both backends see identical nets for a seed).
"""

from ..architecture import READOUTS
from .closed_form import fc_relu_ntk, relu_arccos
from .dynamics import TrainResult, kernel_regression_trajectory, learning_rate, ntk_change, train_gd
from .empirical import empirical_nngp, empirical_ntk_samples, relative_error
from .net import RELU_SCALE, Cache, FiniteCNN, col2im, finite_cnn, im2col
from .random_features import Table2Result, table2_comparison

__all__ = [
    "READOUTS",
    "RELU_SCALE",
    "Cache",
    "FiniteCNN",
    "Table2Result",
    "TrainResult",
    "col2im",
    "empirical_nngp",
    "empirical_ntk_samples",
    "fc_relu_ntk",
    "finite_cnn",
    "im2col",
    "kernel_regression_trajectory",
    "learning_rate",
    "ntk_change",
    "relative_error",
    "relu_arccos",
    "table2_comparison",
    "train_gd",
]
