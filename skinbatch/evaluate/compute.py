"""From labelled cases and their scores to every figure of the evaluation. Pure: no I/O.

A case is one labelled file. A multi-frame file is one case: its frames' probabilities are averaged
(training classes, first and second level, and P(malignant)).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skinbatch.imaging.acquisition import IMAGE_TYPES
from skinbatch.taxonomy import Taxonomy

from .labels import Case
from .metrics import (
    ConfidenceInterval,
    MetricError,
    OperatingPoint,
    accuracy,
    bootstrap_accuracy_ci,
    bootstrap_auc_ci,
    confusion_matrix,
    operating_point,
    roc_auc,
    roc_curve,
)
from .tasks import SERVED, BinaryTask, is_under, normalised_scores, tasks_for, unavailable_reason


@dataclass
class CaseScores:
    malignancy: float
    coarse: dict[str, float]
    fine: dict[str, float]
    training: np.ndarray
    frames: int = 1

    @classmethod
    def mean_of(cls, frames: Sequence[CaseScores]) -> CaseScores:
        if not frames:
            raise ValueError("no frames")
        return cls(
            malignancy=float(np.mean([f.malignancy for f in frames])),
            coarse={k: float(np.mean([f.coarse[k] for f in frames])) for k in frames[0].coarse},
            fine={k: float(np.mean([f.fine[k] for f in frames])) for k in frames[0].fine},
            training=np.mean([f.training for f in frames], axis=0),
            frames=len(frames),
        )


@dataclass
class TaskResult:
    key: str
    title: str
    positive: str
    negative: str
    score_rule: str
    n_positive: int = 0
    n_negative: int = 0
    auc: float | None = None
    auc_ci: ConfidenceInterval | None = None
    fpr: list[float] = field(default_factory=list)
    tpr: list[float] = field(default_factory=list)
    thresholds: list[float] = field(default_factory=list)
    operating_points: list[OperatingPoint] = field(default_factory=list)
    unavailable: str | None = None
    """Why the task has no figures (missing nodes, too few cases); None when it has them."""
    case_scores: list[tuple[str, int, float]] = field(default_factory=list, repr=False)
    """(path, 1/0 truth, score) per case in the task."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key, "title": self.title, "positive": self.positive, "negative": self.negative,
            "score_rule": self.score_rule, "n_positive": self.n_positive, "n_negative": self.n_negative,
            "auc": self.auc, "auc_ci": self.auc_ci.to_dict() if self.auc_ci else None,
            "operating_points": [p.to_dict() for p in self.operating_points],
            "roc": {"fpr": self.fpr, "tpr": self.tpr,
                    "thresholds": [t if np.isfinite(t) else None for t in self.thresholds]},
            "unavailable": self.unavailable,
        }


@dataclass
class MulticlassResult:
    name: str
    labels: list[str]
    matrix: np.ndarray
    accuracy: float | None
    accuracy_ci: ConfidenceInterval | None
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "labels": self.labels, "matrix": self.matrix.tolist(), "accuracy": self.accuracy,
                "accuracy_ci": self.accuracy_ci.to_dict() if self.accuracy_ci else None, "n": self.n}


@dataclass
class Evaluation:
    tasks: list[TaskResult]
    three_way: MulticlassResult
    nine_way: MulticlassResult
    n_cases: int
    n_scored: int
    thresholds: list[float]
    bootstrap: int
    tasks_by_image_type: dict[str, list[TaskResult]] = field(default_factory=dict)
    """The binary tasks again on the dermoscopic and on the clinical images alone, where the labels say
    which is which (their ``image_type`` column); empty otherwise."""

    def to_dict(self) -> dict[str, Any]:
        out = {"n_cases": self.n_cases, "n_scored": self.n_scored, "thresholds": self.thresholds,
               "bootstrap_resamples": self.bootstrap,
               "tasks": [t.to_dict() for t in self.tasks],
               "three_way": self.three_way.to_dict(), "nine_way": self.nine_way.to_dict()}
        if self.tasks_by_image_type:
            out["tasks_by_image_type"] = {kind: [t.to_dict() for t in tasks]
                                          for kind, tasks in self.tasks_by_image_type.items()}
        return out


