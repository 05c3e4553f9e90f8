"""``skinbatch taxonomy``: partition a disease tree and show its levels.

A taxonomy that cannot be read (TaxonomyError) or a bad ``--max-class-size`` (ConfigurationError) exits 2
with its message: the commands raise, and the ``skinbatch`` group exits with the error's code (skinbatch.cli).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from skinbatch.settings import JSON

from .partition import PAPER_MAX_CLASS_SIZE, partition_taxonomy
from .tree import Taxonomy, default_taxonomy, load_taxonomy


def _load(path: Path | None) -> Taxonomy:
    return load_taxonomy(path) if path else default_taxonomy()


@click.group()
def taxonomy() -> None:
    """Partition and inspect disease taxonomies."""


@taxonomy.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=False)
@click.option("--max-class-size", default=PAPER_MAX_CLASS_SIZE, show_default=True,
              help="A subtree with fewer images than this becomes one training class (the paper's maxClassSize).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the taxonomy with its training classes here (default: print the classes).")
@JSON.option(help="Print machine-readable output.")
def partition(path: Path | None, max_class_size: int, output: Path | None, as_json: bool) -> None:
    """Run PartitionDiseases on PATH (default: the bundled illustrative taxonomy)."""
    result = partition_taxonomy(_load(path), max_class_size)
    if output:
        output.write_text(result.to_json(), encoding="utf-8")
    if as_json:
        json.dump({"max_class_size": max_class_size, "training_classes": result.training_classes,
                   "count": len(result.training_classes)}, sys.stdout, indent=1)
        click.echo()
        return
    for i, name in enumerate(result.training_classes):
        node = result.node(name)
        click.echo(f"{i:4d}  {node.total_images:7d}  {name}")
    click.echo(f"{len(result.training_classes)} training classes (max class size {max_class_size})", err=True)


@taxonomy.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=False)
def show(path: Path | None) -> None:
    """Print the tree with image counts, marking training classes with '*'."""
    tax = _load(path)
    classes = set(tax.training_classes)
    for node in tax.root.walk():
        mark = "*" if node.name in classes else " "
        click.echo(f"{mark} {'  ' * node.depth}{node.name} ({node.total_images})")
