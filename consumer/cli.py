"""``skinbatch consume``. Every flag can also be given as an environment variable (shown in --help)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from dataclasses import MISSING, fields
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from skinbatch._process import reuse_large_buffers
from skinbatch.connect.kafka import COMPRESSION_TYPES
from skinbatch.connect.options import KAFKA_OPTIONS, TRITON_OPTIONS, OptionSpec, env_name, secret_option
from skinbatch.contract import EXIT_CODE_EPILOG, SkinbatchError
from skinbatch.dicomweb.options import DICOMWEB_OPTIONS
from skinbatch.logs import configure_logging

from .config import ConsumerConfig

if TYPE_CHECKING:
    from skinbatch.connect.triton import TritonEndpoint
    from skinbatch.scoring.servers import AnyScorer, ScorerPool

    from .metrics import ConsumerMetrics
    from .service import ScoringConsumer


TRANSACTION_TIMEOUT_MS = 30_000
"""How long an open transaction of a producer that vanished holds back read_committed readers when no
successor with its transactional id comes to abort it (docs/deploy.md)."""

# Fields without a default (MISSING) are required flags; factory defaults are computed at run time.
_DEFAULTS = {f.name: f.default for f in fields(ConsumerConfig) if f.default is not MISSING}


def _opt(name: str, help_text: str, secret: bool = False, **kw: Any):  # type: ignore[no-untyped-def]
    """One option of ``consume``; ``secret=True`` adds ``--<name>-file`` (skinbatch.connect.options)."""
    if secret:
        return secret_option(name, help_text, **kw)
    flag = "--" + name.replace("_", "-")
    if "default" not in kw and name in _DEFAULTS and _DEFAULTS[name] is not None:
        kw["default"] = _DEFAULTS[name]
        kw.setdefault("show_default", True)
    return click.option(flag, name, envvar=env_name(name), show_envvar=True, help=help_text, **kw)


def _shared(specs: tuple[OptionSpec, ...], required: str):  # type: ignore[no-untyped-def]
    """The options every command shares (skinbatch.connect.options), flat, as ConsumerConfig fields."""

    def decorate(fn):  # type: ignore[no-untyped-def]
        for spec in reversed(specs):
            fn = spec.decorator(**({"required": True} if spec.name == required else {}))(fn)
        return fn

    return decorate


@click.command(epilog=EXIT_CODE_EPILOG)
@_opt("request_topic", "Topic with image requests.")
@_opt("result_topic", "Topic for scores.")
@_opt("dead_letter_topic", "Topic for rejected inputs, with the reason.")
@_opt("group_id", "Kafka consumer group; every member shares the work.")
@_opt("compression_type", "Codec of the results and dead letters this consumer produces.",
      type=click.Choice(COMPRESSION_TYPES))
@_opt("linger_ms", "How long results wait to fill a batch before they are produced.", type=click.IntRange(min=0))
@_opt("archive_root", "Folder that {\"uri\": ...} references resolve under (refused without it).",
      type=click.Path(exists=True, file_okay=False))
@_opt("model", "Ensemble to call.")
@_opt("decode_workers", "Decoding processes.", type=int, default=None)
@_opt("max_in_flight", "Messages in flight before consumption pauses.", type=int)
@_opt("max_infer_in_flight", "Decoded frames held for Triton (shared-memory slots of 268 KB).", type=int)
@_opt("max_infer_requests", "Requests outstanding at Triton; beyond the first, only full batches go.", type=int)
@_opt("max_infer_batch", "Frames per request (default: the model's max_batch_size; 1 turns client-side "
      "batching off).", type=click.IntRange(min=1), default=None)
@_opt("shared_memory", "Hand images to Triton through system shared memory: auto (when Triton runs on this "
      "host or shares its /dev/shm), on (or stop), off.", type=click.Choice(["auto", "on", "off"]))
@_opt("malignancy_maps", "Put the malignancy map (8x8 class activation map of P(malignant)) in every result; "
      "a request can also ask with the header malignancy-map: 1.", is_flag=True, default=False)
@_opt("fhir_topic", "Also publish each request's scores as a FHIR R4 transaction Bundle to this topic.",
      default=None)
@_opt("max_message_bytes", "Largest image accepted, inline, by reference or retrieved from the DICOMweb archive.",
      type=int)
@_opt("max_in_flight_bytes", "The byte budget: image bytes waiting to be decoded or still downloading from the "
      "archive; consumption and retrievals pause beyond it.", type=int)
@_opt("max_pixels", "Largest image in pixels, checked before decoding (decompression bombs).", type=int)
@_opt("metrics_port", "Prometheus metrics port (0 disables).", type=int)
@_opt("metrics_host", "Address the metrics endpoint binds to.")
@_opt("drain_timeout_s", "On SIGTERM, how long to finish in-flight work before exiting.", type=float)
@_opt("client_id", "Kafka client id.")
@_opt("session_timeout_ms", "Group session timeout: how soon a crashed member's partitions move.", type=int)
@_opt("fetch_stall_s", "Seconds records may wait unfetched on assigned partitions before the consumer rejoins "
      "its group; as long again, and it exits 10 for its supervisor to restart it (0 disables).", type=float)
@_opt("dicomweb_workers", "Concurrent HTTP requests to the archive.", type=int)
@_opt("dicomweb_timeout_s", "Read timeout of one archive request, in seconds.", type=float)
@_opt("exactly_once", "Commit results, dead letters and FHIR bundles with the offsets of the requests they "
      "answer in one Kafka transaction: read_committed readers see each answer once. Requests are read "
      "read_committed.", is_flag=True, default=False)
@_opt("transactional_id", "Transactional id of this member with --exactly-once; keep it stable across "
      "restarts (a StatefulSet pod name). Default: <group id>-<host name>.", default=None)
@_opt("triton_discovery", "How --triton-url names the Triton servers: list (one URL, or several separated by "
      "commas) or dns (the addresses its host name resolves to, e.g. a headless Service). Requests are spread "
      "per server; one that is down is skipped until it answers again.", type=click.Choice(["list", "dns"]))
@_opt("store_results", "Store a DICOM Structured Report with the scores of each instance retrieved "
      "from the archive back into its study (STOW-RS).", is_flag=True, default=False)
@_opt("decode_timeout_s", "Wall-clock limit of one decode, in seconds; past it the input is dead-lettered "
      "decode_timeout and its worker replaced (0 disables).", type=click.FloatRange(min=0))
@_opt("decode_memory_mb", "Memory (address space) each decode worker may use; an input that needs more is "
      "dead-lettered decode_memory and its worker replaced (0 disables).", type=click.IntRange(min=0))
@_opt("liveness_timeout_s", "/livez fails once the main loop has not turned for this long; after twice as "
      "long the consumer exits 17 by itself (0 disables).", type=click.FloatRange(min=0))
@_shared(DICOMWEB_OPTIONS, required="")
@_shared(TRITON_OPTIONS, required="triton_url")
@_shared(KAFKA_OPTIONS, required="bootstrap_servers")
@click.option("--log-level", envvar=env_name("log_level"), show_envvar=True, default="INFO", show_default=True)
def consume(log_level: str, **options: object) -> None:
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
    values = {k: v for k, v in options.items() if v is not None}
    config = ConsumerConfig(**values)  # type: ignore[arg-type]
    try:
        config.validate()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if config.metrics_port == 0:
        config.metrics_port = None

    from .metrics import ConsumerMetrics
    from .service import preflight

    try:
        preflight(config)
    except SkinbatchError as exc:
        logging.getLogger("skinbatch.consumer").critical("%s", exc, extra={"event": "preflight",
                                                                         "exit_code": int(exc.exit_code)})
        click.echo(f"skinbatch consume: {exc}", err=True)
        sys.exit(int(exc.exit_code))

    metrics = ConsumerMetrics()
    if config.metrics_port:
        try:
            metrics.serve(config.metrics_port, config.metrics_host)
        except OSError as exc:
            raise click.ClickException(
                f"cannot serve metrics on {config.metrics_host}:{config.metrics_port} ({exc.strerror}); "
                "choose another --metrics-port or 0 to disable"
            ) from None
    try:
        service = build_consumer(config, metrics)
    except SkinbatchError as exc:
        click.echo(f"skinbatch consume: {exc}", err=True)
        sys.exit(int(exc.exit_code))

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
    topics = [config.result_topic, config.dead_letter_topic] + ([config.fhir_topic] if config.fhir_topic else [])

    def make_producer(**sizes: int) -> KafkaProducer:
        codec = None if config.compression_type == "none" else config.compression_type
        transactional: dict[str, Any] = {}
        if config.exactly_once:
            transactional = {"transactional_id": config.transactional_id_or_default(),
                             "transaction_timeout_ms": TRANSACTION_TIMEOUT_MS}
        producer = KafkaProducer(client_id=config.client_id, acks="all", enable_idempotence=True,
                                 linger_ms=config.linger_ms, compression_type=codec, **transactional, **sizes,
                                 **security)
        if config.exactly_once:
            # Fences an earlier producer with this id (a killed predecessor) and aborts its open transaction.
            producer.init_transactions()
        return producer

    def limits() -> dict[str, int]:
        admin = KafkaAdminClient(client_id=f"{config.client_id}-limits", **security)
        try:
            return read_record_limits(admin, topics)
        finally:
            admin.close()

    producer = ResultProducer(make_producer, limits)
    producer.check_limits()
    consumer = (consumer_class or KafkaConsumer)(
        group_id=config.group_id, client_id=config.client_id, enable_auto_commit=False,
        auto_offset_reset="earliest", max_poll_records=max(1, min(config.max_in_flight, 500)),
        session_timeout_ms=config.session_timeout_ms,
        heartbeat_interval_ms=max(1000, config.session_timeout_ms // 4),
        # Kafka's default fetch sizes (1 MB a partition, 50 MB a fetch). A larger message still comes: the
        # broker always returns the first record batch whole (KIP-74). Fetches sized for the largest
        # message cost 0.4 ms more CPU a 160 KB message under a paused backlog (docs/benchmarks.md).
        max_partition_fetch_bytes=1 << 20,
        fetch_max_bytes=50 << 20,
        # Full fetch requests: a few partitions per member make incremental fetch sessions (KIP-227) save
        # nothing, and in kafka-python they have left partitions unfetched (upstream issue #2575).
        enable_incremental_fetch_sessions=False,
        # --exactly-once: never score a request an upstream transactional producer aborted.
        isolation_level="read_committed" if config.exactly_once else "read_uncommitted",
        **security,
    )
    scorer: AnyScorer
    watch: AnyScorer
    if config.several_tritons():
        scorer, watch = _scorer_pool(config, config.triton_timeout_s).start(), _scorer_pool(config, 5).start()
    else:
        target = config.triton_target()
        scorer = TritonScorer(target.endpoint, model=config.model, timeout_s=config.triton_timeout_s, tls=target.tls)
        watch = TritonScorer(target.endpoint, model=config.model, timeout_s=5, tls=target.tls)
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
        return resolve_addresses(listed[0]) if config.triton_discovery == "dns" else listed

    return ScorerPool(endpoints, lambda e: TritonScorer(e, model=config.model, timeout_s=timeout_s, tls=tls),
                      model=config.model)


if __name__ == "__main__":
    consume()
