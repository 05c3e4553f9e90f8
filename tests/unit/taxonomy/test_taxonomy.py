"""Taxonomy: partition, aggregation and the file format, with property-based tests."""

from __future__ import annotations

import json
from itertools import count

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from skinbatch.taxonomy import (
    Node,
    Taxonomy,
    TaxonomyError,
    aggregate,
    coarse_matrix,
    default_taxonomy,
    fine_matrix,
    malignancy_matrix,
    partition_diseases,
    partition_taxonomy,
)

_names = count()


def _leaf(images: int) -> dict:
    return {"name": f"d{next(_names)}", "images": images}


@st.composite
def subtrees(draw: st.DrawFn, depth: int = 0) -> dict:
    if depth >= 3 or draw(st.booleans()):
        return _leaf(draw(st.integers(0, 600)))
    kids = draw(st.lists(subtrees(depth + 1), min_size=1, max_size=3))
    return {"name": f"n{next(_names)}", "children": kids}


@st.composite
def taxonomies(draw: st.DrawFn) -> Taxonomy:
    """Root → 1-3 first-level nodes → 1-3 second-level nodes each → random subtrees."""
    first = []
    for i in range(draw(st.integers(1, 3))):
        fine = [
            {"name": f"f{next(_names)}", "children": draw(st.lists(subtrees(), min_size=1, max_size=3))}
            for _ in range(draw(st.integers(1, 3)))
        ]
        first.append({"name": "malignant" if i == 0 else f"c{next(_names)}", "children": fine})
    return Taxonomy.from_dict({"root": {"name": f"root{next(_names)}", "children": first}})


def reference_partition(node: Node, max_size: int) -> list[str]:
    """The paper's recursive pseudo-code, written as plainly as possible."""
    if node.total_images < max_size or not node.children:
        return [node.name]
    out: list[str] = []
    for child in node.children:
        out += reference_partition(child, max_size)
    return out


def deep_partition(tax: Taxonomy) -> Taxonomy:
    """Partition so that no class spans two second-level nodes."""
    smallest_first_level = min(n.total_images for n in tax.level(1))
    # A first-level node with fewer images than max_class_size would itself become a class.
    assume(smallest_first_level >= 1)
    return partition_taxonomy(tax, smallest_first_level)


# -- partition -------------------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(taxonomies(), st.integers(1, 3000))
def test_every_disease_lands_in_exactly_one_class(tax: Taxonomy, max_size: int) -> None:
    classes = partition_diseases(tax.root, max_size)
    owners: dict[str, int] = {}
    for cls in classes:
        for leaf in cls.leaves():
            owners[leaf.name] = owners.get(leaf.name, 0) + 1
    assert sorted(owners) == sorted(leaf.name for leaf in tax.root.leaves())
    assert set(owners.values()) == {1}


@settings(max_examples=150, deadline=None)
@given(taxonomies(), st.integers(1, 3000))
def test_partition_matches_reference_algorithm(tax: Taxonomy, max_size: int) -> None:
    assert [c.name for c in partition_diseases(tax.root, max_size)] == reference_partition(tax.root, max_size)


@settings(max_examples=100, deadline=None)
@given(taxonomies(), st.integers(1, 3000))
def test_classes_are_small_unless_they_are_leaves(tax: Taxonomy, max_size: int) -> None:
    for cls in partition_diseases(tax.root, max_size):
        assert cls.total_images < max_size or cls.is_leaf
        # Maximality: the parent of a class was too big, so it was split.
        if cls.parent is not None:
            assert cls.parent.total_images >= max_size


def _crafted() -> Taxonomy:
    return Taxonomy.from_dict({"root": {"name": "root", "children": [
        {"name": "A", "children": [
            {"name": "A1", "children": [{"name": "a1x", "images": 400}, {"name": "a1y", "images": 599}]},
            {"name": "A2", "children": [{"name": "a2x", "images": 1000}, {"name": "a2y", "images": 1}]},
        ]},
        {"name": "B", "children": [{"name": "b1", "images": 999}]},
    ]}})


@pytest.mark.parametrize(
    ("max_size", "expected"),
    [
        (1000, ["A1", "a2x", "a2y", "B"]),  # A1 has 999 < 1000; a2x has exactly 1000: not "<", but a leaf
        (999, ["a1x", "a1y", "a2x", "a2y", "b1"]),  # strict "<": 999 is not a class at 999
        (3000, ["root"]),
        (2000, ["A1", "A2", "B"]),  # A has 400+599+1000+1 = 2000, not < 2000
    ],
)
def test_partition_on_crafted_tree(max_size: int, expected: list[str]) -> None:
    assert [c.name for c in partition_diseases(_crafted().root, max_size)] == expected


