"""``skinbatch triage`` raises, and the ``skinbatch`` group exits with the error's own code.

Triton's health check and the DICOMweb archive are stand-ins: these are the paths that end before a
single image is scored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from skinbatch.cli import cli
from skinbatch.contract import ArchiveError, ArchiveProblem, ArchiveUnavailable, ExitCode

TRITON = ["--triton-url", "grpc://127.0.0.1:1"]
ARCHIVE = ["--dicomweb-url", "http://127.0.0.1:1/dicom-web"]


class _Healthy:
    exit_code = ExitCode.OK
    problems: list[str] = []


class _Archive:
    """Stands in for DicomWebArchive; ``probe`` raises ``refuse`` when it is set."""

    refuse: BaseException | None = None

    def __init__(self, settings: object) -> None:
        pass

    def probe(self) -> None:
        if _Archive.refuse is not None:
            raise _Archive.refuse


@pytest.fixture(autouse=True)
def healthy_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("skinbatch.triage.cli.check_triton", lambda *a, **kw: _Healthy())
    monkeypatch.setattr("skinbatch.dicomweb.client.DicomWebArchive", _Archive)
    monkeypatch.setattr(_Archive, "refuse", None)


def _triage(tmp_path: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["triage", *TRITON, "--out", str(tmp_path / "out"), *args])


def test_nothing_to_score_is_a_usage_error(tmp_path: Path) -> None:
    result = _triage(tmp_path)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "skinbatch triage: give folders or files to score" in result.stderr


def test_a_bad_study_date_is_a_usage_error(tmp_path: Path) -> None:
    result = _triage(tmp_path, *ARCHIVE, "--study-date", "2024")
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "skinbatch triage: --study-date takes YYYYMMDD" in result.stderr


def test_a_refused_certificate_exits_with_its_own_code(tmp_path: Path) -> None:
    _Archive.refuse = ArchiveProblem("the archive's certificate is not trusted; pass --dicomweb-ca", kind="tls")
    result = _triage(tmp_path, *ARCHIVE)
    assert result.exit_code == ExitCode.TLS, result.output
    assert "skinbatch triage: the archive's certificate is not trusted" in result.stderr


@pytest.mark.parametrize(("error", "code", "words"), [
    (ArchiveUnavailable("503 Service Unavailable"), ExitCode.ARCHIVE_DOWN,
     "searching the DICOMweb archive failed: 503 Service Unavailable. Check that the archive is up"),
    (ArchiveError("400 Bad Request"), ExitCode.USAGE,
     "the DICOMweb archive refused the search: 400 Bad Request. Check --dicomweb-url and the filters"),
])
def test_a_failed_search(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, error: Exception, code: ExitCode,
                         words: str) -> None:
    def search(archive: object, query: object) -> Any:
        raise error

    monkeypatch.setattr("skinbatch.triage.pacs.find_instances", search)
    result = _triage(tmp_path, *ARCHIVE)
    assert result.exit_code == code, result.output
    assert f"skinbatch triage: {words}" in result.stderr
    assert "Traceback" not in result.output
