"""One home per setting (skinbatch/settings.py): every command's options walked, one meaning per name."""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from skinbatch.cli import cli
from skinbatch.consumer.config import PARTS, ConsumerConfig
from skinbatch.settings import Alias, Setting, SettingOption, settings_of, split_values


def commands() -> Iterator[tuple[str, click.Command]]:
    """Every leaf command of ``skinbatch``, with its path (``localstack kafka``)."""
    ctx = click.Context(cli)

    def walk(command: click.Command, path: str) -> Iterator[tuple[str, click.Command]]:
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None, name
                yield from walk(sub, f"{path} {name}".strip())
        else:
            yield path, command

    yield from walk(cli, "")


def visible_options() -> Iterator[tuple[str, click.Option, str]]:
    """(command, option, concept) for every option --help shows. An option declared in a command alone
    has the concept ``<command>:<parameter>``: the same name in two commands must come from one declaration."""
    for path, command in commands():
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                concept = getattr(param, "concept", "") or f"{path}:{param.name}"
                yield path, param, concept


def names_of(option: click.Option) -> list[str]:
    envvars = [option.envvar] if isinstance(option.envvar, str) else list(option.envvar or [])
    return [*option.opts, *option.secondary_opts, *envvars]


def test_every_command_is_walked() -> None:
    found = {path for path, _ in commands()}
    assert {"consume", "publish", "triage", "status", "evaluate", "serve", "convert", "demo", "localstack kafka",
            "localstack fetch", "taxonomy partition"} <= found


def test_one_name_sets_one_concept() -> None:
    concepts: dict[str, set[str]] = defaultdict(set)
    where: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path, option, concept in visible_options():
        for name in names_of(option):
            concepts[name].add(concept)
            where[(name, concept)].append(path)
    clashes = {name: {c: where[(name, c)] for c in found} for name, found in concepts.items() if len(found) > 1}
    assert not clashes, f"one name, several meanings (declare it once in skinbatch/settings.py): {clashes}"


def test_one_concept_has_one_name() -> None:
    spellings: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    for _path, option, concept in visible_options():
        spellings[concept].add(tuple(names_of(option)))
    several = {concept: found for concept, found in spellings.items() if len(found) > 1}
    assert not several, f"one concept, several names: {several}"


def test_every_hidden_option_is_an_alias_of_a_visible_one() -> None:
    for path, command in commands():
        visible = {o.opts[0] for o in command.params if isinstance(o, click.Option) and not o.hidden}
        for param in command.params:
            if isinstance(param, click.Option) and param.hidden:
                assert isinstance(param, SettingOption) and param.alias_of in visible, (path, param.opts)


def test_the_parts_defaults_are_the_options_defaults() -> None:
    """consume's --help shows the same defaults as the dataclasses (one declaration: the field)."""
    from skinbatch.consumer.cli import consume

    params = {p.name: p for p in consume.params}
    for part in PARTS.values():
        for spec in settings_of(part):
            shown = params[spec.name].get_default(click.Context(consume), call=True)
            shown = None if shown is None or type(shown).__name__ == "Sentinel" else shown
            field = {f.name: f for f in dataclasses.fields(part)}[spec.name]
            declared = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
            if declared is dataclasses.MISSING:
                declared = None
            assert shown == declared, spec.name


def test_consumer_config_sorts_flat_values_into_parts() -> None:
    config = ConsumerConfig.from_values(bootstrap_servers="k:9092", triton_url="t:8001", max_in_flight=9,
                                        max_image_bytes=1000, group_id="g", metrics_port=None)
    assert (config.kafka.bootstrap_servers, config.triton.triton_url) == ("k:9092", "t:8001")
    assert (config.consumer.max_in_flight, config.pipeline.max_image_bytes, config.topics.group_id) == (9, 1000, "g")
    assert config.metrics.metrics_port == 9108  # None takes the part's default
    assert config.decode_limits().max_bytes == 1000
    with pytest.raises(TypeError, match="max_message_bytes"):
        split_values({"max_message_bytes": 1}, PARTS)


def context(command: click.Command, args: list[str]) -> click.Context:
    return command.make_context(command.name or "x", args)


