"""The consumer's producer: results and dead letters to Kafka, without ever poisoning it.

kafka-python 3.0's idempotent producer enters a fatal state after one record batch the broker refuses
as too large (a non-retriable error), and then fails every later send. Two defences:

* **Limits from the broker.** At start-up, and whenever the producer is rebuilt, the result and
  dead-letter topics' ``max.message.bytes`` are read (the broker's ``message.max.bytes`` for a topic
  that does not exist yet). ``max_request_size`` and ``batch_size`` stay under the smaller one, so a
  record too large is refused by the client (synchronously, no harm done) and never reaches the broker.
  :class:`RecordTooLarge` tells the caller, which answers with a dead letter instead.
* **Rebuild.** When a send fails with a non-retriable error anyway (a topic's limit lowered under a
  running consumer), the producer is closed and a new one is made from the factory, limits re-read.
  Records the old producer had not delivered fail on their futures, and the caller retries them on the
  new one: nothing is lost, and no offset is committed past a record that was not acknowledged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from skinbatch.contract import SkinbatchError

log = logging.getLogger("skinbatch.consumer")

DEFAULT_LIMIT = 1048588
"""Kafka's default ``message.max.bytes``: what a topic nobody configured accepts."""
BATCH_OVERHEAD = 1024
"""Room for the record batch header and record framing, kept below a topic's limit."""
MIN_TOPIC_LIMIT = 16384
"""Smaller topic limits leave no room for an ordinary result (about 2 KB)."""
REBUILD_INTERVAL_S = 5.0
TRANSACTION_STEP_S = 15.0
"""How long one step of a transaction (offsets, commit, abort) may wait for the coordinator."""


class RecordTooLarge(SkinbatchError):
    """This record is over the topic's size limit: it was not sent (the producer is unharmed)."""

    def __init__(self, topic: str, size: int, limit: int) -> None:
        super().__init__(f"a {size}-byte record is over the {limit}-byte limit of topic {topic!r} (max.message.bytes)")
        self.topic, self.size, self.limit = topic, size, limit


def read_record_limits(admin: Any, topics: list[str]) -> dict[str, int]:
    """Each topic's ``max.message.bytes``; the broker's ``message.max.bytes`` for a topic not created yet."""
    from kafka.admin import ConfigResource, ConfigResourceType

    found = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t, ["max.message.bytes"]) for t in topics],
                                   config_filter="all").get("topic", {})
    limits = {t: int(found[t]["max.message.bytes"]["value"]) for t in topics if found.get(t)}
    missing = [t for t in topics if t not in limits]
    if missing:
        limit = _broker_limit(admin)
        limits.update({t: limit for t in missing})
    return limits


def _broker_limit(admin: Any) -> int:
    from kafka.admin import ConfigResource, ConfigResourceType

    try:
        brokers = admin.describe_cluster().get("brokers", [])
        node = str(brokers[0]["node_id"]) if brokers else "1"
        found = admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, node, ["message.max.bytes"])],
                                       config_filter="all").get("broker", {}).get(node, {})
        return int(found["message.max.bytes"]["value"])
    except Exception:  # noqa: BLE001 - Kafka's default is the safe guess for an auto-created topic
        return DEFAULT_LIMIT


def producer_sizes(limits: Mapping[str, int]) -> dict[str, int]:
    """``max_request_size`` and ``batch_size`` that keep every batch under every topic's limit. Pure."""
    smallest = min(limits.values())
    room = max(1024, smallest - BATCH_OVERHEAD)
    return {"max_request_size": room, "batch_size": min(16384, room)}


