"""``skinbatch consume``. Every flag can also be given as an environment variable (shown in --help)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from skinbatch._process import reuse_large_buffers
from skinbatch.connect.kafka import KafkaConnection
from skinbatch.connect.options import TritonSettings
from skinbatch.contract import EXIT_CODE_EPILOG, SkinbatchError
from skinbatch.logs import configure_logging
from skinbatch.settings import LOG_LEVEL, Alias, PipelineSettings, options

from .config import PARTS, ConsumerConfig

if TYPE_CHECKING:
    from skinbatch.connect.triton import TritonEndpoint
    from skinbatch.scoring.servers import AnyScorer, ScorerPool

    from .metrics import ConsumerMetrics
    from .service import ScoringConsumer


TRANSACTION_TIMEOUT_MS = 30_000
"""How long an open transaction of a producer that vanished holds back read_committed readers when no
successor with its transactional id comes to abort it (docs/deploy.md)."""


def _consume_options(fn):  # type: ignore[no-untyped-def]
    """Every part of ConsumerConfig, flat; the old spellings of renamed options as hidden aliases."""
    overrides: dict[type, dict[str, dict[str, Any]]] = {
        KafkaConnection: {"bootstrap_servers": {"required": True}},
        TritonSettings: {"triton_url": {"required": True}},
        PipelineSettings: {"max_image_bytes": {"aliases": (
            Alias("--max-message-bytes", envvar="SKINBATCH_MAX_MESSAGE_BYTES"),)}},
    }
    for part in reversed(list(PARTS.values())):
        fn = options(part, per_field=overrides.get(part))(fn)
    return LOG_LEVEL.option()(fn)


@click.command(epilog=EXIT_CODE_EPILOG)
@_consume_options
def consume(log_level: str, **values: object) -> None:
    """Score images streamed through Kafka, at least once (exactly once with --exactly-once).

    Results go to the result topic keyed by request id; bad input goes to the dead-letter topic
    with a reason. SIGTERM or Ctrl-C drains in-flight work, commits and exits 0. Exit 1: repeated
    internal decoder failures; 6, 12, 13: Kafka refused, credentials refused, TLS failed (at
    start-up, within 30 s); 9: Triton began serving another model version; 10: Kafka stopped
    delivering waiting records; 11: a record batch in a codec this install cannot read; 17: the main
    loop stopped turning (wedged). After 9, 10 or 17 the supervisor restarts the process: nothing is
    lost.
    """
    configure_logging(log_level)
    reuse_large_buffers()
    config = ConsumerConfig.from_values(values)
    try:
        config.validate()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if config.metrics.metrics_port == 0:
        config.metrics.metrics_port = None

    from .metrics import ConsumerMetrics
    from .service import preflight

    try:
        preflight(config)
    except SkinbatchError as exc:  # logged for the log pipeline; skinbatch.cli prints it and exits
        logging.getLogger("skinbatch.consumer").critical("%s", exc, extra={"event": "preflight",
                                                                         "exit_code": int(exc.exit_code)})
        raise

    metrics = ConsumerMetrics()
    metrics_at = config.metrics
    if metrics_at.metrics_port:
        try:
            metrics.serve(metrics_at.metrics_port, metrics_at.metrics_host)
        except OSError as exc:
            raise click.ClickException(
                f"cannot serve metrics on {metrics_at.metrics_host}:{metrics_at.metrics_port} ({exc.strerror}); "
                "choose another --metrics-port or 0 to disable"
            ) from None
    service = build_consumer(config, metrics)

    def _stop(signum: int, _frame: FrameType | None) -> None:
        # Not service.stop() itself: Event.set takes a lock, and a second signal arriving while the
        # handler holds it would deadlock the main thread (seen with SIGTERM sent twice).
        threading.Thread(target=service.stop, name="stop", daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    sys.exit(service.run())


def build_consumer(config: ConsumerConfig, metrics: ConsumerMetrics | None = None, *,
                   consumer_class: Any = None) -> ScoringConsumer:
    """The consumer with its real collaborators: Kafka clients, Triton clients, the DICOMweb archive.
    ``consumer_class``: a KafkaConsumer subclass to use instead (tests of client-library faults)."""
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

    from skinbatch.connect import kafka_reads
    from skinbatch.scoring import TritonScorer

    from .producer import ResultProducer, read_record_limits
    from .service import ScoringConsumer

    kafka_reads.install()  # 256 KiB socket reads, not 4 KiB: a third of the fetch path's CPU
    security = config.kafka_connection().client_kwargs()
    named = config.topics
    topics = [named.result_topic, named.dead_letter_topic] + ([named.fhir_topic] if named.fhir_topic else [])

    def make_producer(**sizes: int) -> KafkaProducer:
        codec = None if config.consumer.compression_type == "none" else config.consumer.compression_type
        transactional: dict[str, Any] = {}
        if config.consumer.exactly_once:
            transactional = {"transactional_id": config.transactional_id_or_default(),
                             "transaction_timeout_ms": TRANSACTION_TIMEOUT_MS}
        producer = KafkaProducer(client_id=config.consumer.client_id, acks="all", enable_idempotence=True,
                                 linger_ms=config.consumer.linger_ms, compression_type=codec, **transactional, **sizes,
                                 **security)
        if config.consumer.exactly_once:
            # Fences an earlier producer with this id (a killed predecessor) and aborts its open transaction.
            producer.init_transactions()
        return producer

    def limits() -> dict[str, int]:
        admin = KafkaAdminClient(client_id=f"{config.consumer.client_id}-limits", **security)
        try:
            return read_record_limits(admin, topics)
        finally:
            admin.close()

    producer = ResultProducer(make_producer, limits)
    producer.check_limits()
    consumer = (consumer_class or KafkaConsumer)(
        group_id=config.topics.group_id, client_id=config.consumer.client_id, enable_auto_commit=False,
        auto_offset_reset="earliest", max_poll_records=max(1, min(config.consumer.max_in_flight, 500)),
        session_timeout_ms=config.consumer.session_timeout_ms,
        heartbeat_interval_ms=max(1000, config.consumer.session_timeout_ms // 4),
        # Kafka's default fetch sizes (1 MB a partition, 50 MB a fetch). A larger message still comes: the
        # broker always returns the first record batch whole (KIP-74). Fetches sized for the largest
        # message cost 0.4 ms more CPU a 160 KB message under a paused backlog (docs/benchmarks.md).
        max_partition_fetch_bytes=1 << 20,
        fetch_max_bytes=50 << 20,
        # Full fetch requests: a few partitions per member make incremental fetch sessions (KIP-227) save
        # nothing, and in kafka-python they have left partitions unfetched (upstream issue #2575).
        enable_incremental_fetch_sessions=False,
        # --exactly-once: never score a request an upstream transactional producer aborted.
        isolation_level="read_committed" if config.consumer.exactly_once else "read_uncommitted",
        **security,
    )
    scorer: AnyScorer
    watch: AnyScorer
    if config.triton.several():
        scorer, watch = _scorer_pool(config, config.triton.triton_timeout_s).start(), _scorer_pool(config, 5).start()
    else:
        target = config.triton.targets()[0]
        scorer = TritonScorer(target.endpoint, model=config.triton.model, timeout_s=config.triton.triton_timeout_s,
                              tls=target.tls)
        watch = TritonScorer(target.endpoint, model=config.triton.model, timeout_s=5, tls=target.tls)
    archive = None
    settings = config.dicomweb_settings()
    if settings is not None:
        from skinbatch.dicomweb.client import DicomWebArchive

        archive = DicomWebArchive(settings)
        _export_token_state(settings, metrics)
    return ScoringConsumer(config, kafka_consumer=consumer, producer=producer, scorer=scorer, watch_scorer=watch,
                           archive=archive, metrics=metrics)


def _export_token_state(settings: Any, metrics: ConsumerMetrics | None) -> None:
    """Failed OAuth2 token fetches as ``archive_token_refresh_failures_total`` and ``archive_token_ok``."""
    from skinbatch.dicomweb.oauth import ClientCredentials

    source = settings.token_source()
    if metrics is None or not isinstance(source, ClientCredentials):
        return
    source.on_failure = lambda _reason: metrics.archive_token_failures.inc()
    source.on_state = lambda ok: metrics.archive_token_ok.set(1 if ok else 0)


def _scorer_pool(config: ConsumerConfig, timeout_s: float) -> ScorerPool:
    """Several Tritons (skinbatch/scoring/servers.py): the listed URLs, or the addresses of one name."""
    from skinbatch.scoring import TritonScorer
    from skinbatch.scoring.servers import ScorerPool, resolve_addresses

    targets = config.triton_targets()
    tls = targets[0].tls
    listed = [t.endpoint for t in targets]

    def endpoints() -> list[TritonEndpoint]:
        return resolve_addresses(listed[0]) if config.triton.triton_discovery == "dns" else listed

    return ScorerPool(endpoints, lambda e: TritonScorer(e, model=config.triton.model, timeout_s=timeout_s, tls=tls),
                      model=config.triton.model)


if __name__ == "__main__":
    from skinbatch.cli import run_standalone

    run_standalone(consume)
