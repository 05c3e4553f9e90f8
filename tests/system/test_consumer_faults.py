"""Nothing a request names can stall a partition or exhaust a consumer (issue 20): poison messages, a wedged
loop, decodes past their limits. The real Kafka broker and the real Triton, the consumer in child processes
as in production; the misbehaviour comes from test-only fault switches (skinbatch/faults.py)."""

from __future__ import annotations

import hashlib
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from skinbatch import faults
from skinbatch.contract import ErrorType, ExitCode
from skinbatch.samples import synthetic_jpeg
from tests.fixtures.stack import ConsumerProcess, TopicReader, produce, unique_topics

pytestmark = pytest.mark.system


def _topics(broker: Any, partitions: int = 1) -> dict[str, str]:
    topics = unique_topics()
    broker.create_topics({topics["request"]: partitions, topics["result"]: 1, topics["dead"]: 1})
    return topics


def _answered(msgs: dict[str, list[dict[str, Any]]], topics: dict[str, str]) -> set[str]:
    return {m["request_id"] for m in msgs[topics["result"]]} | {m["request_id"] for m in msgs[topics["dead"]]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, why: list[str] | None = None) -> int:
    """The HTTP status (0: no answer); ``why`` gets the body."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - http URLs this test builds
            status, body = int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        status, body = int(exc.code), exc.read()
    except OSError as exc:
        status, body = 0, str(exc).encode()
    if why is not None:
        why[:] = [body.decode(errors="replace")]
    return status


def test_a_message_that_kills_the_consumer_is_dead_lettered_as_poison(kafka_broker: Any, served_triton: Any,
                                                                      tmp_path: Path) -> None:
    topics = _topics(kafka_broker)
    ids = [f"p-{i:02d}" for i in range(21)]
    culprit = ids[10]
    produce(kafka_broker.bootstrap_servers, topics["request"],
            [(rid, synthetic_jpeg(320, 240, seed=i), []) for i, rid in enumerate(ids)])
    env = {faults.ENV: f"kill_in_flight={culprit}"}  # every consumer dies whenever the culprit is in flight
    reader = TopicReader(kafka_broker.bootstrap_servers, topics["result"], topics["dead"])
    deaths = 0
    try:
        for run in range(4):
            consumer = ConsumerProcess(kafka_broker.bootstrap_servers, served_triton.grpc_url, topics, "g-poison",
                                       tmp_path / f"consumer{run}.log", ["--max-in-flight", "32"], env=env).start()
            msgs = reader.read(lambda m, c=consumer: _answered(m, topics) >= set(ids) or not c.alive(), timeout=300)
            if _answered(msgs, topics) >= set(ids):
                assert consumer.stop() == 0, consumer.log()
                break
            assert consumer.proc is not None and consumer.proc.wait(30) == -9, consumer.log()
            deaths += 1
        msgs = reader.read_to_end()
    finally:
        reader.close()
    assert deaths == 2, "in flight at one death, then alone at a second"
    dead = msgs[topics["dead"]]
    assert [(m["request_id"], m["error"]["type"]) for m in dead] == [(culprit, ErrorType.POISON)]
    assert {m["request_id"] for m in msgs[topics["result"]]} == set(ids) - {culprit}
    assert all(m["status"] == "ok" for m in msgs[topics["result"]])


def test_a_wedged_loop_fails_livez_then_exits_by_itself(kafka_broker: Any, served_triton: Any,
                                                        tmp_path: Path) -> None:
    topics = _topics(kafka_broker)
    ids = [f"w-{i}" for i in range(10)]
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    images = [(rid, synthetic_jpeg(320, 240, seed=i), []) for i, rid in enumerate(ids)]
    # The first requests before the consumer starts (the topic's metadata exists, as in production), the
    # one that wedges it once it is ready.
    produce(kafka_broker.bootstrap_servers, topics["request"], images[:4])
    wedged = ConsumerProcess(kafka_broker.bootstrap_servers, served_triton.grpc_url, topics, "g-wedge",
                             tmp_path / "wedged.log", ["--metrics-port", str(port), "--liveness-timeout-s", "8"],
                             env={faults.ENV: f"wedge={ids[4]}"}).start()
    try:
        deadline = time.monotonic() + 180
        why: list[str] = []
        while _get(base + "/readyz", why) != 200:
            assert wedged.alive() and time.monotonic() < deadline, (why, wedged.log())
            time.sleep(0.5)
        assert _get(base + "/livez") == 200
        while '"partitions": [0]' not in wedged.log_path.read_text():  # the group gave it the partition
            assert wedged.alive() and time.monotonic() < deadline, ("never assigned", wedged.log())
            time.sleep(0.5)
        produce(kafka_broker.bootstrap_servers, topics["request"], images[4:])
        seen_failing = False
        while wedged.alive():
            if _get(base + "/livez") == 503:
                metrics, ready = _get(base + "/metrics"), _get(base + "/readyz")
                if wedged.alive():  # it has not exited between the calls: what it answered counts
                    assert metrics == 200  # the HTTP thread runs on: only liveness tells
                    assert ready == 503
                    seen_failing = True
            assert time.monotonic() < deadline, wedged.log()
            time.sleep(0.5)
        assert seen_failing, wedged.log()
        assert wedged.proc is not None and wedged.proc.wait(10) == ExitCode.WEDGED, wedged.log()
        assert '"wedged"' in wedged.log()
    finally:
        if wedged.alive():
            wedged.kill()
    second = ConsumerProcess(kafka_broker.bootstrap_servers, served_triton.grpc_url, topics, "g-wedge",
                             tmp_path / "second.log").start()
    reader = TopicReader(kafka_broker.bootstrap_servers, topics["result"], topics["dead"])
    try:
        msgs = reader.read(lambda m: {x["request_id"] for x in m[topics["result"]]} >= set(ids), timeout=300)
    finally:
        reader.close()
        assert second.stop() == 0, second.log()
    assert msgs[topics["dead"]] == []


def test_decodes_over_their_time_or_memory_limit_are_dead_lettered_and_the_stream_goes_on(
        kafka_broker: Any, served_triton: Any, tmp_path: Path) -> None:
    topics = _topics(kafka_broker)
    images = {f"d-{i:02d}": synthetic_jpeg(320, 240, seed=100 + i) for i in range(20)}
    slow, hog = synthetic_jpeg(330, 250, seed=7), synthetic_jpeg(340, 260, seed=8)
    items = [(rid, data, []) for rid, data in images.items()]
    items[5:5] = [("slow", slow, [])]
    items[12:12] = [("hog", hog, [])]
    produce(kafka_broker.bootstrap_servers, topics["request"], items)
    env = {faults.ENV: f"slow_decode={_sha(slow)},hog_decode={_sha(hog)}"}
    consumer = ConsumerProcess(kafka_broker.bootstrap_servers, served_triton.grpc_url, topics, "g-decode",
                               tmp_path / "consumer.log", ["--decode-workers", "2", "--decode-timeout-s", "20",
                                                           "--decode-memory-mb", "768"], env=env).start()
    reader = TopicReader(kafka_broker.bootstrap_servers, topics["result"], topics["dead"])
    try:
        msgs = reader.read(lambda m: _answered(m, topics) >= {*images, "slow", "hog"}, timeout=400)
        assert consumer.alive(), consumer.log()
    finally:
        reader.close()
        assert consumer.stop() == 0, consumer.log()
    dead = {m["request_id"]: m["error"]["type"] for m in msgs[topics["dead"]]}
    assert dead == {"slow": ErrorType.DECODE_TIMEOUT, "hog": ErrorType.DECODE_MEMORY}
    assert {m["request_id"] for m in msgs[topics["result"]]} == set(images)
    log = consumer.log_path.read_text()
    # One worker replaced for each, never the whole pool.
    assert log.count('"event": "decode_timeout"') == 1 and log.count('"event": "decode_memory"') == 1, log[-3000:]
    assert '"pool_restart"' not in log


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
