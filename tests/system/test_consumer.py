"""The consumer against a real Kafka broker and the real Triton, in child processes as in production."""

from __future__ import annotations

import signal
import struct
import subprocess
import sys
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from skinbatch.contract import ExitCode
from skinbatch.imaging import decode, preprocess
from skinbatch.samples import pydicom_colour_files, pydicom_test_files_dir, synthetic_jpeg, synthetic_png
from skinbatch.scoring import TritonScorer
from tests.fixtures.stack import ConsumerProcess, TopicReader, produce, unique_topics

pytestmark = pytest.mark.system


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def decompression_bomb_png() -> bytes:
    """A few hundred bytes that claim 60,000 × 60,000 pixels."""
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 4096)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _topics(broker: Any, partitions: int = 3) -> dict[str, str]:
    topics = unique_topics()
    broker.create_topics({topics["request"]: partitions, topics["result"]: 1, topics["dead"]: 1})
    return topics


def _ok_ids(msgs: dict[str, list[dict[str, Any]]], topic: str) -> set[str]:
    return {m["request_id"] for m in msgs[topic]}


def test_end_to_end_every_input_scored_or_dead_lettered(kafka_broker: Any, served_triton: Any, tmp_path: Path) -> None:
    topics = _topics(kafka_broker)
    archive = tmp_path / "archive"
    archive.mkdir()
    inputs: dict[str, bytes] = {}
    for i, path in enumerate(pydicom_colour_files()):
        inputs[f"dcm-{i}"] = path.read_bytes()
    for i in range(3):
        inputs[f"jpeg-{i}"] = synthetic_jpeg(900 + 100 * i, 700, seed=i)
    for i in range(2):
        inputs[f"png-{i}"] = synthetic_png(500, 400 + 50 * i, seed=10 + i)
    (archive / "ref.jpg").write_bytes(synthetic_jpeg(800, 600, seed=99))
    inputs_by_ref = {"ref-0": archive / "ref.jpg"}
    sr = pydicom_test_files_dir() / "test-SR.dcm"
    bad = {
        "bad-truncated": (pydicom_test_files_dir() / "SC_rgb_jpeg.dcm").read_bytes()[:3000],
        "bad-random": np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        "bad-empty": b"",
        "bad-no-pixels": sr.read_bytes(),
        "bad-bomb": decompression_bomb_png(),
        "bad-outside": b'{"uri": "../../etc/passwd"}',
        "bad-missing": b'{"uri": "no/such/file.dcm"}',
    }
    expected_types = {
        "bad-truncated": {"truncated"}, "bad-random": {"unsupported_format"}, "bad-empty": {"empty"},
        "bad-no-pixels": {"no_pixel_data"}, "bad-bomb": {"decompression_bomb"},
        "bad-outside": {"reference_outside_root"}, "bad-missing": {"reference_not_found"},
    }
    items = [(None, v, [("request-id", k.encode())]) for k, v in {**inputs, **bad}.items()]
    items += [(k, b'{"uri": "%s"}' % p.name.encode(), []) for k, p in inputs_by_ref.items()]
    produce(kafka_broker.bootstrap_servers, topics["request"], items)

    consumer = ConsumerProcess(kafka_broker.bootstrap_servers, served_triton.grpc_url, topics, "g-e2e",
                               tmp_path / "consumer.log", ["--archive-root", str(archive)]).start()
    scorer = TritonScorer(served_triton.grpc_url)
    card = scorer.load_card()
    target = card.preprocessing_spec()
    expected_frames: dict[str, list[np.ndarray]] = {}
    for rid, data in {**inputs, **{k: p.read_bytes() for k, p in inputs_by_ref.items()}}.items():
        frames = decode(data, target=target).arrays
        for n, frame in enumerate(frames, start=1):
            expected_frames[rid if len(frames) == 1 else f"{rid}:{n}"] = [preprocess(frame, target)]
    reader = TopicReader(kafka_broker.bootstrap_servers, topics["result"], topics["dead"])
    try:
        msgs = reader.read(lambda m: _ok_ids(m, topics["result"]) >= set(expected_frames)
                           and _ok_ids(m, topics["dead"]) >= set(bad), timeout=600)
        assert consumer.alive(), consumer.log()
    finally:
        reader.close()
        assert consumer.stop() == 0, consumer.log()

    results = {m["request_id"]: m for m in msgs[topics["result"]]}
    assert set(results) == set(expected_frames)
    for rid, (image,) in expected_frames.items():
        direct = scorer.infer(image[None])[0]
        got = results[rid]
        assert got["status"] == "ok" and got["model"] == card.model_summary()
        assert ("warning" in got) == (not card.trained)
        assert got["malignancy"] == pytest.approx(direct.malignancy, abs=1e-4), rid
        for level in ("coarse", "fine"):
            assert got[level].keys() == getattr(direct, level).keys()
            np.testing.assert_allclose(list(got[level].values()), list(getattr(direct, level).values()), atol=1e-4)
        assert sum(got["coarse"].values()) == pytest.approx(1.0, abs=1e-4)
        assert got["source"]["topic"] == topics["request"]
        if rid.startswith("dcm-"):
            assert got["dicom"]["sop_instance_uid"]
    dead = {m["request_id"]: m for m in msgs[topics["dead"]]}
    for rid, types in expected_types.items():
        assert dead[rid]["status"] == "rejected"
        assert dead[rid]["error"]["type"] in types, (rid, dead[rid]["error"])
    assert not set(dead) & set(results)
    log = consumer.log()
    assert "PatientName" not in log and "Patient" not in log


