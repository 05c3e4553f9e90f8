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


class Record:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class GroupConsumer(RecordingConsumer):
    """Also answers ``committed`` from the group's offsets, and runs a rebalance inside ``poll`` as
    kafka-python does (the listener runs, then records are returned, from the position it kept)."""

    def __init__(self, committed: dict[TopicPartition, int]) -> None:
        super().__init__()
        self.group = committed
        self.assigned: set[TopicPartition] = set()
        self.on_poll: list = []
        self.unreachable = False

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    def committed(self, tp: TopicPartition, timeout_ms: int | None = None) -> int | None:
        if self.unreachable:
            raise TimeoutError("coordinator not available")
        return self.group.get(tp)

    def seek_to_beginning(self, *tps: TopicPartition) -> None:
        self.seeks.extend((tp, 0) for tp in tps)

    def poll(self, timeout_ms: int) -> dict:
        step = self.on_poll.pop(0) if self.on_poll else (lambda: {})
        return step()


class Transactions:
    transactional = True
    holding = 0

    def commit(self, offsets: dict) -> None:
        pass

    def forget(self, tp: TopicPartition) -> None:
        pass


def test_exactly_once_an_assigned_partition_starts_at_the_groups_committed_offset() -> None:
    tp, fresh = TopicPartition("req", 2), TopicPartition("req", 3)
    fake = GroupConsumer({tp: 10})  # another member owned partition 2 meanwhile and committed up to 10
    source = KafkaSource(fake, "req", ConsumerMetrics(), committer=Transactions())
    for off in (7, 8):
        source.tracker.started(tp, off)
    source.tracker.finished(tp, 7)  # this member's own done prefix was 8

    def rebalance() -> dict:
        source.revoked([tp])
        fake.assigned = {tp, fresh}
        source.assigned([tp, fresh])
        return {tp: [Record(9), Record(10)], fresh: [Record(0)]}  # from the position kafka-python kept

    fake.on_poll = [rebalance, lambda: {tp: [Record(10)], fresh: [Record(0)]}]
    assert list(source.poll(100)) == []  # nothing taken before the group's offsets are read
    assert fake.seeks == []
    taken = [(t.tp, t.offset) for t in source.poll(100)]
    assert sorted(fake.seeks) == [(tp, 10), (fresh, 0)]  # the group's 10, not this member's 8; nothing committed: 0
    assert taken == [(tp, 10), (fresh, 0)]


def test_exactly_once_a_partition_whose_offset_cannot_be_read_is_not_taken_until_it_can() -> None:
    tp, other = TopicPartition("req", 0), TopicPartition("req", 1)
    fake = GroupConsumer({tp: 5, other: 7})
    asked: list[TopicPartition] = []
    committed = fake.committed
    fake.committed = lambda t, timeout_ms=None: (asked.append(t), committed(t, timeout_ms))[1]  # type: ignore[method-assign]
    source = KafkaSource(fake, "req", ConsumerMetrics(), committer=Transactions())
    fake.assigned = {tp, other}
    source.assigned([tp, other])
    fake.unreachable = True
    fake.on_poll = [lambda: {tp: [Record(3)]}, lambda: {tp: [Record(5)], other: [Record(7)]}]
    assert list(source.poll(100)) == [] and fake.seeks == []
    assert len(asked) == 1  # one wait for an absent coordinator per poll, not one per partition
    fake.unreachable = False
    assert [t.offset for t in source.poll(100)] == [5, 7] and sorted(fake.seeks) == [(tp, 5), (other, 7)]
