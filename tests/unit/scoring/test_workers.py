"""The decode pool (skinbatch.scoring.workers): real spawned processes, trivial tasks."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import CancelledError
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from skinbatch.scoring.workers import DecodePool

_greeting = ""


def _init(greeting: str) -> None:
    global _greeting
    _greeting = greeting


def _echo(payload: bytes, n: int) -> tuple[str, int, int, str]:
    import hashlib

    return _greeting, n, len(payload), hashlib.sha256(payload).hexdigest()


def _fail(message: str) -> None:
    raise ValueError(message)


def _die() -> None:
    os._exit(3)


def _wait_for(flag: str, payload: bytes) -> int:
    while not os.path.exists(flag):
        time.sleep(0.01)
    return len(payload)


@pytest.fixture
def pool():
    pools: list[DecodePool] = []

    def make(workers: int = 2) -> DecodePool:
        pools.append(DecodePool(workers, _init, ("hello",)))
        return pools[-1]

    yield make
    for p in pools:
        p.shutdown(wait=False, cancel_futures=True)


def test_each_task_runs_once_after_the_initializer_and_answers_its_own_future(pool) -> None:
    import hashlib

    p = pool(2)
    payloads = [os.urandom(1000 * i) for i in range(1, 41)]
    futures = [p.submit(_echo, data, i) for i, data in enumerate(payloads)]
    for i, (future, data) in enumerate(zip(futures, payloads)):
        assert future.result(timeout=60) == ("hello", i, len(data), hashlib.sha256(data).hexdigest())


def test_an_exception_in_a_task_is_that_task_s_and_the_pool_goes_on(pool) -> None:
    p = pool(1)
    failing = p.submit(_fail, "bad input")
    with pytest.raises(ValueError, match="bad input"):
        failing.result(timeout=60)
    assert p.submit(_echo, b"x", 1).result(timeout=60)[1] == 1


def test_payloads_larger_than_a_pipe_arrive_whole_and_submit_never_waits_for_a_busy_worker(
        pool, tmp_path: Path) -> None:
    p = pool(1)
    flag = str(tmp_path / "go")
    payloads = [os.urandom(3 << 20) for _ in range(4)]  # each over the pipe's 1 MiB
    futures = []
    submitting = threading.Thread(target=lambda: futures.extend(p.submit(_wait_for, flag, d) for d in payloads))
    submitting.start()
    submitting.join(60)  # the worker reads nothing until the flag exists: a blocking write would hang here
    blocked = submitting.is_alive()
    Path(flag).touch()
    submitting.join(60)
    assert not blocked, "submit blocked on a worker that was busy"
    assert [f.result(timeout=60) for f in futures] == [len(d) for d in payloads]


def test_a_worker_that_dies_breaks_the_pool_and_fails_every_pending_future(pool, tmp_path: Path) -> None:
    p = pool(2)
    flag = str(tmp_path / "never")
    dying = p.submit(_die)
    waiting = [p.submit(_wait_for, flag, b"x") for _ in range(3)]  # in the other worker, its pipe, and the queue
    for future in [dying, *waiting]:
        with pytest.raises(BrokenProcessPool, match="exit code 3"):
            future.result(timeout=60)
    with pytest.raises(BrokenProcessPool):
        p.submit(_echo, b"", 0)


def test_shutdown_with_cancel_futures_cancels_what_no_worker_took(pool, tmp_path: Path) -> None:
    p = pool(1)
    flag = str(tmp_path / "never")
    futures = [p.submit(_wait_for, flag, os.urandom(900_000)) for _ in range(4)]
    p.shutdown(wait=False, cancel_futures=True)
    cancelled = [f for f in futures if f.cancelled()]
    assert len(cancelled) >= 2  # one in the worker, at most one more in its pipe
    with pytest.raises(CancelledError):
        cancelled[-1].result(timeout=1)
    with pytest.raises(RuntimeError, match="shut down"):
        p.submit(_echo, b"", 0)


def test_shutdown_that_waits_answers_every_task_submitted(pool) -> None:
    p = pool(1)
    futures = [p.submit(_echo, os.urandom(900_000), i) for i in range(6)]  # most still queued in the parent
    p.shutdown(wait=True)
    assert [f.result(timeout=0)[1] for f in futures] == list(range(6))
