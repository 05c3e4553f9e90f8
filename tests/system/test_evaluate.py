"""``skinbatch evaluate`` against the real local Triton: its AUCs equal scikit-learn's on scores computed
here independently (straight from Triton and the taxonomy tree)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from skinbatch.samples import synthetic_jpeg
from skinbatch.serve import LocalTriton
from tests.fixtures.needs import need_module

pytestmark = [pytest.mark.system, pytest.mark.timeout(300)]

REPO_ROOT = Path(__file__).resolve().parents[2]
LABELS = ["nodular melanoma", "melanoma", "compound nevus", "junctional nevus", "squamous cell carcinoma",
          "superficial basal cell carcinoma", "stucco keratosis", "seborrheic keratosis", "dermatofibroma",
          "malignant", "inflammatory conditions", "benign melanocytic lesions"]


def test_evaluate_reproduces_sklearn_aucs(served_triton: LocalTriton, tmp_path: Path) -> None:
    sk = need_module("sklearn.metrics", "scikit-learn: pip install 'skinbatch[test]'")
    need_module("matplotlib", "matplotlib: pip install 'skinbatch[report]'")
    from skinbatch.imaging import decode, preprocess
    from skinbatch.scoring import TritonScorer
    from skinbatch.taxonomy import default_taxonomy

    data = tmp_path / "set"
    data.mkdir()
    rows = []
    for i in range(24):
        (data / f"case{i:02d}.jpg").write_bytes(synthetic_jpeg(400, 300, seed=500 + i))
        rows.append((f"case{i:02d}.jpg", LABELS[i % len(LABELS)]))
    (data / "labels.csv").write_text("path,label\n" + "".join(f"{p},{lab}\n" for p, lab in rows))
    out = tmp_path / "eval"
    r = subprocess.run([sys.executable, "-m", "skinbatch.cli", "evaluate", "--labels", str(data / "labels.csv"),
                        "--triton-url", served_triton.grpc_endpoint, "--out", str(out), "--bootstrap", "200",
                        "--threshold", "0.2", "--threshold", "0.5", "--decode-workers", "1", "--json"],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    tasks = {t["key"]: t for t in metrics["tasks"]}

    # Independent scores: one Triton request per image, the tree walked here.
    scorer = TritonScorer(served_triton.grpc_endpoint)
    spec = scorer.card.preprocessing_spec()
    tax = default_taxonomy()
    classes = scorer.card.training_classes

    def under(name: str, node: str) -> bool:
        n = tax.node(name)
        return n.name == node or node in {a.name for a in n.ancestors()}

    outputs = {}
    for path, _ in rows:
        image = decode((data / path).read_bytes(), target=spec)
        outputs[path] = scorer.infer(preprocess(image.frames[0].pixels, spec)[None])[0]
    scorer.close()

    def expected_auc(pos: str, neg: str, normalised: bool) -> float:
        y, s = [], []
        for path, label in rows:
            if not (under(label, pos) or under(label, neg)):
                continue
            o = outputs[path]
            if normalised:
                p = sum(float(v) for c, v in zip(classes, o.training_probs) if under(c, pos))
                q = sum(float(v) for c, v in zip(classes, o.training_probs) if under(c, neg))
                s.append(p / (p + q))
            else:
                s.append(o.malignancy)
            y.append(int(under(label, pos)))
        return float(sk.roc_auc_score(y, s))

    assert tasks["malignant_vs_benign"]["auc"] == pytest.approx(expected_auc("malignant", "benign", False), abs=1e-9)
    assert tasks["melanoma_vs_nevus"]["auc"] == pytest.approx(
        expected_auc("melanoma", "melanocytic nevus", True), abs=1e-9)
    assert tasks["carcinoma_vs_seborrheic_keratosis"]["auc"] == pytest.approx(
        expected_auc("keratinocyte carcinoma", "seborrheic keratosis", True), abs=1e-9)
    for t in tasks.values():
        ci = t["auc_ci"]
        assert ci["low"] <= t["auc"] <= ci["high"]
        assert [p["threshold"] for p in t["operating_points"]] == [0.2, 0.5]
    # "benign melanocytic lesions" is above nevus: left out
    assert tasks["melanoma_vs_nevus"]["n_positive"] == 4 and tasks["melanoma_vs_nevus"]["n_negative"] == 4

    truth = [tax.node(label).ancestors()[1].name if tax.node(label).depth > 1 else label for _, label in rows]
    predicted = [max(o.coarse, key=o.coarse.get) for o in (outputs[p] for p, _ in rows)]
    assert metrics["three_way"]["accuracy"] == pytest.approx(sk.accuracy_score(truth, predicted))
    assert np.array(metrics["three_way"]["matrix"]).sum() == 24
    assert metrics["nine_way"]["n"] == 22  # the two first-level labels take part in the 3-way task only

    for name in ("summary.html", "summary.md", "scores.csv", "roc_melanoma_vs_nevus.png",
                 "roc_carcinoma_vs_seborrheic_keratosis.png", "roc_malignant_vs_benign.png",
                 "confusion_matrix_3way.png", "confusion_matrix_9way.png"):
        assert (out / name).stat().st_size > 0, name
    assert json.loads(r.stdout)["auc"]["melanoma_vs_nevus"] == tasks["melanoma_vs_nevus"]["auc"]


def test_evaluate_refuses_unknown_labels_before_scoring(served_triton: LocalTriton, tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(synthetic_jpeg(64, 48))
    (tmp_path / "labels.csv").write_text("path,label\na.jpg,melanomma\n")
    r = subprocess.run([sys.executable, "-m", "skinbatch.cli", "evaluate", "--labels", str(tmp_path / "labels.csv"),
                        "--triton-url", served_triton.grpc_endpoint, "--out", str(tmp_path / "o"), "--no-plots"],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "'melanomma'" in r.stderr
