"""Bounded WADO-RS retrieval: look at an instance's metadata first, then stream it under a byte limit.

An archive holds cine loops, whole-slide images and 500 MB multi-frame instances next to photographs.
Nothing a request names may make the consumer hold more than its limits, so one retrieval is:

1. **Metadata** (WADO-RS ``.../metadata``, DICOM JSON, itself read under a small byte limit). An
   instance of a SOP class we do not score (:data:`UNSCORED_SOP_CLASSES`, matched by exact UID) is
   refused as ``unsupported_sop_class``; one whose declared rows × columns × frames are over the pixel
   limits as ``decompression_bomb`` (the decoder's own check, :func:`check_size`). Neither is downloaded.
   An archive without metadata, or with metadata that says too little, goes on to step 2: the byte
   bound below still holds.
2. **The instance**, streamed: refused by ``Content-Length`` where the archive sends one, and the read
   stopped as soon as the part passes the byte limit (``too_large``). ``Accept-Encoding: identity`` is
   asked for, so a ``Content-Length`` is the size of what we would hold (Orthanc gzips by default:
   60 MB of zeros arrive as 60 KB and inflate back on our side). Bytes are counted after any
   decompression, so a compressed answer is bounded too.
3. **The multipart answer** is parsed as it arrives by ``multipart``'s push parser (a maintained,
   dependency-free parser with its own header and size limits), so the body is never held twice. The
   part's bytes are returned exactly as the archive sent them: their sha256 is the archive's copy's.

Multi-frame instances under the pixel limit but over the byte limit are **refused** (``too_large``),
not retrieved frame by frame: WADO-RS ``/frames/`` returns pixel data without the data set around it (so
the result's sha256 could no longer be of a file the archive holds), in a transfer syntax the archive
may pick, and scoring dozens of cine frames is not what a request for a photograph means. A request
that wants one frame of such an instance is refused the same way; raise ``--max-image-bytes`` to
score it.

Every retrieval holds a :class:`Hold` on the consumer's :class:`ByteMeter`: the bytes it may still
receive count against the consumer's byte budget while they download.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import multipart
import requests

from skinbatch.contract import ErrorType, InputRejected
from skinbatch.imaging import DecodeLimits

__all__ = [
    "DERMOSCOPIC_PHOTOGRAPHY",
    "METADATA_LIMIT",
    "MULTIPART_OVERHEAD",
    "UNSCORED_SOP_CLASSES",
    "VL_PHOTOGRAPHIC",
    "ByteMeter",
    "Hold",
    "InstanceFacts",
    "InstanceRefused",
    "fetch_instance",
    "fetch_metadata",
    "instance_url",
    "read_single_part",
    "screen",
]

VL_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4"
DERMOSCOPIC_PHOTOGRAPHY = "1.2.840.10008.5.1.4.1.1.77.1.7"

_P = "1.2.840.10008.5.1.4.1.1."
UNSCORED_SOP_CLASSES: Mapping[str, str] = {
    # video (note: VL Photographic …77.1.4 is scored; Video Photographic …77.1.4.1 is not)
    _P + "77.1.1.1": "video endoscopic", _P + "77.1.2.1": "video microscopic", _P + "77.1.4.1": "video photographic",
    # whole-slide microscopy
    _P + "77.1.6": "VL whole slide microscopy",
    # encapsulated documents
    _P + "104.1": "encapsulated PDF", _P + "104.2": "encapsulated CDA", _P + "104.3": "encapsulated STL",
    _P + "104.4": "encapsulated OBJ", _P + "104.5": "encapsulated MTL",
    # waveforms
    **{_P + s: "waveform" for s in ("9.1.1", "9.1.2", "9.1.3", "9.1.4", "9.2.1", "9.3.1", "9.4.1", "9.4.2",
                                    "9.5.1", "9.6.1", "9.6.2", "9.7.1", "9.7.2", "9.7.3", "9.7.4", "9.8.1",
                                    "9.8.2", "9.9.1", "9.10.1", "9.100.1", "9.100.2")},
    # presentation states
    **{_P + f"11.{n}": "presentation state" for n in range(1, 13)},
    # structured reports and key object selection (ours included)
    **{_P + f"88.{n}": "structured report" for n in (11, 22, 33, 34, 35, 40, 50, 65, 67, 68, 69, 70, 71, 72, 73,
                                                     74, 75, 76)},
    _P + "88.59": "key object selection",
    # raw data and registrations
    _P + "66": "raw data", _P + "66.1": "spatial registration", _P + "66.2": "spatial fiducials",
    _P + "66.3": "deformable registration",
}
"""SOP classes that hold no photograph to score, by exact UID, with a name for messages."""

METADATA_LIMIT = 4 * 1024 * 1024
"""Most bytes of DICOM JSON read for one instance's metadata (bulk data comes as URIs, not inline)."""
MULTIPART_OVERHEAD = 64 * 1024
"""Allowance for the multipart framing around the one part when ``Content-Length`` is compared."""
_CHUNK = 256 * 1024
# Accept the instance as stored (any transfer syntax): no transcoding by the archive, so the bytes
# scored are the bytes archived, and their sha256 matches the archive's copy.
_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'
_JSON = "application/dicom+json"

