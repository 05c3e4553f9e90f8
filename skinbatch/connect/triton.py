"""Triton endpoints: one parser for every command's ``--triton-url``, and Triton's TLS files. Pure.

Accepted forms (docs/deploy.md):

===========================  ===========  =====  ============
form                         protocol     TLS    default port
===========================  ===========  =====  ============
``host[:port]``              gRPC         no     8001
``grpc://host[:port]``       gRPC         no     8001
``grpcs://host[:port]``      gRPC         yes    8001
``http://host[:port][/path]``  HTTP       no     8000
``https://host[:port][/path]`` HTTP       yes    8000
===========================  ===========  =====  ============

An HTTP URL may carry a path, for a Triton behind a reverse proxy under a prefix. Anything else (another
scheme, a user or password, a query, a port out of range) is a usage error that lists these forms.
The metrics endpoint is on the same host, port 8002, over plain HTTP, unless given apart.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from skinbatch.contract import ConfigurationError

Protocol = Literal["grpc", "http"]

GRPC_PORT = 8001
HTTP_PORT = 8000
METRICS_PORT = 8002
ACCEPTED_FORMS = ("host[:port] (gRPC), grpc://host[:port], grpcs://host[:port] (gRPC with TLS), "
                  "http://host[:port][/path], https://host[:port][/path] (HTTP with TLS); "
                  f"the port defaults to {GRPC_PORT} for gRPC and {HTTP_PORT} for HTTP")

_SCHEMES: dict[str, tuple[Protocol, bool]] = {
    "grpc": ("grpc", False),
    "grpcs": ("grpc", True),
    "http": ("http", False),
    "https": ("http", True),
}
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$")


@dataclass(frozen=True)
class TritonEndpoint:
    """Where Triton listens and how to speak to it."""

    protocol: Protocol
    tls: bool
    host: str
    port: int
    path: str = ""
    """HTTP only: a prefix before ``/v2`` (a reverse proxy); empty otherwise."""

    @property
    def scheme(self) -> str:
        return {("grpc", False): "grpc", ("grpc", True): "grpcs",
                ("http", False): "http", ("http", True): "https"}[(self.protocol, self.tls)]

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def address(self) -> str:
        """What tritonclient takes: ``host:port`` (gRPC), ``host:port[/path]`` (HTTP); never a scheme."""
        return self.netloc + self.path

    @property
    def url(self) -> str:
        """The canonical form, for logs and messages."""
        return f"{self.scheme}://{self.address}"

    def metrics_url(self, port: int = METRICS_PORT) -> str:
        """Triton's Prometheus endpoint on the same host (it serves metrics over plain HTTP)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port}/metrics"

    def __str__(self) -> str:
        return self.url


def _usage(text: str, why: str) -> ConfigurationError:
    return ConfigurationError(f"--triton-url {text!r}: {why}. Accepted forms: {ACCEPTED_FORMS}.")


def parse_triton_url(text: str) -> TritonEndpoint:
    """The endpoint a ``--triton-url`` names; :class:`ConfigurationError` (listing the forms) otherwise."""
    raw = (text or "").strip()
    if not raw:
        raise _usage(text, "empty")
    has_scheme = "://" in raw
    parts = urlsplit(raw if has_scheme else "grpc://" + raw)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise _usage(text, f"unknown scheme {scheme + '://'!r}")
    protocol, tls = _SCHEMES[scheme]
    if parts.username or parts.password:
        raise _usage(text, "a user or password does not belong in the URL")
    if parts.query or parts.fragment:
        raise _usage(text, "a query or fragment does not belong in the URL")
    try:
        port = parts.port
    except ValueError:
        raise _usage(text, "the port is not a number from 1 to 65535") from None
    host = parts.hostname or ""
    if not _valid_host(host):
        raise _usage(text, "no valid host name or address")
    path = parts.path.rstrip("/")
    if path and protocol == "grpc":
        raise _usage(text, "a gRPC endpoint has no path")
    if port == 0:
        raise _usage(text, "the port is not a number from 1 to 65535")
    return TritonEndpoint(protocol=protocol, tls=tls, host=host, port=port or _default_port(protocol), path=path)


