"""The disease taxonomy: tree, partition into training classes, and aggregation."""

from .aggregate import aggregate, aggregation_matrix, coarse_matrix, fine_matrix, malignancy_matrix
from .codes import PRIVATE_SCHEME, ClassCode, CodeError, code_for, private_code
from .partition import PAPER_MAX_CLASS_SIZE, partition_diseases, partition_taxonomy
from .tree import FORMAT, Node, Taxonomy, TaxonomyError, check_partition, default_taxonomy, load_taxonomy

__all__ = [
    "FORMAT",
    "PAPER_MAX_CLASS_SIZE",
    "PRIVATE_SCHEME",
    "ClassCode",
    "CodeError",
    "Node",
    "Taxonomy",
    "TaxonomyError",
    "aggregate",
    "aggregation_matrix",
    "check_partition",
    "coarse_matrix",
    "code_for",
    "default_taxonomy",
    "fine_matrix",
    "load_taxonomy",
    "malignancy_matrix",
    "partition_diseases",
    "partition_taxonomy",
    "private_code",
]