def test_sigkill_twice_mid_stream_loses_nothing(kafka_broker: Any, served_triton: Any, tmp_path: Path) -> None:
    topics = _topics(kafka_broker, partitions=3)
    jpegs = [synthetic_jpeg(320, 240, seed=s) for s in range(6)]
    ids = [f"m-{i:03d}" for i in range(300)]
    produce(kafka_broker.bootstrap_servers, topics["request"],
            [(rid, jpegs[i % len(jpegs)], []) for i, rid in enumerate(ids)])
    consumer = ConsumerProcess(kafka_broker.bootstrap_servers, served_triton.grpc_url, topics, "g-kill",
                               tmp_path / "consumer.log", ["--max-in-flight", "32"])
    reader = TopicReader(kafka_broker.bootstrap_servers, topics["result"], topics["dead"])
    try:
        consumer.start()
        reader.read(lambda m: len(_ok_ids(m, topics["result"])) >= 60, timeout=300)
        consumer.kill()
        restarted, log_from = datetime.now(UTC), consumer.log_path.stat().st_size
        consumer.start()
        # The second kill must not land on a message retried alone: that one is poison by design
        # (docs/runbook.md, poison messages). So wait until the restarted consumer has answered a message
        # past the last suspect of every partition.
        reader.read(lambda m: len(_ok_ids(m, topics["result"])) >= 150 and _past_every_suspect(
            m[topics["result"]], consumer.log_path, log_from, restarted, partitions=3), timeout=300)
        consumer.kill()
        consumer.start()
        msgs = reader.read(lambda m: _ok_ids(m, topics["result"]) >= set(ids), timeout=400)
    finally:
        reader.close()
        if consumer.alive():
            consumer.stop()
    assert msgs[topics["dead"]] == []
    by_id: dict[str, list[dict[str, Any]]] = {}
    for m in msgs[topics["result"]]:
        by_id.setdefault(m["request_id"], []).append(m)
    assert set(by_id) == set(ids)
    for copies in by_id.values():
        assert len({(c["malignancy"], tuple(c["coarse"].values())) for c in copies}) == 1


