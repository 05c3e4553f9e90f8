"""Kafka connections: the security settings every command shares, the compression codecs, and a
start-up probe that says *why* a broker cannot be used.

kafka-python retries a failed bootstrap quietly and, when it gives up, reports only "Unable to
bootstrap" whatever happened: a refused connection, a certificate it does not trust, or a wrong
password. :func:`probe_kafka` tells these apart within a deadline (30 s at most), so that a command
fails once, clearly, instead of reconnecting silently forever:

1. a TCP connection to each bootstrap server (``refused`` or ``timeout``);
2. with SSL or SASL_SSL, a TLS handshake with the same CA, client certificate and hostname check that
   kafka-python will use (``tls``);
3. a metadata request through kafka-python itself, which performs the SASL exchange (``auth``).
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from skinbatch.contract import ConfigurationError, KafkaProblem
from skinbatch.settings import lone, setting

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
COMPRESSION_TYPES = ("none", "gzip", "snappy", "lz4", "zstd")
COMPRESSION_TYPE = lone("compression_type", "Codec of the records this command produces.",
                        type=click.Choice(COMPRESSION_TYPES))
"""One concept in every command that produces records (``consume``: results; ``publish``: requests);
each command says its own default."""
PROBE_TIMEOUT_S = 25.0
"""Under the 30 s within which a misconfigured connection must be reported."""

CODECS: dict[str, str] = {"gzip": "the standard library's gzip", "snappy": "python-snappy", "lz4": "lz4",
                          "zstd": "zstandard"}
"""Codec → the package kafka-python needs to read it (its extras ``lz4``, ``zstd``, ``snappy``)."""


@dataclass(frozen=True)
class KafkaConnection:
    """Where the brokers are and how to authenticate: the same fields, flags and ``SKINBATCH_*``
    variables in every command (docs/deploy.md)."""

    bootstrap_servers: str = setting("Kafka bootstrap servers, host:port[,host:port].")
    security_protocol: str = setting(f"Kafka security protocol: {', '.join(SECURITY_PROTOCOLS)}.", "PLAINTEXT")
    sasl_mechanism: str | None = setting(f"SASL mechanism: {', '.join(SASL_MECHANISMS)}.", None)
    sasl_username: str | None = setting("SASL user (PLAIN, SCRAM).", None)
    sasl_password: str | None = setting("SASL password.", None, secret=True)
    sasl_oauth_token_file: str | None = setting("OAUTHBEARER: file with the current token, re-read at each login "
                                                "(a sidecar or the platform refreshes it).", None)
    ssl_cafile: str | None = setting("CA bundle that signed the brokers' certificates (SSL, SASL_SSL).", None)
    ssl_certfile: str | None = setting("Client certificate for mutual TLS with the brokers.", None)
    ssl_keyfile: str | None = setting("Client key for mutual TLS with the brokers.", None)
    ssl_password: str | None = setting("Password of an encrypted --ssl-keyfile.", None, secret=True)
    ssl_check_hostname: bool = setting("Check that the broker's certificate names the host connected to.", True,
                                       flag="--ssl-check-hostname/--no-ssl-check-hostname")

    @property
    def servers(self) -> list[str]:
        return [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()]

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def validate(self, check_files: bool = True) -> None:
        """Settings that cannot work, refused before any connection (a usage error). ``check_files``:
        also that the TLS and token files exist (off for checking a manifest on another machine)."""
        if not self.servers:
            raise ConfigurationError("--bootstrap-servers is empty: give host:port[,host:port]")
        for server in self.servers:
            _split_server(server)
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise ConfigurationError(f"--security-protocol {self.security_protocol!r}: use one of "
                                     f"{', '.join(SECURITY_PROTOCOLS)}")
        if self.uses_sasl:
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise ConfigurationError(f"--security-protocol {self.security_protocol} needs --sasl-mechanism, one of "
                                         f"{', '.join(SASL_MECHANISMS)}")
            if self.sasl_mechanism == "OAUTHBEARER":
                if not self.sasl_oauth_token_file:
                    raise ConfigurationError("--sasl-mechanism OAUTHBEARER needs --sasl-oauth-token-file")
            elif not (self.sasl_username and self.sasl_password):
                raise ConfigurationError(f"--sasl-mechanism {self.sasl_mechanism} needs --sasl-username and "
                                         "--sasl-password (prefer the SKINBATCH_SASL_PASSWORD variable)")
        elif self.sasl_mechanism or self.sasl_username:
            raise ConfigurationError(f"SASL settings given, but --security-protocol is {self.security_protocol}: "
                                     "use SASL_PLAINTEXT or SASL_SSL, or drop them")
        tls_files = [(flag, v) for flag, v in (("--ssl-cafile", self.ssl_cafile), ("--ssl-certfile", self.ssl_certfile),
                                               ("--ssl-keyfile", self.ssl_keyfile)) if v]
        if tls_files and not self.uses_tls:
            raise ConfigurationError(f"{', '.join(f for f, _ in tls_files)} given, but --security-protocol is "
                                     f"{self.security_protocol}: use SSL or SASL_SSL, or drop them")
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ConfigurationError("--ssl-certfile and --ssl-keyfile go together (mutual TLS needs both)")
        for flag, value in [*tls_files, ("--sasl-oauth-token-file", self.sasl_oauth_token_file)]:
            if check_files and value and not Path(value).is_file():
                raise ConfigurationError(f"{flag} {value!r}: no such file")

    def client_kwargs(self) -> dict[str, Any]:
        """kafka-python keyword arguments (for KafkaConsumer, KafkaProducer and KafkaAdminClient)."""
        kw: dict[str, Any] = {"bootstrap_servers": self.servers, "security_protocol": self.security_protocol}
        if self.uses_sasl:
            kw["sasl_mechanism"] = self.sasl_mechanism
            if self.sasl_mechanism == "OAUTHBEARER":
                kw["sasl_oauth_token_provider"] = FileTokenProvider(str(self.sasl_oauth_token_file))
            else:
                kw["sasl_plain_username"] = self.sasl_username
                kw["sasl_plain_password"] = self.sasl_password
        if self.uses_tls:
            kw["ssl_check_hostname"] = self.ssl_check_hostname
            for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password"):
                if getattr(self, key):
                    kw[key] = getattr(self, key)
        return kw

    def describe(self) -> str:
        """For logs: where and how, never a secret."""
        how = self.security_protocol + (f"/{self.sasl_mechanism}" if self.uses_sasl else "")
        return f"{self.bootstrap_servers} ({how})"


try:  # kafka-python 3.0 keeps it here; 2.x had kafka.sasl.oauth
    from kafka.net.sasl.oauth import AbstractTokenProvider
except ImportError:  # pragma: no cover
    from kafka.sasl.oauth import AbstractTokenProvider


class FileTokenProvider(AbstractTokenProvider):
    """An OAUTHBEARER token provider for kafka-python that reads the token from a file every time."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def token(self) -> str:
        return Path(self.path).read_text(encoding="utf-8").strip()

    def extensions(self) -> dict[str, str]:
        return {}


