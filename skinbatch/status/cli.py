"""``skinbatch status``: is the serving stack healthy, how well is Triton batching, is the consumer keeping up?

The Triton and Kafka options are the ones every command shares (``skinbatch.connect.options``), with the
same environment variables as ``skinbatch consume`` (``SKINBATCH_TRITON_URL``, ``SKINBATCH_SASL_PASSWORD``,
…), so on a consumer host a bare ``skinbatch status`` looks at what that consumer uses.
"""

from __future__ import annotations

import json
import sys
import time

import click

from skinbatch.connect.kafka import KafkaConnection
from skinbatch.connect.options import TritonSettings, TritonTarget, kafka_options, triton_options
from skinbatch.connect.triton import METRICS_PORT
from skinbatch.contract import EXIT_CODE_EPILOG, ExitCode, KafkaProblem
from skinbatch.settings import JSON, Alias, Topics, lone, options

from .collect import StatusReport, TritonSnapshot, build_report, read_drift, read_triton
from .drift import DriftSnapshot
from .kafka_lag import KafkaProbe, KafkaSnapshot
from .render import render_text

_CLEAR = "\x1b[H\x1b[2J"
TRITON_METRICS_URL = lone("metrics_url", f"Triton's Prometheus endpoint (default: http://<triton host>:{METRICS_PORT}"
                         "/metrics).", flag="--triton-metrics-url")


class _Reader:
    """Takes readings and keeps the previous one, so each report can show figures over the interval."""

    def __init__(self, triton: TritonTarget, metrics_url: str, model: str, timeout_s: float,
                 kafka: KafkaConnection | None, group_id: str | None, dead_letter_topic: str,
                 consumer_metrics: list[str] | None = None) -> None:
        self.triton, self.metrics_url, self.model, self.timeout_s = triton, metrics_url, model, timeout_s
        self.consumer_metrics = consumer_metrics or []
        self.drift_before: DriftSnapshot | None = None
        self.kafka_args = (kafka, group_id, dead_letter_topic) if kafka is not None and group_id else None
        self.kafka_code: ExitCode | None = None
        self._probe: KafkaProbe | None = None
        self.triton_before: TritonSnapshot | None = None
        self.kafka_before: KafkaSnapshot | None = None

    def read(self) -> StatusReport:
        now = read_triton(self.triton, self.metrics_url, self.model, self.timeout_s)
        kafka_now, kafka_error = None, ""
        if self.kafka_args is not None:
            try:
                if self._probe is None:
                    connection, group, dlq = self.kafka_args
                    assert connection is not None
                    self._probe = KafkaProbe(connection, group or "", dlq, self.timeout_s)
                kafka_now = self._probe.snapshot()
                self.kafka_code = None
            except KafkaProblem as exc:
                kafka_error = str(exc)
                self.kafka_code = exc.exit_code
                self.close_kafka()
        drift_now = None
        if self.consumer_metrics and now.model_card is not None:
            drift_now = read_drift(self.consumer_metrics, now.model_card.version, self.timeout_s)
        report = build_report(now, self.triton_before, kafka_now, self.kafka_before, kafka_error,
                              drift_now, self.drift_before)
        self.drift_before = drift_now
        self.triton_before = now
        self.kafka_before = kafka_now
        return report

    def close_kafka(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None


def _emit(report: StatusReport, as_json: bool, clear: bool) -> None:
    if as_json:
        click.echo(json.dumps(report.to_dict(), default=str))
    else:
        click.echo((_CLEAR if clear else "") + render_text(report), nl=False)
    sys.stdout.flush()


@click.command("status", epilog=EXIT_CODE_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@triton_options()
@TRITON_METRICS_URL.option(aliases=(Alias("--metrics-url"),))
@options(TritonSettings, only=("model",), model={"help": "The ensemble that must be ready."})
@kafka_options(required=False, help="Kafka bootstrap servers, host:port[,host:port], for the consumer group's lag.")
@options(Topics, only=("group_id",), group_id={"default": None, "help": "Consumer group to report lag and "
                                                "dead-letter rate for (needs --bootstrap-servers)."})
@click.option("--consumer-metrics-url", "consumer_metrics", multiple=True, envvar="SKINBATCH_CONSUMER_METRICS_URL",
              show_envvar=True,
              help="A consumer's metrics page (http://host:9108/metrics); repeat for every consumer. Gives the "
                   "score drift: the PSI of P(malignant) against the model card's reference distribution.")
@options(Topics, only=("dead_letter_topic",), dead_letter_topic={"help": "Topic whose growth gives the dead-letter "
                                                                          "rate."})
@click.option("--watch", is_flag=True, help="Refresh every --interval seconds until Ctrl-C.")
@click.option("--interval", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="Seconds between the two readings the recent figures (req/s, recent batch size, "
                   "dead-letter rate) are taken over; 0 takes one reading.")
@click.option("--count", type=click.IntRange(min=1), default=None,
              help="With --watch: stop after this many refreshes.")
@JSON.option(help="Machine-readable output: one JSON object (one per line with --watch).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0.1), default=3.0, show_default=True,
              help="Seconds to wait for each answer from Triton or Kafka.")
def status(triton: TritonTarget, metrics_url: str | None, model: str, kafka: KafkaConnection | None,
           group_id: str | None, consumer_metrics: tuple[str, ...], dead_letter_topic: str, watch: bool,
           interval: float, count: int | None, as_json: bool, timeout_s: float) -> None:
    """Health and throughput of Triton (and of a Kafka consumer group).

    Reports whether the server is live and ready, each model's readiness and version, and per model:
    requests, failures, average batch size (inference count / execution count), queue and compute
    time per request, from Triton's metrics and statistics endpoints. With --group-id: lag per
    partition and the dead-letter rate. Exits non-zero, naming the cause, when Triton is down or a
    model is not ready.
    """
    if group_id and kafka is None:
        raise click.UsageError("--group-id needs --bootstrap-servers (the Kafka brokers the group lives on)")
    urls = [u.strip() for item in consumer_metrics for u in item.split(",") if u.strip()]
    reader = _Reader(triton, metrics_url or triton.endpoint.metrics_url(), model, timeout_s,
                     kafka, group_id, dead_letter_topic, urls)
    clear = watch and not as_json and sys.stdout.isatty()
    report: StatusReport | None = None
    try:
        if not watch:
            report = reader.read()
            if interval > 0 and report.triton.live:
                time.sleep(interval)
                report = reader.read()
            _emit(report, as_json, clear=False)
        else:
            shown = 0
            while True:
                report = reader.read()
                _emit(report, as_json, clear)
                shown += 1
                if count is not None and shown >= count:
                    break
                time.sleep(max(interval, 0.5))
    except KeyboardInterrupt:
        pass
    finally:
        reader.close_kafka()
    if report is None:
        sys.exit(ExitCode.INTERRUPTED)
    if report.problems and not as_json:
        click.echo(f"status: {report.problems[0]}", err=True)
    code = report.exit_code
    if code == ExitCode.KAFKA and reader.kafka_code is not None:
        code = reader.kafka_code  # refused credentials (12) or TLS (13) say more than "Kafka" (6)
    sys.exit(int(code))


if __name__ == "__main__":
    from skinbatch.cli import run_standalone

    run_standalone(status)
