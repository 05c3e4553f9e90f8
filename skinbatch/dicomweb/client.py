"""Talking to a DICOMweb archive (QIDO-RS, WADO-RS, STOW-RS; DICOM PS3.18) through ``dicomweb-client``.

Every failure is sorted into one of three kinds, because the caller acts differently on each:

* :class:`ArchiveUnavailable`: may pass (timeouts, refused connections, HTTP 5xx, 408, 429, and 401/403,
  which mean the consumer's credentials are wrong or expired: an operator fixes them, the input is
  fine). Retried with backoff; never a dead letter.
* :class:`NotInArchive`: HTTP 404, or a query that finds nothing. The request named something the
  archive does not have: bad input, dead-lettered with ``type`` ``instance_not_found``.
* :class:`ArchiveRejected`: any other 4xx. The archive refused this particular request.

TLS files (a CA bundle, a client certificate and key) and credentials (HTTP basic or a bearer token;
``auth.py``) ride on the HTTP session; they are never put in a URL, an
exception message or a log record. Error messages name the HTTP status and the operation, not the URL.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse, urlunparse

import pydicom
import requests
from dicomweb_client import DICOMwebClient

from skinbatch.contract import ArchiveError, ArchiveProblem, ArchiveUnavailable, ErrorType, ExitCode, InputRejected
from skinbatch.imaging import DecodeLimits

from .auth import PROBE_TIMEOUT_S, ArchiveSession, ArchiveTLS, probe_archive
from .oauth import BearerAuth, ClientCredentials, OAuthClient, TokenFile, TokenSource
from .references import DicomWebReference
from .retrieve import Hold, InstanceFacts, fetch_instance, fetch_metadata, instance_url, screen

__all__ = [
    "ENV_PASSWORD",
    "ENV_TOKEN",
    "ENV_URL",
    "ENV_USER",
    "NON_IMAGE_SOP_CLASS_PREFIXES",
    "NOT_FOUND_TYPE",
    "REJECTED_TYPE",
    "ArchiveError",
    "ArchiveRejected",
    "ArchiveUnavailable",
    "DicomWebArchive",
    "DicomWebSettings",
    "InstanceRef",
    "NotInArchive",
    "classify",
    "is_image_sop_class",
]

ENV_URL = "SKINBATCH_DICOMWEB_URL"
ENV_USER = "SKINBATCH_DICOMWEB_USER"
ENV_PASSWORD = "SKINBATCH_DICOMWEB_PASSWORD"
ENV_TOKEN = "SKINBATCH_DICOMWEB_TOKEN"
ENV_CA = "SKINBATCH_DICOMWEB_CA"
ENV_CERT = "SKINBATCH_DICOMWEB_CERT"
ENV_KEY = "SKINBATCH_DICOMWEB_KEY"

_NO_METADATA_SERVICE = (400, 405, 406, 415)
"""Answers to a metadata request that mean the archive does not serve metadata, not a bad request."""

NOT_FOUND_TYPE = ErrorType.INSTANCE_NOT_FOUND
REJECTED_TYPE = ErrorType.ARCHIVE_REJECTED

# dicomweb-client logs request URLs at INFO/DEBUG; they carry UIDs. Keep its chatter for warnings.
logging.getLogger("dicomweb_client").setLevel(logging.WARNING)
logging.getLogger("urllib3").setLevel(logging.WARNING)


# ArchiveError and ArchiveUnavailable are the contract's: one class each for the whole package, so that
# `except ArchiveUnavailable` catches an archive fault wherever it was raised. Imported from here too.


class NotInArchive(ArchiveError, InputRejected):
    """The archive does not have what the request names (HTTP 404, or an empty search). Bad input."""

    type = NOT_FOUND_TYPE
    exit_code = ExitCode.USAGE  # a search or reference on the command line that names nothing


class ArchiveRejected(ArchiveError, InputRejected):
    """The archive refused this request with a 4xx other than 404, 401, 403, 408 or 429."""

    type = REJECTED_TYPE
    exit_code = ExitCode.USAGE


# SOP classes that hold no image to score: structured reports (ours included), encapsulated documents,
# presentation states, key objects. A study or series request skips them instead of dead-lettering them.
NON_IMAGE_SOP_CLASS_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.88.",   # Structured Reports, Key Object Selection
    "1.2.840.10008.5.1.4.1.1.104.",  # Encapsulated PDF, CDA, STL…
    "1.2.840.10008.5.1.4.1.1.11.",   # Presentation States
    "1.2.840.10008.5.1.4.1.1.66",    # Raw data, registrations, segmentations
    "1.2.840.10008.5.1.4.1.1.9.",    # Waveforms
)


def is_image_sop_class(sop_class: str) -> bool:
    """False for SOP classes that are known to carry no image; unknown or empty classes count as images."""
    return not any(sop_class.startswith(p) for p in NON_IMAGE_SOP_CLASS_PREFIXES)


@dataclass(frozen=True)
class InstanceRef:
    """One instance found in the archive."""

    study: str
    series: str
    instance: str
    sop_class: str = ""
    modality: str = ""

    @property
    def uri(self) -> str:
        return f"dicomweb:studies/{self.study}/series/{self.series}/instances/{self.instance}"


@dataclass
class DicomWebSettings:
    """Where the archive is and how to log in. Build it with :meth:`from_values` or :meth:`from_env`."""

    url: str
    """The DICOMweb root, e.g. ``https://pacs.example.org/dicom-web`` (no credentials in it)."""
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    """An OAuth2/OIDC bearer token; exclusive with user and password."""
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    verify: bool | str = True
    """TLS verification: True, False, or a CA bundle path (``tls.ca`` wins when given)."""
    tls: ArchiveTLS = field(default_factory=ArchiveTLS)
    """The CA bundle, and the client certificate and key for mutual TLS (``--dicomweb-ca/-cert/-key``)."""
    oauth: OAuthClient | None = None
    """OAuth2 client credentials: tokens fetched, cached and refreshed (``oauth.ClientCredentials``)."""
    token_file: str | None = None
    """A file holding the current bearer token, re-read when it changes (``oauth.TokenFile``)."""
    _tokens: TokenSource | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_values(cls, url: str, user: str | None = None, password: str | None = None,
                    token: str | None = None, **kw: Any) -> DicomWebSettings:
        """Validates the URL; credentials written into it (``https://user:pw@host``) are moved to basic auth."""
        parsed = urlparse(url.strip())
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("the DICOMweb URL must be http(s)://host[:port]/path-to-dicomweb-root")
        if parsed.username or parsed.password:
            if user or token:
                raise ValueError("give the archive's credentials once: in the URL or as user/password/token")
            user, password = parsed.username, parsed.password
            host = parsed.hostname + (f":{parsed.port}" if parsed.port else "")
            parsed = parsed._replace(netloc=host)
        ways = [name for name, given in (("--dicomweb-user", user), ("--dicomweb-token", token),
                                         ("--dicomweb-token-file", kw.get("token_file")),
                                         ("--dicomweb-client-id", kw.get("oauth"))) if given]
        if len(ways) > 1:
            raise ValueError(f"give one way to log in to the archive, not {' and '.join(ways)}")
        if password and not user:
            raise ValueError("a DICOMweb password needs a user (--dicomweb-user)")
        settings = cls(url=urlunparse(parsed).rstrip("/"), user=user, password=password, token=token, **kw)
        settings.tls.check(settings.url)
        return settings

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> DicomWebSettings | None:
        env = os.environ if environ is None else environ
        url = env.get(ENV_URL)
        if not url:
            return None
        tls = ArchiveTLS(ca=env.get(ENV_CA) or None, cert=env.get(ENV_CERT) or None, key=env.get(ENV_KEY) or None)
        return cls.from_values(url, env.get(ENV_USER) or None, env.get(ENV_PASSWORD) or None,
                               env.get(ENV_TOKEN) or None, tls=tls)

    @property
    def auth_kind(self) -> str:
        """``basic``, ``bearer`` or ``none``: safe to log."""
        if self.oauth:
            return "oauth2"
        if self.token_file:
            return "token_file"
        return "bearer" if self.token else "basic" if self.user else "none"

    def token_source(self) -> TokenSource | None:
        """The one token cache every thread's session shares (None for basic auth or a fixed token)."""
        if self._tokens is None and self.oauth is not None:
            self._tokens = ClientCredentials(self.oauth)
        elif self._tokens is None and self.token_file:
            self._tokens = TokenFile(self.token_file)
        return self._tokens

    def session(self) -> requests.Session:
        session = ArchiveSession()
        source = self.token_source()
        if source is not None:
            session.auth = BearerAuth(source)
        elif self.token:
            session.headers["Authorization"] = f"Bearer {self.token}"
        elif self.user:
            session.auth = (self.user, self.password or "")
        self.tls.apply(session, self.verify)
        return session


