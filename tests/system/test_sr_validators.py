"""Every score report passes the standard DICOM tools: dicom3tools' ``dciodvfy`` finds no error in it and
DCMTK's ``dsrdump`` renders it. Reports are built for each of pydicom's real colour test files, single-
and multi-frame (Secondary Capture with two frames, Ultrasound Multi-frame), as the consumer builds them.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from skinbatch.dicomweb.sr import FrameScores, build_score_report, header_of
from skinbatch.samples import pydicom_colour_files
from skinbatch.scoring import Scores
from skinbatch.taxonomy import default_taxonomy
from skinbatch.taxonomy.card import taxonomy_card_entry
from tests.fixtures.sr_checks import run_dciodvfy, run_dsrdump

pytestmark = pytest.mark.system

CARD = taxonomy_card_entry(default_taxonomy(), "taxonomy.json")
MODEL = {"name": "demo", "version": "1", "trained": False, "weights_sha256": "ab" * 32, "taxonomy_sha256": "cd" * 32}
MAX_FRAMES = 3


def _colour_sources() -> list[Path]:
    """The colour files an archive would accept, hence ever get a report: study, series and SOP UIDs."""
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in pydicom_colour_files():
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            if all(ds.get(k) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")):
                out.append(path)
    return out


def _scores(seed: int) -> Scores:
    rng = np.random.default_rng(seed)
    coarse, fine = CARD["coarse_labels"], CARD["fine_labels"]
    c, f = rng.dirichlet(np.ones(len(coarse))), rng.dirichlet(np.ones(len(fine)))
    return Scores(float(c[1]), dict(zip(coarse, map(float, c))), dict(zip(fine, map(float, f))), [], np.zeros(3))


def _write_report(path: Path, out: Path) -> Path:
    # Half the reports as from a trained model: those are FINAL rather than PRELIMINARY.
    model = {**MODEL, "trained": SOURCES.index(path) % 2 == 0} if path in SOURCES else MODEL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = header_of(path.read_bytes())
        frames = min(int(source.get("NumberOfFrames", 1) or 1), MAX_FRAMES)
        sr = build_score_report(source, [FrameScores(n, _scores(n)) for n in range(1, frames + 1)], model,
                                coarse_labels=CARD["coarse_labels"], fine_labels=CARD["fine_labels"],
                                codes=CARD["codes"], input_sha256="ef" * 32)
    target = out / f"{path.stem}.sr.dcm"
    sr.save_as(target, enforce_file_format=True)
    return target


SOURCES = _colour_sources()


def test_the_sources_cover_single_and_multi_frame_images() -> None:
    frames = {int(pydicom.dcmread(p, stop_before_pixels=True).get("NumberOfFrames", 1) or 1) for p in SOURCES}
    assert 1 in frames and max(frames) > 2, frames


@pytest.mark.parametrize("path", SOURCES, ids=[p.name for p in SOURCES])
def test_dciodvfy_finds_no_error_and_dsrdump_renders_the_report(path: Path, tmp_path: Path) -> None:
    report = _write_report(path, tmp_path)
    checked = run_dciodvfy(report)
    assert not checked.errors, f"{path.name}: dciodvfy reports\n" + "\n".join(checked.errors)
    assert "ComprehensiveSR" in checked.output  # it recognised the IOD it checked
    rendered = run_dsrdump(report)
    for text in ('"Imaging Measurement Report"', '"Measurement Group"', '"Probability of cancer"',
                 '"Device Observer Name")="demo"', '"Benign neoplasm of skin"', '"Tracking Unique Identifier"'):
        assert text in rendered, f"{path.name}: dsrdump output lacks {text}"


def test_dciodvfy_does_report_errors(tmp_path: Path) -> None:
    # The check above passes only if dciodvfy can fail: a report that lost a Type 1 attribute must not pass.
    report = _write_report(SOURCES[0], tmp_path)
    ds = pydicom.dcmread(report)
    del ds.ValueType
    ds.save_as(report, enforce_file_format=True)
    assert run_dciodvfy(report).errors
