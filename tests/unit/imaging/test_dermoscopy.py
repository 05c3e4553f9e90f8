"""A Dermoscopic Photography instance (modality DMS) with the Supplement 221 attributes and an anatomic
region, built with pydicom: the result, the SR (read back with highdicom; dciodvfy finds no error) and the
FHIR Observation carry how it was taken and where on the body."""

from __future__ import annotations

import io
import warnings
from datetime import datetime, timezone
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from skinbatch.dicomweb.sr import FrameScores, build_score_report, header_of, read_score_report
from skinbatch.fhir import FhirFrame, fhir_bundle
from skinbatch.imaging import DecodeLimits, Preprocessing, decode
from skinbatch.imaging.acquisition import Acquisition
from skinbatch.imaging.model_input import prepare_model_input
from skinbatch.scoring import Scores
from skinbatch.taxonomy import default_taxonomy
from skinbatch.taxonomy.card import taxonomy_card_entry

from . import _factories as f

pytestmark = pytest.mark.timeout(60)

BACK = ("39937001", "SCT", "Skin of back")
CARD = taxonomy_card_entry(default_taxonomy(), "taxonomy.json")
MODEL = {"name": "demo", "version": "1", "trained": True, "weights_sha256": "ab" * 32, "taxonomy_sha256": "cd" * 32}


def dms_instance(polarization: str = "POLARIZED", contact: str = "CONTACT",
                 immersion: tuple[str, ...] = ("ALCOHOL",), laterality: str = "L") -> bytes:
    ds = f.dicom_dataset([f.photo(96, 72)], sop_class=f.DERMOSCOPIC)
    ds.Modality = "DMS"
    ds.LightSourcePolarization = polarization
    ds.ContactMethod = contact
    ds.ImmersionMedia = list(immersion)
    ds.ImageLaterality = laterality
    region = Dataset()
    region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = BACK
    ds.AnatomicRegionSequence = [region]
    return f.dicom_bytes(ds)


def _scores() -> Scores:
    rng = np.random.default_rng(0)
    coarse, fine = CARD["coarse_labels"], CARD["fine_labels"]
    c, g = rng.dirichlet(np.ones(len(coarse))), rng.dirichlet(np.ones(len(fine)))
    return Scores(float(c[1]), dict(zip(coarse, map(float, c))), dict(zip(fine, map(float, g))), [], np.zeros(3))


def test_the_decoded_image_and_the_result_carry_the_acquisition() -> None:
    from skinbatch.consumer.service import _input_info

    data = dms_instance()
    img = decode(data)
    assert img.acquisition == Acquisition("dermoscopic", "POLARIZED", "CONTACT", ("ALCOHOL",),
                                          img.acquisition.anatomic_region if img.acquisition else None, "L")
    assert img.acquisition is not None and img.acquisition.anatomic_region is not None
    assert img.acquisition.anatomic_region.to_dict() == {"code": BACK[0], "scheme": BACK[1], "meaning": BACK[2]}
    out = prepare_model_input(data, Preprocessing(), DecodeLimits())
    info = _input_info(out)
    assert info["acquisition"] == {"image_type": "dermoscopic", "polarization": "POLARIZED", "contact": "CONTACT",
                                   "laterality": "L", "immersion": ["ALCOHOL"],
                                   "anatomic_region": {"code": BACK[0], "scheme": BACK[1], "meaning": BACK[2]}}


def test_a_clinical_photograph_says_so_and_a_jpeg_says_nothing() -> None:
    clinical = decode(f.dicom([f.photo(32, 24)]))  # VL Photographic, modality XC
    assert clinical.acquisition == Acquisition(image_type="clinical")
    assert decode(f.jpeg(f.photo(32, 24))).acquisition is None


def test_the_header_form_for_jpegs_from_a_dermatoscope() -> None:
    assert Acquisition.from_header("dermoscopic").image_type == "dermoscopic"
    full = Acquisition.from_header(b'{"image_type": "dermoscopic", "polarization": "non_polarized", '
                                   b'"immersion": ["mineral_oil"], "anatomic_region": '
                                   b'{"code": "39937001", "scheme": "SCT", "meaning": "Skin of back"}}')
    assert full.polarization == "NON_POLARIZED" and full.immersion == ("MINERAL_OIL",)
    assert Acquisition.from_dict(full.to_dict()) == full
    with pytest.raises(ValueError, match="dermoscopic"):
        Acquisition.from_header("dermatoscope")


