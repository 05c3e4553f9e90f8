"""The connection options every command shares: the same flags, help and ``SKINBATCH_*`` variables.

Each option is also an environment variable named ``SKINBATCH_`` + the flag in upper case with ``_``
for ``-`` (``--sasl-password`` is ``SKINBATCH_SASL_PASSWORD``), the same in every command, so one
environment (compose, Kubernetes, a shell profile) serves ``consume``, ``publish``, ``status``,
``triage`` and ``evaluate`` alike. An empty variable counts as unset.

Commands take them with a decorator that folds them into one parameter::

    @click.command()
    @kafka_options()                 # -> kafka: KafkaConnection
    @triton_options()                # -> triton: TritonTarget (endpoint + TLS files)
    def publish(kafka: KafkaConnection, triton: TritonTarget, ...): ...

``skinbatch consume`` keeps its options flat in its own config (every field is a flag), built from the
same :data:`KAFKA_OPTIONS` and :data:`TRITON_OPTIONS`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from skinbatch.contract import ConfigurationError

from .kafka import SASL_MECHANISMS, SECURITY_PROTOCOLS, KafkaConnection
from .triton import ACCEPTED_FORMS, TritonEndpoint, TritonTLS, parse_triton_url, read_admin_key

ENV_PREFIX = "SKINBATCH_"
F = TypeVar("F", bound=Callable[..., Any])


def env_name(name: str) -> str:
    """``sasl_password`` → ``SKINBATCH_SASL_PASSWORD``."""
    return ENV_PREFIX + name.upper()


def _blank_is_unset(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
    return None if value == "" else value


@dataclass(frozen=True)
class OptionSpec:
    """One shared option: its parameter name, help, and click keyword arguments."""

    name: str
    help: str
    kwargs: tuple[tuple[str, Any], ...] = ()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def decorator(self, **overrides: Any) -> Callable[[F], F]:
        kw: dict[str, Any] = {"envvar": env_name(self.name), "show_envvar": True, "help": self.help,
                              **dict(self.kwargs), **overrides}
        decls = [kw.pop("flag", self.flag), self.name]
        if "is_flag" not in kw and kw.get("type") is not bool:
            kw.setdefault("callback", _blank_is_unset)
        return click.option(*decls, **kw)


KAFKA_OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec("bootstrap_servers", "Kafka bootstrap servers, host:port[,host:port]."),
    OptionSpec("security_protocol", f"Kafka security protocol: {', '.join(SECURITY_PROTOCOLS)}.",
               (("default", "PLAINTEXT"), ("show_default", True))),
    OptionSpec("sasl_mechanism", f"SASL mechanism: {', '.join(SASL_MECHANISMS)}."),
    OptionSpec("sasl_username", "SASL user (PLAIN, SCRAM)."),
    OptionSpec("sasl_password", "SASL password (prefer the environment variable)."),
    OptionSpec("sasl_oauth_token_file", "OAUTHBEARER: file with the current token, re-read at each login."),
    OptionSpec("ssl_cafile", "CA bundle that signed the brokers' certificates (SSL, SASL_SSL)."),
    OptionSpec("ssl_certfile", "Client certificate for mutual TLS with the brokers."),
    OptionSpec("ssl_keyfile", "Client key for mutual TLS with the brokers."),
    OptionSpec("ssl_password", "Password of an encrypted --ssl-keyfile (prefer the environment variable)."),
    OptionSpec("ssl_check_hostname", "Check that the broker's certificate names the host connected to.",
               (("flag", "--ssl-check-hostname/--no-ssl-check-hostname"), ("default", True),
                ("show_default", True))),
)
KAFKA_FIELDS = tuple(spec.name for spec in KAFKA_OPTIONS)

TRITON_OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec("triton_url", f"Triton endpoint: {ACCEPTED_FORMS}."),
    OptionSpec("triton_ca", "CA bundle that signed Triton's certificate (grpcs://, https://)."),
    OptionSpec("triton_cert", "Client certificate for mutual TLS with Triton."),
    OptionSpec("triton_key", "Client key for mutual TLS with Triton."),
    OptionSpec("triton_admin_key", "Key of Triton's restricted APIs (header admin-key), sent when registering "
               "shared memory and reading the model repository (prefer --triton-admin-key-file)."),
    OptionSpec("triton_admin_key_file", "File with the key of Triton's restricted APIs (a mounted Secret)."),
)


@dataclass(frozen=True)
class TritonTarget:
    """Where Triton is and the TLS files to reach it with."""

    endpoint: TritonEndpoint
    tls: TritonTLS

    @property
    def url(self) -> str:
        return self.endpoint.url


def kafka_connection(values: dict[str, Any]) -> KafkaConnection:
    """A validated :class:`KafkaConnection` from option values; :class:`click.UsageError` otherwise."""
    fields = {k: values[k] for k in KAFKA_FIELDS if values.get(k) is not None}
    try:
        conn = KafkaConnection(**fields)
        conn.validate()
    except (ConfigurationError, TypeError) as exc:
        raise click.UsageError(str(exc)) from None
    return conn


def triton_target(values: dict[str, Any]) -> TritonTarget:
    """The parsed endpoint and checked TLS files; :class:`click.UsageError` (listing the URL forms) otherwise."""
    try:
        endpoint = parse_triton_url(str(values.get("triton_url") or ""))
        tls = TritonTLS(ca=values.get("triton_ca"), cert=values.get("triton_cert"), key=values.get("triton_key"),
                        admin_key=read_admin_key(values.get("triton_admin_key"), values.get("triton_admin_key_file")))
        tls.check(endpoint)
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from None
    return TritonTarget(endpoint, tls)


def _folded(specs: tuple[OptionSpec, ...], parameter: str, build: Callable[[dict[str, Any]], Any],
            required: bool, first_help: str | None) -> Callable[[F], F]:
    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {spec.name: kwargs.pop(spec.name, None) for spec in specs}
            kwargs[parameter] = build(values) if values[specs[0].name] else None
            return fn(*args, **kwargs)

        decorated: Any = wrapper
        for i, spec in enumerate(reversed(specs)):
            first = i == len(specs) - 1
            overrides: dict[str, Any] = {}
            if first:
                overrides["required"] = required
                if first_help:
                    overrides["help"] = first_help
            decorated = spec.decorator(**overrides)(decorated)
        return decorated

    return decorate


def kafka_options(required: bool = True, help: str | None = None) -> Callable[[F], F]:
    """Add the Kafka options; the command receives ``kafka: KafkaConnection`` (None when not required
    and no ``--bootstrap-servers`` is given)."""
    return _folded(KAFKA_OPTIONS, "kafka", kafka_connection, required, help)


def triton_options(required: bool = True) -> Callable[[F], F]:
    """Add the Triton options; the command receives ``triton: TritonTarget``."""
    return _folded(TRITON_OPTIONS, "triton", triton_target, required, None)


__all__ = ["ENV_PREFIX", "KAFKA_FIELDS", "KAFKA_OPTIONS", "TRITON_OPTIONS", "OptionSpec",
           "TritonTarget", "env_name", "kafka_connection", "kafka_options", "triton_options", "triton_target"]
