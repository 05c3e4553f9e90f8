"""Sorting archive failures into retry (infrastructure) and dead letter (bad input); credentials kept out."""

from __future__ import annotations

import socket

import pytest

from skinbatch.dicomweb.client import (
    ArchiveRejected,
    ArchiveUnavailable,
    DicomWebArchive,
    DicomWebSettings,
    InstanceRef,
    NotInArchive,
    _status_error,
    is_image_sop_class,
)


@pytest.mark.parametrize("status, kind", [
    (404, NotInArchive), (500, ArchiveUnavailable), (502, ArchiveUnavailable), (503, ArchiveUnavailable),
    (408, ArchiveUnavailable), (429, ArchiveUnavailable), (401, ArchiveUnavailable), (403, ArchiveUnavailable),
    (400, ArchiveRejected), (409, ArchiveRejected),
])
def test_status_classification(status: int, kind: type) -> None:
    assert isinstance(_status_error(status, "instance 1.2"), kind)


def test_not_found_is_a_dead_letter_type() -> None:
    assert NotInArchive("x").type == "instance_not_found"


def test_connection_refused_is_unavailable_and_never_shows_the_password() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    settings = DicomWebSettings.from_values(f"http://127.0.0.1:{port}/dicom-web", "user", "s3cret-pw",
                                            connect_timeout_s=1, read_timeout_s=1)
    with pytest.raises(ArchiveUnavailable) as info:
        DicomWebArchive(settings).retrieve(InstanceRef("1.2", "1.2.3", "1.2.3.4"))
    assert "s3cret-pw" not in str(info.value) and "user" not in str(info.value)
    assert "s3cret-pw" not in repr(settings)


def test_credentials_in_the_url_move_to_basic_auth() -> None:
    s = DicomWebSettings.from_values("https://alice:pw@pacs.example.org:8443/dicom-web/")
    assert s.url == "https://pacs.example.org:8443/dicom-web" and s.user == "alice" and s.password == "pw"
    assert s.auth_kind == "basic" and s.session().auth == ("alice", "pw")


def test_bearer_token() -> None:
    s = DicomWebSettings.from_values("https://pacs.example.org/dicom-web", token="tok")
    assert s.auth_kind == "bearer" and s.session().headers["Authorization"] == "Bearer tok"
    with pytest.raises(ValueError):
        DicomWebSettings.from_values("https://pacs.example.org/dicom-web", user="a", password="b", token="tok")


def test_from_env() -> None:
    env = {"SKINBATCH_DICOMWEB_URL": "http://pacs/dicom-web", "SKINBATCH_DICOMWEB_USER": "u",
           "SKINBATCH_DICOMWEB_PASSWORD": "p"}
    s = DicomWebSettings.from_env(env)
    assert s is not None and s.user == "u" and s.password == "p"
    assert DicomWebSettings.from_env({}) is None


@pytest.mark.parametrize("url", ["ftp://pacs/dicom-web", "pacs/dicom-web", "http:///x"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(ValueError):
        DicomWebSettings.from_values(url)


def test_reports_are_not_images() -> None:
    assert not is_image_sop_class("1.2.840.10008.5.1.4.1.1.88.33")
    assert is_image_sop_class("1.2.840.10008.5.1.4.1.1.77.1.4") and is_image_sop_class("")
