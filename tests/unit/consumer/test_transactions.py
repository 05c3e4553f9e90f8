"""The exactly-once committer's rules, with fakes of the Kafka clients (no broker in a unit test):
a transaction carries exactly the answers of the offsets it commits, a failed one is aborted and its
answers go with the next, and a revoked partition's held answers are dropped."""

from __future__ import annotations

from typing import Any

import pytest
from kafka import TopicPartition
from kafka.errors import CommitFailedError, KafkaError, KafkaTimeoutError, ProducerFencedError
from kafka.structs import ConsumerGroupMetadata, OffsetAndMetadata

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
        self.fail_commit: tuple[Exception, bool] | None = None
        """(error, whether the coordinator commits anyway): a commit request that left, then timed out."""
        self.abort_error: Exception | None = None
        self.aborts = 0
        self.rebuilds = 0

    def begin_transaction(self) -> None:
        assert self.open is None, "a transaction is already open"
        self.open = []

    def send(self, topic: str, key: bytes, value: bytes, headers: Any = None) -> None:
        assert self.open is not None, "a send outside a transaction"
        self.open.append(key)

    def send_offsets_to_transaction(self, offsets: dict, group_metadata: Any) -> None:
        assert group_metadata.generation_id >= 0 and group_metadata.member_id
        if self.fail_offsets is not None:
            error, self.fail_offsets = self.fail_offsets, None
            raise error
        self._offsets = {tp: meta.offset for tp, meta in offsets.items()}

    def commit_transaction(self) -> None:
        assert self.open is not None
        if self.fail_commit is not None:
            (error, goes_through), self.fail_commit = self.fail_commit, None
            if goes_through:
                self.committed.append((self.open, self._offsets))
            raise error
        self.committed.append((self.open, self._offsets))
        self.open = None

    def abort_transaction(self) -> None:
        if self.abort_error is not None:
            raise self.abort_error  # kafka-python: no abort while a commit is in progress
        self.aborts += 1
        self.open = None

    def rebuild(self, error: BaseException) -> None:
        self.rebuilds += 1
        self.open = None
        self.abort_error = None


class FakeConsumer:
    def __init__(self, producer: FakeProducer | None = None) -> None:
        self.producer = producer
        self.group = ConsumerGroupMetadata("g", 7, "member-1")

    def group_metadata(self) -> ConsumerGroupMetadata:
        return self.group

    def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset: the last committed transaction's (the coordinator's view)."""
        offsets = [o[tp] for _, o in (self.producer.committed if self.producer else []) if tp in o]
        return max(offsets) if offsets else None


TP = TopicPartition("req", 0)


def _answer(offset: int) -> list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]]:
    return [("res", f"r{offset}".encode(), b"{}", [])]


def _committer() -> tuple[TransactionalCommitter, FakeProducer, list[KafkaProblem]]:
    fatal: list[KafkaProblem] = []
    producer = FakeProducer()
    return TransactionalCommitter(FakeConsumer(producer), producer, fatal.append), producer, fatal


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


@pytest.mark.parametrize("goes_through", [True, False], ids=["coordinator-committed", "coordinator-aborted"])
def test_a_commit_of_unknown_outcome_is_settled_by_the_group_s_offsets(goes_through: bool) -> None:
    """The commit request left, then timed out (the coordinator's broker was SIGKILLed): the producer
    cannot abort and is replaced. Answers the coordinator committed anyway must not be sent again."""
    committer, producer, fatal = _committer()
    committer.hold(TP, 0, _answer(0))
    producer.fail_commit = (KafkaTimeoutError("commit_transaction did not complete within 15 s"), goes_through)
    producer.abort_error = KafkaError("invalid transition from COMMITTING_TRANSACTION to ABORTING_TRANSACTION")
    if goes_through:
        committer.commit({TP: OffsetAndMetadata(1, "", -1)})  # settled: committed
    else:
        with pytest.raises(KafkaTimeoutError):
            committer.commit({TP: OffsetAndMetadata(1, "", -1)})
    assert producer.rebuilds == 1 and fatal == []
    committer.hold(TP, 1, _answer(1))
    committer.commit({TP: OffsetAndMetadata(2, "", -1)})
    sent = [key for keys, _ in producer.committed for key in keys]
    assert sorted(sent) == [b"r0", b"r1"], "every answer exactly once"


def test_a_member_out_of_its_group_commits_nothing() -> None:
    """kafka-python resets a member the coordinator forgot (a coordinator failover) to generation -1 until it
    rejoins; the coordinator does not fence transactional offsets without a generation, so such a zombie must
    not commit: its partitions' new owner answers them."""
    committer, producer, _ = _committer()
    committer.hold(TP, 0, _answer(0))
    committer.consumer.group = ConsumerGroupMetadata("g", -1, "")
    with pytest.raises(CommitFailedError, match="not a member"):
        committer.commit({TP: OffsetAndMetadata(1, "", -1)})
    assert producer.committed == [] and producer.open is None, "no transaction was begun"
    committer.forget(TP)  # lost at the rejoin
    committer.consumer.group = ConsumerGroupMetadata("g", 8, "member-1")
    committer.commit({TP: OffsetAndMetadata(1, "", -1)})
    assert producer.committed == [([], {TP: 1})]


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
