"""Answers to Kafka: results, dead letters and FHIR bundles, each acknowledged before a message is done.

:class:`ResultSink` sends the records that answer one request and calls ``done`` once the broker has
acknowledged every one of them (``acks=all``). A send that fails is retried with backoff on the loop
thread, never dropped; the producer replaces itself after an error that would leave it failed
(consumer/producer.py). A result too large for its topic is answered with a ``result_too_large`` dead
letter instead; a dead letter that does not fit stops the consumer (``on_fatal``), uncommitted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka import TopicPartition

from skinbatch.backoff import Backoff
from skinbatch.contract import ErrorType, KafkaProblem
from skinbatch.scoring.pipeline import Mailbox
from skinbatch.timers import Timers

from . import messages
from .metrics import ConsumerMetrics
from .producer import RecordTooLarge, ResultProducer
from .transactions import Committer, Encoded, TransactionalCommitter

log = logging.getLogger("skinbatch.consumer")


@dataclass(frozen=True)
class Record:
    topic: str
    key: str
    value: dict[str, Any] | bytes
    """A message dict (encoded as JSON here), or bytes ready to send."""
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(eq=False)
class _Answer:
    """The records answering one request, and what to do when all are acknowledged."""

    unacked: int
    done: Callable[[], None]
    current: Callable[[], bool]
    source: dict[str, Any]


class ResultSink:
    """Sends answers and reports them done once acknowledged. Runs on the loop thread."""

    def __init__(self, producer: ResultProducer, mailbox: Mailbox, timers: Timers, metrics: ConsumerMetrics, *,
                 dead_letter_topic: str, retry_s: float, on_fatal: Callable[[KafkaProblem], None],
                 retry_max_s: float | None = None, committer: Committer | None = None) -> None:
        self.producer = producer
        self.committer = committer if committer is not None and committer.transactional else None
        """With ``--exactly-once``: answers are held for the transaction that commits their offset."""
        self.mailbox = mailbox
        self.timers = timers
        self.metrics = metrics
        self.dead_letter_topic = dead_letter_topic
        self.retry_s = retry_s
        self._backoff = Backoff(retry_s, max(retry_s, retry_max_s or retry_s * 20))
        self.on_fatal = on_fatal

    def send(self, records: list[Record], done: Callable[[], None], *, current: Callable[[], bool],
             source: dict[str, Any]) -> None:
        """Produce ``records``; ``done()`` once each is acknowledged. ``current()`` False drops retries
        (the message's partition moved to another member, which answers it again)."""
        if self.committer is not None:
            self._hold(records, done, current, source)
            return
        answer = _Answer(len(records), done, current, source)
        for record in records:
            self._produce(answer, record)

    def _hold(self, records: list[Record], done: Callable[[], None], current: Callable[[], bool],
              source: dict[str, Any]) -> None:
        """Exactly once: check each record's size now, hold them for the transaction, and the message is done."""
        assert isinstance(self.committer, TransactionalCommitter)
        if not current():
            return  # its partition moved: the new owner answers it
        encoded: list[Encoded] = []
        for record in records:
            key = record.key.encode("utf-8")
            value = record.value if isinstance(record.value, bytes) else messages.encode(record.value)
            try:
                self.producer.check(record.topic, key, value, list(record.headers))
            except RecordTooLarge as exc:
                replacement = self._too_large_record(record, exc, source)
                if replacement is None:
                    return  # stopping, uncommitted
                key, value = replacement.key.encode("utf-8"), messages.encode(replacement.value)  # type: ignore[arg-type]
                record = replacement
            encoded.append((record.topic, key, value, list(record.headers)))
        self.committer.hold(TopicPartition(source["topic"], source["partition"]), source["offset"], encoded)
        done()

    def _produce(self, answer: _Answer, record: Record) -> None:
        value = record.value if isinstance(record.value, bytes) else messages.encode(record.value)
        try:
            future = self.producer.send(record.topic, record.key.encode("utf-8"), value, list(record.headers))
        except RecordTooLarge as exc:
            self._too_large(answer, record, exc)
            return
        except Exception as exc:  # noqa: BLE001 - buffer full or broker gone: retry, never drop
            self._failed(answer, record, exc)
            return
        future.add_callback(lambda _md: self.mailbox.post(self._acked, answer))
        future.add_errback(lambda exc: self.mailbox.post(self._failed, answer, record, exc))

    def _acked(self, answer: _Answer) -> None:
        answer.unacked -= 1
        self._backoff.reset()
        if answer.unacked == 0:
            answer.done()

    def _failed(self, answer: _Answer, record: Record, error: BaseException) -> None:
        self.producer.failed(error)
        if not answer.current():
            return
        self.metrics.retries.labels("produce").inc()
        log.warning("producing failed; will retry", extra={"event": "retry", "stage": "produce",
                                                           "error": type(error).__name__, **answer.source})
        self.timers.later(self._backoff.next(), lambda: self._produce(answer, record))

    def _too_large(self, answer: _Answer, record: Record, exc: RecordTooLarge) -> None:
        dead = self._too_large_record(record, exc, answer.source)
        if dead is not None:
            self._produce(answer, dead)

    def _too_large_record(self, record: Record, exc: RecordTooLarge, source: dict[str, Any]) -> Record | None:
        """The dead letter that answers instead of a record too large; None (and stopping) for a dead letter."""
        if record.topic == self.dead_letter_topic:
            # Dead letters are bounded (messages.dead_letter_message); this one still is not: stop rather than
            # loop. Its message stays uncommitted and is redelivered once the limit is raised.
            self.on_fatal(KafkaProblem(f"a dead letter does not fit topic {record.topic!r}: {exc}; raise its "
                                       "max.message.bytes", kind="refused"))
            return None
        log.error("a record is over its topic's size limit; dead-lettering it instead",
                  extra={"event": "result_too_large", "bytes": exc.size, "limit": exc.limit, **source})
        value = record.value if isinstance(record.value, dict) else {}
        dead = messages.dead_letter_message(
            request_id=record.key, error_type=ErrorType.RESULT_TOO_LARGE, src=source,
            error_message=f"{exc}. The image was scored; raise the topic's limit and send the request again",
            input_info=value.get("input"))
        self.metrics.errors.labels(ErrorType.RESULT_TOO_LARGE).inc()
        return Record(self.dead_letter_topic, dead["request_id"], dead)

    def flush(self, timeout_s: float) -> None:
        self.producer.flush(timeout_s)

    def close(self, timeout_s: float) -> None:
        self.producer.flush(timeout_s)
        self.producer.close(timeout_s)


__all__ = ["Record", "ResultSink"]
