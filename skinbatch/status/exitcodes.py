"""Exit codes shared by ``skinbatch status``, ``skinbatch triage`` and ``skinbatch evaluate``.

Scripts and monitoring branch on these numbers, so they are a contract: add codes, never renumber.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    """Everything asked for was done and healthy."""
    INTERNAL = 1
    """An unexpected error (a bug): Python's default for an uncaught exception."""
    USAGE = 2
    """Bad arguments or inputs the command cannot start from (click's code for usage errors)."""
    PARTIAL = 3
    """The run finished, but some inputs could not be scored (bad or unreadable images); see the report."""
    TRITON_DOWN = 4
    """Triton could not be reached (or stopped answering during a run). Start it, then re-run."""
    NOT_READY = 5
    """Triton answers, but the server or a model is not ready."""
    KAFKA = 6
    """Kafka could not be reached, or the consumer group is unknown."""
    NO_INPUT = 7
    """Nothing to do: no images were found under the given paths."""
    ARCHIVE_DOWN = 8
    """The DICOMweb archive could not be searched: unreachable, timing out, failing, or refusing the credentials."""
    INTERRUPTED = 130
    """Stopped by Ctrl-C / SIGINT / SIGTERM; what was finished is saved (triage resumes from it)."""


EPILOG = (
    "Exit codes: 0 ok; 1 internal error; 2 bad usage; 3 some inputs could not be scored; "
    "4 Triton unreachable; 5 Triton server or a model not ready; 6 Kafka unreachable or group unknown; "
    "7 no images found; 8 DICOMweb archive unreachable; 130 interrupted."
)
