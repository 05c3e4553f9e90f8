"""The HAPI validator wrapper's pure parts: its output read back, its pinned version."""

from __future__ import annotations

import json

import pytest

from skinbatch.localstack.fhir_validator import FhirValidatorError, hapi_version, parse_report


def _line(file: str, *issues: tuple[str, str]) -> str:
    return json.dumps({"file": file, "issues": [{"severity": s, "location": "Observation", "message": m}
                                                for s, m in issues]})


def test_the_programs_lines_become_issues_per_file() -> None:
    out = "\n".join(["[main] INFO something", _line("a.json", ("error", "bad status"), ("warning", "no subject")),
                     _line("b.json"), json.dumps({"done": 2})])
    report = parse_report(out, ["a.json", "b.json"])
    assert [i.severity for i in report["a.json"]] == ["error", "warning"] and report["b.json"] == []


@pytest.mark.parametrize("out", [
    _line("a.json"),  # died before the end
    "\n".join([_line("a.json"), json.dumps({"done": 1})]),  # b.json never reported
])
def test_a_run_that_did_not_report_on_every_file_is_an_error(out: str) -> None:
    with pytest.raises(FhirValidatorError, match="reported on"):
        parse_report(out, ["a.json", "b.json"])


def test_the_hapi_version_comes_from_the_shipped_pom() -> None:
    major = int(hapi_version().split(".")[0])
    assert major == 8
