"""Aggregation of training-class probabilities up the tree (Esteva et al. 2017, Fig. 5).

A node's probability is the sum of the probabilities of the training classes that lie under it. Each
level is a 0/1 matrix ``A`` of shape (K, n); ``P_level = P_training @ A``. The same matrices are baked
into the Triton ``taxonomy`` model by the converter, and are used here to check it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .tree import Node, Taxonomy, TaxonomyError


def _covering(cls: Node, targets: dict[str, int]) -> int | None:
    for node in [*cls.ancestors(), cls]:
        if node.name in targets:
            return targets[node.name]
    return None


def aggregation_matrix(taxonomy: Taxonomy, target_names: Sequence[str]) -> np.ndarray:
    """A (K, len(target_names)) float32 0/1 matrix mapping training classes to target nodes.

    The targets must not overlap and every training class must lie under exactly one of them, so that
    the aggregated probabilities again sum to one.
    """
    if not taxonomy.training_classes:
        raise TaxonomyError("the taxonomy lists no training classes; run `skinbatch taxonomy partition`")
    index = {name: j for j, name in enumerate(target_names)}
    for name in target_names:
        taxonomy.node(name)
    matrix = np.zeros((len(taxonomy.training_classes), len(target_names)), dtype=np.float32)
    for k, cls_name in enumerate(taxonomy.training_classes):
        j = _covering(taxonomy.node(cls_name), index)
        if j is None:
            raise TaxonomyError(
                f"training class {cls_name!r} spans several of {list(target_names)[:3]}...; "
                "its probability cannot be split between them. Partition with a smaller "
                "max class size so every class lies below the second level."
            )
        matrix[k, j] = 1.0
    return matrix


def coarse_matrix(taxonomy: Taxonomy) -> np.ndarray:
    """Training classes → first level (benign / malignant / non-neoplastic)."""
    return aggregation_matrix(taxonomy, taxonomy.coarse_labels)


def fine_matrix(taxonomy: Taxonomy) -> np.ndarray:
    """Training classes → second level (the nine classes)."""
    return aggregation_matrix(taxonomy, taxonomy.fine_labels)


def malignancy_matrix(taxonomy: Taxonomy) -> np.ndarray:
    """Training classes → P(malignant), shape (K, 1)."""
    coarse = taxonomy.coarse_labels
    if taxonomy.malignant_node not in coarse:
        raise TaxonomyError(
            f"the malignant node {taxonomy.malignant_node!r} is not on the first level {coarse}; "
            "set 'malignant_node' in the taxonomy file"
        )
    return coarse_matrix(taxonomy)[:, [coarse.index(taxonomy.malignant_node)]]


def aggregate(probs: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Sum training-class probabilities (N, K) into target nodes (N, n), in float64 for exactness."""
    return (np.asarray(probs, dtype=np.float64) @ matrix.astype(np.float64)).astype(np.float32)
