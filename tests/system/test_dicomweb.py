"""DICOMweb end to end against a real Orthanc: UID-only requests, SR write-back, archive outages, PACS triage.

Orthanc runs with HTTP basic authentication, so every test also checks that the credentials pass
through and never reach a log.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from skinbatch.dicomweb.client import DicomWebArchive, DicomWebSettings
from skinbatch.dicomweb.sr import read_score_report, sr_series_uid
from skinbatch.imaging import decode, preprocess
from skinbatch.samples import pydicom_colour_files
from skinbatch.scoring import TritonScorer
from tests.fixtures.orthanc import ORTHANC_USER
from tests.fixtures.sr_checks import assert_tid1500, run_dciodvfy, run_dsrdump
from tests.fixtures.stack import REPO_ROOT, ConsumerProcess, TopicReader, produce, unique_topics

pytestmark = pytest.mark.system

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"


def _archive(orthanc: Any) -> DicomWebArchive:
    return DicomWebArchive(DicomWebSettings.from_values(orthanc.dicomweb_url, ORTHANC_USER, orthanc.password))


def _sample_files(limit: int) -> list[Path]:
    """Colour files that an archive accepts (all three UIDs), each SOP Instance UID once, ≤ 2 frames."""
    out, seen = [], set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in pydicom_colour_files():
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            uids = [ds.get(k) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")]
            if not all(uids) or uids[2] in seen or int(ds.get("NumberOfFrames", 1) or 1) > 2:
                continue
            seen.add(uids[2])
            out.append(path)
    multi = [p for p in out if int(pydicom.dcmread(p, stop_before_pixels=True).get("NumberOfFrames", 1) or 1) > 1]
    single = [p for p in out if p not in multi]
    return single[: limit - 1] + multi[:1]


def _store(orthanc: Any, paths: list[Path]) -> list[pydicom.Dataset]:
    datasets = [pydicom.dcmread(p) for p in paths]
    client = _archive(orthanc)._client()
    client.store_instances(datasets)
    return datasets


def _encoded(ds: pydicom.Dataset) -> bytes:
    """The bytes STOW-RS sent for ``ds`` (dicomweb-client writes each dataset with pydicom)."""
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds)
    return buf.getvalue()


def _consumer(kafka_broker: Any, triton: Any, orthanc: Any, topics: dict[str, str], group: str, log: Path,
              *extra: str) -> ConsumerProcess:
    return ConsumerProcess(kafka_broker.bootstrap_servers, triton.grpc_url, topics, group, log, [
        "--dicomweb-url", orthanc.dicomweb_url, "--dicomweb-user", ORTHANC_USER,
        "--dicomweb-password", orthanc.password, "--store-results", *extra])


def _topics(broker: Any, partitions: int = 2) -> dict[str, str]:
    topics = unique_topics("dw")
    broker.create_topics({topics["request"]: partitions, topics["result"]: 1, topics["dead"]: 1})
    return topics


def _ids(msgs: dict[str, list[dict[str, Any]]], topic: str) -> set[str]:
    return {m["request_id"] for m in msgs[topic]}


def _sr_instances(archive: DicomWebArchive, study: str, model: dict[str, Any]) -> list[str]:
    series = sr_series_uid(study, model)
    rows = archive._client().search_for_instances(study_instance_uid=study, series_instance_uid=series)
    return [r["00080018"]["Value"][0] for r in rows]


def test_uid_requests_are_scored_like_inline_and_reports_land_in_the_study(
        kafka_broker: Any, served_triton: Any, orthanc: Any, tmp_path: Path) -> None:
    paths = _sample_files(5)
    datasets = _store(orthanc, paths)
    topics = _topics(kafka_broker)
    items: list[tuple[str | None, bytes | None, list[tuple[str, bytes]]]] = []
    for i, ds in enumerate(datasets):
        ref = {"study": ds.StudyInstanceUID, "series": ds.SeriesInstanceUID, "instance": ds.SOPInstanceUID}
        if i % 2:
            value = f"dicomweb:studies/{ref['study']}/series/{ref['series']}/instances/{ref['instance']}".encode()
        else:
            value = json.dumps(ref).encode()
        items.append((f"inst-{i}", value, []))
    first = datasets[0]
    series = {"study": first.StudyInstanceUID, "series": first.SeriesInstanceUID}
    items.append(("series-0", json.dumps(series).encode(), []))
    items.append(("missing", json.dumps({"study": first.StudyInstanceUID, "series": first.SeriesInstanceUID,
                                         "instance": "1.2.3.4.5.6.7"}).encode(), []))
    items.append(("no-archive-study", b"dicomweb:studies/1.2.3.999", []))
    produce(kafka_broker.bootstrap_servers, topics["request"], items)

    scorer = TritonScorer(served_triton.grpc_url)
    card = scorer.load_card()
    target = card.preprocessing_spec()
    expected: dict[str, np.ndarray] = {}
    archived: dict[str, bytes] = {}
    for i, ds in enumerate(datasets):
        # The inline path for the same bytes as the archive holds.
        archived[ds.SOPInstanceUID] = _encoded(ds)
        frames = decode(archived[ds.SOPInstanceUID], target=target).arrays
        for n, frame in enumerate(frames, start=1):
            expected[f"inst-{i}" if len(frames) == 1 else f"inst-{i}:{n}"] = preprocess(frame, target)
    series_members = [ds for ds in datasets if ds.SeriesInstanceUID == first.SeriesInstanceUID]

    consumer = _consumer(kafka_broker, served_triton, orthanc, topics, "g-dw", tmp_path / "consumer.log").start()
    reader = TopicReader(kafka_broker.bootstrap_servers, topics["result"], topics["dead"])
    try:
        msgs = reader.read(lambda m: _ids(m, topics["result"]) >= set(expected)
                           and any(r.startswith("series-0/") for r in _ids(m, topics["result"]))
                           and {"missing", "no-archive-study"} <= _ids(m, topics["dead"]), timeout=400)
        time.sleep(2)  # room for a late duplicate, which the checks below would see
        msgs = reader.read_to_end(timeout=30)
        assert consumer.alive(), consumer.log()
    finally:
        reader.close()
        assert consumer.stop() == 0, consumer.log()

    results = {m["request_id"]: m for m in msgs[topics["result"]]}
    for rid, image in expected.items():
        got, direct = results[rid], scorer.infer(image[None])[0]
        assert got["malignancy"] == pytest.approx(direct.malignancy, abs=1e-4), rid
        np.testing.assert_allclose(list(got["coarse"].values()), list(direct.coarse.values()), atol=1e-4)
        # Retrieved as archived: the hash is the file's.
        assert got["input"]["sha256"] == hashlib.sha256(archived[got["dicom"]["sop_instance_uid"]]).hexdigest()
        assert got["sr"]["sop_instance_uid"] and got["sr"]["series_instance_uid"]
    fanned = {r for r in results if r.startswith("series-0/")}
    assert {r.split("/", 1)[1].split(":")[0] for r in fanned} == {ds.SOPInstanceUID for ds in series_members}
    dead = {m["request_id"]: m["error"]["type"] for m in msgs[topics["dead"]]}
    assert dead == {"missing": "instance_not_found", "no-archive-study": "instance_not_found"}

    # Each report: found by QIDO in the source study, parses, references the instance, same numbers.
    archive = _archive(orthanc)
    client = archive._client()
    for rid in expected:
        got = results[rid]
        study = got["dicom"]["study_instance_uid"]
        sr_uid = got["sr"]["sop_instance_uid"]
        found = client.search_for_instances(study_instance_uid=study, search_filters={"SOPInstanceUID": sr_uid})
        assert len(found) == 1, rid
        sr = client.retrieve_instance(study, got["sr"]["series_instance_uid"], sr_uid)
        assert sr.SOPClassUID == SR_CLASS and sr.StudyInstanceUID == study
        model, frames = read_score_report(sr)
        assert model == {k: got["model"][k] for k in ("name", "version", "trained", "weights_sha256")}
        frame = got["dicom"]["frame"]
        match = [f for f in frames if f.frame in (frame, None)]
        assert len(match) == 1, (rid, frames)
        assert match[0].sop_instance_uid == got["dicom"]["sop_instance_uid"]
        assert match[0].malignancy == pytest.approx(got["malignancy"], abs=1e-9)
        assert match[0].coarse == pytest.approx(got["coarse"], abs=1e-9)
        assert match[0].fine == pytest.approx(got["fine"], abs=1e-9)
    # Every report stored: highdicom's TID 1500 reader finds one group per frame with the Kafka numbers,
    # dciodvfy finds no error and dsrdump renders it.
    by_report: dict[str, list[dict[str, Any]]] = {}
    for got in results.values():
        by_report.setdefault(got["sr"]["sop_instance_uid"], []).append(got)
    for sr_uid, members in by_report.items():
        study, series = members[0]["dicom"]["study_instance_uid"], members[0]["sr"]["series_instance_uid"]
        sr = client.retrieve_instance(study, series, sr_uid)
        frames = {m["dicom"]["frame"]: m["malignancy"] for m in members}
        assert_tid1500(sr, set(frames), frames, members[0]["dicom"]["sop_instance_uid"])
        path = tmp_path / f"{sr_uid}.dcm"
        sr.save_as(path, enforce_file_format=True)
        assert not run_dciodvfy(path).errors, (sr_uid, run_dciodvfy(path).errors)
        assert "Imaging Measurement Report" in run_dsrdump(path)
    # The series request scored instances already scored: still one report per instance and model.
    for ds in datasets:
        assert len(_sr_instances(archive, ds.StudyInstanceUID, results["inst-0"]["model"])) == len(
            {d.SOPInstanceUID for d in datasets if d.StudyInstanceUID == ds.StudyInstanceUID})
    log = consumer.log()
    assert orthanc.password not in log and "Patient" not in log


def test_archive_down_ten_seconds_then_sigkill_loses_nothing_and_duplicates_no_report(
        kafka_broker: Any, served_triton: Any, orthanc: Any, tmp_path: Path) -> None:
    # Fresh copies (new UIDs) so that no report exists yet.
    sources = []
    for path in _sample_files(3)[:3]:
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        sources.append(ds)
    _archive(orthanc)._client().store_instances(sources)
    topics = _topics(kafka_broker, partitions=2)
    ids = [f"o-{i:03d}" for i in range(36)]
    refs = [json.dumps({"study": ds.StudyInstanceUID, "series": ds.SeriesInstanceUID,
                        "instance": ds.SOPInstanceUID}).encode() for ds in sources]
    produce(kafka_broker.bootstrap_servers, topics["request"],
            [(rid, refs[i % len(refs)], []) for i, rid in enumerate(ids)])
    consumer = _consumer(kafka_broker, served_triton, orthanc, topics, "g-dw-down", tmp_path / "consumer.log",
                         "--max-in-flight", "4")
    reader = TopicReader(kafka_broker.bootstrap_servers, topics["result"], topics["dead"])
    try:
        consumer.start()
        reader.read(lambda m: len(_ids(m, topics["result"])) >= 3, timeout=300)
        orthanc.stop()
        time.sleep(10)
        orthanc.start()
        orthanc.wait_ready()
        before = len(_ids(reader.messages, topics["result"]))
        reader.read(lambda m: len(_ids(m, topics["result"])) >= min(before + 3, len(ids)), timeout=300)
        consumer.kill()
        consumer.start()
        msgs = reader.read(lambda m: _ids(m, topics["result"]) >= set(ids), timeout=400)
        assert consumer.alive(), consumer.log()
    finally:
        reader.close()
        if consumer.alive():
            consumer.stop()
    assert msgs[topics["dead"]] == []
    assert "archive_down" in consumer.log()
    archive = _archive(orthanc)
    model = msgs[topics["result"]][0]["model"]
    for ds in sources:
        reports = _sr_instances(archive, ds.StudyInstanceUID, model)
        assert len(reports) == 1, (ds.SOPInstanceUID, reports)
        srs = {m["sr"]["sop_instance_uid"] for m in msgs[topics["result"]]
               if m["dicom"]["sop_instance_uid"] == ds.SOPInstanceUID}
        assert srs == set(reports)
    assert orthanc.password not in consumer.log()


def test_triage_by_study_date_scores_exactly_the_matching_studies(
        served_triton: Any, orthanc: Any, tmp_path: Path) -> None:
    path = _sample_files(2)[0]
    dates = {"20310105": True, "20311230": True, "20301231": False, "20320101": False}
    expected: set[str] = set()
    copies = []
    for date, inside in dates.items():
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyDate = date
        copies.append(ds)
        if inside:
            expected.add(ds.SOPInstanceUID)
    _archive(orthanc)._client().store_instances(copies)
    out = tmp_path / "triage"
    cmd = [sys.executable, "-m", "skinbatch.cli", "triage", "--triton-url", served_triton.grpc_url,
           "--out", str(out), "--dicomweb-url", orthanc.dicomweb_url, "--dicomweb-user", ORTHANC_USER,
           "--study-date", "20310101-20311231", "--json", "--no-progress", "--decode-workers", "1"]
    env = {"SKINBATCH_DICOMWEB_PASSWORD": orthanc.password}
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT, env={**os.environ, **env})
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["scored"] == len(expected)
    with open(out / "triage.csv", newline="") as fh:
        scored = {row["sop_instance_uid"] for row in csv.DictReader(fh) if row["status"] == "scored"}
    assert scored == expected
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT, env={**os.environ, **env})
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert again["scored"] == 0 and again["resumed"] == len(expected)
    assert orthanc.password not in first.stderr + second.stderr
    # An archive that refuses the search is an outage to wait out, not a usage error: its own exit code.
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
                             env={**os.environ, "SKINBATCH_DICOMWEB_PASSWORD": "not-the-password"})
    assert refused.returncode == 8, refused.stderr  # ExitCode.ARCHIVE_DOWN
    assert "searching the DICOMweb archive failed" in refused.stderr
