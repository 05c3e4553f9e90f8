"""Errors become exit codes in one place: the ``skinbatch`` group (skinbatch.cli).

A sub-command raises a ``SkinbatchError``; the group prints ``skinbatch COMMAND: message`` on stderr, with
no traceback, and exits with the error's own ``exit_code``. ``run_standalone`` does the same for a module
run as its own program (``python -m skinbatch.consumer.cli``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

import skinbatch.cli as top
from skinbatch.contract import ExitCode, KafkaProblem, SkinbatchError
from skinbatch.localstack.kafka import KafkaBrokerDied, KafkaSetupError, KafkaStartError


class _Refused(SkinbatchError):
    exit_code = ExitCode.ARCHIVE_DOWN


_raised: list[BaseException] = []


@click.command("fails")
def fails() -> None:
    raise _raised[0]


@pytest.fixture
def command_that_raises(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setitem(top._COMMANDS, "fails", (f"{__name__}:fails", "Raises what the test gives it."))

    def give(exc: BaseException) -> None:
        _raised[:] = [exc]

    return give


@pytest.mark.parametrize(("error", "code"), [
    (_Refused("the archive is down; start it"), ExitCode.ARCHIVE_DOWN),
    (KafkaProblem("credentials refused", kind="auth"), ExitCode.AUTH),  # an instance's own code
    (SkinbatchError("a bug"), ExitCode.INTERNAL),
])
def test_the_group_exits_with_the_errors_own_code(command_that_raises: Any, error: SkinbatchError,
                                                  code: ExitCode) -> None:
    command_that_raises(error)
    result = CliRunner().invoke(top.cli, ["fails"])
    assert result.exit_code == code, result.output
    assert result.stderr == f"skinbatch fails: {error}\n"
    assert result.stdout == ""


def test_other_exceptions_are_left_alone(command_that_raises: Any) -> None:
    command_that_raises(ZeroDivisionError("a bug"))
    result = CliRunner().invoke(top.cli, ["fails"])
    assert result.exit_code == 1 and isinstance(result.exception, ZeroDivisionError)


def test_a_command_run_on_its_own_ends_the_same_way(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    _raised[:] = [_Refused("the archive is down")]
    monkeypatch.setattr(sys, "argv", ["fails"])
    with pytest.raises(SystemExit) as ended:
        top.run_standalone(fails)
    assert ended.value.code == ExitCode.ARCHIVE_DOWN
    assert capsys.readouterr().err == "skinbatch fails: the archive is down\n"


# -- localstack: its errors are in the root, with the codes its docstring promises ---------------------------


def test_localstack_fetch_without_java_exits_14(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_java(cache_dir: Path | None) -> Path:
        raise KafkaSetupError("Java 17 or newer is needed")

    monkeypatch.setattr("skinbatch.localstack.cli.ensure_kafka_jars", no_java)
    result = CliRunner().invoke(top.cli, ["localstack", "fetch"])
    assert result.exit_code == ExitCode.ENVIRONMENT == 14, result.output
    assert "skinbatch localstack: Java 17 or newer is needed" in result.stderr


class _Broker:
    """Stands in for KafkaBroker: ``start`` raises what it is given, or the broker dies at once."""

    fail: BaseException | None = None
    closed = False

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.log_file = Path("kafka.log")

    def start(self) -> _Broker:
        if _Broker.fail is not None:
            raise _Broker.fail
        return self

    @property
    def bootstrap_servers(self) -> str:
        return "127.0.0.1:9092"

    def is_running(self) -> bool:
        return False

    def log_tail(self) -> str:
        return "the last lines of its log"

    def close(self) -> None:
        _Broker.closed = True


@pytest.mark.parametrize(("fail", "code", "words"), [
    (KafkaSetupError("Maven is missing"), ExitCode.ENVIRONMENT, "Maven is missing"),
    (KafkaStartError("the broker did not start"), ExitCode.START_FAILED, "the broker did not start"),
    (None, ExitCode.SERVER_DIED, "The Kafka broker exited on its own.\nthe last lines of its log"),
])
def test_localstack_kafka_exit_codes(monkeypatch: pytest.MonkeyPatch, fail: BaseException | None, code: ExitCode,
                                     words: str) -> None:
    monkeypatch.setattr("skinbatch.localstack.cli.KafkaBroker", _Broker)
    monkeypatch.setattr("skinbatch.localstack.cli.kafka_version", lambda: "4.0.0")
    monkeypatch.setattr(_Broker, "fail", fail)
    monkeypatch.setattr(_Broker, "closed", False)
    result = CliRunner().invoke(top.cli, ["localstack", "kafka"])
    assert result.exit_code == code, result.output
    assert f"skinbatch localstack: {words}" in result.stderr
    assert _Broker.closed  # the broker is closed on the way out
    assert KafkaBrokerDied.exit_code == ExitCode.SERVER_DIED
