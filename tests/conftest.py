"""Shared fixtures. Servers (Kafka, Triton, Orthanc) come from the project's own code, started per
session or module. ``tests.skipguard`` fails a CI run that skipped a test for a reason not allowed."""

pytest_plugins = [
    "pytester",
    "tests.skipguard",
    "tests.fixtures.kafka",
    "tests.fixtures.triton",
    "tests.fixtures.converted",
    "tests.fixtures.stack",
    "tests.fixtures.cluster",
    "tests.fixtures.orthanc",
    "tests.fixtures.fhir_validator",
]
