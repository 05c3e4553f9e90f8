"""The decoding step, run in worker processes: bytes or a file → preprocessed model input.

Everything crossing the process boundary is plain data (bytes, numpy arrays, dicts), so it pickles
cheaply; a failure comes back as a value, never as an exception, except for infrastructure faults
(an archive that cannot be read right now), which the caller retries.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skinbatch.imaging import DecodeLimits, ImageDecodeError, Preprocessing, decode, preprocess


class ArchiveUnavailable(OSError):
    """The archive could not be read for a reason that may pass (I/O error, stale mount)."""


@dataclass
class DecodedRequest:
    sha256: str = ""
    nbytes: int = 0
    images: np.ndarray | None = None
    """(frames, size, size, 3) uint8, ready for Triton."""
    frame_numbers: list[int] = field(default_factory=list)
    format: str = ""
    monochrome: bool = False
    dicom: dict[str, Any] | None = None
    decode_ms: float = 0.0
    error_type: str | None = None
    error_message: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_type is None


def _read(path: str, max_bytes: int) -> bytes | DecodedRequest:
    try:
        size = os.stat(path).st_size
        if size > max_bytes:
            return DecodedRequest(nbytes=size, error_type="too_large",
                                  error_message=f"the referenced file is {size} bytes, over the limit of {max_bytes}")
        with open(path, "rb") as fh:
            return fh.read(max_bytes + 1)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return DecodedRequest(error_type="reference_not_found", error_message="no file at the referenced path")
    except PermissionError:
        return DecodedRequest(error_type="reference_unreadable",
                              error_message="the consumer may not read the referenced file")
    except OSError as exc:
        raise ArchiveUnavailable(f"reading the archive failed: {exc.strerror or exc}") from exc


def decode_request(
    payload: bytes | None,
    path: str | None,
    target: Preprocessing,
    max_bytes: int,
    max_pixels: int,
) -> DecodedRequest:
    """Decode one request into model input. Runs in a worker process."""
    started = time.perf_counter()
    if payload is None:
        read = _read(path or "", max_bytes)
        if isinstance(read, DecodedRequest):
            return read
        payload = read
    out = DecodedRequest(sha256=hashlib.sha256(payload).hexdigest(), nbytes=len(payload))
    try:
        limits = DecodeLimits(max_bytes=max_bytes, max_pixels=max_pixels, max_total_pixels=2 * max_pixels)
        decoded = decode(payload, limits=limits, target=target)
        out.images = np.stack([preprocess(frame.pixels, target) for frame in decoded.frames])
    except ImageDecodeError as exc:
        out.error_type, out.error_message = exc.type, str(exc)
        return out
    except MemoryError:
        out.error_type, out.error_message = "too_large", "the image needs more memory than this worker has"
        return out
    out.frame_numbers = [frame.number for frame in decoded.frames]
    out.format = decoded.format
    out.monochrome = decoded.monochrome
    if decoded.dicom is not None:
        ids = decoded.dicom
        out.dicom = {
            "study_instance_uid": ids.study_instance_uid,
            "series_instance_uid": ids.series_instance_uid,
            "sop_instance_uid": ids.sop_instance_uid,
            "sop_class_uid": ids.sop_class_uid,
            "accession_number": ids.accession_number,
        }
    out.decode_ms = (time.perf_counter() - started) * 1000
    return out


def worker_init() -> None:
    """Keep each worker to one thread and leave Ctrl-C to the main process, which drains cleanly."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from skinbatch.logs import silence_pydicom

    silence_pydicom()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
