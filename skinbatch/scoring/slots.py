"""Model-input slots in one POSIX shared-memory segment, for Triton's system shared memory.

Decode workers write each preprocessed frame (size × size × 3 bytes) straight into a slot; a request to
Triton then names a run of consecutive slots (offset and byte size in the registered region) instead of
carrying the pixels. Nothing is pickled between processes and no protobuf copy of the tensor is made.

* :class:`SlotRing` (pure): which slots are free, and allocation in ring order (so that frames decoded
  in order sit next to each other and a batch of them is sent in place).
* :class:`SharedSlots` (I/O): the segment itself, a file under ``/dev/shm`` that Triton maps by its key.
  Workers attach with :func:`attach` by name. A consumer SIGKILLed earlier leaves its segment behind;
  :func:`remove_stale_segments` deletes those of processes that no longer exist on this host.
"""

from __future__ import annotations

import mmap
import os
import re
import socket
import uuid
from pathlib import Path

import numpy as np

SHM_DIR = Path("/dev/shm")
PREFIX = "skinbatch-"


class SlotRing:
    """Free and used slot indices; allocation continues after the last slot handed out. Pure."""

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError("a slot ring needs at least one slot")
        self.count = count
        self._free = [True] * count
        self._free_count = count
        self._cursor = 0

    @property
    def free(self) -> int:
        return self._free_count

    def allocate(self) -> int | None:
        """The next free slot in ring order, or None when every slot is in use."""
        if not self._free_count:
            return None
        for step in range(self.count):
            index = (self._cursor + step) % self.count
            if self._free[index]:
                self._free[index] = False
                self._free_count -= 1
                self._cursor = (index + 1) % self.count
                return index
        return None  # pragma: no cover - _free_count said there was one

    def release(self, index: int) -> None:
        if self._free[index]:
            raise ValueError(f"slot {index} is already free")
        self._free[index] = True
        self._free_count += 1


def segment_name(host: str | None = None, pid: int | None = None) -> str:
    """``skinbatch-<host>-<pid>-<random>``: unique, and tells which process made it."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", host or socket.gethostname())[:40]
    return f"{PREFIX}{host}-{pid or os.getpid()}-{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_segments(host: str | None = None, directory: Path = SHM_DIR) -> list[str]:
    """Delete segments this host's processes left when they were killed; returns their names."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", host or socket.gethostname())[:40]
    pattern = re.compile(rf"^{re.escape(PREFIX + host)}-(\d+)-[0-9a-f]{{8}}$")
    removed = []
    for path in directory.glob(f"{PREFIX}{host}-*"):
        match = pattern.match(path.name)
        if match and not _pid_alive(int(match.group(1))):
            try:
                path.unlink()
                removed.append(path.name)
            except OSError:
                pass
    return removed


class SharedSlots:
    """``count`` slots of ``shape`` uint8 in one new segment under /dev/shm; :meth:`close` deletes it."""

    def __init__(self, count: int, shape: tuple[int, ...], name: str | None = None,
                 directory: Path = SHM_DIR, ring: int | None = None) -> None:
        """``ring``: how many of the slots, from the first, the :class:`SlotRing` hands out (all by
        default); the rest the owner uses for itself (batch staging)."""
        self.name = name or segment_name()
        self.shape = tuple(shape)
        self.slot_bytes = int(np.prod(self.shape))
        self.count = count
        self.byte_size = self.slot_bytes * count
        self.path = directory / self.name
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, self.byte_size)
            self._map = mmap.mmap(fd, self.byte_size)
        finally:
            os.close(fd)
        self.array = np.frombuffer(self._map, dtype=np.uint8).reshape(count, *self.shape)
        self.ring = SlotRing(count if ring is None else ring)

    @property
    def key(self) -> str:
        """What Triton's ``register_system_shared_memory`` takes (``shm_open`` name)."""
        return "/" + self.name

    def offset(self, slot: int) -> int:
        return slot * self.slot_bytes

    def close(self) -> None:
        del self.array
        try:
            self._map.close()
        except BufferError:
            pass  # a view is still alive somewhere; the unlink below still frees the memory at exit
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def attach(name: str, shape: tuple[int, ...], directory: Path = SHM_DIR) -> np.ndarray:
    """A worker's view of a segment made by :class:`SharedSlots` (count follows from its size)."""
    path = directory / name
    fd = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        mapped = mmap.mmap(fd, size)
    finally:
        os.close(fd)
    slot_bytes = int(np.prod(shape))
    return np.frombuffer(mapped, dtype=np.uint8).reshape(size // slot_bytes, *shape)


__all__ = ["SharedSlots", "SlotRing", "attach", "remove_stale_segments", "segment_name"]
