"""The skip guard (tests/skipguard.py), run on small suites of its own in an inner pytest session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.skipguard import allowed_skip_reasons

REPO_ROOT = Path(__file__).resolve().parents[2]

SUITE = """
import pytest

def test_runs():
    assert True

def test_needs_a_gpu():
    pytest.skip("needs a GPU with TensorRT")

def test_{name}():
    pytest.skip("{reason}")
"""


def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.RunResult:
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    return pytester.runpytest_subprocess("-p", "tests.skipguard", "-p", "no:cacheprovider")


def run_suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str | None,
              reason: str) -> pytest.RunResult:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    pytester.makepyfile(SUITE.format(name="other", reason=reason))
    return inner(pytester, monkeypatch)


def test_the_allow_list_holds_only_the_gpu_reason_today() -> None:
    assert allowed_skip_reasons() == {"needs a GPU with TensorRT"}


def test_in_ci_a_skip_for_another_reason_fails_the_run(pytester: pytest.Pytester,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_suite(pytester, monkeypatch, "true", "no local Triton: not installed")
    result.assert_outcomes(passed=1, skipped=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*2 skipped*", "*1 x no local Triton: not installed*",
                                 "*FAILED: 1 skip(s) for reasons not in tests/allowed_skips.txt*"])


def test_in_ci_allowed_skips_pass(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_suite(pytester, monkeypatch, "true", "needs a GPU with TensorRT")
    result.assert_outcomes(passed=1, skipped=2)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*2 x needs a GPU with TensorRT*"])


@pytest.mark.parametrize("ci", [None, "", "false"])
def test_outside_ci_skips_are_listed_but_pass(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                              ci: str | None) -> None:
    result = run_suite(pytester, monkeypatch, ci, "needs chromium")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*1 x needs chromium*"])
    assert "FAILED: " not in result.stdout.str()


def test_a_module_skipped_at_collection_counts(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    pytester.makepyfile('import pytest\npytest.importorskip("no_such_module_here")\n\ndef test_x():\n    pass\n')
    result = inner(pytester, monkeypatch)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*could not import 'no_such_module_here'*"])
