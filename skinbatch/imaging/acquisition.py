"""How a photograph was taken: dermoscopic or clinical, and for dermoscopy the DICOM Supplement 221
attributes (Dermoscopic Photography Image Storage, modality DMS), plus the anatomic region.

Read from a DICOM data set (:meth:`Acquisition.from_dataset`) or from a request that says so for a JPEG
from a dermatoscope (:meth:`Acquisition.from_header`). Carried into the result (``input.acquisition``),
the SR (finding site and acquisition items) and the FHIR Observation (``bodySite``, ``method``). None of
it identifies a patient.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

DERMOSCOPIC_PHOTOGRAPHY_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.77.1.7"
_CLINICAL_CLASSES = {"1.2.840.10008.5.1.4.1.1.77.1.4", "1.2.840.10008.5.1.4.1.1.77.1.4.1"}

DERMOSCOPIC = "dermoscopic"
CLINICAL = "clinical"
IMAGE_TYPES = (DERMOSCOPIC, CLINICAL)

DATASET_KEYWORDS = ("Modality", "LightSourcePolarization", "ContactMethod", "ImmersionMedia",
                    "AnatomicRegionSequence", "ImageLaterality")
"""What :meth:`Acquisition.from_dataset` reads; the DICOM decoder reads these tags too."""

_MAX_TEXT = 64


@dataclass(frozen=True)
class AnatomicRegion:
    """A coded anatomic region (DICOM Anatomic Region Sequence, CID 4031; usually SNOMED CT)."""

    code: str
    scheme: str
    """Coding Scheme Designator: ``SCT`` for SNOMED CT."""
    meaning: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "scheme": self.scheme, "meaning": self.meaning}


@dataclass(frozen=True)
class Acquisition:
    image_type: str | None = None
    """``dermoscopic``, ``clinical``, or None where the source does not say."""
    polarization: str = ""
    """Light Source Polarization (0016,1001), e.g. ``POLARIZED`` or ``NON_POLARIZED``."""
    contact: str = ""
    """Contact Method (0016,1003): ``CONTACT`` or ``NON_CONTACT``."""
    immersion: tuple[str, ...] = field(default=())
    """Immersion Media (0016,1004), e.g. ``ALCOHOL``, ``MINERAL_OIL``, ``ULTRASOUND_GEL``."""
    anatomic_region: AnatomicRegion | None = None
    laterality: str = ""
    """Image Laterality (0020,0062): ``L``, ``R``, ``U`` or ``B``."""

    @property
    def empty(self) -> bool:
        return self == Acquisition()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.image_type:
            out["image_type"] = self.image_type
        for key in ("polarization", "contact", "laterality"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.immersion:
            out["immersion"] = list(self.immersion)
        if self.anatomic_region is not None:
            out["anatomic_region"] = self.anatomic_region.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Acquisition:
        """From :meth:`to_dict` (a result's ``input.acquisition``); unknown or malformed parts are dropped."""
        if not isinstance(d, dict):
            return cls()
        region = d.get("anatomic_region")
        image_type = d.get("image_type")
        immersion = d.get("immersion") or ()
        return cls(
            image_type=image_type if image_type in IMAGE_TYPES else None,
            polarization=_cs(d.get("polarization")),
            contact=_cs(d.get("contact")),
            immersion=tuple(_cs(v) for v in immersion if _cs(v)) if isinstance(immersion, (list, tuple)) else (),
            anatomic_region=_region(region) if isinstance(region, dict) else None,
            laterality=_cs(d.get("laterality"))[:1],
        )

    @classmethod
    def from_header(cls, value: str | bytes) -> Acquisition:
        """From a request header: ``dermoscopic`` or ``clinical``, or a JSON object as :meth:`to_dict` writes.

        Raises ``ValueError`` with what to send instead."""
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        text = text.strip()
        if text.lower() in IMAGE_TYPES:
            return cls(image_type=text.lower())
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict) or parsed.get("image_type") not in IMAGE_TYPES:
            raise ValueError("the acquisition header must be 'dermoscopic', 'clinical' or a JSON object with "
                             "image_type 'dermoscopic' or 'clinical' (and optionally polarization, contact, "
                             "immersion, anatomic_region {code, scheme, meaning}, laterality)")
        return cls.from_dict(parsed)

    @classmethod
    def from_dataset(cls, ds: Any) -> Acquisition:
        """From a DICOM data set (pydicom); a malformed element reads as absent."""
        sop_class = _text(ds, "SOPClassUID")
        modality = _text(ds, "Modality").upper()
        image_type = None
        if sop_class == DERMOSCOPIC_PHOTOGRAPHY_IMAGE_STORAGE or modality == "DMS":
            image_type = DERMOSCOPIC
        elif sop_class in _CLINICAL_CLASSES or modality == "XC":
            image_type = CLINICAL
        immersion: tuple[str, ...] = ()
        try:
            raw = ds.get("ImmersionMedia")
            values = [raw] if isinstance(raw, str) else list(raw or [])
            immersion = tuple(v for v in (_cs(x) for x in values) if v)
        except Exception:  # noqa: BLE001 - an optional attribute must not cost the image
            immersion = ()
        return cls(
            image_type=image_type,
            polarization=_cs(_text(ds, "LightSourcePolarization")),
            contact=_cs(_text(ds, "ContactMethod")),
            immersion=immersion,
            anatomic_region=_dataset_region(ds),
            laterality=_cs(_text(ds, "ImageLaterality"))[:1],
        )


def _cs(value: Any) -> str:
    """A DICOM code string: upper case, no padding, bounded."""
    text = str(value or "").strip().strip("\x00").strip()
    return text.upper()[:_MAX_TEXT] if text else ""


def _text(ds: Any, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception:  # noqa: BLE001 - an optional attribute must not cost the image
        return ""
    return "" if value is None else str(value).strip()


def _region(d: dict[str, Any]) -> AnatomicRegion | None:
    code, scheme, meaning = (str(d.get(k) or "").strip()[:_MAX_TEXT] for k in ("code", "scheme", "meaning"))
    return AnatomicRegion(code, scheme, meaning) if code and scheme else None


def _dataset_region(ds: Any) -> AnatomicRegion | None:
    try:
        seq = ds.get("AnatomicRegionSequence")
        item = seq[0] if seq else None
        if item is None:
            return None
        return _region({"code": item.get("CodeValue"), "scheme": item.get("CodingSchemeDesignator"),
                        "meaning": item.get("CodeMeaning")})
    except Exception:  # noqa: BLE001 - an optional attribute must not cost the image
        return None
