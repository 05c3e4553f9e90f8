"""The consumer against Kafka producers and brokers that no one here wrote, or that misbehave.

* **A real Java producer** (Apache Kafka's own client, from the jars ``localstack`` fetches, run as a
  single source file) publishes images with each of none, gzip, snappy, lz4 and zstd, and to a topic
  whose own ``compression.type`` is zstd (the broker recompresses whatever it gets). Every request is
  answered and nothing is dead-lettered.
* **A photo larger than the consumer's fetch size** (2+ MB against 1 MB a partition), from the same
  Java producer, is answered.
* **A codec this install cannot read** (lz4 switched off in kafka-python) stops the consumer with exit
  11 and one line naming the package: nothing dead-lettered, nothing committed past the batch.
* **The broker is SIGKILLed mid-stream** and started again on the same data: every request is answered,
  nothing is dead-lettered, and the consumer keeps running.
* **An oversized result** (a topic limit lowered under a running consumer, so the broker refuses a
  batch and kafka-python's idempotent producer turns fatal): the producer is replaced, nothing is lost,
  and the record that does not fit becomes a ``result_too_large`` dead letter.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from skinbatch.contract import ExitCode
from skinbatch.samples import pydicom_colour_files, synthetic_jpeg
from tests.fixtures.kafka import run_java_client
from tests.fixtures.needs import need_java
from tests.fixtures.stack import ConsumerProcess, TopicReader, produce, unique_topics

pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]

JAVA_PRODUCER = Path(__file__).parent / "java" / "CodecProducer.java"
CODECS = ("none", "gzip", "snappy", "lz4", "zstd")


def _ids(msgs: dict[str, list[dict[str, Any]]], topic: str) -> set[str]:
    return {m["request_id"] for m in msgs[topic]}


def run_java_producer(bootstrap: str, plan: list[tuple[str, str, str, Path]], work: Path) -> str:
    """Send ``(topic, compression.type, request id, file)`` records with Kafka's Java client."""
    plan_file = work / "plan.tsv"
    plan_file.write_text("".join(f"{t}\t{c}\t{rid}\t{path}\n" for t, c, rid, path in plan))
    return run_java_client(JAVA_PRODUCER, bootstrap, str(plan_file))


def test_a_java_producer_with_every_codec(kafka_broker: Any, served_triton: Any, tmp_path: Path) -> None:
    need_java()  # the Java producer runs with the JDK that runs the local Kafka
    topics = unique_topics("codec")
    zstd_topic = topics["request"] + "-zstd"
    kafka_broker.create_topics({topics["request"]: 3, topics["result"]: 1, topics["dead"]: 1})
    kafka_broker.create_topics({zstd_topic: 2}, config={"compression.type": "zstd"})
    images = []
    for i in range(2):
        path = tmp_path / f"photo{i}.jpg"
        path.write_bytes(synthetic_jpeg(640, 480, seed=i))
        images.append(path)
    images.append(next(p for p in pydicom_colour_files() if p.name == "SC_rgb_jpeg_dcmtk.dcm"))
    plan = [(topics["request"], codec, f"{codec}-{i}", path) for codec in CODECS for i, path in enumerate(images)]
    plan += [(zstd_topic, codec, f"topic-zstd-{codec}-{i}", path)
             for codec in ("none", "lz4") for i, path in enumerate(images)]
    out = run_java_producer(kafka_broker.bootstrap_servers, plan, tmp_path)
    assert f"sent {len(plan)} records" in out

    consumers = [
        ConsumerProcess(kafka_broker.bootstrap_servers, served_triton.grpc_url,
                        {**topics, "request": request}, f"g-codec-{n}", tmp_path / f"consumer{n}.log").start()
        for n, request in enumerate((topics["request"], zstd_topic))
    ]
    reader = TopicReader(kafka_broker.bootstrap_servers, topics["result"], topics["dead"])
    wanted = {rid for _, _, rid, _ in plan}
    try:
        # Stop waiting as soon as a consumer dies (a codec it cannot read exits 11 at start-up).
        msgs = reader.read(lambda m: _ids(m, topics["result"]) >= wanted or bool(m[topics["dead"]])
                           or not all(c.alive() for c in consumers), timeout=400)
        assert all(c.alive() for c in consumers), [c.log() for c in consumers]
    finally:
        reader.close()
        codes = [c.stop() for c in consumers]
    assert codes == [0, 0], [c.log() for c in consumers]
    assert not msgs[topics["dead"]], msgs[topics["dead"]]
    assert _ids(msgs, topics["result"]) == wanted


