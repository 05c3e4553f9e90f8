"""The pure parts of bounded retrieval: what metadata refuses, the streamed multipart reader, the byte meter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from skinbatch.contract import ErrorType
from skinbatch.dicomweb.retrieve import (
    DERMOSCOPIC_PHOTOGRAPHY,
    UNSCORED_SOP_CLASSES,
    VL_PHOTOGRAPHIC,
    ByteMeter,
    InstanceFacts,
    InstanceRefused,
    read_single_part,
    screen,
)
from skinbatch.imaging import DecodeLimits

LIMITS = DecodeLimits(max_bytes=1000, max_pixels=1_000_000, max_total_pixels=2_000_000, max_frames=100)
BOUNDARY = "b0undary-7"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def _meta(sop_class: str = VL_PHOTOGRAPHIC, rows: int = 100, columns: int = 100, frames: str | None = None
          ) -> list[dict[str, object]]:
    doc: dict[str, object] = {"00080016": {"vr": "UI", "Value": [sop_class]},
                              "00280010": {"vr": "US", "Value": [rows]},
                              "00280011": {"vr": "US", "Value": [columns]},
                              "00280002": {"vr": "US", "Value": [3]}, "00280100": {"vr": "US", "Value": [8]}}
    if frames is not None:
        doc["00280008"] = {"vr": "IS", "Value": [frames]}
    return [doc]


def _body(*parts: bytes) -> bytes:
    out = b""
    for part in parts:
        out += f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def test_facts_from_dicom_json() -> None:
    facts = InstanceFacts.from_metadata(_meta(rows=30, columns=40, frames="7"))
    assert (facts.sop_class, facts.rows, facts.columns, facts.frames, facts.samples, facts.bits_allocated) == (
        VL_PHOTOGRAPHIC, 30, 40, 7, 3, 8)
    assert InstanceFacts.from_metadata([]) == InstanceFacts()
    assert InstanceFacts.from_metadata({"00280010": {"vr": "US"}}).rows == 0


@pytest.mark.parametrize("sop_class", [VL_PHOTOGRAPHIC, DERMOSCOPIC_PHOTOGRAPHY, "1.2.840.10008.5.1.4.1.1.7",
                                       "1.2.840.10008.5.1.4.1.1.77.1.4.9", ""])
def test_photographs_and_unknown_classes_pass(sop_class: str) -> None:
    assert screen(InstanceFacts.from_metadata(_meta(sop_class)), LIMITS) is None


@pytest.mark.parametrize("sop_class", [
    "1.2.840.10008.5.1.4.1.1.77.1.4.1",  # Video Photographic: a prefix match on …77.1.4 would score it
    "1.2.840.10008.5.1.4.1.1.77.1.1.1", "1.2.840.10008.5.1.4.1.1.77.1.6", "1.2.840.10008.5.1.4.1.1.104.1",
    "1.2.840.10008.5.1.4.1.1.9.1.1", "1.2.840.10008.5.1.4.1.1.11.1", "1.2.840.10008.5.1.4.1.1.88.33"])
def test_classes_we_do_not_score_are_refused_by_exact_uid(sop_class: str) -> None:
    refusal = screen(InstanceFacts.from_metadata(_meta(sop_class)), LIMITS)
    assert refusal is not None and refusal.type == ErrorType.UNSUPPORTED_SOP_CLASS
    assert sop_class in UNSCORED_SOP_CLASSES


@pytest.mark.parametrize(("rows", "columns", "frames"), [(1001, 1000, None), (1000, 1000, "3"), (10, 10, "101")])
def test_too_many_pixels_or_frames_are_a_decompression_bomb(rows: int, columns: int, frames: str | None) -> None:
    refusal = screen(InstanceFacts.from_metadata(_meta(rows=rows, columns=columns, frames=frames)), LIMITS)
    assert refusal is not None and refusal.type == ErrorType.DECOMPRESSION_BOMB


def test_metadata_that_says_nothing_refuses_nothing() -> None:
    assert screen(InstanceFacts(), LIMITS) is None


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_one_part_is_returned_exactly_whatever_the_chunking(chunk: int) -> None:
    part = bytes(range(256)) * 3 + f"\r\n--{BOUNDARY[:-1]}".encode()  # bytes that look like a boundary
    assert read_single_part(_chunks(_body(part), chunk), CONTENT_TYPE, 1000) == part


def test_a_part_over_the_limit_stops_the_read() -> None:
    consumed = []

    def chunks() -> Iterator[bytes]:
        for c in _chunks(_body(b"x" * 100_000), 100):
            consumed.append(c)
            yield c

    with pytest.raises(InstanceRefused) as info:
        read_single_part(chunks(), CONTENT_TYPE, 1000)
    assert info.value.type == ErrorType.TOO_LARGE
    assert sum(map(len, consumed)) < 2000  # stopped at the limit, not after the whole body


@pytest.mark.parametrize(("body", "content_type"), [
    (_body(b"a", b"b"), CONTENT_TYPE),
    (_body(), CONTENT_TYPE),
    (_body(b"a")[:-10], CONTENT_TYPE),
    (_body(b"a"), "application/dicom"),
    (_body(b"a"), "multipart/related; type=application/dicom"),
])
def test_answers_that_are_not_one_part_are_archive_rejected(body: bytes, content_type: str) -> None:
    with pytest.raises(InstanceRefused) as info:
        read_single_part(_chunks(body, 16), content_type, 1000)
    assert info.value.type == ErrorType.ARCHIVE_REJECTED


def test_holds_move_the_meter_and_release_to_zero() -> None:
    meter = ByteMeter()
    first, second = meter.hold(1000), meter.hold(500)
    assert meter.held == 1500
    first.set(200)
    assert meter.held == 700
    first.release()
    second.release()
    second.release()
    assert meter.held == 0