class ResultProducer:
    """Sends JSON records; :meth:`send` returns kafka-python's future, or raises :class:`RecordTooLarge`.

    ``make_producer(**sizes)`` builds a KafkaProducer (the caller chooses acks, idempotence, codec and
    security); ``read_limits()`` returns the topics' record limits. Both are passed in, so that tests
    can give fakes and the consumer gives real clients.
    """

    def __init__(self, make_producer: Callable[..., Any], read_limits: Callable[[], dict[str, int]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._make = make_producer
        self._read_limits = read_limits
        self._clock = clock
        self.limits: dict[str, int] = {}
        self.rebuilds = 0
        self._last_rebuild = float("-inf")
        self._producer = self._build()

    def _build(self) -> Any:
        self.limits = self._read_limits()
        return self._make(**producer_sizes(self.limits))

    def check_limits(self) -> None:
        """Refuse topics too small for any result, at start-up (a usage error, not a crash later)."""
        small = {t: n for t, n in self.limits.items() if n < MIN_TOPIC_LIMIT}
        if small:
            from skinbatch.contract import ConfigurationError

            raise ConfigurationError(
                f"topic limits {small} (max.message.bytes) are under {MIN_TOPIC_LIMIT} bytes, too small for "
                "results: raise them with kafka-configs.sh --alter --add-config max.message.bytes=1048588")

    def check(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]] | None = None) -> None:
        """Raise :class:`RecordTooLarge` if the record would be over its topic's limit."""
        limit = self.limits.get(topic, DEFAULT_LIMIT) - BATCH_OVERHEAD
        size = len(key) + len(value) + sum(len(k) + len(v) for k, v in headers or ())
        if size > limit:
            raise RecordTooLarge(topic, size, limit)

    def send(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]] | None = None) -> Any:
        self.check(topic, key, value, headers)
        return self._producer.send(topic, key=key, value=value, headers=headers or None)

    # -- transactions (consume --exactly-once; the factory made a transactional producer) -----------------
    # kafka-python 3.0 waits for the transaction coordinator without a limit: after the broker that was
    # coordinator died, a member was seen waiting for minutes in send_offsets_to_transaction while the
    # producer kept asking the dead node. Each step waits at most TRANSACTION_STEP_S here; on a timeout
    # the caller aborts, and a producer that cannot abort is replaced (a new one finds the coordinator
    # afresh, fences the old one and aborts its transaction).
    def begin_transaction(self) -> None:
        self._producer.begin_transaction()

    def send_offsets_to_transaction(self, offsets: Mapping[Any, Any], group_metadata: Any) -> None:
        manager = self._producer._transaction_manager
        self._wait(manager.send_offsets_to_transaction(dict(offsets), group_metadata), "send_offsets_to_transaction")

    def commit_transaction(self) -> None:
        self._wait(self._producer._transaction_manager.begin_commit(), "commit_transaction")

    def abort_transaction(self) -> None:
        self._wait(self._producer._transaction_manager.begin_abort(), "abort_transaction")

    def _wait(self, result: Any, step: str) -> None:
        from kafka.errors import KafkaTimeoutError

        self._producer._sender.wakeup()
        if not result.wait(timeout_ms=int(TRANSACTION_STEP_S * 1000)):
            raise KafkaTimeoutError(f"{step} did not complete within {TRANSACTION_STEP_S:.0f} s")

    def failed(self, error: BaseException) -> None:
        """A send failed: after a non-retriable error (or a producer in its fatal state), rebuild it."""
        from kafka.errors import RetriableError

        fatal = getattr(getattr(self._producer, "_transaction_manager", None), "has_fatal_error", lambda: False)()
        if isinstance(error, RetriableError) and not fatal:
            return
        now = self._clock()
        if now - self._last_rebuild < REBUILD_INTERVAL_S:
            return  # one rebuild serves every record the old producer failed
        self.rebuild(error)

    def rebuild(self, error: BaseException) -> None:
        """Replace the producer now (a transactional one: the new one fences the old and aborts its
        open transaction when the factory calls ``init_transactions``)."""
        self._last_rebuild = self._clock()
        self.rebuilds += 1
        log.error("the producer failed with %s; replacing it and sending again what it had not delivered",
                  type(error).__name__, extra={"event": "producer_rebuilt", "error": type(error).__name__})
        old, self._producer = self._producer, self._build()
        try:
            old.close(timeout=0)
        except Exception:  # noqa: BLE001 - the old producer is beyond use either way
            pass

    def flush(self, timeout: float) -> None:
        self._producer.flush(timeout=timeout)

    def close(self, timeout: float) -> None:
        self._producer.close(timeout=timeout)


__all__ = ["RecordTooLarge", "ResultProducer", "producer_sizes", "read_record_limits"]
