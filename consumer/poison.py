"""Poison messages: a message that kills the consumer's process is dead-lettered, not redelivered forever.

The decode pool finds a worker-killing input with its "suspects" (skinbatch/scoring/pipeline.py); this
is the same idea one level up, for a death of the consumer's own process (the kernel's OOM killer, a
crash outside the decode workers), and its state lives in Kafka, in the metadata string of each
partition's committed offset, so that it survives the process and the rebalance. Pure: no Kafka here;
:class:`~skinbatch.consumer.source.KafkaSource` commits what :meth:`PoisonGuard.metadata` returns.

* **Grant before start.** A message may start only below the partition's *granted* offset, and a
  grant is committed (with the done prefix, as metadata ``h``) before anything under it starts. So at
  any death, what was in flight lies in ``[committed, committed + h)``, less the offsets listed done
  (``d``, as runs) at that commit. Grants run ``slack`` messages ahead, so a busy partition commits once per
  ``slack`` messages more than it would anyway.
* **Suspects.** The next owner reads the metadata: every offset that may have been in flight gets one
  more death (``s`` carries the counts on). A suspect is started alone: nothing else in flight in the
  process, the other partitions' grants withdrawn, its own granted exactly (``a``). Messages behind it
  wait.
* **Poison.** A message with two deaths (in flight at a death, then alone at a further one) is
  dead-lettered ``poison`` without being started. No other message is: the others of the first death
  are each started alone afterwards and scored.

A clean stop (SIGTERM, a rebalance) commits no grant: dropping work is not a death. The metadata is a
plain string, so the same works when offsets are committed inside a transaction
(``sendOffsetsToTransaction`` carries ``OffsetAndMetadata`` too).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field

log = logging.getLogger("skinbatch.consumer")

DEATHS_TO_POISON = 2
"""In flight at one death, then alone at a further one."""
METADATA_LIMIT = 3000
"""Characters; brokers refuse offset metadata over ``offset.metadata.max.bytes`` (4096 by default)."""
TAG = "skinbatch.poison"


@dataclass
class _Ledger:
    suspects: dict[int, int] = field(default_factory=dict)
    """Offset → deaths it was (possibly) in flight at."""
    granted: int | None = None
    """Committed: messages below it may start (None: nothing may start before the next commit)."""
    alone: int | None = None
    """Committed: this suspect alone may be in flight in the whole process."""


def read_metadata(text: str | None, position: int) -> dict[int, int]:
    """The suspects a partition's committed ``(position, text)`` implies: the carried counts, plus one
    death for every offset that may have been in flight when its last owner stopped without a clean
    commit. Metadata that is not ours (another tool committed) implies none."""
    try:
        data = json.loads(text or "")
    except ValueError:
        return {}
    if not isinstance(data, dict) or data.get("v") != TAG:
        return {}
    suspects = {position + int(rel): int(n) for rel, n in data.get("s", [])}
    if "a" in data:
        maybe = [position + int(data["a"])]
    else:
        done = {position + int(start) + i for start, length in data.get("d", []) for i in range(int(length))}
        maybe = [o for o in range(position, position + int(data.get("h", 0))) if o not in done]
    for offset in maybe:
        suspects[offset] = suspects.get(offset, 0) + 1
    return suspects


def write_metadata(position: int, suspects: dict[int, int], granted: int | None, alone: int | None,
                   done: Iterable[int]) -> str:
    """The metadata string committed with ``position`` (see the module's notes)."""
    data: dict[str, object] = {"v": TAG}
    carried = sorted((o - position, n) for o, n in suspects.items() if o >= position)
    if carried:
        data["s"] = [list(pair) for pair in carried]
    if alone is not None and alone >= position:
        data["a"] = alone - position
    elif granted is not None and granted > position:
        data["h"] = granted - position
        data["d"] = _runs(sorted(o - position for o in done if position <= o < granted))
    text = json.dumps(data, separators=(",", ":"))
    if len(text) > METADATA_LIMIT and "d" in data:
        del data["d"]  # fewer offsets known done: more suspects next time, never fewer
        text = json.dumps(data, separators=(",", ":"))
    return text


def _runs(offsets: list[int]) -> list[list[int]]:
    """Sorted offsets as [start, length] runs: done offsets past a slow one are mostly contiguous."""
    runs: list[list[int]] = []
    for o in offsets:
        if runs and runs[-1][0] + runs[-1][1] == o:
            runs[-1][1] += 1
        else:
            runs.append([o, 1])
    return runs


class PoisonGuard:
    """One process's view of the suspects of the partitions it owns. Runs on the loop thread."""

    def __init__(self, slack: int) -> None:
        self.slack = max(1, slack)
        self._ledgers: dict[Hashable, _Ledger] = {}
        self.alone_in_flight: tuple[Hashable, int] | None = None

    # -- ownership ---------------------------------------------------------------------------------------
    def loaded(self, tp: Hashable) -> bool:
        return tp in self._ledgers

    def load(self, tp: Hashable, position: int | None, text: str | None) -> dict[int, int]:
        """A partition's first record since it was assigned: its suspects from the committed metadata."""
        suspects = read_metadata(text, position) if position is not None else {}
        self._ledgers[tp] = _Ledger(suspects)
        if suspects:
            log.warning("the partition's last owner stopped with messages in flight; they are retried one at "
                        "a time", extra={"event": "suspects", "partition": getattr(tp, "partition", None),
                                         "suspects": len(suspects), "last_offset": max(suspects),
                                         "poison": sum(n >= DEATHS_TO_POISON for n in suspects.values())})
        return suspects

    def forget(self, tp: Hashable) -> None:
        self._ledgers.pop(tp, None)
        if self.alone_in_flight is not None and self.alone_in_flight[0] == tp:
            self.alone_in_flight = None

    # -- one record ------------------------------------------------------------------------------------
    def deaths(self, tp: Hashable, offset: int) -> int:
        ledger = self._ledgers.get(tp)
        return 0 if ledger is None else ledger.suspects.get(offset, 0)

    def poison(self, tp: Hashable, offset: int) -> bool:
        return self.deaths(tp, offset) >= DEATHS_TO_POISON

    def suspect(self, tp: Hashable, offset: int) -> bool:
        return 0 < self.deaths(tp, offset) < DEATHS_TO_POISON

    def passed(self, tp: Hashable, offset: int, tracked: Callable[[int], bool]) -> None:
        """Offset ``offset`` was taken: suspects below it never taken (``tracked`` False) are gaps
        (compaction, transaction markers) and are dropped."""
        ledger = self._ledgers.get(tp)
        if ledger is None or not ledger.suspects:
            return
        for o in [o for o in ledger.suspects if o < offset and not tracked(o)]:
            del ledger.suspects[o]

    def may_start(self, tp: Hashable, offset: int) -> bool:
        """Started now, is the record covered by the grant already committed?"""
        ledger = self._ledgers.get(tp)
        if ledger is None:
            return True  # not loaded (no committed state could be read): unguarded, as before
        return ledger.alone is None and ledger.granted is not None and offset < ledger.granted

    def grant(self, tp: Hashable, upto: int) -> None:
        """Let records below ``upto + slack`` start (effective once committed)."""
        ledger = self._ledgers.get(tp)
        if ledger is not None:
            ledger.granted, ledger.alone = upto + self.slack, None

    def go_alone(self, tp: Hashable, offset: int) -> list[Hashable]:
        """Before a suspect starts (nothing in flight): withdraw every grant, grant it alone. Returns the
        partitions whose metadata must be committed now."""
        for ledger in self._ledgers.values():
            ledger.granted, ledger.alone = None, None
        self._ledgers[tp].alone = offset
        self.alone_in_flight = (tp, offset)
        return list(self._ledgers)

    def finished(self, tp: Hashable, offset: int) -> bool:
        """The record is answered (scored, dead-lettered or poisoned): no longer a suspect. True when it
        was the suspect alone in flight: its partition's metadata should be committed at once, since a
        death before that commit would still count against it (answered, and then dead-lettered)."""
        ledger = self._ledgers.get(tp)
        if ledger is not None:
            ledger.suspects.pop(offset, None)
        if self.alone_in_flight != (tp, offset):
            return False
        self.alone_in_flight = None
        if ledger is not None:
            ledger.alone = None
        return True

    def stop_cleanly(self, tps: Iterable[Hashable] | None = None) -> None:
        """A clean stop (of everything, or of revoked partitions): in-flight work is dropped, not
        killed; commit no grant."""
        for tp in list(self._ledgers) if tps is None else tps:
            ledger = self._ledgers.get(tp)
            if ledger is not None:
                ledger.granted, ledger.alone = None, None

    # -- commits -----------------------------------------------------------------------------------------
    def metadata(self, tp: Hashable, position: int, done: Iterable[int]) -> str:
        ledger = self._ledgers.get(tp)
        if ledger is None:
            return ""
        return write_metadata(position, ledger.suspects, ledger.granted, ledger.alone, done)


__all__ = ["DEATHS_TO_POISON", "PoisonGuard", "read_metadata", "write_metadata"]
