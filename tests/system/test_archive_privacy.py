"""No DICOM UID in any log line of a consumer that works through the real Orthanc, archive outage included.

Requests without ids of their own get derived ids (a keyed hash of the UID), and the error messages of
an archive that is down (which name the instance) reach the log scrubbed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid

from skinbatch.dicomweb.client import DicomWebArchive, DicomWebSettings
from skinbatch.privacy import derived_id
from skinbatch.samples import pydicom_colour_files
from tests.fixtures.orthanc import ORTHANC_USER
from tests.fixtures.stack import ConsumerProcess, TopicReader, produce, unique_topics

pytestmark = pytest.mark.system

KEY = "test-id-key-" + "3f9a"


def _copies(study: str, series: str, count: int) -> list[pydicom.Dataset]:
    source = next(p for p in pydicom_colour_files()
                  if int(pydicom.dcmread(p, stop_before_pixels=True).get("NumberOfFrames", 1) or 1) == 1)
    out = []
    for _ in range(count):
        ds = pydicom.dcmread(source)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out.append(ds)
    return out


def test_no_uid_in_any_log_line_and_derived_request_ids(
        kafka_broker: Any, served_triton: Any, orthanc: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    single = _copies(generate_uid(), generate_uid(), 1)[0]
    fanned = _copies(generate_uid(), generate_uid(), 2)
    settings = DicomWebSettings.from_values(orthanc.dicomweb_url, ORTHANC_USER, orthanc.password)
    DicomWebArchive(settings)._client().store_instances([single, *fanned])
    missing = generate_uid()
    used = {single.StudyInstanceUID, single.SeriesInstanceUID, single.SOPInstanceUID, missing,
            fanned[0].StudyInstanceUID, fanned[0].SeriesInstanceUID, *(ds.SOPInstanceUID for ds in fanned)}

    topics = unique_topics("priv")
    kafka_broker.create_topics({topics["request"]: 1, topics["result"]: 1, topics["dead"]: 1})
    produce(kafka_broker.bootstrap_servers, topics["request"], [
        (None, f"dicomweb:studies/{single.StudyInstanceUID}/series/{single.SeriesInstanceUID}"
               f"/instances/{single.SOPInstanceUID}".encode(), []),
        (None, json.dumps({"study": fanned[0].StudyInstanceUID, "series": fanned[0].SeriesInstanceUID}).encode(), []),
        (None, json.dumps({"study": single.StudyInstanceUID, "series": single.SeriesInstanceUID,
                           "instance": missing}).encode(), []),
    ])
    monkeypatch.setenv("SKINBATCH_ID_KEY", KEY)
    log_path = tmp_path / "consumer.log"
    consumer = ConsumerProcess(kafka_broker.bootstrap_servers, served_triton.grpc_url, topics, "g-priv", log_path, [
        "--dicomweb-url", orthanc.dicomweb_url, "--dicomweb-user", ORTHANC_USER,
        "--dicomweb-password", orthanc.password, "--log-level", "DEBUG"])
    expected_ok = {derived_id(single.SOPInstanceUID, KEY.encode()),
                   *(derived_id(ds.SOPInstanceUID, KEY.encode()) for ds in fanned)}
    reader = TopicReader(kafka_broker.bootstrap_servers, topics["result"], topics["dead"])
    orthanc.stop()  # the archive is down when the requests arrive: its errors name the instances
    try:
        consumer.start()
        deadline = time.monotonic() + 180
        while "pausing consumption" not in log_path.read_text(errors="replace") and time.monotonic() < deadline:
            time.sleep(1)
        orthanc.start()
        orthanc.wait_ready()
        msgs = reader.read(lambda m: {x["request_id"] for x in m[topics["result"]]} >= expected_ok
                           and len(m[topics["dead"]]) >= 1, timeout=300)
        assert consumer.alive(), consumer.log()
    finally:
        reader.close()
        if not orthanc.is_running:
            orthanc.start()
            orthanc.wait_ready()
        code = consumer.stop()
    assert code == 0, consumer.log()
    assert {m["request_id"] for m in msgs[topics["result"]]} == expected_ok
    assert [m["request_id"] for m in msgs[topics["dead"]]] == [derived_id(missing, KEY.encode())]
    text = log_path.read_text(errors="replace")
    assert "archive_down" in text and "archive_up" in text
    lines = text.splitlines()
    assert len(lines) > 10
    leaks = [(uid, line) for line in lines for uid in used if uid in line]
    assert not leaks, leaks[:3]
    assert orthanc.password not in text
