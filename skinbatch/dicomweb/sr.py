"""The scores of one image as a DICOM TID 1500 Measurement Report (Comprehensive SR), built with
highdicom's templates. Pure.

Content tree (PS3.16 TID 1500, with IHE AI Results (AIR) conventions where they apply; docs/pacs.md lists
where it departs from AIR and why)::

    CONTAINER (126000, DCM, "Imaging Measurement Report")                    TID 1500
      HAS CONCEPT MOD  Language of Content Item and Descendants = English   TID 1204
      HAS OBS CONTEXT  Observer Type = Device, Device Observer UID / Name /  TID 1001, 1002, 1004
                       Manufacturer "skinbatch" / Model Name                 (the model)
      HAS CONCEPT MOD  Procedure reported = Photography of patient | Dermoscopic photography | Imaging procedure
      CONTAINS         Image Library: the source image                       TID 1600
      CONTAINS CONTAINER (126010, DCM, "Imaging Measurements")
        CONTAINS CONTAINER (125007, DCM, "Measurement Group")                TID 1501, one per scored frame
          HAS OBS CONTEXT  Tracking Identifier "skin lesion[, frame n]" and Tracking Unique Identifier
          CONTAINS CODE    Finding = (95324001, SCT, "Skin lesion")
          HAS CONCEPT MOD  Finding Site = the image's Anatomic Region Sequence (+ laterality), where it has one
          HAS CONCEPT MOD  Algorithm Name / Algorithm Version                TID 4019
          CONTAINS NUM     (111047, DCM, "Probability of cancer") = P(malignant)          TID 300
            INFERRED FROM IMAGE  Source of Measurement: the source instance (and frame)
          CONTAINS NUM     <class code> = P(class), for each first- and second-level class   TID 300
            HAS CONCEPT MOD  Measurement Method = summed over a level-1 | level-2 node (private code)
            HAS CONCEPT MOD  Equivalent Meaning of Concept Name = the taxonomy node's name
            INFERRED FROM IMAGE  Source of Measurement
          CONTAINS IMAGE   Source of Measurement (group level, for readers that look there)
      CONTAINS CODE  (trained, 99SKINBATCH) = Yes | No                         model facts and traceability
      CONTAINS TEXT  (weights-sha256 | taxonomy-sha256 | input-sha256, 99SKINBATCH)
      CONTAINS TEXT  (light-source-polarization | contact-method | immersion-media, 99SKINBATCH) = the
                     dermoscopic image's Supplement 221 attributes (0016,1001/1003/1004), where it has them

Class codes come from the taxonomy (SNOMED CT where the taxonomy gives one, else the private code
``99SKINBATCH`` whose value is the node's name; :mod:`skinbatch.taxonomy.codes`). Probabilities are
unitless (UCUM ``1``). Labels and codes come from the model card, never from here.

Identifiers are derived, not random, so that storing is idempotent: the SR's SOP Instance UID is a hash
of (source SOP Instance UID, frame selection, model name, version, weights sha256), and its Series
Instance UID a hash of (study, model name, version): every report of one model lands in one series of
the source study, and a redelivered message yields the same UID, which the caller finds already stored.
Tracking UIDs and the Device Observer UID are derived the same way.
"""

from __future__ import annotations

import copy
import io
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import highdicom as hd
import pydicom
from pydicom.sr.codedict import codes as sr_codes
from pydicom.sr.coding import Code
from pydicom.uid import PYDICOM_ROOT_UID, generate_uid

from skinbatch.imaging.acquisition import Acquisition
from skinbatch.scoring import Scores
from skinbatch.taxonomy.codes import PRIVATE_SCHEME, ClassCode, code_for

