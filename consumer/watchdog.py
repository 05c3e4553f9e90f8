"""Notice when Kafka stops handing out records that are there, and act before the backlog grows.

kafka-python 3.0.x can stop fetching an assigned partition while the member stays in the group, so
the broker sees a healthy consumer and nothing moves its partitions (upstream issues #3106 and
#3131: a position left "awaiting validation", one partition at a time; we also saw its coordinator
spin at 100% CPU after a rebalance). Nothing fails, nothing is logged, and the lag only grows.

The watchdog is pure logic, with a clock per partition. The service feeds it, every few seconds,
whether consumption could run (partitions assigned, not paused), which partitions delivered records
since the last look and, for the others, how many records lie between their fetch positions and their
ends. When a partition's backlog sits undelivered for ``stall_after_s`` it asks once for a nudge (the
service rejoins the group, which gives it a fresh assignment and fresh fetch positions); if a backlog
is still undelivered ``stall_after_s`` of fetchable time later, or if the rejoin itself does not end
in an assignment within ``stall_after_s``, it asks for an exit: the process stops with
:attr:`skinbatch.contract.ExitCode.FETCH_STALLED`, the orchestrator restarts it, and uncommitted messages are
redelivered to
the new member (at least once).

A rebalance that never ends is a stall too: kafka-python 3.0 was seen to revoke a member's (empty)
assignment when the request topic's metadata arrived, then never finish the join, for minutes, while
the topic's records waited (CI, the Java codec test). A rebalance that has not ended in an assignment
``stall_after_s`` after the revocation gets the same nudge, then the same exit.

Not a stall: a paused consumer (backpressure, Triton or the archive down, draining), a partition with
nothing to fetch, a consumer with no partitions (more members than partitions), and a backlog that
cannot be measured (the broker is down: restarting would not help).
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Hashable, Mapping
from dataclasses import dataclass, field


class Verdict(enum.Enum):
    OK = "ok"
    NUDGE = "nudge"
    EXIT = "exit"


@dataclass
class FetchWatchdog:
    stall_after_s: float
    """Seconds a backlog may wait, undelivered, before the watchdog acts; 0 or less disables it."""
    stalled_since: dict[Hashable, float] = field(default_factory=dict)
    """Partition → when its undelivered backlog was first seen (only partitions stalled now)."""
    nudged: bool = False
    rejoin_started: float | None = None
    """When the nudge's rejoin began; None once it ended in an assignment."""
    rebalance_started: float | None = None
    """When the group last took this member's partitions back; None once it handed some out again."""

    @property
    def enabled(self) -> bool:
        return self.stall_after_s > 0

    def silent(self, assigned: Collection[Hashable], delivered: Collection[Hashable]) -> list[Hashable]:
        """The partitions whose backlog the caller should measure for the next :meth:`observe`."""
        return [p for p in assigned if p not in delivered] if self.enabled else []

    def joined(self) -> None:
        """The group handed this member an assignment (possibly empty): a rejoin has completed."""
        self.rejoin_started = None
        self.rebalance_started = None

    def rebalancing(self, now: float) -> None:
        """The group revoked this member's partitions: an assignment should follow within seconds."""
        if self.rebalance_started is None:
            self.rebalance_started = now

    def observe(self, now: float, *, fetchable: bool, delivered: Collection[Hashable],
                backlog: Mapping[Hashable, int] | None) -> Verdict:
        """One look. ``backlog``: undelivered records of the silent partitions; None if it could not be measured."""
        if not self.enabled:
            return Verdict.OK
        if self.rejoin_started is not None and now - self.rejoin_started >= self.stall_after_s:
            return Verdict.EXIT  # the rejoin never finished: the group protocol itself is stuck
        if self.rebalance_started is not None and now - self.rebalance_started >= self.stall_after_s:
            if self.nudged:
                return Verdict.EXIT
            self.nudged, self.rejoin_started, self.rebalance_started = True, now, None
            return Verdict.NUDGE  # the join is stuck: leave the group and join afresh
        if fetchable:
            self.rejoin_started = None  # partitions are assigned: any rejoin has finished
        if not fetchable or backlog is None:
            # Paused, between assignments, or the broker does not answer: clocks restart, but a nudge
            # already given is not forgotten.
            self.stalled_since.clear()
            return Verdict.OK
        waiting = {p for p, n in backlog.items() if n > 0 and p not in delivered}
        self.stalled_since = {p: self.stalled_since.get(p, now) for p in waiting}
        if not waiting:
            self.nudged = False  # every partition delivers or has nothing to deliver: all is well
            return Verdict.OK
        if now - min(self.stalled_since.values()) < self.stall_after_s:
            return Verdict.OK
        if self.nudged:
            return Verdict.EXIT
        self.nudged = True
        self.rejoin_started = now
        self.stalled_since = {p: now for p in waiting}  # the nudge gets a full period of its own
        return Verdict.NUDGE

    def stalled_for(self, now: float) -> float:
        return 0.0 if not self.stalled_since else now - min(self.stalled_since.values())

    def stalled(self) -> list[Hashable]:
        return list(self.stalled_since)


__all__ = ["FetchWatchdog", "Verdict"]
