"""The structured report: a TID 1500 Measurement Report that highdicom's reader parses, with coded
classes, the source image (and frame) as each measurement's source, and derived UIDs."""

from __future__ import annotations

import io
import warnings

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from skinbatch.dicomweb.sr import (
    FrameScores,
    build_score_report,
    device_observer_uid,
    header_of,
    read_score_report,
    references_frames,
    sr_instance_uid,
    sr_series_uid,
    tracking_uid,
)
from skinbatch.samples import pydicom_test_files_dir
from skinbatch.scoring import Scores
from skinbatch.taxonomy import default_taxonomy
from skinbatch.taxonomy.card import taxonomy_card_entry
from tests.fixtures.sr_checks import assert_tid1500

CARD = taxonomy_card_entry(default_taxonomy(), "taxonomy.json")
COARSE, FINE, CODES = CARD["coarse_labels"], CARD["fine_labels"], CARD["codes"]
MODEL = {"name": "demo", "version": "3", "trained": False, "weights_sha256": "ab" * 32, "taxonomy_sha256": "cd" * 32}
INPUT_SHA = "ef" * 32


def _scores(seed: int) -> Scores:
    rng = np.random.default_rng(seed)
    c, f = rng.dirichlet(np.ones(len(COARSE))), rng.dirichlet(np.ones(len(FINE)))
    return Scores(float(c[1]), dict(zip(COARSE, map(float, c))), dict(zip(FINE, map(float, f))), [], np.zeros(3))


def _source(name: str) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return header_of((pydicom_test_files_dir() / name).read_bytes())


def _roundtrip(ds: pydicom.Dataset) -> pydicom.Dataset:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buf.getvalue()))


def _report(
    name: str, frames: list[int], **kwargs: object
) -> tuple[pydicom.Dataset, pydicom.Dataset, dict[int, Scores]]:
    source = _source(name)
    scores = {n: _scores(n) for n in frames}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # highdicom's remarks on the test files' odd person names
        sr = build_score_report(source, [FrameScores(n, s) for n, s in scores.items()], MODEL,
                                coarse_labels=COARSE, fine_labels=FINE, codes=CODES, input_sha256=INPUT_SHA,
                                **kwargs)  # type: ignore[arg-type]
    return source, _roundtrip(sr), scores


# SC_rgb_jpeg: single frame. SC_rgb_rle_2frame: two frames of a single-frame SOP class (Secondary
# Capture), whose references may not name a frame. examples_ybr_color: Ultrasound Multi-frame (30 frames,
# 3 scored). ExplVR_BigEnd: no patient module, ACR-NEMA style times.
CASES = [("SC_rgb_jpeg.dcm", [1]), ("SC_rgb_rle_2frame.dcm", [1, 2]), ("examples_ybr_color.dcm", [1, 2, 3]),
         ("ExplVR_BigEnd.dcm", [1])]


@pytest.mark.parametrize("name, frames", CASES)
def test_highdicoms_tid1500_reader_finds_one_group_per_frame_with_the_score_and_the_source(
        name: str, frames: list[int]) -> None:
    source, sr, scores = _report(name, frames)
    groups = assert_tid1500(sr, frames, {n: s.malignancy for n, s in scores.items()}, source.SOPInstanceUID)
    for group in groups:
        assert group.finding_type == codes.SCT.SkinLesion
        malignancy = group.get_measurements(name=codes.DCM.ProbabilityOfCancer)[0]
        # Exact: the FD value is the Kafka result's double, not its DS rendering.
        assert malignancy.value in {s.malignancy for s in scores.values()}
        assert malignancy.unit == codes.UCUM.NoUnits


@pytest.mark.parametrize("name, frames, framed", [
    ("examples_ybr_color.dcm", [2, 3], True), ("SC_rgb_rle_2frame.dcm", [2], False), ("SC_rgb_jpeg.dcm", [1], False)])
def test_a_frame_is_referenced_by_number_only_where_the_sop_class_is_multi_frame(
        name: str, frames: list[int], framed: bool) -> None:
    source, sr, _ = _report(name, frames)
    assert references_frames(source) is framed
    groups = hd.sr.ComprehensiveSR.from_dataset(sr).content.get_image_measurement_groups()
    for frame, group in zip(frames, groups):
        numbers = [s.referenced_frame_numbers for s in group.source_images]
        assert numbers == ([[frame]] if framed else [None])
        multi = int(source.get("NumberOfFrames", 1) or 1) > 1
        assert group.tracking_identifier == (f"skin lesion, frame {frame}" if multi else "skin lesion")
        assert group.tracking_uid == tracking_uid(source.SOPInstanceUID, frame, MODEL)


