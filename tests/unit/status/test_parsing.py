"""Prometheus text, statistics JSON, figures, lag arithmetic and health: pure logic."""

from __future__ import annotations

import math

import pytest

from skinbatch.connect.triton import parse_triton_url
from skinbatch.contract import ExitCode
from skinbatch.status.health import health_from_index
from skinbatch.status.kafka_lag import KafkaSnapshot, PartitionLag, group_status, partition_lags
from skinbatch.status.prometheus import MetricsParseError, parse_metrics
from skinbatch.status.triton_stats import ModelCounters, counters_from_metrics, counters_from_statistics, model_figures

TRITON_METRICS = """\
# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="inception_v3",version="1"} 40
nv_inference_request_success{model="skin_classifier",version="1"} 40
# HELP nv_inference_request_failure Number of failed inference requests, all batch sizes
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{model="inception_v3",reason="REJECTED",version="1"} 0
nv_inference_request_failure{model="inception_v3",reason="BACKEND",version="1"} 2
nv_inference_request_failure{model="skin_classifier",reason="OTHER",version="1"} 1
nv_inference_count{model="inception_v3",version="1"} 40
nv_inference_exec_count{model="inception_v3",version="1"} 5
nv_inference_count{model="skin_classifier",version="1"} 40
nv_inference_exec_count{model="skin_classifier",version="1"} 40
nv_inference_queue_duration_us{model="inception_v3",version="1"} 80000
nv_inference_compute_input_duration_us{model="inception_v3",version="1"} 4000
nv_inference_compute_infer_duration_us{model="inception_v3",version="1"} 392000
nv_inference_compute_output_duration_us{model="inception_v3",version="1"} 4000
nv_cpu_utilization 0.25
nv_pinned_memory_pool_total_bytes 2.68435456e+08
"""

STATISTICS = {"model_stats": [{
    "name": "inception_v3", "version": "1", "inference_count": "40", "execution_count": "5",
    "inference_stats": {"success": {"count": "40", "ns": "500000000"}, "fail": {"count": "2", "ns": "1"},
                        "queue": {"count": "40", "ns": "80000000"},
                        "compute_input": {"count": "40", "ns": "4000000"},
                        "compute_infer": {"count": "40", "ns": "392000000"},
                        "compute_output": {"count": "40", "ns": "4000000"}}}]}


def test_parse_metrics_reads_names_labels_values() -> None:
    samples = parse_metrics(TRITON_METRICS)
    first = samples[0]
    assert first.name == "nv_inference_request_success"
    assert first.labels == {"model": "inception_v3", "version": "1"}
    assert first.value == 40
    assert samples[-1].value == pytest.approx(268435456)
    assert not any(s.name.startswith("#") for s in samples)


def test_parse_metrics_escapes_special_values_and_timestamps() -> None:
    text = 'm{a="x\\"y",b="1\\n2",c="back\\\\slash"} +Inf 1700000000\nn NaN\n'
    a, b = parse_metrics(text)
    assert a.labels == {"a": 'x"y', "b": "1\n2", "c": "back\\slash"}
    assert a.value == math.inf
    assert math.isnan(b.value)


@pytest.mark.parametrize("bad", ['m{a="x} 1', "m", 'm{a=x} 1', "m one"])
def test_parse_metrics_rejects_malformed_lines(bad: str) -> None:
    with pytest.raises(MetricsParseError):
        parse_metrics(bad)


def test_parse_metrics_keeps_the_page_names_and_skips_any_comment() -> None:
    text = "# TYPE c counter\nc 3\n# TYPE broken\n# just a comment\nc_created 1.7e9\ng 1 1700000000\n"
    assert [(s.name, s.value) for s in parse_metrics(text)] == [("c", 3), ("c_created", 1.7e9), ("g", 1)]


def test_parse_metrics_error_names_the_line() -> None:
    with pytest.raises(MetricsParseError, match="line 3"):
        parse_metrics("a 1\n\nb{x=y} 2\n")


def test_metrics_and_statistics_give_the_same_counters() -> None:
    from_metrics = counters_from_metrics(parse_metrics(TRITON_METRICS))[("inception_v3", "1")]
    from_stats = counters_from_statistics(STATISTICS)[("inception_v3", "1")]
    for attr in ("success", "failure", "inference_count", "execution_count", "queue_us",
                 "compute_input_us", "compute_infer_us", "compute_output_us"):
        assert getattr(from_metrics, attr) == pytest.approx(getattr(from_stats, attr)), attr
    assert from_metrics.failure_reasons == {"REJECTED": 0, "BACKEND": 2}


