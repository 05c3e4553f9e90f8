"""Turning the ensemble's output tensors into named scores. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from skinbatch.contract import SCORE_OUTPUTS, Tensor
from skinbatch.modelcard import ModelCard

OUTPUTS = SCORE_OUTPUTS
TOP_K = 5


@dataclass(frozen=True)
class Scores:
    """The scores of one image (one frame)."""

    malignancy: float
    coarse: dict[str, float]
    fine: dict[str, float]
    top_classes: list[tuple[str, float]]
    training_probs: np.ndarray
    malignancy_map: np.ndarray | None = None
    """FP32 (h, w): the class activation map of P(malignant), when it was asked for and served."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "malignancy": self.malignancy,
            "coarse": self.coarse,
            "fine": self.fine,
            "top_classes": [{"name": n, "probability": p} for n, p in self.top_classes],
        }


def scores_from_outputs(outputs: dict[str, np.ndarray], card: ModelCard) -> list[Scores]:
    """One ``Scores`` per row of a batch of ensemble outputs."""
    training = np.asarray(outputs[Tensor.TRAINING_PROBS], dtype=np.float32)
    coarse = np.asarray(outputs[Tensor.COARSE_PROBS], dtype=np.float32)
    fine = np.asarray(outputs[Tensor.FINE_PROBS], dtype=np.float32)
    malignancy = np.asarray(outputs[Tensor.MALIGNANCY], dtype=np.float32).reshape(-1)
    maps = outputs.get(Tensor.MALIGNANCY_MAP)
    classes, coarse_labels, fine_labels = card.training_classes, card.coarse_labels, card.fine_labels
    if training.shape[1] != len(classes) or coarse.shape[1] != len(coarse_labels) or fine.shape[1] != len(fine_labels):
        raise ValueError(
            f"the served model's outputs ({training.shape[1]}, {coarse.shape[1]}, {fine.shape[1]}) do not match "
            f"its model card ({len(classes)}, {len(coarse_labels)}, {len(fine_labels)}); re-run `skinbatch convert`"
        )
    out = []
    for i in range(training.shape[0]):
        top = np.argsort(-training[i], kind="stable")[:TOP_K]
        out.append(
            Scores(
                malignancy=float(malignancy[i]),
                coarse={name: float(v) for name, v in zip(coarse_labels, coarse[i])},
                fine={name: float(v) for name, v in zip(fine_labels, fine[i])},
                top_classes=[(classes[j], float(training[i, j])) for j in top],
                training_probs=training[i].copy(),
                malignancy_map=None if maps is None else np.asarray(maps[i], dtype=np.float32).copy(),
            )
        )
    return out