def test_the_report_has_the_rows_tid1500_requires_and_names_the_model_as_device_observer() -> None:
    _, sr, _ = _report("SC_rgb_jpeg.dcm", [1])
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    report = hd.sr.ComprehensiveSR.from_dataset(sr).content
    assert isinstance(report, hd.sr.MeasurementReport)
    root = report[0]
    assert root.name == codes.DCM.ImagingMeasurementReport and root.template_id == "1500"
    items = {item.name: item for item in root.ContentSequence}
    assert items[codes.DCM.LanguageOfContentItemAndDescendants].value.value == "en-US"
    assert items[codes.DCM.ProcedureReported].value == codes.SCT.ImagingProcedure  # a Secondary Capture
    assert codes.DCM.ImagingMeasurements in items and codes.DCM.ImageLibrary in items
    device = report.get_observer_contexts(observer_type=codes.DCM.Device)[0].observer_identifying_attributes
    assert device.uid == device_observer_uid(MODEL)
    assert (device.name, device.manufacturer_name, device.model_name) == ("demo", "skinbatch", "demo 3")
    group = report.get_image_measurement_groups()[0]
    algorithm = {item.name: item.value for item in group[0].ContentSequence
                 if item.value_type == hd.sr.ValueTypeValues.TEXT}
    assert (algorithm[codes.DCM.AlgorithmName], algorithm[codes.DCM.AlgorithmVersion]) == ("demo", "3")
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99SKINBATCH"


def test_procedure_reported_follows_the_kind_of_photograph() -> None:
    from skinbatch.dicomweb.sr import procedure_reported

    ds = pydicom.Dataset()
    ds.SOPClassUID, ds.Modality = "1.2.840.10008.5.1.4.1.1.77.1.4", "XC"
    assert procedure_reported(ds).value == "197157006"  # Photography of patient
    ds.SOPClassUID, ds.Modality = "1.2.840.10008.5.1.4.1.1.77.1.7", "DMS"
    assert procedure_reported(ds).value == "446078004"  # Dermoscopic photography


def test_classes_carry_the_taxonomys_codes_and_a_private_code_named_after_the_node() -> None:
    _, sr, scores = _report("SC_rgb_jpeg.dcm", [1])
    group = hd.sr.ComprehensiveSR.from_dataset(sr).content.get_image_measurement_groups()[0]
    values = {(m.name.scheme_designator, m.name.value): m.value for m in group.get_measurements()}
    s = scores[1]
    assert values[("SCT", "92384009")] == s.coarse["benign"]  # Benign neoplasm of skin
    assert values[("SCT", "94047004")] == s.coarse["malignant"]  # Primary malignant neoplasm of skin
    assert values[("SCT", "703938007")] == s.fine["inflammatory conditions"]  # Inflammatory dermatosis
    assert values[("99SKINBATCH", "non-neoplastic")] == s.coarse["non-neoplastic"]
    long_name = "benign epidermal tumors, hamartomas, milia, and growths"
    assert values[("99SKINBATCH", long_name)] == s.fine[long_name]
    raw = [item for g in sr.ContentSequence if g.ConceptNameCodeSequence[0].CodeValue == "126010"
           for item in g.ContentSequence[0].ContentSequence if item.ValueType == "NUM"]
    long_item = next(i for i in raw if i.ConceptNameCodeSequence[0].get("LongCodeValue") == long_name)
    assert "CodeValue" not in long_item.ConceptNameCodeSequence[0]  # over 16 characters: Long Code Value
    assert len(raw) == 1 + len(COARSE) + len(FINE)


