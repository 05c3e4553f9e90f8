"""The fetch watchdog: a waiting backlog that Kafka does not deliver is noticed, nudged, then abandoned."""

from __future__ import annotations

from hypothesis import given, strategies as st

from skinbatch.consumer.watchdog import FetchWatchdog, Verdict


def _look(wd: FetchWatchdog, now: float, backlog: dict[int, int] | None = None, *, fetchable: bool = True,
          delivered: set[int] | frozenset[int] = frozenset()) -> Verdict:
    if backlog is None and fetchable:
        backlog = {0: 5}
    return wd.observe(now, fetchable=fetchable, delivered=delivered, backlog=backlog)


def test_waiting_backlog_is_nudged_then_abandoned() -> None:
    wd = FetchWatchdog(stall_after_s=60)
    assert _look(wd, 100) is Verdict.OK  # the stall starts here
    assert _look(wd, 159) is Verdict.OK
    assert _look(wd, 160) is Verdict.NUDGE
    wd.joined()  # the rejoin ended in an assignment
    assert _look(wd, 170) is Verdict.OK  # one nudge only
    assert _look(wd, 219) is Verdict.OK
    assert _look(wd, 220) is Verdict.EXIT
    assert wd.stalled_for(220) == 60  # since the nudge


def test_records_arriving_end_the_stall() -> None:
    wd = FetchWatchdog(stall_after_s=60)
    _look(wd, 0)
    assert _look(wd, 60) is Verdict.NUDGE
    wd.joined()
    assert _look(wd, 70, {}, delivered={0}) is Verdict.OK  # the nudge worked
    assert not wd.stalled_since and not wd.nudged
    assert _look(wd, 80) is Verdict.OK
    assert _look(wd, 139) is Verdict.OK
    assert _look(wd, 140) is Verdict.NUDGE  # a new stall is nudged again, not abandoned at once


def test_one_stuck_partition_is_not_hidden_by_busy_ones() -> None:
    wd = FetchWatchdog(stall_after_s=30)
    for t in range(0, 30, 10):
        # Partitions 0 and 1 deliver every time; partition 2 holds 7 records and never does.
        assert _look(wd, t, {2: 7}, delivered={0, 1}) is Verdict.OK
    assert _look(wd, 30, {2: 7}, delivered={0, 1}) is Verdict.NUDGE
    assert wd.stalled() == [2]


def test_a_stall_moving_between_partitions_keeps_its_age_only_per_partition() -> None:
    wd = FetchWatchdog(stall_after_s=30)
    _look(wd, 0, {1: 3})
    assert _look(wd, 20, {2: 3}, delivered={1}) is Verdict.OK  # 1 recovered, 2 starts now
    assert _look(wd, 45, {2: 3}, delivered={1}) is Verdict.OK
    assert _look(wd, 50, {2: 3}, delivered={1}) is Verdict.NUDGE


def test_paused_or_idle_consumers_never_stall() -> None:
    wd = FetchWatchdog(stall_after_s=10)
    for t in range(0, 1000, 5):
        # Backpressure or Triton down (not fetchable), or simply nothing to fetch.
        if t % 2:
            assert _look(wd, t, None, fetchable=False) is Verdict.OK
        else:
            assert _look(wd, t, {0: 0, 1: 0}) is Verdict.OK


def test_a_pause_resets_the_clock() -> None:
    wd = FetchWatchdog(stall_after_s=10)
    _look(wd, 0)
    assert _look(wd, 9) is Verdict.OK
    assert _look(wd, 10, None, fetchable=False) is Verdict.OK
    assert _look(wd, 15) is Verdict.OK
    assert _look(wd, 25) is Verdict.NUDGE


def test_the_gap_a_rejoin_makes_does_not_forgive_the_stall() -> None:
    wd = _nudged_at_10()
    assert _look(wd, 11, None, fetchable=False) is Verdict.OK  # no assignment while rejoining
    wd.joined()
    assert _look(wd, 12) is Verdict.OK  # assigned again; still nothing arrives
    assert _look(wd, 21) is Verdict.OK
    assert _look(wd, 22) is Verdict.EXIT