SCHEME = PRIVATE_SCHEME
"""Private coding scheme (PS3.16 §8.2: designators starting with "99" are local)."""
CODE_TRAINED = Code("trained", SCHEME, "Model trained on labelled data")
CODE_WEIGHTS = Code("weights-sha256", SCHEME, "Model weights sha256")
CODE_TAXONOMY = Code("taxonomy-sha256", SCHEME, "Model taxonomy sha256")
CODE_INPUT = Code("input-sha256", SCHEME, "Scored input bytes sha256")
METHOD_LEVEL = {
    1: Code("taxonomy-level-1", SCHEME, "Summed over a first-level taxonomy node"),
    2: Code("taxonomy-level-2", SCHEME, "Summed over a second-level taxonomy node"),
}
"""How a class probability is made (Esteva et al. 2017, Fig. 5): the sum of the training-class
probabilities under the node. It also tells a reader which level a class belongs to."""
CODE_POLARIZATION = Code("light-source-polarization", SCHEME, "Light Source Polarization (0016,1001)")
CODE_CONTACT = Code("contact-method", SCHEME, "Contact Method (0016,1003)")
CODE_IMMERSION = Code("immersion-media", SCHEME, "Immersion Media (0016,1004)")
"""The dermoscopic acquisition (DICOM Supplement 221) as the scored image declares it, copied into the
report so that a reader of the scores sees how the image was taken without opening the image."""
LATERALITY = {"L": Code("7771000", "SCT", "Left"), "R": Code("24028007", "SCT", "Right"),
              "B": Code("51440002", "SCT", "Right and left")}
UNITLESS = Code("1", "UCUM", "no units")
SKIN_LESION = Code("95324001", "SCT", "Skin lesion")
EQUIVALENT_MEANING = Code("121050", "DCM", "Equivalent Meaning of Concept Name")
SERIES_NUMBER = 7301
MANUFACTURER = "skinbatch"
UID_PREFIX = PYDICOM_ROOT_UID
"""pydicom's root, meant for UIDs derived from entropy sources like these."""
CODING_SCHEME = "99SKINBATCH"

# Procedure reported (TID 1500 row 4): what was done to make the image that the model scored.
_DERMOSCOPY = Code("446078004", "SCT", "Dermoscopic photography")
_PHOTOGRAPHY = Code("197157006", "SCT", "Photography of patient")
_IMAGING = Code("363679005", "SCT", "Imaging procedure")
_DERMOSCOPIC_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.7"
_PHOTOGRAPHIC_CLASSES = {"1.2.840.10008.5.1.4.1.1.77.1.4", "1.2.840.10008.5.1.4.1.1.77.1.4.1"}

