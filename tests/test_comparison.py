"""The static comparison of notebook 2 and the classroom page (cntk_widgets.comparison): its measures
(checked on matrices whose values are known by construction), the findings the notebooks state (checked
on the default digits data and on the exact CIFAR-10 subset) and the mark of one that does not hold.
Its HTML pictures: test_static_plots.py."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import make_images

from cntk_widgets.comparison import COMPARISON_SPECS, FINDINGS, KernelComparison, kernel_measures
from cntk_widgets.lab_data import lab_images


def test_measures_of_a_two_class_block_matrix():
    # 4 images, classes 0 0 1 1; within-class entries 0.8, between-class entries 0.2
    y = np.array([0, 0, 1, 1])
    k = np.where(y[:, None] == y[None, :], 0.8, 0.2)
    np.fill_diagonal(k, 1.0)
    m = kernel_measures(k, y)
    off = [0.8, 0.2, 0.2, 0.8, 0.2, 0.2, 0.2, 0.2, 0.8, 0.2, 0.2, 0.8]
    assert m["mean"] == pytest.approx(np.mean(off))
    assert m["contrast"] == pytest.approx(0.6)
    assert m["relative_contrast"] == pytest.approx(0.6 / (1 - np.mean(off)))
    # eigenvalues of this matrix: 1 + 0.8 + 2 * 0.2 = 2.2, 1 + 0.8 - 0.4 = 1.4, and 0.2 twice
    assert m["top_share"] == pytest.approx(2.2 / 4)
    assert m["low"] == pytest.approx(0.2) and m["high"] == pytest.approx(0.8) and m["spread"] == pytest.approx(0.6)


def test_a_constant_kernel_has_no_contrast_and_one_eigenvalue():
    k = np.ones((5, 5))
    m = kernel_measures(k, np.array([0, 0, 1, 1, 2]))
    assert m["contrast"] == 0 and m["relative_contrast"] == 0 and m["top_share"] == pytest.approx(1.0)


def _check_findings(images, dtype):
    cmp = KernelComparison(images.x, images.y, images.class_names, dtype=dtype, disk_cache=False)
    assert set(cmp.results) == set(COMPARISON_SPECS)
    failed = [(f.text, evidence) for f, holds, evidence in cmp.findings() if not holds]
    assert not failed, failed
    return cmp


@pytest.mark.parametrize("seed", [0, 1])
def test_the_findings_hold_on_the_default_digits(seed):
    _check_findings(lab_images("digits", 4, seed=seed), "float64")


@pytest.mark.slow
def test_the_findings_hold_on_the_cifar10_subset():
    try:
        images = lab_images("cifar10-subset", 4)
    except FileNotFoundError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must have the exact CIFAR-10 subset: {exc}")
        pytest.skip(f"exact CIFAR-10 subset absent: {exc}")
    cmp = _check_findings(images, "float32")  # the lab's CIFAR setting
    html = cmp.findings_html()
    assert html.count("✓") == len(FINDINGS) and "✗" not in html


def test_a_finding_that_does_not_hold_is_marked():
    y = np.repeat(np.arange(3), 3)
    x = make_images(9, (4, 4, 1), seed=0)
    cmp = KernelComparison(x, y, disk_cache=False)
    cmp.measures["GAP-3"]["top_share"] = 0.0  # force the first finding to fail
    html = cmp.findings_html()
    assert "✗ not here" in html and cmp.findings()[0][1] is False
