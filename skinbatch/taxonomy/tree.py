"""The disease tree and the training classes a checkpoint was trained on.

File format (JSON, ``"format": "skinbatch-taxonomy/1"``)::

    {
      "format": "skinbatch-taxonomy/1",
      "name": "...", "description": "...",
      "malignant_node": "malignant",
      "root": {"name": "skin disease", "children": [
          {"name": "benign", "children": [
              {"name": "benign melanocytic lesions", "children": [
                  {"name": "blue nevus", "images": 310}, ...]}]}]},
      "training_classes": ["blue nevus", ...]
    }

Leaves are diseases and carry ``images`` (how many training images are labelled with that disease).
Names are unique across the tree: they are the identifiers. Any node may carry a coded concept,
``"code": {"scheme": "SCT", "value": "254701007", "meaning": "Basal cell carcinoma of skin"}``
(:mod:`skinbatch.taxonomy.codes`); reports use it, and fall back to a private code for nodes without one.
``training_classes`` lists the nodes the checkpoint was trained on, in the order of its outputs; each stands
for itself and all its descendants.
The first level under the root is the 3-way task, the second level the 9-way task (Esteva et al. 2017).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from skinbatch.contract import ConfigurationError

from .codes import ClassCode, CodeError

FORMAT = "skinbatch-taxonomy/1"


class TaxonomyError(ConfigurationError):
    """A taxonomy file or a set of training classes is inconsistent."""


@dataclass
class Node:
    name: str
    images: int = 0
    children: list[Node] = field(default_factory=list)
    parent: Node | None = field(default=None, repr=False, compare=False)
    code: ClassCode | None = None
    """A standard concept for this node (SNOMED CT, …), if the taxonomy file gives one."""

    @property
    def is_leaf(self) -> bool:
        return not self.children

    def walk(self) -> Iterator[Node]:
        """This node, then its descendants, depth first."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def leaves(self) -> Iterator[Node]:
        return (n for n in self.walk() if n.is_leaf)

    @property
    def total_images(self) -> int:
        return sum(n.images for n in self.walk())

    def ancestors(self) -> list[Node]:
        """From the root down to this node's parent."""
        out: list[Node] = []
        node = self.parent
        while node is not None:
            out.append(node)
            node = node.parent
        return out[::-1]

    @property
    def depth(self) -> int:
        return len(self.ancestors())

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        # Only when present: a taxonomy without codes keeps the bytes, hence the sha256, it had before.
        if self.code is not None:
            d["code"] = self.code.to_dict()
        if self.images or self.is_leaf:
            d["images"] = self.images
        if self.children:
            d["children"] = [c.to_dict() for c in self.children]
        return d


def _node_from_dict(d: dict[str, Any], parent: Node | None, path: str) -> Node:
    if not isinstance(d, dict) or "name" not in d:
        raise TaxonomyError(f"{path}: every node needs a 'name'")
    name = str(d["name"])
    images = d.get("images", 0)
    if not isinstance(images, int) or images < 0:
        raise TaxonomyError(f"{path}/{name}: 'images' must be a non-negative integer, got {images!r}")
    code = None
    if "code" in d:
        try:
            code = ClassCode.from_dict(d["code"], where=f"{path}/{name}")
        except CodeError as exc:
            raise TaxonomyError(str(exc)) from None
    node = Node(name=name, images=images, parent=parent, code=code)
    children = d.get("children", [])
    if not isinstance(children, list):
        raise TaxonomyError(f"{path}/{name}: 'children' must be a list")
    if children and images:
        raise TaxonomyError(
            f"{path}/{name}: only leaves (diseases) carry image counts; "
            "move these images into a child node such as 'other <name>'"
        )
    node.children = [_node_from_dict(c, node, f"{path}/{name}") for c in children]
    return node