# SOP classes whose IODs are multi-frame (they include the Multi-frame Module). Only for these may an
# image reference name a frame (PS3.3 C.18.3, Referenced Frame Number, Type 1C); dciodvfy rejects a
# frame number in a reference to any other class, even when the instance itself holds several frames
# (pydicom's SC_rgb_rle_2frame.dcm is such a Secondary Capture). Those reports name the frame in the
# group's tracking identifier instead.
MULTI_FRAME_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.2.1",      # Enhanced CT
    "1.2.840.10008.5.1.4.1.1.2.2",      # Legacy Converted Enhanced CT
    "1.2.840.10008.5.1.4.1.1.3.1",      # Ultrasound Multi-frame
    "1.2.840.10008.5.1.4.1.1.4.1",      # Enhanced MR
    "1.2.840.10008.5.1.4.1.1.4.3",      # Enhanced MR Color
    "1.2.840.10008.5.1.4.1.1.4.4",      # Legacy Converted Enhanced MR
    "1.2.840.10008.5.1.4.1.1.6.2",      # Enhanced US Volume
    "1.2.840.10008.5.1.4.1.1.7.1",      # Multi-frame Single Bit SC
    "1.2.840.10008.5.1.4.1.1.7.2",      # Multi-frame Grayscale Byte SC
    "1.2.840.10008.5.1.4.1.1.7.3",      # Multi-frame Grayscale Word SC
    "1.2.840.10008.5.1.4.1.1.7.4",      # Multi-frame True Color SC
    "1.2.840.10008.5.1.4.1.1.12.1",     # X-Ray Angiographic
    "1.2.840.10008.5.1.4.1.1.12.1.1",   # Enhanced XA
    "1.2.840.10008.5.1.4.1.1.12.2",     # X-Ray Radiofluoroscopic
    "1.2.840.10008.5.1.4.1.1.12.2.1",   # Enhanced XRF
    "1.2.840.10008.5.1.4.1.1.13.1.1",   # X-Ray 3D Angiographic
    "1.2.840.10008.5.1.4.1.1.13.1.3",   # Breast Tomosynthesis
    "1.2.840.10008.5.1.4.1.1.20",       # Nuclear Medicine
    "1.2.840.10008.5.1.4.1.1.77.1.1.1", # Video Endoscopic
    "1.2.840.10008.5.1.4.1.1.77.1.2.1", # Video Microscopic
    "1.2.840.10008.5.1.4.1.1.77.1.4.1", # Video Photographic
    "1.2.840.10008.5.1.4.1.1.77.1.5.1", # Ophthalmic Photography 8 Bit
    "1.2.840.10008.5.1.4.1.1.77.1.5.2", # Ophthalmic Photography 16 Bit
    "1.2.840.10008.5.1.4.1.1.77.1.5.4", # Ophthalmic Tomography
    "1.2.840.10008.5.1.4.1.1.77.1.6",   # VL Whole Slide Microscopy
    "1.2.840.10008.5.1.4.1.1.128.1",    # Legacy Converted Enhanced PET
    "1.2.840.10008.5.1.4.1.1.130",      # Enhanced PET
    "1.2.840.10008.5.1.4.1.1.481.1",    # RT Image
})  # fmt: skip

# highdicom narrates at INFO which patient and study attributes it copies, naming the source instance.
logging.getLogger("highdicom").setLevel(logging.WARNING)


@dataclass(frozen=True)
class FrameScores:
    frame: int
    """From 1."""
    scores: Scores


def _model_entropy(model: Mapping[str, Any]) -> list[str]:
    return [str(model.get("name", "")), str(model.get("version", "")), str(model.get("weights_sha256", ""))]


def sr_instance_uid(source_sop_instance_uid: str, model: Mapping[str, Any], frame: int | None = None) -> str:
    """The SR's SOP Instance UID: the same inputs always give the same UID (idempotent stores)."""
    return str(generate_uid(UID_PREFIX, entropy_srcs=[
        "sr-instance", source_sop_instance_uid, "all" if frame is None else str(frame), *_model_entropy(model)]))


def sr_series_uid(study_instance_uid: str, model: Mapping[str, Any]) -> str:
    """One series per (study, model name and version)."""
    return str(generate_uid(UID_PREFIX, entropy_srcs=[
        "sr-series", study_instance_uid, str(model.get("name", "")), str(model.get("version", ""))]))


def tracking_uid(source_sop_instance_uid: str, frame: int, model: Mapping[str, Any]) -> str:
    """The Tracking Unique Identifier of one frame's measurement group (and its FHIR Observation)."""
    return str(generate_uid(UID_PREFIX, entropy_srcs=[
        "sr-tracking", source_sop_instance_uid, str(frame), *_model_entropy(model)]))


def device_observer_uid(model: Mapping[str, Any]) -> str:
    """The model as a device: one UID per (name, version, weights)."""
    return str(generate_uid(UID_PREFIX, entropy_srcs=["sr-device", *_model_entropy(model)]))


