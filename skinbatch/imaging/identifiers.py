"""DICOM identifiers of a decoded instance: what lets a score be traced back to its frame.

Only UIDs, the SOP class and the accession number are read. Patient name, patient ID and dates are
never parsed (the DICOM decoder reads a fixed list of tags), so they cannot leak into logs or errors.
The accession number is kept out of ``repr`` and :meth:`DicomIdentifiers.log_fields`: it is an
identifier a hospital can map back to a patient.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

VL_PHOTOGRAPHIC_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.77.1.4"
DERMOSCOPIC_PHOTOGRAPHY_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.77.1.7"
VL_MICROSCOPIC_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.77.1.2"
SECONDARY_CAPTURE_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"


@dataclass(frozen=True)
class DicomIdentifiers:
    """Identifiers of one DICOM instance. Frame numbers are 1-based, as in DICOM and DICOMweb."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    number_of_frames: int = 1
    accession_number: str = field(default="", repr=False)

    @property
    def sop_class_name(self) -> str:
        """Human name of the SOP class, e.g. ``Dermoscopic Photography Image Storage``."""
        from pydicom.uid import UID

        name = UID(self.sop_class_uid).name if self.sop_class_uid else ""
        return name if name and name != self.sop_class_uid else "unknown SOP class"

    def frame_path(self, frame_number: int) -> str:
        """The DICOMweb path of one frame, a stable key for results and dead letters."""
        if not 1 <= frame_number <= self.number_of_frames:
            raise ValueError(
                f"frame_number {frame_number} is outside 1..{self.number_of_frames}; DICOM frame numbers are 1-based"
            )
        return (
            f"studies/{self.study_instance_uid}/series/{self.series_instance_uid}"
            f"/instances/{self.sop_instance_uid}/frames/{frame_number}"
        )

    def log_fields(self) -> dict[str, str | int]:
        """What may be logged: UIDs and counts only."""
        return {
            "study_instance_uid": self.study_instance_uid,
            "series_instance_uid": self.series_instance_uid,
            "sop_instance_uid": self.sop_instance_uid,
            "sop_class_uid": self.sop_class_uid,
            "transfer_syntax_uid": self.transfer_syntax_uid,
            "number_of_frames": self.number_of_frames,
        }

    @classmethod
    def from_dataset(cls, ds: Dataset, transfer_syntax_uid: str, number_of_frames: int) -> DicomIdentifiers:
        meta = getattr(ds, "file_meta", None)
        sop_class = _text(ds, "SOPClassUID") or (_text(meta, "MediaStorageSOPClassUID") if meta else "")
        sop_instance = _text(ds, "SOPInstanceUID") or (
            _text(meta, "MediaStorageSOPInstanceUID") if meta else ""
        )
        return cls(
            study_instance_uid=_text(ds, "StudyInstanceUID"),
            series_instance_uid=_text(ds, "SeriesInstanceUID"),
            sop_instance_uid=sop_instance,
            sop_class_uid=sop_class,
            transfer_syntax_uid=str(transfer_syntax_uid),
            number_of_frames=number_of_frames,
            accession_number=_text(ds, "AccessionNumber"),
        )


def _text(ds: Dataset | None, keyword: str) -> str:
    # Read the raw bytes rather than the converted value: conversion validates the VR and pydicom
    # logs invalid values verbatim, which would put an accession number into the logs. A malformed
    # value must not fail an otherwise decodable image either, so anything odd reads as "".
    if ds is None:
        return ""
    try:
        elem = ds.get_item(keyword)
    except Exception:  # noqa: BLE001 - see above
        return ""
    if elem is None or elem.value is None:
        return ""
    value = elem.value
    text = value.decode("ascii", "replace") if isinstance(value, (bytes, bytearray)) else str(value)
    text = text.strip().strip("\x00").strip()
    return text if len(text) <= 128 else ""