def test_partition_rejects_nonpositive_size() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        partition_diseases(_crafted().root, 0)


# -- aggregation -----------------------------------------------------------------------------

def _random_probs(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    logits = rng.normal(size=(n, k)) * 3
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


@settings(max_examples=100, deadline=None)
@given(taxonomies(), st.integers(0, 2**32 - 1))
def test_coarse_and_fine_probabilities_sum_to_one(tax: Taxonomy, seed: int) -> None:
    tax = deep_partition(tax)
    probs = _random_probs(np.random.default_rng(seed), 5, len(tax.training_classes))
    np.testing.assert_allclose(aggregate(probs, coarse_matrix(tax)).sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(aggregate(probs, fine_matrix(tax)).sum(axis=1), 1.0, atol=1e-5)


@settings(max_examples=100, deadline=None)
@given(taxonomies(), st.integers(0, 2**32 - 1))
def test_level_by_level_equals_direct(tax: Taxonomy, seed: int) -> None:
    tax = deep_partition(tax)
    probs = _random_probs(np.random.default_rng(seed), 5, len(tax.training_classes))
    fine = aggregate(probs, fine_matrix(tax))
    coarse = tax.coarse_labels
    fine_to_coarse = np.zeros((len(tax.fine_labels), len(coarse)), dtype=np.float32)
    for j, parent in enumerate(tax.fine_parents):
        fine_to_coarse[j, coarse.index(parent)] = 1
    np.testing.assert_allclose(aggregate(fine, fine_to_coarse), aggregate(probs, coarse_matrix(tax)), atol=1e-6)
    malignant = coarse.index(tax.malignant_node)
    np.testing.assert_allclose(aggregate(probs, malignancy_matrix(tax))[:, 0],
                               aggregate(probs, coarse_matrix(tax))[:, malignant], atol=1e-7)


def test_class_spanning_second_level_is_refused() -> None:
    tax = partition_taxonomy(_crafted(), 3000)  # the root is one class
    with pytest.raises(TaxonomyError, match="spans several"):
        fine_matrix(tax)


# -- the bundled taxonomy and the file format ---------------------------------------------

def test_default_taxonomy_has_the_papers_levels() -> None:
    tax = default_taxonomy()
    assert tax.coarse_labels == ["benign", "malignant", "non-neoplastic"]
    assert len(tax.fine_labels) == 9
    assert tax.fine_parents.count("malignant") == 4
    assert "illustrative" in tax.description.lower()
    # The stored classes are exactly what the paper's algorithm gives at maxClassSize = 1000.
    assert tax.training_classes == [c.name for c in partition_diseases(tax.root, 1000)]
    assert coarse_matrix(tax).sum() == len(tax.training_classes)


def test_json_round_trip_and_digest() -> None:
    tax = default_taxonomy()
    again = Taxonomy.from_dict(json.loads(tax.to_json()))
    assert again.to_dict() == tax.to_dict()
    assert again.sha256() == tax.sha256()
    reordered = tax.with_training_classes(list(reversed(tax.training_classes)))
    assert reordered.sha256() != tax.sha256()


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"root": {"name": "r", "children": [{"name": "x", "images": 1}, {"name": "x", "images": 2}]}}, "twice"),
        ({"root": {"name": "r", "children": [{"name": "x", "images": 1}]}, "training_classes": ["nope"]},
         "not a node"),
        ({"root": {"name": "r", "children": [{"name": "x", "images": 1}, {"name": "y", "images": 1}]},
          "training_classes": ["x"]}, "under no training class"),
        ({"root": {"name": "r", "children": [{"name": "x", "images": 1}]}, "training_classes": ["r", "x"]},
         "two training classes"),
        ({"root": {"name": "r", "images": 3, "children": [{"name": "x", "images": 1}]}}, "only leaves"),
        ({"format": "other/9", "root": {"name": "r"}}, "unknown taxonomy format"),
    ],
)
def test_invalid_files_are_refused_with_a_reason(doc: dict, message: str) -> None:
    with pytest.raises(TaxonomyError, match=message):
        Taxonomy.from_dict(doc)
