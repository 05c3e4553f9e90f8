"""Poison messages: the state a dead consumer leaves in its committed offset's metadata (pure logic)."""

from __future__ import annotations

import json

from skinbatch.consumer.poison import DEATHS_TO_POISON, METADATA_LIMIT, PoisonGuard, read_metadata, write_metadata

TP = ("req", 0)


def _die(guard: PoisonGuard, position: int, done: tuple[int, ...] = ()) -> tuple[int, str]:
    """What Kafka holds when the process dies now: the last metadata committed at ``position``."""
    return position, guard.metadata(TP, position, done)


def test_a_death_makes_every_message_that_may_have_been_in_flight_a_suspect() -> None:
    first = PoisonGuard(slack=4)
    first.load(TP, 100, None)
    assert not first.may_start(TP, 100)  # nothing may start before a grant is committed
    first.grant(TP, 121)  # 21 records taken at 100..120
    assert first.may_start(TP, 120) and first.may_start(TP, 124) and not first.may_start(TP, 125)
    position, meta = _die(first, 100, done=(101, 103))
    second = PoisonGuard(slack=4)
    suspects = second.load(TP, position, meta)
    assert set(suspects) == set(range(100, 125)) - {101, 103}
    assert set(suspects.values()) == {1}
    assert second.suspect(TP, 100) and not second.poison(TP, 100) and not second.suspect(TP, 101)


def test_alone_at_a_further_death_is_poison_and_no_other_message_is() -> None:
    first = PoisonGuard(slack=2)
    first.load(TP, 0, None)
    first.grant(TP, 21)
    second = PoisonGuard(slack=2)
    second.load(TP, *_die(first, 0))
    for offset in range(7):  # the suspects before the culprit are retried alone and answered
        second.go_alone(TP, offset)
        second.finished(TP, offset)
    second.go_alone(TP, 7)  # the culprit, alone: the process dies again
    third = PoisonGuard(slack=2)
    suspects = third.load(TP, *_die(second, 7))
    assert [o for o, n in suspects.items() if n >= DEATHS_TO_POISON] == [7]
    assert third.poison(TP, 7)
    assert all(third.suspect(TP, o) for o in range(8, 23))  # still retried alone, not dead-lettered
    assert not any(third.poison(TP, o) for o in range(8, 23))


def test_a_clean_stop_carries_suspects_but_adds_no_death() -> None:
    guard = PoisonGuard(slack=8)
    guard.load(TP, 0, write_metadata(0, {3: 1}, None, None, []))
    guard.grant(TP, 10)
    guard.stop_cleanly()
    meta = guard.metadata(TP, 2, [])
    assert read_metadata(meta, 2) == {3: 1}
    assert "h" not in json.loads(meta)


def test_going_alone_withdraws_every_other_partitions_grant() -> None:
    other = ("req", 1)
    guard = PoisonGuard(slack=8)
    guard.load(TP, 0, write_metadata(0, {0: 1}, None, None, []))
    guard.load(other, 50, None)
    guard.grant(other, 60)
    assert set(guard.go_alone(TP, 0)) == {TP, other}
    assert read_metadata(guard.metadata(other, 60, []), 60) == {}
    assert not guard.may_start(other, 60)  # a new grant must be committed after the suspect
    guard.finished(TP, 0)
    assert guard.alone_in_flight is None and not guard.may_start(TP, 1)


def test_gaps_in_the_offsets_are_not_suspects_for_ever() -> None:
    guard = PoisonGuard(slack=8)
    guard.load(TP, 0, write_metadata(0, {}, 4, None, []))
    guard.passed(TP, 2, tracked=lambda o: o == 2)  # 0 and 1 are transaction markers or compacted away
    assert not guard.suspect(TP, 0) and not guard.suspect(TP, 1) and guard.suspect(TP, 3)


def test_metadata_of_another_tool_implies_nothing() -> None:
    assert read_metadata("", 5) == {}
    assert read_metadata("committed by a script", 5) == {}
    assert read_metadata('{"v": 2, "h": 9}', 5) == {}


def test_done_offsets_past_a_slow_one_are_written_as_runs() -> None:
    meta = write_metadata(10, {}, 10_020, None, range(11, 10_011))  # 10 is slow; 10,000 done behind it
    assert len(meta) < 100
    assert set(read_metadata(meta, 10)) == {10, *range(10_011, 10_020)}


def test_metadata_stays_under_the_brokers_limit() -> None:
    meta = write_metadata(0, {}, 5000, None, range(0, 5000, 2))
    assert len(meta) <= METADATA_LIMIT
    assert len(read_metadata(meta, 0)) == 5000  # without the done list: every offset is a suspect


def test_only_the_suspect_alone_reports_that_its_metadata_must_be_committed_at_once() -> None:
    guard = PoisonGuard(slack=2)
    guard.load(TP, 0, write_metadata(0, {0: 1, 1: 1}, None, None, []))
    guard.go_alone(TP, 0)
    assert "a" in json.loads(guard.metadata(TP, 0, []))  # a death now counts against offset 0
    assert guard.finished(TP, 5) is False
    assert guard.finished(TP, 0) is True
    assert "a" not in json.loads(guard.metadata(TP, 1, [])) and guard.finished(TP, 0) is False
