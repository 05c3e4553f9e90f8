"""Parsing a Kafka record into a scoring request. Pure: no Kafka, no file I/O.

A request value is either the raw bytes of a DICOM Part-10 file, a JPEG or a PNG, a JSON reference
``{"uri": "relative/path"}`` (or ``file:///...``) to a file under the consumer's ``--archive-root``, or
a DICOMweb reference to instances in the consumer's ``--dicomweb-url`` archive: JSON
``{"study": ..., "series": ..., "instance": ...}`` or a ``dicomweb:studies/<uid>/...`` URI (as the whole
value or as ``{"uri": ...}``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from skinbatch.dicomweb.references import (
    DicomWebReference,
    InvalidReference,
    is_dicomweb_document,
    parse_document,
    parse_uri,
)

from .errors import RequestRejected

REQUEST_ID_HEADER = "request-id"
CONTENT_TYPE_HEADER = "content-type"
MAP_HEADER = "malignancy-map"
"""A request header: ``1`` (or ``true``) asks for the malignancy map in the results."""
ACQUISITION_HEADER = "acquisition"
"""A request header: how the photo was taken, for images that cannot say so themselves (a JPEG from a
dermatoscope): ``dermoscopic``, ``clinical``, or a JSON object (docs/contracts.md)."""
REFERENCE_CONTENT_TYPE = "application/vnd.skinbatch.reference+json"


@dataclass(frozen=True)
class Request:
    """What the consumer must score for one record."""

    explicit_id: str | None
    """From the ``request-id`` header, else the message key; None to derive it from the content."""
    payload: bytes | None
    """Inline image bytes, or None for a reference."""
    path: str | None
    """For a reference: the absolute path under the archive root."""
    content_type: str | None
    dicomweb: DicomWebReference | None = None
    """For a DICOMweb reference: what to retrieve from the consumer's archive."""
    want_map: bool = False
    """The request asked for the malignancy map (header ``malignancy-map: 1``)."""
    acquisition: dict[str, Any] | None = None
    """From the ``acquisition`` header (``Acquisition.to_dict()``); a DICOM image's own attributes win."""


def _header(headers: list[tuple[str, bytes]] | None, name: str) -> str | None:
    for key, value in headers or []:
        if key.lower() == name and value is not None:
            try:
                return value.decode("utf-8").strip() or None
            except UnicodeDecodeError:
                return None
    return None


def explicit_request_id(headers: list[tuple[str, bytes]] | None, key: bytes | None) -> str | None:
    """The header, else the message key (as text)."""
    rid = _header(headers, REQUEST_ID_HEADER)
    if rid:
        return rid
    if key:
        try:
            return key.decode("utf-8").strip() or None
        except UnicodeDecodeError:
            return key.hex()
    return None


def looks_like_reference(value: bytes, content_type: str | None) -> bool:
    if content_type and "json" in content_type:
        return True
    # Images never start with "{": DICOM has a preamble then "DICM", JPEG FF D8, PNG 89 50.
    return value[:1] == b"{"


def resolve_reference(uri: str, archive_root: str | None) -> str:
    """An absolute path inside ``archive_root``; refuses anything that escapes it."""
    if not archive_root:
        raise RequestRejected(
            "reference_not_allowed",
            "the request is a reference, but this consumer has no --archive-root; send the image inline",
        )
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        raise RequestRejected("unsupported_reference", f"unsupported URI scheme {parsed.scheme!r}; use a path or file://")
    raw = unquote(parsed.path if parsed.scheme == "file" else uri)
    if "\x00" in raw:
        raise RequestRejected("invalid_reference", "the reference contains a NUL byte")
    root = Path(archive_root).resolve()
    candidate = Path(raw) if os.path.isabs(raw) else root / raw
    # resolve() follows symbolic links, so a link inside the root that points outside is refused too.
    resolved = candidate.resolve()
    if not resolved.is_relative_to(root):
        raise RequestRejected("reference_outside_root", "the reference points outside the archive root")
    return str(resolved)


def _dicomweb_request(rid: str | None, content_type: str | None, parse: Callable[[], DicomWebReference],
                      dicomweb_enabled: bool) -> Request:
    if not dicomweb_enabled:
        raise RequestRejected(
            "reference_not_allowed",
            "the request names DICOMweb instances, but this consumer has no --dicomweb-url; "
            "send the image inline or to a consumer connected to the archive",
        )
    try:
        ref = parse()
    except InvalidReference as exc:
        raise RequestRejected("invalid_reference", str(exc)) from None
    return Request(rid, None, None, content_type, ref)


def parse_request(
    value: bytes | None,
    key: bytes | None,
    headers: list[tuple[str, bytes]] | None,
    archive_root: str | None,
    max_bytes: int,
    dicomweb_enabled: bool = False,
) -> Request:
    """Classify a record. Raises ``RequestRejected`` for bad input."""
    request = _classify(value, key, headers, archive_root, max_bytes, dicomweb_enabled)
    if (_header(headers, MAP_HEADER) or "").lower() in ("1", "true", "yes"):
        request = replace(request, want_map=True)
    if (acquisition := _header(headers, ACQUISITION_HEADER)) is not None:
        from skinbatch.imaging.acquisition import Acquisition

        try:
            request = replace(request, acquisition=Acquisition.from_header(acquisition).to_dict())
        except ValueError as exc:
            raise RequestRejected("invalid_header", str(exc)) from None
    return request


def _classify(value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]] | None,
              archive_root: str | None, max_bytes: int, dicomweb_enabled: bool) -> Request:
    content_type = _header(headers, CONTENT_TYPE_HEADER)
    rid = explicit_request_id(headers, key)
    if not value:
        raise RequestRejected("empty", "the message has no value; send image bytes or a {\"uri\": ...} reference")
    if len(value) > max_bytes:
        raise RequestRejected(
            "too_large", f"the message is {len(value)} bytes, over this consumer's limit of {max_bytes}; "
            "send a reference instead"
        )
    if value[:9].lower() == b"dicomweb:":
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestRejected("invalid_reference", "a dicomweb: URI must be UTF-8 text") from None
        return _dicomweb_request(rid, content_type, lambda: parse_uri(text), dicomweb_enabled)
    if looks_like_reference(value, content_type):
        try:
            doc = json.loads(value)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise RequestRejected("invalid_reference", "the value looks like JSON but does not parse") from None
        if isinstance(doc, dict):
            rid = rid or (str(doc["request_id"]) if doc.get("request_id") else None)
        if is_dicomweb_document(doc):
            return _dicomweb_request(rid, content_type, lambda: parse_document(doc), dicomweb_enabled)
        if not isinstance(doc, dict) or not isinstance(doc.get("uri"), str) or not doc["uri"]:
            raise RequestRejected("invalid_reference", "a reference must be a JSON object with a string 'uri' "
                                  "(a file) or a 'study' UID (DICOMweb)")
        return Request(rid, None, resolve_reference(doc["uri"], archive_root), content_type)
    return Request(rid, bytes(value), None, content_type)