@dataclass
class Taxonomy:
    """A disease tree plus, optionally, the training classes in output order."""

    root: Node
    training_classes: list[str] = field(default_factory=list)
    name: str = "taxonomy"
    description: str = ""
    malignant_node: str = "malignant"

    def __post_init__(self) -> None:
        self._by_name: dict[str, Node] = {}
        for node in self.root.walk():
            if node.name in self._by_name:
                raise TaxonomyError(f"node name {node.name!r} appears twice; names must be unique")
            self._by_name[node.name] = node
        coded: dict[tuple[str, str], str] = {}
        for node in self.root.walk():
            if node.code is None:
                continue
            key = (node.code.scheme, node.code.value)
            if key in coded:
                raise TaxonomyError(
                    f"nodes {coded[key]!r} and {node.name!r} carry the same code {key[0]} {key[1]}; a reader "
                    "could not tell their scores apart: give one of them another code or none"
                )
            coded[key] = node.name
        for cls in self.training_classes:
            if cls not in self._by_name:
                raise TaxonomyError(f"training class {cls!r} is not a node of the taxonomy")
        if self.training_classes:
            check_partition(self.root, [self._by_name[c] for c in self.training_classes])

    # -- look-ups -------------------------------------------------------------------------
    def node(self, name: str) -> Node:
        try:
            return self._by_name[name]
        except KeyError:
            raise TaxonomyError(f"no node named {name!r} in taxonomy {self.name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def level(self, depth: int) -> list[Node]:
        """Nodes at a depth (1 = benign / malignant / non-neoplastic, 2 = the nine classes)."""
        return [n for n in self.root.walk() if n.depth == depth]

    @property
    def coarse_labels(self) -> list[str]:
        return [n.name for n in self.level(1)]

    @property
    def fine_labels(self) -> list[str]:
        return [n.name for n in self.level(2)]

    def codes(self) -> dict[str, ClassCode]:
        """Node name → code, for the nodes that carry one."""
        return {n.name: n.code for n in self.root.walk() if n.code is not None}

    @property
    def fine_parents(self) -> list[str]:
        return [n.parent.name for n in self.level(2) if n.parent is not None]

    # -- (de)serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "description": self.description,
            "malignant_node": self.malignant_node,
            "root": self.root.to_dict(),
            "training_classes": list(self.training_classes),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n"

    def sha256(self) -> str:
        """A digest of the tree and the class order, to tie scores to the exact taxonomy."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def with_training_classes(self, classes: Sequence[str]) -> Taxonomy:
        return Taxonomy(
            root=self.root,
            training_classes=list(classes),
            name=self.name,
            description=self.description,
            malignant_node=self.malignant_node,
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Taxonomy:
        fmt = d.get("format", FORMAT)
        if fmt != FORMAT:
            raise TaxonomyError(f"unknown taxonomy format {fmt!r}; this version reads {FORMAT!r}")
        if "root" not in d:
            raise TaxonomyError("a taxonomy needs a 'root' node")
        return cls(
            root=_node_from_dict(d["root"], None, ""),
            training_classes=list(d.get("training_classes", [])),
            name=str(d.get("name", "taxonomy")),
            description=str(d.get("description", "")),
            malignant_node=str(d.get("malignant_node", "malignant")),
        )


def check_partition(root: Node, classes: Sequence[Node]) -> None:
    """Every disease (leaf) must lie under exactly one training class."""
    owner: dict[str, str] = {}
    for cls in classes:
        for leaf in cls.leaves():
            if leaf.name in owner:
                raise TaxonomyError(
                    f"disease {leaf.name!r} lies under two training classes, "
                    f"{owner[leaf.name]!r} and {cls.name!r}"
                )
            owner[leaf.name] = cls.name
    missing = [leaf.name for leaf in root.leaves() if leaf.name not in owner]
    if missing:
        raise TaxonomyError(
            f"{len(missing)} diseases are under no training class (e.g. {missing[0]!r}); "
            "the training classes must cover the whole tree"
        )


def load_taxonomy(path: str | Path) -> Taxonomy:
    """Read a taxonomy JSON file."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TaxonomyError(f"taxonomy file {p} does not exist") from None
    except json.JSONDecodeError as exc:
        raise TaxonomyError(f"taxonomy file {p} is not valid JSON: {exc}") from None
    return Taxonomy.from_dict(data)


def default_taxonomy() -> Taxonomy:
    """The bundled, illustrative taxonomy: the paper's first two levels with example diseases."""
    text = resources.files("skinbatch.taxonomy").joinpath("default_taxonomy.json").read_text("utf-8")
    return Taxonomy.from_dict(json.loads(text))
