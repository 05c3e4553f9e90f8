"""HAPI FHIR's validator, run from its Maven Central jars on the machine's Java 17+, offline.

The tests check every FHIR resource skinbatch writes with the reference validator, the way the broker
tests run a real Kafka: the runtime closure of ``fhir-validator-pom.xml`` (HAPI FHIR's
``hapi-fhir-validation`` with the R4 structures and validation resources, the one place that names the
version) is copied into a per-user cache with ``mvn dependency:copy-dependencies`` once, and
``FhirValidate.java`` (next to this module) runs as a single-file program on it, validating many
resources in one JVM.

Two layers:

* pure: :func:`parse_report` (the program's JSON lines → :class:`FhirValidation`);
* I/O: :func:`ensure_fhir_validator` (Maven) and :func:`validate_fhir` (one JVM run).

No terminology server is reachable offline, so SNOMED CT, LOINC and local codes are not checked against
their code systems: the validator reports an unknown code system as a warning, never as an error.
"""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skinbatch._child import tail
from skinbatch.contract import ExitCode, SkinbatchError
from skinbatch.localstack import maven
from skinbatch.localstack.kafka import (
    KafkaSetupError,
    _java_executable,
    _java_major,
    _resource_text,
    default_cache_dir,
)

__all__ = [
    "FhirIssue",
    "FhirValidation",
    "FhirValidatorError",
    "FhirValidatorSetupError",
    "ensure_fhir_validator",
    "hapi_version",
    "parse_report",
    "validate_fhir",
]

log = logging.getLogger(__name__)

_POM_RESOURCE = "fhir-validator-pom.xml"
_PROGRAM_RESOURCE = "FhirValidate.java"
_MIN_JAVA = 17


class FhirValidatorSetupError(SkinbatchError, RuntimeError):
    """Java or Maven is missing or too old, or the validator's jars could not be fetched."""

    exit_code = ExitCode.ENVIRONMENT


class FhirValidatorError(SkinbatchError, RuntimeError):
    """The validator ran but did not report on every resource; the message carries its output."""


@dataclass(frozen=True)
class FhirIssue:
    severity: str
    """fatal, error, warning or information."""
    location: str
    message: str


@dataclass(frozen=True)
class FhirValidation:
    """The validator's findings on one resource."""

    resource_type: str
    resource_id: str
    issues: list[FhirIssue] = field(default_factory=list)

    @property
    def errors(self) -> list[FhirIssue]:
        return [i for i in self.issues if i.severity in ("fatal", "error")]

    @property
    def warnings(self) -> list[FhirIssue]:
        return [i for i in self.issues if i.severity == "warning"]


def hapi_version() -> str:
    """The HAPI FHIR version pinned in the shipped ``fhir-validator-pom.xml``."""
    version = maven.pom_property(_resource_text(_POM_RESOURCE), "hapi.version")
    if not version:
        raise FhirValidatorSetupError(f"{_POM_RESOURCE} has no <hapi.version> property; the package is broken.")
    return version


def _java() -> str:
    try:
        java = _java_executable()
        major = _java_major(java)
    except KafkaSetupError as exc:  # its text names Kafka; the remedy is the same
        raise FhirValidatorSetupError(
            f"the FHIR validator needs Java {_MIN_JAVA} or newer: {exc}") from None
    if major < _MIN_JAVA:
        raise FhirValidatorSetupError(
            f"{java} is Java {major}; HAPI FHIR {hapi_version()} needs Java {_MIN_JAVA} or newer. Install a newer "
            "JDK (Debian/Ubuntu: `apt-get install openjdk-17-jdk-headless`) and point JAVA_HOME at it.")
    return java


def ensure_fhir_validator(cache_dir: Path | None = None, *, timeout_s: float = 1800.0) -> Path:
    """Make sure the validator's jars are in the cache and return their folder (the class path ``libs/*``).

    The first call runs ``mvn -q dependency:copy-dependencies -DincludeScope=runtime`` on the shipped POM
    into ``<cache_dir>/hapi-fhir-<version>/libs`` (about 145 MB, 90 jars); later calls with the same POM
    return at once. An interrupted download is redone. ``skinbatch localstack fetch`` should call this
    next to :func:`skinbatch.localstack.kafka.ensure_kafka_jars`, so that CI fetches both in its setup step.

    Raises:
        FhirValidatorSetupError: ``mvn`` or Java is missing, or Maven failed (with its output).
    """
    root = (cache_dir if cache_dir is not None else default_cache_dir()).expanduser()
    closure = maven.Closure(pom=_resource_text(_POM_RESOURCE), home=root / f"hapi-fhir-{hapi_version()}",
                            what=f"HAPI FHIR {hapi_version()}'s validator", size="about 145 MB",
                            expect="hapi-fhir-validation-*.jar")
    return maven.fetch(closure, timeout_s=timeout_s, error=FhirValidatorSetupError, check_java=_java)


def parse_report(stdout: str, files: Sequence[str]) -> dict[str, list[FhirIssue]]:
    """The program's JSON lines as file → issues; every file must have its line, and the last says done."""
    found: dict[str, list[FhirIssue]] = {}
    done = None
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if "done" in record:
            done = int(record["done"])
        elif "file" in record:
            found[str(record["file"])] = [FhirIssue(str(i.get("severity", "")), str(i.get("location", "")),
                                                    str(i.get("message", ""))) for i in record.get("issues", [])]
    missing = [f for f in files if f not in found]
    if done != len(files) or missing:
        raise FhirValidatorError(
            f"the validator reported on {len(found)} of {len(files)} resources"
            + (f" (none for {missing[0]})" if missing else ""))
    return found


def validate_fhir(
    resources: Sequence[Mapping[str, Any]], *, cache_dir: Path | None = None, timeout_s: float = 600.0
) -> list[FhirValidation]:
    """Validate FHIR R4 resources (Bundles included) in one JVM run; one result per resource, in order.

    Raises:
        FhirValidatorSetupError: as :func:`ensure_fhir_validator`.
        FhirValidatorError: the JVM failed or did not report on every resource.
    """
    if not resources:
        return []
    libs = ensure_fhir_validator(cache_dir)
    java = _java()
    with tempfile.TemporaryDirectory(prefix="skinbatch-fhir-") as tmp:
        work = Path(tmp)
        program = work / _PROGRAM_RESOURCE
        program.write_text(_resource_text(_PROGRAM_RESOURCE), encoding="utf-8")
        files = []
        for n, resource in enumerate(resources):
            path = work / f"{n:05d}.json"
            path.write_text(json.dumps(resource, ensure_ascii=False), encoding="utf-8")
            files.append(str(path))
        command = [java, "-cp", f"{libs}/*", str(program), *files]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)  # noqa: S603 - our own program
        except subprocess.TimeoutExpired as exc:
            raise FhirValidatorError(f"the FHIR validator did not finish within {timeout_s:.0f} s") from exc
        if result.returncode != 0:
            raise FhirValidatorError(
                f"the FHIR validator exited {result.returncode}. Last lines of its output:\n"
                f"{tail(result.stdout + result.stderr, 40)}")
        try:
            report = parse_report(result.stdout, files)
        except FhirValidatorError as exc:
            raise FhirValidatorError(f"{exc}. Last lines of its output:\n{tail(result.stderr, 20)}") from None
    return [FhirValidation(str(r.get("resourceType", "")), str(r.get("id", "")), report[f])
            for r, f in zip(resources, files)]
