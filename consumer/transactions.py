"""How the done prefix is committed: plainly (at least once), or in a Kafka transaction with its answers.

:class:`KafkaSource` computes the offsets to commit (the done prefix of each partition, as
``OffsetAndMetadata``) and hands them to a committer:

* :class:`PlainCommitter` (the default): ``consumer.commit(offsets)``. Answers were produced, and
  acknowledged, before their message counted as done; a crash between the two redelivers the message and
  it is answered again: **at least once**.
* :class:`TransactionalCommitter` (``consume --exactly-once``): answers are not produced when they are
  ready but **held**, per partition and offset. A commit opens a transaction, produces the held answers of
  the offsets it commits (those below each partition's position) and nothing else, adds the offsets with
  the consumer's group metadata (``send_offsets_to_transaction``, KIP-447), and commits. A
  ``read_committed`` reader then sees each answer exactly when its request's offset is committed: once.
  A crash, a fenced zombie (a member the group has since replaced) or a failed commit aborts the whole
  transaction; the messages are redelivered and answered in a later one. A commit that fails on our side
  after its request left (a timeout while the coordinator's broker dies) may still be completed by the
  coordinator: when the producer cannot abort it, the replacement producer settles it, and the group's
  committed offsets say which way it went (``_went_through``); answers already committed are not sent
  again. A member the group coordinator no longer knows (kafka-python resets it to generation -1 until it
  rejoins) commits nothing: the coordinator would accept its transactional offsets unfenced, a zombie's
  answers beside the new owner's. A producer fenced by the
  coordinator (it aborted a transaction that outlived ``transaction_timeout_ms`` during a broker outage)
  is replaced by a new one with the same id; fenced twice within a minute, two members share the id, and
  the consumer stops (exit 6).

Answers past a partition's prefix (a later offset finished while an earlier one is still in flight) wait
in memory until the prefix reaches them, and go out with the first commit after that (``commit_interval_s``,
1 s by default). They are bounded: the consumer pauses fetching while ``holding`` reaches
``--max-in-flight`` (consumer/service.py), so at most ``max_in_flight`` answers wait, in addition to the
``max_in_flight`` messages in progress.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from kafka import TopicPartition

from skinbatch.contract import KafkaProblem

log = logging.getLogger("skinbatch.consumer")

FENCED_AGAIN_S = 60.0
"""A producer fenced again this soon after the last time shares its transactional id with another member."""

Encoded = tuple[str, bytes, bytes, list[tuple[str, bytes]]]
"""A record ready to produce: topic, key, value, headers."""


class Committer(Protocol):
    transactional: bool

    @property
    def holding(self) -> int:
        """Answers held for a transaction (0 when answers go out at once)."""

    def commit(self, offsets: Mapping[TopicPartition, Any]) -> None:
        """Commit ``offsets`` (``OffsetAndMetadata``); raises when they were not committed."""

    def forget(self, tp: TopicPartition) -> None:
        """The partition was revoked: drop what is held for it (its new owner answers again)."""


class PlainCommitter:
    """At least once: the offsets are committed to the group; the answers are already acknowledged."""

    transactional = False
    holding = 0

    def __init__(self, consumer: Any) -> None:
        self.consumer = consumer

    def commit(self, offsets: Mapping[TopicPartition, Any]) -> None:
        self.consumer.commit(dict(offsets), timeout_ms=10_000)

    def forget(self, tp: TopicPartition) -> None:
        pass


class TransactionalCommitter:
    """Exactly once: held answers and the offsets they answer, in one transaction per commit.

    ``producer`` is a :class:`~skinbatch.consumer.producer.ResultProducer` whose factory makes a
    transactional KafkaProducer (and calls ``init_transactions``); ``consumer`` gives the group metadata.
    ``on_fatal`` hears of a producer fenced by another with the same transactional id (two members share
    one: a deployment error, or this process is a zombie): it must stop.
    """

    transactional = True

    def __init__(self, consumer: Any, producer: Any, on_fatal: Callable[[KafkaProblem], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.consumer = consumer
        self._clock = clock
        self._last_fenced: float | None = None
        self.producer = producer
        self.on_fatal = on_fatal
        self._held: dict[TopicPartition, dict[int, list[Encoded]]] = {}
        self.transactions = 0
        self.aborted = 0

    @property
    def holding(self) -> int:
        return sum(len(offsets) for offsets in self._held.values())

    def hold(self, tp: TopicPartition, offset: int, records: list[Encoded]) -> None:
        """Keep the answers of one message (more, for a DICOMweb study's further instances) for its commit."""
        self._held.setdefault(tp, {}).setdefault(offset, []).extend(records)

    def forget(self, tp: TopicPartition) -> None:
        self._held.pop(tp, None)

    def due(self, offsets: Mapping[TopicPartition, Any]) -> dict[TopicPartition, list[int]]:
        """The held offsets a commit of ``offsets`` answers: below each partition's position. Pure."""
        due = {}
        for tp, meta in offsets.items():
            held = self._held.get(tp, {})
            below = sorted(o for o in held if o < meta.offset)
            if below:
                due[tp] = below
        return due

    def commit(self, offsets: Mapping[TopicPartition, Any]) -> None:
        from kafka.errors import CommitFailedError, ProducerFencedError

        group = self.consumer.group_metadata()
        if not in_group(group):
            # kafka-python resets a member that the coordinator no longer knows to generation -1 and no
            # member id, and the coordinator accepts transactional offsets with those from anyone: this
            # zombie would commit answers that the partitions' new owner gives too (duplicates seen in the
            # cluster test after a broker failover). Nothing is sent: the answers wait, and are dropped
            # with the partitions when kafka-python reports them lost at the rejoin.
            raise CommitFailedError(f"not a member of the group now (generation {group.generation_id}); "
                                    "not committing until it rejoins")
        due = self.due(offsets)
        producer = self.producer
        try:
            producer.begin_transaction()
            for tp, held_offsets in due.items():
                for offset in held_offsets:
                    for topic, key, value, headers in self._held[tp][offset]:
                        producer.send(topic, key, value, headers)
            producer.send_offsets_to_transaction(offsets, group)
            producer.commit_transaction()
        except ProducerFencedError as exc:
            self._fenced(exc)
            raise
        except Exception as exc:
            if self._abort(exc) or not self._went_through(offsets):
                raise
            log.warning("a transaction whose commit failed on our side was committed by the coordinator; its "
                        "answers are not sent again", extra={"event": "transaction_in_doubt_committed",
                                                            "error": type(exc).__name__})
        for tp, held_offsets in due.items():
            for offset in held_offsets:
                del self._held[tp][offset]
        self.transactions += 1
        log.debug("transaction committed", extra={
            "event": "transaction_committed", "generation": group.generation_id,
            "offsets": {tp.partition: meta.offset for tp, meta in offsets.items()},
            "answered": {tp.partition: [o[0], o[-1]] for tp, o in due.items()}})

    def _fenced(self, error: BaseException) -> None:
        """The coordinator bumped our producer epoch: it aborted a transaction that stayed open past its
        timeout (a broker outage), or another producer took our transactional id. Once: a new producer
        (same id) carries on. Twice within ``FENCED_AGAIN_S``: two members share the id; stop."""
        now = self._clock()
        if self._last_fenced is not None and now - self._last_fenced < FENCED_AGAIN_S:
            self.on_fatal(KafkaProblem(
                f"this consumer's producer was fenced twice within {FENCED_AGAIN_S:.0f} s ({type(error).__name__}): "
                "another member uses the same --transactional-id; stopping", kind="fenced"))
            return
        self._last_fenced = now
        log.error("the transactional producer was fenced (a transaction that outlived its timeout was aborted, "
                  "or another member has this transactional id); replacing it",
                  extra={"event": "transaction_fenced", "error": type(error).__name__})
        self.producer.rebuild(error)

    def _abort(self, error: BaseException) -> bool:
        """Abort the open transaction: True when it was aborted. A producer that cannot abort is replaced,
        and then the outcome is unknown (False): the new producer's ``init_transactions`` aborts an open
        transaction, but one whose commit request reached the coordinator is completed as a commit."""
        self.aborted += 1
        log.warning("transaction failed; aborting it, its messages are committed with a later one",
                    extra={"event": "transaction_aborted", "error": type(error).__name__})
        try:
            self.producer.abort_transaction()
        except Exception as exc:  # noqa: BLE001 - a producer in a fatal state: a new one fences it
            self.producer.rebuild(exc)
            return False
        return True

    def _went_through(self, offsets: Mapping[TopicPartition, Any]) -> bool:
        """After a commit of unknown outcome (the replacement producer has resolved it with the
        coordinator): did the group's committed offsets reach ``offsets``? Offsets and answers commit
        together, so then the answers are out too, and sending them again would duplicate them (seen when
        the coordinator's broker was SIGKILLed during a commit). Unknown counts as not."""
        try:
            for tp, meta in offsets.items():
                committed = self.consumer.committed(tp)
                if committed is None or committed < meta.offset:
                    return False
        except Exception as exc:  # noqa: BLE001 - cannot tell: send again (at worst a duplicate, as before)
            log.warning("could not read the committed offsets after a failed commit",
                        extra={"event": "commit_outcome_unknown", "error": type(exc).__name__})
            return False
        return True


def in_group(group: Any) -> bool:
    """Whether a ``ConsumerGroupMetadata`` snapshot is a member's: a generation and a member id (KIP-447
    fences those when stale; without them the coordinator fences nothing)."""
    return group.generation_id >= 0 and bool(group.member_id)


def make_committer(exactly_once: bool, consumer: Any, producer: Any,
                   on_fatal: Callable[[KafkaProblem], None]) -> PlainCommitter | TransactionalCommitter:
    return TransactionalCommitter(consumer, producer, on_fatal) if exactly_once else PlainCommitter(consumer)


__all__ = ["Committer", "Encoded", "PlainCommitter", "TransactionalCommitter", "in_group", "make_committer"]
