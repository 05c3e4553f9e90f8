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


class FailingTransactions:
    """A transactional committer whose commits fail (the coordinator's broker is down)."""

    transactional = True
    holding = 0

    def __init__(self) -> None:
        self.fail = False
        self.forgotten: list[TopicPartition] = []

    def commit(self, offsets: dict) -> None:
        if self.fail:
            raise TimeoutError("commit_transaction did not complete within 15 s")

    def forget(self, tp: TopicPartition) -> None:
        self.forgotten.append(tp)


def test_exactly_once_a_partition_assigned_back_rewinds_to_its_last_commit_not_its_done_prefix() -> None:
    fake, committer = RecordingConsumer(), FailingTransactions()
    source = KafkaSource(fake, "req", ConsumerMetrics(), committer=committer)
    tp, fresh = TopicPartition("req", 0), TopicPartition("req", 1)
    for off in range(10, 15):
        source.tracker.started(tp, off)
    for off in (10, 11):
        source.tracker.finished(tp, off)
    source.maybe_commit(force=True)  # 10 and 11 answered in a committed transaction
    for off in (12, 13):
        source.tracker.finished(tp, off)  # answered, held for the next transaction
    source.tracker.started(fresh, 40)
    source.tracker.finished(fresh, 40)  # never committed
    committer.fail = True
    source.revoked([tp, fresh])  # the commit fails: the held answers of 12, 13 and 40 are dropped
    assert committer.forgotten == [tp, fresh]
    source.assigned([tp, fresh])
    assert fake.seeks == [(tp, 12), (fresh, 40)]  # not 14 and 41: 12, 13 and 40 are answered again