def test_a_photo_larger_than_a_fetch_from_a_java_producer_is_answered(
        kafka_broker: Any, served_triton: Any, tmp_path: Path) -> None:
    """The consumer fetches 1 MB a partition (Kafka's default); a 12 MP photo of 2+ MB still comes whole,
    because the broker returns a fetch's first record batch entire (KIP-74)."""
    need_java()  # the Java producer runs with the JDK that runs the local Kafka
    topics = unique_topics("large")
    kafka_broker.create_topics({topics["request"]: 1, topics["result"]: 1, topics["dead"]: 1})
    large, small = tmp_path / "large.jpg", tmp_path / "small.jpg"
    large.write_bytes(synthetic_jpeg(4000, 3000, seed=3))
    small.write_bytes(synthetic_jpeg(640, 480, seed=4))
    assert large.stat().st_size > 1 << 20
    plan = [(topics["request"], "none", "large", large), (topics["request"], "none", "small", small)]
    run_java_producer(kafka_broker.bootstrap_servers, plan, tmp_path)
    consumer = ConsumerProcess(kafka_broker.bootstrap_servers, served_triton.grpc_url, topics, "g-large",
                               tmp_path / "consumer.log").start()
    reader = TopicReader(kafka_broker.bootstrap_servers, topics["result"], topics["dead"])
    try:
        msgs = reader.read(lambda m: _ids(m, topics["result"]) >= {"large", "small"} or bool(m[topics["dead"]])
                           or not consumer.alive(), timeout=180)
    finally:
        reader.close()
        code = consumer.stop()
    assert code == 0, consumer.log()
    assert not msgs[topics["dead"]], msgs[topics["dead"]]
    assert _ids(msgs, topics["result"]) == {"large", "small"}


