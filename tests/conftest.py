"""Shared fixtures. Servers (Kafka, Triton) come from the project's own code, started per session."""

pytest_plugins = [
    "tests.fixtures.kafka",
    "tests.fixtures.triton",
    "tests.fixtures.converted",
    "tests.fixtures.stack",
    "tests.fixtures.orthanc",
    "tests.fixtures.fhir_validator",
]
