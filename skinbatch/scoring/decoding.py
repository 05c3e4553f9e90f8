"""The decode step, run in worker processes: bytes (or a file) → the model's input, in shared memory.

A task names the input (inline bytes, or a path the worker reads), the preprocessing and limits from the
model card, and the slot of the pool's shared-memory segment (skinbatch.scoring.slots) to write the
first frame into. The worker attaches the segment once, at start-up. What comes back is a
:class:`~skinbatch.imaging.model_input.ModelInput`: plain data, no pixels for the frame in the slot;
further frames of a multi-frame image come back in-band.

Bad input comes back as a value with a typed ``error_type``. A file that cannot be read *now* (an I/O
error, a stale mount) raises :class:`~skinbatch.contract.ArchiveUnavailable`: the caller retries it. An
input that runs the worker out of memory raises ``MemoryError`` out of the task, so that the pool
replaces the worker (skinbatch/scoring/workers.py) and the input is dead-lettered ``decode_memory``.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np

from skinbatch import faults
from skinbatch.contract import ArchiveUnavailable, ErrorType
from skinbatch.imaging import DecodeLimits, Preprocessing
from skinbatch.imaging.model_input import ModelInput, decode_worker_init as _imaging_worker_init, prepare_model_input

from .files import FileRead, NotARegularFile, read_regular_file

_slots: np.ndarray | None = None


def decode_worker_init(segment: str | None = None, shape: tuple[int, ...] | None = None) -> None:
    """Pool initializer: the imaging defaults, and the shared-memory segment to write frames into."""
    global _slots
    _imaging_worker_init()
    if segment is not None and shape is not None:
        from .slots import attach

        _slots = attach(segment, shape)


def read_input(path: str, max_bytes: int) -> FileRead | ModelInput:
    """A referenced file's bytes, or a :class:`ModelInput` saying why not (bad input).

    Opened by :func:`~skinbatch.scoring.files.read_regular_file`: no link followed, never blocking on a
    FIFO, regular files only.
    """
    try:
        read = read_regular_file(path, max_bytes)
    except NotARegularFile as exc:
        return ModelInput(error_type=exc.type, error_message=exc.message)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return ModelInput(error_type=ErrorType.REFERENCE_NOT_FOUND, error_message="no file at the referenced path")
    except PermissionError:
        return ModelInput(error_type=ErrorType.REFERENCE_UNREADABLE,
                          error_message="permission denied: the process may not read the file")
    except OSError as exc:
        raise ArchiveUnavailable(f"reading the archive failed: {exc.strerror or type(exc).__name__}") from None
    if read.size > max_bytes or len(read.data) > max_bytes:
        size = max(read.size, len(read.data))
        return ModelInput(nbytes=size, mtime_ns=read.mtime_ns, error_type=ErrorType.TOO_LARGE,
                          error_message=f"the file is {size} bytes, over the limit of {max_bytes}")
    return read


def decode_task(payload: bytes | None, path: str | None, preprocessing: dict[str, Any], limits: dict[str, int],
                slot: int | None = None) -> ModelInput:
    """Read if needed, hash, decode and preprocess; write the first frame into ``slot``."""
    mtime_ns = 0
    if payload is None:
        assert path is not None
        read = read_input(path, limits["max_bytes"])
        if isinstance(read, ModelInput):
            return read
        payload, mtime_ns = read.data, read.mtime_ns
    _test_faults(payload)
    out = prepare_model_input(payload, Preprocessing.from_dict(preprocessing), DecodeLimits(**limits))
    if out.error_type in _MEMORY_TYPES and "memory" in (out.error_message or ""):
        # The decoders report running out of memory as bad input; here it is the worker's limit.
        raise MemoryError(out.error_message)
    out.mtime_ns = mtime_ns
    if out.ok and slot is not None and _slots is not None and out.images is not None:
        _slots[slot] = out.images[0]
        out.images = out.images[1:]
        out.slot = slot
    return out


_MEMORY_TYPES = (ErrorType.TOO_LARGE, ErrorType.DECOMPRESSION_BOMB)


def _test_faults(payload: bytes) -> None:
    """Test-only switches (skinbatch/faults.py; never set in production): a decode that never ends, or
    one that allocates until the worker's memory limit stops it."""
    slow, hog = faults.get("slow_decode"), faults.get("hog_decode")
    if slow is None and hog is None:
        return
    digest = hashlib.sha256(payload).hexdigest()
    if digest == slow:
        time.sleep(3600)
    if digest == hog:
        import mmap

        held = []
        try:
            for _ in range(256):  # 16 GiB of address space at most, never touched: no host is taken down
                held.append(mmap.mmap(-1, 64 << 20))
        except OSError as exc:  # ENOMEM: the worker's RLIMIT_AS, as a decoder's allocation would meet it
            raise MemoryError("test fault: out of address space") from exc
        raise MemoryError("test fault: 16 GiB of address space mapped without reaching a limit")


def limits_dict(limits: DecodeLimits) -> dict[str, int]:
    return {"max_bytes": limits.max_bytes, "max_pixels": limits.max_pixels,
            "max_total_pixels": limits.max_total_pixels, "max_frames": limits.max_frames}


__all__ = ["decode_task", "decode_worker_init", "limits_dict", "read_input"]
