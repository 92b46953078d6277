"""The data of an experiment: which images of a split it uses, the paper's preprocessing of them, and the
optional steps after it (ZCA whitening, Coates et al.'s random patches, flip augmentation).

Images are NHWC arrays ``[n, H, W, C]`` (raw pixels in, standardised float64 out); labels ``[n]``.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import numpy as np

from ..data import STATS
from ..validation import ParameterError, ParameterTypeError, check_choice, check_flag, check_int, check_real

if TYPE_CHECKING:
    from ..data import RandomPatches

#: RandomPatches' parameter names -> run_experiment's (its errors are re-raised under these)
PATCH_PARAMS = {
    "n_patches": "random_patches",
    "size": "patch_size",
    "bias": "patch_bias",
    "pool": "patch_pool",
    "zca_eps": "patch_zca",
}


def standardize(dataset, *images, stats: str = "all") -> list[np.ndarray]:
    """The paper's preprocessing of ``images`` (raw NHWC arrays of ``dataset``): ``/ pixel_scale``, then
    per-channel standardisation with training statistics, from all of ``dataset.x_train``
    (``stats="all"``) or from ``images[0]`` (``stats="used"``, the training images in use).
    Returns float64 arrays, one per input.
    """
    from .. import data

    check_choice(stats, "stats", STATS)
    if stats == "used" and not images:
        raise ParameterError(
            "images",
            "standardize(stats='used') fits the statistics on images[0], the training images in use; none given",
        )
    fit_on = dataset.x_train if stats == "all" else images[0]
    if np.ndim(fit_on) and np.shape(fit_on)[0] == 0:
        where = "the data set has no training images (dataset.x_train" if stats == "all" else "images[0] (stats='used'"
        raise ParameterError(
            "dataset" if stats == "all" else "images",
            f"standardize: {where} is empty): cannot compute the per-channel statistics",
        )
    std = data.Standardizer(getattr(dataset, "pixel_scale", 255.0)).fit(fit_on)
    return [std.transform(x) for x in images]


def pick_subset(x, y, n: int | None, name: str, per_class: bool, subset: str, seed: int):
    """``(x [m, H, W, C], y [m])``: ``n`` images of the split ``(x, y)`` (``None``: all; ``n`` per class
    with ``per_class``), drawn as ``subset`` says (one of :data:`cntk_core.data.SUBSETS`; ``"random"`` and
    ``"balanced"`` seeded with ``seed``). Never fewer than asked: :class:`~cntk_core.validation.ParameterError`
    naming ``name`` (``"n_train"`` / ``"n_test"``) when the split has too few.
    """
    if n is None:
        return x, y
    from .. import data

    split = "training" if name == "n_train" else "test"
    if not per_class:
        if n > len(x):
            raise ParameterError(name, f"{name}={n} is more than the {len(x)} {split} images of the data set")
        if n == len(x):
            return x, y
    if per_class or subset == "balanced":
        classes, counts = np.unique(y, return_counts=True)
        if len(classes) == 0:
            raise ParameterError(name, f"{name}={n} per class: the data set has no {split} images")
        if per_class:
            k, what = n, f"{name}={n} per class (per_class=True)"
        else:
            if n % len(classes):
                raise ParameterError(
                    name,
                    f"subset='balanced' needs {name} divisible by the {len(classes)} classes, got {n} "
                    "(subset='first' or subset='random' take any number)",
                )
            k = n // len(classes)
            what = f"{name}={n} with subset='balanced' ({k} per class)"
        if counts.min() < k:
            raise ParameterError(
                name,
                f"{what} is more than the data set has: class {classes[np.argmin(counts)]} has only "
                f"{counts.min()} {split} images",
            )
        return data.balanced_subset(x, y, k, seed=seed)
    if subset == "first":
        return x[:n], y[:n]
    return data.random_subset(x, y, n, seed=seed)


def check_preprocessing(
    zca: float | bool | None,
    flip_augment: bool,
    random_patches: int | None,
    patch_size: int,
    patch_bias: float,
    patch_pool: int,
    patch_zca: float,
    seed,
) -> tuple[float | None, bool, RandomPatches | None]:
    """``(zca eps or None, flip_augment, unfitted RandomPatches or None)`` from :func:`run_experiment`'s
    preprocessing arguments, each checked under its own name (before any data is touched).
    ``zca``: ``None``/``False`` (none), ``True`` (eps 0.1, as :func:`cntk_core.data.preprocess`) or a
    number >= 0. The patch settings are checked even without ``random_patches``."""
    from ..data import RandomPatches

    if zca is None or isinstance(zca, bool | np.bool_):
        zca = 0.1 if zca else None
    else:
        zca = float(check_real(zca, "zca", "None, True or a number >= 0 (the ZCA regulariser)"))
        if zca < 0:
            raise ParameterError(
                "zca", f"zca (the ZCA regulariser, relative to the mean eigenvalue) must be >= 0, got {zca}"
            )
    flip_augment = check_flag(flip_augment, "flip_augment")
    if random_patches is not None:
        random_patches = check_int(random_patches, "random_patches", 2, " (patches sampled, the filters)")
    with patch_names():
        patches = RandomPatches(
            2 if random_patches is None else random_patches, patch_size, patch_bias, seed, pool=patch_pool,
            zca_eps=patch_zca,
        )  # fmt: skip
    return zca, flip_augment, None if random_patches is None else patches


@contextlib.contextmanager
def patch_names():
    """A :class:`~cntk_core.validation.ParameterError` / ``ParameterTypeError`` of
    :class:`~cntk_core.data.RandomPatches` re-raised under :func:`run_experiment`'s name of the parameter."""
    try:
        yield
    except (ParameterError, ParameterTypeError) as exc:
        if exc.param not in PATCH_PARAMS:
            raise
        name = PATCH_PARAMS[exc.param]
        raise type(exc)(name, f"random patches: {exc} ({exc.param} is {name})") from None


