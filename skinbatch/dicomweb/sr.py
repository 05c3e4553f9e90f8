"""The scores of one image as a DICOM Comprehensive SR (PS3.3 A.35.3), built with highdicom. Pure.

The content tree follows the shape of TID 1500 (Measurement Report), kept to what a viewer needs:

    CONTAINER  (126000, DCM, "Imaging Measurement Report")
      HAS CONCEPT MOD  Algorithm Name / Algorithm Version           (TID 4019, via highdicom)
      CONTAINS  CODE  (trained, 99SKINBATCH)  = Yes | No            (SCT 373066001 / 373067005)
      CONTAINS  TEXT  (weights-sha256, 99SKINBATCH)
      CONTAINS  CONTAINER (125007, DCM, "Measurement Group")         one per scored frame
        CONTAINS  IMAGE (121112, DCM, "Source of Measurement")      the source SOP instance (+ frame)
        CONTAINS  NUM   (111047, DCM, "Probability of cancer")      P(malignant)
        CONTAINS  NUM   (coarse-<i>, 99SKINBATCH, "P(<label>)")     first-level classes
        CONTAINS  NUM   (fine-<i>,   99SKINBATCH, "P(<label>)")     second-level classes

Probabilities are unitless (UCUM ``1``). Labels come from the model card, never from here.

Identifiers are derived, not random, so that storing is idempotent: the SR's SOP Instance UID is a hash
of (source SOP Instance UID, frame selection, model name, version, weights sha256), and its Series
Instance UID a hash of (study, model name, version): every report of one model lands in one series of
the source study, and a redelivered message yields the same UID, which the caller finds already stored.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import highdicom as hd
import pydicom
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import PYDICOM_ROOT_UID, generate_uid

from skinbatch.scoring import Scores

SCHEME = "99SKINBATCH"
"""Private coding scheme (PS3.16 §8.2: designators starting with "99" are local)."""
CODE_TRAINED = Code("trained", SCHEME, "Model trained on labelled data")
CODE_WEIGHTS = Code("weights-sha256", SCHEME, "Model weights sha256")
UNITLESS = Code("1", "UCUM", "no units")
SERIES_NUMBER = 7301
MANUFACTURER = "skinbatch"
UID_PREFIX = PYDICOM_ROOT_UID
"""pydicom's root, meant for UIDs derived from entropy sources like these."""

# highdicom narrates at INFO which patient and study attributes it copies, naming the source instance.
logging.getLogger("highdicom").setLevel(logging.WARNING)


@dataclass(frozen=True)
class FrameScores:
    frame: int
    """From 1."""
    scores: Scores


def sr_instance_uid(source_sop_instance_uid: str, model: dict[str, Any], frame: int | None = None) -> str:
    """The SR's SOP Instance UID: the same inputs always give the same UID (idempotent stores)."""
    return str(generate_uid(UID_PREFIX, entropy_srcs=[
        "sr-instance", source_sop_instance_uid, "all" if frame is None else str(frame),
        str(model.get("name", "")), str(model.get("version", "")), str(model.get("weights_sha256", ""))]))


def sr_series_uid(study_instance_uid: str, model: dict[str, Any]) -> str:
    """One series per (study, model name and version)."""
    return str(generate_uid(UID_PREFIX, entropy_srcs=[
        "sr-series", study_instance_uid, str(model.get("name", "")), str(model.get("version", ""))]))


def _meaning(text: str) -> str:
    return text if len(text) <= 64 else text[:63] + "…"


def _num(code: Code, value: float) -> hd.sr.NumContentItem:
    return hd.sr.NumContentItem(name=code, value=float(value), unit=UNITLESS,
                                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)


def build_score_report(
    source: pydicom.Dataset,
    frames: Sequence[FrameScores],
    model: dict[str, Any],
    *,
    coarse_labels: Sequence[str],
    fine_labels: Sequence[str],
    frame_selection: int | None = None,
    content_datetime: datetime | None = None,
) -> pydicom.Dataset:
    """A Comprehensive SR for ``source`` (its header is enough) holding the scores of ``frames``.

    ``model`` is ``ModelCard.model_summary()``. ``frame_selection`` is the one frame a request named, if
    any (it takes part in the SR's UID).
    """
    if not frames:
        raise ValueError("a score report needs at least one scored frame")
    source = _with_type2_attributes(source)
    multi_frame = int(source.get("NumberOfFrames", 1) or 1) > 1
    rel = hd.sr.RelationshipTypeValues
    root = hd.sr.ContainerContentItem(name=codes.DCM.ImagingMeasurementReport, template_id="1500")
    items: list[Any] = list(hd.sr.AlgorithmIdentification(name=str(model.get("name", "")),
                                                         version=str(model.get("version", ""))))
    trained = bool(model.get("trained"))
    items.append(hd.sr.CodeContentItem(name=CODE_TRAINED, value=codes.SCT.Yes if trained else codes.SCT.No,
                                       relationship_type=rel.CONTAINS))
    if model.get("weights_sha256"):
        items.append(hd.sr.TextContentItem(name=CODE_WEIGHTS, value=str(model["weights_sha256"]),
                                           relationship_type=rel.CONTAINS))
    for fs in frames:
        group = hd.sr.ContainerContentItem(name=codes.DCM.MeasurementGroup, relationship_type=rel.CONTAINS)
        members: list[Any] = [hd.sr.ImageContentItem(
            name=codes.DCM.SourceOfMeasurement,
            referenced_sop_class_uid=source.SOPClassUID,
            referenced_sop_instance_uid=source.SOPInstanceUID,
            referenced_frame_numbers=fs.frame if multi_frame else None,
            relationship_type=rel.CONTAINS)]
        members.append(_num(codes.DCM.ProbabilityOfCancer, fs.scores.malignancy))
        for i, label in enumerate(coarse_labels):
            members.append(_num(Code(f"coarse-{i}", SCHEME, _meaning(f"P({label})")), fs.scores.coarse[label]))
        for i, label in enumerate(fine_labels):
            members.append(_num(Code(f"fine-{i}", SCHEME, _meaning(f"P({label})")), fs.scores.fine[label]))
        group.ContentSequence = hd.sr.ContentSequence(members)
        items.append(group)
    root.ContentSequence = hd.sr.ContentSequence(items)

    when = content_datetime or datetime.now()
    sr = hd.sr.ComprehensiveSR(
        evidence=[source],
        content=root,
        series_instance_uid=sr_series_uid(source.StudyInstanceUID, model),
        series_number=SERIES_NUMBER,
        sop_instance_uid=sr_instance_uid(source.SOPInstanceUID, model, frame_selection),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=_meaning(f"AI skin lesion scores: {model.get('name', '')} {model.get('version', '')}"),
        content_date=when.date(),
        content_time=when.time(),
    )
    return sr


