"""The one backoff: exponential ceiling, cap, full jitter, reset."""

from __future__ import annotations

import random

import pytest

from skinbatch.backoff import Backoff


def test_ceiling_doubles_up_to_the_cap() -> None:
    backoff = Backoff(0.5, 10.0, rand=lambda: 1.0)
    assert [backoff.next() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_full_jitter_draws_between_floor_and_ceiling() -> None:
    rng = random.Random(7)
    backoff = Backoff(1.0, 8.0, rand=rng.random)
    for _ in range(5):
        backoff.next()
    delays = [Backoff(1.0, 8.0, rand=rng.random) for _ in range(200)]
    firsts = [b.next() for b in delays]
    assert all(0.01 <= d <= 1.0 for d in firsts)
    assert len(set(firsts)) > 150  # not lockstep: the members of a group spread out
    capped = [backoff.next() for _ in range(200)]
    assert all(0.01 <= d <= 8.0 for d in capped)
    assert min(capped) < 2.0 < max(capped)


def test_floor_keeps_a_retry_loop_from_spinning() -> None:
    assert Backoff(0.5, 1.0, rand=lambda: 0.0).next() == 0.01


def test_reset_starts_again_from_the_initial_delay() -> None:
    backoff = Backoff(0.5, 10.0, rand=lambda: 1.0)
    for _ in range(4):
        backoff.next()
    backoff.reset()
    assert backoff.next() == 0.5


@pytest.mark.parametrize(("initial", "cap"), [(-1.0, 1.0), (2.0, 1.0)])
def test_refuses_settings_that_cannot_work(initial: float, cap: float) -> None:
    with pytest.raises(ValueError):
        Backoff(initial, cap)


def test_zero_initial_delay_retries_at_once() -> None:
    assert Backoff(0.0, 1.0, rand=lambda: 1.0).next() == 0.0