def _status_error(status: int, what: str) -> ArchiveError:
    if status == 404:
        return NotInArchive(f"the archive has no {what} (HTTP 404)")
    if status in (401, 403, 407):
        return ArchiveUnavailable(
            f"the archive refused our credentials for {what} (HTTP {status}); check --dicomweb-user/"
            "--dicomweb-password or --dicomweb-token (SKINBATCH_DICOMWEB_*)")
    if status in (408, 429) or status >= 500:
        return ArchiveUnavailable(f"the archive failed on {what} (HTTP {status})")
    return ArchiveRejected(f"the archive rejected the request for {what} (HTTP {status})")


@contextmanager
def classify(what: str) -> Iterator[None]:
    """Turn requests' and dicomweb-client's exceptions into the archive errors above."""
    try:
        yield
    except ArchiveError:
        raise
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        raise _status_error(status, what) from None
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise ArchiveUnavailable(f"the archive did not answer for {what} ({type(exc).__name__})") from None
    except requests.RequestException as exc:
        raise ArchiveUnavailable(f"talking to the archive failed for {what} ({type(exc).__name__})") from None


class _Client(DICOMwebClient):
    """dicomweb-client for QIDO-RS and STOW-RS; WADO-RS retrieval is :mod:`skinbatch.dicomweb.retrieve`'s."""


