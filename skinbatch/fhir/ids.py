"""Stable FHIR resource ids and the identifier systems skinbatch uses. Pure.

A resource id is a digest of what the resource is about, so that producing the same result again (a
redelivered Kafka message, a second consumer) gives the same ids, and a FHIR server receiving the
transaction a second time updates the resources instead of creating copies.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from typing import Any

DICOM_UID_SYSTEM = "urn:dicom:uid"
"""DICOM UIDs in FHIR: system ``urn:dicom:uid``, value ``urn:oid:<uid>`` (FHIR R4 ImagingStudy.identifier)."""
REQUEST_ID_SYSTEM = "urn:skinbatch:request-id"
"""The request id of the Kafka result (contracts.md), e.g. ``<id>:<frame>``."""
INPUT_SHA256_SYSTEM = "urn:skinbatch:input-sha256"
"""Lower-case hex sha256 of the bytes the model scored (the result's ``input.sha256``)."""
WEIGHTS_SHA256_SYSTEM = "urn:skinbatch:model-weights-sha256"
"""Lower-case hex sha256 of the model's weights (the result's ``model.weights_sha256``)."""

_ID_PREFIX = {"Device": "skb-dev-", "Observation": "skb-obs-", "DiagnosticReport": "skb-rep-"}


def _digest(*parts: str) -> str:
    # A separator that no part can contain keeps ("a|b", "c") and ("a", "b|c") apart.
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def _model_parts(model: Mapping[str, Any]) -> list[str]:
    return [str(model.get("name", "")), str(model.get("version", "")), str(model.get("weights_sha256", ""))]


def resource_id(resource_type: str, *parts: str) -> str:
    """``skb-<kind>-<40 hex>``: within FHIR's id rule ``[A-Za-z0-9\\-\\.]{1,64}``."""
    return _ID_PREFIX[resource_type] + _digest(resource_type, *parts)[:40]


def device_id(model: Mapping[str, Any]) -> str:
    """One Device per model name, version and weights."""
    return resource_id("Device", *_model_parts(model))


def observation_id(frame_request_id: str, model: Mapping[str, Any]) -> str:
    """One Observation per scored frame (its result's request id) and model."""
    return resource_id("Observation", frame_request_id, *_model_parts(model))


def report_id(request_id: str, model: Mapping[str, Any]) -> str:
    """One DiagnosticReport per request and model."""
    return resource_id("DiagnosticReport", request_id, *_model_parts(model))


def dicom_uid(uid: str) -> str:
    return f"urn:oid:{uid}"


def full_url(resource_type: str, resource_id: str) -> str:
    """A Bundle entry's ``fullUrl``: a UUID URN derived from type and id (the entry's PUT names the id)."""
    digest = hashlib.sha256(f"{resource_type}/{resource_id}".encode()).digest()
    return f"urn:uuid:{uuid.UUID(bytes=digest[:16], version=5)}"
