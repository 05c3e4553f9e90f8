"""The contract every part of skinbatch agrees on: the served model's names, the result and error
types that go to Kafka, the exit codes of every command, and the one error root.

The converter writes these names into the model repository, the consumer and triage send and read
them, and the tests check against them; nothing else spells them. docs/contracts.md is the prose
version of this module. Add members; never rename or renumber one: scripts, dashboards and other
teams' consumers branch on them.

Pure: no imports beyond the standard library, so that every process (decode workers, the Triton
python backend, the converter) can import it cheaply.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import ClassVar

# -- the served model -------------------------------------------------------------------------------

ENSEMBLE = "skin_classifier"
"""The ensemble clients call: ``IMAGE`` in, the scores out."""
INCEPTION_STEP = "inception_v3"
"""The network: ``IMAGE`` → ``TRAINING_PROBS`` (softmax over the training classes)."""
TAXONOMY_STEP = "taxonomy"
"""Sums the training-class probabilities up the disease tree (FP32)."""
MODEL_NAMES = (ENSEMBLE, INCEPTION_STEP, TAXONOMY_STEP)

# The Kafka topics' default names (every command that names a topic takes them from here).
REQUEST_TOPIC = "skinbatch.requests"
RESULT_TOPIC = "skinbatch.results"
DEAD_LETTER_TOPIC = "skinbatch.dead-letter"


class Tensor(StrEnum):
    """Tensor names of the ensemble (and, for ``IMAGE`` and ``TRAINING_PROBS``, of its steps)."""

    IMAGE = "IMAGE"
    """UINT8 [N, S, S, 3], RGB, NHWC; cast and normalisation are inside the graph."""
    TRAINING_PROBS = "TRAINING_PROBS"
    """FP32 [N, K]: softmax over the K training classes."""
    COARSE_PROBS = "COARSE_PROBS"
    """FP32 [N, 3]: benign / malignant / non-neoplastic."""
    FINE_PROBS = "FINE_PROBS"
    """FP32 [N, 9]: the second-level classes."""
    MALIGNANCY = "MALIGNANCY"
    """FP32 [N, 1]: P(malignant)."""
    TRAINING_PROBS_OUT = "TRAINING_PROBS_OUT"
    """The taxonomy step's pass-through of its input, exposed by the ensemble as ``TRAINING_PROBS``."""
    MALIGNANCY_MAP = "MALIGNANCY_MAP"
    """FP32 [N, h, w]: the class activation map of P(malignant) on the last convolutional grid (8×8 for
    299×299 input). Optional: ask for it only where the model card's ``outputs`` lists it."""


SCORE_OUTPUTS: tuple[str, ...] = (Tensor.TRAINING_PROBS, Tensor.COARSE_PROBS, Tensor.FINE_PROBS, Tensor.MALIGNANCY)
"""The ensemble outputs every score is built from."""
INTERNAL_PROBS = "inception_probs"
"""The ensemble's internal tensor between its two steps."""

# -- Kafka messages ---------------------------------------------------------------------------------


class ResultStatus(StrEnum):
    """``status`` of a message on the result or dead-letter topic."""

    OK = "ok"
    REJECTED = "rejected"