def preprocess_split(
    dataset,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    *,
    stats: str = "all",
    zca: float | None = None,
    flip_augment: bool = False,
    patches: RandomPatches | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """The experiment's images, ready for the kernel, and a JSON record of what was done to them.

    In this order, every transform fitted on the training images in use (``x_train``) only:
    1. :func:`standardize` (``stats``: statistics of all of ``dataset.x_train`` or of ``x_train``);
    2. ``zca`` (a float eps or ``None``): :class:`~cntk_core.data.ZCA` fitted on the standardised ``x_train``;
    3. ``patches`` (an unfitted :class:`~cntk_core.data.RandomPatches` or ``None``): fitted on the
       result for ``x_train``, then applied to both splits (their shape and channels change);
    4. ``flip_augment``: the training images followed by their mirrors (``x[:, :, ::-1]``) taken
       through the same fitted steps 2-3, and ``y_train`` twice: the training set doubles.
    Returns ``(x_train, y_train, x_test, record)``: float64 NHWC arrays, the labels, and a dict.
    Allocates the outputs and one array per step.
    """
    from ..data import ZCA

    n = len(y_train)
    train, test = standardize(dataset, x_train, x_test, stats=stats)
    steps, out_train = [], train
    if zca is not None:
        try:
            whitener = ZCA(eps=zca).fit(train)
        except ValueError as exc:
            raise ParameterError("zca", f"zca={zca}: {exc}") from None
        steps.append(whitener.transform)
        out_train = whitener.transform(out_train)
    if patches is not None:
        with patch_names():
            out_train = patches.fit_transform(out_train)
        steps.append(patches.transform)

    def run(x):
        with patch_names():
            for step in steps:
                x = step(x)
        return x

    if flip_augment:
        out_train = np.concatenate([out_train, run(np.ascontiguousarray(train[:, :, ::-1]))])
        y_train = np.concatenate([y_train, y_train])
    record = {
        "stats": stats,
        "zca": zca,
        "random_patches": None if patches is None else patches.describe(),
        "flip_augment": bool(flip_augment),
        "n_train_images": int(n),
        "input_shape": [int(v) for v in np.shape(x_train)[1:]],
    }
    return out_train, y_train, run(test), record