def _nudged_at_10() -> FetchWatchdog:
    wd = FetchWatchdog(stall_after_s=10)
    _look(wd, 0)
    assert _look(wd, 10) is Verdict.NUDGE
    return wd


def test_a_rejoin_that_never_ends_in_an_assignment_exits() -> None:
    wd = _nudged_at_10()
    for t in range(11, 20):
        assert _look(wd, t, None, fetchable=False) is Verdict.OK  # the group protocol is stuck
    assert _look(wd, 20, None, fetchable=False) is Verdict.EXIT


def test_an_empty_assignment_after_a_rejoin_is_not_a_stall() -> None:
    """More members than partitions: the rejoin ends with nothing assigned, and that is fine."""
    wd = _nudged_at_10()
    wd.joined()
    assert all(_look(wd, t, None, fetchable=False) is Verdict.OK for t in range(11, 200))


def test_an_unmeasurable_backlog_neither_starts_nor_continues_a_stall() -> None:
    wd = FetchWatchdog(stall_after_s=10)
    assert wd.observe(0, fetchable=True, delivered=(), backlog=None) is Verdict.OK
    _look(wd, 1)
    assert wd.observe(9, fetchable=True, delivered=(), backlog=None) is Verdict.OK  # broker down: clocks restart
    assert _look(wd, 12) is Verdict.OK
    assert _look(wd, 22) is Verdict.NUDGE


def test_disabled() -> None:
    wd = FetchWatchdog(stall_after_s=0)
    assert not wd.enabled and wd.silent([0, 1], set()) == []
    assert all(_look(wd, t) is Verdict.OK for t in range(0, 10_000, 100))


def test_only_silent_partitions_are_measured() -> None:
    wd = FetchWatchdog(stall_after_s=10)
    assert wd.silent([0, 1, 2], {1}) == [0, 2]
    assert wd.silent([0, 1], {0, 1}) == []


@given(st.lists(st.tuples(st.floats(0, 30), st.booleans(), st.sets(st.integers(0, 3)),
                          st.one_of(st.none(), st.dictionaries(st.integers(0, 3), st.integers(0, 9))),
                          st.booleans()),
                max_size=60))
def test_exit_only_after_a_nudge_and_a_full_period(
        looks: list[tuple[float, bool, set[int], dict[int, int] | None, bool]]) -> None:
    wd = FetchWatchdog(stall_after_s=20)
    now, nudged_at = 0.0, None
    for step, fetchable, delivered, backlog, join in looks:
        now += step
        if join:
            wd.joined()
        verdict = wd.observe(now, fetchable=fetchable, delivered=delivered, backlog=backlog)
        if verdict is Verdict.NUDGE:
            nudged_at = now
        if verdict is Verdict.EXIT:
            assert nudged_at is not None and now - nudged_at >= 20
            return
        if not wd.nudged:
            nudged_at = None


def test_a_rebalance_that_never_ends_in_an_assignment_is_nudged_then_abandoned() -> None:
    wd = FetchWatchdog(stall_after_s=60)
    wd.joined()
    assert _look(wd, 0, {}) is Verdict.OK
    wd.rebalancing(10)  # the group took the (empty) assignment back, and the join never finishes
    assert _look(wd, 69, fetchable=False) is Verdict.OK
    assert _look(wd, 70, fetchable=False) is Verdict.NUDGE
    assert _look(wd, 129, fetchable=False) is Verdict.OK
    assert _look(wd, 130, fetchable=False) is Verdict.EXIT  # the nudge's own rejoin never finished either


def test_a_rebalance_that_ends_in_an_assignment_is_not_a_stall() -> None:
    wd = FetchWatchdog(stall_after_s=60)
    wd.rebalancing(0)
    wd.rebalancing(30)  # revoked again before the assignment: the clock runs from the first
    wd.joined()
    assert _look(wd, 100, fetchable=False) is Verdict.OK
    assert _look(wd, 200, {}) is Verdict.OK and not wd.nudged
