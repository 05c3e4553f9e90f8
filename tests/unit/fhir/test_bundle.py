"""FHIR R4 resources for one request: structure, stable ids, no patient data, links to the DICOM source
and to the SR's measurement groups."""

from __future__ import annotations

import json
import warnings
from datetime import datetime, timezone
from typing import Any

import highdicom as hd
import numpy as np
import pytest

from skinbatch.dicomweb.sr import FrameScores, build_score_report, header_of
from skinbatch.fhir import CONTENT_TYPE, FhirFrame, encode, fhir_bundle
from skinbatch.fhir.ids import device_id, observation_id, report_id
from skinbatch.samples import pydicom_test_files_dir
from skinbatch.scoring import Scores
from skinbatch.taxonomy import default_taxonomy
from skinbatch.taxonomy.card import taxonomy_card_entry

CARD = taxonomy_card_entry(default_taxonomy(), "taxonomy.json")
MODEL = {"name": "demo", "version": "3", "trained": False, "weights_sha256": "ab" * 32, "taxonomy_sha256": "cd" * 32}
TRAINED = {**MODEL, "trained": True}
ISSUED = datetime(2026, 11, 27, 7, 31, tzinfo=timezone.utc)
SOURCE_FILE = "SC_rgb_rle_2frame.dcm"  # carries a patient name, ID and birth date


def _scores(seed: int) -> Scores:
    rng = np.random.default_rng(seed)
    coarse, fine = CARD["coarse_labels"], CARD["fine_labels"]
    c, f = rng.dirichlet(np.ones(len(coarse))), rng.dirichlet(np.ones(len(fine)))
    return Scores(float(c[1]), dict(zip(coarse, map(float, c))), dict(zip(fine, map(float, f))), [], np.zeros(3))


def _header() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return header_of((pydicom_test_files_dir() / SOURCE_FILE).read_bytes())


def _result(request_id: str, frame: int, dicom: bool = True) -> dict[str, Any]:
    """A result message as contracts.md describes it."""
    h = _header()
    s = _scores(frame)
    out: dict[str, Any] = {
        "request_id": request_id, "status": "ok", **s.to_dict(), "model": MODEL,
        "input": {"sha256": f"{frame:02d}" * 32, "bytes": 6128, "format": "dicom" if dicom else "jpeg",
                  "frame": frame, "frames": 2},
        "scored_at": f"2026-11-27T07:30:0{frame}.000+00:00",
    }
    if dicom:
        out["dicom"] = {"study_instance_uid": h.StudyInstanceUID, "series_instance_uid": h.SeriesInstanceUID,
                        "sop_instance_uid": h.SOPInstanceUID, "sop_class_uid": h.SOPClassUID,
                        "accession_number": "ACC-17", "frame": frame}
    return out


def _bundle(model: dict[str, Any] = MODEL, dicom: bool = True, request_id: str = "req-1") -> dict[str, Any]:
    frames = [FhirFrame.from_result(_result(f"{request_id}:{n}", n, dicom)) for n in (1, 2)]
    return fhir_bundle(request_id, frames, model, codes=CARD["codes"], issued=ISSUED, taxonomy_name="esteva")


def _resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def test_one_device_one_observation_per_frame_one_report_in_a_transaction() -> None:
    bundle = _bundle()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == ["Device", "Observation", "Observation",
                                                                       "DiagnosticReport"]
    for entry in bundle["entry"]:
        r = entry["resource"]
        assert entry["request"] == {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}
        assert entry["fullUrl"].startswith("urn:uuid:")
    assert len({e["fullUrl"] for e in bundle["entry"]}) == 4
    device = _resources(bundle, "Device")[0]
    observations = _resources(bundle, "Observation")
    report = _resources(bundle, "DiagnosticReport")[0]
    assert all(o["device"]["reference"] == f"Device/{device['id']}" for o in observations)
    assert [r["reference"] for r in report["result"]] == [f"Observation/{o['id']}" for o in observations]


