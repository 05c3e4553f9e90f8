"""Nothing a request names can stall a partition or exhaust the consumer (issue 20, items 1 and 3).

* A real Orthanc holds, between ordinary photographs, instances that claim more pixels than the
  consumer takes, a video, and several uncompressed 20 MP RGB instances (about 60 MB each, one of them
  multi-frame) that are under the pixel limit but over the byte limit. They are requested by UID only on
  a one-partition topic. Every request is answered, the ordinary ones are scored, the instances refused
  from their metadata were never retrieved (Orthanc's HTTP log), and the consumer's process tree never
  held much more memory (PSS) than while it scored ordinary photographs alone.
* Files under ``--archive-root`` turned into a FIFO, a socket or a link after the request was published
  are typed dead letters, and the one decode worker stays free for the files after them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

from skinbatch.dicomweb.client import DicomWebArchive, DicomWebSettings, InstanceRef
from skinbatch.dicomweb.orthanc import LocalOrthanc
from skinbatch.dicomweb.retrieve import (
    DERMOSCOPIC_PHOTOGRAPHY,
    VL_PHOTOGRAPHIC,
    ByteMeter,
    InstanceRefused,
    instance_url,
    read_single_part,
)
from skinbatch.imaging import DecodeLimits
from skinbatch.samples import synthetic_jpeg
from tests.fixtures.memory import PeakPss
from tests.fixtures.orthanc import ORTHANC_USER, running_orthanc
from tests.fixtures.stack import ConsumerProcess, TopicReader, produce, unique_topics

pytestmark = pytest.mark.system

VIDEO_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4.1"
MAX_PIXELS = 80_000_000
MAX_BYTES = 32 * 1024 * 1024
MB = 1024 * 1024
SLACK = 200 * MB


@pytest.fixture(scope="module")
def logged_orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalOrthanc]:
    """An Orthanc whose log names every HTTP request it serves (``--verbose-http``)."""
    with running_orthanc(tmp_path_factory.mktemp("orthanc-logged"), verbose_http=True) as server:
        yield server


# -- instances, written with pydicom -----------------------------------------------------------------------


def _dataset(sop_class: str, rows: int, columns: int, frames: int = 1, syntax: str = ExplicitVRLittleEndian,
             study: str | None = None) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = sop_class, ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study or generate_uid(), generate_uid()
    ds.Modality, ds.InstanceNumber = "XC", 1
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, columns, 3
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    return ds


def photograph(seed: int, sop_class: str) -> Dataset:
    """An ordinary colour photograph, 640 × 480, uncompressed."""
    ds = _dataset(sop_class, 480, 640)
    ds.PhotometricInterpretation = "RGB"
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, 640, dtype=np.float32)[None, :, None] * rng.uniform(0.3, 1.0, (1, 1, 3))
    ds.PixelData = np.clip(base + rng.normal(0, 20, (480, 640, 3)), 0, 255).astype(np.uint8).tobytes()
    return ds


def big_uncompressed(frames: int = 1) -> Dataset:
    """About 60 MB of uncompressed RGB: 20 MP in one frame, or the same bytes over ``frames`` frames."""
    rows, columns = (3648, 5472) if frames == 1 else (3648 // 2, 5472 // 2)
    ds = _dataset(VL_PHOTOGRAPHIC, rows, columns, frames)
    ds.PhotometricInterpretation = "RGB"
    pixels = np.zeros((frames, rows, columns, 3), np.uint8)
    pixels[:, ::64] = 200
    ds.PixelData = pixels.tobytes()
    return ds


def over_pixel_limit(rows: int, columns: int, frames: int = 1) -> Dataset:
    """A few bytes in the archive whose header claims ``rows × columns × frames`` JPEG pixels."""
    ds = _dataset(DERMOSCOPIC_PHOTOGRAPHY, rows, columns, frames, syntax=JPEGBaseline8Bit)
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xd9"] * frames)
    ds["PixelData"].VR = "OB"
    return ds


def video() -> Dataset:
    ds = _dataset(VIDEO_PHOTOGRAPHIC, 64, 64)
    ds.PhotometricInterpretation = "RGB"
    ds.PixelData = np.full((64, 64, 3), 90, np.uint8).tobytes()
    return ds


def _encoded(ds: Dataset) -> bytes:
    """The bytes STOW-RS sends for ``ds`` (dicomweb-client writes each data set with pydicom)."""
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds)
    return buf.getvalue()


def _store(orthanc: Any, datasets: list[Dataset]) -> None:
    client = DicomWebArchive(DicomWebSettings.from_values(orthanc.dicomweb_url, ORTHANC_USER,
                                                          orthanc.password))._client()
    for ds in datasets:  # one at a time: 60 MB each
        client.store_instances([ds])


def _request(rid: str, ds: Dataset) -> tuple[str, bytes, list[tuple[str, bytes]]]:
    ref = {"study": ds.StudyInstanceUID, "series": ds.SeriesInstanceUID, "instance": ds.SOPInstanceUID}
    return rid, json.dumps(ref).encode(), []


def _answered(msgs: dict[str, list[dict[str, Any]]], topics: dict[str, str]) -> set[str]:
    return {m["request_id"] for m in msgs[topics["result"]] + msgs[topics["dead"]]}


def _http_paths(orthanc: LocalOrthanc) -> list[str]:
    """The paths of the GET requests in Orthanc's log (``(http) GET /dicom-web/...``)."""
    return [line.split("(http) GET ", 1)[1].strip() for line in orthanc.logs().splitlines() if "(http) GET " in line]