class InstanceRefused(InputRejected):
    """An instance refused before or while it downloads: its class, its pixels or its size. Bad input."""

# -- metadata --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class InstanceFacts:
    """What an instance's metadata declares; 0 or "" where it says nothing."""

    sop_class: str = ""
    rows: int = 0
    columns: int = 0
    frames: int = 1
    samples: int = 0
    bits_allocated: int = 0
    transfer_syntax: str = ""

    @classmethod
    def from_metadata(cls, doc: Any) -> InstanceFacts:
        """From a WADO-RS metadata answer: a DICOM JSON list of one data set (or the data set itself)."""
        if isinstance(doc, list):
            doc = doc[0] if doc else {}
        if not isinstance(doc, dict):
            return cls()
        return cls(sop_class=_text(doc, "00080016"), rows=_int(doc, "00280010"), columns=_int(doc, "00280011"),
                   frames=_int(doc, "00280008") or 1, samples=_int(doc, "00280002"),
                   bits_allocated=_int(doc, "00280100"), transfer_syntax=_text(doc, "00020010"))

    @property
    def pixels(self) -> int:
        return self.rows * self.columns

def _first(doc: dict[str, Any], tag: str) -> Any:
    element = doc.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return values[0] if isinstance(values, list) and values else None

def _text(doc: dict[str, Any], tag: str) -> str:
    value = _first(doc, tag)
    return value.strip() if isinstance(value, str) else ""

def _int(doc: dict[str, Any], tag: str) -> int:
    value = _first(doc, tag)
    try:
        return max(0, int(value)) if value is not None and not isinstance(value, bool) else 0
    except (TypeError, ValueError):
        return 0

def screen(facts: InstanceFacts, limits: DecodeLimits) -> InstanceRefused | None:
    """Why an instance must not be retrieved, from its metadata alone; None when nothing says so."""
    name = UNSCORED_SOP_CLASSES.get(facts.sop_class)
    if name is not None:
        return InstanceRefused(f"the instance is a {name} object (SOP class {facts.sop_class}), not an image "
                               "this model scores", ErrorType.UNSUPPORTED_SOP_CLASS)
    if facts.rows and facts.columns:
        from skinbatch.imaging.decoders.base import check_size

        try:
            check_size(facts.columns, facts.rows, facts.frames, limits, fmt="DICOM",
                       what="the archive's metadata")
        except InputRejected as exc:
            return InstanceRefused(f"{exc.message} (refused before retrieval)", exc.type)
    return None

# -- the byte budget --------------------------------------------------------------------------------------------

class ByteMeter:
    """Bytes retrievals hold or may still receive; thread-safe. The consumer counts them in its budget."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held = 0

    @property
    def held(self) -> int:
        return self._held

    def hold(self, nbytes: int) -> Hold:
        """A reservation of ``nbytes``, counted at once."""
        hold = Hold(self)
        hold.set(nbytes)
        return hold

    def _add(self, delta: int) -> None:
        with self._lock:
            self._held += delta

class Hold:
    """One retrieval's share of a :class:`ByteMeter`: set it to what the retrieval may hold now."""

    def __init__(self, meter: ByteMeter | None = None) -> None:
        self._meter = meter
        self._lock = threading.Lock()
        self.nbytes = 0

    def set(self, nbytes: int) -> None:
        with self._lock:
            delta, self.nbytes = nbytes - self.nbytes, nbytes
        if self._meter is not None and delta:
            self._meter._add(delta)

    def release(self) -> None:
        self.set(0)

# -- HTTP --------------------------------------------------------------------------------------------------------

