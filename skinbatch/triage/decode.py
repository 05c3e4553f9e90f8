"""The decoding step of triage, run in worker processes: a file → its sha256 and the model's input.

Everything that crosses the process boundary is plain data, and a failure comes back as a value, never
as an exception. Errors about the *path* (missing, unreadable) are told apart from errors about the
*content* (not an image, corrupt…): only the latter are keyed by the content hash and never retried.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skinbatch.imaging import DecodeLimits, ImageDecodeError, Preprocessing, decode, preprocess


@dataclass
class Loaded:
    path: str
    size: int = 0
    mtime_ns: int = 0
    sha256: str = ""
    images: np.ndarray | None = None
    """(frames, size, size, 3) uint8, ready for Triton."""
    frame_numbers: list[int] = field(default_factory=list)
    format: str = ""
    monochrome: bool = False
    dicom: dict[str, Any] | None = None
    decode_ms: float = 0.0
    error_type: str | None = None
    error_message: str | None = None
    path_error: bool = False
    """The error is about the path (missing, unreadable), not the bytes: retried on the next run."""

    @property
    def ok(self) -> bool:
        return self.error_type is None


def limits_dict(limits: DecodeLimits) -> dict[str, int]:
    return {"max_bytes": limits.max_bytes, "max_pixels": limits.max_pixels,
            "max_total_pixels": limits.max_total_pixels, "max_frames": limits.max_frames}


def read_file(path: str, max_bytes: int) -> bytes | Loaded:
    """The file's bytes, or a :class:`Loaded` carrying the error."""
    try:
        st = os.stat(path)
        if st.st_size > max_bytes:
            return Loaded(path=path, size=st.st_size, mtime_ns=st.st_mtime_ns, error_type="too_large",
                          error_message=f"the file is {st.st_size} bytes, over the limit of {max_bytes}; "
                                        "raise --max-file-mb if such files are expected")
        with open(path, "rb") as fh:
            return fh.read(max_bytes + 1)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return Loaded(path=path, error_type="not_found", path_error=True,
                      error_message="the file disappeared or a DICOMDIR references a file that is not there")
    except PermissionError:
        return Loaded(path=path, error_type="unreadable", path_error=True,
                      error_message="permission denied; run triage as a user who may read the archive")
    except OSError as exc:
        return Loaded(path=path, error_type="io_error", path_error=True,
                      error_message=f"reading failed ({exc.strerror or type(exc).__name__}); retried on the next run")


def load_and_decode(path: str, preprocessing: dict[str, Any], limits: dict[str, int]) -> Loaded:
    """Read, hash, decode and preprocess one file. Runs in a worker process."""
    started = time.perf_counter()
    try:
        st = os.stat(path)
    except OSError:
        st = None
    data = read_file(path, limits["max_bytes"])
    if isinstance(data, Loaded):
        return data
    out = Loaded(path=path, size=len(data), mtime_ns=st.st_mtime_ns if st else 0,
                 sha256=hashlib.sha256(data).hexdigest())
    target = Preprocessing.from_dict(preprocessing)
    try:
        decoded = decode(data, limits=DecodeLimits(**limits), target=target)
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
    """One thread per worker; Ctrl-C is the main process's business (it drains and saves)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from skinbatch.logs import silence_pydicom

    silence_pydicom()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