def _short(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _dicom_code(code: ClassCode) -> hd.sr.CodedConcept:
    # highdicom moves values over 16 characters into Long Code Value, as PS3.3 §8.8 requires.
    return hd.sr.CodedConcept(value=code.value, scheme_designator=code.scheme, meaning=code.dicom_meaning)


def references_frames(source: pydicom.Dataset) -> bool:
    """Whether image references to ``source`` may name a frame (see :data:`MULTI_FRAME_SOP_CLASSES`)."""
    frames = int(source.get("NumberOfFrames", 1) or 1)
    return frames > 1 and str(source.get("SOPClassUID", "")) in MULTI_FRAME_SOP_CLASSES


def procedure_reported(source: pydicom.Dataset) -> Code:
    """What made the image: dermoscopy, photography of the patient, or (any other class) imaging."""
    sop_class = str(source.get("SOPClassUID", ""))
    if sop_class == _DERMOSCOPIC_CLASS or str(source.get("Modality", "")) == "DMS":
        return _DERMOSCOPY
    if sop_class in _PHOTOGRAPHIC_CLASSES or str(source.get("Modality", "")) == "XC":
        return _PHOTOGRAPHY
    return _IMAGING


def _tracking_label(frame: int, multi_frame: bool) -> str:
    return f"skin lesion, frame {frame}" if multi_frame else "skin lesion"


def _measurement(
    name: Code | hd.sr.CodedConcept,
    value: float,
    image: hd.sr.SourceImageForMeasurement,
    *,
    method: Code | None = None,
    label: str | None = None,
) -> hd.sr.Measurement:
    measurement = hd.sr.Measurement(name=name, value=float(value), unit=UNITLESS, method=method,
                                    referenced_images=[image])
    if label is not None:
        # TID 300 row "Equivalent Meaning of Concept Name": the taxonomy's own name for the class, so a
        # reader without the taxonomy still sees "benign" next to "Benign neoplasm of skin".
        num = measurement[0]
        item = hd.sr.TextContentItem(name=EQUIVALENT_MEANING, value=_short(label, 1024),
                                     relationship_type=hd.sr.RelationshipTypeValues.HAS_CONCEPT_MOD)
        # Modifiers before the image reference, in TID 300's row order.
        images = [i for i, child in enumerate(num.ContentSequence) if child.ValueType == "IMAGE"]
        num.ContentSequence.insert(images[0] if images else len(num.ContentSequence), item)
    return measurement


def _group(
    source: pydicom.Dataset,
    fs: FrameScores,
    model: Mapping[str, Any],
    coarse_labels: Sequence[str],
    fine_labels: Sequence[str],
    codes_by_name: Mapping[str, Any] | None,
    with_frames: bool,
    multi_frame: bool,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    frame_numbers = [fs.frame] if with_frames else None

    def image() -> hd.sr.SourceImageForMeasurement:
        return hd.sr.SourceImageForMeasurement(source.SOPClassUID, source.SOPInstanceUID, frame_numbers)

    measurements = [_measurement(sr_codes.DCM.ProbabilityOfCancer, fs.scores.malignancy, image())]
    acquisition = Acquisition.from_dataset(source)
    for level, labels, values in ((1, coarse_labels, fs.scores.coarse), (2, fine_labels, fs.scores.fine)):
        for label in labels:
            measurements.append(_measurement(_dicom_code(code_for(label, codes_by_name)), values[label], image(),
                                             method=METHOD_LEVEL[level], label=label))
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=tracking_uid(source.SOPInstanceUID, fs.frame, model),
            identifier=_tracking_label(fs.frame, multi_frame)),
        finding_type=SKIN_LESION,
        algorithm_id=hd.sr.AlgorithmIdentification(name=str(model.get("name", "")) or "unnamed",
                                                   version=str(model.get("version", "")) or "unknown"),
        measurements=measurements,
        finding_sites=_finding_sites(acquisition),
        source_images=[hd.sr.SourceImageForMeasurementGroup(source.SOPClassUID, source.SOPInstanceUID,
                                                            frame_numbers)],
    )


