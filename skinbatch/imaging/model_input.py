"""Bytes → the model's input, as one step that runs in worker processes.

Shared by the consumer and triage. Everything crossing the process boundary is plain data (numbers,
strings, numpy arrays), so it pickles cheaply; bad input comes back as a value with a typed
``error_type``, never as an exception.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._api import decode
from .errors import ImageDecodeError
from .limits import DecodeLimits
from .preprocess import Preprocessing, preprocess


@dataclass
class ModelInput:
    """One input, decoded and preprocessed, or the reason it could not be."""

    sha256: str = ""
    nbytes: int = 0
    images: np.ndarray | None = None
    """(frames, size, size, 3) uint8, ready for Triton; without the first frame when ``slot`` holds it."""
    slot: int | None = None
    """The shared-memory slot the decoding worker wrote the first frame into (skinbatch.scoring.slots)."""
    mtime_ns: int = 0
    """For a file read by path: its modification time (triage keys its resumable state on it)."""
    frame_numbers: list[int] = field(default_factory=list)
    format: str = ""
    monochrome: bool = False
    dicom: dict[str, Any] | None = None
    """UIDs, SOP class and accession number; never patient names or dates."""
    color: dict[str, Any] | None = None
    """The embedded ICC profile: ``description``, ``sha256``, ``applied`` (and ``reason`` where not); None
    where the input has none (taken as sRGB)."""
    acquisition: dict[str, Any] | None = None
    """``Acquisition.to_dict()``: dermoscopic or clinical, polarization, contact, immersion, anatomic region."""
    decode_ms: float = 0.0
    error_type: str | None = None
    error_message: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_type is None


def prepare_model_input(data: bytes, target: Preprocessing, limits: DecodeLimits) -> ModelInput:
    """Hash, decode (shrinking in the DCT domain where the target allows) and preprocess every frame."""
    started = time.perf_counter()
    out = ModelInput(sha256=hashlib.sha256(data).hexdigest(), nbytes=len(data))
    try:
        decoded = decode(data, limits=limits, target=target)
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
    out.color = decoded.color.to_dict() if decoded.color is not None else None
    out.acquisition = decoded.acquisition.to_dict() if decoded.acquisition is not None else None
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


def decode_worker_init() -> None:
    """For decoding pools: one thread per worker, Ctrl-C left to the main process (it drains and saves),
    and pydicom's warnings, which can quote element values, silenced."""
    import signal

    from skinbatch._process import die_with_parent, reuse_large_buffers
    from skinbatch.logs import silence_pydicom

    # A SIGKILLed consumer must not leave its decode workers behind.
    die_with_parent(signal.SIGTERM)
    reuse_large_buffers()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    silence_pydicom()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
