"""The :class:`Dataset` container shared by all loaders."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: CIFAR-10 class names, in label order 0..9 (as in the official ``batches.meta``).
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split of NHWC images with integer labels.

    Attributes
    ----------
    x_train, x_test : ``[n, H, W, C]`` raw pixels in their raw dtype (uint8 for CIFAR-10 and digits);
        divide by ``pixel_scale`` (see :func:`cntk_core.data.preprocess`) before computing kernels.
    y_train, y_test : int64 ``[n]`` class labels in ``0 .. len(class_names) - 1``.
    class_names : the name of each label.
    name : a short identifier (``"cifar10"``, ``"cifar10-subset"``, ``"digits"``).
    pixel_scale : the largest possible raw pixel value (255.0 for CIFAR-10, 16.0 for digits).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    name: str
    pixel_scale: float

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if not isinstance(x, np.ndarray) or x.ndim != 4:
                raise ValueError(f"x_{split} must be an NHWC array of rank 4, got {getattr(x, 'shape', type(x))}")
            if not isinstance(y, np.ndarray) or y.dtype != np.int64 or y.shape != (x.shape[0],):
                raise ValueError(
                    f"y_{split} must be int64 of shape ({x.shape[0]},), got "
                    f"{getattr(y, 'dtype', type(y))} {getattr(y, 'shape', '')}"
                )
            if y.size and (y.min() < 0 or y.max() >= len(self.class_names)):
                raise ValueError(f"y_{split} has labels outside 0..{len(self.class_names) - 1}")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"train and test image shapes differ: {self.x_train.shape[1:]} vs {self.x_test.shape[1:]}")
        if not (isinstance(self.class_names, tuple) and all(isinstance(c, str) for c in self.class_names)):
            raise ValueError("class_names must be a tuple of str")
        object.__setattr__(self, "pixel_scale", float(self.pixel_scale))

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)``."""
        return tuple(self.x_train.shape[1:])

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, train={self.x_train.shape} {self.x_train.dtype}, "
            f"test={self.x_test.shape} {self.x_test.dtype}, classes={self.n_classes}, pixel_scale={self.pixel_scale})"
        )