def fetch_metadata(session: requests.Session, url: str, timeout: tuple[float, float],
                   limit: int = METADATA_LIMIT) -> InstanceFacts:
    """The instance's metadata; ``requests`` errors propagate (the caller classifies them)."""
    with closing(session.get(url + "/metadata", headers={"Accept": _JSON}, stream=True, timeout=timeout)) as r:
        r.raise_for_status()
        body = io.BytesIO()
        for chunk in r.iter_content(_CHUNK):
            body.write(chunk)
            if body.tell() > limit:
                raise InstanceRefused(f"the archive's metadata for the instance is over {limit} bytes",
                                      ErrorType.TOO_LARGE)
    try:
        return InstanceFacts.from_metadata(json.loads(body.getvalue()))
    except ValueError:
        return InstanceFacts()  # unreadable metadata: the byte bound still holds

def fetch_instance(session: requests.Session, url: str, timeout: tuple[float, float], max_bytes: int,
                   hold: Hold | None = None) -> bytes:
    """The Part-10 bytes of one instance as stored, streamed under ``max_bytes``.

    ``hold`` is set to what the retrieval may hold: ``max_bytes`` until the answer's size is known, then
    that size; on return, exactly the bytes returned. The caller releases it.
    """
    hold = hold or Hold()
    hold.set(max(hold.nbytes, max_bytes))
    headers = {"Accept": _DICOM, "Accept-Encoding": "identity"}
    with closing(session.get(url, headers=headers, stream=True, timeout=timeout)) as r:
        r.raise_for_status()
        length = _plain_length(r.headers)
        if length is not None and length > max_bytes + MULTIPART_OVERHEAD:
            raise InstanceRefused(f"the archive announces {length} bytes for the instance, over this consumer's "
                                  f"limit of {max_bytes} (--max-image-bytes); refused before download",
                                  ErrorType.TOO_LARGE)
        if length is not None:
            hold.set(length)
        data = read_single_part(r.iter_content(_CHUNK), r.headers.get("Content-Type", ""), max_bytes)
    hold.set(len(data))
    return data

def _plain_length(headers: Mapping[str, str]) -> int | None:
    """``Content-Length`` when it is the size of what we will hold (no content coding), else None."""
    if headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity"):
        return None
    try:
        value = int(headers.get("Content-Length", ""))
    except ValueError:
        return None
    return value if value >= 0 else None

# -- multipart ----------------------------------------------------------------------------------------------------

class _RelatedParser(multipart.PushMultipartParser):
    """``multipart``'s push parser for ``multipart/related``: parts carry no Content-Disposition.

    ``_create_segment`` is the hook the parser's documentation names for other multipart types.
    """

    def _create_segment(self, headerlist: list[tuple[str, str]]) -> multipart.MultipartSegment:
        return multipart.MultipartSegment(headerlist)

def read_single_part(chunks: Iterable[bytes], content_type: str, max_bytes: int) -> bytes:
    """The one part of a ``multipart/related`` body, read chunk by chunk; ``too_large`` past ``max_bytes``.

    Raises :class:`InstanceRefused`: ``too_large``, or ``archive_rejected`` for an answer that is not one
    well-formed part.
    """
    kind, options = multipart.parse_options_header(content_type)
    boundary = options.get("boundary")
    if kind.lower() != "multipart/related" or not boundary:
        raise InstanceRefused(f"the archive answered with {kind or 'no content type'}, not multipart/related",
                              ErrorType.ARCHIVE_REJECTED)
    part = io.BytesIO()
    parts = 0
    parser = _RelatedParser(boundary, max_header_size=16 * 1024, max_segment_count=2)
    try:
        for event in _events(parser, chunks):
            if isinstance(event, multipart.MultipartSegment):
                parts += 1
                if parts > 1:
                    raise InstanceRefused("the archive answered with more than one part for one instance",
                                          ErrorType.ARCHIVE_REJECTED)
            elif event is not None:
                part.write(event)
                if part.tell() > max_bytes:
                    raise InstanceRefused(f"the instance is over this consumer's limit of {max_bytes} bytes "
                                          "(--max-image-bytes); download stopped there", ErrorType.TOO_LARGE)
    except multipart.ParserError as exc:
        raise InstanceRefused(f"the archive's multipart answer does not parse ({exc})",
                              ErrorType.ARCHIVE_REJECTED) from None
    if parts != 1:
        raise InstanceRefused("the archive answered with no part for the instance", ErrorType.ARCHIVE_REJECTED)
    return part.getvalue()

def _events(parser: multipart.PushMultipartParser, chunks: Iterable[bytes]) -> Iterator[Any]:
    for chunk in chunks:
        if chunk:
            yield from parser.parse(chunk)
    yield from parser.parse(b"")
    if not parser.closed:
        raise multipart.ParserError("the answer ended before its closing boundary")

def instance_url(base: str, study: str, series: str, instance: str) -> str:
    return f"{base}/studies/{study}/series/{series}/instances/{instance}"
