"""The model card: the one source of truth for what a model repository serves.

``skinbatch convert`` writes it twice from the same object: as ``skin_classifier/model_card.json`` and as
the ensemble's config parameter ``model_card``, so that a consumer can read it through Triton's
model-configuration API without sharing a file system with the server.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skinbatch.contract import ENSEMBLE, SCORE_OUTPUTS, ConfigurationError, Tensor

if TYPE_CHECKING:
    from skinbatch.drift import ReferenceDistribution
    from skinbatch.imaging import Preprocessing

FORMAT = "skinbatch-model-card/1"
CARD_FILE = "model_card.json"
CARD_PARAMETER = "model_card"
ENSEMBLE_NAME = ENSEMBLE
MALIGNANCY_MAP_OUTPUT = str(Tensor.MALIGNANCY_MAP)


class ModelCardError(ConfigurationError):
    """The model card is missing or unreadable."""


@dataclass
class ModelCard:
    name: str
    version: str
    trained: bool
    source: dict[str, Any]
    """``kind`` (checkpoint | onnx | demo-weights), ``sha256`` of the weights, ``filename`` (base name only)."""
    target: str
    precision: str
    preprocessing: dict[str, Any]
    """``Preprocessing.to_dict()`` plus ``normalization``, which is folded into the graph."""
    taxonomy: dict[str, Any]
    """``name``, ``sha256``, ``file``, ``training_classes`` (names in output order), ``coarse_labels``,
    ``fine_labels``, ``fine_parents``, ``malignant_node``."""
    max_batch_size: int
    created: str = ""
    notes: list[str] = field(default_factory=list)
    format: str = FORMAT
    # -- added later: optional, so older cards still load ------------------------------------
    outputs: list[str] = field(default_factory=lambda: [str(name) for name in SCORE_OUTPUTS])
    """The ensemble's outputs. Older cards have none: they serve exactly the four score outputs. Ask for
    ``MALIGNANCY_MAP`` only where it is listed (:attr:`serves_malignancy_map`)."""
    malignancy_map: dict[str, Any] | None = None
    """How the served ``MALIGNANCY_MAP`` is made: ``tensor``, ``shape`` ([h, w] grid), ``channels``,
    ``malignant_classes``, ``features`` and ``method``; None where the repository serves no map."""
    reference_distribution: dict[str, Any] | None = None
    """P(malignant) on a validation set (``skinbatch.drift.ReferenceDistribution.to_dict()``), the
    baseline of the score-drift PSI; None until one is embedded."""
    color_managed_input: bool = False
    """The model expects colour-managed sRGB input: frames with an embedded ICC profile are converted to
    sRGB before the resize. ``skinbatch convert`` sets it (on unless ``--no-color-management``); older
    cards lack it and keep the earlier behaviour (profiles ignored)."""

    # -- derived ---------------------------------------------------------------------------
    @property
    def coarse_labels(self) -> list[str]:
        return list(self.taxonomy["coarse_labels"])

    @property
    def fine_labels(self) -> list[str]:
        return list(self.taxonomy["fine_labels"])

    @property
    def training_classes(self) -> list[str]:
        return list(self.taxonomy["training_classes"])

    @property
    def input_size(self) -> int:
        return int(self.preprocessing.get("size", 299))

    @property
    def serves_malignancy_map(self) -> bool:
        return MALIGNANCY_MAP_OUTPUT in self.outputs and self.malignancy_map is not None

    @property
    def malignancy_map_grid(self) -> tuple[int, int] | None:
        """(h, w) of ``MALIGNANCY_MAP``, or None where the repository serves no map."""
        if not self.serves_malignancy_map:
            return None
        height, width = self.malignancy_map["shape"]  # type: ignore[index]
        return int(height), int(width)

    def reference(self) -> ReferenceDistribution | None:
        """The embedded reference distribution, parsed and checked; None where the card has none."""
        if self.reference_distribution is None:
            return None
        from skinbatch.drift import ReferenceDistribution

        return ReferenceDistribution.from_dict(self.reference_distribution)

    def preprocessing_spec(self) -> Preprocessing:
        from skinbatch.imaging import Preprocessing

        fields = {k: v for k, v in self.preprocessing.items() if k != "normalization"}
        if self.color_managed_input:
            fields["color_management"] = True
        return Preprocessing.from_dict(fields)

    def model_summary(self) -> dict[str, Any]:
        """What every score carries, so it can be traced to the exact model."""
        return {
            "name": self.name,
            "version": self.version,
            "trained": self.trained,
            "weights_sha256": self.source.get("sha256", ""),
            "taxonomy_sha256": self.taxonomy.get("sha256", ""),
        }

    # -- (de)serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelCard:
        if d.get("format") != FORMAT:
            raise ModelCardError(
                f"unknown model card format {d.get('format')!r}; this version reads {FORMAT!r}. "
                "Re-run `skinbatch convert` with this version of skinbatch."
            )
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ModelCardError(f"the model card is not valid JSON: {exc}") from None


def load_model_card(repository: str | Path, model: str = ENSEMBLE_NAME) -> ModelCard:
    """Read the card from a model repository folder."""
    path = Path(repository) / model / CARD_FILE
    if not path.is_file():
        raise ModelCardError(
            f"no model card at {path}. Is this a repository written by `skinbatch convert`?"
        )
    return ModelCard.from_json(path.read_text(encoding="utf-8"))


def card_from_model_config(config: dict[str, Any]) -> ModelCard:
    """Read the card from a model configuration as Triton returns it (JSON form, HTTP or gRPC)."""
    params = config.get("parameters") or {}
    entry = params.get(CARD_PARAMETER)
    if not entry:
        raise ModelCardError(
            f"model {config.get('name')!r} carries no {CARD_PARAMETER!r} parameter; "
            "serve a repository written by `skinbatch convert`"
        )
    text = entry.get("string_value") if isinstance(entry, dict) else str(entry)
    if not isinstance(text, str):
        raise ModelCardError(
            f"model {config.get('name')!r}: its {CARD_PARAMETER!r} parameter has no string_value; "
            "serve a repository written by `skinbatch convert`"
        )
    return ModelCard.from_json(text)
