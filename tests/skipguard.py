"""The skip guard: skips must not hide missing evidence.

Every run ends with the number of skipped tests and their reasons. In CI (``CI`` set; ``.ci/run`` sets
it) a skip whose reason is not listed in ``tests/allowed_skips.txt`` fails the run: a missing Triton,
Kafka, Orthanc, Chromium or validator must not turn its tests into quiet skips while CI stays green.
Deselecting tests (``-m "not cluster"``) is not skipping and is not counted.

Loaded by ``tests/conftest.py``; ``-p tests.skipguard`` loads it into any other pytest run.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.fixtures.needs import in_ci

ALLOWED_SKIPS_FILE = Path(__file__).with_name("allowed_skips.txt")


def allowed_skip_reasons(path: Path = ALLOWED_SKIPS_FILE) -> frozenset[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return frozenset(line for line in lines if line and not line.startswith("#"))


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The reason a skipped report gives, without pytest's ``Skipped: `` prefix."""
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return text.removeprefix("Skipped: ")


class SkipGuard:
    def __init__(self, allowed: frozenset[str]) -> None:
        self.allowed = allowed
        self.skips: Counter[str] = Counter()

    def _count(self, report: pytest.TestReport | pytest.CollectReport) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            self.skips[skip_reason(report)] += 1

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._count(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._count(report)

    def unexpected(self) -> dict[str, int]:
        return {reason: n for reason, n in self.skips.items() if reason not in self.allowed}

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        passing = (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)
        if in_ci() and self.unexpected() and session.exitstatus in passing:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        terminalreporter.section("skips")
        terminalreporter.write_line(f"{sum(self.skips.values())} skipped")
        for reason, n in self.skips.most_common():
            terminalreporter.write_line(f"  {n} x {reason}")
        unexpected = self.unexpected()
        if unexpected and in_ci():
            terminalreporter.write_line(
                f"FAILED: {sum(unexpected.values())} skip(s) for reasons not in tests/allowed_skips.txt. In CI a "
                "skip hides a missing counterpart: install it (`make tools`) or fix the test.", red=True)


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(SkipGuard(allowed_skip_reasons()), "skinbatch-skip-guard")
