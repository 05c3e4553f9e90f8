"""Notice when Kafka stops handing out records that are there, and act before the backlog grows.

kafka-python 3.0.x can stop fetching an assigned partition while the member stays in the group, so
the broker sees a healthy consumer and nothing moves its partitions (upstream issues #3106 and
#3131: a position left "awaiting validation"; we also saw its coordinator spin at 100% CPU after a
rebalance). Nothing fails, nothing is logged, and the lag only grows.

The watchdog is pure logic: the service feeds it, every few seconds, whether consumption could run
(partitions assigned, not paused), whether records arrived since the last look and, only when none
did, how many records lie between the fetch positions and the partitions' ends. When that backlog
sits untouched for ``stall_after_s`` it asks once for a nudge (the service rejoins the group, which
gives it a fresh assignment and fresh fetch positions), then, if still nothing arrives within another
``stall_after_s`` of fetchable time, for an exit: the process stops with :data:`EXIT_FETCH_STALLED`, the orchestrator
restarts it, and uncommitted messages are redelivered to the new member (at least once).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

EXIT_FETCH_STALLED = 3
"""Exit status of a consumer that stopped because Kafka no longer delivered its backlog."""


class Verdict(enum.Enum):
    OK = "ok"
    NUDGE = "nudge"
    EXIT = "exit"


@dataclass
class FetchWatchdog:
    stall_after_s: float
    """Seconds a backlog may wait, unfetched, before the watchdog acts; 0 or less disables it."""
    stalled_since: float | None = None
    nudged: bool = False

    @property
    def enabled(self) -> bool:
        return self.stall_after_s > 0

    def needs_backlog(self, fetchable: bool, got_records: bool) -> bool:
        """Whether the caller should measure the backlog for the next :meth:`observe`."""
        return self.enabled and fetchable and not got_records

    def observe(self, now: float, *, fetchable: bool, got_records: bool, backlog: int | None) -> Verdict:
        """One look. ``backlog`` is None where it was not measured, or could not be."""
        if not self.enabled:
            return Verdict.OK
        if got_records or backlog == 0:
            # Progress, or nothing to fetch: all is well, and a nudge that led here worked.
            self.stalled_since = None
            self.nudged = False
            return Verdict.OK
        if not fetchable:
            # Paused (backpressure, Triton down, draining) or between assignments, as right after a
            # rejoin: the clock restarts, but a nudge already given is not forgotten.
            self.stalled_since = None
            return Verdict.OK
        if backlog is None and self.stalled_since is None:
            return Verdict.OK  # an unknown backlog does not start a stall (it does not end one either)
        if self.stalled_since is None:
            self.stalled_since = now
            return Verdict.OK
        if now - self.stalled_since < self.stall_after_s:
            return Verdict.OK
        if self.nudged:
            return Verdict.EXIT
        self.nudged = True
        self.stalled_since = now  # the nudge gets a full period of its own
        return Verdict.NUDGE

    def stalled_for(self, now: float) -> float:
        return 0.0 if self.stalled_since is None else now - self.stalled_since


__all__ = ["EXIT_FETCH_STALLED", "FetchWatchdog", "Verdict"]
