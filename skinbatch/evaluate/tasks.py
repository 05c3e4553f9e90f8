"""The binary tasks and how each image is scored for them.

* **malignant vs benign**: cases labelled under the first-level ``malignant`` node against those under
  ``benign`` (non-neoplastic cases are left out). Score: the served ``MALIGNANCY`` output, P(malignant),
  the same number triage ranks by and the consumer publishes.
* **keratinocyte carcinoma vs seborrheic keratosis** and **melanoma vs melanocytic nevus** (Esteva et
  al. 2017, Fig. 3): cases labelled under the positive node against those under the negative node.
  Score: the probability of the positive node normalised within the two nodes,
  ``P(pos) / (P(pos) + P(neg))``, where a node's probability is the sum of the training-class
  probabilities under it (the paper's Fig. 5 rule). The normalisation makes the score ignore the mass
  on diseases outside the task, as a dermatologist choosing between the two would.

A task whose nodes are missing from the taxonomy, or whose node a training class spans (so its
probability cannot be split), is reported as unavailable with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from skinbatch.taxonomy import Taxonomy

SERVED = "served_malignancy"
NORMALISED = "normalised_within_task"


@dataclass(frozen=True)
class BinaryTask:
    key: str
    title: str
    positive: str
    negative: str
    score: str


PAPER_TASKS: tuple[BinaryTask, ...] = (
    BinaryTask("malignant_vs_benign", "Malignant vs benign", "malignant", "benign", SERVED),
    BinaryTask("carcinoma_vs_seborrheic_keratosis", "Keratinocyte carcinoma vs seborrheic keratosis",
               "keratinocyte carcinoma", "seborrheic keratosis", NORMALISED),
    BinaryTask("melanoma_vs_nevus", "Melanoma vs melanocytic nevus", "melanoma", "melanocytic nevus", NORMALISED),
)


def tasks_for(taxonomy: Taxonomy) -> tuple[BinaryTask, ...]:
    """The paper's tasks, with the first one using the taxonomy's own malignant node."""
    first = PAPER_TASKS[0]
    return (BinaryTask(first.key, first.title, taxonomy.malignant_node, first.negative, first.score), *PAPER_TASKS[1:])


def is_under(taxonomy: Taxonomy, label: str, node: str) -> bool:
    """True when ``label`` is ``node`` or one of its descendants."""
    n = taxonomy.node(label)
    return n.name == node or any(a.name == node for a in n.ancestors())


def subtree_mask(taxonomy: Taxonomy, node: str) -> np.ndarray:
    """Which training classes lie under ``node``; raises ``ValueError`` if one spans it."""
    classes = taxonomy.training_classes
    mask = np.zeros(len(classes), dtype=bool)
    for k, name in enumerate(classes):
        if is_under(taxonomy, name, node):
            mask[k] = True
        elif is_under(taxonomy, node, name):
            raise ValueError(
                f"training class {name!r} contains {node!r} and other diseases, so P({node}) cannot be "
                "separated from it; this taxonomy was partitioned too coarsely for the task")
    return mask


def unavailable_reason(taxonomy: Taxonomy, task: BinaryTask) -> str | None:
    for node in (task.positive, task.negative):
        if node not in taxonomy:
            return f"node {node!r} is not in taxonomy {taxonomy.name!r}"
    if task.score == NORMALISED:
        for node in (task.positive, task.negative):
            try:
                subtree_mask(taxonomy, node)
            except ValueError as exc:
                return str(exc)
    return None


def normalised_scores(training_probs: np.ndarray, taxonomy: Taxonomy, task: BinaryTask) -> np.ndarray:
    """``P(pos) / (P(pos) + P(neg))`` per row of (N, K) training-class probabilities (0.5 if both are 0)."""
    probs = np.asarray(training_probs, dtype=np.float64)
    p_pos = probs[:, subtree_mask(taxonomy, task.positive)].sum(axis=1)
    p_neg = probs[:, subtree_mask(taxonomy, task.negative)].sum(axis=1)
    total = p_pos + p_neg
    return np.where(total > 0, p_pos / np.where(total > 0, total, 1.0), 0.5)
