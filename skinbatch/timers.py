"""Actions due later, run by the loop that owns them. Pure (the clock is passed in); not thread-safe."""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable


class Timers:
    """``later(delay, action)``, then ``run_due()`` on every turn of the loop."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()

    def later(self, delay: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (self._clock() + delay, next(self._seq), action))

    def run_due(self) -> int:
        """Run every action whose time has come (in order); returns how many ran."""
        now, ran = self._clock(), 0
        while self._heap and self._heap[0][0] <= now:
            _, _, action = heapq.heappop(self._heap)
            action()
            ran += 1
        return ran

    def clear(self) -> None:
        self._heap.clear()

    def __len__(self) -> int:
        return len(self._heap)


__all__ = ["Timers"]
