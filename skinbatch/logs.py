"""Structured logs: one JSON object per line, with the ``extra`` fields of each call.

Callers pass identifiers such as topic, partition and offset, never patient data: no names, no
accession numbers, no pixel values, no raw message content. As a second line of defence every line is
scrubbed of DICOM UIDs (``skinbatch.privacy.scrub``): an error message that quotes an archive's answer
about an instance carries ``uid:<keyed hash>`` instead of the UID.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from datetime import UTC, datetime

from skinbatch.privacy import scrub

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return scrub(json.dumps(entry, default=str, ensure_ascii=False))


class ScrubbedFormatter(logging.Formatter):
    """The plain text format, scrubbed of DICOM UIDs like the JSON one."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def configure_logging(level: str = "INFO", json_format: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    plain = ScrubbedFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    handler.setFormatter(JsonFormatter() if json_format else plain)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # kafka-python logs connection chatter at INFO; keep it for warnings and worse.
    logging.getLogger("kafka").setLevel(logging.WARNING)
    silence_pydicom()


def silence_pydicom() -> None:
    """pydicom's parser warnings can quote element values (a patient's name in a malformed PN, say),
    so they never reach logs or stderr; decoding problems surface as typed errors instead. Call it in
    every process that decodes, worker processes included."""
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?$")