def _sr(data: bytes) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sr = build_score_report(header_of(data), [FrameScores(1, _scores())], MODEL,
                                coarse_labels=CARD["coarse_labels"], fine_labels=CARD["fine_labels"],
                                codes=CARD["codes"], input_sha256="ef" * 32)
    buf = io.BytesIO()
    sr.save_as(buf, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buf.getvalue()))


def test_the_sr_carries_the_finding_site_and_the_dermoscope_settings(tmp_path: Path) -> None:
    from tests.fixtures.sr_checks import run_dciodvfy

    sr = _sr(dms_instance())
    report = hd.sr.ComprehensiveSR.from_dataset(sr).content
    assert report.get_image_measurement_groups()[0].finding_sites  # highdicom reads the group's site
    site = report.get_image_measurement_groups()[0].finding_sites[0]
    assert site.value == Code(*BACK)
    assert site.laterality == Code("7771000", "SCT", "Left")
    procedure = [i for i in report[0].ContentSequence if i.name.value == "121058"][0]  # Procedure reported
    assert procedure.value.value == "446078004"  # Dermoscopic photography
    model, frames = read_score_report(sr)
    assert model["acquisition"] == {"polarization": "POLARIZED", "contact": "CONTACT", "immersion": ["ALCOHOL"]}
    assert len(frames) == 1
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    checked = run_dciodvfy(path)
    assert not checked.errors, "\n".join(checked.errors)


def test_an_sr_of_an_image_without_them_has_no_site_and_no_settings() -> None:
    sr = _sr(f.dicom([f.photo(32, 24)]))
    report = hd.sr.ComprehensiveSR.from_dataset(sr).content
    assert not report.get_image_measurement_groups()[0].finding_sites
    assert "acquisition" not in read_score_report(sr)[0]


def test_the_fhir_observation_has_body_site_and_method() -> None:
    data = dms_instance()
    out = prepare_model_input(data, Preprocessing(), DecodeLimits())
    s = _scores()
    result = {"request_id": "dms-1", "malignancy": s.malignancy, "coarse": s.coarse, "fine": s.fine,
              "input": {"sha256": out.sha256, "frame": 1, "acquisition": out.acquisition},
              "dicom": {**(out.dicom or {}), "frame": 1}, "scored_at": "2026-11-27T07:30:00.000+00:00"}
    bundle = fhir_bundle("dms-1", [FhirFrame.from_result(result)], MODEL, codes=CARD["codes"],
                         issued=datetime(2026, 11, 27, tzinfo=timezone.utc))
    obs = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation")
    assert obs["bodySite"] == {"text": "Skin of back, left",
                               "coding": [{"system": "http://snomed.info/sct", "code": BACK[0], "display": BACK[2]}]}
    assert obs["method"]["coding"] == [{"system": "http://snomed.info/sct", "code": "446078004",
                                        "display": "Dermoscopic photography"}]
    assert obs["method"]["text"] == "Dermoscopic photography (light source polarized; contact; immersion: alcohol)"
    plain = fhir_bundle("p", [FhirFrame.from_result({**result, "input": {"sha256": "x"}})], MODEL,
                        codes=CARD["codes"], issued=datetime(2026, 11, 27, tzinfo=timezone.utc))
    plain_obs = next(e["resource"] for e in plain["entry"] if e["resource"]["resourceType"] == "Observation")
    assert "bodySite" not in plain_obs and "method" not in plain_obs


def test_a_jpeg_from_a_dermatoscope_says_so_in_the_acquisition_header() -> None:
    from skinbatch.consumer.errors import RequestRejected
    from skinbatch.consumer.requests import parse_request
    from skinbatch.consumer.service import _input_info

    jpeg = f.jpeg(f.photo(64, 48))
    header = b'{"image_type": "dermoscopic", "polarization": "POLARIZED", "contact": "NON_CONTACT"}'
    request = parse_request(jpeg, None, [("acquisition", header)], None, 10_000)
    out = prepare_model_input(jpeg, Preprocessing(), DecodeLimits())
    assert _input_info(out, request)["acquisition"] == {"image_type": "dermoscopic", "polarization": "POLARIZED",
                                                         "contact": "NON_CONTACT"}
    assert "acquisition" not in _input_info(out, parse_request(jpeg, None, [], None, 10_000))
    # A DICOM image's own attributes win over the header's.
    dms = dms_instance(polarization="NON_POLARIZED")
    dicom_out = prepare_model_input(dms, Preprocessing(), DecodeLimits())
    assert _input_info(dicom_out, request)["acquisition"]["polarization"] == "NON_POLARIZED"
    with pytest.raises(RequestRejected) as info:
        parse_request(jpeg, None, [("acquisition", b"dermatoscope")], None, 10_000)
    assert info.value.type == "invalid_header"
