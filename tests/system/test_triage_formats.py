"""Triage of a folder with every photo format (made by third-party encoders), a DICOM data set without
preamble or extension, and files it cannot read: every image scored on the real Triton, every other file
named with its reason in the CSV and the HTML report."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from skinbatch.serve import LocalTriton
from tests.fixtures.icc import require_tool
from tests.unit.imaging import _factories as f

pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]

REPO_ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str | Path) -> None:
    subprocess.run([str(a) for a in args], check=True, capture_output=True, timeout=120)


def _raw_dicom() -> bytes:
    """A DICOM data set as older tools write it: no preamble, no "DICM", no file meta."""
    from pydicom.filewriter import dcmwrite

    ds = f.dicom_dataset([f.photo(400, 300, seed=11)], transfer_syntax=f.IMPLICIT_LE)
    ds.preamble = None
    del ds.file_meta
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=False, implicit_vr=True, little_endian=True)
    return buf.getvalue()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("formats-archive")
    work = tmp_path_factory.mktemp("formats-work")
    src = work / "src.png"
    Image.fromarray(f.photo(480, 360, seed=2)).save(src)
    (root / "phone").mkdir()
    (root / "phone" / "photo.jpg").write_bytes(f.jpeg(f.photo(480, 360, seed=1)))
    (root / "phone" / "lesion.png").write_bytes(f.png(Image.fromarray(f.photo(320, 240, seed=3))))
    _run(require_tool("heif-enc", "libheif-examples"), "-q", "95", "-o", root / "phone" / "IMG_0001.HEIC", src)
    _run(require_tool("cwebp", "webp"), "-q", "95", src, "-o", root / "phone" / "upload.webp")
    _run(require_tool("avifenc", "libavif-bin"), "--min", "0", "--max", "6", "-s", "8", src,
         root / "phone" / "upload.avif")
    f.photo(480, 360, seed=4).tofile(work / "rgb.raw")
    _run(require_tool("raw2tiff", "libtiff-tools"), "-M", "-w", 480, "-l", 360, "-b", 3, "-p", "rgb", "-c", "lzw",
         work / "rgb.raw", root / "phone" / "dermatoscope.tif")
    (root / "pacs").mkdir()
    (root / "pacs" / "IM000001").write_bytes(_raw_dicom())
    (root / "pacs" / "notes.txt").write_text("not an image")
    (root / "pacs" / "report.pdf").write_bytes(b"%PDF-1.7\n" + bytes(100))
    (root / "pacs" / "animation.gif").write_bytes(b"GIF89a" + bytes(100))
    (root / "pacs" / ".DS_Store").write_bytes(b"\0" * 10)
    return root


IMAGES = {"photo.jpg": "jpeg", "lesion.png": "png", "IMG_0001.HEIC": "heif", "upload.webp": "webp",
          "upload.avif": "avif", "dermatoscope.tif": "tiff", "IM000001": "dicom"}
SKIPPED = {"notes.txt": "not an image", "report.pdf": "PDF", "animation.gif": "GIF", ".DS_Store": "hidden"}


@pytest.fixture(scope="module")
def triaged(served_triton: LocalTriton, archive: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("formats-out")
    r = subprocess.run([sys.executable, "-m", "skinbatch.cli", "triage", str(archive), "--triton-url",
                        served_triton.grpc_endpoint, "--out", str(out), "--json", "--decode-workers", "1"],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=400)
    return {"out": out, "result": r}


def test_every_format_is_scored_and_every_other_file_named(triaged: dict[str, Any]) -> None:
    r = triaged["result"]
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["frames_scored"] == len(IMAGES) and summary["failed_total"] == 0
    with open(triaged["out"] / "triage.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    scored = {Path(row["path"]).name: row["format"] for row in rows if row["status"] == "scored"}
    assert scored == IMAGES
    skipped = {Path(row["path"]).name: row["error_message"] for row in rows if row["status"] == "skipped"}
    assert set(skipped) == set(SKIPPED)
    for name, reason in SKIPPED.items():
        assert reason in skipped[name], (name, skipped[name])
    page = (triaged["out"] / "triage.html").read_text(encoding="utf-8")
    assert f"Skipped ({len(SKIPPED)} files not scored)" in page
    for name in SKIPPED:
        assert name in page
    written = json.loads((triaged["out"] / "triage-summary.json").read_text(encoding="utf-8"))
    assert sum(written["skipped_by_reason"].values()) == len(SKIPPED)