def _past_every_suspect(results: list[dict[str, Any]], log_path: Path, log_from: int, since: datetime,
                        partitions: int) -> bool:
    """Has the consumer started at ``since`` (its log from byte ``log_from``) answered, in every request
    partition, a message past the last suspect its predecessor's death left there? Then no suspect is
    left to retry alone."""
    import json

    last = dict.fromkeys(range(partitions), -1)
    for line in log_path.read_bytes()[log_from:].decode(errors="replace").splitlines():
        if '"suspects"' in line:
            entry = json.loads(line)
            last[entry["partition"]] = max(last[entry["partition"]], entry["last_offset"])
    beyond = {src["partition"] for m in results if datetime.fromisoformat(m["scored_at"]) > since
              and (src := m["source"])["offset"] > last[src["partition"]]}
    return beyond >= set(last)


def test_triton_stopped_for_ten_seconds(kafka_broker: Any, served_triton: Any, tmp_path: Path) -> None:
    topics = _topics(kafka_broker)
    jpeg = synthetic_jpeg(320, 240, seed=3)
    ids = [f"t-{i:03d}" for i in range(120)]
    produce(kafka_broker.bootstrap_servers, topics["request"], [(rid, jpeg, []) for rid in ids])
    consumer = ConsumerProcess(kafka_broker.bootstrap_servers, served_triton.grpc_url, topics, "g-triton",
                               tmp_path / "consumer.log", ["--max-in-flight", "16"]).start()
    reader = TopicReader(kafka_broker.bootstrap_servers, topics["result"], topics["dead"])
    try:
        reader.read(lambda m: len(m[topics["result"]]) >= 20, timeout=300)
        served_triton.stop()
        time.sleep(10)
        served_triton.start()
        served_triton.wait_ready(120)
        msgs = reader.read(lambda m: _ok_ids(m, topics["result"]) >= set(ids), timeout=400)
        assert consumer.alive(), consumer.log()
    finally:
        reader.close()
        consumer.stop()
    assert msgs[topics["dead"]] == []
    assert "triton_down" in consumer.log()


def _assigned_partitions(log_path: Path) -> set[int]:
    """The partitions a consumer holds now, from its own log's assigned / revoked events."""
    import json

    owned: set[int] = set()
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "assigned":
            owned = set(entry.get("partitions", []))
        elif entry.get("event") == "revoked":
            owned -= set(entry.get("partitions", []))
    return owned


def test_two_consumers_share_the_partitions(kafka_broker: Any, served_triton: Any, tmp_path: Path) -> None:
    topics = _topics(kafka_broker, partitions=6)
    jpeg = synthetic_jpeg(320, 240, seed=5)
    ids = [f"g-{i:03d}" for i in range(90)]
    consumers = [ConsumerProcess(kafka_broker.bootstrap_servers, served_triton.grpc_url, topics, "g-two",
                                 tmp_path / f"consumer{i}.log", ["--max-in-flight", "8"]).start() for i in range(2)]
    # Requests go out once the group has settled with both members: otherwise whichever starts first
    # can answer all 90 before the other has joined, and the split is not tested.
    deadline = time.monotonic() + 120
    while True:
        owned = [_assigned_partitions(c.log_path) for c in consumers]
        if all(owned) and set().union(*owned) == set(range(6)) and not owned[0] & owned[1]:
            break
        assert time.monotonic() < deadline, f"the group did not settle with both members: {owned}"
        assert all(c.alive() for c in consumers), [c.log() for c in consumers]
        time.sleep(0.5)
    produce(kafka_broker.bootstrap_servers, topics["request"], [(rid, jpeg, []) for rid in ids])
    reader = TopicReader(kafka_broker.bootstrap_servers, topics["result"], topics["dead"])
    try:
        msgs = reader.read(lambda m: _ok_ids(m, topics["result"]) >= set(ids), timeout=400)
    finally:
        reader.close()
        for c in consumers:
            assert c.stop() == 0, c.log()
    workers = {m["consumer"] for m in msgs[topics["result"]]}
    assert len(workers) == 2, "both members of the group should have processed messages"
    by_worker: dict[str, set[int]] = {}
    for m in msgs[topics["result"]]:
        by_worker.setdefault(m["consumer"], set()).add(m["source"]["partition"])
    assert set().union(*by_worker.values()) == set(range(6))


