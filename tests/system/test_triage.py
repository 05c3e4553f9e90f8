"""``skinbatch triage`` against the real local Triton, on real files: ranking, resuming, the HTML report."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from skinbatch.samples import pydicom_colour_files, synthetic_jpeg, synthetic_png
from skinbatch.serve import LocalTriton
from skinbatch.triage.state import STATE_FILE
from tests.fixtures.needs import need_tool

pytestmark = [pytest.mark.system, pytest.mark.timeout(300)]

REPO_ROOT = Path(__file__).resolve().parents[2]
DICOM_SET = ("SC_rgb_rle_2frame.dcm", "SC_rgb_jpeg_dcmtk.dcm")  # 2 + 1 frames, via a DICOMDIR


def run_cli(*args: str | Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "skinbatch.cli", *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)


def ensemble_requests(server: LocalTriton) -> int:
    """Frames Triton has scored on the ensemble. Requests carry batches of frames (client-side
    batching), so this counts inferences, not requests: one per frame."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_endpoint)
    stats = client.get_inference_statistics("skin_classifier", as_json=True)
    client.close()
    return sum(int(m.get("inference_count", 0)) for m in stats["model_stats"])


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import pydicom
    from pydicom.fileset import FileSet

    root = tmp_path_factory.mktemp("archive")
    (root / "clinic" / "2024").mkdir(parents=True)
    for i in range(5):
        (root / "clinic" / f"photo{i}.jpg").write_bytes(synthetic_jpeg(640, 480, seed=i))
    (root / "clinic" / "2024" / "lesion.png").write_bytes(synthetic_png(320, 240, seed=42))
    shutil.copy(root / "clinic" / "photo0.jpg", root / "clinic" / "2024" / "same_as_photo0.jpg")
    (root / "clinic" / "broken.jpg").write_bytes(synthetic_jpeg(640, 480, seed=9)[:1500])
    (root / "clinic" / "readme.txt").write_text("not an image")
    fs = FileSet()
    for path in pydicom_colour_files():
        if path.name in DICOM_SET:
            fs.add(pydicom.dcmread(path))
    fs.write(root / "pacs_export")
    return root


DISTINCT_FRAMES = 5 + 1 + 3  # photos, png, DICOM (2-frame + 1-frame); the copy and the broken file add none


@pytest.fixture(scope="module")
def first_run(served_triton: LocalTriton, archive: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("triage-out")
    before = ensemble_requests(served_triton)
    r = run_cli("triage", archive, "--triton-url", served_triton.grpc_endpoint, "--out", out, "--json",
                "--decode-workers", "1")
    return {"out": out, "result": r, "requests": ensemble_requests(served_triton) - before}


def read_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "triage.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_triage_scores_every_frame_once_and_ranks_by_malignancy(first_run: dict[str, Any], archive: Path,
                                                                served_triton: LocalTriton) -> None:
    r = first_run["result"]
    assert r.returncode == 3, r.stderr  # the broken JPEG: finished, with failures
    summary = json.loads(r.stdout)
    assert summary["frames_scored"] == DISTINCT_FRAMES
    assert summary["duplicates"] == 1 and summary["failed_total"] == 1
    assert first_run["requests"] == DISTINCT_FRAMES  # the duplicate content was not sent twice
    assert "could not be scored" in r.stderr

    rows = read_rows(first_run["out"])
    scored = [row for row in rows if row["status"] == "scored"]
    failed = [row for row in rows if row["status"] == "failed"]
    malignancy = [float(row["malignancy"]) for row in scored]
    assert malignancy == sorted(malignancy, reverse=True)
    assert [int(row["rank"]) for row in scored] == list(range(1, len(scored) + 1))
    assert len(scored) == DISTINCT_FRAMES + 1  # the copy appears under its own path
    assert [Path(row["path"]).name for row in failed] == ["broken.jpg"]
    assert failed[0]["error_type"] in ("truncated", "corrupt")
    dicom_rows = [row for row in scored if row["format"] == "dicom"]
    assert len(dicom_rows) == 3 and all(row["sop_instance_uid"] for row in dicom_rows)
    assert {row["frame"] for row in dicom_rows} == {"1", "2"}
    assert all(row["model_version"] and row["weights_sha256"] for row in scored)
    for row in scored:
        assert abs(sum(float(row[f"coarse:{c}"]) for c in ("benign", "malignant", "non-neoplastic")) - 1) < 1e-4
        assert float(row["coarse:malignant"]) == pytest.approx(float(row["malignancy"]), abs=1e-6)

    # The ranking is by the very score Triton gives for that image through the shared imaging path.
    from skinbatch.imaging import decode, preprocess
    from skinbatch.scoring import TritonScorer

    scorer = TritonScorer(served_triton.grpc_endpoint)
    spec = scorer.card.preprocessing_spec()
    for row in (scored[0], scored[-1]):
        image = decode(Path(row["path"]).read_bytes(), target=spec)
        frame = next(f for f in image.frames if f.number == int(row["frame"]))
        direct = scorer.infer(preprocess(frame.pixels, spec)[None])[0]
        assert direct.malignancy == pytest.approx(float(row["malignancy"]), abs=1e-5)
    scorer.close()


