"""Rebalance handling in the Kafka source: dropped in-flight work must be fetched again, not skipped."""

from __future__ import annotations

from kafka import TopicPartition

from skinbatch.consumer.metrics import ConsumerMetrics
from skinbatch.consumer.source import KafkaSource


class RecordingConsumer:
    """Stands in for KafkaConsumer: records seeks and commits (no broker in a unit test)."""

    def __init__(self) -> None:
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.commits: list[dict] = []

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    def commit(self, offsets: dict, timeout_ms: int | None = None) -> None:
        self.commits.append({tp: o.offset for tp, o in offsets.items()})


def _source() -> tuple[KafkaSource, RecordingConsumer]:
    fake = RecordingConsumer()
    return KafkaSource(fake, "req", ConsumerMetrics()), fake


def test_partition_assigned_back_rewinds_to_the_done_prefix() -> None:
    source, fake = _source()
    tp, other = TopicPartition("req", 0), TopicPartition("req", 1)
    for off in range(10, 15):
        source.tracker.started(tp, off)
    source.tracker.finished(tp, 10)
    source.tracker.finished(tp, 11)
    source.tracker.finished(tp, 13)  # out of order: 12 is still in flight
    source.tracker.started(other, 3)
    source.revoked([tp, other])
    assert fake.commits == [{tp: 12, other: 3}]
    assert source.tracker.in_flight() == 0
    source.assigned([tp])  # only partition 0 comes back to this member
    assert fake.seeks == [(tp, 12)]


def test_new_partition_is_not_rewound() -> None:
    source, fake = _source()
    source.assigned([TopicPartition("req", 4)])
    assert fake.seeks == []


def test_work_of_a_revoked_partition_no_longer_counts() -> None:
    source, _fake = _source()
    tp = TopicPartition("req", 0)
    source.assigned([tp])
    source.tracker.started(tp, 7)
    generation = source.generation(tp)
    assert source.current(tp, generation, 7)
    source.revoked([tp])
    source.assigned([tp])  # back to this member: a new generation, the old work is dropped
    assert not source.current(tp, generation, 7)
    assert not source.done(tp, 7)