def _default_port(protocol: Protocol) -> int:
    return GRPC_PORT if protocol == "grpc" else HTTP_PORT


def _valid_host(host: str) -> bool:
    if not host:
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOSTNAME.match(host))


ADMIN_KEY_HEADER = "admin-key"
"""The header Triton's ``--grpc-restricted-protocol``/``--http-restricted-api`` options name (docs/deploy.md)."""
GRPC_HEADER_PREFIX = "triton-grpc-protocol-"
"""Triton's gRPC server looks for restricted-protocol headers under this prefix."""


def read_admin_key(key: str | None, key_file: str | None) -> str | None:
    """The admin key from ``--triton-admin-key-file`` (preferred: a mounted Secret) or
    ``--triton-admin-key``; ConfigurationError for both, or for a file that cannot be read or is empty."""
    if key and key_file:
        raise ConfigurationError("give the Triton admin key once: --triton-admin-key-file or --triton-admin-key")
    if not key_file:
        return key or None
    try:
        value = Path(key_file).read_text().strip()
    except OSError as exc:
        raise ConfigurationError(f"--triton-admin-key-file {key_file!r}: {exc.strerror or exc}") from None
    if not value:
        raise ConfigurationError(f"--triton-admin-key-file {key_file!r} is empty")
    return value


@dataclass(frozen=True)
class TritonTLS:
    """Files for TLS to Triton (``grpcs://`` or ``https://``): the CA that signed the server's
    certificate (the system's CAs when None), and a client certificate and key for mutual TLS."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    admin_key: str | None = field(default=None, repr=False)
    """The value of the ``admin-key`` header that Triton's restricted APIs (model repository, shared
    memory, logging, trace) ask for; sent with those calls only (``--triton-admin-key-file``)."""

    @property
    def given(self) -> bool:
        return any((self.ca, self.cert, self.key))

    def admin_headers(self, protocol: str) -> dict[str, str] | None:
        """Headers for a restricted Triton API call, or None without a key: ``admin-key`` over HTTP;
        over gRPC Triton expects the name with its ``triton-grpc-protocol-`` prefix."""
        if not self.admin_key:
            return None
        name = GRPC_HEADER_PREFIX + ADMIN_KEY_HEADER if protocol == "grpc" else ADMIN_KEY_HEADER
        return {name: self.admin_key}

    def check(self, endpoint: TritonEndpoint) -> None:
        """Refuse files that would be ignored, or that cannot be read: never drop TLS silently."""
        if self.given and not endpoint.tls:
            given = (("ca", self.ca), ("cert", self.cert), ("key", self.key))
            flags = ", ".join(f"--triton-{n}" for n, v in given if v)
            raise ConfigurationError(
                f"{flags} given, but {endpoint.url} is not a TLS endpoint: use "
                f"{'grpcs' if endpoint.protocol == 'grpc' else 'https'}://{endpoint.address}, or drop {flags}")
        if bool(self.cert) != bool(self.key):
            raise ConfigurationError("--triton-cert and --triton-key go together (mutual TLS needs both)")
        for flag, value in (("--triton-ca", self.ca), ("--triton-cert", self.cert), ("--triton-key", self.key)):
            if value and not Path(value).is_file():
                raise ConfigurationError(f"{flag} {value!r}: no such file")

    def grpc_kwargs(self, endpoint: TritonEndpoint) -> dict[str, object]:
        """Keyword arguments of ``tritonclient.grpc.InferenceServerClient``."""
        if not endpoint.tls:
            return {}
        return {"ssl": True, "root_certificates": self.ca, "private_key": self.key, "certificate_chain": self.cert}

    def ssl_context(self) -> ssl.SSLContext:
        """For HTTPS: verifies the server against ``ca`` (or the system's CAs), presents the client pair."""
        context = ssl.create_default_context(cafile=self.ca)
        if self.cert and self.key:
            context.load_cert_chain(self.cert, self.key)
        return context


__all__ = ["ACCEPTED_FORMS", "ADMIN_KEY_HEADER", "GRPC_PORT", "HTTP_PORT", "METRICS_PORT", "TritonEndpoint",
           "TritonTLS", "parse_triton_url", "read_admin_key"]
