"""Bounds on one decode task (skinbatch.scoring.workers): real spawned processes, trivial tasks."""

from __future__ import annotations

import os
import time

import pytest

from skinbatch.scoring.workers import DecodePool, TaskOutOfMemory, TaskTimedOut


def _pid(n: int) -> tuple[int, int]:
    return n, os.getpid()


def _sleep(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def _allocate(mib: int) -> int:
    held = [bytearray(1 << 20) for _ in range(mib)]
    return len(held)


def _workers(pool: DecodePool) -> set[int]:
    return {w.process.pid for w in pool._workers if w.process.is_alive()}


@pytest.fixture
def pools():
    made: list[DecodePool] = []
    yield made
    for p in made:
        p.shutdown(wait=False, cancel_futures=True)


def test_a_task_past_its_time_limit_fails_alone_and_only_its_worker_is_replaced(pools) -> None:
    pool = DecodePool(2, task_timeout_s=10.0)  # generous: a loaded CI host still answers a trivial task
    pools.append(pool)
    before = _workers(pool)
    slow = pool.submit(_sleep, 600)
    behind = [pool.submit(_pid, i) for i in range(30)]  # some are queued behind the slow task
    with pytest.raises(TaskTimedOut):
        slow.result(timeout=120)
    assert [f.result(timeout=120)[0] for f in behind] == list(range(30))
    after = _workers(pool)
    assert pool.replaced == 1
    assert len(after) == 2 and len(after & before) == 1  # one worker kept, one new
    assert pool.submit(_sleep, 0.1).result(timeout=60)  # fast tasks still pass


def test_a_task_over_the_memory_limit_fails_alone_and_its_worker_is_replaced(pools) -> None:
    pool = DecodePool(1, memory_bytes=600 << 20)
    pools.append(pool)
    assert pool.submit(_allocate, 100).result(timeout=60) == 100  # within the limit
    first = pool.submit(_pid, 0).result(timeout=60)[1]
    hog = pool.submit(_allocate, 2000)
    queued = pool.submit(_pid, 1)
    with pytest.raises(TaskOutOfMemory):
        hog.result(timeout=120)
    assert queued.result(timeout=120)[0] == 1
    assert pool.submit(_pid, 2).result(timeout=60)[1] != first
    assert pool.replaced == 1


def test_without_limits_nothing_is_replaced(pools) -> None:
    pool = DecodePool(1)
    pools.append(pool)
    assert pool.submit(_sleep, 1.5).result(timeout=60)
    assert pool.replaced == 0
