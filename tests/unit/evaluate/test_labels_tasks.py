"""Labels at any taxonomy level, the binary tasks' membership and scores, and where the tree comes from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from skinbatch.evaluate.compute import CaseScores, evaluate_cases
from skinbatch.evaluate.labels import LabelsError, read_labels, resolve_taxonomy
from skinbatch.evaluate.tasks import PAPER_TASKS, normalised_scores, subtree_mask, unavailable_reason
from skinbatch.modelcard import ModelCard
from skinbatch.taxonomy import Taxonomy, default_taxonomy


@pytest.fixture(scope="module")
def taxonomy() -> Taxonomy:
    return default_taxonomy()


def _card(taxonomy: Taxonomy, sha: str | None = None) -> ModelCard:
    return ModelCard(name="t", version="1", trained=False, source={}, target="cpu", precision="fp32",
                     preprocessing={"size": 299}, max_batch_size=8,
                     taxonomy={"sha256": sha or taxonomy.sha256(), "name": taxonomy.name,
                               "training_classes": taxonomy.training_classes,
                               "coarse_labels": taxonomy.coarse_labels, "fine_labels": taxonomy.fine_labels})


def _write(tmp_path: Path, rows: list[tuple[str, str]]) -> Path:
    for p, _ in rows:
        (tmp_path / p).write_bytes(b"x")
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label,comment\n" + "".join(f"{p},{lab},\n" for p, lab in rows))
    return csv


def test_labels_at_every_level_map_to_first_and_second_level(tmp_path: Path, taxonomy: Taxonomy) -> None:
    csv = _write(tmp_path, [("a.jpg", "nodular melanoma"), ("b.jpg", "Malignant"),
                            ("c.jpg", "benign melanocytic lesions"), ("d.jpg", " compound nevus ")])
    cases = read_labels(csv, taxonomy)
    got = [(c.label, c.coarse, c.fine) for c in cases]
    assert got == [
        ("nodular melanoma", "malignant", "malignant melanocytic lesions"),
        ("malignant", "malignant", None),
        ("benign melanocytic lesions", "benign", "benign melanocytic lesions"),
        ("compound nevus", "benign", "benign melanocytic lesions"),
    ]
    assert all(c.path.is_absolute() for c in cases)


def test_unknown_labels_and_missing_files_are_reported_together(tmp_path: Path, taxonomy: Taxonomy) -> None:
    csv = _write(tmp_path, [("a.jpg", "melanomaa")])
    csv.write_text(csv.read_text() + "missing.jpg,melanoma,\n")
    with pytest.raises(LabelsError) as info:
        read_labels(csv, taxonomy)
    assert "'melanomaa'" in str(info.value) and "missing.jpg" in str(info.value)


def test_taxonomy_must_match_the_card(taxonomy: Taxonomy) -> None:
    tax, where = resolve_taxonomy(_card(taxonomy), None)
    assert tax.sha256() == taxonomy.sha256() and "bundled" in where
    with pytest.raises(LabelsError, match="--taxonomy"):
        resolve_taxonomy(_card(taxonomy, sha="0" * 64), None)


def test_repository_folder_is_accepted_as_taxonomy_source(tmp_path: Path, taxonomy: Taxonomy) -> None:
    (tmp_path / "skin_classifier").mkdir()
    (tmp_path / "skin_classifier" / "taxonomy.json").write_text(taxonomy.to_json())
    tax, where = resolve_taxonomy(_card(taxonomy), tmp_path)
    assert tax.sha256() == taxonomy.sha256() and where.endswith("taxonomy.json")


def test_normalised_task_score(taxonomy: Taxonomy) -> None:
    task = PAPER_TASKS[2]  # melanoma vs nevus
    pos, neg = subtree_mask(taxonomy, "melanoma"), subtree_mask(taxonomy, "melanocytic nevus")
    assert pos.sum() == 5 and neg.sum() == 4 and not (pos & neg).any()
    probs = np.zeros((2, len(taxonomy.training_classes)))
    probs[0, np.nonzero(pos)[0][0]] = 0.3
    probs[0, np.nonzero(neg)[0][0]] = 0.1
    probs[0, ~(pos | neg)] = 0.6 / (~(pos | neg)).sum()
    np.testing.assert_allclose(normalised_scores(probs, taxonomy, task), [0.75, 0.5])


def test_task_unavailable_when_a_training_class_spans_the_node(taxonomy: Taxonomy) -> None:
    coarse = taxonomy.with_training_classes(["benign", "malignant", "non-neoplastic"])
    reason = unavailable_reason(coarse, PAPER_TASKS[2])
    assert reason is not None and "'malignant' contains 'melanoma'" in reason
    assert unavailable_reason(coarse, PAPER_TASKS[0]) is None


def test_evaluate_cases_end_to_end(tmp_path: Path, taxonomy: Taxonomy) -> None:
    rows = [("m1.jpg", "nodular melanoma"), ("m2.jpg", "lentigo maligna"), ("n1.jpg", "compound nevus"),
            ("n2.jpg", "junctional nevus"), ("i.jpg", "inflammatory conditions")]
    cases = read_labels(_write(tmp_path, rows), taxonomy)
    k = len(taxonomy.training_classes)
    pos, neg = subtree_mask(taxonomy, "melanoma"), subtree_mask(taxonomy, "melanocytic nevus")
    scores = {}
    for case, mel in zip(cases, [0.9, 0.6, 0.2, 0.7, 0.0]):
        t = np.full(k, 0.0)
        t[np.nonzero(pos)[0][0]], t[np.nonzero(neg)[0][0]] = mel, 1 - mel
        coarse = {c: 0.0 for c in taxonomy.coarse_labels}
        coarse[case.coarse] = 1.0
        fine = {f: 0.0 for f in taxonomy.fine_labels}
        fine[case.fine or taxonomy.fine_labels[0]] = 1.0
        scores[str(case.path)] = CaseScores(mel, coarse, fine, t)
    ev = evaluate_cases(cases, scores, taxonomy, taxonomy.coarse_labels, taxonomy.fine_labels, n_boot=50)
    by_key = {t.key: t for t in ev.tasks}
    assert by_key["melanoma_vs_nevus"].auc == pytest.approx(0.75)  # 3 of 4 pairs ordered right
    assert by_key["malignant_vs_benign"].auc == pytest.approx(0.75)
    assert by_key["carcinoma_vs_seborrheic_keratosis"].unavailable is not None
    assert ev.three_way.accuracy == 1.0 and ev.three_way.n == 5
    assert ev.nine_way.n == 5


def test_tasks_are_reported_apart_for_dermoscopic_and_clinical_images(tmp_path: Path, taxonomy: Taxonomy) -> None:
    rows = [("d1.jpg", "nodular melanoma", "dermoscopic"), ("d2.jpg", "compound nevus", "DMS"),
            ("d3.jpg", "junctional nevus", "dermoscopy"), ("c1.jpg", "lentigo maligna", "clinical"),
            ("c2.jpg", "compound nevus", "clinical"), ("u.jpg", "junctional nevus", "")]
    for p, _, _ in rows:
        (tmp_path / p).write_bytes(b"x")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label,image_type\n" + "".join(f"{p},{lab},{kind}\n" for p, lab, kind in rows))
    cases = read_labels(labels, taxonomy)
    assert [c.image_type for c in cases] == ["dermoscopic"] * 3 + ["clinical"] * 2 + [None]
    k = len(taxonomy.training_classes)
    pos, neg = subtree_mask(taxonomy, "melanoma"), subtree_mask(taxonomy, "melanocytic nevus")
    scores = {}
    # Dermoscopic: the melanoma scores above both nevi (AUC 1). Clinical: below its nevus (AUC 0).
    for case, mel in zip(cases, [0.9, 0.2, 0.3, 0.1, 0.8, 0.5]):
        t = np.full(k, 0.0)
        t[np.nonzero(pos)[0][0]], t[np.nonzero(neg)[0][0]] = mel, 1 - mel
        scores[str(case.path)] = CaseScores(mel, {c: 0.0 for c in taxonomy.coarse_labels},
                                            {f: 0.0 for f in taxonomy.fine_labels}, t)
    ev = evaluate_cases(cases, scores, taxonomy, taxonomy.coarse_labels, taxonomy.fine_labels, n_boot=0)
    by_type = {kind: {t.key: t for t in tasks} for kind, tasks in ev.tasks_by_image_type.items()}
    assert set(by_type) == {"dermoscopic", "clinical"}
    assert by_type["dermoscopic"]["melanoma_vs_nevus"].auc == pytest.approx(1.0)
    assert by_type["dermoscopic"]["melanoma_vs_nevus"].n_negative == 2
    assert by_type["clinical"]["melanoma_vs_nevus"].auc == pytest.approx(0.0)
    overall = {t.key: t for t in ev.tasks}["melanoma_vs_nevus"]
    assert overall.n_positive + overall.n_negative == 6  # the unlabelled kind still counts overall
    assert "tasks_by_image_type" in ev.to_dict()


def test_an_unknown_image_type_is_refused(tmp_path: Path, taxonomy: Taxonomy) -> None:
    (tmp_path / "a.jpg").write_bytes(b"x")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label,image_type\na.jpg,compound nevus,ultrasound\n")
    with pytest.raises(LabelsError, match="image_type"):
        read_labels(labels, taxonomy)
