"""The decoding step of triage, run in worker processes: a file → its sha256 and the model's input.

Everything that crosses the process boundary is plain data, and a failure comes back as a value, never
as an exception. Errors about the *path* (missing, unreadable) are told apart from errors about the
*content* (not an image, corrupt…): only the latter are keyed by the content hash and never retried.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from skinbatch.imaging import DecodeLimits, Preprocessing
from skinbatch.imaging.model_input import ModelInput, prepare_model_input


@dataclass
class Loaded(ModelInput):
    """A file's model input, plus what triage's resumable state keys on."""

    path: str = ""
    mtime_ns: int = 0
    path_error: bool = False
    """The error is about the path (missing, unreadable), not the bytes: retried on the next run."""

    @property
    def size(self) -> int:
        return self.nbytes


def limits_dict(limits: DecodeLimits) -> dict[str, int]:
    return {"max_bytes": limits.max_bytes, "max_pixels": limits.max_pixels,
            "max_total_pixels": limits.max_total_pixels, "max_frames": limits.max_frames}


def read_file(path: str, max_bytes: int) -> bytes | Loaded:
    """The file's bytes, or a :class:`Loaded` carrying the error."""
    try:
        st = os.stat(path)
        if st.st_size > max_bytes:
            return Loaded(path=path, nbytes=st.st_size, mtime_ns=st.st_mtime_ns, error_type="too_large",
                          error_message=f"the file is {st.st_size} bytes, over the limit of {max_bytes}; "
                                        "raise --max-image-bytes if such files are expected")
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
    try:
        mtime_ns = os.stat(path).st_mtime_ns
    except OSError:
        mtime_ns = 0
    data = read_file(path, limits["max_bytes"])
    if isinstance(data, Loaded):
        return data
    prepared = prepare_model_input(data, Preprocessing.from_dict(preprocessing), DecodeLimits(**limits))
    return Loaded(path=path, mtime_ns=mtime_ns, **vars(prepared))

