"""Shared-memory slots: allocation in ring order, and the segment itself."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from skinbatch.scoring.slots import SharedSlots, SlotRing, attach, remove_stale_segments, segment_name


def test_allocation_continues_after_the_last_slot_and_wraps() -> None:
    ring = SlotRing(4)
    assert [ring.allocate() for _ in range(4)] == [0, 1, 2, 3]
    assert ring.allocate() is None and ring.free == 0
    ring.release(1)
    ring.release(2)
    assert ring.allocate() == 1 and ring.allocate() == 2
    with pytest.raises(ValueError, match="already free"):
        ring.release(0) or ring.release(0)


def test_a_worker_sees_what_it_writes_through_its_own_mapping(tmp_path: Path) -> None:
    slots = SharedSlots(3, (4, 4, 3), directory=tmp_path)
    try:
        view = attach(slots.name, (4, 4, 3), directory=tmp_path)
        view[2] = 7
        assert (slots.array[2] == 7).all() and (slots.array[:2] == 0).all()
        assert slots.offset(2) == 2 * 48 and slots.byte_size == 3 * 48 and slots.key == "/" + slots.name
    finally:
        slots.close()
    assert not (tmp_path / slots.name).exists()


def test_segments_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead = segment_name("host-a", pid=2**22 + 12345)  # beyond pid_max: no such process
    alive = segment_name("host-a", pid=os.getpid())
    other_host = segment_name("host-b", pid=2**22 + 12345)
    for name in (dead, alive, other_host):
        (tmp_path / name).write_bytes(b"x")
    assert remove_stale_segments("host-a", directory=tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive, other_host])


def test_a_segment_for_the_model_input_holds_268_kb_a_slot(tmp_path: Path) -> None:
    slots = SharedSlots(2, (299, 299, 3), directory=tmp_path)
    try:
        assert slots.byte_size == 2 * 268203 == (tmp_path / slots.name).stat().st_size
        assert slots.offset(1) == 268203 and slots.array.shape == (2, 299, 299, 3)
    finally:
        slots.close()
