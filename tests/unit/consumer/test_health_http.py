"""/livez and /readyz beside /metrics: the consumer's metrics server, over real HTTP on a local port."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

from skinbatch.consumer.health import Health
from skinbatch.consumer.metrics import ConsumerMetrics


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:  # noqa: S310 - local http
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


def test_health_paths_answer_beside_the_metrics() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    metrics = ConsumerMetrics()
    metrics.serve(port)
    assert _get(port, "/livez")[0] == 503  # no consumer yet: starting
    now = [100.0]
    health = Health(30.0, clock=lambda: now[0])
    health.started, health.kafka, health.triton = True, True, False
    metrics.health = health
    assert _get(port, "/livez") == (200, "ok\n")
    assert _get(port, "/readyz") == (503, "Triton does not answer\n")
    health.triton = True
    assert _get(port, "/readyz") == (200, "ok\n")
    now[0] += 31  # the loop stopped turning
    status, body = _get(port, "/livez")
    assert status == 503 and "not turned" in body
    status, body = _get(port, "/metrics")
    assert status == 200 and "skinbatch_consumer_messages_total" in body
