"""The regression lab's model (cntk_widgets.regression_model): its settings are checked, a singular
kernel's hint speaks the lab's language (its ridge control, not the library's ``ridge="cv"``), its
preprocessing (ZCA, flip augmentation, random patches) equals a direct computation, and a run with the
later kernels (Myrtle, flip-symmetrised) equals the 4-D oracle's regression."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import one_hot, raises_param, rel_err

from cntk_core.regression import SingularKernelError
from cntk_widgets.regression_model import LabSettings, RegressionLabModel, solve_predict


def test_lab_settings_seed_and_ridge_are_validated():
    with raises_param("seed"):
        LabSettings(seed=-1)
    for bad in (1.5, "x", True):  # not an integer: a ValueError too (the lab's error box shows it)
        with pytest.raises(ValueError, match="^seed must be an integer >= 0"):
            LabSettings(seed=bad)
    with pytest.raises(ValueError, match="^ridge must be a finite number >= 0"):
        LabSettings(ridge="cv")


def test_singular_kernel_hint_speaks_the_labs_language():
    k = np.ones((4, 4))
    with pytest.raises(SingularKernelError, match=r"turn on the ridge \(e.g. 1e-6\)") as info:
        solve_predict(k, np.ones((2, 4)), np.array([0, 1, 0, 1]), 2, 0.0)
    assert "cv" not in str(info.value)


# -- preprocessing: ZCA, flip augmentation, random patches -------------------------------------------------
def test_lab_settings_preprocessing_is_validated():
    for bad in (-0.1, "0.1", True, float("nan")):
        with raises_param("zca"):
            LabSettings(zca=bad)
    assert LabSettings(zca=0).zca == 0.0 and LabSettings().zca is None  # 0: plain ZCA; None: off
    for bad in ("yes", 2):  # a ValueError in the lab (its error box), as every bad setting
        with raises_param("flip_augment"):
            LabSettings(flip_augment=bad)
    for bad in (1, -2):
        with raises_param("patches"):
            LabSettings(patches=bad)
    with raises_param("patch_size"):
        LabSettings(patch_size=0)
    s = LabSettings(zca=0.1, flip_augment=True, patches=16, patch_size=3)
    assert s.preprocessing() == "standardised, ZCA eps 0.1, flip-augmented, 16 random 3x3 patches"
    assert LabSettings().preprocessing() == "standardised"


def _standardised(seed: int, n: int, n_test: int):
    """The digits subset the lab draws, standardised by hand: pixels / 16, the training pixels' mean and
    (population) std over every pixel (one channel)."""
    from cntk_core.data import balanced_subset, load_dataset

    ds = load_dataset("digits")
    xtr, ytr = balanced_subset(ds.x_train, ds.y_train, n, seed=seed, n_classes=10)
    xte, yte = balanced_subset(ds.x_test, ds.y_test, n_test, seed=seed, n_classes=10)
    a, b = xtr / 16.0, xte / 16.0
    mean, std = a.mean(), a.std()
    return (a - mean) / std, ytr, (b - mean) / std, yte


def test_zca_and_flip_augmentation_equal_a_direct_computation():
    model = RegressionLabModel(synchronous=True, n_per_class=12, n_test_per_class=2, seed=3, zca=0.3, flip_augment=True)
    x_train, y_train, x_test, y_test, raw_test, _ = model.subset()
    a, ytr, b, yte = _standardised(3, 12, 2)
    flat = a.reshape(len(a), -1)
    mu = flat.mean(axis=0)
    cov = (flat - mu).T @ (flat - mu) / len(flat)
    s, u = np.linalg.eigh(cov)
    s = np.clip(s, 0, None)
    w = u @ np.diag((s + 0.3 * s.mean()) ** -0.5) @ u.T  # fitted on the original training images only

    def white(x):
        return ((x.reshape(len(x), -1) - mu) @ w).reshape(x.shape)

    n = len(a)
    assert x_train.shape == (2 * n, 8, 8, 1) and len(x_test) == len(b)
    np.testing.assert_allclose(x_train[:n], white(a), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(x_train[n:], white(a[:, :, ::-1, :]), rtol=1e-9, atol=1e-9)  # the mirrors
    np.testing.assert_allclose(x_test, white(b), rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(y_train, np.concatenate([ytr, ytr]))
    np.testing.assert_array_equal(y_test, yte)
    assert raw_test.shape == b.shape  # the test pictures stay the raw pixels


def test_random_patches_are_fitted_on_the_original_training_images():
    from cntk_core.data import RandomPatches

    model = RegressionLabModel(synchronous=True, n_per_class=2, n_test_per_class=1, seed=4, patches=6, patch_size=3,
                               flip_augment=True)  # fmt: skip
    x_train, y_train, x_test, _, _, _ = model.subset()
    a, _, b, _ = _standardised(4, 2, 1)
    rp = RandomPatches(6, 3, 1.0, seed=4).fit(a)  # not on the mirrors
    assert x_train.shape == (2 * len(a), 8, 8, 12) and len(y_train) == 2 * len(a)
    np.testing.assert_allclose(x_train, rp.transform(np.concatenate([a, a[:, :, ::-1, :]])), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(x_test, rp.transform(b), rtol=1e-9, atol=1e-9)
    model.set(patch_size=9)
    with raises_param("patch_size", match="do not fit in the 8x8"):
        model.subset()


def test_a_run_with_the_later_kernels_equals_a_direct_computation(monkeypatch):
    """Myrtle-5 with the flip-symmetrised kernel on flip-augmented digits (4x4: the oracle is slow): the
    lab's kernels, predictions, accuracy and history entry against the 4-D oracle's kernels and a direct
    solve."""
    import cntk_widgets.regression_model as rm
    from cntk_core.testing import reference_arch_matrix
    from cntk_widgets.models import ArchitectureModel

    solved = []

    def recording(k_train, k_test, *args):
        solved.append((k_train, k_test))
        return solve_predict(k_train, k_test, *args)

    monkeypatch.setattr(rm, "solve_predict", recording)
    arch = ArchitectureModel(depth=5, preset="myrtle-5", flip=True, kind="nngp")
    model = RegressionLabModel(architecture=arch, backend="numpy", synchronous=True, n_per_class=1,
                               n_test_per_class=1, ridge=1e-3, seed=2, flip_augment=True, downsample=2)  # fmt: skip
    model.run()
    r = model.result
    assert model.error is None and r.spec == arch.spec and r.n_train == 20
    x_train, y_train, x_test, y_test, _, _ = model.subset(r.settings)
    k_train = reference_arch_matrix(x_train, x_train, arch.spec.architecture, "nngp")
    k_test = reference_arch_matrix(x_test, x_train, arch.spec.architecture, "nngp")
    assert rel_err(solved[0][0], k_train) <= 1e-7 and rel_err(solved[0][1], k_test) <= 1e-7
    targets = one_hot(y_train, 10)
    alpha = np.linalg.solve(k_train + 1e-3 * np.mean(np.diag(k_train)) * np.eye(len(k_train)), targets)
    pred = np.argmax(k_test @ alpha, axis=1)
    np.testing.assert_array_equal(r.predictions, pred)
    assert r.accuracy == pytest.approx(np.mean(pred == y_test))
    h = model.history[-1]
    assert (h["preset"], h["flip"], h["flip_augment"], h["kind"], h["depth"]) == ("myrtle-5", True, True, "nngp", 5)


def test_a_myrtle_net_has_no_depth_sweep():
    from cntk_widgets.models import ArchitectureModel

    model = RegressionLabModel(architecture=ArchitectureModel(depth=7, preset="myrtle-7"), synchronous=True)
    with raises_param("depth", match="CNTK-Myrtle-7 has a fixed depth"):
        model.sweep(depths=[3, 7])
    assert model.history == []
