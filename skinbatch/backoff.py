"""One backoff for every retry loop: exponential, capped, with full jitter.

After an outage every consumer of a group sees the fault at the same moment; without jitter they all
retry in lockstep and hit the recovering server together. Full jitter (a uniform draw between zero and
the exponential ceiling, as in the AWS architecture blog's "Exponential Backoff And Jitter") spreads
them over the whole interval.

Pure (the contract module aside): the random source is passed in (tests give a fixed one), no clock, no sleeping.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from skinbatch.contract import ConfigurationError


class Backoff:
    """Delays for successive retries: the n-th is uniform in [0, min(cap, initial · 2ⁿ)].

    ``floor_s`` keeps a delay from being so short that a retry loop spins (a few milliseconds).
    """

    def __init__(self, initial_s: float, max_s: float, *, floor_s: float = 0.01,
                 rand: Callable[[], float] = random.random) -> None:
        if initial_s < 0 or max_s < initial_s:
            raise ConfigurationError(f"retry backoff needs 0 <= initial ({initial_s}) <= max ({max_s})")
        self.initial_s = initial_s
        self.max_s = max_s
        self.floor_s = min(floor_s, initial_s)
        self._rand = rand
        self.attempts = 0

    def ceiling(self) -> float:
        """The upper bound of the next delay."""
        return min(self.max_s, self.initial_s * 2.0 ** min(self.attempts, 62))

    def next(self) -> float:
        """The delay before the next retry (and count the attempt)."""
        delay = max(self.floor_s, self.ceiling() * self._rand())
        self.attempts += 1
        return delay

    def reset(self) -> None:
        """After a success: the next fault starts again from ``initial_s``."""
        self.attempts = 0


__all__ = ["Backoff"]
