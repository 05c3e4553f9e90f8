"""``skinbatch evaluate`` writes the reference distribution of P(malignant) that drift monitoring uses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from skinbatch.drift import FILE_NAME, bin_counts, load_reference
from skinbatch.evaluate.compute import CaseScores, evaluate_cases
from skinbatch.evaluate.labels import read_labels
from skinbatch.evaluate.report import reference_distribution, write_outputs
from skinbatch.taxonomy import default_taxonomy

MODEL = {"name": "demo", "version": "3", "trained": True, "weights_sha256": "w" * 64, "taxonomy_sha256": "t" * 64}


def test_reference_counts_every_frame_and_names_its_model() -> None:
    frames = [0.001, 0.3, 0.3, 0.95, 1.0]
    reference = reference_distribution(frames, {"model": MODEL, "labels": "validation.csv"})
    assert reference is not None and reference.n == 5
    assert list(reference.counts) == bin_counts(frames).tolist()
    assert reference.model == MODEL
    assert reference.source["labels"] == "validation.csv" and reference.source["command"] == "skinbatch evaluate"
    assert reference_distribution([], {"model": MODEL}) is None


def test_write_outputs_writes_the_reference_file(tmp_path: Path) -> None:
    taxonomy = default_taxonomy()
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "b.jpg").write_bytes(b"x")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\na.jpg,nodular melanoma\nb.jpg,compound nevus\n")
    cases = read_labels(labels, taxonomy)
    k = len(taxonomy.training_classes)
    coarse = {c: 1 / 3 for c in taxonomy.coarse_labels}
    fine = {f: 1 / 9 for f in taxonomy.fine_labels}
    scores = {str(c.path): CaseScores(m, coarse, fine, np.full(k, 1 / k)) for c, m in zip(cases, (0.8, 0.1))}
    ev = evaluate_cases(cases, scores, taxonomy, taxonomy.coarse_labels, taxonomy.fine_labels, n_boot=0)
    meta = {"model": MODEL, "taxonomy_source": "bundled", "labels": labels.name, "run": {}}
    out = tmp_path / "eval"
    outputs = write_outputs(out, ev, meta, cases, scores, taxonomy.coarse_labels, taxonomy.fine_labels, {},
                            plots=False, frame_malignancy=[0.8, 0.75, 0.1])
    assert outputs["reference"] == out / FILE_NAME
    reference = load_reference(out / FILE_NAME)
    assert reference.n == 3 and reference.model["weights_sha256"] == "w" * 64
    assert json.loads((out / FILE_NAME).read_text())["source"]["frames"] == 3
    # Nothing scored: no reference file.
    again = write_outputs(tmp_path / "empty", ev, meta, cases, {}, taxonomy.coarse_labels, taxonomy.fine_labels,
                          {}, plots=False)
    assert "reference" not in again and not (tmp_path / "empty" / FILE_NAME).exists()
