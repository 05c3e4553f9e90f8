"""DICOMweb requests: recognised as JSON or dicomweb: URIs, refused without an archive."""

from __future__ import annotations

import json

import pytest

from skinbatch.consumer.errors import RequestRejected
from skinbatch.consumer.requests import parse_request
from skinbatch.dicomweb.references import DicomWebReference

REF = {"study": "1.2.3", "series": "1.2.3.4", "instance": "1.2.3.4.5"}


def test_json_reference() -> None:
    req = parse_request(json.dumps({**REF, "request_id": "r1"}).encode(), None, None, None, 1000, dicomweb_enabled=True)
    assert req.dicomweb == DicomWebReference("1.2.3", "1.2.3.4", "1.2.3.4.5")
    assert req.explicit_id == "r1" and req.payload is None and req.path is None


@pytest.mark.parametrize("value", [b"dicomweb:studies/1.2.3/series/1.2.3.4",
                                   json.dumps({"uri": "dicomweb:studies/1.2.3/series/1.2.3.4"}).encode()])
def test_uri_reference(value: bytes) -> None:
    req = parse_request(value, b"k", None, None, 1000, dicomweb_enabled=True)
    assert req.dicomweb is not None and req.dicomweb.level == "series" and req.explicit_id == "k"


def test_refused_without_an_archive(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RequestRejected) as info:
        parse_request(json.dumps(REF).encode(), None, None, str(tmp_path), 1000)
    assert info.value.type == "reference_not_allowed" and "--dicomweb-url" in info.value.message


@pytest.mark.parametrize("value", [b'{"study": "abc"}', b"dicomweb:studies/1.2/instances/1.2.3",
                                   b'{"study": "1.2", "instance": "1.2.3"}'])
def test_malformed(value: bytes) -> None:
    with pytest.raises(RequestRejected) as info:
        parse_request(value, None, None, None, 1000, dicomweb_enabled=True)
    assert info.value.type == "invalid_reference"


def test_file_references_are_unchanged(tmp_path) -> None:  # type: ignore[no-untyped-def]
    req = parse_request(b'{"uri": "a.dcm"}', None, None, str(tmp_path), 1000, dicomweb_enabled=True)
    assert req.dicomweb is None and req.path == str((tmp_path / "a.dcm").resolve())