def test_figures_batch_size_and_times_per_request() -> None:
    c = counters_from_metrics(parse_metrics(TRITON_METRICS))[("inception_v3", "1")]
    fig = model_figures(c)
    assert fig.avg_batch_size == 8.0
    assert fig.queue_ms_per_request == pytest.approx(2.0)
    assert fig.compute_ms_per_request == pytest.approx(10.0)
    assert fig.recent_avg_batch_size is None


def test_figures_over_an_interval() -> None:
    before = ModelCounters("m", "1", success=10, inference_count=10, execution_count=10, queue_us=1000)
    now = ModelCounters("m", "1", success=30, inference_count=30, execution_count=14, queue_us=5000,
                        compute_infer_us=40000)
    fig = model_figures(now, before, interval_s=2.0)
    assert fig.recent_requests_per_s == 10.0
    assert fig.recent_avg_batch_size == 5.0
    assert fig.recent_queue_ms_per_request == pytest.approx(0.2)
    assert fig.recent_compute_ms_per_request == pytest.approx(2.0)


def test_figures_ignore_the_interval_across_a_restart() -> None:
    before = ModelCounters("m", "1", success=100, inference_count=100, execution_count=50)
    now = ModelCounters("m", "1", success=3, inference_count=3, execution_count=3)
    fig = model_figures(now, before, interval_s=2.0)
    assert fig.interval_s is None and fig.recent_avg_batch_size is None
    assert fig.avg_batch_size == 1.0


def test_no_executions_gives_no_batch_size() -> None:
    assert model_figures(ModelCounters("m", "1")).avg_batch_size is None


def test_partition_lag_with_and_without_commits() -> None:
    lags = partition_lags({("t", 0): 5, ("t", 1): None, ("t", 2): -1}, {("t", 0): 0, ("t", 1): 3, ("t", 2): 0},
                          {("t", 0): 12, ("t", 1): 10, ("t", 2): 4})
    assert [(p.partition, p.committed, p.lag) for p in lags] == [(0, 5, 7), (1, None, 7), (2, None, 4)]


def _snap(t: float, committed: int, dead_end: int) -> KafkaSnapshot:
    return KafkaSnapshot("g", taken_at=t, state="Stable", members=1,
                         partitions=[PartitionLag("t", 0, committed, 100, 100 - committed)],
                         dead_letter_topic="dlq", dead_letter_exists=True, dead_letter_end=dead_end,
                         dead_letter_retained=dead_end)


def test_dead_letter_rate_and_fraction() -> None:
    st = group_status(_snap(12.0, 60, 9), _snap(10.0, 40, 5))
    assert st.total_lag == 40
    assert st.consumed_per_s == 10.0
    assert st.dead_letters_per_s == 2.0
    assert st.dead_letter_fraction == pytest.approx(0.2)


def test_dead_letter_rate_needs_two_readings() -> None:
    st = group_status(_snap(12.0, 60, 9))
    assert st.dead_letters_per_s is None and st.dead_letters_retained == 9


def test_health_exit_codes_name_the_problem() -> None:
    index = [{"name": "skin_classifier", "version": "1", "state": "READY"},
             {"name": "inception_v3", "version": "1", "state": "UNAVAILABLE", "reason": "load failed"}]
    h = health_from_index("h:1", live=True, ready=False, index=index)
    assert h.exit_code == ExitCode.NOT_READY
    assert any("inception_v3" in p and "load failed" in p for p in h.problems)
    ok = health_from_index("h:1", True, True, [{"name": "skin_classifier", "version": "1", "state": "READY"}])
    assert ok.exit_code == ExitCode.OK and not ok.problems
    missing = health_from_index("h:1", True, True, [{"name": "other", "version": "1", "state": "READY"}])
    assert missing.exit_code == ExitCode.NOT_READY and "skin_classifier" in missing.problems[0]


def test_default_metrics_url_uses_the_triton_host() -> None:
    assert parse_triton_url("grpc://triton.internal:8001").metrics_url() == "http://triton.internal:8002/metrics"
    assert parse_triton_url("10.0.0.5:9001").metrics_url() == "http://10.0.0.5:8002/metrics"
    assert parse_triton_url("https://triton.internal").metrics_url() == "http://triton.internal:8002/metrics"
    assert parse_triton_url("http://[::1]:8000").metrics_url() == "http://[::1]:8002/metrics"
