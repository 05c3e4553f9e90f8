"""TLS settings for the archive and the sorting of start-up probe failures (pure logic)."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from skinbatch.contract import ConfigurationError, ExitCode
from skinbatch.dicomweb.auth import ArchiveSession, ArchiveTLS, classify_probe_failure
from skinbatch.dicomweb.options import dicomweb_settings


def _http_error(status: int, body: str = "") -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    response._content = body.encode()
    return requests.HTTPError(response=response)


def test_tls_files_need_https_both_halves_and_existing_files(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    ArchiveTLS(ca=str(ca)).check("https://pacs/dicom-web")
    with pytest.raises(ConfigurationError, match="https://"):
        ArchiveTLS(ca=str(ca)).check("http://pacs/dicom-web")
    with pytest.raises(ConfigurationError, match="go together"):
        ArchiveTLS(cert=str(ca)).check("https://pacs/dicom-web")
    with pytest.raises(ConfigurationError, match="no such file"):
        ArchiveTLS(ca=str(tmp_path / "missing.pem")).check("https://pacs/dicom-web")


def test_the_ca_option_wins_over_requests_ca_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    session = ArchiveSession()
    ArchiveTLS(ca="/our/ca.pem", cert="/our/c.pem", key="/our/k.pem").apply(session)
    merged = session.merge_environment_settings("https://pacs/dicom-web", {}, None, None, None)
    assert merged["verify"] == "/our/ca.pem"
    assert session.cert == ("/our/c.pem", "/our/k.pem")
    plain = ArchiveSession()
    assert plain.merge_environment_settings("https://pacs/x", {}, None, None, None)["verify"] == (
        "/etc/ssl/certs/ca-certificates.crt")


@pytest.mark.parametrize("body, status", [
    ("<title>400 No required SSL certificate was sent</title>", 400),
    ("<title>400 The SSL certificate error</title>", 400), ("", 495), ("", 496)])
def test_a_proxy_refusing_the_client_certificate_is_a_tls_failure(body: str, status: int) -> None:
    problem = classify_probe_failure(_http_error(status, body), ArchiveTLS())
    assert problem.kind == "tls" and problem.exit_code == ExitCode.TLS
    assert "--dicomweb-cert" in str(problem)


def test_refused_credentials_and_other_failures() -> None:
    assert classify_probe_failure(_http_error(401), ArchiveTLS()).exit_code == ExitCode.AUTH
    assert classify_probe_failure(_http_error(400, "bad query"), ArchiveTLS()).kind == "refused"
    assert classify_probe_failure(requests.ConnectTimeout(), ArchiveTLS()).exit_code == ExitCode.ARCHIVE_DOWN
    untrusted = requests.exceptions.SSLError("certificate verify failed: unable to get local issuer certificate")
    problem = classify_probe_failure(untrusted, ArchiveTLS())
    assert problem.exit_code == ExitCode.TLS and "--dicomweb-ca" in str(problem)


def test_options_without_a_url_are_refused_and_tls_reaches_the_settings(tmp_path: Path) -> None:
    assert dicomweb_settings({}) is None
    with pytest.raises(ValueError, match="--dicomweb-ca given without --dicomweb-url"):
        dicomweb_settings({"dicomweb_ca": "x"})
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    settings = dicomweb_settings({"dicomweb_url": "https://pacs/dicom-web", "dicomweb_ca": str(ca)})
    assert settings is not None and settings.session().verify == str(ca)
