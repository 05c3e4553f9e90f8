"""Secrets from files (``--X-file`` / ``SKINBATCH_X_FILE``): one mechanism for every secret option."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from skinbatch.connect.options import KAFKA_OPTIONS, kafka_options, read_secret_file, secret_option
from skinbatch.settings import Setting

SECRET = "s3cret-from-a-file"


@click.command()
@kafka_options()
def kafka_command(kafka: Any) -> None:
    click.echo(f"password={kafka.sasl_password} key-password={kafka.ssl_password}")


@click.command()
@secret_option("archive_password", "Password.")
def own_command(archive_password: str | None) -> None:
    click.echo(f"password={archive_password}")


def run(command: click.Command, args: list[str], env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(command, args, env=env, catch_exceptions=False)


def secret_file(tmp_path: Path, content: str = SECRET + "\n") -> Path:
    path = tmp_path / "secret"
    path.write_text(content)
    return path


def test_every_secret_of_the_shared_options_is_declared_secret() -> None:
    secrets = {spec.name for spec in KAFKA_OPTIONS if spec.secret}
    assert secrets == {"sasl_password", "ssl_password"}


def test_the_file_variable_gives_the_secret(tmp_path: Path) -> None:
    path = secret_file(tmp_path)
    result = run(kafka_command, ["--bootstrap-servers", "k:9092"],
                 {"SKINBATCH_SASL_PASSWORD_FILE": str(path), "SKINBATCH_SSL_PASSWORD_FILE": str(path)})
    assert result.exit_code == 0, result.output
    assert f"password={SECRET} key-password={SECRET}" in result.output


def test_the_file_flag_gives_the_secret_and_a_command_s_own_option_has_it_too(tmp_path: Path) -> None:
    path = secret_file(tmp_path, SECRET)  # no trailing newline
    result = run(own_command, ["--archive-password-file", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"password={SECRET}"


def test_only_one_trailing_newline_is_dropped(tmp_path: Path) -> None:
    assert read_secret_file(str(secret_file(tmp_path, " pw \r\n")), "x") == " pw "
    assert read_secret_file(str(secret_file(tmp_path, "pw\n\n")), "x") == "pw\n"


def test_a_missing_or_empty_file_is_a_usage_error_that_says_what_to_do(tmp_path: Path) -> None:
    result = CliRunner().invoke(own_command, ["--archive-password-file", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "--archive-password-file" in result.output and "SKINBATCH_ARCHIVE_PASSWORD_FILE" in result.output
    result = CliRunner().invoke(own_command, ["--archive-password-file", str(secret_file(tmp_path, "\n"))])
    assert result.exit_code == 2 and "empty" in result.output


def test_value_and_file_together_are_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(own_command, ["--archive-password-file", str(secret_file(tmp_path))],
                                env={"SKINBATCH_ARCHIVE_PASSWORD": "other"})
    assert result.exit_code == 2 and "not both" in result.output


def test_a_secret_on_the_command_line_works_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="skinbatch.secrets"):
        result = run(own_command, ["--archive-password", "pw"])
    assert result.output.strip() == "password=pw"
    (record,) = [r for r in caplog.records if r.name == "skinbatch.secrets"]
    message = record.getMessage()
    assert "--archive-password" in message and "SKINBATCH_ARCHIVE_PASSWORD_FILE" in message
    assert "pw" not in message.replace("password", "")


def test_no_warning_for_the_environment_variable(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="skinbatch.secrets"):
        result = run(own_command, [], {"SKINBATCH_ARCHIVE_PASSWORD": "pw"})
    assert result.output.strip() == "password=pw"
    assert not [r for r in caplog.records if r.name == "skinbatch.secrets"]


def test_a_new_secret_spec_gets_the_file_variant() -> None:
    @click.command()
    @Setting("new_token", "A token.", secret=True).option()
    def command(new_token: str | None) -> None:
        pass

    envvars = {p.name: p.envvar for p in command.params}
    assert envvars == {"new_token": "SKINBATCH_NEW_TOKEN", "new_token_file": "SKINBATCH_NEW_TOKEN_FILE"}


def test_consume_has_a_file_variant_for_every_secret() -> None:
    from skinbatch.consumer.cli import consume

    envvars = {str(p.envvar) for p in consume.params}
    for name in ("SASL_PASSWORD", "SSL_PASSWORD", "DICOMWEB_PASSWORD", "DICOMWEB_TOKEN"):
        assert f"SKINBATCH_{name}_FILE" in envvars, name


@pytest.mark.parametrize("order", ["value first", "file first"])
def test_both_on_the_command_line_are_refused_in_either_order(tmp_path: Path, order: str) -> None:
    pair = [["--archive-password", "pw"], ["--archive-password-file", str(secret_file(tmp_path))]]
    args = pair[0] + pair[1] if order == "value first" else pair[1] + pair[0]
    result = CliRunner().invoke(own_command, args)
    assert result.exit_code == 2 and "not both" in result.output


def test_the_parsed_parameters_already_hold_the_secret(tmp_path: Path) -> None:
    """make_context (what the compose and k8s tests use) sees the file's content, not its path."""
    params = own_command.make_context("own", ["--archive-password-file", str(secret_file(tmp_path))]).params
    assert params == {"archive_password": SECRET}


def test_triage_has_a_file_variant_for_the_archive_secrets() -> None:
    from skinbatch.triage.cli import triage

    envvars = {str(p.envvar) for p in triage.params}
    assert {"SKINBATCH_DICOMWEB_PASSWORD_FILE", "SKINBATCH_DICOMWEB_TOKEN_FILE"} <= envvars
