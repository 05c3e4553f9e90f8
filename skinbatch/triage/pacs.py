"""Triage of a DICOMweb archive: find instances by QIDO-RS, fetch them by WADO-RS into the output folder.

The fetched files go through the same runner as folders do, so resuming works the same way: a file is
named after its UIDs (``dicomweb/<study>/<series>/<sop>.dcm`` under ``--out``), an instance already
fetched is not fetched again, and a file already scored (same path, size and mtime; or same sha256) is
not scored again. The key of an instance is therefore its SOP Instance UID plus its content hash.

The copies stay in the output folder because the HTML report draws its thumbnails from them; they carry
patient data like the archive does, so the output folder must be protected like the archive.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from skinbatch.contract import ConfigurationError
from skinbatch.dicomweb.client import (
    ArchiveRejected,
    ArchiveUnavailable,
    DicomWebArchive,
    InstanceRef,
    NotInArchive,
    is_image_sop_class,
)
from skinbatch.dicomweb.retrieve import InstanceRefused

CACHE_DIR = "dicomweb"
_DATE_RANGE = re.compile(r"^(\d{8})?-?(\d{8})?$")


@dataclass
class PacsQuery:
    """QIDO-RS matching keys (PS3.18 §10.6). Empty fields match everything."""

    study_date: str | None = None
    """``YYYYMMDD``, or a range ``YYYYMMDD-YYYYMMDD`` (either end may be open)."""
    modality: str | None = None
    sop_class: str | None = None
    patient_id: str | None = None
    accession: str | None = None

    def __post_init__(self) -> None:
        if self.study_date:
            m = _DATE_RANGE.match(self.study_date.strip())
            if not m or not (m.group(1) or m.group(2)):
                raise ConfigurationError(
                    "--study-date takes YYYYMMDD or a range YYYYMMDD-YYYYMMDD (either end may be open)")

    def study_filters(self) -> dict[str, str]:
        filters = {"StudyDate": self.study_date, "PatientID": self.patient_id,
                   "AccessionNumber": self.accession, "ModalitiesInStudy": self.modality}
        return {k: v.strip() for k, v in filters.items() if v}

    def matches(self, ref: InstanceRef) -> bool:
        """Series- and instance-level keys, checked here: not every archive filters them at instance level."""
        if self.modality and ref.modality and ref.modality.upper() != self.modality.strip().upper():
            return False
        if self.sop_class and ref.sop_class != self.sop_class.strip():
            return False
        return is_image_sop_class(ref.sop_class)


@dataclass
class Fetched:
    paths: list[Path] = field(default_factory=list)
    studies: int = 0
    downloaded: int = 0
    cached: int = 0
    not_found: list[tuple[Path, str]] = field(default_factory=list)
    """Instances listed by QIDO that WADO-RS did not return (deleted meanwhile?)."""
    unavailable: list[tuple[Path, str]] = field(default_factory=list)
    """Instances the archive failed to send (down, timeouts): retried on the next run."""


def cache_path(out_dir: Path, ref: InstanceRef) -> Path:
    return out_dir / CACHE_DIR / ref.study / ref.series / f"{ref.instance}.dcm"


def find_instances(archive: DicomWebArchive, query: PacsQuery) -> tuple[int, list[InstanceRef]]:
    """(studies matched, instances to score). ``ArchiveUnavailable`` if the search itself fails."""
    studies = archive.search_studies(query.study_filters())
    found: list[InstanceRef] = []
    for study in studies:
        found += [r for r in archive.search_instances(study=study) if query.matches(r)]
    return len(studies), found


def fetch(archive: DicomWebArchive, refs: list[InstanceRef], out_dir: Path,
          on_progress: Callable[[int, int], None] | None = None) -> Fetched:
    """Download what is not in the cache yet. Failures are collected, never raised."""
    result = Fetched()
    for n, ref in enumerate(refs, start=1):
        path = cache_path(out_dir, ref)
        if path.is_file() and path.stat().st_size > 0:
            result.cached += 1
        else:
            try:
                data = archive.retrieve(ref)
            except (NotInArchive, InstanceRefused) as exc:  # refused: not an image, or over the limits
                result.not_found.append((path, str(exc)))
                continue
            except (ArchiveUnavailable, ArchiveRejected) as exc:
                result.unavailable.append((path, str(exc)))
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".part")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            result.downloaded += 1
        result.paths.append(path)
        if on_progress:
            on_progress(n, len(refs))
    return result