def test_old_spellings_still_work_and_warn(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    from skinbatch.consumer.publish import publish
    from skinbatch.triage.cli import triage

    base = ["--triton-url", "t:8001", "--out", str(tmp_path)]
    with caplog.at_level(logging.WARNING, logger="skinbatch.settings"):
        params = context(triage, [*base, "--max-file-mb", "2", "--workers", "3", "--max-in-flight", "5"]).params
        assert (params["max_image_bytes"], params["decode_workers"], params["max_infer_requests"]) == (2 << 20, 3, 5)
        params = context(publish, [str(tmp_path), "--bootstrap-servers", "k:1", "--topic", "t",
                                   "--max-request-bytes", "7"]).params
        assert (params["request_topic"], params["max_image_bytes"]) == ("t", 7)
    warned = " ".join(r.getMessage() for r in caplog.records)
    for old, new in [("--max-file-mb", "--max-image-bytes"), ("--workers", "--decode-workers"),
                     ("--max-in-flight", "--max-infer-requests"), ("--topic", "--request-topic")]:
        assert f"{old} is deprecated" in warned and f"use {new}" in warned


def test_an_old_variable_still_works_and_warns(caplog: pytest.LogCaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from skinbatch.consumer.cli import consume

    monkeypatch.setenv("SKINBATCH_MAX_MESSAGE_BYTES", "1234")
    with caplog.at_level(logging.WARNING, logger="skinbatch.settings"):
        ctx = context(consume, ["--bootstrap-servers", "k:1", "--triton-url", "t:1"])
    assert ctx.params["max_image_bytes"] == 1234
    assert "SKINBATCH_MAX_MESSAGE_BYTES is deprecated" in " ".join(r.getMessage() for r in caplog.records)


def test_old_and_new_spelling_together_is_a_usage_error(tmp_path: Path) -> None:
    from skinbatch.triage.cli import triage

    for args in (["--workers", "2", "--decode-workers", "3"], ["--decode-workers", "3", "--workers", "2"]):
        with pytest.raises(click.UsageError, match="not both"):
            context(triage, ["--triton-url", "t:8001", "--out", str(tmp_path), *args])


def test_an_alias_of_a_new_setting_works_the_same() -> None:
    @click.command()
    @Setting("speed_s", "Speed.", 1.0, click=(("type", float),), concept="speed_s").option(
        aliases=(Alias("--pace", envvar="SKINBATCH_PACE", convert=lambda v: v * 60, type=float),))
    def command(speed_s: float) -> None:
        click.echo(repr(speed_s))

    run = CliRunner().invoke
    assert run(command, ["--pace", "2"]).output.strip() == "120.0"
    assert run(command, [], env={"SKINBATCH_PACE": "1"}).output.strip() == "60.0"
    assert run(command, []).output.strip() == "1.0"
    assert run(command, ["--speed-s", "3"]).output.strip() == "3.0"


def test_a_bad_log_level_is_a_usage_error() -> None:
    from skinbatch.consumer.cli import consume

    result = CliRunner().invoke(consume, ["--bootstrap-servers", "k:1", "--triton-url", "t:1", "--log-level", "LOUD"])
    assert result.exit_code == 2, result.output
    assert "--log-level" in result.output and "debug" in result.output.lower()


def test_publish_does_not_send_what_the_consumer_would_refuse(tmp_path: Path) -> None:
    """publish's size limit is the consumer's (--max-image-bytes, 32 MiB by default), not a larger one."""
    from skinbatch.consumer.publish import publish

    publish_default = {p.name: p for p in publish.params}["max_image_bytes"].get_default(click.Context(publish))
    assert publish_default == ConsumerConfig.from_values(bootstrap_servers="k", triton_url="t").pipeline.max_image_bytes


def test_no_setting_is_declared_twice() -> None:
    """Every part's field names are unique across consume's parts (the flat flags cannot collide)."""
    seen: dict[str, str] = {}
    for key, part in PARTS.items():
        for spec in settings_of(part):
            assert spec.name not in seen, f"{spec.name} in {seen.get(spec.name)} and {key}"
            seen[spec.name] = key
