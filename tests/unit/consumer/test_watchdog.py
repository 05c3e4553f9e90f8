"""The fetch watchdog: a waiting backlog that Kafka does not deliver is noticed, nudged, then abandoned."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consumer.watchdog import FetchWatchdog, Verdict


def _look(wd: FetchWatchdog, now: float, backlog: int | None = 5, *, fetchable: bool = True,
          got: bool = False) -> Verdict:
    return wd.observe(now, fetchable=fetchable, got_records=got, backlog=backlog)


def test_waiting_backlog_is_nudged_then_abandoned() -> None:
    wd = FetchWatchdog(stall_after_s=60)
    assert _look(wd, 100) is Verdict.OK  # the stall starts here
    assert _look(wd, 159) is Verdict.OK
    assert _look(wd, 160) is Verdict.NUDGE
    assert _look(wd, 170) is Verdict.OK  # one nudge only
    assert _look(wd, 219) is Verdict.OK
    assert _look(wd, 220) is Verdict.EXIT
    assert wd.stalled_for(220) == 60  # since the nudge


def test_records_arriving_end_the_stall() -> None:
    wd = FetchWatchdog(stall_after_s=60)
    _look(wd, 0)
    assert _look(wd, 60) is Verdict.NUDGE
    assert _look(wd, 70, backlog=None, got=True) is Verdict.OK  # the nudge worked
    assert wd.stalled_since is None and not wd.nudged
    assert _look(wd, 80) is Verdict.OK
    assert _look(wd, 139) is Verdict.OK
    assert _look(wd, 140) is Verdict.NUDGE  # a new stall is nudged again, not abandoned at once


def test_paused_or_idle_consumers_never_stall() -> None:
    wd = FetchWatchdog(stall_after_s=10)
    for t in range(0, 1000, 5):
        # Backpressure or Triton down (not fetchable), or simply nothing to fetch.
        assert _look(wd, t, fetchable=t % 2 == 0, backlog=0 if t % 2 == 0 else 50) is Verdict.OK


def test_the_gap_a_rejoin_makes_does_not_forgive_the_stall() -> None:
    wd = FetchWatchdog(stall_after_s=10)
    _look(wd, 0)
    assert _look(wd, 10) is Verdict.NUDGE
    assert _look(wd, 11, fetchable=False, backlog=None) is Verdict.OK  # no assignment while rejoining
    assert _look(wd, 12) is Verdict.OK  # assigned again; still nothing arrives
    assert _look(wd, 21) is Verdict.OK
    assert _look(wd, 22) is Verdict.EXIT


def test_a_pause_resets_the_clock() -> None:
    wd = FetchWatchdog(stall_after_s=10)
    _look(wd, 0)
    assert _look(wd, 9) is Verdict.OK
    assert _look(wd, 10, fetchable=False) is Verdict.OK
    assert _look(wd, 15) is Verdict.OK
    assert _look(wd, 25) is Verdict.NUDGE


def test_unknown_backlog_neither_starts_nor_ends_a_stall() -> None:
    wd = FetchWatchdog(stall_after_s=10)
    assert _look(wd, 0, backlog=None) is Verdict.OK
    assert wd.stalled_since is None
    _look(wd, 1)
    assert _look(wd, 11, backlog=None) is Verdict.NUDGE  # the broker stopped answering too: still a stall
    assert _look(wd, 21, backlog=None) is Verdict.EXIT


def test_disabled() -> None:
    wd = FetchWatchdog(stall_after_s=0)
    assert not wd.enabled and not wd.needs_backlog(True, False)
    assert all(_look(wd, t) is Verdict.OK for t in range(0, 10_000, 100))


def test_backlog_is_measured_only_when_it_decides_something() -> None:
    wd = FetchWatchdog(stall_after_s=10)
    assert wd.needs_backlog(fetchable=True, got_records=False)
    assert not wd.needs_backlog(fetchable=False, got_records=False)
    assert not wd.needs_backlog(fetchable=True, got_records=True)


@given(st.lists(st.tuples(st.floats(0, 30), st.booleans(), st.booleans(), st.one_of(st.none(), st.integers(0, 9))),
                max_size=60))
def test_exit_only_after_a_nudge_and_twice_the_limit(looks: list[tuple[float, bool, bool, int | None]]) -> None:
    wd = FetchWatchdog(stall_after_s=20)
    now, nudged_at = 0.0, None
    for step, fetchable, got, backlog in looks:
        now += step
        verdict = wd.observe(now, fetchable=fetchable, got_records=got, backlog=backlog)
        if verdict is Verdict.NUDGE:
            nudged_at = now
        if verdict is Verdict.EXIT:
            assert nudged_at is not None and now - nudged_at >= 20
            return
        if not wd.nudged:
            nudged_at = None
