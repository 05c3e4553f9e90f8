"""Liveness, readiness and the self-exit of a wedged consumer (pure state, a clock passed in)."""

from __future__ import annotations

import threading

from skinbatch.consumer.health import Health, WedgeWatch
from skinbatch.contract import ExitCode


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _ready_health(clock: Clock) -> Health:
    health = Health(30.0, clock=clock)
    health.started, health.kafka, health.triton = True, True, True
    return health


def test_live_until_the_loop_stops_turning() -> None:
    clock = Clock()
    health = _ready_health(clock)
    health.turned(work_in_flight=False, waiting_on_purpose=False)
    clock.now += 29
    assert health.live()[0] and health.ready()[0]
    clock.now += 2
    live, why = health.live()
    assert not live and "not turned" in why
    assert not health.ready()[0]


def test_work_that_finishes_nothing_is_stuck_unless_it_waits_on_purpose() -> None:
    clock = Clock()
    health = _ready_health(clock)
    for _ in range(40):  # the loop turns every 10 s, work in flight, nothing answered
        clock.now += 10
        health.turned(work_in_flight=True, waiting_on_purpose=False)
    live, why = health.live()
    assert not live and "finished nothing" in why
    health.turned(work_in_flight=True, waiting_on_purpose=True)  # Triton is down: the work waits for it
    assert health.live()[0]
    clock.now += 200
    health.turned(work_in_flight=True, waiting_on_purpose=False)
    health.progressed()
    assert health.live()[0]


def test_ready_needs_kafka_triton_and_a_configured_archive_not_partitions() -> None:
    clock = Clock()
    health = _ready_health(clock)
    assert health.ready() == (True, "ok")
    health.archive = False
    assert health.ready() == (False, "the DICOMweb archive does not answer")
    health.archive, health.kafka, health.triton = None, False, False
    ok, why = health.ready()
    assert not ok and "Kafka" in why and "Triton" in why


def test_a_wedged_loop_ends_the_process_with_wedged() -> None:
    clock = Clock()
    health = _ready_health(clock)
    codes: list[int] = []
    ended = threading.Event()

    def exit_(code: int) -> None:
        codes.append(code)
        ended.set()

    watch = WedgeWatch(health, exit=exit_, on_exit=lambda: codes.append(-1), interval_s=0.01)
    watch.start()
    clock.now += 59  # failing /livez, not yet twice the timeout
    assert not ended.wait(0.2)
    clock.now += 2
    assert ended.wait(5)
    watch.stop()
    assert codes == [-1, int(ExitCode.WEDGED)]


def test_no_self_exit_while_stopping() -> None:
    clock = Clock()
    health = _ready_health(clock)
    health.stopping = True
    clock.now += 1000
    assert health.wedged_for() == 0.0
