"""The regression lab's settings and data pipeline (no widgets): which images a run uses and how they
are preprocessed, from a data set's raw pixels to the kernel's input.

The paper's recipe (``docs/math.md``, section 6): pixels / scale and per-channel standardisation with
training statistics. Optional preprocessing of the later papers, all fitted on the training images
only: ZCA whitening (Shankar et al. 2020, Lee et al. 2020), flip augmentation of the training set, and
Coates et al.'s random-patch features as Li et al. (2019) use them (:class:`cntk_core.data.RandomPatches`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cntk_core import data as _data
from cntk_core.data import check_dataset_name
from cntk_core.recurrence import block_mean as _block_mean
from cntk_core.validation import ParameterError, check_flag, check_real

from .models import setting_int

MIN_IMAGE_SIDE = 4  # downsampling below this many pixels per side is refused (the kernel sees almost nothing)


def available_datasets() -> tuple[str, ...]:
    """The data sets whose files are present without a download (always ``"digits"``; see
    :func:`cntk_core.data.available_datasets`: ``"cifar10"`` once its tarball is in the cache)."""
    return _data.available_datasets()


def max_downsample(height: int, width: int) -> int:
    """The largest ``downsample`` that keeps ``height x width`` images at least ``MIN_IMAGE_SIDE`` px wide."""
    return max(1, min(height, width) // MIN_IMAGE_SIDE)


def default_downsample(height: int, width: int) -> int:
    """A sensible ``downsample`` for a data set: images of about 8 px per side (CIFAR 32 -> 4, digits 8 -> 1)."""
    return max(1, min(height, width) // 8)


#: the soft threshold of the random-patch features (:class:`cntk_core.data.RandomPatches`' default)
PATCH_BIAS = 1.0


@dataclass(frozen=True)
class LabSettings:
    """What a run depends on besides the architecture. ``ridge`` is relative to ``mean(diag K)``;
    ``downsample`` averages raw pixels over ``downsample x downsample`` blocks (e.g. 4: CIFAR 32 -> 8).

    Preprocessing after the paper's standardisation, all fitted on the training images only:
    ``zca``: ``None`` (off) or ZCA whitening's regulariser eps >= 0 (relative to the mean
    eigenvalue, :class:`cntk_core.data.ZCA`; 0.1 is about Lee et al.'s best on CIFAR-10);
    ``flip_augment``: add the mirror image of every training image (twice the training set, about
    four times the kernel's cost); ``patches``: ``0`` (off) or the number K >= 2 of random patches of
    ``patch_size x patch_size`` pixels whose thresholded responses (``2 K`` channels) replace the
    pixels (:class:`cntk_core.data.RandomPatches`, bias :data:`PATCH_BIAS`, drawn with ``seed``).
    """

    dataset: str = "digits"
    n_per_class: int = 10
    n_test_per_class: int = 10
    ridge: float = 0.0
    seed: int = 0
    downsample: int = 1
    zca: float | None = None
    flip_augment: bool = False
    patches: int = 0
    patch_size: int = 5

    def __post_init__(self):
        check_dataset_name(self.dataset)
        for name in ("n_per_class", "n_test_per_class", "downsample", "patch_size"):
            object.__setattr__(self, name, setting_int(getattr(self, name), name, 1))
        object.__setattr__(self, "ridge", _non_negative(self.ridge, "ridge", "relative to mean(diag K); 0: no ridge"))
        object.__setattr__(self, "seed", setting_int(self.seed, "seed", 0))
        if self.zca is not None:
            what = "None (off) or ZCA's regulariser (relative to the mean eigenvalue; 0: plain ZCA)"
            object.__setattr__(self, "zca", _non_negative(self.zca, "zca", what))
        try:
            object.__setattr__(self, "flip_augment", check_flag(self.flip_augment, "flip_augment"))
        except TypeError as exc:
            raise ParameterError("flip_augment", str(exc)) from None
        patches = setting_int(self.patches, "patches", 0, " (random patches; 0: off)")
        if patches == 1:
            raise ParameterError("patches", "patches must be 0 (off) or at least 2 (random patches to whiten)")
        object.__setattr__(self, "patches", patches)

    def preprocessing(self) -> str:
        """The preprocessing in words, e.g. ``"standardised, ZCA eps 0.1, flip-augmented"``."""
        steps = ["standardised"]
        if self.zca is not None:
            steps.append(f"ZCA eps {self.zca:g}")
        if self.flip_augment:
            steps.append("flip-augmented")
        if self.patches:
            steps.append(f"{self.patches} random {self.patch_size}x{self.patch_size} patches")
        return ", ".join(steps)


def _non_negative(value, name: str, what: str) -> float:
    """``value`` as a float, finite and >= 0 (not a string, not a bool), else ``ParameterError(name)``."""
    try:
        number = float(check_real(value, name))  # a number (not a string), finite
    except (TypeError, ValueError):
        number = -1.0
    if number < 0:
        raise ParameterError(name, f"{name} must be a finite number >= 0 ({what}), got {value!r}")
    return number


def block_mean(x: np.ndarray, f: int) -> np.ndarray:
    """Average ``[n, H, W, C]`` pixels over ``f x f`` blocks -> float64 ``[n, H // f, W // f, C]``
    (:func:`cntk_core.recurrence.block_mean`, the average pooling of the AvgPool layer)."""
    h, w = x.shape[1:3]
    if h // f == 0 or w // f == 0:
        raise ValueError(f"downsample={f} is larger than the {h}x{w} images")
    return _block_mean(np.asarray(x, dtype=np.float64), f, (1, 2))


def prepare_images(x_train, y_train, x_test, pixel_scale: float, settings: LabSettings):
    """``(x_train, y_train, x_test)``: raw NHWC images ``[n, H, W, C]`` / ``[m, H, W, C]`` and labels
    ``[n]`` preprocessed as ``settings`` say, every step fitted on ``x_train`` only: pixels /
    ``pixel_scale`` and per-channel standardisation, ZCA (``settings.zca``), then the mirrored
    training images appended with their labels (``2 n`` images; ``settings.flip_augment``), then the
    random-patch features of every image (``[., H, W, 2 K]``; ``settings.patches``; the patches are
    drawn from the originals, not the mirrors). float64 outputs, allocated afresh."""
    from cntk_core.data import preprocess

    s = settings
    if s.patches and s.patch_size > min(x_train.shape[1:3]):
        h, w = x_train.shape[1:3]
        raise ParameterError(
            "patch_size", f"patch_size={s.patch_size}: the patches do not fit in the {h}x{w} px images"
        )
    n = len(x_train)
    p = preprocess(x_train, x_test, scale=pixel_scale, zca=s.zca, flip=s.flip_augment)
    x_train, x_test = p.x_train, p.x_test
    if s.flip_augment:
        y_train = np.concatenate([y_train, y_train])
    if s.patches:
        from cntk_core.data import RandomPatches

        rp = RandomPatches(s.patches, s.patch_size, PATCH_BIAS, seed=s.seed).fit(x_train[:n])
        x_train, x_test = rp.transform(x_train), rp.transform(x_test)
    return x_train, y_train, x_test
