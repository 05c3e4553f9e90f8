"""The consumer's configuration: one typed dataclass, filled from CLI flags or environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from skinbatch.connect.kafka import COMPRESSION_TYPES, KafkaConnection
from skinbatch.connect.options import KAFKA_FIELDS, TritonTarget
from skinbatch.connect.triton import TritonTLS, parse_triton_url, read_admin_key
from skinbatch.contract import ENSEMBLE, ConfigurationError


@dataclass
class ConsumerConfig:
    bootstrap_servers: str
    triton_url: str
    request_topic: str = "skinbatch.requests"
    result_topic: str = "skinbatch.results"
    dead_letter_topic: str = "skinbatch.dead-letter"
    group_id: str = "skinbatch-consumers"
    archive_root: str | None = None
    """Folder that ``{"uri": ...}`` references resolve under; references are refused without it."""
    model: str = ENSEMBLE
    decode_workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    max_in_flight: int = 64
    """Messages taken from Kafka and not yet answered; consumption pauses beyond it."""
    max_infer_in_flight: int = 64
    """Decoded frames held for Triton (waiting or at Triton): the shared-memory slots, 268 KB each."""
    max_infer_requests: int = 4
    """Requests outstanding at Triton: the first carries what is ready, the others only full batches
    (the scoring pipeline's Nagle rule)."""
    max_infer_batch: int | None = None
    """Frames per request; the model's max_batch_size when unset (1 turns client-side batching off)."""
    shared_memory: str = "auto"
    """Hand images to Triton through system shared memory: auto (when Triton can map this host's
    /dev/shm), on (or stop at start-up), off."""
    malignancy_maps: bool = False
    """Put the malignancy map in every result (a request can ask with the header ``malignancy-map: 1``)."""
    fhir_topic: str | None = None
    """Also publish each request's scores as a FHIR R4 transaction Bundle to this topic."""
    max_in_flight_bytes: int = 256 * 1024 * 1024
    max_message_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 80_000_000
    metrics_port: int | None = 9108
    metrics_host: str = "127.0.0.1"
    commit_interval_s: float = 1.0
    drain_timeout_s: float = 30.0
    retry_initial_s: float = 0.5
    retry_max_s: float = 10.0
    triton_timeout_s: float = 30.0
    client_id: str = "skinbatch-consumer"
    session_timeout_ms: int = 10000
    """How long the group waits for a silent member before handing its partitions to others."""
    fetch_stall_s: float = 120.0
    """How long records may wait unfetched on assigned, unpaused partitions before the consumer rejoins its
    group; as long again after that, and it exits with status 3 for its supervisor to restart it (0 disables)."""
    # Kafka security: the options every command shares (skinbatch.connect.options, docs/deploy.md).
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    sasl_oauth_token_file: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: str | None = field(default=None, repr=False)
    ssl_check_hostname: bool = True
    linger_ms: int = 50
    """How long the producer waits to fill a batch of results. Results carry no deadline tighter than a
    second; at 5 ms each result went out in a request of its own, 0.4 ms of CPU more a message."""
    compression_type: str = "lz4"
    """Codec of the records this consumer produces (results, dead letters). lz4: JSON results shrink
    several-fold at a cost of microseconds per batch, and every mainstream client reads it."""

    exactly_once: bool = False
    """Commit results, dead letters and FHIR bundles with the offsets they answer in one Kafka transaction
    (consumer/transactions.py); requests are read ``read_committed``. Readers must read ``read_committed``."""
    transactional_id: str | None = None
    """The producer's transactional id with --exactly-once: stable across restarts of the same member (a
    StatefulSet pod's name); ``<group id>-<host name>`` when unset."""
    triton_discovery: str = "list"
    """How ``--triton-url`` names the Triton servers: ``list`` (one URL, or several separated by commas) or
    ``dns`` (one URL whose host name resolves to every server's address, looked up again every 30 s: a
    Kubernetes headless Service such as compose/k8s's ``triton``). Requests are spread per server
    (skinbatch/scoring/servers.py)."""

    # TLS to Triton (with a grpcs:// or https:// --triton-url).
    triton_ca: str | None = None
    triton_cert: str | None = None
    triton_key: str | None = None
    triton_admin_key: str | None = field(default=None, repr=False)
    """Header ``admin-key`` for Triton's restricted APIs (--grpc-restricted-protocol), from a file or variable."""

    # A DICOMweb archive (PACS, VNA): requests may name instances in it by UID; scores may go back as SRs.
    dicomweb_url: str | None = None
    """DICOMweb root (QIDO/WADO/STOW), e.g. https://pacs.example.org/dicom-web; DICOMweb requests are refused
    without it."""
    dicomweb_user: str | None = None
    dicomweb_password: str | None = field(default=None, repr=False)
    dicomweb_token: str | None = field(default=None, repr=False)
    dicomweb_token_file: str | None = None
    dicomweb_token_url: str | None = None
    dicomweb_client_id: str | None = None
    dicomweb_client_secret: str | None = field(default=None, repr=False)
    dicomweb_scope: str | None = None
    dicomweb_audience: str | None = None
    dicomweb_ca: str | None = None
    dicomweb_cert: str | None = None
    dicomweb_key: str | None = None
    dicomweb_workers: int = 4
    """Concurrent HTTP requests to the archive (searches, retrievals, stores)."""
    dicomweb_timeout_s: float = 60.0
    store_results: bool = False
    """Store a DICOM SR with the scores of each instance retrieved from the archive, back into its study."""

    # Bounds on what one request can cost (issue 20): decoding, and a loop that stops turning.
    decode_timeout_s: float = 60.0
    """Wall-clock limit of one decode task; past it the input is dead-lettered ``decode_timeout`` and its
    worker replaced (0 disables)."""
    decode_memory_mb: int = 2048
    """Address-space limit (RLIMIT_AS) of each decode worker; an input that needs more is dead-lettered
    ``decode_memory`` and its worker replaced (0 disables)."""
    liveness_timeout_s: float = 90.0
    """``/livez`` fails once the main loop has not turned for this long; after twice as long the
    consumer exits with 17 (WEDGED) by itself (0 disables both)."""

    def decode_limits(self) -> Any:
        """Limits for the decode workers: the message size, and pixels checked before decoding."""
        from skinbatch.imaging import DecodeLimits

        return DecodeLimits(max_bytes=self.max_message_bytes, max_pixels=self.max_pixels,
                            max_total_pixels=2 * self.max_pixels)

    def dicomweb_settings(self) -> Any:
        """``DicomWebSettings`` for the archive, or None without ``dicomweb_url``; ValueError if inconsistent."""
        if not self.dicomweb_url:
            if self.store_results:
                raise ConfigurationError("--store-results needs --dicomweb-url: the reports are stored in that archive")
            return None
        from skinbatch.dicomweb.options import DICOMWEB_FIELDS, dicomweb_settings

        return dicomweb_settings({name: getattr(self, name) for name in DICOMWEB_FIELDS},
                                 read_timeout_s=self.dicomweb_timeout_s)

    def triton_target(self) -> TritonTarget:
        """The (first) parsed ``--triton-url`` and its TLS files; ConfigurationError if they do not fit."""
        return self.triton_targets()[0]

    def triton_targets(self) -> list[TritonTarget]:
        """Every URL of ``--triton-url`` (comma-separated), parsed, with the TLS files checked for each."""
        urls = [url.strip() for url in self.triton_url.split(",") if url.strip()] or [self.triton_url]
        tls = TritonTLS(ca=self.triton_ca, cert=self.triton_cert, key=self.triton_key,
                        admin_key=read_admin_key(self.triton_admin_key, None))
        targets = []
        for url in urls:
            endpoint = parse_triton_url(url)
            tls.check(endpoint)
            targets.append(TritonTarget(endpoint, tls))
        if self.triton_discovery not in ("list", "dns"):
            raise ConfigurationError(f"--triton-discovery {self.triton_discovery!r}: use list or dns")
        if self.triton_discovery == "dns" and (len(targets) > 1 or targets[0].endpoint.tls):
            raise ConfigurationError("--triton-discovery dns takes one plain grpc:// or http:// URL (the addresses "
                                     "it resolves to cannot match a TLS certificate's name); with TLS, list the "
                                     "servers' names in --triton-url, separated by commas")
        return targets

    def transactional_id_or_default(self) -> str:
        """--transactional-id, else ``<group id>-<host name>`` (a StatefulSet pod keeps its name)."""
        import socket

        return self.transactional_id or f"{self.group_id}-{socket.gethostname()}"

    def several_tritons(self) -> bool:
        """More than one server, or servers found through DNS: a ScorerPool, not one TritonScorer."""
        return self.triton_discovery == "dns" or "," in self.triton_url.strip().strip(",")

    def kafka_connection(self, check_files: bool = True) -> KafkaConnection:
        """The Kafka settings shared with every command; ConfigurationError if they do not fit."""
        conn = KafkaConnection(**{name: getattr(self, name) for name in KAFKA_FIELDS})
        conn.validate(check_files)
        return conn

    def validate(self) -> None:
        """Every setting that can be checked before connecting; ConfigurationError naming the flag."""
        self.triton_targets()
        self.kafka_connection()
        self.dicomweb_settings()
        from skinbatch.scoring.pipeline import SHARED_MEMORY_MODES

        if self.shared_memory not in SHARED_MEMORY_MODES:
            raise ConfigurationError(f"--shared-memory {self.shared_memory!r}: use one of "
                                     f"{', '.join(SHARED_MEMORY_MODES)}")
        if self.compression_type not in COMPRESSION_TYPES:
            raise ConfigurationError(f"--compression-type {self.compression_type!r}: use one of "
                                     f"{', '.join(COMPRESSION_TYPES)}")
