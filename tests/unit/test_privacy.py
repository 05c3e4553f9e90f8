"""Derived ids and the scrubbing of DICOM UIDs from log lines (pure)."""

from __future__ import annotations

import json
import logging

from skinbatch.logs import JsonFormatter
from skinbatch.privacy import derived_id, scrub

UID = "1.2.826.0.1.3680043.8.1055.1.20111103111148288.98361414.79379639"


def test_derived_ids_are_stable_keyed_and_not_the_uid() -> None:
    assert derived_id(UID, b"k") == derived_id(UID, b"k")
    assert derived_id(UID, b"k") != derived_id(UID, b"other")
    assert UID not in derived_id(UID, b"k") and derived_id(UID, b"k").startswith("sb-")


def test_scrub_replaces_uids_and_keeps_addresses_and_numbers() -> None:
    text = f"the archive has no instance {UID} (HTTP 404) at 127.0.0.1:8042, 10.1.2.3, offset 12, p=0.75"
    out = scrub(text, b"k")
    assert UID not in out and "uid:" + derived_id(UID, b"k")[3:15] in out
    assert "127.0.0.1:8042" in out and "10.1.2.3" in out and "0.75" in out
    uuid_uid = "2.25.329800735698586629295641978511506172918"
    assert scrub(f"dicomweb:studies/1.2.3.999/series/{uuid_uid}", b"k").count("uid:") == 2


def test_json_log_lines_carry_no_uid_in_the_message_or_the_extra_fields() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed for %s", (UID,), None)
    record.error = f"instance {UID}"
    record.request_id = f"series-0/{UID}:2"
    line = JsonFormatter().format(record)
    assert UID not in line
    entry = json.loads(line)
    assert entry["request_id"].startswith("series-0/uid:") and entry["request_id"].endswith(":2")