def test_second_run_resumes_without_scoring_again(first_run: dict[str, Any], archive: Path,
                                                  served_triton: LocalTriton) -> None:
    before_rows = read_rows(first_run["out"])
    before = ensemble_requests(served_triton)
    r = run_cli("triage", archive, "--triton-url", served_triton.grpc_endpoint, "--out", first_run["out"], "--json")
    assert r.returncode == 3, r.stderr
    summary = json.loads(r.stdout)
    assert summary["scored"] == 0 and summary["resumed"] == summary["files"]
    assert ensemble_requests(served_triton) == before
    after_rows = read_rows(first_run["out"])
    assert [(row["path"], row["frame"], row["malignancy"]) for row in after_rows] == \
        [(row["path"], row["frame"], row["malignancy"]) for row in before_rows]


def test_interrupted_run_continues_and_never_scores_twice(served_triton: LocalTriton, tmp_path: Path) -> None:
    archive = tmp_path / "many"
    archive.mkdir()
    # Enough that an interrupt lands mid-run: requests carry batches, so two in flight finish many images.
    n = 120
    for i in range(n):
        (archive / f"img{i:03d}.jpg").write_bytes(synthetic_jpeg(160, 120, seed=1000 + i))
    out = tmp_path / "out"
    before = ensemble_requests(served_triton)
    proc = subprocess.Popen([sys.executable, "-m", "skinbatch.cli", "triage", str(archive), "--triton-url",
                             served_triton.grpc_endpoint, "--out", str(out), "--decode-workers", "1",
                             "--max-infer-requests", "2"], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with sqlite3.connect(out / STATE_FILE, timeout=1) as db:
                done = db.execute("SELECT COUNT(*) FROM contents").fetchone()[0]
        except sqlite3.Error:
            done = 0
        if done >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "run the same command again" in stderr
    with sqlite3.connect(out / STATE_FILE) as db:
        saved = db.execute("SELECT COUNT(*) FROM contents").fetchone()[0]
    assert 3 <= saved < n

    r = run_cli("triage", archive, "--triton-url", served_triton.grpc_endpoint, "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["resumed"] == saved and summary["scored"] == n - saved
    assert ensemble_requests(served_triton) - before == n  # each image scored exactly once overall
    assert len([row for row in read_rows(out) if row["status"] == "scored"]) == n


def test_triage_exits_4_when_triton_is_down(tmp_path: Path, archive: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run_cli("triage", archive, "--triton-url", f"127.0.0.1:{port}", "--out", tmp_path / "o")
    assert r.returncode == 4
    assert "not reachable" in r.stderr and f"127.0.0.1:{port}" in r.stderr


def test_html_report_renders_in_a_real_browser(first_run: dict[str, Any], tmp_path: Path) -> None:
    chromium = need_tool("chromium", "Debian's chromium")
    from PIL import Image

    report = first_run["out"] / "triage.html"
    text = report.read_text(encoding="utf-8")
    assert text.count("data:image/jpeg;base64,") == DISTINCT_FRAMES  # one thumbnail per distinct frame
    assert "<svg" in text and "broken.jpg" in text
    shot = Path(os.environ.get("SKINBATCH_SCREENSHOT_DIR", tmp_path)) / "triage-report.png"
    r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                        f"--screenshot={shot}", "--window-size=1280,2000", report.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert shot.is_file(), r.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels.std() > 10, "the screenshot is blank"
    colours = len(np.unique(pixels.reshape(-1, 3)[::7], axis=0))
    assert colours > 500, "no thumbnails rendered (too few distinct colours)"
