"""``skinbatch status`` against the real local Triton (and the real Kafka broker for lag)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from skinbatch.serve import LocalTriton
from tests.fixtures.triton import local_triton

pytestmark = [pytest.mark.system, pytest.mark.timeout(300)]

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_status(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "skinbatch.cli", "status", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)


def burst(server: LocalTriton, n: int = 48) -> None:
    """``n`` single-image requests all in flight at once, so Triton's dynamic batcher merges them."""
    from skinbatch.scoring import TritonScorer

    scorer = TritonScorer(server.grpc_endpoint)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 1, 299, 299, 3), dtype=np.uint8)
    done = threading.Semaphore(0)
    errors: list[Any] = []

    def callback(scores: Any, error: Any) -> None:
        if error is not None:
            errors.append(error)
        done.release()

    for image in images:
        scorer.infer_async(image, callback)
    for _ in range(n):
        assert done.acquire(timeout=120)
    scorer.close()
    assert not errors


def statistics(server: LocalTriton, model: str) -> tuple[int, int]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_endpoint)
    m = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    client.close()
    return int(m["inference_count"]), int(m["execution_count"])


def test_status_reports_real_batching(served_triton: LocalTriton) -> None:
    burst(served_triton)
    inferences, executions = statistics(served_triton, "inception_v3")
    r = run_status("--triton-url", served_triton.grpc_endpoint, "--metrics-url", served_triton.metrics_url,
                   "--json", "--interval", "0")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] and report["triton"]["live"] and report["triton"]["ready"]
    assert report["counters_source"] == "metrics"
    models = {m["name"]: m for m in report["triton"]["models"]}
    assert set(models) >= {"skin_classifier", "inception_v3", "taxonomy"}
    assert all(m["ready"] and m["version"] == "1" for m in models.values())
    figures = {f["model"]: f for f in report["models"]}
    inception = figures["inception_v3"]
    assert inception["avg_batch_size"] > 1.5, "48 concurrent requests should have been batched"
    assert inception["avg_batch_size"] == pytest.approx(inferences / executions)
    assert inception["queue_ms_per_request"] > 0 and inception["compute_ms_per_request"] > 0
    assert figures["skin_classifier"]["requests"] >= 48
    assert report["model_card"]["version"] == "1"


class Load(threading.Thread):
    """Bursts of requests until stopped; an error in the thread is kept for the test to raise."""

    def __init__(self, server: LocalTriton) -> None:
        super().__init__(daemon=True)
        self.server, self.stopped, self.errors, self.bursts = server, threading.Event(), [], 0

    def run(self) -> None:
        try:
            while not self.stopped.is_set():
                burst(self.server, 16)
                self.bursts += 1
        except BaseException as exc:  # noqa: BLE001 - handed to the test, which fails with it
            self.errors.append(exc)

    def finish(self) -> None:
        self.stopped.set()
        self.join(180)
        assert not self.is_alive(), "the load thread did not stop"
        if self.errors:
            raise self.errors[0]
        assert self.bursts > 0


def test_status_recent_figures_and_text_screen(served_triton: LocalTriton) -> None:
    """Requests keep arriving through status's interval, so the recent figures must show them."""
    load = Load(served_triton)
    load.start()
    try:
        shown = run_status("--triton-url", served_triton.grpc_endpoint, "--metrics-url", served_triton.metrics_url,
                           "--interval", "4", timeout=120)
        as_json = run_status("--triton-url", served_triton.grpc_endpoint, "--metrics-url",
                             served_triton.metrics_url, "--interval", "4", "--json", timeout=120)
    finally:
        load.finish()
    assert shown.returncode == 0, shown.stdout + shown.stderr
    out = shown.stdout
    assert "LIVE, READY" in out and "inception_v3" in out and "batch (recent)" in out and out.rstrip().endswith("OK")
    lines = out.splitlines()
    figures_table = lines[next(i for i, line in enumerate(lines) if "batch (recent)" in line):]
    row = next(line.split() for line in figures_table if line.split()[:1] == ["inception_v3"])
    assert float(row[-2]) > 0 and float(row[-1]) >= 1, f"recent req/s and batch of inception_v3: {row}"
    assert as_json.returncode == 0, as_json.stderr
    figures = {f["model"]: f for f in json.loads(as_json.stdout)["models"]}["inception_v3"]
    assert figures["recent_requests_per_s"] > 0 and figures["recent_avg_batch_size"] >= 1


def test_status_fails_clearly_when_triton_is_down(cpu_repository: Path, tmp_path: Path) -> None:
    with local_triton(cpu_repository, tmp_path / "triton") as server:
        endpoint, metrics = server.grpc_endpoint, server.metrics_url
        up = run_status("--triton-url", endpoint, "--metrics-url", metrics, "--interval", "0")
        assert up.returncode == 0, up.stdout + up.stderr
    down = run_status("--triton-url", endpoint, "--metrics-url", metrics, "--interval", "0")
    assert down.returncode == 4
    assert "DOWN" in down.stdout and "not reachable" in down.stderr and endpoint in down.stderr
    as_json = run_status("--triton-url", endpoint, "--json", "--interval", "0")
    assert as_json.returncode == 4
    report = json.loads(as_json.stdout)
    assert report["ok"] is False and report["exit_code"] == 4 and not report["triton"]["live"]


def test_status_reports_consumer_lag_and_dead_letters(served_triton: LocalTriton, kafka_broker: Any,
                                                      kafka_topic_factory: Any) -> None:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    requests = kafka_topic_factory(partitions=2, prefix="status-req")
    dead = kafka_topic_factory(partitions=1, prefix="status-dlq")
    group = f"status-group-{requests}"
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers, acks="all")
    for i in range(10):
        producer.send(requests, value=b"x", partition=i % 2)
    for _ in range(3):
        producer.send(dead, value=b"{}")
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap_servers, group_id=group,
                             enable_auto_commit=False)
    consumer.commit({TopicPartition(requests, 0): OffsetAndMetadata(2, "", -1),
                     TopicPartition(requests, 1): OffsetAndMetadata(5, "", -1)})
    consumer.close()

    r = run_status("--triton-url", served_triton.grpc_endpoint, "--metrics-url", served_triton.metrics_url,
                   "--bootstrap-servers", kafka_broker.bootstrap_servers, "--group-id", group,
                   "--dead-letter-topic", dead, "--json", "--interval", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    kafka = json.loads(r.stdout)["kafka"]
    lags = {(p["topic"], p["partition"]): (p["committed"], p["end"], p["lag"]) for p in kafka["partitions"]}
    assert lags == {(requests, 0): (2, 5, 3), (requests, 1): (5, 5, 0)}
    assert kafka["total_lag"] == 3
    assert kafka["dead_letters_retained"] == 3 and kafka["dead_letters_per_s"] == 0.0

    unknown = run_status("--triton-url", served_triton.grpc_endpoint, "--metrics-url", served_triton.metrics_url,
                         "--bootstrap-servers", kafka_broker.bootstrap_servers, "--group-id", "no-such-group",
                         "--interval", "0")
    assert unknown.returncode == 6 and "no-such-group" in unknown.stderr