def test_big_and_huge_instances_are_refused_within_the_memory_of_ordinary_ones(
        kafka_broker: Any, served_triton: Any, logged_orthanc: LocalOrthanc, tmp_path: Path) -> None:
    classes = (VL_PHOTOGRAPHIC, DERMOSCOPIC_PHOTOGRAPHY)
    first = [photograph(i, classes[i % 2]) for i in range(6)]
    refused = {
        "bomb-frame": (over_pixel_limit(12000, 12000), "decompression_bomb"),
        "bomb-frames": (over_pixel_limit(4000, 4000, frames=20), "decompression_bomb"),
        "video": (video(), "unsupported_sop_class"),
        "big-0": (big_uncompressed(), "too_large"),
        "big-1": (big_uncompressed(), "too_large"),
        "big-2": (big_uncompressed(), "too_large"),
        "big-3": (big_uncompressed(), "too_large"),
        "big-frames": (big_uncompressed(frames=4), "too_large"),
    }
    second = [photograph(100 + i, classes[i % 2]) for i in range(len(refused) + 1)]
    archived = {ds.SOPInstanceUID: hashlib.sha256(_encoded(ds)).hexdigest() for ds in first + second}
    _store(logged_orthanc, first + second)
    for rid, (ds, _) in refused.items():
        _store(logged_orthanc, [ds])
        if rid.startswith("big"):
            ds.PixelData = b""  # the test's own copy is not needed any more
    topics = unique_topics("bound")
    kafka_broker.create_topics({topics["request"]: 1, topics["result"]: 1, topics["dead"]: 1})

    consumer = ConsumerProcess(kafka_broker.bootstrap_servers, served_triton.grpc_url, topics, "g-bound",
                               tmp_path / "consumer.log", [
                                   "--dicomweb-url", logged_orthanc.dicomweb_url, "--dicomweb-user", ORTHANC_USER,
                                   "--dicomweb-password", logged_orthanc.password,
                                   "--max-pixels", str(MAX_PIXELS), "--max-image-bytes", str(MAX_BYTES)]).start()
    assert consumer.proc is not None
    reader = TopicReader(kafka_broker.bootstrap_servers, topics["result"], topics["dead"])
    ordinary_ids = {f"ord-{i}" for i in range(len(first) + len(second))}
    try:
        with PeakPss(consumer.proc.pid) as pss:
            # Phase 1: ordinary photographs alone.
            produce(kafka_broker.bootstrap_servers, topics["request"],
                    [_request(f"ord-{i}", ds) for i, ds in enumerate(first)])
            pss.mark("ordinary")
            reader.read(lambda m: _answered(m, topics) >= {f"ord-{i}" for i in range(len(first))}, timeout=400)
            # Phase 2: the big and huge ones, each between ordinary ones, on the same partition.
            pss.mark("mixed")
            items = []
            for i, (rid, (ds, _)) in enumerate(refused.items()):
                items += [_request(f"ord-{len(first) + i}", second[i]), _request(rid, ds)]
            items.append(_request(f"ord-{len(first) + len(refused)}", second[-1]))
            produce(kafka_broker.bootstrap_servers, topics["request"], items)
            msgs = reader.read(lambda m: _answered(m, topics) >= ordinary_ids | set(refused), timeout=400)
            pss.mark("end")
        assert consumer.alive(), consumer.log()
    finally:
        reader.close()
        assert consumer.stop() == 0, consumer.log()

    results = {m["request_id"]: m for m in msgs[topics["result"]]}
    dead = {m["request_id"]: m["error"]["type"] for m in msgs[topics["dead"]]}
    assert set(results) == ordinary_ids, dead
    assert dead == {rid: kind for rid, (_, kind) in refused.items()}
    for got in results.values():  # scored as archived: the hash is the archive's copy's
        assert got["input"]["sha256"] == archived[got["dicom"]["sop_instance_uid"]]
    # Refused from the metadata: Orthanc served the metadata and never the instance.
    paths = _http_paths(logged_orthanc)
    for rid in ("bomb-frame", "bomb-frames", "video"):
        uid = refused[rid][0].SOPInstanceUID
        assert any(p.endswith(f"/instances/{uid}/metadata") for p in paths), (rid, paths[-5:])
        assert not any(p.endswith(f"/instances/{uid}") or f"/instances/{uid}/frames" in p for p in paths), rid
    # Memory: the mixed phase held no more than the ordinary one, give or take 200 MB.
    ordinary, mixed = pss.peaks["ordinary"], pss.peaks["mixed"]
    print(f"peak PSS: ordinary {ordinary / MB:.0f} MB, mixed {mixed / MB:.0f} MB, "
          f"{pss.most_processes} processes")
    assert pss.most_processes >= 2  # the decode worker was counted with the consumer
    assert mixed <= ordinary + SLACK, (ordinary / MB, mixed / MB)


