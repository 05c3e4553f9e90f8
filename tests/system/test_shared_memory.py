"""Images reach the real Triton through system shared memory, proven by what crosses the wire.

The consumer and triage talk to Triton through :class:`CountingRelay`, which counts the bytes they send.
A 299 × 299 × 3 model input is 268,203 bytes: sent inside requests (``--shared-memory off``) every
image crosses the wire; handed over in the registered segment (``on``, and ``auto`` with Triton on this
host) only the region's name and offset do. The scores must be the same both ways, and Triton's own
shared-memory status must list the consumer's region while it runs.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from skinbatch.samples import synthetic_jpeg
from skinbatch.serve import LocalTriton
from tests.fixtures.proxy import CountingRelay
from tests.fixtures.stack import ConsumerProcess, TopicReader, produce, unique_topics

pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE_BYTES = 299 * 299 * 3
IMAGES = 12


def _registered_regions(server: LocalTriton) -> list[dict[str, Any]]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_endpoint)
    try:
        status = client.get_system_shared_memory_status(as_json=True)
    finally:
        client.close()
    return list(status.get("regions", {}).values())


def _consume(kafka_broker: Any, server: LocalTriton, mode: str, tmp_path: Path) -> tuple[dict[str, float], int, str,
                                                                                          list[dict[str, Any]]]:
    """Score IMAGES photos with ``--shared-memory mode`` through a relay; (scores, upstream bytes, log, regions)."""
    topics = unique_topics(f"shm-{mode}")
    kafka_broker.create_topics({topics["request"]: 1, topics["result"]: 1, topics["dead"]: 1})
    produce(kafka_broker.bootstrap_servers, topics["request"],
            [(f"img-{i}", synthetic_jpeg(640, 480, seed=900 + i), []) for i in range(IMAGES)])
    host, port = server.grpc_endpoint.rsplit(":", 1)
    with CountingRelay(host, int(port)) as relay:
        consumer = ConsumerProcess(kafka_broker.bootstrap_servers, f"grpc://{relay.address}", topics, f"g-shm-{mode}",
                                   tmp_path / f"consumer-{mode}.log", ["--shared-memory", mode]).start()
        reader = TopicReader(kafka_broker.bootstrap_servers, topics["result"], topics["dead"])
        try:
            msgs = reader.read(lambda m: len(m[topics["result"]]) + len(m[topics["dead"]]) >= IMAGES
                               or not consumer.alive(), timeout=300)
            regions = _registered_regions(server) if consumer.alive() else []
        finally:
            reader.close()
            code = consumer.stop()
        sent = relay.upstream_bytes
    log = consumer.log()
    assert code == 0, log
    assert not msgs[topics["dead"]], msgs[topics["dead"]]
    scores = {m["request_id"]: m["malignancy"] for m in msgs[topics["result"]]}
    assert len(scores) == IMAGES, log
    return scores, sent, log, regions


def test_the_consumer_hands_images_over_in_shared_memory(kafka_broker: Any, served_triton: LocalTriton,
                                                         tmp_path: Path) -> None:
    inline, inline_bytes, _, _ = _consume(kafka_broker, served_triton, "off", tmp_path)
    shared, shared_bytes, log, regions = _consume(kafka_broker, served_triton, "on", tmp_path)
    auto, auto_bytes, auto_log, _ = _consume(kafka_broker, served_triton, "auto", tmp_path)

    # The measurement can tell: inline, every image crossed the wire.
    assert inline_bytes >= IMAGES * IMAGE_BYTES, inline_bytes
    # In shared memory, less than one image's worth went over the wire for all of them together.
    assert shared_bytes < IMAGE_BYTES, shared_bytes
    assert auto_bytes < IMAGE_BYTES, (auto_bytes, auto_log)
    assert '"shared_memory": true' in log and '"shared_memory": true' in auto_log
    assert regions and all(int(r["byte_size"]) >= IMAGE_BYTES for r in regions), regions
    for rid, score in inline.items():
        assert shared[rid] == pytest.approx(score, abs=1e-5) and auto[rid] == pytest.approx(score, abs=1e-5), rid


def _triage(folder: Path, url: str, mode: str, out: Path) -> dict[str, float]:
    r = subprocess.run([sys.executable, "-m", "skinbatch.cli", "triage", str(folder), "--triton-url", url,
                        "--shared-memory", mode, "--out", str(out), "--json", "--no-progress"],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    with open(out / "triage.csv", newline="") as fh:
        return {Path(row["path"]).name: float(row["malignancy"]) for row in csv.DictReader(fh)}


def test_triage_hands_images_over_in_shared_memory(served_triton: LocalTriton, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(IMAGES):
        (folder / f"photo{i:02d}.jpg").write_bytes(synthetic_jpeg(640, 480, seed=950 + i))
    host, port = served_triton.grpc_endpoint.rsplit(":", 1)
    sent, scores = {}, {}
    for mode in ("off", "on", "auto"):
        with CountingRelay(host, int(port)) as relay:
            scores[mode] = _triage(folder, f"grpc://{relay.address}", mode, tmp_path / mode)
            time.sleep(0.2)  # the last bytes of a closing connection
            sent[mode] = relay.upstream_bytes
    assert len(scores["off"]) == IMAGES
    assert sent["off"] >= IMAGES * IMAGE_BYTES, sent
    assert sent["on"] < IMAGE_BYTES and sent["auto"] < IMAGE_BYTES, sent
    for name, score in scores["off"].items():
        assert scores["on"][name] == pytest.approx(score, abs=1e-5) and scores["auto"][name] == pytest.approx(score,
                                                                                                          abs=1e-5)
