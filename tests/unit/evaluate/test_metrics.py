"""Our ROC/AUC against scikit-learn's on the same numbers; bootstrap, operating points, confusion."""

from __future__ import annotations

import numpy as np
import pytest

from skinbatch.evaluate.metrics import (
    MetricError,
    accuracy,
    bootstrap_auc_ci,
    confusion_matrix,
    operating_point,
    roc_auc,
    roc_curve,
)
from tests.fixtures.needs import need_module

sk_metrics = need_module("sklearn.metrics", "scikit-learn: pip install 'skinbatch[test]'")


@pytest.mark.parametrize("seed", range(8))
def test_auc_matches_sklearn_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    y = rng.integers(0, 2, n)
    y[0], y[1] = 0, 1
    scores = rng.random(n) + 0.3 * y
    assert roc_auc(y, scores) == pytest.approx(sk_metrics.roc_auc_score(y, scores), abs=1e-12)


def test_auc_matches_sklearn_with_heavy_ties() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    scores = rng.integers(0, 4, 200) / 4  # four distinct values only
    assert roc_auc(y, scores) == pytest.approx(sk_metrics.roc_auc_score(y, scores), abs=1e-12)


def test_roc_curve_points_match_sklearn() -> None:
    rng = np.random.default_rng(11)
    y = rng.integers(0, 2, 60)
    scores = np.round(rng.random(60), 2)
    fpr, tpr, thr = roc_curve(y, scores)
    sk_fpr, sk_tpr, sk_thr = sk_metrics.roc_curve(y, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thr[1:], sk_thr[1:])
    assert np.isinf(thr[0])


def test_perfect_and_inverted_scores() -> None:
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5


def test_one_class_is_an_error() -> None:
    with pytest.raises(MetricError, match="both classes"):
        roc_auc([1, 1, 1], [0.1, 0.2, 0.3])


def test_bootstrap_interval_brackets_the_auc_and_is_reproducible() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 150)
    s = rng.random(150) + 0.5 * y
    ci = bootstrap_auc_ci(y, s, n_resamples=500, seed=1)
    auc = roc_auc(y, s)
    assert ci.low < auc < ci.high
    assert 0 < ci.high - ci.low < 0.4
    assert ci == bootstrap_auc_ci(y, s, n_resamples=500, seed=1)


def test_operating_point_counts() -> None:
    p = operating_point([1, 1, 0, 0, 1], [0.9, 0.4, 0.6, 0.1, 0.5], threshold=0.5)
    assert (p.tp, p.fn, p.tn, p.fp) == (2, 1, 1, 1)
    assert p.sensitivity == pytest.approx(2 / 3) and p.specificity == 0.5
    sk = sk_metrics.confusion_matrix([1, 1, 0, 0, 1], [1, 0, 1, 0, 1])
    assert (sk[1, 1], sk[1, 0], sk[0, 0], sk[0, 1]) == (p.tp, p.fn, p.tn, p.fp)


def test_confusion_matrix_matches_sklearn() -> None:
    labels = ["benign", "malignant", "non-neoplastic"]
    truth = ["benign", "malignant", "benign", "non-neoplastic", "malignant"]
    pred = ["benign", "benign", "benign", "malignant", "malignant"]
    m = confusion_matrix(truth, pred, labels)
    np.testing.assert_array_equal(m, sk_metrics.confusion_matrix(truth, pred, labels=labels))
    assert accuracy(m) == sk_metrics.accuracy_score(truth, pred)