def test_size_limits(kafka_broker: Any, served_triton: Any, tmp_path: Path) -> None:
    topics = _topics(kafka_broker, partitions=1)
    kafka_broker.create_topics({f"{topics['request']}-small": 1}, config={"max.message.bytes": 200_000})
    big = tmp_path / "big.png"
    big.write_bytes(synthetic_png(1200, 900, seed=1))  # about 2 MB
    assert big.stat().st_size > 300_000
    # Over the broker's limit: `skinbatch publish` says so and exits 3 (some files not sent).
    out = subprocess.run([sys.executable, "-m", "skinbatch.cli", "publish", str(big), "--bootstrap-servers",
                          kafka_broker.bootstrap_servers, "--request-topic", f"{topics['request']}-small"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == ExitCode.PARTIAL and "size limit" in out.stderr, out.stderr
    # Over the consumer's own limit: a dead letter of type too_large; smaller messages still pass.
    produce(kafka_broker.bootstrap_servers, topics["request"],
            [("big", big.read_bytes(), []), ("small", synthetic_jpeg(300, 200), [])])
    consumer = ConsumerProcess(kafka_broker.bootstrap_servers, served_triton.grpc_url, topics, "g-size",
                               tmp_path / "consumer.log", ["--max-image-bytes", "300000"]).start()
    reader = TopicReader(kafka_broker.bootstrap_servers, topics["result"], topics["dead"])
    try:
        msgs = reader.read(lambda m: len(m[topics["result"]]) >= 1 and len(m[topics["dead"]]) >= 1, timeout=300)
    finally:
        reader.close()
        consumer.stop()
    assert msgs[topics["dead"]][0]["request_id"] == "big"
    assert msgs[topics["dead"]][0]["error"]["type"] == "too_large"
    assert msgs[topics["result"]][0]["request_id"] == "small"


def test_sigterm_drains_and_exits_zero(kafka_broker: Any, served_triton: Any, tmp_path: Path) -> None:
    from kafka import KafkaConsumer, TopicPartition

    topics = _topics(kafka_broker, partitions=1)
    jpeg = synthetic_jpeg(320, 240, seed=8)
    n = 120
    produce(kafka_broker.bootstrap_servers, topics["request"], [(f"s-{i}", jpeg, []) for i in range(n)])
    consumer = ConsumerProcess(kafka_broker.bootstrap_servers, served_triton.grpc_url, topics, "g-term",
                               tmp_path / "consumer.log", ["--max-in-flight", "8"]).start()
    reader = TopicReader(kafka_broker.bootstrap_servers, topics["result"])
    try:
        reader.read(lambda m: len(m[topics["result"]]) >= 5, timeout=300)
        consumer.signal(signal.SIGTERM)
        assert consumer.stop(timeout=90) == 0, consumer.log()
        answered = {m["source"]["offset"] for m in reader.read_to_end()[topics["result"]]}
    finally:
        reader.close()
    assert "draining" in consumer.log()
    tp = TopicPartition(topics["request"], 0)
    probe = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap_servers, group_id="g-term",
                          enable_auto_commit=False)
    committed = probe.committed(tp)
    probe.close()
    # The drain finished what was in flight and committed it: exactly the answered prefix.
    assert committed is not None and committed == max(answered) + 1 < n
    assert set(range(committed)) <= answered
    # A new member starts at the committed position, and together the two runs answer everything.
    second = ConsumerProcess(kafka_broker.bootstrap_servers, served_triton.grpc_url, topics, "g-term",
                             tmp_path / "consumer2.log").start()
    reader = TopicReader(kafka_broker.bootstrap_servers, topics["result"])
    try:
        msgs = reader.read(lambda m: {x["request_id"] for x in m[topics["result"]]} >= {f"s-{i}" for i in range(n)},
                           timeout=300)
    finally:
        reader.close()
        assert second.stop() == 0, second.log()
    second_run = [m for m in msgs[topics["result"]] if m["source"]["offset"] >= committed]
    assert min(m["source"]["offset"] for m in second_run) == committed


def test_fetch_watchdog_rejoins_then_exits_and_nothing_is_lost(kafka_broker: Any, served_triton: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A kafka-python that stops fetching (upstream issues #3106, #3131) must not idle forever.

    In-process, with a KafkaConsumer that pauses its partitions behind the service's back as they are
    assigned and never resumes them: records wait, nothing arrives. The service must rejoin its group, then exit with
    status 10 (FETCH_STALLED) having committed nothing; a healthy member then answers every message, and its
    watchdog stays quiet.
    """
    import threading

    from kafka import KafkaConsumer
    from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener

    from skinbatch.consumer.cli import build_consumer
    from skinbatch.consumer.config import ConsumerConfig
    from skinbatch.consumer.metrics import ConsumerMetrics
    from skinbatch.consumer.service import ScoringConsumer
    from skinbatch.contract import ExitCode

    class NeverFetches(KafkaConsumer):  # type: ignore[misc]
        """Pauses every partition it is given and ignores resume(): records wait, none is fetched."""

        def subscribe(self, topics: Any = (), pattern: Any = None, listener: Any = None) -> None:
            consumer = self

            class Pausing(AsyncConsumerRebalanceListener):  # type: ignore[misc]
                # The service's listener is a coroutine (kafka-python 3.0 runs listeners on its IO loop).
                async def on_partitions_revoked(self, revoked: Any) -> None:
                    await listener.on_partitions_revoked(revoked)

                async def on_partitions_assigned(self, assigned: Any) -> None:
                    await listener.on_partitions_assigned(assigned)
                    consumer.pause(*assigned)  # before the fetch of the poll that brought the assignment

            super().subscribe(topics, pattern, Pausing())

        def resume(self, *partitions: Any) -> None:
            pass

    topics = _topics(kafka_broker, partitions=2)
    ids = [f"w-{i}" for i in range(6)]
    produce(kafka_broker.bootstrap_servers, topics["request"],
            [(rid, synthetic_jpeg(320, 240, seed=i), []) for i, rid in enumerate(ids)])
    config = ConsumerConfig.from_values(
        bootstrap_servers=kafka_broker.bootstrap_servers, triton_url=served_triton.grpc_url,
                            request_topic=topics["request"], result_topic=topics["result"],
                            dead_letter_topic=topics["dead"], group_id="g-watchdog", metrics_port=None,
                            decode_workers=1, session_timeout_ms=6000, fetch_stall_s=2.0)

    def run(service: ScoringConsumer, timeout: float) -> int | None:
        """The service's exit status, or None if it was still running after ``timeout`` (then stopped)."""
        code: list[int] = []
        thread = threading.Thread(target=lambda: code.append(service.run()), daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            service.stop()
            thread.join(60)
            return None
        return code[0]

    # The Kafka client is passed in: here one that never fetches.
    stuck_metrics = ConsumerMetrics()
    stuck = build_consumer(config, stuck_metrics, consumer_class=NeverFetches)
    assert run(stuck, timeout=120) == ExitCode.FETCH_STALLED
    assert stuck_metrics.fetch_stalls.labels("rejoin")._value.get() == 1
    assert stuck_metrics.fetch_stalls.labels("exit")._value.get() == 1
    assert stuck_metrics.messages.labels("ok")._value.get() == 0

    healthy_metrics = ConsumerMetrics()
    healthy = build_consumer(config, healthy_metrics)
    code: list[int] = []
    worker = threading.Thread(target=lambda: code.append(healthy.run()), daemon=True)
    worker.start()
    reader = TopicReader(kafka_broker.bootstrap_servers, topics["result"])
    try:
        msgs = reader.read(lambda m: _ok_ids(m, topics["result"]) >= set(ids), timeout=180)
        time.sleep(5)  # a few more looks of the watchdog at an idle, fully delivered consumer
    finally:
        reader.close()
        healthy.stop()
        worker.join(60)
    assert _ok_ids(msgs, topics["result"]) == set(ids)
    assert code == [0]
    assert healthy_metrics.fetch_stalls.labels("rejoin")._value.get() == 0
