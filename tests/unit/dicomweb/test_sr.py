"""The structured report: references, numbers, derived UIDs; parsed back with pydicom."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest

from skinbatch.dicomweb.sr import (
    FrameScores,
    build_score_report,
    header_of,
    read_score_report,
    sr_instance_uid,
    sr_series_uid,
)
from skinbatch.samples import pydicom_test_files_dir
from skinbatch.scoring import Scores

COARSE = ["benign", "malignant", "non-neoplastic"]
FINE = ["benign dermal tumors, cysts, sinuses", "malignant melanoma", "inflammatory"]
MODEL = {"name": "demo", "version": "3", "trained": False, "weights_sha256": "ab" * 32, "taxonomy_sha256": "cd" * 32}


def _scores(seed: int) -> Scores:
    rng = np.random.default_rng(seed)
    c, f = rng.dirichlet(np.ones(3)), rng.dirichlet(np.ones(3))
    return Scores(float(c[1]), dict(zip(COARSE, map(float, c))), dict(zip(FINE, map(float, f))), [], np.zeros(3))


def _roundtrip(ds: pydicom.Dataset) -> pydicom.Dataset:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buf.getvalue()))


@pytest.mark.parametrize("name, frames", [("SC_rgb_jpeg.dcm", [1]), ("SC_rgb_rle_2frame.dcm", [1, 2]),
                                          ("ExplVR_BigEnd.dcm", [1])])  # no patient module, ACR-NEMA times
def test_report_references_the_source_and_holds_the_numbers(name: str, frames: list[int]) -> None:
    source = header_of((pydicom_test_files_dir() / name).read_bytes())
    scores = {n: _scores(n) for n in frames}
    sr = _roundtrip(build_score_report(source, [FrameScores(n, s) for n, s in scores.items()], MODEL,
                                       coarse_labels=COARSE, fine_labels=FINE))
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert sr.SeriesInstanceUID not in (source.SeriesInstanceUID, sr.StudyInstanceUID)
    assert sr.SOPInstanceUID == sr_instance_uid(source.SOPInstanceUID, MODEL)
    assert sr.SeriesInstanceUID == sr_series_uid(source.StudyInstanceUID, MODEL)
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == source.StudyInstanceUID
    assert evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    model, parsed = read_score_report(sr)
    assert model == {k: MODEL[k] for k in ("name", "version", "trained", "weights_sha256")}
    assert [p.frame for p in parsed] == (frames if len(frames) > 1 else [None])
    for p, n in zip(parsed, frames):
        s = scores[n]
        assert p.sop_instance_uid == source.SOPInstanceUID and p.sop_class_uid == source.SOPClassUID
        assert p.malignancy == pytest.approx(s.malignancy, abs=1e-12)
        assert p.coarse == pytest.approx(s.coarse, abs=1e-12) and p.fine == pytest.approx(s.fine, abs=1e-12)


def test_uids_are_derived_and_valid() -> None:
    a = sr_instance_uid("1.2.3", MODEL)
    assert a == sr_instance_uid("1.2.3", dict(MODEL))
    assert pydicom.uid.UID(a).is_valid and len(a) <= 64
    assert a != sr_instance_uid("1.2.4", MODEL)
    assert a != sr_instance_uid("1.2.3", MODEL, frame=2)
    assert a != sr_instance_uid("1.2.3", {**MODEL, "version": "4"})
    assert a != sr_instance_uid("1.2.3", {**MODEL, "weights_sha256": "ef" * 32})
    s = sr_series_uid("1.2", MODEL)
    assert s == sr_series_uid("1.2", {**MODEL, "weights_sha256": "other"})  # one series per model version
    assert s != sr_series_uid("1.2", {**MODEL, "version": "4"}) and s != sr_series_uid("1.3", MODEL)


def test_a_report_needs_frames() -> None:
    source = header_of((pydicom_test_files_dir() / "SC_rgb_jpeg.dcm").read_bytes())
    with pytest.raises(ValueError):
        build_score_report(source, [], MODEL, coarse_labels=COARSE, fine_labels=FINE)
