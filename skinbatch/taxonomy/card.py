"""The taxonomy's entry in the model card: what consumers and reports need to name the outputs. Pure."""

from __future__ import annotations

from typing import Any

from .tree import Taxonomy


def taxonomy_card_entry(taxonomy: Taxonomy, file: str) -> dict[str, Any]:
    """The card's ``taxonomy`` section for ``taxonomy``, whose full tree the repository keeps in ``file``."""
    return {
        "name": taxonomy.name,
        "sha256": taxonomy.sha256(),
        "file": file,
        "training_classes": list(taxonomy.training_classes),
        "coarse_labels": list(taxonomy.coarse_labels),
        "fine_labels": list(taxonomy.fine_labels),
        "fine_parents": list(taxonomy.fine_parents),
        "malignant_node": taxonomy.malignant_node,
    }