def _finding_sites(acquisition: Acquisition) -> list[hd.sr.FindingSite] | None:
    """TID 1501's Finding Site: the image's Anatomic Region Sequence, with its laterality."""
    region = acquisition.anatomic_region
    if region is None:
        return None
    location = hd.sr.CodedConcept(region.code, region.scheme, _short(region.meaning or region.code))
    return [hd.sr.FindingSite(anatomic_location=location, laterality=LATERALITY.get(acquisition.laterality))]


def _acquisition_items(source: pydicom.Dataset) -> list[Any]:
    """The Supplement 221 attributes of a dermoscopic image, as TEXT items of the report's root."""
    acquisition = Acquisition.from_dataset(source)
    rel = hd.sr.RelationshipTypeValues.CONTAINS
    pairs = [(CODE_POLARIZATION, acquisition.polarization), (CODE_CONTACT, acquisition.contact),
             *((CODE_IMMERSION, medium) for medium in acquisition.immersion)]
    return [hd.sr.TextContentItem(name=code, value=value, relationship_type=rel) for code, value in pairs if value]


def _observation_context(model: Mapping[str, Any]) -> hd.sr.ObservationContext:
    name = str(model.get("name", "")) or "unnamed"
    version = str(model.get("version", "")) or "unknown"
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=device_observer_uid(model), name=_short(name), manufacturer_name=MANUFACTURER,
        model_name=_short(f"{name} {version}"))
    return hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=sr_codes.DCM.Device, observer_identifying_attributes=device))


def _facts(model: Mapping[str, Any], input_sha256: str | None) -> list[Any]:
    """Model facts and traceability: what a reader needs to tie the numbers to weights and bytes."""
    rel = hd.sr.RelationshipTypeValues.CONTAINS
    items: list[Any] = [hd.sr.CodeContentItem(
        name=CODE_TRAINED, value=sr_codes.SCT.Yes if model.get("trained") else sr_codes.SCT.No, relationship_type=rel)]
    for code, value in ((CODE_WEIGHTS, model.get("weights_sha256")), (CODE_TAXONOMY, model.get("taxonomy_sha256")),
                        (CODE_INPUT, input_sha256)):
        if value:
            items.append(hd.sr.TextContentItem(name=code, value=str(value), relationship_type=rel))
    return items


def _image_library(source: pydicom.Dataset) -> list[pydicom.Dataset] | None:
    """The source for TID 1600, or None where highdicom cannot describe it (no Rows, unknown class)."""
    try:
        hd.sr.ImageLibrary([source])
    except (AttributeError, KeyError, ValueError):
        return None
    return [source]