# Patient and study attributes the SR must carry (type 2: present, possibly empty). Copied from the
# source when it has them; left empty, never invented, when it does not.
_TYPE2 = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyID", "AccessionNumber",
          "StudyDate", "StudyTime", "ReferringPhysicianName")


def _conformant(keyword: str, value: Any) -> str:
    """Old ACR-NEMA style dates and times (``1997.04.24``, ``14:04:38``) in today's form, else empty."""
    text = str(value or "").strip()
    if keyword == "StudyDate":
        digits = text.replace(".", "")
        return digits if len(digits) == 8 and digits.isdigit() else ""
    digits = text.replace(":", "")
    head = digits.split(".")[0]
    return digits if head.isdigit() and len(head) in (2, 4, 6) else ""


def _with_type2_attributes(source: pydicom.Dataset) -> pydicom.Dataset:
    missing = [k for k in _TYPE2 if k not in source]
    odd = [k for k in ("StudyDate", "StudyTime") if k in source and _conformant(k, source.get(k)) != str(source.get(k) or "")]
    if not missing and not odd:
        return source
    out = copy.deepcopy(source)
    for keyword in missing:
        setattr(out, keyword, "")
    for keyword in odd:
        setattr(out, keyword, _conformant(keyword, source.get(keyword)))
    return out


def header_of(data: bytes) -> pydicom.Dataset:
    """The header of a Part-10 file (no pixel data): what :func:`build_score_report` needs."""
    import io

    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)


# -- reading back ----------------------------------------------------------------------------------

@dataclass
class ParsedFrame:
    sop_instance_uid: str
    sop_class_uid: str
    frame: int | None
    malignancy: float
    coarse: dict[str, float]
    """First-level class label → probability."""
    fine: dict[str, float]
    """Second-level class label → probability."""


def _numeric(item: pydicom.Dataset) -> float:
    mv = item.MeasuredValueSequence[0]
    if "FloatingPointValue" in mv:
        return float(mv.FloatingPointValue)
    return float(mv.NumericValue)


def read_score_report(sr: pydicom.Dataset) -> tuple[dict[str, Any], list[ParsedFrame]]:
    """Model facts and per-frame scores from an SR this module wrote (for tests and for readers)."""
    model: dict[str, Any] = {}
    frames: list[ParsedFrame] = []
    for item in sr.ContentSequence:
        name = item.ConceptNameCodeSequence[0]
        if item.ValueType == "TEXT" and name.CodeValue == codes.DCM.AlgorithmName.value:
            model["name"] = item.TextValue
        elif item.ValueType == "TEXT" and name.CodeValue == codes.DCM.AlgorithmVersion.value:
            model["version"] = item.TextValue
        elif item.ValueType == "TEXT" and name.CodeValue == CODE_WEIGHTS.value:
            model["weights_sha256"] = item.TextValue
        elif item.ValueType == "CODE" and name.CodeValue == CODE_TRAINED.value:
            model["trained"] = item.ConceptCodeSequence[0].CodeValue == codes.SCT.Yes.value
        elif item.ValueType == "CONTAINER" and name.CodeValue == codes.DCM.MeasurementGroup.value:
            ref: pydicom.Dataset | None = None
            malignancy = float("nan")
            coarse: dict[str, float] = {}
            fine: dict[str, float] = {}
            for member in item.ContentSequence:
                code = member.ConceptNameCodeSequence[0]
                if member.ValueType == "IMAGE":
                    ref = member.ReferencedSOPSequence[0]
                elif member.ValueType == "NUM" and code.CodeValue == codes.DCM.ProbabilityOfCancer.value:
                    malignancy = _numeric(member)
                elif member.ValueType == "NUM" and code.CodingSchemeDesignator == SCHEME:
                    label = str(code.CodeMeaning)
                    label = label[2:-1] if label.startswith("P(") and label.endswith(")") else label
                    target = coarse if str(code.CodeValue).startswith("coarse-") else fine
                    target[label] = _numeric(member)
            if ref is None:
                continue
            frame = ref.get("ReferencedFrameNumber")
            frames.append(ParsedFrame(str(ref.ReferencedSOPInstanceUID), str(ref.ReferencedSOPClassUID),
                                      int(frame) if frame is not None else None, malignancy, coarse, fine))
    return model, frames
