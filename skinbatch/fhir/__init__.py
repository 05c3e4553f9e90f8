"""FHIR R4 for the scores: one transaction Bundle per request, for an integration engine to forward to
an EHR. Pure: :func:`fhir_bundle` turns scored frames into a dict; the consumer publishes it.

Resources: a ``Device`` (the model), an ``Observation`` per scored frame (P(malignant), with the first-
and second-level classes as components), a ``DiagnosticReport`` grouping them. Ids are derived from the
request and the model (:mod:`skinbatch.fhir.ids`), so a redelivered message updates rather than
duplicates. docs/pacs.md describes the topic and how to read it.
"""

from .bundle import CONTENT_TYPE, FhirFrame, device, diagnostic_report, encode, fhir_bundle, observation
from .ids import device_id, observation_id, report_id

__all__ = [
    "CONTENT_TYPE",
    "FhirFrame",
    "device",
    "device_id",
    "diagnostic_report",
    "encode",
    "fhir_bundle",
    "observation",
    "observation_id",
    "report_id",
]
