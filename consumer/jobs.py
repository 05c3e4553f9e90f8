"""A Kafka message on its way through the consumer: the state every stage reads and writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kafka import TopicPartition

from skinbatch.scoring import Scores

from . import messages
from .decode import ModelInput
from .requests import Request


@dataclass
class Job:
    """One Kafka message on its way through the pipeline."""

    tp: TopicPartition
    offset: int
    generation: int
    timestamp_ms: int
    polled: float
    request: Request | None = None
    size: int = 0
    decoded: ModelInput | None = None
    scores: list[Scores | None] = field(default_factory=list)
    infer_ms: list[float] = field(default_factory=list)
    remaining_frames: int = 0
    unacked: int = 0
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

    @property
    def source(self) -> dict[str, Any]:
        return messages.source(self.tp.topic, self.tp.partition, self.offset)
