"""The decoding step, run in worker processes: bytes or a file → preprocessed model input.

Everything crossing the process boundary is plain data (bytes, numpy arrays, dicts), so it pickles
cheaply; a failure comes back as a value, never as an exception, except for infrastructure faults
(an archive that cannot be read right now), which the caller retries.
"""

from __future__ import annotations

import os

from skinbatch.imaging import DecodeLimits, Preprocessing
from skinbatch.imaging.model_input import ModelInput, decode_worker_init, prepare_model_input

__all__ = ["ArchiveUnavailable", "ModelInput", "decode_request", "decode_worker_init"]


class ArchiveUnavailable(OSError):
    """The archive could not be read for a reason that may pass (I/O error, stale mount)."""


def _read(path: str, max_bytes: int) -> bytes | ModelInput:
    try:
        size = os.stat(path).st_size
        if size > max_bytes:
            return ModelInput(nbytes=size, error_type="too_large",
                              error_message=f"the referenced file is {size} bytes, over the limit of {max_bytes}")
        with open(path, "rb") as fh:
            return fh.read(max_bytes + 1)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return ModelInput(error_type="reference_not_found", error_message="no file at the referenced path")
    except PermissionError:
        return ModelInput(error_type="reference_unreadable",
                          error_message="the consumer may not read the referenced file")
    except OSError as exc:
        raise ArchiveUnavailable(f"reading the archive failed: {exc.strerror or exc}") from exc


def decode_request(
    payload: bytes | None,
    path: str | None,
    target: Preprocessing,
    max_bytes: int,
    max_pixels: int,
) -> ModelInput:
    """Read a referenced file if needed, then decode it into model input. Runs in a worker process."""
    if payload is None:
        read = _read(path or "", max_bytes)
        if isinstance(read, ModelInput):
            return read
        payload = read
    limits = DecodeLimits(max_bytes=max_bytes, max_pixels=max_pixels, max_total_pixels=2 * max_pixels)
    return prepare_model_input(payload, target, limits)
