"""The FHIR resources skinbatch writes pass HAPI FHIR's R4 validator with no errors (one JVM run for all).

Offline there is no terminology server: SNOMED CT and the local class codes are reported as unknown code
systems (warnings). Everything else, structure, cardinality, types, invariants and the code systems of
the R4 specification (UCUM, HL7), is checked in full.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pytest

from skinbatch.fhir import FhirFrame, fhir_bundle
from skinbatch.localstack.fhir_validator import FhirValidation
from skinbatch.scoring import Scores
from skinbatch.taxonomy import default_taxonomy
from skinbatch.taxonomy.card import taxonomy_card_entry

pytestmark = pytest.mark.system

CARD = taxonomy_card_entry(default_taxonomy(), "taxonomy.json")
MODEL = {"name": "demo", "version": "1", "trained": False, "weights_sha256": "ab" * 32, "taxonomy_sha256": "cd" * 32}
ISSUED = datetime(2026, 11, 27, 7, 31, tzinfo=timezone.utc)


def _frame(request_id: str, seed: int, dicom: bool) -> FhirFrame:
    rng = np.random.default_rng(seed)
    coarse, fine = CARD["coarse_labels"], CARD["fine_labels"]
    c, f = rng.dirichlet(np.ones(len(coarse))), rng.dirichlet(np.ones(len(fine)))
    s = Scores(float(c[1]), dict(zip(coarse, map(float, c))), dict(zip(fine, map(float, f))), [], np.zeros(3))
    uids = {"study_instance_uid": "1.2.826.0.1.3680043.8.498.1", "series_instance_uid": "1.2.826.0.1.3680043.8.498.2",
            "sop_instance_uid": f"1.2.826.0.1.3680043.8.498.{3 + seed}", "sop_class_uid": "1.2.840.10008.5.1.4.1.1.7",
            "accession_number": "ACC-17", "frame": seed}
    return FhirFrame(request_id, s.malignancy, s.coarse, s.fine, f"{seed:02d}" * 32, seed, uids if dicom else None,
                     "2026-11-27T07:30:00.000+00:00")


def _cases() -> dict[str, dict[str, Any]]:
    dicom = fhir_bundle("req-1", [_frame("req-1:1", 1, True), _frame("req-1:2", 2, True)], MODEL,
                        codes=CARD["codes"], issued=ISSUED, taxonomy_name="esteva2017-illustrative")
    photo = fhir_bundle("photo-9", [_frame("photo-9", 1, False)], {**MODEL, "trained": True},
                        codes=CARD["codes"], issued=ISSUED)
    uncoded = fhir_bundle("req-3", [_frame("req-3", 3, True)], {**MODEL, "taxonomy_sha256": ""}, codes=None,
                          issued=ISSUED)
    dermoscopic = dataclasses.replace(
        _frame("dms-4", 4, True), acquisition={
            "image_type": "dermoscopic", "polarization": "POLARIZED", "contact": "CONTACT", "immersion": ["ALCOHOL"],
            "laterality": "L", "anatomic_region": {"code": "39937001", "scheme": "SCT", "meaning": "Skin of back"}})
    dms = fhir_bundle("dms-4", [dermoscopic], {**MODEL, "trained": True}, codes=CARD["codes"], issued=ISSUED)
    cases = {"dicom bundle, untrained": dicom, "photo bundle, trained": photo, "bundle without codes": uncoded,
             "dermoscopic bundle with body site and method": dms}
    for entry in dicom["entry"]:  # each resource also on its own, as an engine that splits the bundle sends it
        cases[f"{entry['resource']['resourceType']} alone"] = entry["resource"]
    return cases


def test_every_resource_validates_without_errors_and_a_broken_one_does_not(
        fhir_validator: Callable[[Sequence[dict[str, Any]]], list[FhirValidation]]) -> None:
    cases = _cases()
    broken = copy.deepcopy(cases["dicom bundle, untrained"])
    broken["entry"][1]["resource"]["status"] = "probably"  # not an ObservationStatus
    del broken["entry"][2]["resource"]["code"]  # Observation.code is 1..1
    results = fhir_validator([*cases.values(), broken])
    for name, result in zip(cases, results):
        assert not result.errors, f"{name}: " + "\n".join(f"{i.location}: {i.message}" for i in result.errors)
    assert len(results[-1].errors) >= 2, "the validator let a broken Observation through"
    # Warnings only where offline validation cannot decide (terminology) or where we chose so (no subject).
    expected = ("CodeSystem is unknown", "should have a subject", "should have a performer", "IdentifierType",
                "does not match the full target URL", "LOINC Diagnostic Report Codes")
    odd = [f"{i.location}: {i.message}" for r in results[:-1] for i in r.warnings
           if not any(text in i.message for text in expected)]
    assert not odd, "\n".join(odd)
