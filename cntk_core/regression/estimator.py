"""The scikit-learn face of the CNTK: :class:`CNTKClassifier` on images and :func:`precomputed_kernels`.

Images are NHWC float arrays ``[n, H, W, C]``, preprocessed as the kernel expects (see
:func:`cntk_core.data.preprocess`). The classifier's ``ridge`` is **relative** to ``mean(diag(K_train))``.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from ..validation import ParameterError, ParameterTypeError, as_images
from ._checks import check_ridge_choice
from .ridge import select_ridge
from .solve import one_hot_targets, solve_kernel


def _encode_classes(y, n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """``(classes [c], codes [n] in 0..c-1)`` of the labels ``y`` (any sortable type, as scikit-learn).

    ``ValueError`` naming ``y`` for a wrong shape and for missing labels (``None``, NaN, inf), which
    ``np.unique`` would turn into a class of their own (or fail on deep inside NumPy).
    """
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n_images:
        raise ParameterError(
            "y", f"y must be 1-D with one label per image: X has {n_images} images, y has shape {y.shape}"
        )
    if y.dtype.kind in "fc":
        bad = ~np.isfinite(y)
    elif y.dtype.kind == "O":
        bad = np.array([v is None or (isinstance(v, (float, complex, np.inexact)) and not np.isfinite(v)) for v in y])
    else:
        bad = np.zeros(len(y), bool)
    if bad.any():
        raise ParameterError(
            "y",
            f"y: {int(bad.sum())} missing or non-finite labels (None, NaN or inf), first at index "
            f"{int(np.argmax(bad))}; every image needs a class label",
        )
    try:
        return np.unique(y, return_inverse=True)
    except TypeError as exc:  # e.g. a mix of strings and numbers
        raise ParameterTypeError("y", f"y: the labels cannot be sorted into classes (mixed types?): {exc}") from None


def precomputed_kernels(x_train, x_test=None, **kernel_kwargs) -> tuple[np.ndarray, np.ndarray | None]:
    """``(K_train [n, n], K_test [n_test, n] or None)`` for ``KernelRidge(kernel="precomputed")`` / ``SVC``.

    ``kernel_kwargs`` go to :func:`cntk_core.kernel_matrix` (depth=..., readout=..., fix=..., ...).
    """
    from ..gram import kernel_matrix

    K_train = kernel_matrix(x_train, **kernel_kwargs)
    K_test = None if x_test is None else kernel_matrix(x_test, x_train, **kernel_kwargs)
    return K_train, K_test


class CNTKClassifier(ClassifierMixin, BaseEstimator):
    """scikit-learn classifier: the paper's CNTK kernel regression on NHWC images.

    Parameters mirror :func:`cntk_core.kernel_matrix`; ``ridge`` is relative to ``mean(diag(K_train))``
    (a float >= 0; 0 = the paper's unregularised solve) or ``"cv"`` to choose it by 5-fold CV on the
    training kernel (:func:`~cntk_core.regression.select_ridge`).

    ``fit(X [n, H, W, C], y)`` computes the symmetric Gram; ``decision_function(X)`` the cross kernel
    ``K(X, X_fit)`` and returns ``[n, n_classes]`` scores. Works with ``cross_val_score``,
    ``GridSearchCV`` etc. (they slice the 4-D arrays along axis 0).

    Fitted attributes: ``classes_``, ``X_fit_``, ``dual_coef_`` ``[n, n_classes]``, ``ridge_`` (absolute),
    ``ridge_selection_`` (for ``"cv"``), ``kernel_scale_`` (mean diagonal of the training kernel).
    """

    def __init__(
        self,
        depth: int = 3,
        readout: str = "gap",
        fix: bool = False,
        kind: str = "ntk",
        ridge: float | str = 0.0,
        dtype: str = "float64",
        backend: str | None = None,
    ):
        self.depth = depth
        self.readout = readout
        self.fix = fix
        self.kind = kind
        self.ridge = ridge
        self.dtype = dtype
        self.backend = backend

    def _kernel(self, x1, x2=None) -> np.ndarray:
        from ..gram import kernel_matrix

        return kernel_matrix(
            x1,
            x2,
            depth=self.depth,
            readout=self.readout,
            fix=self.fix,
            kind=self.kind,
            dtype=self.dtype,
            backend=self.backend,
            progress=False,
        )

    def fit(self, X, y) -> CNTKClassifier:
        """Fit on images ``X [n, H, W, C]`` with labels ``y [n]`` (any sortable type); returns ``self``."""
        X = as_images(X, "X")
        classes, y_enc = _encode_classes(y, len(X))
        rel_ridge = check_ridge_choice(self.ridge, ("cv",))
        if rel_ridge == "cv":
            if len(y_enc) < 2:
                raise ParameterError(
                    "ridge",
                    f"ridge='cv' cross-validates the ridge, which needs at least 2 training images; got {len(y_enc)}",
                )
            rel_ridge = None
        self.classes_ = classes
        K = self._kernel(X)
        self.kernel_scale_ = float(np.mean(np.diag(K)))
        Y = one_hot_targets(y_enc, len(self.classes_))
        self.ridge_selection_ = None
        if rel_ridge is None:
            folds = min(5, len(y_enc))
            self.ridge_selection_ = select_ridge(K, y_enc, n_folds=folds, n_classes=len(self.classes_))
            self.ridge_ = self.ridge_selection_.ridge
        else:
            self.ridge_ = rel_ridge * self.kernel_scale_
        self.dual_coef_ = solve_kernel(K, Y, self.ridge_, check=False)
        self.X_fit_ = X
        return self

    def decision_function(self, X) -> np.ndarray:
        """Scores ``[n, n_classes]`` of images ``X [n, H, W, C]``: ``K(X, X_fit) @ dual_coef_``."""
        check_is_fitted(self, ["classes_", "dual_coef_", "X_fit_"])
        return self._kernel(np.asarray(X), self.X_fit_) @ self.dual_coef_

    def predict(self, X) -> np.ndarray:
        """Predicted labels ``[n]`` (elements of ``classes_``) of images ``X [n, H, W, C]``."""
        scores = self.decision_function(X)  # raises NotFittedError before fit
        return self.classes_[scores.argmax(axis=1)]
