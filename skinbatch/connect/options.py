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

Secrets (``OptionSpec(..., secret=True)``, or :func:`secret_option` for a command's own options) also
come from a file: ``--sasl-password-file`` / ``SKINBATCH_SASL_PASSWORD_FILE`` names a file whose content
(less one trailing newline) is the password, read once when the options are parsed. That is how compose
``secrets:`` and Kubernetes Secret volumes hand them over, so that no secret shows in ``ps`` or in
the process environment. A secret given as a command-line flag still works, with a warning that
names the variable and the file option to use instead.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from skinbatch.contract import ConfigurationError

from .kafka import SASL_MECHANISMS, SECURITY_PROTOCOLS, KafkaConnection
from .triton import ACCEPTED_FORMS, TritonEndpoint, TritonTLS, parse_triton_url, read_admin_key

ENV_PREFIX = "SKINBATCH_"
F = TypeVar("F", bound=Callable[..., Any])
FILE_SUFFIX = "_file"
_SECRET_FILES = "skinbatch.secret_files"
log = logging.getLogger("skinbatch.secrets")


def env_name(name: str) -> str:
    """``sasl_password`` → ``SKINBATCH_SASL_PASSWORD``."""
    return ENV_PREFIX + name.upper()


def _blank_is_unset(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
    return None if value == "" else value


def flag_name(name: str) -> str:
    """``sasl_password`` → ``--sasl-password``."""
    return "--" + name.replace("_", "-")


# -- secrets from files ---------------------------------------------------------------------------------

def read_secret_file(path: str, name: str) -> str:
    """The secret in ``path`` (one trailing newline dropped: ``echo`` and most editors add one);
    :class:`click.UsageError` saying what to fix when it cannot be read or is empty."""
    flag = flag_name(name + FILE_SUFFIX)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise click.UsageError(
            f"{flag} {path}: cannot read it ({exc.strerror or exc}). Mount the secret there (compose "
            f"`secrets:`, a Kubernetes Secret volume) or unset {env_name(name + FILE_SUFFIX)}") from None
    except UnicodeDecodeError:
        raise click.UsageError(f"{flag} {path}: not UTF-8 text; put the secret itself in the file") from None
    secret = text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text
    if not secret:
        raise click.UsageError(f"{flag} {path}: the file is empty; write the secret into it")
    return secret


def _both(name: str) -> click.UsageError:
    return click.UsageError(f"give {flag_name(name)} or {flag_name(name + FILE_SUFFIX)}, not both "
                            f"(check {env_name(name)} and {env_name(name + FILE_SUFFIX)})")


def _secret_value(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """The secret option's callback: a warning when it came on the command line; the file's content
    when ``--<name>-file`` was processed first (click processes options in command-line order)."""
    value = _blank_is_unset(ctx, param, value)
    name = param.name or ""
    if value is not None and ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE:
        log.warning("%s was given on the command line, where `ps` and shell history show it; put it in a file "
                    "named by %s or %s (or set %s) instead", flag_name(name), flag_name(name + FILE_SUFFIX),
                    env_name(name + FILE_SUFFIX), env_name(name), extra={"event": "secret_on_command_line"})
    from_file = ctx.meta.get(_SECRET_FILES, {}).get(name)
    if from_file is not None:
        if value is not None:
            raise _both(name)
        return from_file
    return value


def warn_on_command_line(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """For a secret whose file variant is an option of its own (``--dicomweb-token-file``, re-read when
    it changes): the same warning as a secret option's when it came on the command line."""
    return _secret_value(ctx, param, value)


def _secret_file(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """The file option's callback: reads the file and hands its content to the secret option."""
    if value in (None, ""):
        return
    name = (param.name or "")[: -len(FILE_SUFFIX)]
    secret = read_secret_file(str(value), name)
    ctx.meta.setdefault(_SECRET_FILES, {})[name] = secret
    if name in ctx.params:  # the secret option came first
        if ctx.params[name] is not None:
            raise _both(name)
        ctx.params[name] = secret


def secret_option(name: str, help: str, flag: str | None = None, **kw: Any) -> Callable[[F], F]:
    """A secret option ``--name`` (``SKINBATCH_NAME``) with its file variant ``--name-file``
    (``SKINBATCH_NAME_FILE``); the command receives only ``name``, read from the file when one is given."""
    file_name = name + FILE_SUFFIX
    value_kw = {"envvar": env_name(name), "show_envvar": True, "default": None, **kw,
                "help": f"{help} Prefer {flag_name(file_name)}: a flag shows in `ps`.",
                "callback": _secret_value}
    file_option = click.option(
        flag_name(file_name), file_name, envvar=env_name(file_name), show_envvar=True, default=None,
        expose_value=False, callback=_secret_file, type=click.Path(dir_okay=False),
        help=f"File whose content is {flag or flag_name(name)} (a mounted secret), read at start-up.")
    value_option = click.option(flag or flag_name(name), name, **value_kw)

    def decorate(fn: F) -> F:
        return value_option(file_option(fn))

    return decorate


# -- the shared options -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class OptionSpec:
    """One shared option: its parameter name, help, and click keyword arguments. ``secret``: also
    ``--<name>-file`` / ``SKINBATCH_<NAME>_FILE``, and a warning when given on the command line."""

    name: str
    help: str
    kwargs: tuple[tuple[str, Any], ...] = ()
    secret: bool = False

    @property
    def flag(self) -> str:
        return flag_name(self.name)

    def decorator(self, **overrides: Any) -> Callable[[F], F]:
        if self.secret:
            return secret_option(self.name, overrides.pop("help", self.help), **{**dict(self.kwargs), **overrides})
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
    OptionSpec("sasl_password", "SASL password.", secret=True),
    OptionSpec("sasl_oauth_token_file", "OAUTHBEARER: file with the current token, re-read at each login."),
    OptionSpec("ssl_cafile", "CA bundle that signed the brokers' certificates (SSL, SASL_SSL)."),
    OptionSpec("ssl_certfile", "Client certificate for mutual TLS with the brokers."),
    OptionSpec("ssl_keyfile", "Client key for mutual TLS with the brokers."),
    OptionSpec("ssl_password", "Password of an encrypted --ssl-keyfile.", secret=True),
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
    OptionSpec("triton_admin_key", "Value of the `admin-key` header that Triton's restricted APIs (model "
               "repository, shared memory, logging, trace) ask for (docs/deploy.md).", secret=True),
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
                        admin_key=read_admin_key(values.get("triton_admin_key"), None))
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


__all__ = ["ENV_PREFIX", "FILE_SUFFIX", "KAFKA_FIELDS", "KAFKA_OPTIONS", "TRITON_OPTIONS", "OptionSpec",
           "TritonTarget", "env_name", "flag_name", "kafka_connection", "kafka_options", "read_secret_file",
           "secret_option", "triton_options", "triton_target"]
