"""Keeping DICOM identifiers out of logs and out of the ids skinbatch makes up.

* :func:`derived_id`: the request id of a request that brings none of its own and names an image only by
  a DICOM UID (a DICOMweb reference, or DICOM bytes): a keyed hash of the UID (HMAC-SHA256), stable
  across consumers and restarts with the same key, so it still serves as the idempotency key of the
  results, and not reversible to the UID without the key.
* :func:`scrub`: every DICOM UID in a log line replaced by ``uid:`` and its keyed hash, so that an error
  message that names an instance (an archive's 404, a retrieval that timed out) still tells which of
  the lines belong together without saying which patient's image it was.

The key comes from ``SKINBATCH_ID_KEY_FILE`` (a file, as mounted from a Secret) or ``SKINBATCH_ID_KEY``;
without either, a built-in key is used: the ids are still no UIDs, but anyone with this code can test
a guessed UID against them. Every consumer of a group must use the same key (docs/deploy.md).

Pure apart from reading the key once.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import re
from pathlib import Path

ENV_KEY = "SKINBATCH_ID_KEY"
ENV_KEY_FILE = "SKINBATCH_ID_KEY_FILE"
_DEFAULT_KEY = b"skinbatch derived ids v1"

# ISO object identifiers as DICOM uses them: root arc 0, 1 or 2, then at least three more arcs, or a
# UUID-derived UID (2.25.<integer>). IPv4 addresses rarely match (1.x.y.z and 2.x.y.z would, and are
# scrubbed harmlessly); versions of three parts (1.2.3) do not.
UID_PATTERN = re.compile(r"(?<![\w.])(?:[012](?:\.\d+){3,}|2\.25\.\d{6,})(?![\w.])")

__all__ = ["ENV_KEY", "ENV_KEY_FILE", "UID_PATTERN", "derived_id", "id_key", "scrub"]


@functools.cache
def id_key() -> bytes:
    """The key of the derived ids: the file named by ``SKINBATCH_ID_KEY_FILE``, else ``SKINBATCH_ID_KEY``,
    else the built-in one. Read once per process."""
    path = os.environ.get(ENV_KEY_FILE)
    if path:
        return Path(path).read_bytes().strip()
    value = os.environ.get(ENV_KEY)
    return value.encode() if value else _DEFAULT_KEY


def derived_id(value: str, key: bytes | None = None) -> str:
    """``"sb-"`` and 32 hex digits of HMAC-SHA256(key, value): the same for the same value and key."""
    digest = hmac.new(key if key is not None else id_key(), value.encode(), hashlib.sha256).hexdigest()
    return "sb-" + digest[:32]


def scrub(text: str, key: bytes | None = None) -> str:
    """``text`` with every DICOM UID replaced by ``uid:`` and 12 hex digits of its keyed hash."""
    if not any(c.isdigit() for c in text):
        return text
    k = key if key is not None else id_key()
    return UID_PATTERN.sub(lambda m: "uid:" + derived_id(m.group(0), k)[3:15], text)