# -- codecs -----------------------------------------------------------------------------------------


def check_codecs() -> None:
    """Compress and decompress a sample with every codec a producer may use; :class:`KafkaProblem`
    (kind ``codec``) naming the missing package otherwise. Run at start-up: a codec found missing
    only at ``poll()`` would stop the consumer on the first such batch."""
    from kafka import codec

    sample = b"skinbatch codec check " * 64
    trials: dict[str, tuple[Callable[[], bool], Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {
        "gzip": (codec.has_gzip, codec.gzip_encode, codec.gzip_decode),
        "snappy": (codec.has_snappy, codec.snappy_encode, codec.snappy_decode),
        "lz4": (codec.has_lz4, codec.lz4_encode, codec.lz4_decode),
        "zstd": (codec.has_zstd, codec.zstd_encode, codec.zstd_decode),
    }
    missing = []
    for name, (available, encode, decode) in trials.items():
        try:
            if not available() or decode(encode(sample)) != sample:
                missing.append(name)
        except Exception:  # noqa: BLE001 - a codec that raises is as missing as one that is absent
            missing.append(name)
    if missing:
        packages = ", ".join(f"{name} ({CODECS[name]})" for name in missing)
        raise KafkaProblem(
            f"this install cannot read Kafka records compressed with {packages}. Producers and topics may use "
            "any codec: install skinbatch with its dependencies (pip install skinbatch, or "
            "'kafka-python[lz4,zstd,snappy]')", kind="codec")


def codec_problem(exc: BaseException) -> KafkaProblem:
    """The one-line reason for an ``UnsupportedCodecError`` raised by ``poll()``."""
    return KafkaProblem(
        f"a record batch uses a compression codec this install cannot decode ({exc}). Install the "
        "package it names (kafka-python's extras lz4, zstd, snappy) and restart; nothing past it was "
        "committed or dead-lettered", kind="codec")


# -- the probe --------------------------------------------------------------------------------------


def _split_server(server: str) -> tuple[str, int]:
    host, sep, port = server.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigurationError(f"--bootstrap-servers: {server!r} is not host:port")
    return host.strip("[]"), int(port)


def _tls_context(conn: KafkaConnection) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=conn.ssl_cafile)
    context.check_hostname = conn.ssl_check_hostname
    if conn.ssl_certfile and conn.ssl_keyfile:
        context.load_cert_chain(conn.ssl_certfile, conn.ssl_keyfile, password=conn.ssl_password)
    return context


def _transport(conn: KafkaConnection, host: str, port: int, timeout_s: float) -> None:
    """Steps 1 and 2 for one server; :class:`KafkaProblem` on failure."""
    where = f"{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=max(0.5, timeout_s))
    except ConnectionRefusedError:
        raise KafkaProblem(f"Kafka at {where} refused the connection: is the broker running, and is this its "
                           "client listener? Check --bootstrap-servers", kind="refused") from None
    except TimeoutError:
        raise KafkaProblem(f"Kafka at {where} did not answer within {timeout_s:.0f} s: check --bootstrap-servers "
                           "and the network path (firewall, DNS)", kind="timeout") from None
    except OSError as exc:
        raise KafkaProblem(f"cannot connect to Kafka at {where}: {exc.strerror or exc}. Check --bootstrap-servers",
                           kind="refused") from None
    with sock:
        if not conn.uses_tls:
            return
        try:
            with _tls_context(conn).wrap_socket(sock, server_hostname=host):
                return
        except ssl.SSLCertVerificationError as exc:
            raise KafkaProblem(
                f"Kafka at {where} presented a certificate this client does not trust ({exc.verify_message}). "
                "Give the CA that signed it with --ssl-cafile" + (
                    ", or check that the certificate names this host (--no-ssl-check-hostname only for tests)"
                    if "match" in str(exc.verify_message) or "mismatch" in str(exc) else ""), kind="tls") from None
        except (ssl.SSLError, ConnectionResetError, TimeoutError) as exc:
            raise KafkaProblem(
                f"the TLS handshake with Kafka at {where} failed ({exc}): does this listener speak TLS "
                f"(--security-protocol {conn.security_protocol})? A client certificate it requires?",
                kind="tls") from None


class _Capture(logging.Handler):
    """Keeps kafka-python's last connection-failure message: its only trace of a refused SASL login."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.append(record.getMessage())
        except Exception:  # noqa: BLE001 - a log line we cannot format is not worth failing for
            pass


@contextmanager
def _capturing(logger_name: str = "kafka") -> Iterator[_Capture]:
    handler = _Capture()
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def _classify_client_failure(conn: KafkaConnection, messages: list[str], exc: BaseException) -> KafkaProblem:
    text = " | ".join(messages[-20:])
    if "SaslAuthenticationFailed" in text or "Authentication failed" in text:
        return KafkaProblem(
            f"Kafka at {conn.bootstrap_servers} refused the credentials ({conn.sasl_mechanism} as "
            f"{conn.sasl_username or 'the token holder'!r}). Check --sasl-username and --sasl-password "
            "(SKINBATCH_SASL_PASSWORD) and --sasl-mechanism", kind="auth")
    if "UnsupportedSaslMechanism" in text or "IllegalSaslState" in text:
        return KafkaProblem(f"Kafka at {conn.bootstrap_servers} does not accept SASL mechanism {conn.sasl_mechanism}: "
                            "check --sasl-mechanism against the listener's sasl.enabled.mechanisms", kind="auth")
    if "CERTIFICATE_VERIFY_FAILED" in text or "Handshake failed" in text:
        return KafkaProblem(f"the TLS handshake with Kafka at {conn.bootstrap_servers} failed: check --ssl-cafile and "
                            "the client certificate", kind="tls")
    hint = ("; the broker closed the connection: does this listener expect TLS or SASL "
            "(--security-protocol)?" if "disconnected" in text else "")
    return KafkaProblem(f"Kafka at {conn.bootstrap_servers} did not complete the handshake ({type(exc).__name__}"
                        f"{hint})", kind="timeout")


def probe_kafka(conn: KafkaConnection, timeout_s: float = PROBE_TIMEOUT_S,
                client_factory: Callable[..., Any] | None = None) -> None:
    """Raise :class:`KafkaProblem` (kind ``refused``, ``timeout``, ``tls`` or ``auth``) unless a broker
    answers a metadata request with these settings within ``timeout_s``. One server that works is enough."""
    conn.validate()
    deadline = time.monotonic() + timeout_s
    first: KafkaProblem | None = None
    for server in conn.servers:
        host, port = _split_server(server)
        try:
            _transport(conn, host, port, max(1.0, min(10.0, deadline - time.monotonic())))
            break
        except KafkaProblem as exc:
            first = first or exc
    else:
        assert first is not None
        raise first
    _metadata(conn, deadline, client_factory)


def _metadata(conn: KafkaConnection, deadline: float, client_factory: Callable[..., Any] | None) -> None:
    """Step 3, in attempts of a few seconds: refused credentials end it at once, other failures are
    retried until the deadline (a broker that is still starting also drops connections)."""
    from kafka import KafkaAdminClient

    factory = client_factory or KafkaAdminClient
    while True:
        left_ms = int((deadline - time.monotonic()) * 1000)
        attempt_ms = max(1000, min(5000, left_ms))
        with _capturing() as captured:
            client = None
            try:
                client = factory(client_id="skinbatch-probe", request_timeout_ms=attempt_ms,
                                 bootstrap_timeout_ms=attempt_ms, **conn.client_kwargs())
                client.list_topics()
                return
            except Exception as exc:  # noqa: BLE001 - classified below; the captured log says why
                problem = _classify_client_failure(conn, captured.messages, exc)
            finally:
                if client is not None:
                    client.close()
        if problem.kind in ("auth", "tls") or time.monotonic() + 1 >= deadline:
            raise problem


__all__ = ["CODECS", "COMPRESSION_TYPE", "COMPRESSION_TYPES", "SASL_MECHANISMS", "SECURITY_PROTOCOLS",
           "FileTokenProvider",
           "KafkaConnection", "check_codecs", "codec_problem", "probe_kafka"]