class ErrorType(StrEnum):
    """``error.type`` of a dead letter: why an input could not be scored. Bad input only: faults of
    Triton, Kafka or an archive are retried, never dead-lettered."""

    EMPTY = "empty"
    TOO_LARGE = "too_large"
    UNSUPPORTED_FORMAT = "unsupported_format"
    UNSUPPORTED_TRANSFER_SYNTAX = "unsupported_transfer_syntax"
    UNSUPPORTED_PIXEL_FORMAT = "unsupported_pixel_format"
    TRUNCATED = "truncated"
    CORRUPT = "corrupt"
    NO_PIXEL_DATA = "no_pixel_data"
    DECOMPRESSION_BOMB = "decompression_bomb"
    INVALID_HEADER = "invalid_header"
    """A request header the consumer reads (``acquisition``) has a value it does not understand."""
    FORMAT_NEEDS_EXTRA = "format_needs_extra"
    """A format this install could decode with an optional extra (HEIC: ``pip install 'skinbatch[heic]'``)."""
    INVALID_REFERENCE = "invalid_reference"
    UNSUPPORTED_REFERENCE = "unsupported_reference"
    REFERENCE_NOT_ALLOWED = "reference_not_allowed"
    REFERENCE_OUTSIDE_ROOT = "reference_outside_root"
    REFERENCE_NOT_FOUND = "reference_not_found"
    REFERENCE_UNREADABLE = "reference_unreadable"
    INSTANCE_NOT_FOUND = "instance_not_found"
    ARCHIVE_REJECTED = "archive_rejected"
    UNSUPPORTED_SOP_CLASS = "unsupported_sop_class"
    """A DICOMweb instance of a SOP class that holds no photograph to score (video, whole-slide,
    encapsulated document, waveform, presentation state, report), refused from its metadata."""
    NOT_A_REGULAR_FILE = "not_a_regular_file"
    """A file reference that names a FIFO, socket, device, directory entry swapped for a symbolic link, or
    anything else that is not a regular file when it is opened."""
    RESULT_TOO_LARGE = "result_too_large"
    """The scores were computed, but their result message is over the result topic's size limit."""
    INTERNAL_ERROR = "internal_error"
    DECODE_TIMEOUT = "decode_timeout"
    """Decoding ran past the per-task time limit (``--decode-timeout-s``); the worker was replaced."""
    DECODE_MEMORY = "decode_memory"
    """Decoding needed more memory than a decode worker may use (``--decode-memory-mb``); the worker was
    replaced."""
    POISON = "poison"
    """The message was in flight, alone, when the consumer's process died, after it had already been in
    flight at an earlier death: it is not scored again (docs/runbook.md, poison messages)."""


# -- exit codes -------------------------------------------------------------------------------------


class ExitCode(IntEnum):
    """One table for every command (docs/contracts.md). A number means the same thing everywhere."""

    OK = 0
    """Everything asked for was done (or: stopped by SIGTERM after draining and committing)."""
    INTERNAL = 1
    """An unexpected error, a bug (Python's own code for an uncaught exception); for ``consume`` also
    three unexpected decoder failures in a row."""
    USAGE = 2
    """Bad flags, settings or inputs to start from (click's code for usage errors)."""
    PARTIAL = 3
    """Finished, but some inputs could not be scored or sent; the report or output lists them."""
    TRITON_DOWN = 4
    """Triton could not be reached, or stopped answering for longer than the command waits."""
    NOT_READY = 5
    """Triton answers, but the server or a model is not ready."""
    KAFKA = 6
    """Kafka could not be reached (connection refused, no answer), or the consumer group is unknown."""
    NO_INPUT = 7
    """Nothing to do: no images were found under the given paths."""
    ARCHIVE_DOWN = 8
    """The DICOMweb archive could not be searched: unreachable, timing out or failing."""
    MODEL_CHANGED = 9
    """Triton began serving another model than the model card read at start-up. Restart: the new
    process reads the new card; nothing was named after the old one."""
    FETCH_STALLED = 10
    """Kafka stopped delivering records waiting on the consumer's partitions, and rejoining the group
    did not help. Restart: uncommitted messages are redelivered."""
    KAFKA_CODEC = 11
    """A record batch is compressed with a codec this install cannot decode. Install the package the
    message names; nothing past the record was committed or dead-lettered."""
    AUTH = 12
    """Credentials were refused (Kafka SASL, the DICOMweb archive)."""
    TLS = 13
    """A TLS handshake failed: the peer's certificate is not trusted, or one side does not speak TLS."""
    ENVIRONMENT = 14
    """A program or package the command needs is missing or too old (Java, Maven, Triton, TensorRT)."""
    START_FAILED = 15
    """A server the command runs (Triton, Kafka) did not start: a port in use, a model that fails to load."""
    SERVER_DIED = 16
    """A server the command runs exited while it was serving."""
    WEDGED = 17
    """``consume``: the main loop stopped turning for twice ``--liveness-timeout-s`` (``/livez`` failed for
    as long); the process exits by itself so that its supervisor starts a new one. Nothing is lost:
    uncommitted messages are redelivered."""
    INTERRUPTED = 130
    """Stopped by Ctrl-C or SIGTERM before the work was done; what was finished is saved."""


