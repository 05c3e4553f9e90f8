"""One request's scores as FHIR R4 resources: a ``Device`` for the model, an ``Observation`` per scored
frame, a ``DiagnosticReport`` grouping them, in one ``transaction`` Bundle. Pure: dicts in, dicts out.

What each resource holds, and why (docs/pacs.md has the reader's view):

* ``Observation.value``: P(malignant) as a unitless Quantity (UCUM ``1``), coded as DICOM
  (111047, DCM, "Probability of cancer"), the concept the SR uses. No LOINC or SNOMED CT concept for an
  algorithm's probability of skin malignancy was found; the DCM code is standard, not local.
* ``Observation.component``: P(class) for each first- and second-level class, coded with the taxonomy's
  code (SNOMED CT where it has one, else the private code of the node's name, system
  ``urn:skinbatch:taxonomy-node``); ``code.text`` is the class name as the model card spells it.
* ``Observation.device``: the Device; ``partOf``: the ImagingStudy by Study Instance UID; ``derivedFrom``:
  the image as a Media, by SOP Instance UID (DICOM input) and by the sha256 of the scored bytes;
  ``identifier``: the SR measurement group's Tracking UID (DICOM input) and the result's request id.
  These follow HL7's DICOM SR to FHIR mapping IG where R4 allows (that IG targets R5's ImagingSelection,
  which R4 lacks; the series UID and frame therefore travel in the Media reference's ``display``).
* No ``subject``: the resources carry no patient identifier. The accession number, where the request
  carried one, links them to the order (``basedOn`` ServiceRequest, identifier type ACSN), and the study
  UID to the images; the receiving system knows whose they are.
* ``method`` and ``bodySite``: where the result says how the image was taken (``input.acquisition``):
  dermoscopic (446078004) or clinical (197157006) photography, with the dermoscope's polarization,
  contact and immersion medium as text, and the image's anatomic region (SNOMED CT where coded so).
* ``status``: ``final``, or ``preliminary`` with a note when the model card says the model is untrained
  (its scores are random and must not reach a clinical record as final).
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from skinbatch.taxonomy.codes import FHIR_SYSTEMS, code_for

from .ids import (
    DICOM_UID_SYSTEM,
    INPUT_SHA256_SYSTEM,
    REQUEST_ID_SYSTEM,
    WEIGHTS_SHA256_SYSTEM,
    device_id,
    dicom_uid,
    full_url,
    observation_id,
    report_id,
)

CONTENT_TYPE = "application/fhir+json; fhirVersion=4.0"
"""The ``content-type`` header of a message on the FHIR topic."""
UCUM = FHIR_SYSTEMS["UCUM"]
DCM = FHIR_SYSTEMS["DCM"]
SNOMED = FHIR_SYSTEMS["SCT"]
PROBABILITY_OF_CANCER = {"system": DCM, "code": "111047", "display": "Probability of cancer"}
IMAGING_MEASUREMENT_REPORT = {"system": DCM, "code": "126000", "display": "Imaging Measurement Report"}
TRACKING_UID_TYPE = {"system": DCM, "code": "112040", "display": "Tracking Unique Identifier"}
STUDY_UID_TYPE = {"system": DCM, "code": "110180", "display": "Study Instance UID"}
ACCESSION_TYPE = {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN", "display": "Accession ID"}
IMAGING_CATEGORY = {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "imaging",
                    "display": "Imaging"}
UNTRAINED_NOTE = "Untrained model: these scores are random and must not be used clinically."


@dataclass(frozen=True)
class FhirFrame:
    """One scored frame: what the consumer has for it (a result message of contracts.md, or its parts)."""

    request_id: str
    """The frame's result request id (``<id>``, ``<id>:<frame>``, ``<id>/<sop>:<frame>``)."""
    malignancy: float
    coarse: Mapping[str, float]
    """First-level class → probability, in the model card's order."""
    fine: Mapping[str, float]
    """Second-level class → probability, in the model card's order."""
    input_sha256: str
    frame: int = 1
    """From 1, as in the result's ``input.frame``."""
    dicom: Mapping[str, Any] | None = None
    """The result's ``dicom`` section (study/series/SOP instance UIDs, SOP class, accession), or None."""
    scored_at: str | None = None
    """The result's ``scored_at`` (ISO 8601 with offset)."""
    acquisition: Mapping[str, Any] | None = None
    """The result's ``input.acquisition`` (dermoscopic or clinical, Supplement 221 attributes, anatomic
    region), or None: becomes the Observation's ``method`` and ``bodySite``."""

    @classmethod
    def from_result(cls, result: Mapping[str, Any]) -> FhirFrame:
        """From a result message (``status: "ok"``) as the consumer publishes it."""
        source = result.get("input") or {}
        return cls(
            request_id=str(result["request_id"]),
            malignancy=float(result["malignancy"]),
            coarse=dict(result.get("coarse") or {}),
            fine=dict(result.get("fine") or {}),
            input_sha256=str(source.get("sha256", "")),
            frame=int(source.get("frame", 1) or 1),
            dicom=result.get("dicom") or None,
            scored_at=result.get("scored_at"),
            acquisition=source.get("acquisition") or None,
        )


