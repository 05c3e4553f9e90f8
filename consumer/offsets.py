"""Offset bookkeeping for out-of-order completion. Pure: no Kafka.

Messages of one partition finish in any order (decoding and inference run in parallel), but Kafka
commits a single position per partition. The committable position is therefore the first offset that
is not yet done: everything before it has been fully processed (results produced and acknowledged).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field


@dataclass
class _PartitionState:
    pending: set[int] = field(default_factory=set)
    next_offset: int | None = None  # one past the highest offset seen
    committed: int | None = None


class OffsetTracker:
    """Tracks which offsets of each partition are in flight."""

    def __init__(self) -> None:
        self._parts: dict[Hashable, _PartitionState] = {}

    def started(self, partition: Hashable, offset: int) -> None:
        state = self._parts.setdefault(partition, _PartitionState())
        state.pending.add(offset)
        if state.next_offset is None or offset + 1 > state.next_offset:
            state.next_offset = offset + 1

    def finished(self, partition: Hashable, offset: int) -> bool:
        """Mark an offset done. False if the partition was revoked meanwhile (stale work)."""
        state = self._parts.get(partition)
        if state is None or offset not in state.pending:
            return False
        state.pending.discard(offset)
        return True

    def is_tracked(self, partition: Hashable, offset: int) -> bool:
        state = self._parts.get(partition)
        return state is not None and offset in state.pending

    def committable(self, partition: Hashable) -> int | None:
        """The position to commit: the lowest pending offset, else one past the highest seen."""
        state = self._parts.get(partition)
        if state is None or state.next_offset is None:
            return None
        return min(state.pending) if state.pending else state.next_offset

    def to_commit(self) -> dict[Hashable, int]:
        """Positions that moved since they were last marked committed."""
        out = {}
        for partition, state in self._parts.items():
            position = self.committable(partition)
            if position is not None and position != state.committed:
                out[partition] = position
        return out

    def mark_committed(self, positions: dict[Hashable, int]) -> None:
        for partition, position in positions.items():
            if partition in self._parts:
                self._parts[partition].committed = position

    def done_from(self, partition: Hashable, position: int) -> list[int]:
        """Offsets at or past ``position`` that were taken and are done (answered), lowest first."""
        state = self._parts.get(partition)
        if state is None or state.next_offset is None:
            return []
        return [o for o in range(position, state.next_offset) if o not in state.pending]

    def forget(self, partition: Hashable) -> None:
        """Drop a revoked partition: its in-flight work no longer counts."""
        self._parts.pop(partition, None)

    def in_flight(self) -> int:
        return sum(len(s.pending) for s in self._parts.values())

    def partitions(self) -> list[Hashable]:
        return list(self._parts)