EXIT_CODE_EPILOG = "Exit codes: " + "; ".join(
    f"{int(code)} {code.name.lower().replace('_', ' ')}" for code in ExitCode
) + " (docs/contracts.md)."
"""One line for every command's ``--help``."""


# -- errors -----------------------------------------------------------------------------------------


class SkinbatchError(Exception):
    """The root of every error skinbatch raises on purpose. Its message says what to do next.

    ``exit_code`` is what a command exits with when this error ends it.
    """

    exit_code: ExitCode = ExitCode.INTERNAL


class ConfigurationError(SkinbatchError, ValueError):
    """Flags or settings that cannot work together, or a value in the wrong form."""

    exit_code = ExitCode.USAGE


class TritonUnavailable(SkinbatchError):
    """Triton cannot be reached or is not ready. An infrastructure fault: retry, never dead-letter."""

    exit_code = ExitCode.TRITON_DOWN


class ServedModelChanged(SkinbatchError):
    """Triton answered with another version of the ensemble than the model card in hand describes.

    A model was rolled out (or back) while this client ran. The outputs are not named: the labels, the
    taxonomy and the version in the card may all be wrong for them. Read the card again (restart).
    """

    exit_code = ExitCode.MODEL_CHANGED

    def __init__(self, model: str, served: str, card_version: str, detail: str | None = None) -> None:
        if detail:
            text = f"Triton now serves another {model!r} (version {served}): {detail} since start-up"
        else:
            text = (f"Triton now serves version {served} of {model!r}, but the model card read at start-up is "
                    f"version {card_version}")
        super().__init__(text)
        self.served = served
        self.card_version = card_version


class ArchiveError(SkinbatchError):
    """An image archive (a folder of references, a DICOMweb PACS) did not give what was asked."""


class ArchiveUnavailable(ArchiveError):
    """The archive cannot answer now (down, overloaded, slow, an I/O error, or refusing our
    credentials). An infrastructure fault: retry later, never dead-letter."""

    exit_code = ExitCode.ARCHIVE_DOWN


class InputRejected(SkinbatchError):
    """Bad input: goes to the dead-letter topic (or the triage report) with a machine-readable type."""

    exit_code = ExitCode.PARTIAL
    type: str = ErrorType.CORRUPT

    def __init__(self, message: str, type_: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if type_ is not None:
            self.type = type_


class ConnectionProblem(SkinbatchError):
    """A server could not be reached or refused us. ``kind`` says which of the usual causes it was:
    ``refused``, ``timeout``, ``auth`` or ``tls``, and the exit code follows it."""

    _codes: ClassVar[dict[str, ExitCode]] = {"auth": ExitCode.AUTH, "tls": ExitCode.TLS}

    def __init__(self, message: str, kind: str, default_code: ExitCode) -> None:
        super().__init__(message)
        self.kind = kind
        self.exit_code = self._codes.get(kind, default_code)


class KafkaProblem(ConnectionProblem):
    """Kafka refused us, did not answer, or sent what this install cannot read."""

    exit_code = ExitCode.KAFKA

    def __init__(self, message: str, kind: str = "refused") -> None:
        super().__init__(message, kind, ExitCode.KAFKA_CODEC if kind == "codec" else ExitCode.KAFKA)


class ArchiveProblem(ConnectionProblem):
    """The DICOMweb archive refused us at start-up: our certificate or its (``tls``, exit 13), our
    credentials (``auth``, exit 12), or it did not answer (``refused``, ``timeout``: exit 8)."""

    exit_code = ExitCode.ARCHIVE_DOWN

    def __init__(self, message: str, kind: str = "refused") -> None:
        super().__init__(message, kind, ExitCode.ARCHIVE_DOWN)


__all__ = [
    "ENSEMBLE",
    "EXIT_CODE_EPILOG",
    "INCEPTION_STEP",
    "INTERNAL_PROBS",
    "MODEL_NAMES",
    "SCORE_OUTPUTS",
    "TAXONOMY_STEP",
    "ArchiveError",
    "ArchiveProblem",
    "ArchiveUnavailable",
    "ConfigurationError",
    "ConnectionProblem",
    "ErrorType",
    "ExitCode",
    "InputRejected",
    "KafkaProblem",
    "ResultStatus",
    "ServedModelChanged",
    "SkinbatchError",
    "Tensor",
    "TritonUnavailable",
]
