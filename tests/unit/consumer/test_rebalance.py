"""Rebalance handling: dropped in-flight work must be fetched again, not skipped."""

from __future__ import annotations

from kafka import TopicPartition

from skinbatch.consumer.config import ConsumerConfig
from skinbatch.consumer.service import ScoringConsumer


class RecordingConsumer:
    """Stands in for KafkaConsumer: records seeks and commits (no broker in a unit test)."""

    def __init__(self) -> None:
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.commits: list[dict] = []

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    def commit(self, offsets: dict, timeout_ms: int | None = None) -> None:
        self.commits.append({tp: o.offset for tp, o in offsets.items()})


def _service() -> tuple[ScoringConsumer, RecordingConsumer]:
    service = ScoringConsumer(ConsumerConfig(bootstrap_servers="x:1", triton_url="x:2", metrics_port=None))
    fake = RecordingConsumer()
    service._consumer = fake  # type: ignore[assignment]
    return service, fake


def test_partition_assigned_back_rewinds_to_the_done_prefix() -> None:
    service, fake = _service()
    tp, other = TopicPartition("req", 0), TopicPartition("req", 1)
    for off in range(10, 15):
        service.tracker.started(tp, off)
    service.tracker.finished(tp, 10)
    service.tracker.finished(tp, 11)
    service.tracker.finished(tp, 13)  # out of order: 12 is still in flight
    service.tracker.started(other, 3)
    service._on_revoked([tp, other])
    assert fake.commits == [{tp: 12, other: 3}]
    assert service.tracker.in_flight() == 0
    service._on_assigned([tp])  # only partition 0 comes back to this member
    assert fake.seeks == [(tp, 12)]


def test_new_partition_is_not_rewound() -> None:
    service, fake = _service()
    service._on_assigned([TopicPartition("req", 4)])
    assert fake.seeks == []