def test_a_model_card_without_codes_gives_every_class_its_private_code() -> None:
    source = _source("SC_rgb_jpeg.dcm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sr = build_score_report(source, [FrameScores(1, _scores(1))], MODEL, coarse_labels=COARSE, fine_labels=FINE)
    group = hd.sr.ComprehensiveSR.from_dataset(_roundtrip(sr)).content.get_image_measurement_groups()[0]
    names = {m.name.value for m in group.get_measurements()} - {"111047"}
    assert names == set(COARSE) | set(FINE)


@pytest.mark.parametrize("name, frames", CASES)
def test_read_score_report_gives_back_labels_numbers_frames_and_traceability(name: str, frames: list[int]) -> None:
    source, sr, scores = _report(name, frames)
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert sr.SeriesInstanceUID not in (source.SeriesInstanceUID, sr.StudyInstanceUID)
    assert sr.SOPInstanceUID == sr_instance_uid(source.SOPInstanceUID, MODEL)
    assert sr.SeriesInstanceUID == sr_series_uid(source.StudyInstanceUID, MODEL)
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    referenced = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert referenced.ReferencedSOPInstanceUID == source.SOPInstanceUID
    model, parsed = read_score_report(sr)
    assert model == {k: MODEL[k] for k in ("name", "version", "trained", "weights_sha256")}
    assert [p.frame for p in parsed] == (frames if len(frames) > 1 or int(source.get("NumberOfFrames", 1) or 1) > 1
                                         else [None])
    for p, n in zip(parsed, frames):
        s = scores[n]
        assert p.sop_instance_uid == source.SOPInstanceUID and p.sop_class_uid == source.SOPClassUID
        assert p.malignancy == s.malignancy
        assert p.coarse == s.coarse and p.fine == s.fine
        assert list(p.coarse) == COARSE and list(p.fine) == FINE
        assert p.input_sha256 == INPUT_SHA
        assert p.codes is not None and p.codes["melanoma" if "melanoma" in p.codes else "benign"].scheme == "SCT"


def test_only_a_trained_models_report_is_final_and_none_is_verified() -> None:
    _, sr, _ = _report("SC_rgb_jpeg.dcm", [1])
    assert (sr.PreliminaryFlag, sr.VerificationFlag) == ("PRELIMINARY", "UNVERIFIED")
    source = _source("SC_rgb_jpeg.dcm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trained = build_score_report(source, [FrameScores(1, _scores(1))], {**MODEL, "trained": True},
                                     coarse_labels=COARSE, fine_labels=FINE)
    assert (trained.PreliminaryFlag, trained.VerificationFlag) == ("FINAL", "UNVERIFIED")


def test_the_report_states_the_model_facts_for_traceability() -> None:
    _, sr, _ = _report("SC_rgb_jpeg.dcm", [1])
    facts = {item.ConceptNameCodeSequence[0].CodeValue: item for item in sr.ContentSequence
             if item.ConceptNameCodeSequence[0].CodingSchemeDesignator == "99SKINBATCH"}
    assert facts["trained"].ConceptCodeSequence[0].CodeValue == codes.SCT.No.value
    assert facts["weights-sha256"].TextValue == MODEL["weights_sha256"]
    assert facts["taxonomy-sha256"].TextValue == MODEL["taxonomy_sha256"]
    assert facts["input-sha256"].TextValue == INPUT_SHA


def test_uids_are_derived_as_before_so_redelivery_finds_the_stored_report() -> None:
    # Pinned: these are the UIDs the reports already in archives carry. A change here would make every
    # redelivered message store a second report.
    assert sr_instance_uid("1.2.3", MODEL) == "1.2.826.0.1.3680043.8.498.18917540937652020793444928878120012926"
    assert sr_instance_uid("1.2.3", MODEL, 2) == "1.2.826.0.1.3680043.8.498.81895185785757458257414224163139626233"
    assert sr_series_uid("1.2", MODEL) == "1.2.826.0.1.3680043.8.498.21935663101332941607107140579804117757"


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
    t = tracking_uid("1.2.3", 1, MODEL)
    assert pydicom.uid.UID(t).is_valid and t != tracking_uid("1.2.3", 2, MODEL) and t == tracking_uid("1.2.3", 1, MODEL)


def test_building_twice_gives_the_same_report() -> None:
    source = _source("SC_rgb_rle_2frame.dcm")
    frames = [FrameScores(n, _scores(n)) for n in (1, 2)]
    from datetime import datetime

    when = datetime(2026, 11, 27, 7, 30)
    one, two = (build_score_report(source, frames, MODEL, coarse_labels=COARSE, fine_labels=FINE, codes=CODES,
                                   input_sha256=INPUT_SHA, content_datetime=when) for _ in range(2))
    assert one.SOPInstanceUID == two.SOPInstanceUID
    assert [c.to_json_dict() for c in one.ContentSequence] == [c.to_json_dict() for c in two.ContentSequence]


def test_a_report_needs_frames() -> None:
    source = _source("SC_rgb_jpeg.dcm")
    with pytest.raises(ValueError):
        build_score_report(source, [], MODEL, coarse_labels=COARSE, fine_labels=FINE)


# -- the checker itself must be able to fail ---------------------------------------------------------

def test_assert_tid1500_rejects_a_wrong_score_source_or_frame_set() -> None:
    source, sr, scores = _report("SC_rgb_rle_2frame.dcm", [1, 2])
    expected = {n: s.malignancy for n, s in scores.items()}
    assert_tid1500(sr, [1, 2], expected, source.SOPInstanceUID)
    with pytest.raises(AssertionError, match="P\\(cancer\\)"):
        assert_tid1500(sr, [1, 2], {**expected, 2: expected[2] + 0.01}, source.SOPInstanceUID)
    with pytest.raises(AssertionError, match="source image"):
        assert_tid1500(sr, [1, 2], expected, "1.2.3.4")
    with pytest.raises(AssertionError, match="measurement groups"):
        assert_tid1500(sr, [1, 2, 3], {**expected, 3: 0.5}, source.SOPInstanceUID)


def test_assert_tid1500_rejects_a_report_without_tid1500_structure() -> None:
    source, sr, scores = _report("SC_rgb_jpeg.dcm", [1])
    root = sr.ContentSequence
    sr.ContentSequence = [i for i in root if i.ConceptNameCodeSequence[0].CodeValue != "121058"]  # no procedure
    with pytest.raises(AssertionError, match="procedure reported"):
        assert_tid1500(sr, [1], {1: scores[1].malignancy}, source.SOPInstanceUID)
