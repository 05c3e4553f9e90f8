"""One home for every setting: each option is declared once, with its flag, variable, default, help and
the concept it sets, and every command's flags, ``SKINBATCH_*`` variables and ``--help`` come from here.

Two kinds of declaration:

* **Parts**: typed dataclasses whose fields are settings (:func:`setting`), e.g.
  :class:`~skinbatch.connect.kafka.KafkaConnection`, :class:`~skinbatch.connect.options.TritonSettings`,
  :class:`~skinbatch.dicomweb.options.ArchiveSettings`, :class:`Topics`,
  :class:`PipelineSettings`, :class:`MetricsSettings`. A command takes a
  part whole (``@part_options(Topics)``, folded into one parameter) or some of its fields, flat.
  ``skinbatch consume`` is the composition of them all (``consumer/config.py``).
* **Lone settings** that several commands share without a part: :data:`JSON`, :data:`OUT_DIR`,
  :data:`REPOSITORY`, :data:`LOG_LEVEL`... (``@JSON.option(help=...)``).

Each option is also an environment variable, ``SKINBATCH_`` + the flag in upper case with ``_`` for
``-`` (``--sasl-password`` is ``SKINBATCH_SASL_PASSWORD``), the same in every command. An empty
variable counts as unset.

**One meaning per name.** A setting's *concept* is ``<part>.<field>`` (or the lone setting's name): the
same flag in two commands is the same declaration, so it cannot mean two things, and
``tests/unit/test_settings.py`` walks every command and fails when one name sets two concepts or one
concept has two names. A renamed option keeps its old spelling (flag, and variable where it had one)
as a hidden :class:`Alias` for one release: it still works, and logs a warning naming the new one.

**Secrets** (``setting(..., secret=True)``, or :func:`secret_option`) also come from a file:
``--sasl-password-file`` / ``SKINBATCH_SASL_PASSWORD_FILE`` names a file whose content (less one
trailing newline) is the password, read once when the options are parsed. That is how compose
``secrets:`` and Kubernetes Secret volumes hand them over, so that no secret shows in ``ps`` or in the
process environment. A secret given as a command-line flag still works, with a warning.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from skinbatch.contract import DEAD_LETTER_TOPIC, REQUEST_TOPIC, RESULT_TOPIC, ConfigurationError

ENV_PREFIX = "SKINBATCH_"
FILE_SUFFIX = "_file"
F = TypeVar("F", bound=Callable[..., Any])
P = TypeVar("P")
_SECRET_FILES = "skinbatch.secret_files"
_ALIASED = "skinbatch.aliased"
_SETTING = "skinbatch.setting"
log = logging.getLogger("skinbatch.settings")
secrets_log = logging.getLogger("skinbatch.secrets")


def env_name(name: str) -> str:
    """``sasl_password`` → ``SKINBATCH_SASL_PASSWORD``."""
    return ENV_PREFIX + name.upper()


def flag_name(name: str) -> str:
    """``sasl_password`` → ``--sasl-password``."""
    return "--" + name.replace("_", "-")


def _blank_is_unset(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
    return None if value == "" else value


# -- the declaration ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Alias:
    """An old spelling of a setting, kept hidden for one release. ``convert`` turns the old value into
    the new one (``--max-file-mb`` was megabytes, ``--max-image-bytes`` is bytes)."""

    flag: str
    envvar: str | None = None
    convert: Callable[[Any], Any] | None = None
    type: Any = None


@dataclass(frozen=True)
class Setting:
    """One option: parameter name, help, default, click keyword arguments, and the concept it sets."""

    name: str
    help: str
    default: Any = None
    default_factory: Callable[[], Any] | None = None
    show_default: bool | str | None = None
    flag: str | None = None
    """The flag when it is not ``--<name>`` (``--x/--no-x`` switches)."""
    secret: bool = False
    aliases: tuple[Alias, ...] = ()
    concept: str = ""
    click: tuple[tuple[str, Any], ...] = ()
    """Other click keyword arguments: ``type``, ``is_flag``, ``callback``..."""
    env: bool = True
    """Also an environment variable (off for what a run prints or writes: ``--json``, ``--out``)."""

    @property
    def primary_flag(self) -> str:
        return (self.flag or flag_name(self.name)).split("/")[0]

    @property
    def envvar(self) -> str | None:
        """``SKINBATCH_`` + the flag: ``--sasl-password`` → ``SKINBATCH_SASL_PASSWORD``."""
        return env_name(self.primary_flag[2:].replace("-", "_")) if self.env else None

    def field(self, default: Any = MISSING) -> Any:
        """This lone setting as a field of a part (the concept stays the setting's); ``default``: the
        part's own default, shown in the ``--help`` of the commands that take the part."""
        meta = self if default is MISSING else dataclasses.replace(self, default=default)
        return field(default=meta.default, metadata={_SETTING: meta})

    def option(self, **overrides: Any) -> Callable[[F], F]:
        """The click option(s): the flag, its ``-file`` variant for a secret, hidden aliases. ``overrides``:
        a command's own ``help``, ``default``, ``required``, and ``aliases``: the old spellings this command
        had (the concept and the current names never change)."""
        kw: dict[str, Any] = dict(self.click)
        if self.default_factory is not None:
            kw["default"] = self.default_factory
        elif self.default is not None:
            kw["default"] = self.default
        if self.show_default is not None:
            kw["show_default"] = self.show_default
        elif kw.get("default") is not None and not kw.get("is_flag"):
            kw["show_default"] = True
        aliases = overrides.pop("aliases", self.aliases)
        kw.update(overrides)
        help_text = kw.pop("help", self.help)
        if self.secret:
            main = secret_option(self.name, help_text, concept=self.concept, **kw)
        else:
            kw.setdefault("callback", _blank_is_unset if "is_flag" not in kw and kw.get("type") is not bool
                          else None)
            callback = kw.pop("callback")
            if aliases:
                callback = _with_alias(callback)
            main = click.option(self.flag or flag_name(self.name), self.name, cls=SettingOption,
                                concept=self.concept, envvar=self.envvar, show_envvar=self.env, help=help_text,
                                callback=callback, **kw)
        decorators = [main] + [_alias_option(self, alias, kw.get("type")) for alias in aliases]

        def decorate(fn: F) -> F:
            for decorator in reversed(decorators):
                fn = decorator(fn)
            return fn

        return decorate


class SettingOption(click.Option):
    """A click option that knows the concept it sets (``tests/unit/test_settings.py`` reads it)."""

    def __init__(self, *args: Any, concept: str = "", alias_of: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.concept = concept
        self.alias_of = alias_of


def setting(help: str, default: Any = MISSING, *, default_factory: Callable[[], Any] | None = None,
            flag: str | None = None, secret: bool = False, aliases: tuple[Alias, ...] = (),
            show_default: bool | str | None = None, repr: bool = True, **click_kw: Any) -> Any:
    """A field of a part that is also an option (name, concept and variable come from the field)."""
    meta = Setting("", help, None if default is MISSING else default, default_factory, show_default, flag,
                   secret, aliases, "", tuple(click_kw.items()))
    kw: dict[str, Any] = {"metadata": {_SETTING: meta}, "repr": repr and not secret}
    if default_factory is not None:
        kw["default_factory"] = default_factory
    elif default is not MISSING:
        kw["default"] = default
    return field(**kw)


def lone(name: str, help: str, default: Any = None, **kw: Any) -> Setting:
    """A setting several commands share without a part (``--json``, ``--out``); its concept is its name."""
    aliases = kw.pop("aliases", ())
    flag = kw.pop("flag", None)
    show_default = kw.pop("show_default", None)
    env = kw.pop("env", True)
    return Setting(name, help, default, kw.pop("default_factory", None), show_default, flag, False, aliases,
                   name, tuple(kw.items()), env)


@functools.cache
def settings_of(part: type) -> tuple[Setting, ...]:
    """The settings of a part, in field order, each named after its field, concept ``<part>.<field>``."""
    found = []
    for f in dataclasses.fields(part):
        meta = f.metadata.get(_SETTING)
        if meta is not None:
            found.append(dataclasses.replace(meta, name=f.name, concept=meta.concept or f"{part.__name__}.{f.name}"))
    return tuple(found)


def part_names(part: type) -> tuple[str, ...]:
    """Every field of a part (settings and plain fields alike)."""
    return tuple(f.name for f in dataclasses.fields(part))


# -- commands take parts ---------------------------------------------------------------------------------------

def options(part: type, only: tuple[str, ...] | None = None, exclude: tuple[str, ...] = (),
            per_field: Mapping[str, Mapping[str, Any]] | None = None,
            **overrides: Mapping[str, Any]) -> Callable[[F], F]:
    """A part's options, flat (the command receives each field as a parameter). ``overrides`` (or
    ``per_field``): per field, the command's own ``help``/``default``/``required``/``aliases``."""
    overrides = {**(per_field or {}), **overrides}
    specs = [s for s in settings_of(part) if (only is None or s.name in only) and s.name not in exclude]
    if only is not None:
        unknown = set(only) - {s.name for s in specs}
        if unknown:
            raise KeyError(f"{part.__name__} has no settings {sorted(unknown)}")

    def decorate(fn: F) -> F:
        for spec in reversed(specs):
            fn = spec.option(**dict(overrides.get(spec.name, {})))(fn)
        return fn

    return decorate


def part_options(part: type[P], parameter: str, build: Callable[[P], Any] | None = None, *,
                 required: bool = True, only: tuple[str, ...] | None = None, exclude: tuple[str, ...] = (),
                 **overrides: Mapping[str, Any]) -> Callable[[F], F]:
    """A part's options folded into one parameter: ``build(part)`` (the part itself by default), or
    None when the first setting (the part's address) is not given and ``required`` is off.
    ConfigurationError from the part or ``build`` becomes a usage error (exit 2)."""
    specs = [s for s in settings_of(cast(type, part)) if (only is None or s.name in only) and s.name not in exclude]
    first = specs[0].name
    first_overrides = {**overrides.get(first, {}), "required": required}

    def fold(values: dict[str, Any]) -> Any:
        if not values.get(first):
            return None
        try:
            made = part(**{k: v for k, v in values.items() if v is not None})
            return build(made) if build is not None else made
        except ConfigurationError as exc:
            raise click.UsageError(str(exc)) from None

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs[parameter] = fold({spec.name: kwargs.pop(spec.name, None) for spec in specs})
            return fn(*args, **kwargs)

        decorated: Any = wrapper
        for spec in reversed(specs):
            extra = first_overrides if spec.name == first else overrides.get(spec.name, {})
            decorated = spec.option(**dict(extra))(decorated)
        return decorated

    return decorate


def split_values(values: Mapping[str, Any], parts: Mapping[str, type]) -> dict[str, dict[str, Any]]:
    """Flat values (``bootstrap_servers=...``) sorted into their parts by field name; TypeError naming a
    name no part has. None values are left out, so that the parts' defaults apply."""
    owner = {name: key for key, part in parts.items() for name in part_names(part)}
    out: dict[str, dict[str, Any]] = {key: {} for key in parts}
    for name, value in values.items():
        if name not in owner:
            raise TypeError(f"no setting named {name!r}")
        if value is not None:
            out[owner[name]][name] = value
    return out


# -- hidden aliases of renamed options ------------------------------------------------------------------------

def _alias_option(spec: Setting, alias: Alias, main_type: Any) -> Callable[[F], F]:
    dest = "_alias_" + alias.flag.lstrip("-").replace("-", "_") + "_" + spec.name
    kw: dict[str, Any] = {"hidden": True, "expose_value": False, "default": None, "cls": SettingOption,
                          "concept": spec.concept, "alias_of": spec.primary_flag,
                          "callback": functools.partial(_alias_given, spec, alias)}
    if alias.envvar:
        kw["envvar"] = alias.envvar
    if dict(spec.click).get("is_flag"):
        kw["is_flag"] = True
        kw["default"] = None
    else:
        kw["type"] = alias.type or main_type
    return click.option(alias.flag, dest, **kw)


def _alias_given(spec: Setting, alias: Alias, ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if value is None or value == "" or value is False:
        return
    source = ctx.get_parameter_source(param.name or "")
    where = (alias.envvar or alias.flag) if source is click.core.ParameterSource.ENVIRONMENT else alias.flag
    also = f" (variable {spec.envvar})" if spec.envvar else ""
    log.warning("%s is deprecated and will be removed in the next release: use %s%s", where, spec.primary_flag,
                also, extra={"event": "deprecated_option"})
    new = alias.convert(value) if alias.convert else value
    ctx.meta.setdefault(_ALIASED, {})[spec.name] = (where, new)
    if spec.name in ctx.params:  # the new option was processed first
        _check_both(ctx, spec.name, where)
        ctx.params[spec.name] = new


def _with_alias(callback: Callable[..., Any] | None) -> Callable[..., Any]:
    def given(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        value = callback(ctx, param, value) if callback else value
        name = param.name or ""
        aliased = ctx.meta.get(_ALIASED, {}).get(name)
        if aliased is None:
            return value
        _check_both(ctx, name, aliased[0])
        return aliased[1]

    return given


def _check_both(ctx: click.Context, name: str, where: str) -> None:
    source = ctx.get_parameter_source(name)
    if source in (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT):
        raise click.UsageError(f"give {flag_name(name)} or its old spelling {where}, not both")


# -- secrets from files ---------------------------------------------------------------------------------------

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
        secrets_log.warning(
            "%s was given on the command line, where `ps` and shell history show it; put it in a file named "
            "by %s or %s (or set %s) instead", flag_name(name), flag_name(name + FILE_SUFFIX),
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


def secret_option(name: str, help: str, flag: str | None = None, concept: str = "", **kw: Any) -> Callable[[F], F]:
    """A secret option ``--name`` (``SKINBATCH_NAME``) with its file variant ``--name-file``
    (``SKINBATCH_NAME_FILE``); the command receives only ``name``, read from the file when one is given."""
    file_name = name + FILE_SUFFIX
    concept = concept or name
    kw.pop("show_default", None)
    value_kw = {"envvar": env_name(name), "show_envvar": True, "default": None, **kw,
                "help": f"{help} Prefer {flag_name(file_name)}: a flag shows in `ps`.",
                "callback": _secret_value}
    file_option = click.option(
        flag_name(file_name), file_name, cls=SettingOption, concept=concept + FILE_SUFFIX, envvar=env_name(file_name),
        show_envvar=True, default=None, expose_value=False, callback=_secret_file, type=click.Path(dir_okay=False),
        help=f"File whose content is {flag or flag_name(name)} (a mounted secret), read at start-up.")
    value_option = click.option(flag or flag_name(name), name, cls=SettingOption, concept=concept, **value_kw)

    def decorate(fn: F) -> F:
        return value_option(file_option(fn))

    return decorate


# -- parts and lone settings that belong to no other module ------------------------------------------------------

@dataclass
class Topics:
    """Where requests come from and answers go, and the consumer group that shares the work."""

    request_topic: str = setting("Topic with image requests.", REQUEST_TOPIC)
    result_topic: str = setting("Topic for scores.", RESULT_TOPIC)
    dead_letter_topic: str = setting("Topic for rejected inputs, with the reason.", DEAD_LETTER_TOPIC)
    fhir_topic: str | None = setting("Also publish each request's scores as a FHIR R4 transaction Bundle to this "
                                     "topic.", None)
    group_id: str = setting("Kafka consumer group; every member shares the work.", "skinbatch-consumers")


@dataclass
class MetricsSettings:
    """Where a long-running command serves Prometheus metrics, ``/livez`` and ``/readyz``."""

    metrics_port: int | None = setting("Prometheus metrics port (0 disables).", 9108, type=click.IntRange(0, 65535))
    metrics_host: str = setting("Address the metrics endpoint binds to.", "127.0.0.1")


SHARED_MEMORY_MODES = ("auto", "on", "off")
MIB = 1024 * 1024


@dataclass
class PipelineSettings:
    """How images are decoded, bounded and handed to Triton (skinbatch/scoring/pipeline.py)."""

    decode_workers: int = setting("Decoding processes.", default_factory=lambda: os.cpu_count() or 1,
                                  show_default="CPUs", type=click.IntRange(min=1))
    max_infer_in_flight: int = setting("Decoded frames held for Triton (shared-memory slots of 268 KB).", 64,
                                       type=click.IntRange(min=1))
    max_infer_requests: int = setting("Requests outstanding at Triton: the first carries the frames ready "
                                      "together, the others only full batches.", 4, type=click.IntRange(min=1))
    max_infer_batch: int | None = setting("Frames per request (default: the model's max_batch_size; 1 turns "
                                          "client-side batching off).", None, type=click.IntRange(min=1))
    shared_memory: str = setting("Hand images to Triton through system shared memory: auto (when Triton runs on "
                                 "this host or shares its /dev/shm), on (or stop), off.", "auto",
                                 type=click.Choice(SHARED_MEMORY_MODES))
    max_image_bytes: int = setting("Largest image accepted, in bytes: inline, by reference, retrieved from the "
                                   "archive, or a file; larger ones are refused as too_large without being "
                                   "decoded.", 32 * MIB, type=click.IntRange(min=1))
    max_pixels: int = setting("Largest image in pixels, checked before decoding (decompression bombs).", 80_000_000,
                              type=click.IntRange(min=1))
    decode_timeout_s: float = setting("Wall-clock limit of one decode, in seconds; past it the input is "
                                      "dead-lettered decode_timeout and its worker replaced (0 disables).", 60.0,
                                      type=click.FloatRange(min=0))
    decode_memory_mb: int = setting("Memory (address space) each decode worker may use; an input that needs more "
                                    "is dead-lettered decode_memory and its worker replaced (0 disables).", 2048,
                                    type=click.IntRange(min=0))

    def decode_limits(self) -> Any:
        """Limits for the decode workers: the image size, and pixels checked before decoding."""
        from skinbatch.imaging import DecodeLimits

        return DecodeLimits(max_bytes=self.max_image_bytes, max_pixels=self.max_pixels,
                            max_total_pixels=2 * self.max_pixels)


def megabytes(value: float) -> int:
    """An old ``--max-file-mb`` value in bytes."""
    return int(value * MIB)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_LEVEL = lone("log_level", "Log level of the command's JSON log lines on stderr.", "INFO",
                 type=click.Choice(LOG_LEVELS, case_sensitive=False))
JSON = lone("as_json", "Print machine-readable output on stdout.", flag="--json", is_flag=True, env=False)
OUT_DIR = lone("out_dir", "Folder for the command's output.", required=True,
               type=click.Path(file_okay=False, path_type=Path), flag="--out", env=False)
PROGRESS = lone("show_progress", "Progress bar on stderr (default: when stderr is a terminal).",
                flag="--progress/--no-progress", env=False)
REPOSITORY = lone("repository", "Model repository folder (one sub-folder per model, each with config.pbtxt).",
                  type=click.Path(file_okay=False, path_type=Path), env=False)
WORK_DIR = lone("work_dir", "Folder for the server's files (default: a temporary folder, deleted at exit).",
                type=click.Path(file_okay=False, path_type=Path), env=False)
CACHE_DIR = lone("cache_dir", "Cache root for the jars (default: $SKINBATCH_CACHE or ~/.cache/skinbatch).",
                 type=click.Path(file_okay=False, path_type=Path), env=False)
TAXONOMY = lone("taxonomy", "Disease taxonomy JSON (the served repository's skin_classifier/taxonomy.json).",
                type=click.Path(dir_okay=True, path_type=Path), env=False)
ARCHIVE_ROOT = lone("archive_root", "Folder that {\"uri\": ...} references are relative to (the consumer resolves "
                    "them under it and refuses them without it).",
                    type=click.Path(exists=True, file_okay=False))


__all__ = ["ARCHIVE_ROOT", "Alias", "CACHE_DIR", "ENV_PREFIX", "FILE_SUFFIX", "JSON", "LOG_LEVEL", "LOG_LEVELS",
           "MIB", "MetricsSettings", "OUT_DIR", "PROGRESS", "PipelineSettings", "REPOSITORY", "SHARED_MEMORY_MODES",
           "Setting", "SettingOption", "TAXONOMY", "Topics", "WORK_DIR", "env_name", "flag_name", "lone",
           "megabytes", "options", "part_options", "read_secret_file", "secret_option", "setting", "settings_of",
           "split_values", "warn_on_command_line"]