def build_score_report(
    source: pydicom.Dataset,
    frames: Sequence[FrameScores],
    model: Mapping[str, Any],
    *,
    coarse_labels: Sequence[str],
    fine_labels: Sequence[str],
    frame_selection: int | None = None,
    content_datetime: datetime | None = None,
    codes: Mapping[str, Any] | None = None,
    input_sha256: str | None = None,
) -> pydicom.Dataset:
    """A TID 1500 Measurement Report for ``source`` (its header is enough) holding the scores of ``frames``.

    Args:
        source: the scored instance's header (:func:`header_of`).
        frames: one entry per scored frame; each becomes a measurement group.
        model: ``ModelCard.model_summary()``.
        coarse_labels, fine_labels: the card's first- and second-level class names.
        frame_selection: the one frame a request named, if any (it takes part in the SR's UID).
        content_datetime: when the scores were made (default: now).
        codes: class name → code, the model card's ``taxonomy["codes"]``; names it lacks get their
            private code.
        input_sha256: sha256 of the scored bytes (the result's ``input.sha256``).
    """
    if not frames:
        raise ValueError("a score report needs at least one scored frame")
    source = _with_type2_attributes(source)
    multi_frame = int(source.get("NumberOfFrames", 1) or 1) > 1
    with_frames = references_frames(source)
    groups = [_group(source, fs, model, coarse_labels, fine_labels, codes, with_frames, multi_frame)
              for fs in frames]
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(model),
        procedure_reported=procedure_reported(source),
        imaging_measurements=groups,
        referenced_images=_image_library(source),
    )
    report[0].ContentSequence.extend(_facts(model, input_sha256))
    report[0].ContentSequence.extend(_acquisition_items(source))

    when = content_datetime or datetime.now()
    sr = hd.sr.ComprehensiveSR(
        evidence=[source],
        content=report,
        series_instance_uid=sr_series_uid(source.StudyInstanceUID, model),
        series_number=SERIES_NUMBER,
        sop_instance_uid=sr_instance_uid(source.SOPInstanceUID, model, frame_selection),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        # Preliminary Flag: FINAL only for a trained model, as its FHIR Observations are final; an
        # untrained model's scores are random. Verification stays UNVERIFIED: no person signed them.
        is_final=bool(model.get("trained")),
        series_description=_short(f"AI skin lesion scores: {model.get('name', '')} {model.get('version', '')}"),
        content_date=when.date(),
        content_time=when.time(),
    )
    # SOP Common: name the private coding scheme, as PS3.3 C.12.1.1.4 asks of local designators.
    scheme = pydicom.Dataset()
    scheme.CodingSchemeDesignator = CODING_SCHEME
    scheme.CodingSchemeName = "skinbatch taxonomy nodes and model facts"
    scheme.CodingSchemeResponsibleOrganization = MANUFACTURER
    sr.CodingSchemeIdentificationSequence = [scheme]
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
    odd = [k for k in ("StudyDate", "StudyTime")
           if k in source and _conformant(k, source.get(k)) != str(source.get(k) or "")]
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
    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)


# -- reading back ----------------------------------------------------------------------------------

@dataclass
class ParsedFrame:
    sop_instance_uid: str
    sop_class_uid: str
    frame: int | None
    """The frame this group scores; None for single-frame sources."""
    malignancy: float
    coarse: dict[str, float]
    """First-level class label → probability."""
    fine: dict[str, float]
    """Second-level class label → probability."""
    codes: dict[str, ClassCode] | None = None
    """Class label → the code the report used for it."""
    tracking_uid: str | None = None
    input_sha256: str | None = None


def _numeric(item: pydicom.Dataset) -> float:
    mv = item.MeasuredValueSequence[0]
    if "FloatingPointValue" in mv:
        return float(mv.FloatingPointValue)
    return float(mv.NumericValue)


def _code_value(item: pydicom.Dataset) -> str:
    return str(item.get("CodeValue") or item.get("LongCodeValue") or item.get("URNCodeValue") or "")


def _concept(item: pydicom.Dataset) -> tuple[str, str]:
    name = item.ConceptNameCodeSequence[0]
    return str(name.CodingSchemeDesignator), _code_value(name)


def _is(item: pydicom.Dataset, code: Code) -> bool:
    return _concept(item) == (code.scheme_designator, code.value)


def _children(item: pydicom.Dataset) -> Sequence[pydicom.Dataset]:
    return item.get("ContentSequence", [])


def _parse_class(item: pydicom.Dataset) -> tuple[int | None, str, ClassCode]:
    """(taxonomy level, label, code) of a class NUM; level None where the item is no class score."""
    level, label = None, None
    for child in _children(item):
        if child.ValueType == "CODE" and _is(child, sr_codes.SCT.MeasurementMethod):
            method = child.ConceptCodeSequence[0]
            for n, method_code in METHOD_LEVEL.items():
                if (method.CodingSchemeDesignator, _code_value(method)) == (method_code.scheme_designator,
                                                                           method_code.value):
                    level = n
        elif child.ValueType == "TEXT" and _is(child, EQUIVALENT_MEANING):
            label = str(child.TextValue)
    name = item.ConceptNameCodeSequence[0]
    code = ClassCode(str(name.CodingSchemeDesignator), _code_value(name), str(name.CodeMeaning))
    return level, label or code.meaning, code


