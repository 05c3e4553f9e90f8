"""``PartitionDiseases`` from Esteva et al. 2017, Extended Data Table 1.

A node together with all its descendants is one candidate class. If the candidate has fewer than
``max_class_size`` images (a strict "<") it becomes a training class; otherwise the algorithm recurses
into each child. It starts at the root. With max_class_size = 1,000 the paper obtained 757 classes.

A leaf that alone reaches ``max_class_size`` cannot be split further, so it becomes a class of its own.
"""

from __future__ import annotations

from skinbatch.contract import ConfigurationError

from .tree import Node, Taxonomy

PAPER_MAX_CLASS_SIZE = 1000


def partition_diseases(root: Node, max_class_size: int = PAPER_MAX_CLASS_SIZE) -> list[Node]:
    """The training classes, depth first, in the order the tree lists its children."""
    if max_class_size < 1:
        raise ConfigurationError(f"max_class_size must be at least 1, got {max_class_size}")
    classes: list[Node] = []
    # An explicit stack, because clinical taxonomies can be deep enough to trouble recursion limits.
    stack = [root]
    while stack:
        node = stack.pop()
        if node.total_images < max_class_size or node.is_leaf:
            classes.append(node)
        else:
            stack.extend(reversed(node.children))
    return classes


def partition_taxonomy(taxonomy: Taxonomy, max_class_size: int = PAPER_MAX_CLASS_SIZE) -> Taxonomy:
    """The same tree, with its training classes set by ``partition_diseases``."""
    classes = partition_diseases(taxonomy.root, max_class_size)
    return taxonomy.with_training_classes([c.name for c in classes])
