"""One reading of the serving stack (Triton health, counters, model card; Kafka lag) and the report built
from two consecutive readings.

``read_triton`` and ``KafkaProbe.snapshot`` do the I/O; ``build_report`` is pure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from skinbatch.connect.options import TritonTarget
from skinbatch.contract import ENSEMBLE, ExitCode
from skinbatch.modelcard import ModelCard

from .drift import DriftSnapshot, ScoreDriftReport, build_drift, snapshot
from .health import TritonHealth, check_triton
from .kafka_lag import GroupStatus, KafkaSnapshot, group_status
from .prometheus import fetch_metrics, parse_metrics
from .triton_stats import ModelCounters, ModelFigures, counters_from_metrics, counters_from_statistics, model_figures


@dataclass
class TritonSnapshot:
    taken_at: float
    health: TritonHealth
    counters: dict[tuple[str, str], ModelCounters] = field(default_factory=dict)
    counters_source: str = ""
    """``metrics`` (Prometheus endpoint) or ``statistics`` (gRPC statistics), whichever answered."""
    metrics_error: str = ""
    card: dict[str, Any] | None = None
    model_card: ModelCard | None = None
    """The whole served card (its reference distribution, for the drift figures)."""


def read_triton(
    target: TritonTarget, metrics_url: str, model: str = ENSEMBLE, timeout_s: float = 3.0
) -> TritonSnapshot:
    from skinbatch.modelcard import card_from_model_config
    from skinbatch.scoring import open_transport

    client = open_transport(target.endpoint, target.tls)
    try:
        health = check_triton(target, model=model, timeout_s=timeout_s, transport=client)
        snap = TritonSnapshot(taken_at=time.monotonic(), health=health)
        if not health.live:
            return snap
        stats_counters: dict[tuple[str, str], ModelCounters] = {}
        try:
            stats_counters = counters_from_statistics(client.statistics(timeout_s))
        except Exception:  # noqa: BLE001 - figures are best effort; health already decided the exit code
            pass
        if any(m.name == model and m.ready for m in health.models):
            try:
                snap.model_card = card_from_model_config(client.model_config(model, timeout_s))
                snap.card = snap.model_card.model_summary()
            except Exception:  # noqa: BLE001 - a model without a card still has figures
                snap.card = None
    finally:
        client.close()
    try:
        metric_counters = counters_from_metrics(parse_metrics(fetch_metrics(metrics_url, timeout_s)))
    except Exception as exc:  # noqa: BLE001
        snap.metrics_error = f"{metrics_url}: {exc}"
        metric_counters = {}
    if metric_counters:
        snap.counters, snap.counters_source = metric_counters, "metrics"
    else:
        snap.counters, snap.counters_source = stats_counters, "statistics" if stats_counters else ""
    return snap


@dataclass
class StatusReport:
    checked_at: str
    triton: TritonHealth
    model_card: dict[str, Any] | None
    models: list[ModelFigures]
    counters_source: str
    metrics_error: str
    kafka: GroupStatus | None = None
    kafka_error: str = ""
    drift: ScoreDriftReport | None = None

    @property
    def problems(self) -> list[str]:
        out = list(self.triton.problems)
        if self.kafka_error:
            out.append(self.kafka_error)
        return out

    @property
    def exit_code(self) -> ExitCode:
        code = self.triton.exit_code
        if code == ExitCode.OK and self.kafka_error:
            return ExitCode.KAFKA
        return code

    def to_dict(self) -> dict[str, Any]:
        return {
            "checked_at": self.checked_at,
            "exit_code": int(self.exit_code),
            "ok": self.exit_code == ExitCode.OK,
            "problems": self.problems,
            "triton": self.triton.to_dict(),
            "model_card": self.model_card,
            "models": [m.to_dict() for m in self.models],
            "counters_source": self.counters_source,
            "metrics_error": self.metrics_error or None,
            "kafka": self.kafka.to_dict() if self.kafka else None,
            "kafka_error": self.kafka_error or None,
            "drift": self.drift.to_dict() if self.drift else None,
        }


def build_report(now: TritonSnapshot, before: TritonSnapshot | None = None,
                 kafka_now: KafkaSnapshot | None = None, kafka_before: KafkaSnapshot | None = None,
                 kafka_error: str = "", drift_now: DriftSnapshot | None = None,
                 drift_before: DriftSnapshot | None = None) -> StatusReport:
    interval = now.taken_at - before.taken_at if before is not None else None
    previous = before.counters if before is not None and before.counters_source == now.counters_source else {}
    order = {m.name: i for i, m in enumerate(now.health.models)}
    figures = [
        model_figures(c, previous.get(key), interval)
        for key, c in sorted(now.counters.items(), key=lambda kv: (order.get(kv[0][0], 1 << 30), kv[0]))
    ]
    return StatusReport(
        checked_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        triton=now.health,
        model_card=now.card,
        models=figures,
        counters_source=now.counters_source,
        metrics_error=now.metrics_error,
        kafka=group_status(kafka_now, kafka_before) if kafka_now is not None else None,
        kafka_error=kafka_error,
        drift=_drift(now, drift_now, drift_before),
    )


def _drift(now: TritonSnapshot, drift_now: DriftSnapshot | None,
           before: DriftSnapshot | None) -> ScoreDriftReport | None:
    if drift_now is None or now.model_card is None:
        return None
    return build_drift(drift_now, before, now.model_card.reference(), now.model_card.version)


def read_drift(urls: list[str], version: str, timeout_s: float = 3.0) -> DriftSnapshot:
    """Every consumer's metrics page (``--consumer-metrics-url``), summed."""
    pages, errors = [], []
    for url in urls:
        try:
            pages.append(parse_metrics(fetch_metrics(url, timeout_s)))
        except Exception as exc:  # noqa: BLE001 - one consumer that does not answer is reported, not fatal
            errors.append(f"{url}: {exc}")
    return snapshot(pages, version, errors)
