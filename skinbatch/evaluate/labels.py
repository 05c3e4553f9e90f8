"""A labelled set: ``path,label`` rows, each label a node of the taxonomy at any level.

A label is mapped to the first level (3-way task) and the second level (9-way task) through its
ancestors in the tree; a label on the first level takes part in the 3-way task only. Names are matched
exactly, then ignoring case and surrounding spaces.

Where the tree comes from: the model card carries the class lists and levels but not the tree, and the
paper's binary tasks (keratinocyte carcinoma vs seborrheic keratosis, melanoma vs nevus) need the tree.
``--taxonomy`` takes the repository's ``skin_classifier/taxonomy.json`` (or the repository folder); by
default the bundled taxonomy is used. Either way its sha256 must equal the card's ``taxonomy.sha256``,
so the tree is provably the one the served model was converted with.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from skinbatch.contract import ENSEMBLE, ConfigurationError
from skinbatch.modelcard import ModelCard
from skinbatch.taxonomy import Taxonomy, TaxonomyError, default_taxonomy, load_taxonomy


class LabelsError(ConfigurationError):
    """The labels file cannot be used as it is; the message says which rows and why."""


@dataclass(frozen=True)
class Case:
    path: Path
    label: str
    """The node name as found in the taxonomy."""
    coarse: str | None
    """First-level ancestor (benign / malignant / non-neoplastic), or the label itself if it is one."""
    fine: str | None
    """Second-level ancestor, None for a first-level label."""
    row: int
    image_type: str | None = None
    """``dermoscopic`` or ``clinical`` where the labels file has an ``image_type`` column; tasks are then
    also reported for each kind of image apart, as Esteva et al. 2017 do."""


IMAGE_TYPE_COLUMN = "image_type"
_IMAGE_TYPES = {"dermoscopic": "dermoscopic", "dermoscopy": "dermoscopic", "dms": "dermoscopic",
                "clinical": "clinical", "macroscopic": "clinical", "xc": "clinical", "photo": "clinical"}


def image_type(raw: str) -> str | None:
    """``dermoscopic``, ``clinical`` or None (empty); raises ``ValueError`` for anything else."""
    text = raw.strip().lower()
    if not text:
        return None
    if text not in _IMAGE_TYPES:
        raise ValueError(raw)
    return _IMAGE_TYPES[text]


def resolve_taxonomy(card: ModelCard, source: Path | None) -> tuple[Taxonomy, str]:
    """The tree the served model was converted with, checked against the card's sha256."""
    if source is None:
        taxonomy, where = default_taxonomy(), "the bundled default taxonomy"
    else:
        path = source / ENSEMBLE / "taxonomy.json" if source.is_dir() else source
        try:
            taxonomy = load_taxonomy(path)
        except TaxonomyError as exc:
            raise LabelsError(f"{exc}; pass the model repository's skin_classifier/taxonomy.json") from None
        where = str(path)
    expected = str(card.taxonomy.get("sha256", ""))
    actual = taxonomy.sha256()
    if expected and actual != expected:
        raise LabelsError(
            f"{where} (sha256 {actual[:12]}…) is not the taxonomy the served model was converted with "
            f"(model card: {card.taxonomy.get('name')!r}, sha256 {expected[:12]}…). Pass --taxonomy with the "
            "served repository's skin_classifier/taxonomy.json (or the repository folder)."
        )
    if list(taxonomy.training_classes) != card.training_classes:
        raise LabelsError(f"{where} lists other training classes than the model card; use the served repository's copy")
    return taxonomy, where


def ancestor_at(taxonomy: Taxonomy, name: str, depth: int) -> str | None:
    node = taxonomy.node(name)
    if node.depth == depth:
        return node.name
    chain = node.ancestors()
    return chain[depth].name if len(chain) > depth else None


def read_labels(csv_path: Path, taxonomy: Taxonomy) -> list[Case]:
    """Read ``path,label`` and, optionally, ``image_type`` (``dermoscopic`` or ``clinical``; header required;
    other columns ignored). Paths are relative to the CSV's folder."""
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise LabelsError(f"cannot read the labels file {csv_path}: {exc.strerror or exc}") from None
    reader = csv.DictReader(text.splitlines())
    fields = {f.strip().lower(): f for f in (reader.fieldnames or [])}
    if "path" not in fields or "label" not in fields:
        raise LabelsError(f"{csv_path} needs a header with columns 'path' and 'label' (found {reader.fieldnames})")
    by_lower: dict[str, str] = {}
    for node in taxonomy.root.walk():
        by_lower.setdefault(node.name.strip().lower(), node.name)
    cases, unknown, missing, rootish, bad_types = [], [], [], [], []
    for row_no, row in enumerate(reader, 2):
        raw_path = (row.get(fields["path"]) or "").strip()
        raw_label = (row.get(fields["label"]) or "").strip()
        kind = None
        if IMAGE_TYPE_COLUMN in fields:
            try:
                kind = image_type(row.get(fields[IMAGE_TYPE_COLUMN]) or "")
            except ValueError:
                bad_types.append((row_no, row.get(fields[IMAGE_TYPE_COLUMN])))
        if not raw_path and not raw_label:
            continue
        name = raw_label if raw_label in taxonomy else by_lower.get(raw_label.lower())
        path = Path(raw_path)
        if not path.is_absolute():
            path = csv_path.parent / path
        path = Path(os.path.abspath(path))  # the key triage's state uses
        if name is None:
            unknown.append((row_no, raw_label))
            continue
        if taxonomy.node(name).depth == 0:
            rootish.append(row_no)
            continue
        if not path.is_file():
            missing.append((row_no, raw_path))
            continue
        cases.append(Case(path=path, label=name, coarse=ancestor_at(taxonomy, name, 1),
                          fine=ancestor_at(taxonomy, name, 2), row=row_no, image_type=kind))
    problems = []
    if unknown:
        sample = ", ".join(f"row {r}: {lab!r}" for r, lab in unknown[:5])
        problems.append(f"{len(unknown)} label(s) are not nodes of taxonomy {taxonomy.name!r} ({sample}); "
                        "use names from the taxonomy (`skinbatch taxonomy` shows them)")
    if rootish:
        problems.append(f"rows {rootish[:5]} are labelled with the root {taxonomy.root.name!r}, which says nothing")
    if bad_types:
        sample = ", ".join(f"row {r}: {t!r}" for r, t in bad_types[:5])
        problems.append(f"{len(bad_types)} image_type value(s) are neither 'dermoscopic' nor 'clinical' ({sample}); "
                        "leave the cell empty where it is not known")
    if missing:
        sample = ", ".join(f"row {r}: {p}" for r, p in missing[:5])
        problems.append(f"{len(missing)} file(s) do not exist ({sample}); paths are relative to the CSV's folder")
    if problems:
        raise LabelsError("; ".join(problems))
    if not cases:
        raise LabelsError(f"{csv_path} has no labelled rows")
    return cases
