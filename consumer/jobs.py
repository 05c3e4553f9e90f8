"""A Kafka message on its way through the consumer: the state every stage reads and writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kafka import TopicPartition

from skinbatch.imaging.model_input import ModelInput
from skinbatch.scoring.pipeline import ScoredFrame

from . import messages
from .requests import Request
from .source import Taken


@dataclass(eq=False)
class Job:
    """One Kafka message (or, for a DICOMweb study or series, one instance of it)."""

    taken: Taken
    timestamp_ms: int
    polled: float
    request: Request | None = None
    size: int = 0
    decoded: ModelInput | None = None
    """What decoding found (hash, format, DICOM identifiers); never the pixels."""
    frames: list[ScoredFrame] = field(default_factory=list)
    outcome: str = "ok"
    # DICOMweb fan-out: a parent (the Kafka message) waits for one child per instance.
    parent: Job | None = None
    pending_children: int = 0
    any_ok: bool = False
    instance: Any = None
    """For a child: the ``InstanceRef`` it retrieves."""
    source_header: Any = None
    """For a child with --store-results: the instance's header (pydicom Dataset), for the SR."""
    sr: dict[str, str] | None = None
    hold: Any = None
    """For a child being retrieved: its ``Hold`` on the resolver's byte meter."""

    @property
    def tp(self) -> TopicPartition:
        return self.taken.tp

    @property
    def offset(self) -> int:
        return self.taken.offset

    @property
    def source(self) -> dict[str, Any]:
        return messages.source(self.tp.topic, self.tp.partition, self.offset)

    @property
    def want_map(self) -> bool:
        return bool(self.request and self.request.want_map)