def test_the_observation_holds_p_malignant_and_the_classes_with_their_codes() -> None:
    result = _result("req-1:1", 1)
    obs = _resources(_bundle(), "Observation")[0]
    assert obs["code"]["coding"] == [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "111047",
                                      "display": "Probability of cancer"}]
    assert obs["valueQuantity"]["value"] == pytest.approx(result["malignancy"], abs=1e-15)
    assert obs["valueQuantity"]["system"] == "http://unitsofmeasure.org" and obs["valueQuantity"]["code"] == "1"
    by_name = {c["code"]["text"]: c for c in obs["component"]}
    assert list(by_name) == CARD["coarse_labels"] + CARD["fine_labels"]
    for name, p in {**result["coarse"], **result["fine"]}.items():
        assert by_name[name]["valueQuantity"]["value"] == pytest.approx(p, abs=1e-15)
    benign = by_name["benign"]["code"]["coding"][0]
    assert (benign["system"], benign["code"]) == ("http://snomed.info/sct", "92384009")
    local = by_name["non-neoplastic"]["code"]["coding"][0]
    assert (local["system"], local["code"]) == ("urn:skinbatch:taxonomy-node", "non-neoplastic")


def test_dicom_input_points_at_study_series_instance_and_the_srs_measurement_group() -> None:
    h = _header()
    obs = _resources(_bundle(), "Observation")[1]  # frame 2
    study = obs["partOf"][0]
    assert study["type"] == "ImagingStudy"
    assert study["identifier"] == {"type": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM",
                                                        "code": "110180", "display": "Study Instance UID"}]},
                                   "system": "urn:dicom:uid", "value": f"urn:oid:{h.StudyInstanceUID}"}
    image = obs["derivedFrom"][0]
    assert image["type"] == "Media" and image["identifier"]["value"] == f"urn:oid:{h.SOPInstanceUID}"
    assert "frame 2" in image["display"] and h.SeriesInstanceUID in image["display"]
    assert obs["derivedFrom"][1]["identifier"] == {"system": "urn:skinbatch:input-sha256", "value": "02" * 32}
    assert obs["basedOn"][0]["identifier"]["value"] == "ACC-17"
    # The Observation's identifier is the Tracking UID of the SR's group for the same frame.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sr = build_score_report(h, [FrameScores(n, _scores(n)) for n in (1, 2)], MODEL,
                                coarse_labels=CARD["coarse_labels"], fine_labels=CARD["fine_labels"])
    groups = hd.sr.ComprehensiveSR.from_dataset(sr).content.get_image_measurement_groups()
    tracked = next(i["value"] for i in obs["identifier"] if i["system"] == "urn:dicom:uid")
    assert tracked == f"urn:oid:{groups[1].tracking_uid}"
    report = _resources(_bundle(), "DiagnosticReport")[0]
    assert [s["identifier"]["value"] for s in report["imagingStudy"]] == [f"urn:oid:{h.StudyInstanceUID}"]


def test_non_dicom_input_is_named_by_its_bytes_only() -> None:
    obs = _resources(_bundle(dicom=False), "Observation")[0]
    assert "partOf" not in obs and "basedOn" not in obs
    assert obs["derivedFrom"] == [{"type": "Media", "identifier": {"system": "urn:skinbatch:input-sha256",
                                                                   "value": "01" * 32},
                                   "display": "the scored bytes, by sha256"}]
    assert [i["system"] for i in obs["identifier"]] == ["urn:skinbatch:request-id"]


def test_no_patient_identifier_leaves_with_the_resources() -> None:
    h = _header()
    text = json.dumps(_bundle())
    assert "subject" not in text and '"Patient' not in text
    for value in (str(h.PatientName), str(h.PatientID), str(h.get("PatientBirthDate", ""))):
        if value.strip():
            assert value not in text, value


