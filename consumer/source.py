"""The request topic, seen from one member of the consumer group: poll, pause, commit, rebalance, watchdog.

:class:`KafkaSource` wraps a KafkaConsumer that is passed in (tests give a fake). It owns everything
about *where* the group stands:

* which messages were taken and which are done (:class:`~skinbatch.consumer.offsets.OffsetTracker`):
  only the fully done prefix of each partition is ever committed;
* a generation per partition, bumped on every revocation and assignment, so that work of a partition
  this member lost is recognised and dropped (a new owner redoes it);
* pausing all partitions while the caller is saturated, and resuming;
* the fetch watchdog (consumer/watchdog.py): a backlog Kafka stops delivering makes the member rejoin,
  then ask to exit.

It knows nothing about images, Triton or results. kafka-python's consumer is not thread-safe: only the
loop thread calls this object.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kafka import TopicPartition
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

from skinbatch.connect.kafka import codec_problem
from skinbatch.contract import KafkaProblem

from .metrics import ConsumerMetrics
from .offsets import OffsetTracker
from .poison import PoisonGuard
from .transactions import Committer, PlainCommitter
from .watchdog import FetchWatchdog, Verdict

log = logging.getLogger("skinbatch.consumer")


@dataclass(frozen=True)
class Taken:
    """A record taken from Kafka: where it came from, and the generation of its partition then."""

    tp: TopicPartition
    offset: int
    generation: int
    record: Any


class _Rebalance(AsyncConsumerRebalanceListener):
    """kafka-python 3.0 runs rebalance listeners on its IO thread, where a blocking ``commit()`` raises
    RuntimeError: the done prefix (and the poison state's withdrawn grant) of revoked partitions was never
    committed, and their next owner took the revocation for a death. As coroutines, the listener awaits
    the commit on the IO loop before the member rejoins."""

    def __init__(self, source: KafkaSource) -> None:
        self.source = source

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.source.revoked_async(list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.source.assigned(list(assigned))


class KafkaSource:
    """One consumer-group member's view of the request topic."""

    def __init__(self, consumer: Any, topic: str, metrics: ConsumerMetrics, *, commit_interval_s: float = 1.0,
                 fetch_stall_s: float = 120.0, clock: Callable[[], float] = time.monotonic,
                 guard: PoisonGuard | None = None, committer: Committer | None = None) -> None:
        """``guard``: poison-message state, committed as each partition's offset metadata (consumer/poison.py).
        ``committer``: commits the done prefix, plainly or in a transaction with its answers
        (consumer/transactions.py)."""
        self.consumer = consumer
        self.committer = committer or PlainCommitter(consumer)
        self.topic = topic
        self.metrics = metrics
        self.tracker = OffsetTracker()
        self.commit_interval_s = commit_interval_s
        self._clock = clock
        self._generation: dict[TopicPartition, int] = {}
        self._counter = 0
        self._restart_at: dict[TopicPartition, int] = {}
        self._reposition: set[TopicPartition] = set()
        """Exactly once: assigned partitions whose position must first be read from the group."""
        self._last_commit = 0.0
        self.paused = False
        self._watchdog = FetchWatchdog(fetch_stall_s)
        self._delivered: set[TopicPartition] = set()
        self._next_watch = 0.0
        self.guard = guard
        self._loaded_at: dict[TopicPartition, int | None] = {}
        """The committed position read with a partition's poison state."""
        self._meta_sent: dict[TopicPartition, str] = {}

    # -- membership -------------------------------------------------------------------------------------
    def subscribe(self) -> None:
        self.consumer.subscribe([self.topic], listener=_Rebalance(self))

    def _bump(self, tp: TopicPartition) -> None:
        self._counter += 1
        self._generation[tp] = self._counter

    def revoked(self, revoked: list[TopicPartition]) -> None:
        """Commit what is done, then forget the lost partitions' in-flight work."""
        positions = self._revoked_positions(revoked)
        if positions:
            self._commit(positions)
        self._forget(revoked)

    async def revoked_async(self, revoked: list[TopicPartition]) -> None:
        """:meth:`revoked` from kafka-python's IO loop (the rebalance listener): the commit is awaited
        there, through the coordinator's own coroutine, instead of blocking the loop it runs on."""
        positions = self._revoked_positions(revoked)
        commit: Any = getattr(getattr(self.consumer, "_coordinator", None), "_commit_offsets_sync_async", None)
        if positions and (commit is None or self.committer.transactional):
            self._commit(positions)
        elif positions:
            offsets = self._offsets(positions)
            try:
                await commit(offsets, 10_000)
            except Exception as exc:  # noqa: BLE001 - a failed commit only means some redelivery later
                log.warning("commit on revocation failed", extra={"event": "commit_failed",
                                                                  "error": type(exc).__name__})
            else:
                self._committed(positions, offsets)
        self._forget(revoked)

    def _revoked_positions(self, revoked: list[TopicPartition]) -> dict[Any, int]:
        positions = {tp: pos for tp, pos in self.tracker.to_commit().items() if tp in revoked}
        if self.guard is not None:
            self.guard.stop_cleanly(revoked)  # the dropped work is not a death
            positions.update(self._meta_changed(revoked))
        return positions

    def _forget(self, revoked: list[TopicPartition]) -> None:
        for tp in revoked:
            if self.guard is not None:
                self.guard.forget(tp)
            self._loaded_at.pop(tp, None)
            self._meta_sent.pop(tp, None)
            restart = self.tracker.committable(tp)
            if restart is not None:
                self._restart_at[tp] = restart
            self.tracker.forget(tp)
            self.committer.forget(tp)
            self._bump(tp)
        self._watchdog.rebalancing(self._clock())
        log.info("partitions revoked", extra={"event": "revoked", "partitions": [tp.partition for tp in revoked]})

    def assigned(self, assigned: list[TopicPartition]) -> None:
        for tp in assigned:
            self._bump(tp)
            # kafka-python keeps the fetch position of a partition that is revoked and assigned back to the
            # same member. At least once, work past the done prefix was dropped on revocation, so rewind to
            # it, or those messages would never be processed (answers before it are out; any the partition's
            # owners in between gave again are duplicates, which at least once allows).
            restart = self._restart_at.pop(tp, None)
            if self.committer.transactional:
                # Exactly once, the one right position is the group's committed offset: another member may
                # have owned the partition in between and committed past this member's own last position
                # (seen in the cluster test: a record answered by two generations). Read on the loop thread.
                self._reposition.add(tp)
            elif restart is not None:
                self.consumer.seek(tp, restart)
        self._restart_at.clear()
        self._watchdog.joined()
        self.paused = True  # kafka-python also keeps the paused flag: flow control resumes explicitly
        log.info("partitions assigned", extra={"event": "assigned", "partitions": [tp.partition for tp in assigned]})

    def generation(self, tp: TopicPartition) -> int:
        """Bumped on every revocation and assignment of the partition."""
        return self._generation.get(tp, 0)

    def current(self, tp: TopicPartition, generation: int, offset: int) -> bool:
        """False once the partition was revoked after the record was taken (its work no longer counts)."""
        return self._generation.get(tp) == generation and self.tracker.is_tracked(tp, offset)

    # -- records ----------------------------------------------------------------------------------------
    def poll(self, timeout_ms: int) -> Iterator[Taken]:
        """Records, each marked as taken. A batch in a codec this install cannot decode raises
        :class:`KafkaProblem` (kind ``codec``): nothing of it was taken, so nothing past it is committed."""
        from kafka.errors import UnsupportedCodecError

        if self._reposition:
            self._position_from_group()
        try:
            batches = self.consumer.poll(timeout_ms=timeout_ms)
        except UnsupportedCodecError as exc:
            raise codec_problem(exc) from None
        for tp, records in batches.items():
            if tp in self._reposition:
                continue  # fetched from a position the group has not confirmed: not taken, fetched again
            if records:
                self._delivered.add(tp)
            for record in records:
                self.tracker.started(tp, record.offset)
                yield Taken(tp, record.offset, self.generation(tp), record)

    def _position_from_group(self) -> None:
        """Exactly once: seek each newly assigned partition to the group's committed offset. Under
        ``read_committed`` kafka-python asks with ``require_stable``, so an offset still inside another
        member's open transaction is waited for, not read stale. A partition whose offset cannot be read
        now stays unread (its records are not taken) and is tried again at the next poll."""
        assignment = self.consumer.assignment()
        for tp in list(self._reposition):
            if tp not in assignment:
                self._reposition.discard(tp)
                continue
            try:
                committed = self.consumer.committed(tp, timeout_ms=10_000)
            except Exception as exc:  # noqa: BLE001 - the group coordinator is away: try again next poll
                log.warning("cannot read the partition's committed offset; not taking its records yet",
                            extra={"event": "position_unknown", "partition": tp.partition,
                                   "error": type(exc).__name__})
                break  # the others would wait as long: the loop turns, and the next poll tries them all
            if committed is None:
                self.consumer.seek_to_beginning(tp)  # nothing committed: auto_offset_reset is earliest
            else:
                self.consumer.seek(tp, committed)
            self._reposition.discard(tp)
            log.debug("position from the group", extra={"event": "position_from_group", "partition": tp.partition,
                                                         "offset": committed})

    def connected(self) -> bool:
        """The group coordinator is known and connected (readiness); True for a client that cannot say."""
        coordinator = getattr(self.consumer, "_coordinator", None)
        if coordinator is None:
            return True
        # Read, not coordinator_unknown(): that may mark the coordinator dead as a side effect.
        return getattr(coordinator, "coordinator_id", None) is not None

    def keep_alive(self) -> None:
        """While draining: let kafka-python serve rebalance callbacks, taking nothing. Every partition is
        paused, so nothing comes back; should a newly assigned one slip through, its records are not
        marked taken, so the done prefix never passes them and they are redelivered."""
        self.consumer.poll(timeout_ms=0)

    def done(self, tp: TopicPartition, offset: int) -> bool:
        """The message is fully answered; False if its partition was revoked meanwhile."""
        return self.tracker.finished(tp, offset)

    def flow(self, pause: bool) -> None:
        """Pause every assigned partition while the caller cannot take more; resume after."""
        assignment = self.consumer.assignment()
        if pause and assignment and not assignment <= self.consumer.paused():
            self.consumer.pause(*assignment)
        elif not pause and self.paused:
            self.consumer.resume(*assignment)
        self.paused = pause
        self.metrics.paused.set(1 if pause else 0)

    # -- commits -----------------------------------------------------------------------------------------
    def maybe_commit(self, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._last_commit < self.commit_interval_s:
            return
        self._last_commit = now
        positions = self.tracker.to_commit()
        if self.guard is not None:
            positions.update(self._meta_changed(self._loaded_at))
        if positions:
            self._commit(positions)

    # -- poison-message state (consumer/poison.py) ---------------------------------------------------------
    def load_guard(self, tp: TopicPartition) -> dict[int, int]:
        """Before a newly assigned partition's first record starts: read its committed metadata."""
        assert self.guard is not None
        committed: Any = None
        try:
            committed = self.consumer.committed(tp, metadata=True, timeout_ms=10_000)
        except Exception as exc:  # noqa: BLE001 - unknown state: no suspects, as before this guard existed
            log.warning("cannot read the committed offset's metadata; no suspects", extra={
                "event": "suspects_unknown", "error": type(exc).__name__})
        position = getattr(committed, "offset", None)
        self._loaded_at[tp] = position
        self._meta_sent[tp] = getattr(committed, "metadata", "") or ""
        return self.guard.load(tp, position, getattr(committed, "metadata", None))

    def commit_guard(self, partitions: list[Any]) -> bool:
        """Commit the poison state of ``partitions`` now (a grant before records start under it)."""
        positions = {tp: pos for tp in partitions if (pos := self._position(tp)) is not None}
        return not positions or self._commit(positions)

    def _position(self, tp: Any) -> int | None:
        position = self.tracker.committable(tp)
        return position if position is not None else self._loaded_at.get(tp)

    def _meta_changed(self, partitions: Any) -> dict[Any, int]:
        assert self.guard is not None
        out = {}
        for tp in partitions:
            position = self._position(tp)
            if position is not None and self._metadata(tp, position) != self._meta_sent.get(tp):
                out[tp] = position
        return out

    def _metadata(self, tp: Any, position: int) -> str:
        if self.guard is None:
            return ""
        return self.guard.metadata(tp, position, self.tracker.done_from(tp, position))

    def _offsets(self, positions: dict[Any, int]) -> dict[Any, OffsetAndMetadata]:
        return {tp: OffsetAndMetadata(pos, self._metadata(tp, pos), -1) for tp, pos in positions.items()}

    def _commit(self, positions: dict[Any, int]) -> bool:
        offsets = self._offsets(positions)
        try:
            self.committer.commit(offsets)
        except Exception as exc:  # noqa: BLE001 - a failed commit only means some redelivery later
            log.warning("commit failed; will retry", extra={"event": "commit_failed", "error": type(exc).__name__})
            return False
        self._committed(positions, offsets)
        return True

    def _committed(self, positions: dict[Any, int], offsets: dict[Any, OffsetAndMetadata]) -> None:
        self.tracker.mark_committed(positions)
        for tp, meta in offsets.items():
            self._meta_sent[tp] = meta.metadata

    def lags(self) -> Iterator[tuple[TopicPartition, int]]:
        """Per assigned partition: the high watermark minus the done prefix."""
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            pos = self.tracker.committable(tp)
            if high is not None and pos is not None:
                yield tp, max(0, high - pos)

    # -- the fetch watchdog -------------------------------------------------------------------------------
    def watch(self) -> Verdict:
        """Every few seconds: is a backlog waiting that Kafka does not deliver? (consumer/watchdog.py)

        ``NUDGE``: the member has left and rejoined the group. ``EXIT``: the caller should drain and exit.
        """
        wd = self._watchdog
        now = self._clock()
        if not wd.enabled or now < self._next_watch:
            return Verdict.OK
        self._next_watch = now + max(1.0, min(10.0, wd.stall_after_s / 4))
        assignment = list(self.consumer.assignment())
        fetchable = bool(assignment) and not self.paused
        delivered, self._delivered = self._delivered, set()
        silent = wd.silent(assignment, delivered) if fetchable else []
        backlog = self._backlog(silent) if silent else ({} if fetchable else None)
        verdict = wd.observe(now, fetchable=fetchable, delivered=delivered, backlog=backlog)
        stalled = sorted(tp.partition for tp in wd.stalled())  # type: ignore[attr-defined]
        log.debug("fetch watchdog: fetchable=%s delivered=%d silent=%d backlog=%s -> %s", fetchable, len(delivered),
                  len(silent), None if backlog is None else sum(backlog.values()), verdict.value,
                  extra={"event": "watchdog", "stalled_partitions": stalled})
        if verdict is Verdict.NUDGE:
            self.metrics.fetch_stalls.labels("rejoin").inc()
            if stalled:
                log.error("Kafka delivers nothing from partitions with records waiting; rejoining the group",
                          extra={"event": "fetch_stalled", "partitions": stalled,
                                 "backlog": sum((backlog or {}).values())})
            else:
                log.error("a rebalance has not ended in an assignment for %.0f s; rejoining the group",
                          wd.stall_after_s, extra={"event": "fetch_stalled", "partitions": [], "backlog": None})
            self._rejoin(assignment)
        elif verdict is Verdict.EXIT:
            self.metrics.fetch_stalls.labels("exit").inc()
            log.critical("Kafka still delivers nothing after rejoining the group (or the rejoin never finished); "
                         "exiting so that a new process takes over",
                         extra={"event": "fetch_stalled_exit", "partitions": stalled,
                                "rejoin_pending": wd.rejoin_started is not None})
        return verdict

    def _backlog(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int] | None:
        """Records between each partition's fetch position and its end; None if the broker did not say in time."""
        deadline = self._clock() + 8.0  # one budget for the whole look: the loop thread waits meanwhile

        def left_ms() -> int:
            return max(100, int((deadline - self._clock()) * 1000))

        try:
            ends = self.consumer.end_offsets(partitions, timeout_ms=left_ms())
            starts: dict[TopicPartition, int] | None = None
            backlog = {}
            for tp in partitions:
                # position() also completes a pending offset reset or validation (upstream issue #3106).
                pos = self.consumer.position(tp, timeout_ms=left_ms())
                if pos is None:
                    starts = starts or self.consumer.beginning_offsets(partitions, timeout_ms=left_ms())
                    pos = starts[tp]
                backlog[tp] = max(0, ends[tp] - pos)
            return backlog
        except Exception as exc:  # noqa: BLE001 - unknown is not a stall; the next look tries again
            log.warning("cannot measure the backlog", extra={"event": "backlog_unknown", "error": type(exc).__name__})
            return None

    def _rejoin(self, assignment: list[TopicPartition]) -> None:
        """Leave the group and join again: a fresh assignment, fresh positions, fresh fetches."""
        self.revoked(assignment)  # kafka-python's unsubscribe() does not call the listener
        self.consumer.unsubscribe()
        self.subscribe()

    def close(self) -> None:
        self.consumer.close(autocommit=False)


__all__ = ["KafkaProblem", "KafkaSource", "Taken"]
