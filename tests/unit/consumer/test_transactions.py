"""The exactly-once committer's rules, with fakes of the Kafka clients (no broker in a unit test):
a transaction carries exactly the answers of the offsets it commits, a failed one is aborted and its
answers go with the next, and a revoked partition's held answers are dropped."""

from __future__ import annotations

from typing import Any

import pytest
from kafka import TopicPartition
from kafka.errors import CommitFailedError, ProducerFencedError
from kafka.structs import OffsetAndMetadata

from skinbatch.consumer.metrics import ConsumerMetrics
from skinbatch.consumer.source import KafkaSource
from skinbatch.consumer.transactions import TransactionalCommitter
from skinbatch.contract import KafkaProblem


class FakeProducer:
    """Records what each transaction held; ``fail_offsets`` makes the next send_offsets fail."""

    def __init__(self) -> None:
        self.committed: list[tuple[list[bytes], dict[TopicPartition, int]]] = []
        self.open: list[bytes] | None = None
        self.fail_offsets: Exception | None = None
        self.aborts = 0
        self.rebuilds = 0

    def begin_transaction(self) -> None:
        assert self.open is None, "a transaction is already open"
        self.open = []

    def send(self, topic: str, key: bytes, value: bytes, headers: Any = None) -> None:
        assert self.open is not None, "a send outside a transaction"
        self.open.append(key)

    def send_offsets_to_transaction(self, offsets: dict, group_metadata: Any) -> None:
        assert group_metadata == "generation-7"
        if self.fail_offsets is not None:
            error, self.fail_offsets = self.fail_offsets, None
            raise error
        self._offsets = {tp: meta.offset for tp, meta in offsets.items()}

    def commit_transaction(self) -> None:
        assert self.open is not None
        self.committed.append((self.open, self._offsets))
        self.open = None

    def abort_transaction(self) -> None:
        self.aborts += 1
        self.open = None

    def rebuild(self, error: BaseException) -> None:
        self.rebuilds += 1


class FakeConsumer:
    def group_metadata(self) -> str:
        return "generation-7"


TP = TopicPartition("req", 0)


def _answer(offset: int) -> list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]]:
    return [("res", f"r{offset}".encode(), b"{}", [])]


def _committer() -> tuple[TransactionalCommitter, FakeProducer, list[KafkaProblem]]:
    fatal: list[KafkaProblem] = []
    producer = FakeProducer()
    return TransactionalCommitter(FakeConsumer(), producer, fatal.append), producer, fatal


def test_a_transaction_holds_only_the_answers_of_the_offsets_it_commits() -> None:
    committer, producer, _ = _committer()
    for offset in (10, 11, 13):  # 12 still in flight
        committer.hold(TP, offset, _answer(offset))
    committer.commit({TP: OffsetAndMetadata(12, "", -1)})
    assert producer.committed == [([b"r10", b"r11"], {TP: 12})]
    assert committer.holding == 1  # 13 waits for the prefix
    committer.hold(TP, 12, _answer(12))
    committer.commit({TP: OffsetAndMetadata(14, "", -1)})
    assert producer.committed[1] == ([b"r12", b"r13"], {TP: 14})
    assert committer.holding == 0


def test_a_failed_transaction_is_aborted_and_its_answers_go_with_the_next() -> None:
    committer, producer, fatal = _committer()
    committer.hold(TP, 0, _answer(0))
    producer.fail_offsets = CommitFailedError("the group rebalanced")
    with pytest.raises(CommitFailedError):
        committer.commit({TP: OffsetAndMetadata(1, "", -1)})
    assert producer.aborts == 1 and producer.committed == [] and fatal == []
    committer.commit({TP: OffsetAndMetadata(1, "", -1)})
    assert producer.committed == [([b"r0"], {TP: 1})]


def test_a_fenced_producer_is_replaced_once_and_stops_the_consumer_when_fenced_again() -> None:
    committer, producer, fatal = _committer()
    committer.hold(TP, 0, _answer(0))
    producer.fail_offsets = ProducerFencedError()
    with pytest.raises(ProducerFencedError):
        committer.commit({TP: OffsetAndMetadata(1, "", -1)})
    assert producer.rebuilds == 1 and fatal == []  # a transaction the coordinator timed out: carry on
    producer.open = None
    producer.fail_offsets = ProducerFencedError()
    with pytest.raises(ProducerFencedError):
        committer.commit({TP: OffsetAndMetadata(1, "", -1)})
    assert [p.kind for p in fatal] == ["fenced"]  # again at once: another member has this id


def test_a_revoked_partition_drops_what_is_held_for_it() -> None:
    committer, producer, _ = _committer()
    source = KafkaSource(FakeConsumer(), "req", ConsumerMetrics(), committer=committer)
    for offset in (0, 1, 2):
        source.tracker.started(TP, offset)
    for offset in (0, 2):
        committer.hold(TP, offset, _answer(offset))
        source.done(TP, offset)
    source.revoked([TP])  # commits the done prefix (0) with its answer, drops 2's (the new owner answers it)
    assert producer.committed == [([b"r0"], {TP: 1})]
    assert committer.holding == 0