def binary_task(task: BinaryTask, cases: Sequence[Case], scores: dict[str, CaseScores], taxonomy: Taxonomy,
                thresholds: Sequence[float], n_boot: int, seed: int) -> TaskResult:
    result = TaskResult(task.key, task.title, task.positive, task.negative, task.score)
    reason = unavailable_reason(taxonomy, task)
    if reason:
        result.unavailable = reason
        return result
    chosen: list[tuple[Case, int]] = []
    for case in cases:
        if str(case.path) not in scores:
            continue
        if is_under(taxonomy, case.label, task.positive):
            chosen.append((case, 1))
        elif is_under(taxonomy, case.label, task.negative):
            chosen.append((case, 0))
    y = np.array([t for _, t in chosen], dtype=int)
    result.n_positive, result.n_negative = int(y.sum()), int(len(y) - y.sum())
    if result.n_positive == 0 or result.n_negative == 0:
        result.unavailable = (f"needs cases of both classes; the labels have {result.n_positive} under "
                              f"{task.positive!r} and {result.n_negative} under {task.negative!r}")
        return result
    if task.score == SERVED:
        s = np.array([scores[str(c.path)].malignancy for c, _ in chosen])
    else:
        s = normalised_scores(np.stack([scores[str(c.path)].training for c, _ in chosen]), taxonomy, task)
    fpr, tpr, thr = roc_curve(y, s)
    result.fpr, result.tpr, result.thresholds = fpr.tolist(), tpr.tolist(), thr.tolist()
    result.auc = roc_auc(y, s)
    try:
        result.auc_ci = bootstrap_auc_ci(y, s, n_resamples=n_boot, seed=seed) if n_boot else None
    except MetricError:
        result.auc_ci = None
    result.operating_points = [operating_point(y, s, t) for t in thresholds]
    result.case_scores = [(str(c.path), t, float(v)) for (c, t), v in zip(chosen, s)]
    return result


def multiclass(name: str, cases: Sequence[Case], scores: dict[str, CaseScores], labels: Sequence[str],
               level: str, n_boot: int, seed: int) -> MulticlassResult:
    truth, predicted = [], []
    for case in cases:
        s = scores.get(str(case.path))
        target = case.coarse if level == "coarse" else case.fine
        if s is None or target is None:
            continue
        probs = s.coarse if level == "coarse" else s.fine
        truth.append(target)
        predicted.append(max(labels, key=lambda lab: probs.get(lab, float("-inf"))))
    matrix = confusion_matrix(truth, predicted, labels)
    correct = np.array([t == p for t, p in zip(truth, predicted)])
    ci = bootstrap_accuracy_ci(correct, n_resamples=n_boot, seed=seed) if n_boot and correct.size else None
    return MulticlassResult(name, list(labels), matrix, accuracy(matrix) if correct.size else None, ci, len(truth))


def evaluate_cases(cases: Sequence[Case], scores: dict[str, CaseScores], taxonomy: Taxonomy,
                   coarse_labels: Sequence[str], fine_labels: Sequence[str], thresholds: Sequence[float] = (0.5,),
                   n_boot: int = 1000, seed: int = 0) -> Evaluation:
    tasks = [binary_task(t, cases, scores, taxonomy, thresholds, n_boot, seed) for t in tasks_for(taxonomy)]
    by_type: dict[str, list[TaskResult]] = {}
    for kind in IMAGE_TYPES:
        subset = [c for c in cases if c.image_type == kind]
        if subset:
            by_type[kind] = [binary_task(t, subset, scores, taxonomy, thresholds, n_boot, seed)
                             for t in tasks_for(taxonomy)]
    return Evaluation(
        tasks_by_image_type=by_type,
        tasks=tasks,
        three_way=multiclass("3-way", cases, scores, coarse_labels, "coarse", n_boot, seed),
        nine_way=multiclass("9-way", cases, scores, fine_labels, "fine", n_boot, seed),
        n_cases=len(cases),
        n_scored=sum(1 for c in cases if str(c.path) in scores),
        thresholds=list(thresholds),
        bootstrap=n_boot,
    )