def test_a_codec_that_cannot_be_read_stops_the_consumer_cleanly(
        kafka_broker: Any, served_triton: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two plain records, then an lz4 batch that this process is made unable to decompress."""
    import kafka.codec
    from kafka import KafkaAdminClient, KafkaProducer

    from skinbatch.consumer.cli import build_consumer
    from skinbatch.consumer.config import ConsumerConfig

    topics = unique_topics("nocodec")
    kafka_broker.create_topics({topics["request"]: 1, topics["result"]: 1, topics["dead"]: 1})
    produce(kafka_broker.bootstrap_servers, topics["request"],
            [(f"plain-{i}", synthetic_jpeg(320, 240, seed=i), []) for i in range(2)])
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers, compression_type="lz4", acks="all")
    for i in range(3):
        producer.send(topics["request"], key=f"lz4-{i}".encode(), value=synthetic_jpeg(320, 240, seed=10 + i))
    producer.flush()
    producer.close()

    monkeypatch.setattr(kafka.codec, "has_lz4", lambda: False)
    config = ConsumerConfig.from_values(
        bootstrap_servers=kafka_broker.bootstrap_servers, triton_url=served_triton.grpc_url,
                            request_topic=topics["request"], result_topic=topics["result"],
                            dead_letter_topic=topics["dead"], group_id="g-nocodec", metrics_port=None,
                            decode_workers=1, session_timeout_ms=6000, max_in_flight=1,
                            compression_type="gzip")  # its own results must not need the codec switched off
    service = build_consumer(config)
    code: list[int] = []
    worker = threading.Thread(target=lambda: code.append(service.run()), daemon=True)
    worker.start()
    worker.join(240)
    if worker.is_alive():
        service.stop()
        worker.join(60)
    assert code == [ExitCode.KAFKA_CODEC]
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap_servers)
    try:
        committed = admin.list_group_offsets({"g-nocodec": None})["g-nocodec"]
    finally:
        admin.close()
    assert [om.offset for om in committed.values()] == [2], "the done prefix, and not one record more"
    reader = TopicReader(kafka_broker.bootstrap_servers, topics["result"], topics["dead"])
    try:
        msgs = reader.read_to_end()
    finally:
        reader.close()
    assert _ids(msgs, topics["result"]) == {"plain-0", "plain-1"}
    assert not msgs[topics["dead"]]


def test_the_broker_dies_mid_stream_and_comes_back(served_triton: Any, tmp_path: Path) -> None:
    from skinbatch.localstack.kafka import KafkaBroker
    from tests.fixtures.kafka import start_or_skip

    broker = start_or_skip(KafkaBroker(work_dir=tmp_path / "kafka"))
    try:
        topics = unique_topics("restart")
        broker.create_topics({topics["request"]: 2, topics["result"]: 1, topics["dead"]: 1})
        ids = [f"r-{i}" for i in range(60)]
        produce(broker.bootstrap_servers, topics["request"],
                [(rid, synthetic_jpeg(320, 240, seed=i), []) for i, rid in enumerate(ids[:30])])
        consumer = ConsumerProcess(broker.bootstrap_servers, served_triton.grpc_url, topics, "g-restart",
                                   tmp_path / "consumer.log").start()
        reader = TopicReader(broker.bootstrap_servers, topics["result"])
        try:
            reader.read(lambda m: len(m[topics["result"]]) >= 5, timeout=180)
        finally:
            reader.close()
        broker.kill()
        time.sleep(8)  # long enough for the consumer to notice: produces and commits fail meanwhile
        assert consumer.alive(), consumer.log()
        broker.start()
        produce(broker.bootstrap_servers, topics["request"],
                [(rid, synthetic_jpeg(320, 240, seed=30 + i), []) for i, rid in enumerate(ids[30:])])
        reader = TopicReader(broker.bootstrap_servers, topics["result"], topics["dead"])
        try:
            msgs = reader.read(lambda m: _ids(m, topics["result"]) >= set(ids), timeout=400)
            assert consumer.alive(), consumer.log()
        finally:
            reader.close()
            assert consumer.stop() == 0, consumer.log()
        assert _ids(msgs, topics["result"]) == set(ids)
        assert not msgs[topics["dead"]]
    finally:
        broker.close()


def test_a_result_too_large_for_its_topic_does_not_poison_the_producer(
        kafka_broker: Any, served_triton: Any, tmp_path: Path) -> None:
    from kafka.admin import ConfigResource, ConfigResourceType

    topics = unique_topics("toolarge")
    kafka_broker.create_topics({topics["request"]: 1, topics["result"]: 1, topics["dead"]: 1},
                               config={"max.message.bytes": 1048588})
    consumer = ConsumerProcess(kafka_broker.bootstrap_servers, served_triton.grpc_url, topics, "g-toolarge",
                               tmp_path / "consumer.log").start()
    produce(kafka_broker.bootstrap_servers, topics["request"], [("first", synthetic_jpeg(320, 240, seed=1), [])])
    reader = TopicReader(kafka_broker.bootstrap_servers, topics["result"], topics["dead"])
    try:
        reader.read(lambda m: "first" in _ids(m, topics["result"]), timeout=180)
        # Lowered under the running consumer: its producer still believes 1 MB fits, so the broker
        # refuses the batch (a non-retriable error that leaves kafka-python's idempotent producer fatal).
        admin = kafka_broker.admin_client()
        try:
            admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topics["result"],
                                                {"max.message.bytes": "20000"})])
        finally:
            admin.close()
        # Random text: the result topic's limit applies to the compressed batch, and lz4 squeezes "xxx…".
        huge_id = "big-" + base64.b64encode(os.urandom(30000)).decode()
        produce(kafka_broker.bootstrap_servers, topics["request"],
                [(None, synthetic_jpeg(320, 240, seed=2), [("request-id", huge_id.encode())])]
                + [(f"after-{i}", synthetic_jpeg(320, 240, seed=3 + i), []) for i in range(3)])
        msgs = reader.read(lambda m: {"after-0", "after-1", "after-2"} <= _ids(m, topics["result"])
                           and bool(m[topics["dead"]]), timeout=240)
        assert consumer.alive(), consumer.log()
    finally:
        reader.close()
        assert consumer.stop() == 0, consumer.log()
    (dead,) = msgs[topics["dead"]]
    assert dead["error"]["type"] == "result_too_large" and dead["request_id"].startswith("big-")
    assert "producer_rebuilt" in consumer.log()
