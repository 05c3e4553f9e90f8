"""References to DICOM objects in an archive, by UID (DICOM PS3.18 resource paths). Pure: no I/O.

A request may name what to score instead of carrying it:

* JSON: ``{"study": "<uid>", "series": "<uid>", "instance": "<uid>", "frame": 2}`` (series, instance
  and frame optional; ``request_id`` allowed as for file references);
* a URI: ``dicomweb:studies/<uid>[/series/<uid>[/instances/<uid>[/frames/<n>]]]``, the resource path of
  DICOMweb (PS3.18 §10.4) below the archive's root. ``dicomweb://studies/...`` and
  ``dicomweb:/studies/...`` are accepted too.

A study or series fans out to every instance in it; an instance to each of its frames (or one frame).
The archive itself is configured on the consumer, never named by the request: a message must not be
able to send the consumer, with its credentials, to another host.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydicom.uid import UID

from skinbatch.contract import ErrorType, ExitCode, InputRejected

SCHEME = "dicomweb"
_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_PATH_RE = re.compile(
    r"^studies/(?P<study>[^/]+)"
    r"(?:/series/(?P<series>[^/]+)"
    r"(?:/instances/(?P<instance>[^/]+)"
    r"(?:/frames/(?P<frame>[0-9]+))?)?)?/?$"
)


class InvalidReference(InputRejected, ValueError):
    """The reference is malformed; the message says what a valid one looks like."""

    type = ErrorType.INVALID_REFERENCE
    exit_code = ExitCode.USAGE  # when a command ends on it, the reference came from its arguments


@dataclass(frozen=True)
class DicomWebReference:
    """A study, a series or an instance (optionally one frame) in a DICOMweb archive."""

    study: str
    series: str | None = None
    instance: str | None = None
    frame: int | None = None
    """One frame (from 1) of a multi-frame instance; None for all frames."""

    @property
    def level(self) -> str:
        """``study``, ``series`` or ``instance``."""
        return "instance" if self.instance else "series" if self.series else "study"

    @property
    def uri(self) -> str:
        path = f"{SCHEME}:studies/{self.study}"
        if self.series:
            path += f"/series/{self.series}"
        if self.instance:
            path += f"/instances/{self.instance}"
        if self.frame is not None:
            path += f"/frames/{self.frame}"
        return path

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"study": self.study}
        if self.series:
            out["series"] = self.series
        if self.instance:
            out["instance"] = self.instance
        if self.frame is not None:
            out["frame"] = self.frame
        return out


def is_valid_uid(value: str) -> bool:
    """DICOM PS3.5 §9.1: digits and dots, no leading zeros in a component, at most 64 characters."""
    return 0 < len(value) <= 64 and bool(_UID_RE.match(value)) and UID(value).is_valid


def _uid(value: Any, what: str) -> str:
    if not isinstance(value, str) or not is_valid_uid(value.strip()):
        raise InvalidReference(
            f"the {what} UID is not a valid DICOM UID (digits and dots, at most 64 characters)")
    return value.strip()


def _frame(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit() or int(value) < 1:
        raise InvalidReference("'frame' must be a positive integer (frames count from 1)")
    return int(value)


def make_reference(study: Any, series: Any = None, instance: Any = None, frame: Any = None) -> DicomWebReference:
    """Validate the parts; an instance needs its series, a frame needs its instance."""
    ref = DicomWebReference(
        study=_uid(study, "study"),
        series=None if series in (None, "") else _uid(series, "series"),
        instance=None if instance in (None, "") else _uid(instance, "SOP instance"),
        frame=_frame(frame),
    )
    if ref.instance and not ref.series:
        raise InvalidReference("an instance reference needs its series UID too (WADO-RS addresses "
                               "studies/<uid>/series/<uid>/instances/<uid>)")
    if ref.frame is not None and not ref.instance:
        raise InvalidReference("a frame number needs an instance UID")
    return ref


def is_dicomweb_document(doc: Any) -> bool:
    """True for a JSON reference naming a study (``{"study": ...}``) or a ``dicomweb:`` URI."""
    if not isinstance(doc, dict):
        return False
    return "study" in doc or (isinstance(doc.get("uri"), str) and is_dicomweb_uri(doc["uri"]))


def is_dicomweb_uri(value: str) -> bool:
    return value.strip().lower().startswith(SCHEME + ":")


def parse_uri(value: str) -> DicomWebReference:
    """``dicomweb:studies/<uid>[/series/<uid>[/instances/<uid>[/frames/<n>]]]``."""
    text = value.strip()
    if not is_dicomweb_uri(text):
        raise InvalidReference(f"not a {SCHEME}: URI")
    path = text[len(SCHEME) + 1:].lstrip("/")
    match = _PATH_RE.match(path)
    if not match:
        raise InvalidReference(
            f"a {SCHEME} URI looks like {SCHEME}:studies/<uid>/series/<uid>/instances/<uid> "
            "(series and instance optional)")
    return make_reference(match["study"], match["series"], match["instance"], match["frame"])


def parse_document(doc: dict[str, Any]) -> DicomWebReference:
    """A JSON reference: ``{"study", "series", "instance", "frame"}`` or ``{"uri": "dicomweb:..."}``."""
    if "study" in doc:
        return make_reference(doc.get("study"), doc.get("series"), doc.get("instance"), doc.get("frame"))
    uri = doc.get("uri")
    if isinstance(uri, str):
        return parse_uri(uri)
    raise InvalidReference("a DICOMweb reference needs a 'study' UID or a dicomweb: 'uri'")
