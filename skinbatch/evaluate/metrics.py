"""Classification metrics, implemented here (no scikit-learn at run time) and checked against it in tests.

* ROC: one point per distinct score, thresholds from high to low, "positive" meaning ``score >= t``;
  tied scores move together (a diagonal segment), so the AUC counts a tie as half, as the
  Mann–Whitney U statistic does. AUC is the trapezoid rule over those points.
* Bootstrap confidence interval of the AUC: cases resampled with replacement, resamples with only one
  class skipped, percentile interval.
* Sensitivity and specificity at given thresholds; accuracy and confusion matrices for the 3-way and
  9-way tasks (rows: truth, columns: prediction).

Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from skinbatch.contract import SkinbatchError


class MetricError(SkinbatchError, ValueError):
    """The data cannot give this metric (e.g. only one class present)."""


def _binary_inputs(
    y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise MetricError(f"{y.size} labels but {s.size} scores")
    if not np.all(np.isfinite(s)):
        raise MetricError("scores must be finite")
    return y, s


def roc_curve(y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-positive rates, true-positive rates and thresholds, starting at (0, 0) with threshold +inf."""
    y, s = _binary_inputs(y_true, scores)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise MetricError(f"a ROC curve needs both classes; got {n_pos} positive and {n_neg} negative cases")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    # the last index of each run of equal scores: one ROC point per distinct threshold
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.size - 1]
    tps = np.cumsum(y_sorted)[last]
    fps = (last + 1) - tps
    fpr = np.r_[0.0, fps / n_neg]
    tpr = np.r_[0.0, tps / n_pos]
    thresholds = np.r_[np.inf, s_sorted[last]]
    return fpr, tpr, thresholds


def auc_trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def roc_auc(y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    fpr, tpr, _ = roc_curve(y_true, scores)
    return auc_trapezoid(fpr, tpr)


@dataclass
class ConfidenceInterval:
    low: float
    high: float
    level: float
    resamples: int
    """Resamples that had both classes (the others are skipped)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bootstrap_auc_ci(y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray,
                     n_resamples: int = 1000, level: float = 0.95, seed: int = 0) -> ConfidenceInterval:
    """Percentile bootstrap interval of the ROC AUC (cases resampled with replacement)."""
    y, s = _binary_inputs(y_true, scores)
    if not 0 < level < 1:
        raise MetricError("the confidence level must be between 0 and 1")
    rng = np.random.default_rng(seed)
    n = y.size
    aucs = []
    for _ in range(n_resamples):
        idx = rng.integers(0, n, n)
        yb = y[idx]
        if yb.all() or not yb.any():
            continue
        aucs.append(roc_auc(yb, s[idx]))
    if not aucs:
        raise MetricError("no bootstrap resample had both classes; the set is too small for an interval")
    alpha = (1 - level) / 2
    low, high = np.quantile(np.asarray(aucs), [alpha, 1 - alpha])
    return ConfidenceInterval(float(low), float(high), level, len(aucs))


@dataclass
class OperatingPoint:
    threshold: float
    sensitivity: float
    specificity: float
    tp: int
    fn: int
    tn: int
    fp: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def operating_point(y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray,
                    threshold: float) -> OperatingPoint:
    """Sensitivity and specificity when ``score >= threshold`` is called positive."""
    y, s = _binary_inputs(y_true, scores)
    pred = s >= threshold
    tp = int(np.sum(pred & y))
    fn = int(np.sum(~pred & y))
    tn = int(np.sum(~pred & ~y))
    fp = int(np.sum(pred & ~y))
    sens = tp / (tp + fn) if tp + fn else float("nan")
    spec = tn / (tn + fp) if tn + fp else float("nan")
    return OperatingPoint(float(threshold), sens, spec, tp, fn, tn, fp)


def confusion_matrix(truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Counts, rows = true label, columns = predicted label, in ``labels`` order."""
    index = {name: i for i, name in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(truth, predicted):
        if t not in index or p not in index:
            raise MetricError(f"label {t if t not in index else p!r} is not one of {list(labels)}")
        m[index[t], index[p]] += 1
    return m


def accuracy(matrix: np.ndarray) -> float:
    total = int(matrix.sum())
    return float(np.trace(matrix) / total) if total else float("nan")


def bootstrap_accuracy_ci(correct: Sequence[bool] | np.ndarray, n_resamples: int = 1000, level: float = 0.95,
                          seed: int = 0) -> ConfidenceInterval:
    c = np.asarray(correct, dtype=np.float64)
    if c.size == 0:
        raise MetricError("no cases")
    rng = np.random.default_rng(seed)
    means = c[rng.integers(0, c.size, (n_resamples, c.size))].mean(axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return ConfidenceInterval(float(low), float(high), level, n_resamples)