def _parse_group(group: pydicom.Dataset) -> ParsedFrame | None:
    ref: pydicom.Dataset | None = None
    malignancy = float("nan")
    coarse: dict[str, float] = {}
    fine: dict[str, float] = {}
    used: dict[str, ClassCode] = {}
    track_uid, track_label = None, ""
    for member in _children(group):
        if member.ValueType == "IMAGE" and ref is None:
            ref = member.ReferencedSOPSequence[0]
        elif member.ValueType == "UIDREF" and _is(member, sr_codes.DCM.TrackingUniqueIdentifier):
            track_uid = str(member.UID)
        elif member.ValueType == "TEXT" and _is(member, sr_codes.DCM.TrackingIdentifier):
            track_label = str(member.TextValue)
        elif member.ValueType == "NUM" and _is(member, sr_codes.DCM.ProbabilityOfCancer):
            malignancy = _numeric(member)
        elif member.ValueType == "NUM":
            level, label, code = _parse_class(member)
            if level is not None:
                (coarse if level == 1 else fine)[label] = _numeric(member)
                used[label] = code
    if ref is None:
        return None
    frame = ref.get("ReferencedFrameNumber")
    if frame is None and (match := re.search(r"\bframe (\d+)\b", track_label)):
        frame = match.group(1)
    return ParsedFrame(str(ref.ReferencedSOPInstanceUID), str(ref.ReferencedSOPClassUID),
                       int(frame) if frame is not None else None, malignancy, coarse, fine, used, track_uid)


def read_score_report(sr: pydicom.Dataset) -> tuple[dict[str, Any], list[ParsedFrame]]:
    """Model facts (name, version, trained, weights_sha256; ``acquisition`` where the image declared
    Supplement 221 attributes) and per-frame scores from an SR this module wrote (for tests and for
    readers without highdicom)."""
    model: dict[str, Any] = {}
    frames: list[ParsedFrame] = []
    input_sha256 = None
    root = sr.ContentSequence
    for item in root:
        for key, code in (("polarization", CODE_POLARIZATION), ("contact", CODE_CONTACT),
                          ("immersion", CODE_IMMERSION)):
            if item.ValueType == "TEXT" and _is(item, code):
                acquisition = model.setdefault("acquisition", {})
                if key == "immersion":
                    acquisition.setdefault(key, []).append(str(item.TextValue))
                else:
                    acquisition[key] = str(item.TextValue)
        if item.ValueType == "TEXT" and _is(item, sr_codes.DCM.DeviceObserverName):
            model.setdefault("name", str(item.TextValue))
        elif item.ValueType == "TEXT" and _is(item, CODE_WEIGHTS):
            model["weights_sha256"] = str(item.TextValue)
        elif item.ValueType == "TEXT" and _is(item, CODE_INPUT):
            input_sha256 = str(item.TextValue)
        elif item.ValueType == "CODE" and _is(item, CODE_TRAINED):
            model["trained"] = _code_value(item.ConceptCodeSequence[0]) == sr_codes.SCT.Yes.value
        elif item.ValueType == "CONTAINER" and _is(item, sr_codes.DCM.ImagingMeasurements):
            for group in _children(item):
                if group.ValueType != "CONTAINER" or not _is(group, sr_codes.DCM.MeasurementGroup):
                    continue
                for member in _children(group):  # TID 4019 in the group: the algorithm's own name
                    if member.ValueType == "TEXT" and _is(member, sr_codes.DCM.AlgorithmName):
                        model["name"] = str(member.TextValue)
                    elif member.ValueType == "TEXT" and _is(member, sr_codes.DCM.AlgorithmVersion):
                        model["version"] = str(member.TextValue)
                parsed = _parse_group(group)
                if parsed is not None:
                    frames.append(parsed)
    for parsed in frames:
        parsed.input_sha256 = input_sha256
    return model, frames
