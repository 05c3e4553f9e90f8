"""Bearer tokens for the DICOMweb archive that change while a command runs.

* :class:`ClientCredentials`: OAuth2 client credentials (RFC 6749 §4.4) at the identity provider's
  token URL, through authlib's ``OAuth2Session`` (authlib: maintained, one client for every grant and
  client-authentication method, RFC 7523 and token introspection if a site needs them later;
  requests-oauthlib wraps the older oauthlib and sees fewer releases). The token is fetched again when
  a fifth of its lifetime is left (at most 60 s before it expires), and at once when the archive
  answers 401 to it. A failed fetch (the issuer down) is logged once per outage with the reason,
  counted (``on_failure``), and tried again with backoff (1 s doubling to 30 s) while the current token
  is still valid; without a valid token the archive call raises ``ArchiveUnavailable``, so the consumer
  pauses and retries like for any archive outage, and resumes by itself once the issuer answers.
* :class:`TokenFile`: a file that a sidecar, Kubernetes (projected service-account tokens) or workload
  identity rewrites; re-read whenever its modification time or size changes.
* :class:`BearerAuth`: puts the current token on every request, and on a 401 fetches a fresh token and
  sends the request once more.

Tokens and secrets never reach a log record or an exception message.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import requests
from requests.auth import AuthBase

from skinbatch.contract import ArchiveUnavailable

log = logging.getLogger("skinbatch.dicomweb.oauth")

__all__ = ["BearerAuth", "ClientCredentials", "OAuthClient", "TokenFile", "TokenSource"]

BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 30.0


class TokenSource(Protocol):
    fresh: bool
    """True when each token is issued for us on demand: one the archive refuses is the wrong client,
    audience or scope, not an expired token (a configuration error, exit 12)."""

    def token(self) -> str: ...

    def invalidate(self, token: str) -> None: ...


@dataclass(frozen=True)
class OAuthClient:
    """``--dicomweb-token-url``, ``--dicomweb-client-id``, its secret, ``--dicomweb-scope``, ``--dicomweb-audience``."""

    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    scope: str | None = None
    audience: str | None = None


def refresh_delay(lifetime_s: float) -> float:
    """Seconds after issue at which a token that lives ``lifetime_s`` is fetched again: when a fifth of
    its life is left, but never later than 60 s before it expires (pure)."""
    return max(0.0, lifetime_s - min(60.0, lifetime_s / 5))


class ClientCredentials:
    """OAuth2 client-credentials tokens, cached and refreshed; thread-safe (see the module docstring)."""

    fresh = True

    def __init__(self, client: OAuthClient, *, verify: bool | str = True, timeout_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic,
                 fetch: Callable[[], dict[str, Any]] | None = None) -> None:
        self.client = client
        self._verify = verify
        self._timeout_s = timeout_s
        self._clock = clock
        self._fetch = fetch or self._fetch_with_authlib
        self._lock = threading.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0
        self._expires_at = 0.0
        self._retry_at = 0.0
        self._backoff = BACKOFF_START_S
        self.failing_since: float | None = None
        self.on_failure: Callable[[str], None] = lambda reason: None
        """Called on every failed fetch with a reason that holds no secret (a metric counts them)."""
        self.on_state: Callable[[bool], None] = lambda ok: None
        """Called with False when fetching starts to fail and True when it works again."""

    def token(self) -> str:
        with self._lock:
            now = self._clock()
            if self._token is not None and now < self._refresh_at:
                return self._token
            if now < self._retry_at:
                return self._still_valid(now, None)
            try:
                answer = self._fetch()
            except Exception as exc:  # noqa: BLE001 - every failure of the issuer is the same outage to us
                return self._failed(now, _reason(exc))
            self._accept(answer, now)
            assert self._token is not None
            return self._token

    def invalidate(self, token: str) -> None:
        with self._lock:
            if token == self._token:
                self._refresh_at = 0.0
                self._retry_at = 0.0

    def _accept(self, answer: dict[str, Any], now: float) -> None:
        access = answer.get("access_token")
        if not access:
            raise ArchiveUnavailable("the OAuth2 issuer answered without an access_token")
        lifetime = float(answer.get("expires_in") or 300)
        self._token = str(access)
        self._expires_at = now + lifetime
        self._refresh_at = now + refresh_delay(lifetime)
        self._retry_at = 0.0
        self._backoff = BACKOFF_START_S
        if self.failing_since is not None:
            log.info("the OAuth2 issuer gives tokens again", extra={
                "event": "token_refresh_ok", "failed_s": round(now - self.failing_since, 1)})
            self.failing_since = None
            self.on_state(True)

    def _failed(self, now: float, reason: str) -> str:
        self.on_failure(reason)
        if self.failing_since is None:
            self.failing_since = now
            log.warning("fetching an archive token from the OAuth2 issuer failed (%s); retrying with backoff",
                        reason, extra={"event": "token_refresh_failed", "reason": reason,
                                       "token_url": _safe_url(self.client.token_url)})
            self.on_state(False)
        self._retry_at = now + self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)
        return self._still_valid(now, reason)

    def _still_valid(self, now: float, reason: str | None) -> str:
        if self._token is not None and now < self._expires_at:
            return self._token
        why = f" ({reason})" if reason else ""
        raise ArchiveUnavailable(f"no valid token for the archive: the OAuth2 issuer did not give one{why}; "
                                 "retrying with backoff")

    def _fetch_with_authlib(self) -> dict[str, Any]:
        from authlib.integrations.requests_client import OAuth2Session  # type: ignore[import-untyped]

        c = self.client
        with OAuth2Session(c.client_id, c.client_secret, scope=c.scope,
                           token_endpoint_auth_method="client_secret_basic") as session:
            session.verify = self._verify
            extra = {"audience": c.audience} if c.audience else {}
            return dict(session.fetch_token(c.token_url, grant_type="client_credentials",
                                            timeout=self._timeout_s, **extra))


class TokenFile:
    """A bearer token kept in a file that something else rewrites; re-read when it changes."""

    fresh = False

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._seen: tuple[int, int] | None = None
        self._token = ""
        self._lock = threading.Lock()

    def token(self) -> str:
        with self._lock:
            try:
                st = os.stat(self.path)
            except OSError as exc:
                raise ArchiveUnavailable(f"the archive token file cannot be read ({exc.strerror})") from None
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp != self._seen:
                self._token = self.path.read_text().strip()
                self._seen = stamp
            if not self._token:
                raise ArchiveUnavailable("the archive token file is empty")
            return self._token

    def invalidate(self, token: str) -> None:
        with self._lock:
            self._seen = None  # read it again on the next request


class BearerAuth(AuthBase):
    """``Authorization: Bearer <current token>``; one more try with a fresh token after a 401."""

    def __init__(self, source: TokenSource) -> None:
        self.source = source

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        token = self.source.token()
        request.headers["Authorization"] = f"Bearer {token}"
        request.register_hook("response", self._make_retry(token))
        return request

    def _make_retry(self, token: str) -> Callable[..., requests.Response]:
        def retry_once(response: requests.Response, **kwargs: Any) -> requests.Response:
            if response.status_code != 401 or getattr(response.request, "_skinbatch_retried", False):
                return response
            self.source.invalidate(token)
            fresh = self.source.token()
            if fresh == token and not self.source.fresh:
                return response
            response.content  # noqa: B018 - read the body so the connection can be reused
            response.close()
            again = response.request.copy()
            again.headers["Authorization"] = f"Bearer {fresh}"
            again._skinbatch_retried = True  # type: ignore[attr-defined]
            connection = response.connection
            second: requests.Response = connection.send(again, **kwargs)
            second.history.append(response)
            second.request = again
            return second

        return retry_once


def _reason(exc: BaseException) -> str:
    """Why a token fetch failed, without the secret or the token: the HTTP status, or the error's kind."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if status:
        return f"HTTP {status} from the token URL"
    error = getattr(exc, "error", None)  # authlib's OAuthError: 'invalid_client', 'invalid_scope'...
    if isinstance(error, str) and error:
        return f"the issuer answered {error}"
    if isinstance(exc, requests.ConnectionError):
        return "the token URL refused the connection or did not answer"
    if isinstance(exc, requests.Timeout):
        return "the token URL did not answer in time"
    return type(exc).__name__


def _safe_url(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}{parts.path}"