def _narrative(text: str) -> dict[str, str]:
    return {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{html.escape(text)}</div>'}


def _quantity(value: float) -> dict[str, Any]:
    # 15 decimals: validators flag longer decimals as beyond what FHIR servers reliably store, and the
    # model's float32 outputs carry about 7 digits; the Kafka result keeps the full double.
    return {"value": round(float(value), 15), "unit": "probability", "system": UCUM, "code": "1"}


def _coding(name: str, codes: Mapping[str, Any] | None) -> dict[str, Any]:
    code = code_for(name, codes)
    return {"coding": [{"system": code.fhir_system, "code": code.value, "display": code.meaning}], "text": name}


def _instant(when: datetime) -> str:
    if when.tzinfo is None:
        raise ValueError("issued must carry a time zone (FHIR instants do); use datetime.now(timezone.utc)")
    return when.isoformat(timespec="milliseconds")


def _trained(model: Mapping[str, Any]) -> bool:
    return bool(model.get("trained"))


def _status(model: Mapping[str, Any]) -> str:
    return "final" if _trained(model) else "preliminary"


def _model_label(model: Mapping[str, Any]) -> str:
    return f"{model.get('name', '')} {model.get('version', '')}".strip() or "unnamed model"


def device(model: Mapping[str, Any], *, taxonomy_name: str | None = None) -> dict[str, Any]:
    """The model as a Device: name, version, weights and taxonomy digests."""
    versions = [{"type": {"text": "model version"}, "value": str(model.get("version", "") or "unknown")}]
    for label, key in (("weights sha256", "weights_sha256"), ("taxonomy sha256", "taxonomy_sha256")):
        if model.get(key):
            versions.append({"type": {"text": label}, "value": str(model[key])})
    out: dict[str, Any] = {
        "resourceType": "Device",
        "id": device_id(model),
        "text": _narrative(f"skinbatch skin lesion classifier {_model_label(model)}"
                           + ("" if _trained(model) else " (untrained)")),
        "status": "active",
        "manufacturer": "skinbatch",
        "deviceName": [{"name": str(model.get("name", "") or "unnamed"), "type": "model-name"}],
        "type": {"text": "AI skin lesion classifier"},
        "version": versions,
    }
    if model.get("weights_sha256"):
        out["identifier"] = [{"system": WEIGHTS_SHA256_SYSTEM, "value": str(model["weights_sha256"])}]
    notes = [] if _trained(model) else [{"text": UNTRAINED_NOTE}]
    if taxonomy_name:
        notes.append({"text": f"Classes from taxonomy {taxonomy_name!r}."})
    if notes:
        out["note"] = notes
    return out


def _accession(dicom: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    accession = str((dicom or {}).get("accession_number") or "").strip()
    if not accession:
        return []
    return [{"type": "ServiceRequest", "identifier": {"type": {"coding": [ACCESSION_TYPE]}, "value": accession}}]


def _study(dicom: Mapping[str, Any]) -> dict[str, Any]:
    uid = str(dicom["study_instance_uid"])
    return {"type": "ImagingStudy", "identifier": {"type": {"coding": [STUDY_UID_TYPE]}, "system": DICOM_UID_SYSTEM,
                                                    "value": dicom_uid(uid)}, "display": f"Study {uid}"}


def _image_references(frame: FhirFrame) -> list[dict[str, Any]]:
    refs: list[dict[str, Any]] = []
    dicom = frame.dicom or {}
    if dicom.get("sop_instance_uid"):
        sop = str(dicom["sop_instance_uid"])
        where = f"SOP Instance {sop}, frame {dicom.get('frame', frame.frame)}"
        if dicom.get("series_instance_uid"):
            where += f", series {dicom['series_instance_uid']}"
        refs.append({"type": "Media", "identifier": {"system": DICOM_UID_SYSTEM, "value": dicom_uid(sop)},
                     "display": where})
    if frame.input_sha256:
        refs.append({"type": "Media", "identifier": {"system": INPUT_SHA256_SYSTEM, "value": frame.input_sha256},
                     "display": "the scored bytes, by sha256"})
    return refs


def observation(frame: FhirFrame, model: Mapping[str, Any], *, codes: Mapping[str, Any] | None,
                issued: datetime) -> dict[str, Any]:
    """One frame's scores as an Observation (see the module docstring for each element)."""
    dicom = frame.dicom or {}
    identifiers = []
    if dicom.get("sop_instance_uid"):
        from skinbatch.dicomweb.sr import tracking_uid  # the SR's measurement group and this share it

        uid = tracking_uid(str(dicom["sop_instance_uid"]), int(dicom.get("frame") or frame.frame), model)
        identifiers.append({"type": {"coding": [TRACKING_UID_TYPE]}, "system": DICOM_UID_SYSTEM,
                            "value": dicom_uid(uid)})
    identifiers.append({"system": REQUEST_ID_SYSTEM, "value": frame.request_id})
    components = [{"code": _coding(name, codes), "valueQuantity": _quantity(p)}
                  for name, p in (*frame.coarse.items(), *frame.fine.items())]
    out: dict[str, Any] = {
        "resourceType": "Observation",
        "id": observation_id(frame.request_id, model),
        "text": _narrative(f"P(malignant) = {frame.malignancy:.4f} for {frame.request_id}, "
                           f"by {_model_label(model)}" + ("" if _trained(model) else " (untrained)")),
        "identifier": identifiers,
        "status": _status(model),
        "category": [{"coding": [IMAGING_CATEGORY]}],
        "code": {"coding": [PROBABILITY_OF_CANCER], "text": "P(malignant) of the skin lesion in the image"},
        "issued": _instant(issued),
        "device": {"reference": f"Device/{device_id(model)}", "display": _model_label(model)},
        "valueQuantity": _quantity(frame.malignancy),
        "component": components,
    }
    if frame.scored_at:
        out["effectiveDateTime"] = frame.scored_at
    out.update(acquisition_elements(frame.acquisition))
    if based_on := _accession(dicom):
        out["basedOn"] = based_on
    if dicom.get("study_instance_uid"):
        out["partOf"] = [_study(dicom)]
    if derived := _image_references(frame):
        out["derivedFrom"] = derived
    if not _trained(model):
        out["note"] = [{"text": UNTRAINED_NOTE}]
    return out


_SNOMED_SCHEMES = ("SCT", "SRT", "SNM3")
_METHODS = {
    "dermoscopic": {"system": SNOMED, "code": "446078004", "display": "Dermoscopic photography"},
    "clinical": {"system": SNOMED, "code": "197157006", "display": "Photography of patient"},
}
_LATERALITY = {"L": "left", "R": "right", "B": "both sides"}


def acquisition_elements(acquisition: Mapping[str, Any] | None) -> dict[str, Any]:
    """``method`` (dermoscopic or clinical photography, with the dermoscope's settings as text) and
    ``bodySite`` (the image's anatomic region) of an Observation; empty where the image says nothing."""
    from skinbatch.imaging.acquisition import Acquisition

    acq = Acquisition.from_dict(dict(acquisition) if acquisition else None)
    out: dict[str, Any] = {}
    settings = [f"light source {acq.polarization.lower().replace('_', '-')}" if acq.polarization else "",
                acq.contact.lower().replace("_", "-") if acq.contact else "",
                "immersion: " + ", ".join(m.lower().replace("_", " ") for m in acq.immersion) if acq.immersion else ""]
    detail = "; ".join(s for s in settings if s)
    if acq.image_type in _METHODS:
        method: dict[str, Any] = {"coding": [_METHODS[acq.image_type]]}
        method["text"] = f"{_METHODS[acq.image_type]['display']}" + (f" ({detail})" if detail else "")
        out["method"] = method
    elif detail:
        out["method"] = {"text": detail}
    region = acq.anatomic_region
    if region is not None:
        site: dict[str, Any] = {"text": region.meaning or region.code}
        if region.scheme in _SNOMED_SCHEMES:
            coding = {"system": SNOMED, "code": region.code}
            if region.meaning:
                coding["display"] = region.meaning
            site["coding"] = [coding]
        if acq.laterality in _LATERALITY:
            site["text"] += f", {_LATERALITY[acq.laterality]}"
        out["bodySite"] = site
    return out


def diagnostic_report(request_id: str, frames: Sequence[FhirFrame], model: Mapping[str, Any], *,
                      issued: datetime) -> dict[str, Any]:
    """The request's report: its Observations, studies and images, and the highest P(malignant)."""
    top = max(frames, key=lambda f: f.malignancy)
    conclusion = f"Highest P(malignant) {top.malignancy:.4f} ({top.request_id}) by {_model_label(model)}."
    if not _trained(model):
        conclusion += " " + UNTRAINED_NOTE
    out: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": report_id(request_id, model),
        "text": _narrative(conclusion),
        "identifier": [{"system": REQUEST_ID_SYSTEM, "value": request_id}],
        "status": _status(model),
        "code": {"coding": [IMAGING_MEASUREMENT_REPORT], "text": "AI skin lesion scores"},
        "issued": _instant(issued),
        "result": [{"reference": f"Observation/{observation_id(f.request_id, model)}"} for f in frames],
        "conclusion": conclusion,
    }
    times = sorted(f.scored_at for f in frames if f.scored_at)
    if times:
        out["effectivePeriod"] = {"start": times[0], "end": times[-1]}
    accessions = {json.dumps(ref, sort_keys=True): ref for f in frames for ref in _accession(f.dicom)}
    if accessions:
        out["basedOn"] = list(accessions.values())
    studies = {str(f.dicom["study_instance_uid"]): _study(f.dicom) for f in frames
               if f.dicom and f.dicom.get("study_instance_uid")}
    if studies:
        out["imagingStudy"] = list(studies.values())
    return out


def fhir_bundle(
    request_id: str,
    frames: Sequence[FhirFrame],
    model: Mapping[str, Any],
    *,
    codes: Mapping[str, Any] | None,
    issued: datetime,
    taxonomy_name: str | None = None,
) -> dict[str, Any]:
    """A FHIR R4 ``transaction`` Bundle for one request: Device, one Observation per frame, DiagnosticReport.

    Args:
        request_id: the request's id (contracts.md), without a frame suffix.
        frames: the request's scored frames (across instances, for a study or series request).
        model: ``ModelCard.model_summary()``.
        codes: class name → code: the model card's ``taxonomy["codes"]``.
        issued: when these resources are made (timezone-aware).
        taxonomy_name: the card's ``taxonomy["name"]``, noted on the Device.

    Every entry is ``PUT <type>/<id>`` with an id derived from the request and the model, so a server
    that receives the same bundle twice updates the resources instead of duplicating them.
    """
    if not frames:
        raise ValueError("a FHIR bundle needs at least one scored frame")
    resources = [device(model, taxonomy_name=taxonomy_name),
                 *(observation(f, model, codes=codes, issued=issued) for f in frames),
                 diagnostic_report(request_id, frames, model, issued=issued)]
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "timestamp": _instant(issued),
        "entry": [{"fullUrl": full_url(r["resourceType"], r["id"]), "resource": r,
                   "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in resources],
    }


def encode(bundle: Mapping[str, Any]) -> bytes:
    """The Kafka message value: compact UTF-8 JSON."""
    return json.dumps(bundle, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
