"""Consumer-group lag per partition and the dead-letter rate, from Kafka's admin and consumer APIs.

* lag = the partition's end offset − the group's committed offset (a partition the group never
  committed counts everything retained: end − beginning);
* dead-letter rate = growth of the dead-letter topic's end offsets between two readings ÷ the time
  between them; the dead-letter fraction divides that growth by the growth of the group's committed
  offsets (messages finished) over the same interval.

The arithmetic (:func:`partition_lags`, :func:`group_status`) is pure; :class:`KafkaProbe` does the I/O
with kafka-python (``KafkaAdminClient.list_group_offsets`` / ``describe_groups``,
``KafkaConsumer.beginning_offsets`` / ``end_offsets``). No message is read: no patient data can reach
the output.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from skinbatch.connect.kafka import KafkaConnection, probe_kafka
from skinbatch.contract import DEAD_LETTER_TOPIC, KafkaProblem


class KafkaStatusError(KafkaProblem):
    """Kafka could not be asked, or the group is unknown. The message says what to check."""

    def __init__(self, message: str) -> None:
        super().__init__(message, kind="refused")


@dataclass
class PartitionLag:
    topic: str
    partition: int
    committed: int | None
    """None when the group has never committed on this partition."""
    end: int
    lag: int


@dataclass
class KafkaSnapshot:
    group_id: str
    taken_at: float
    """``time.monotonic()`` when read."""
    state: str = ""
    members: int = 0
    partitions: list[PartitionLag] = field(default_factory=list)
    dead_letter_topic: str = ""
    dead_letter_exists: bool = False
    dead_letter_end: int = 0
    """Sum of the dead-letter topic's end offsets."""
    dead_letter_retained: int = 0
    """Dead letters still on the topic (end − beginning, summed)."""

    @property
    def committed_total(self) -> int:
        return sum(p.committed or 0 for p in self.partitions)


@dataclass
class GroupStatus:
    group_id: str
    state: str
    members: int
    total_lag: int
    partitions: list[PartitionLag]
    dead_letter_topic: str
    dead_letter_exists: bool
    dead_letters_retained: int
    interval_s: float | None = None
    consumed_per_s: float | None = None
    dead_letters_per_s: float | None = None
    dead_letter_fraction: float | None = None
    """Dead letters ÷ messages the group finished over the interval; None when none were finished."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def partition_lags(committed: dict[tuple[str, int], int | None], beginning: dict[tuple[str, int], int],
                   end: dict[tuple[str, int], int]) -> list[PartitionLag]:
    out = []
    for key in sorted(end):
        topic, partition = key
        c = committed.get(key)
        if c is not None and c < 0:
            c = None
        base = c if c is not None else beginning.get(key, 0)
        out.append(PartitionLag(topic, partition, c, end[key], max(0, end[key] - base)))
    return out


def group_status(now: KafkaSnapshot, before: KafkaSnapshot | None = None) -> GroupStatus:
    status = GroupStatus(
        group_id=now.group_id,
        state=now.state,
        members=now.members,
        total_lag=sum(p.lag for p in now.partitions),
        partitions=now.partitions,
        dead_letter_topic=now.dead_letter_topic,
        dead_letter_exists=now.dead_letter_exists,
        dead_letters_retained=now.dead_letter_retained,
    )
    if before is None:
        return status
    dt = now.taken_at - before.taken_at
    if dt <= 0:
        return status
    consumed = now.committed_total - before.committed_total
    dead = now.dead_letter_end - before.dead_letter_end
    if consumed < 0 or dead < 0:  # offsets reset or topic re-created: no honest rate
        return status
    status.interval_s = dt
    status.consumed_per_s = consumed / dt
    status.dead_letters_per_s = dead / dt
    status.dead_letter_fraction = dead / consumed if consumed > 0 else None
    return status


class KafkaProbe:
    """Reads a consumer group's offsets and a dead-letter topic's end offsets. Reuse it across refreshes."""

    def __init__(self, connection: KafkaConnection, group_id: str,
                 dead_letter_topic: str = DEAD_LETTER_TOPIC, timeout_s: float = 5.0) -> None:
        from kafka import KafkaAdminClient, KafkaConsumer
        from kafka.errors import KafkaError

        self.group_id = group_id
        self.dead_letter_topic = dead_letter_topic
        timeout_ms = int(timeout_s * 1000)
        # Refused, untrusted or unauthenticated: said once, clearly (exit 6, 13 or 12), not as a timeout.
        probe_kafka(connection)
        kwargs = connection.client_kwargs()
        try:
            self._admin = KafkaAdminClient(client_id="skinbatch-status", request_timeout_ms=timeout_ms, **kwargs)
            # read_committed: end offsets are the last stable offsets, so that records of open or aborted
            # transactions (consume --exactly-once) are not counted as results or dead letters.
            self._consumer = KafkaConsumer(client_id="skinbatch-status", group_id=None, enable_auto_commit=False,
                                           request_timeout_ms=max(timeout_ms, 1000),
                                           isolation_level="read_committed", **kwargs)
        except KafkaError as exc:
            raise KafkaStatusError(
                f"cannot reach Kafka at {connection.bootstrap_servers} ({type(exc).__name__}); "
                "check --bootstrap-servers and that the brokers are up"
            ) from None

    def snapshot(self) -> KafkaSnapshot:
        from kafka import TopicPartition
        from kafka.errors import KafkaError

        try:
            described = self._admin.describe_groups([self.group_id]).get(self.group_id, {})
            offsets = self._admin.list_group_offsets({self.group_id: None}).get(self.group_id, {})
            topics = sorted({tp.topic for tp in offsets})
            parts = [TopicPartition(t, p) for t in topics for p in sorted(self._partitions(t))]
            begin = self._consumer.beginning_offsets(parts) if parts else {}
            end = self._consumer.end_offsets(parts) if parts else {}
            dlq_parts = [TopicPartition(self.dead_letter_topic, p)
                         for p in sorted(self._partitions(self.dead_letter_topic))]
            dlq_begin = self._consumer.beginning_offsets(dlq_parts) if dlq_parts else {}
            dlq_end = self._consumer.end_offsets(dlq_parts) if dlq_parts else {}
        except KafkaError as exc:
            raise KafkaStatusError(
                f"Kafka did not answer about group {self.group_id!r} ({type(exc).__name__}: {exc}); "
                "check the brokers and --bootstrap-servers"
            ) from None
        state = str(described.get("group_state", described.get("state", "")) or "")
        if not offsets and state in ("", "Dead"):
            raise KafkaStatusError(
                f"consumer group {self.group_id!r} is unknown to Kafka (no members, no committed offsets); "
                "check --group-id (the consumer's --group-id)"
            )
        committed = {(tp.topic, tp.partition): (om.offset if om is not None else None) for tp, om in offsets.items()}
        return KafkaSnapshot(
            group_id=self.group_id,
            taken_at=time.monotonic(),
            state=state,
            members=len(described.get("members") or []),
            partitions=partition_lags(
                committed,
                {(tp.topic, tp.partition): o for tp, o in begin.items()},
                {(tp.topic, tp.partition): o for tp, o in end.items()},
            ),
            dead_letter_topic=self.dead_letter_topic,
            dead_letter_exists=bool(dlq_parts),
            dead_letter_end=sum(dlq_end.values()),
            dead_letter_retained=sum(dlq_end[tp] - dlq_begin.get(tp, 0) for tp in dlq_end),
        )

    def _partitions(self, topic: str) -> set[int]:
        parts = self._consumer.partitions_for_topic(topic)
        return set(parts or ())

    def close(self) -> None:
        for client in (self._consumer, self._admin):
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
