"""Prometheus metrics of one consumer process. Names start with ``skinbatch_consumer_``.

The same port serves ``/livez`` and ``/readyz`` (consumer/health.py): 200 when fine, 503 otherwise, with
one line saying why.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

if TYPE_CHECKING:
    from .health import Health

from skinbatch.drift import PROMETHEUS_BUCKETS

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)


class ConsumerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        p = "skinbatch_consumer_"
        self.messages = Counter(p + "messages_total", "Kafka messages finished, by outcome", ["outcome"], registry=r)
        self.images = Counter(p + "images_total", "Images (frames) scored", registry=r)
        self.errors = Counter(p + "errors_total", "Rejected inputs and retried faults, by type", ["type"], registry=r)
        self.retries = Counter(p + "retries_total", "Retries after infrastructure faults, by stage", ["stage"],
                               registry=r)
        self.latency = Histogram(p + "end_to_end_seconds",
                                 "From the request's Kafka timestamp to its result acknowledged",
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.decode_seconds = Histogram(p + "decode_seconds", "Decode and preprocess time per message",
                                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5), registry=r)
        self.infer_seconds = Histogram(p + "infer_seconds", "Triton round trip per image",
                                       buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10), registry=r)
        self.in_flight = Gauge(p + "in_flight_messages", "Messages taken from Kafka and not yet answered", registry=r)
        self.infer_in_flight = Gauge(p + "in_flight_images", "Images sent to Triton and not yet answered", registry=r)
        self.lag = Gauge(p + "lag", "Messages behind the partition's end (high watermark − committed)",
                         ["topic", "partition"], registry=r)
        self.triton_up = Gauge(p + "triton_up", "1 while Triton answers, 0 while the consumer waits for it", registry=r)
        self.paused = Gauge(p + "paused", "1 while consumption is paused (backpressure or Triton down)", registry=r)
        self.reports = Counter(p + "reports_total", "Structured reports handled with --store-results: "
                               "stored, or found already stored (redelivery)", ["outcome"], registry=r)
        self.archive_up = Gauge(p + "archive_up", "1 while the DICOMweb archive answers (or none is configured), "
                                "0 while the consumer waits for it", registry=r)
        self.archive_up.set(1)
        self.archive_token_failures = Counter(
            p + "archive_token_refresh_failures_total",
            "Failed attempts to fetch an OAuth2 token for the DICOMweb archive (the issuer down or refusing us)",
            registry=r)
        self.archive_token_ok = Gauge(p + "archive_token_ok", "0 while fetching the archive's OAuth2 token "
                                      "fails, 1 otherwise", registry=r)
        self.archive_token_ok.set(1)
        self.fetch_stalls = Counter(p + "fetch_stalls_total", "Backlogs Kafka stopped delivering, by action taken: "
                                    "rejoin (the group) or exit (for a restart)", ["action"], registry=r)
        self.malignancy = Histogram(p + "malignancy", "P(malignant) of every scored frame, by model version "
                                    "(the drift bins of skinbatch.drift)", ["model_version"],
                                    buckets=PROMETHEUS_BUCKETS, registry=r)
        self.malignancy_psi = Gauge(p + "malignancy_psi", "Population stability index of P(malignant) over this "
                                    "consumer's last scores against the model card's reference distribution",
                                    ["model_version"], registry=r)
        self.batch_size = Gauge(p + "triton_average_batch_size",
                                "Average batch size Triton formed for the Inception model since the last sample",
                                registry=r)

        self.health: Health | None = None
        """Set by the consumer once it exists; /livez and /readyz answer 503 "starting" before."""

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """/metrics (and any other path, as prometheus_client does), /livez and /readyz, on a thread."""
        server = make_server(host, port, self.app(), ThreadingWSGIServer, handler_class=_Quiet)
        threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()

    def app(self) -> Callable[[dict[str, Any], Any], Iterable[bytes]]:
        metrics_app = make_wsgi_app(self.registry)

        def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path not in ("/livez", "/readyz"):
                return metrics_app(environ, start_response)
            health = self.health
            if health is None:
                ok, why = False, "starting"
            else:
                ok, why = health.live() if path == "/livez" else health.ready()
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")])
            return [why.encode() + b"\n"]

        return app


class _Quiet(WSGIRequestHandler):
    """No access log on stderr: probes come every few seconds."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass
