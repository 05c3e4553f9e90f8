"""Classifying records: inline bytes, references, request ids, limits."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from skinbatch.consumer.errors import RequestRejected
from skinbatch.consumer.requests import parse_request, resolve_reference

JPEG = b"\xff\xd8\xff\xe0" + b"\0" * 100


def test_inline_with_header_id() -> None:
    req = parse_request(JPEG, b"key-1", [("request-id", b"hdr-7")], None, 1000)
    assert req.explicit_id == "hdr-7" and req.payload == JPEG and req.path is None


def test_key_is_used_when_no_header() -> None:
    assert parse_request(JPEG, b"key-1", [], None, 1000).explicit_id == "key-1"
    assert parse_request(JPEG, None, None, None, 1000).explicit_id is None


@pytest.mark.parametrize("value", [b"", None])
def test_empty_value_is_rejected(value: bytes | None) -> None:
    with pytest.raises(RequestRejected) as info:
        parse_request(value, None, None, None, 1000)
    assert info.value.type == "empty"


def test_over_the_byte_limit_is_rejected() -> None:
    with pytest.raises(RequestRejected) as info:
        parse_request(JPEG, None, None, None, 10)
    assert info.value.type == "too_large"


def test_reference_resolves_under_root(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.dcm").write_bytes(b"x")
    req = parse_request(json.dumps({"uri": "a/x.dcm"}).encode(), None, None, str(tmp_path), 1000)
    assert req.path == str((tmp_path / "a" / "x.dcm").resolve()) and req.payload is None
    req = parse_request(json.dumps({"uri": f"file://{tmp_path}/a/x.dcm"}).encode(), None, None, str(tmp_path), 1000)
    assert req.path == str((tmp_path / "a" / "x.dcm").resolve())


@pytest.mark.parametrize("uri", ["../etc/passwd", "/etc/passwd", "file:///etc/passwd", "a/../../x"])
def test_reference_outside_root_is_rejected(tmp_path: Path, uri: str) -> None:
    with pytest.raises(RequestRejected) as info:
        resolve_reference(uri, str(tmp_path))
    assert info.value.type == "reference_outside_root"


def test_symlink_escaping_root_is_rejected(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    os.symlink("/etc", root / "link")
    with pytest.raises(RequestRejected) as info:
        resolve_reference("link/passwd", str(root))
    assert info.value.type == "reference_outside_root"


@pytest.mark.parametrize(("value", "kind"), [
    (b"{not json", "invalid_reference"),
    (b'{"path": "x"}', "invalid_reference"),
    (b'{"uri": "http://pacs/x"}', "unsupported_reference"),
])
def test_bad_references(tmp_path: Path, value: bytes, kind: str) -> None:
    with pytest.raises(RequestRejected) as info:
        parse_request(value, None, None, str(tmp_path), 1000)
    assert info.value.type == kind


def test_reference_without_archive_root_is_rejected() -> None:
    with pytest.raises(RequestRejected) as info:
        parse_request(b'{"uri": "x.dcm"}', None, None, None, 1000)
    assert info.value.type == "reference_not_allowed"