class DicomWebArchive:
    """Thread-safe: each thread gets its own HTTP session (requests' sessions are not thread-safe)."""

    def __init__(self, settings: DicomWebSettings) -> None:
        self.settings = settings
        self._local = threading.local()

    @property
    def url(self) -> str:
        return self.settings.url

    def probe(self, timeout_s: float = PROBE_TIMEOUT_S) -> ArchiveProblem | None:
        """The start-up check (``auth.probe_archive``): raises ``ArchiveProblem`` for a refused certificate
        (exit 13) or refused credentials (exit 12); returns the problem when the archive did not answer
        within ``timeout_s``, None when it did."""
        source = self.settings.token_source()
        return probe_archive(self.settings.session(), self.settings.url, self.settings.tls, timeout_s,
                             fresh_credentials=bool(source is not None and source.fresh))

    def _client(self) -> _Client:
        client = getattr(self._local, "client", None)
        if client is None:
            s = self.settings
            client = _Client(s.url, session=s.session(), timeout=(s.connect_timeout_s, s.read_timeout_s))
            client.set_http_retry_params(retry=False)  # our caller retries with backoff, without blocking
            self._local.client = client
        return client

    # -- QIDO-RS -----------------------------------------------------------------------------
    def resolve(self, ref: DicomWebReference) -> list[InstanceRef]:
        """The instances a reference names, in a stable order. ``NotInArchive`` when there are none."""
        what = f"{ref.level} {ref.instance or ref.series or ref.study}"
        if ref.instance:
            assert ref.series is not None
            # One instance: no query needed; a missing one shows up as a 404 on retrieval.
            return [InstanceRef(ref.study, ref.series, ref.instance)]
        found = self.search_instances(study=ref.study, series=ref.series)
        if not found:
            raise NotInArchive(f"the archive has no instances in {what}")
        images = [r for r in found if is_image_sop_class(r.sop_class)]
        if not images:
            raise NotInArchive(f"the {what} holds no images, only reports or other non-image objects")
        return images

    def search_instances(self, study: str | None = None, series: str | None = None,
                         filters: dict[str, str] | None = None) -> list[InstanceRef]:
        with classify("an instance search"):
            rows = self._client().search_for_instances(
                study_instance_uid=study, series_instance_uid=series, search_filters=dict(filters or {}),
                fields=["SOPClassUID", "SeriesInstanceUID", "StudyInstanceUID", "Modality"], get_remaining=True)
        out = {_instance_ref(row) for row in rows}
        return sorted((r for r in out if r is not None), key=lambda r: (r.study, r.series, r.instance))

    def search_studies(self, filters: dict[str, str]) -> list[str]:
        with classify("a study search"):
            rows = self._client().search_for_studies(search_filters=dict(filters), get_remaining=True)
        return sorted({v for v in (_value(row, "0020000D") for row in rows) if v})

    def instance_exists(self, study: str, instance: str) -> bool:
        with classify("an instance search"):
            rows = self._client().search_for_instances(study_instance_uid=study,
                                                       search_filters={"SOPInstanceUID": instance})
        return any(_value(row, "00080018") == instance for row in rows)

    # -- WADO-RS (bounded: skinbatch.dicomweb.retrieve) ------------------------------------------
    def retrieve(self, ref: InstanceRef, limits: DecodeLimits | None = None, hold: Hold | None = None) -> bytes:
        """The instance's Part-10 bytes as stored, after its metadata passed :func:`screen`.

        ``InstanceRefused`` (bad input, typed) for an instance refused from its metadata or over
        ``limits.max_bytes``; ``hold`` counts the bytes it may hold meanwhile (the caller releases it).
        """
        limits = limits or DecodeLimits()
        url = instance_url(self.url, ref.study, ref.series, ref.instance)
        timeout = (self.settings.connect_timeout_s, self.settings.read_timeout_s)
        with classify(f"instance {ref.instance}"):
            refusal = screen(self._metadata(url, timeout), limits)
            if refusal is not None:
                raise refusal
            return fetch_instance(self._session(), url, timeout, limits.max_bytes, hold)

    def _metadata(self, url: str, timeout: tuple[float, float]) -> InstanceFacts:
        """The instance's metadata; nothing known when the archive has no metadata service (the byte
        bound of the retrieval still holds)."""
        try:
            return fetch_metadata(self._session(), url, timeout)
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if status in _NO_METADATA_SERVICE:
                return InstanceFacts()
            raise

    def _session(self) -> requests.Session:
        """This thread's HTTP session for the bounded retrievals."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = self.settings.session()
        return session

    # -- STOW-RS -----------------------------------------------------------------------------
    def store(self, dataset: pydicom.Dataset) -> None:
        """Store one instance; ``ArchiveRejected`` when the archive lists it as failed."""
        with classify("storing a report"):
            response = self._client().store_instances([dataset], study_instance_uid=dataset.StudyInstanceUID)
        failed = getattr(response, "FailedSOPSequence", None) or []
        if failed:
            reason = failed[0].get("FailureReason", "unknown")
            raise ArchiveRejected(f"the archive refused to store the report (failure reason {reason})")


def _value(row: dict[str, Any], tag: str) -> str | None:
    values = (row.get(tag) or {}).get("Value") or []
    return str(values[0]) if values else None


def _instance_ref(row: dict[str, Any]) -> InstanceRef | None:
    study, series, sop = _value(row, "0020000D"), _value(row, "0020000E"), _value(row, "00080018")
    if not (study and series and sop):
        return None
    return InstanceRef(study, series, sop, _value(row, "00080016") or "", _value(row, "00080060") or "")