def test_ids_are_stable_so_a_redelivered_message_updates_the_same_resources() -> None:
    first, again = _bundle(), _bundle()
    assert encode(first) == encode(again)
    later = fhir_bundle("req-1", [FhirFrame.from_result(_result(f"req-1:{n}", n)) for n in (1, 2)], MODEL,
                        codes=CARD["codes"], issued=datetime(2027, 1, 1, tzinfo=timezone.utc), taxonomy_name="esteva")
    assert [e["fullUrl"] for e in later["entry"]] == [e["fullUrl"] for e in first["entry"]]
    assert [e["request"]["url"] for e in later["entry"]] == [e["request"]["url"] for e in first["entry"]]
    assert observation_id("req-1:1", MODEL) == _resources(first, "Observation")[0]["id"]
    assert report_id("req-1", MODEL) == _resources(first, "DiagnosticReport")[0]["id"]


def test_ids_change_with_the_request_or_the_model_and_fit_fhirs_id_rule() -> None:
    ids = {observation_id("req-1:1", MODEL), observation_id("req-1:2", MODEL), observation_id("req-2:1", MODEL),
           observation_id("req-1:1", {**MODEL, "version": "4"}),
           observation_id("req-1:1", {**MODEL, "weights_sha256": "ef" * 32})}
    assert len(ids) == 5
    assert device_id(MODEL) != device_id({**MODEL, "version": "4"})
    assert report_id("req-1", MODEL) != report_id("req-2", MODEL)
    import re

    for resource_id in [*ids, device_id(MODEL), report_id("req-1", MODEL)]:
        assert re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", resource_id), resource_id


def test_an_untrained_model_gives_preliminary_resources_that_say_so() -> None:
    untrained, trained = _bundle(MODEL), _bundle(TRAINED)
    for kind in ("Observation", "DiagnosticReport"):
        assert {r["status"] for r in _resources(untrained, kind)} == {"preliminary"}
        assert {r["status"] for r in _resources(trained, kind)} == {"final"}
    assert "must not be used clinically" in _resources(untrained, "Observation")[0]["note"][0]["text"]
    assert "note" not in _resources(trained, "Observation")[0]


def test_the_device_names_the_model_and_its_digests() -> None:
    device = _resources(_bundle(), "Device")[0]
    assert device["deviceName"] == [{"name": "demo", "type": "model-name"}] and device["manufacturer"] == "skinbatch"
    versions = {v["type"]["text"]: v["value"] for v in device["version"]}
    assert versions == {"model version": "3", "weights sha256": "ab" * 32, "taxonomy sha256": "cd" * 32}
    assert device["identifier"] == [{"system": "urn:skinbatch:model-weights-sha256", "value": "ab" * 32}]


def test_a_fan_out_request_reports_every_instance() -> None:
    a, b = _result("study-7/1.2.3:1", 1), _result("study-7/1.2.4", 2)
    b["dicom"] = {**b["dicom"], "sop_instance_uid": "1.2.4", "study_instance_uid": "9.9.9", "frame": 1}
    bundle = fhir_bundle("study-7", [FhirFrame.from_result(a), FhirFrame.from_result(b)], MODEL,
                         codes=CARD["codes"], issued=ISSUED)
    report = _resources(bundle, "DiagnosticReport")[0]
    assert len(report["result"]) == 2 and len(report["imagingStudy"]) == 2
    top = max((a, b), key=lambda r: r["malignancy"])
    assert f"Highest P(malignant) {top['malignancy']:.4f} ({top['request_id']})" in report["conclusion"]


def test_inputs_that_cannot_make_a_bundle_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        fhir_bundle("r", [], MODEL, codes=None, issued=ISSUED)
    with pytest.raises(ValueError, match="time zone"):
        fhir_bundle("r", [FhirFrame.from_result(_result("r", 1))], MODEL, codes=None, issued=datetime(2026, 1, 1))


def test_the_message_value_is_compact_utf8_json_of_the_bundle() -> None:
    bundle = _bundle()
    assert json.loads(encode(bundle).decode("utf-8")) == bundle
    assert CONTENT_TYPE.startswith("application/fhir+json")