def test_fifo_socket_and_links_swapped_in_are_dead_letters_and_the_worker_stays_free(
        kafka_broker: Any, served_triton: Any, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    names = ["fifo", "socket", "link-out", "link-fifo"]
    for name in [*names, "ok-0", "ok-1", "ok-2"]:
        (archive / f"{name}.jpg").write_bytes(synthetic_jpeg(400, 300, seed=len(name)))
    topics = unique_topics("files")
    kafka_broker.create_topics({topics["request"]: 1, topics["result"]: 1, topics["dead"]: 1})
    items: list[tuple[str | None, bytes | None, list[tuple[str, bytes]]]] = [
        (name, json.dumps({"uri": f"{name}.jpg"}).encode(), []) for name in ["ok-0", *names, "ok-1", "ok-2"]]
    produce(kafka_broker.bootstrap_servers, topics["request"], items)

    # After the requests were published: the files become a FIFO, a socket, and links.
    (archive / "fifo.jpg").unlink()
    os.mkfifo(archive / "fifo.jpg")
    (archive / "socket.jpg").unlink()
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(archive / "socket.jpg"))
    server.listen()
    (archive / "link-out.jpg").unlink()
    os.symlink("/etc/hostname", archive / "link-out.jpg")
    (archive / "link-fifo.jpg").unlink()
    os.mkfifo(archive / "pipe")
    os.symlink(archive / "pipe", archive / "link-fifo.jpg")

    consumer = ConsumerProcess(kafka_broker.bootstrap_servers, served_triton.grpc_url, topics, "g-files",
                               tmp_path / "consumer.log", ["--archive-root", str(archive)]).start()
    reader = TopicReader(kafka_broker.bootstrap_servers, topics["result"], topics["dead"])
    try:
        msgs = reader.read(lambda m: _answered(m, topics) >= {name for name, _, _ in items}, timeout=400)
        assert consumer.alive(), consumer.log()
    finally:
        reader.close()
        server.close()
        assert consumer.stop() == 0, consumer.log()
    assert {m["request_id"] for m in msgs[topics["result"]]} == {"ok-0", "ok-1", "ok-2"}
    dead = {m["request_id"]: m["error"]["type"] for m in msgs[topics["dead"]]}
    assert dead == {"fifo": "not_a_regular_file", "socket": "not_a_regular_file",
                    "link-out": "reference_outside_root", "link-fifo": "not_a_regular_file"}


def test_retrieval_is_bounded_by_bytes_even_when_the_length_says_nothing(logged_orthanc: LocalOrthanc) -> None:
    """Orthanc gzips a WADO-RS answer when allowed: 60 MB of mostly zeros arrive as a small body whose
    Content-Length says nothing of the size it inflates to. The streamed read still stops at the limit."""
    big, small = big_uncompressed(), photograph(7, VL_PHOTOGRAPHIC)
    _store(logged_orthanc, [big, small])
    settings = DicomWebSettings.from_values(logged_orthanc.dicomweb_url, ORTHANC_USER, logged_orthanc.password)
    url = instance_url(settings.url, big.StudyInstanceUID, big.SeriesInstanceUID, big.SOPInstanceUID)
    received: list[int] = []

    def counted(chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            received.append(len(chunk))
            yield chunk

    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    with closing(settings.session().get(url, headers={"Accept": accept, "Accept-Encoding": "gzip"},
                                        stream=True, timeout=60)) as response:
        assert response.headers.get("Content-Encoding") == "gzip"
        assert int(response.headers["Content-Length"]) < MAX_BYTES  # the length would not have refused it
        with pytest.raises(InstanceRefused) as info:
            read_single_part(counted(response.iter_content(256 * 1024)), response.headers["Content-Type"],
                             MAX_BYTES)
    assert info.value.type == "too_large"
    assert MAX_BYTES < sum(received) <= MAX_BYTES + 2 * 256 * 1024  # stopped just past the limit

    # Through the archive: refused with nothing held afterwards; an ordinary one comes back as archived.
    archive, meter = DicomWebArchive(settings), ByteMeter()
    limits = DecodeLimits(max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS, max_total_pixels=2 * MAX_PIXELS)
    ref = InstanceRef(big.StudyInstanceUID, big.SeriesInstanceUID, big.SOPInstanceUID)
    hold = meter.hold(MAX_BYTES)
    with pytest.raises(InstanceRefused) as info:
        archive.retrieve(ref, limits, hold)
    assert info.value.type == "too_large"
    hold.release()
    hold = meter.hold(MAX_BYTES)
    data = archive.retrieve(InstanceRef(small.StudyInstanceUID, small.SeriesInstanceUID, small.SOPInstanceUID),
                            limits, hold)
    assert data == _encoded(small) and meter.held == len(data)
    hold.release()
    assert meter.held == 0
