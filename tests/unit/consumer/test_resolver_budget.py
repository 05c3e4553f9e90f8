"""The resolver's byte accounting: a retrieval counts against the budget from the moment it starts.

Pure logic with a stand-in archive whose retrievals wait until the test lets them finish (the archive's
HTTP side is tested against a real Orthanc in tests/system/test_bounded_inputs.py).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from kafka import TopicPartition

from skinbatch.consumer.jobs import Job
from skinbatch.consumer.metrics import ConsumerMetrics
from skinbatch.consumer.resolver import DicomWebResolver
from skinbatch.consumer.source import Taken
from skinbatch.contract import ErrorType
from skinbatch.dicomweb.client import InstanceRef
from skinbatch.dicomweb.retrieve import Hold, InstanceRefused
from skinbatch.imaging import DecodeLimits
from skinbatch.scoring.pipeline import Mailbox
from skinbatch.timers import Timers

MAX_BYTES = 1000
LIMITS = DecodeLimits(max_bytes=MAX_BYTES)


class SlowArchive:
    """Each retrieval announces its size on its hold, then waits for the test's go."""

    def __init__(self) -> None:
        self.go = threading.Semaphore(0)
        self.started = 0
        self.lock = threading.Lock()

    def retrieve(self, ref: InstanceRef, limits: DecodeLimits, hold: Hold) -> bytes:
        with self.lock:
            self.started += 1
        assert hold.nbytes == limits.max_bytes  # counted before the download began
        self.go.acquire(timeout=10)
        if ref.instance == "too-big":
            raise InstanceRefused("over the limit", ErrorType.TOO_LARGE)
        hold.set(100)
        return b"x" * 100


class Owner:
    def __init__(self) -> None:
        self.got: list[tuple[str, int]] = []
        self.rejected: list[str] = []
        self.held_at_handover: list[int] = []
        self.resolver: DicomWebResolver | None = None

    def current(self, job: Job) -> bool:
        return True

    def reject(self, job: Job, request_id: str, error_type: str, message: str, input_info: Any) -> None:
        self.rejected.append(error_type)

    def retrieved(self, child: Job, data: bytes) -> None:
        assert self.resolver is not None
        self.held_at_handover.append(self.resolver.meter.held)
        self.got.append((child.instance.instance, len(data)))

    def children(self, parent: Job, children: list[Job]) -> None: ...
    def stored(self, job: Job, report: Any) -> None: ...

    def base_id(self, job: Job, fallback: str) -> str:
        return fallback


def _child(i: int, name: str | None = None) -> Job:
    taken = Taken(TopicPartition("t", 0), i, 0, None)
    return Job(taken=taken, timestamp_ms=0, polled=0.0, instance=InstanceRef("1.2", "1.3", name or f"1.4.{i}"))


def _wait(cond: Any) -> None:
    deadline = time.monotonic() + 10
    while not cond():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_retrievals_hold_the_byte_limit_until_their_bytes_are_handed_over() -> None:
    archive, owner, mailbox = SlowArchive(), Owner(), Mailbox()
    budget = 3 * MAX_BYTES
    resolver: DicomWebResolver
    resolver = DicomWebResolver(archive, owner, mailbox, Timers(), ConsumerMetrics(), workers=8,
                                retry_initial_s=0.1, retry_max_s=1, store_results=False,
                                room=lambda: resolver.meter.held < budget, limits=LIMITS)
    owner.resolver = resolver
    try:
        resolver._backlog.extend([_child(0, "too-big")] + [_child(i) for i in range(1, 6)])
        resolver.pump()
        _wait(lambda: archive.started == 3)
        # Three downloads of unknown size fill the budget: no fourth starts, although workers are free.
        assert resolver.meter.held == budget and resolver.backlog == 3
        resolver.pump()
        assert resolver._retrievals == 3 and resolver.backlog == 3
        for _ in range(6):
            archive.go.release()
        while len(owner.got) + len(owner.rejected) < 6:
            mailbox.run(timeout=0.1)
            resolver.pump()
        assert owner.rejected == [ErrorType.TOO_LARGE]
        assert sorted(n for _, n in owner.got) == [100] * 5
        # At hand-over a retrieval still holds exactly its bytes; afterwards nothing is held.
        assert all(held >= 100 for held in owner.held_at_handover)
        _wait(lambda: resolver.meter.held == 0)
    finally:
        resolver.close()
