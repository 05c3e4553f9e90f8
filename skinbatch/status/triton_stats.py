"""Per-model serving figures from Triton's metrics (Prometheus) or statistics (JSON) endpoints.

Both endpoints expose the same cumulative counters; :class:`ModelCounters` holds them whichever way
they were read, and :func:`model_figures` turns them (and optionally an earlier reading) into what an
operator looks at:

* requests and failures (``nv_inference_request_success`` / ``_failure``; ``inference_stats.success`` / ``fail``);
* average batch size = inference count ÷ execution count (``nv_inference_count`` ÷ ``nv_inference_exec_count``);
  for an ensemble Triton does not batch, so its figure is the batch the clients sent;
* queue and compute time per request: the summed durations ÷ successful requests.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from .prometheus import Sample

_METRIC_FIELDS = {
    "nv_inference_request_success": "success",
    "nv_inference_request_failure": "failure",
    "nv_inference_count": "inference_count",
    "nv_inference_exec_count": "execution_count",
    "nv_inference_queue_duration_us": "queue_us",
    "nv_inference_compute_input_duration_us": "compute_input_us",
    "nv_inference_compute_infer_duration_us": "compute_infer_us",
    "nv_inference_compute_output_duration_us": "compute_output_us",
}


@dataclass
class ModelCounters:
    """Cumulative counters of one model version since the server started."""

    model: str
    version: str
    success: int = 0
    failure: int = 0
    inference_count: int = 0
    execution_count: int = 0
    queue_us: float = 0.0
    compute_input_us: float = 0.0
    compute_infer_us: float = 0.0
    compute_output_us: float = 0.0
    failure_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.model, self.version)


def counters_from_metrics(samples: Iterable[Sample]) -> dict[tuple[str, str], ModelCounters]:
    out: dict[tuple[str, str], ModelCounters] = {}
    for s in samples:
        attr = _METRIC_FIELDS.get(s.name)
        if attr is None or "model" not in s.labels:
            continue
        key = (s.labels["model"], s.labels.get("version", ""))
        c = out.setdefault(key, ModelCounters(*key))
        if attr == "failure":
            reason = s.labels.get("reason", "")
            c.failure_reasons[reason] = c.failure_reasons.get(reason, 0) + int(s.value)
        if attr.endswith("_us"):
            setattr(c, attr, getattr(c, attr) + float(s.value))
        else:
            setattr(c, attr, getattr(c, attr) + int(s.value))
    return out


def _ns(stats: dict[str, Any], name: str) -> float:
    return float((stats.get(name) or {}).get("ns", 0) or 0)


def _count(stats: dict[str, Any], name: str) -> int:
    return int((stats.get(name) or {}).get("count", 0) or 0)


def counters_from_statistics(statistics: dict[str, Any]) -> dict[tuple[str, str], ModelCounters]:
    """From ``get_inference_statistics(as_json=True)`` (gRPC JSON writes int64 as strings)."""
    out: dict[tuple[str, str], ModelCounters] = {}
    for m in statistics.get("model_stats", []):
        stats = m.get("inference_stats") or {}
        c = ModelCounters(
            model=str(m.get("name", "")),
            version=str(m.get("version", "")),
            success=_count(stats, "success"),
            failure=_count(stats, "fail"),
            inference_count=int(m.get("inference_count", 0) or 0),
            execution_count=int(m.get("execution_count", 0) or 0),
            queue_us=_ns(stats, "queue") / 1000,
            compute_input_us=_ns(stats, "compute_input") / 1000,
            compute_infer_us=_ns(stats, "compute_infer") / 1000,
            compute_output_us=_ns(stats, "compute_output") / 1000,
        )
        out[c.key] = c
    return out


@dataclass
class ModelFigures:
    model: str
    version: str
    requests: int
    failures: int
    inferences: int
    executions: int
    avg_batch_size: float | None
    queue_ms_per_request: float | None
    compute_ms_per_request: float | None
    failure_reasons: dict[str, int] = field(default_factory=dict)
    interval_s: float | None = None
    """Set when an earlier reading was given: the ``recent_*`` figures cover that interval."""
    recent_requests_per_s: float | None = None
    recent_avg_batch_size: float | None = None
    recent_queue_ms_per_request: float | None = None
    recent_compute_ms_per_request: float | None = None
    recent_failures: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def _compute_us(c: ModelCounters) -> float:
    return c.compute_input_us + c.compute_infer_us + c.compute_output_us


def model_figures(now: ModelCounters, before: ModelCounters | None = None,
                  interval_s: float | None = None) -> ModelFigures:
    """Figures since start-up, plus figures over the interval when an earlier reading is given.

    A counter that went down means Triton restarted in between; the interval figures are then left out.
    """
    ms = 1 / 1000
    fig = ModelFigures(
        model=now.model,
        version=now.version,
        requests=now.success,
        failures=now.failure,
        inferences=now.inference_count,
        executions=now.execution_count,
        avg_batch_size=_ratio(now.inference_count, now.execution_count),
        queue_ms_per_request=_scaled(_ratio(now.queue_us, now.success), ms),
        compute_ms_per_request=_scaled(_ratio(_compute_us(now), now.success), ms),
        failure_reasons=dict(now.failure_reasons),
    )
    if before is None or not interval_s or interval_s <= 0:
        return fig
    d_req = now.success - before.success
    d_inf = now.inference_count - before.inference_count
    d_exec = now.execution_count - before.execution_count
    d_fail = now.failure - before.failure
    if min(d_req, d_inf, d_exec, d_fail) < 0:
        return fig
    fig.interval_s = interval_s
    fig.recent_requests_per_s = d_req / interval_s
    fig.recent_avg_batch_size = _ratio(d_inf, d_exec)
    fig.recent_queue_ms_per_request = _scaled(_ratio(now.queue_us - before.queue_us, d_req), ms)
    fig.recent_compute_ms_per_request = _scaled(_ratio(_compute_us(now) - _compute_us(before), d_req), ms)
    fig.recent_failures = d_fail
    return fig


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor
