"""The taxonomy's entry in the model card: what consumers and reports need to name the outputs. Pure."""

from __future__ import annotations

from typing import Any

from .tree import Taxonomy


def taxonomy_card_entry(taxonomy: Taxonomy, file: str) -> dict[str, Any]:
    """The card's ``taxonomy`` section for ``taxonomy``, whose full tree the repository keeps in ``file``.

    ``codes`` maps each output name (first- and second-level class, training class) that has a coded
    concept to ``{"scheme", "value", "meaning"}``; read it with :func:`skinbatch.taxonomy.code_for`,
    which falls back to a private code for the names it does not list. Cards written before codes
    existed have no ``codes``: every name then gets its private code.
    """
    coded = taxonomy.codes()
    named = [*taxonomy.coarse_labels, *taxonomy.fine_labels, *taxonomy.training_classes]
    return {
        "name": taxonomy.name,
        "sha256": taxonomy.sha256(),
        "file": file,
        "training_classes": list(taxonomy.training_classes),
        "coarse_labels": list(taxonomy.coarse_labels),
        "fine_labels": list(taxonomy.fine_labels),
        "fine_parents": list(taxonomy.fine_parents),
        "malignant_node": taxonomy.malignant_node,
        "codes": {name: coded[name].to_dict() for name in dict.fromkeys(named) if name in coded},
    }
