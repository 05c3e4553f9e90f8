"""Offset bookkeeping: only a fully processed prefix is ever committed."""

from __future__ import annotations

import random

from hypothesis import given, settings, strategies as st

from skinbatch.consumer.offsets import OffsetTracker


def test_commits_only_the_done_prefix() -> None:
    t = OffsetTracker()
    for off in (10, 11, 12, 13):
        t.started("p0", off)
    assert t.committable("p0") == 10
    t.finished("p0", 12)
    t.finished("p0", 11)
    assert t.committable("p0") == 10  # 10 is still in flight
    t.finished("p0", 10)
    assert t.committable("p0") == 13
    t.finished("p0", 13)
    assert t.committable("p0") == 14
    assert t.to_commit() == {"p0": 14}
    t.mark_committed({"p0": 14})
    assert t.to_commit() == {}


def test_revoked_partition_drops_its_work() -> None:
    t = OffsetTracker()
    t.started("p0", 5)
    t.forget("p0")
    assert t.finished("p0", 5) is False
    assert t.committable("p0") is None
    assert t.in_flight() == 0


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 1000), st.integers(1, 60), st.randoms(use_true_random=False))
def test_committed_position_never_passes_an_unfinished_offset(start: int, n: int, rnd: random.Random) -> None:
    t = OffsetTracker()
    offsets = list(range(start, start + n))
    for off in offsets:
        t.started("p", off)
    order = offsets[:]
    rnd.shuffle(order)
    done: set[int] = set()
    for off in order:
        t.finished("p", off)
        done.add(off)
        pos = t.committable("p")
        assert pos is not None
        assert all(o in done for o in range(start, pos))
        assert pos == start + n or pos not in done
    assert t.committable("p") == start + n
