"""The resumable store, the ranked CSV and the HTML pieces, without Triton."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from skinbatch.scoring import Scores
from skinbatch.triage.progress import Progress, format_duration
from skinbatch.triage.report import histogram_counts, render_html, svg_histogram, write_csv
from skinbatch.triage.state import StateMismatchError, TriageStore

MODEL = {"name": "demo", "version": "1", "trained": False, "weights_sha256": "w" * 64, "taxonomy_sha256": "t" * 64}
COARSE = ["benign", "malignant", "non-neoplastic"]
FINE = ["f1", "f2"]


def _scores(m: float) -> Scores:
    return Scores(malignancy=m, coarse={"benign": 1 - m, "malignant": m, "non-neoplastic": 0.0},
                  fine={"f1": 0.5, "f2": 0.5}, top_classes=[("melanoma", m)],
                  training_probs=np.array([m, 1 - m], dtype=np.float32))


def _filled(tmp_path: Path) -> TriageStore:
    store = TriageStore.open(tmp_path, MODEL)
    store.record_scored("a" * 64, 10, "jpeg", False, None, 1.0, [(1, _scores(0.2), 5.0)])
    store.link_path("/x/low.jpg", "a" * 64, 10, 1)
    store.record_scored("b" * 64, 20, "dicom", False, {"sop_instance_uid": "1.2.3"}, 1.0,
                        [(1, _scores(0.9), 5.0), (2, _scores(0.5), 5.0)], keep_training=True)
    store.link_path("/x/multi.dcm", "b" * 64, 20, 1)
    store.record_rejected("c" * 64, 3, "truncated", "the file ends early")
    store.link_path("/x/bad.jpg", "c" * 64, 3, 1)
    store.record_path_error("/x/gone.dcm", "not_found", "missing")
    store.commit()
    return store


def test_store_resume_lookups(tmp_path: Path) -> None:
    store = _filled(tmp_path)
    assert store.known_unchanged("/x/low.jpg", 10, 1) == "a" * 64
    assert store.known_unchanged("/x/low.jpg", 10, 2) is None  # touched since: re-read and re-hashed
    assert store.known_unchanged("/x/gone.dcm", 0, 0) is None  # path errors are retried
    assert store.has_content("c" * 64)  # bad content is not retried
    store.close()
    again = TriageStore.open(tmp_path, MODEL)
    assert again.counts()["contents_scored"] == 2 and again.counts()["frames"] == 3
    again.close()


def test_store_refuses_another_model(tmp_path: Path) -> None:
    _filled(tmp_path).close()
    with pytest.raises(StateMismatchError, match="new --out"):
        TriageStore.open(tmp_path, {**MODEL, "weights_sha256": "z" * 64})


def test_frame_rows_are_ranked_and_training_kept_on_request(tmp_path: Path) -> None:
    store = _filled(tmp_path)
    rows = list(store.frame_rows(with_training=True))
    assert [(r.path, r.frame, r.malignancy) for r in rows] == [
        ("/x/multi.dcm", 1, 0.9), ("/x/multi.dcm", 2, 0.5), ("/x/low.jpg", 1, 0.2)]
    assert rows[0].training is not None and rows[2].training is None
    assert {e.error_type for e in store.error_rows()} == {"truncated", "not_found"}


def test_csv_ranks_scored_rows_then_lists_failures(tmp_path: Path) -> None:
    store = _filled(tmp_path)
    out = tmp_path / "t.csv"
    assert write_csv(store, out, COARSE, FINE) == 3
    rows = list(csv.DictReader(out.open()))
    assert [r["rank"] for r in rows[:3]] == ["1", "2", "3"]
    assert [float(r["malignancy"]) for r in rows[:3]] == [0.9, 0.5, 0.2]
    assert rows[0]["sop_instance_uid"] == "1.2.3" and rows[0]["model_version"] == "1"
    assert rows[0]["coarse:malignant"] == "0.900000"
    assert [r["status"] for r in rows[3:]] == ["failed", "failed"]
    assert {r["error_type"] for r in rows[3:]} == {"truncated", "not_found"}


def test_histogram_and_html_escape() -> None:
    assert histogram_counts([0.0, 0.04, 0.5, 0.99, 1.0], bins=10) == [2, 0, 0, 0, 0, 1, 0, 0, 0, 2]
    assert svg_histogram([0.1, 0.2]).startswith("<svg")
    from skinbatch.triage.state import ErrorRow

    page = render_html(model=MODEL, run={}, top=[], scores=[0.1],
                       errors=[ErrorRow("/x/<script>.jpg", None, "corrupt", "bad", None)],
                       csv_name="triage.csv", generated_at="now")
    assert "<script>.jpg" not in page and "&lt;script&gt;.jpg" in page
    assert "Untrained model" in page


def test_progress_line_has_rate_and_eta() -> None:
    import io

    stream = io.StringIO()
    p = Progress(10, enabled=True, stream=stream, log_every_s=0)
    p.advance(3, resumed=True)
    p.advance(2, failed=True)
    line = p.line()
    assert "5/10" in line and "files/s" in line and "ETA" in line and "1 failed" not in line
    assert "2 failed" in line and "3 done before" in line
    assert format_duration(3725) == "1:02:05" and format_duration(None) == "--:--"


def test_skipped_files_are_named_with_their_reason_in_the_csv_and_the_html(tmp_path: Path) -> None:
    store = _filled(tmp_path)
    out = tmp_path / "t.csv"
    skipped = [("/x/readme.txt", "not an image"), ("/x/scan.pdf", "PDF: a format skinbatch does not decode"),
               ("/x/<b>.gif", "GIF: a format skinbatch does not decode")]
    write_csv(store, out, COARSE, FINE, skipped=skipped)
    rows = [r for r in csv.DictReader(out.open()) if r["status"] == "skipped"]
    assert [(r["path"], r["error_message"]) for r in rows] == skipped
    page = render_html(model=MODEL, run={}, top=[], scores=[0.1], errors=[], csv_name="triage.csv",
                       generated_at="now", skipped=skipped)
    assert "Skipped (3 files not scored)" in page
    assert "/x/readme.txt" in page and "/x/scan.pdf" in page and "/x/&lt;b&gt;.gif" in page
    assert "GIF: a format skinbatch does not decode" in page
