"""The connection parts every command shares: Kafka (:class:`~skinbatch.connect.kafka.KafkaConnection`)
and Triton (:class:`TritonSettings`), declared once in :mod:`skinbatch.settings` style.

Commands take them with a decorator that folds them into one parameter::

    @click.command()
    @kafka_options()                 # -> kafka: KafkaConnection
    @triton_options()                # -> triton: TritonTarget (endpoint + TLS files)
    def publish(kafka: KafkaConnection, triton: TritonTarget, ...): ...

``skinbatch consume`` takes the whole parts (several Triton URLs, discovery), in its config
(``consumer/config.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from skinbatch.contract import ENSEMBLE, ConfigurationError
from skinbatch.settings import (
    ENV_PREFIX,
    FILE_SUFFIX,
    Setting,
    env_name,
    flag_name,
    part_options,
    read_secret_file,
    secret_option,
    setting,
    settings_of,
)

from .kafka import KafkaConnection
from .triton import ACCEPTED_FORMS, TritonEndpoint, TritonTLS, parse_triton_url, read_admin_key

F = TypeVar("F", bound=Callable[..., Any])
TRITON_DISCOVERY = ("list", "dns")


@dataclass(frozen=True)
class TritonTarget:
    """Where Triton is and the TLS files to reach it with."""

    endpoint: TritonEndpoint
    tls: TritonTLS

    @property
    def url(self) -> str:
        return self.endpoint.url


@dataclass
class TritonSettings:
    """Which Triton server(s), how to reach them, and which ensemble to call."""

    triton_url: str = setting(f"Triton endpoint: {ACCEPTED_FORMS}.")
    triton_ca: str | None = setting("CA bundle that signed Triton's certificate (grpcs://, https://).", None)
    triton_cert: str | None = setting("Client certificate for mutual TLS with Triton.", None)
    triton_key: str | None = setting("Client key for mutual TLS with Triton.", None)
    triton_admin_key: str | None = setting(
        "Value of the `admin-key` header that Triton's restricted APIs (model repository, shared memory, "
        "logging, trace) ask for (docs/deploy.md).", None, secret=True)
    model: str = setting("The ensemble to call.", ENSEMBLE)
    triton_discovery: str = setting(
        "How --triton-url names the Triton servers: list (one URL, or several separated by commas) or dns (the "
        "addresses its host name resolves to, e.g. a headless Service). Requests are spread per server; one "
        "that is down is skipped until it answers again.", "list", type=click.Choice(TRITON_DISCOVERY))
    triton_timeout_s: float = 30.0
    """Timeout of one inference request (not an option)."""

    def targets(self) -> list[TritonTarget]:
        """Every URL of ``--triton-url`` (comma-separated), parsed, with the TLS files checked for each;
        ConfigurationError naming the flag when they do not fit."""
        urls = [url.strip() for url in self.triton_url.split(",") if url.strip()] or [self.triton_url]
        tls = TritonTLS(ca=self.triton_ca, cert=self.triton_cert, key=self.triton_key,
                        admin_key=read_admin_key(self.triton_admin_key, None))
        targets = []
        for url in urls:
            endpoint = parse_triton_url(url)
            tls.check(endpoint)
            targets.append(TritonTarget(endpoint, tls))
        if self.triton_discovery not in TRITON_DISCOVERY:
            raise ConfigurationError(f"--triton-discovery {self.triton_discovery!r}: use list or dns")
        if self.triton_discovery == "dns" and (len(targets) > 1 or targets[0].endpoint.tls):
            raise ConfigurationError("--triton-discovery dns takes one plain grpc:// or http:// URL (the addresses "
                                     "it resolves to cannot match a TLS certificate's name); with TLS, list the "
                                     "servers' names in --triton-url, separated by commas")
        return targets

    def target(self) -> TritonTarget:
        """The one server of a command that talks to one (``triage``, ``status``, ``evaluate``)."""
        targets = self.targets()
        if len(targets) > 1:
            raise ConfigurationError("--triton-url: this command talks to one server; give one URL")
        return targets[0]

    def several(self) -> bool:
        """More than one server, or servers found through DNS: a ScorerPool, not one TritonScorer."""
        return self.triton_discovery == "dns" or "," in self.triton_url.strip().strip(",")


KAFKA_OPTIONS: tuple[Setting, ...] = settings_of(KafkaConnection)
TRITON_CONNECTION = ("triton_url", "triton_ca", "triton_cert", "triton_key", "triton_admin_key")
"""The settings that say where one Triton is (what ``triage``, ``status`` and ``evaluate`` take)."""


def _validated(conn: KafkaConnection) -> KafkaConnection:
    conn.validate()
    return conn


def kafka_options(required: bool = True, help: str | None = None) -> Callable[[F], F]:
    """Add the Kafka options; the command receives ``kafka: KafkaConnection`` (None when not required
    and no ``--bootstrap-servers`` is given)."""
    first = {"help": help} if help else {}
    return part_options(KafkaConnection, "kafka", _validated, required=required, bootstrap_servers=first)


def triton_options(required: bool = True) -> Callable[[F], F]:
    """Add the options of one Triton; the command receives ``triton: TritonTarget``."""
    return part_options(TritonSettings, "triton", TritonSettings.target, required=required, only=TRITON_CONNECTION)


__all__ = ["ENV_PREFIX", "FILE_SUFFIX", "KAFKA_OPTIONS", "TRITON_CONNECTION", "TRITON_DISCOVERY", "TritonSettings",
           "TritonTarget", "env_name", "flag_name", "kafka_options", "read_secret_file", "secret_option",
           "triton_options"]
