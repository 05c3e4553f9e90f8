"""How skinbatch proves who it is to a DICOMweb archive, and checks who the archive is.

* **TLS** (:class:`ArchiveTLS`): a CA bundle for an archive behind an internal CA, and a client
  certificate and key for mutual TLS.
* **Credentials** on the HTTP session: HTTP basic, a fixed bearer token, a token file re-read when it
  changes, or OAuth2 client credentials (``skinbatch.dicomweb.oauth``).
* **The start-up probe** (:func:`probe_archive`): one QIDO-RS request within 30 s, so that a refused
  certificate or refused credentials end the command with its exit code (13, 12) instead of being
  retried forever.

Secrets never go into a URL, an exception message or a log record.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from skinbatch.contract import ArchiveProblem, ConfigurationError

PROBE_TIMEOUT_S = 30.0

__all__ = ["PROBE_TIMEOUT_S", "ArchiveSession", "ArchiveTLS", "classify_probe_failure", "probe_archive"]


class ArchiveSession(requests.Session):
    """A session whose CA bundle wins over ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``: requests lets those
    variables override ``session.verify`` for every request that does not pass ``verify`` itself (as
    dicomweb-client's do not), which would drop ``--dicomweb-ca`` on any host that sets them. Proxies
    from the environment still apply."""

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any,
                                   cert: Any) -> dict[str, Any]:
        if verify is None and self.verify is not True:
            verify = self.verify
        return super().merge_environment_settings(url, proxies, stream, verify, cert)


@dataclass(frozen=True)
class ArchiveTLS:
    """Files for TLS to the archive: the CA bundle that signed its certificate (the system's CAs when
    None), and a client certificate and key for mutual TLS."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    @property
    def given(self) -> bool:
        return any((self.ca, self.cert, self.key))

    def check(self, url: str) -> None:
        """Refuse files that would be ignored or cannot be read: never drop TLS silently."""
        if self.given and not url.lower().startswith("https://"):
            raise ConfigurationError("--dicomweb-ca/--dicomweb-cert/--dicomweb-key need an https:// --dicomweb-url")
        if bool(self.cert) != bool(self.key):
            raise ConfigurationError("--dicomweb-cert and --dicomweb-key go together (mutual TLS needs both)")
        for flag, value in (("--dicomweb-ca", self.ca), ("--dicomweb-cert", self.cert), ("--dicomweb-key", self.key)):
            if value and not Path(value).is_file():
                raise ConfigurationError(f"{flag} {value!r}: no such file")

    def apply(self, session: requests.Session, verify: bool | str = True) -> None:
        """Set ``session.verify`` (the CA bundle when given) and ``session.cert`` (the client pair)."""
        session.verify = self.ca if self.ca and verify is not False else verify
        if self.cert and self.key:
            session.cert = (self.cert, self.key)


def classify_probe_failure(exc: BaseException, tls: ArchiveTLS) -> ArchiveProblem:
    """The kind of a failed probe (``tls``, ``auth``, ``refused``, ``timeout``) with what to do next."""
    if isinstance(exc, requests.HTTPError):
        status = exc.response.status_code if exc.response is not None else 0
        if _client_certificate_refused(exc.response):
            return ArchiveProblem(_client_cert_message(tls), "tls")
        if status in (401, 403, 407):
            return ArchiveProblem(
                f"the DICOMweb archive refused our credentials (HTTP {status}); check --dicomweb-user/"
                "--dicomweb-password, --dicomweb-token(-file) or the OAuth2 client (--dicomweb-client-id, "
                "its secret, --dicomweb-scope, --dicomweb-audience)", "auth")
        return ArchiveProblem(f"the DICOMweb archive failed a search (HTTP {status})", "refused")
    if _is_tls_failure(exc):
        return ArchiveProblem(_tls_message(exc, tls), "tls")
    if isinstance(exc, requests.Timeout):
        return ArchiveProblem("the DICOMweb archive did not answer in time", "timeout")
    return ArchiveProblem(f"the DICOMweb archive could not be reached ({_reason(exc)})", "refused")


def probe_archive(session: requests.Session, url: str, tls: ArchiveTLS, timeout_s: float = PROBE_TIMEOUT_S,
                  fresh_credentials: bool = False,
                  sleep: Callable[[float], None] = time.sleep) -> ArchiveProblem | None:
    """One QIDO-RS study search (``limit=1``) with the command's session, within ``timeout_s``.

    Raises :class:`ArchiveProblem` of kind ``tls`` (exit 13) at once, and of kind ``auth`` (exit 12)
    when ``fresh_credentials`` (a token just issued for us cannot have expired: it is the wrong client,
    audience or scope): settings to fix, not faults that pass. Returns the last problem otherwise
    (``refused``, ``timeout``, or ``auth`` for a password or fixed token, which an operator may be
    replacing) when the archive did not answer within ``timeout_s``: the caller decides whether that
    stops it; None when the archive answered.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        left = max(1.0, deadline - time.monotonic())
        try:
            response = session.get(f"{url}/studies", params={"limit": "1"},
                                   headers={"Accept": "application/dicom+json"}, timeout=(min(5.0, left), left))
            response.raise_for_status()
            return None
        except requests.RequestException as exc:
            problem = classify_probe_failure(exc, tls)
        if problem.kind == "tls" or (problem.kind == "auth" and fresh_credentials):
            raise problem
        if problem.kind == "auth":
            return problem
        if time.monotonic() + 1 >= deadline:
            return problem
        sleep(1.0)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        nested = current.args[0] if current.args and isinstance(current.args[0], BaseException) else None
        reason = getattr(current, "reason", None)
        current = current.__cause__ or current.__context__ or (reason if isinstance(reason, BaseException)
                                                                else nested)
    return seen


def _is_tls_failure(exc: BaseException) -> bool:
    return isinstance(exc, requests.exceptions.SSLError) or any(isinstance(e, ssl.SSLError) for e in _chain(exc))


def _reason(exc: BaseException) -> str:
    for e in reversed(_chain(exc)):
        if isinstance(e, OSError) and e.strerror:
            return e.strerror
    return type(exc).__name__


def _client_certificate_refused(response: requests.Response | None) -> bool:
    """A TLS proxy that checks client certificates after the handshake (nginx's ``ssl_verify_client``)
    answers 400 ("No required SSL certificate was sent", "The SSL certificate error"), or 495/496."""
    if response is None:
        return False
    if response.status_code in (495, 496):
        return True
    return response.status_code == 400 and "ssl certificate" in response.text[:2000].lower()


def _client_cert_message(tls: ArchiveTLS) -> str:
    if not (tls.cert and tls.key):
        return ("TLS to the DICOMweb archive failed: the archive asks for a client certificate (mutual TLS); "
                "give --dicomweb-cert and --dicomweb-key (SKINBATCH_DICOMWEB_CERT, SKINBATCH_DICOMWEB_KEY)")
    return ("TLS to the DICOMweb archive failed: the archive refused our client certificate (--dicomweb-cert); "
            "have it signed by a CA the archive trusts, and check that it has not expired")


def _tls_message(exc: BaseException, tls: ArchiveTLS) -> str:
    text = " ".join(str(e) for e in _chain(exc)).lower()
    if "certificate verify failed" in text:
        hint = ("the archive's certificate is not trusted: give the CA bundle that signed it with --dicomweb-ca"
                if not tls.ca else "the archive's certificate is not signed by --dicomweb-ca, or does not name "
                "the host in --dicomweb-url")
        return f"TLS to the DICOMweb archive failed: {hint}"
    if any(word in text for word in ("certificate required", "alert", "handshake", "unknown ca", "bad certificate")):
        return _client_cert_message(tls)
    if "wrong version number" in text or "record layer" in text:
        return "TLS to the DICOMweb archive failed: the archive does not speak TLS there; check --dicomweb-url"
    return "TLS to the DICOMweb archive failed: check --dicomweb-ca, --dicomweb-cert and --dicomweb-key"
