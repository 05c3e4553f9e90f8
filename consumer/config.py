"""The consumer's configuration: a composition of the parts every command shares (skinbatch.settings)
and the consumer's own, each option declared once in its part."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import click

from skinbatch.connect.kafka import COMPRESSION_TYPE, KafkaConnection
from skinbatch.connect.options import TritonSettings, TritonTarget
from skinbatch.dicomweb.options import ArchiveSettings
from skinbatch.settings import ARCHIVE_ROOT, MetricsSettings, PipelineSettings, Topics, setting, split_values


@dataclass
class ConsumerSettings:
    """How the consumer takes work from Kafka, answers it, and stops."""

    max_in_flight: int = setting("Messages taken from Kafka and not yet answered; consumption pauses beyond it.",
                                 64, type=click.IntRange(min=1))
    max_in_flight_bytes: int = setting(
        "The byte budget: image bytes waiting to be decoded or still downloading from the archive; consumption "
        "and retrievals pause beyond it.", 256 * 1024 * 1024, type=click.IntRange(min=1))
    archive_root: str | None = ARCHIVE_ROOT.field(None)
    malignancy_maps: bool = setting(
        "Put the malignancy map (8x8 class activation map of P(malignant)) in every result; a request can also "
        "ask with the header malignancy-map: 1.", False, is_flag=True)
    compression_type: str = COMPRESSION_TYPE.field("lz4")
    """lz4: JSON results shrink several-fold at a cost of microseconds per batch, and every mainstream
    client reads it."""
    linger_ms: int = setting("How long results wait to fill a batch before they are produced (at 5 ms each "
                             "result went out in a request of its own).", 50, type=click.IntRange(min=0))
    client_id: str = setting("Kafka client id.", "skinbatch-consumer")
    session_timeout_ms: int = setting("Group session timeout: how soon a crashed member's partitions move.", 10000,
                                      type=click.IntRange(min=1))
    fetch_stall_s: float = setting(
        "Seconds records may wait unfetched on assigned partitions before the consumer rejoins its group; as long "
        "again, and it exits 10 for its supervisor to restart it (0 disables).", 120.0, type=click.FloatRange(min=0))
    drain_timeout_s: float = setting("On SIGTERM, how long to finish in-flight work before exiting.", 30.0,
                                     type=click.FloatRange(min=0))
    liveness_timeout_s: float = setting(
        "/livez fails once the main loop has not turned for this long; after twice as long the consumer exits 17 "
        "by itself (0 disables).", 90.0, type=click.FloatRange(min=0))
    exactly_once: bool = setting(
        "Commit results, dead letters and FHIR bundles with the offsets of the requests they answer in one Kafka "
        "transaction: read_committed readers see each answer once. Requests are read read_committed.", False,
        is_flag=True)
    transactional_id: str | None = setting(
        "Transactional id of this member with --exactly-once; keep it stable across restarts (a StatefulSet pod "
        "name). Default: <group id>-<host name>.", None)
    commit_interval_s: float = 1.0
    retry_initial_s: float = 0.5
    retry_max_s: float = 10.0


PARTS: dict[str, type] = {"kafka": KafkaConnection, "triton": TritonSettings, "topics": Topics,
                          "pipeline": PipelineSettings, "archive": ArchiveSettings, "metrics": MetricsSettings,
                          "consumer": ConsumerSettings}
"""``skinbatch consume``'s parts, in the order of its ``--help``."""


@dataclass
class ConsumerConfig:
    """Everything ``skinbatch consume`` is told: one object per part."""

    kafka: KafkaConnection
    triton: TritonSettings
    topics: Topics = field(default_factory=Topics)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    archive: ArchiveSettings = field(default_factory=ArchiveSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    consumer: ConsumerSettings = field(default_factory=ConsumerSettings)

    @classmethod
    def from_values(cls, values: Mapping[str, Any] | None = None, **more: Any) -> ConsumerConfig:
        """The config from flat option values (``bootstrap_servers=..., max_in_flight=...``), each sorted into
        its part by name; None values take the part's default. TypeError for a name no part has."""
        split = split_values({**(values or {}), **more}, PARTS)
        built = {key: part(**split[key]) for key, part in PARTS.items()}
        return cls(**built)

    # Derived settings, in one place.
    def triton_targets(self) -> list[TritonTarget]:
        return self.triton.targets()

    def transactional_id_or_default(self) -> str:
        """--transactional-id, else ``<group id>-<host name>`` (a StatefulSet pod keeps its name)."""
        import socket

        return self.consumer.transactional_id or f"{self.topics.group_id}-{socket.gethostname()}"

    def kafka_connection(self, check_files: bool = True) -> KafkaConnection:
        """The Kafka settings shared with every command; ConfigurationError if they do not fit."""
        self.kafka.validate(check_files)
        return self.kafka

    def decode_limits(self) -> Any:
        return self.pipeline.decode_limits()

    def dicomweb_settings(self) -> Any:
        return self.archive.settings()

    def validate(self) -> None:
        """Every setting that can be checked before connecting; ConfigurationError naming the flag."""
        self.triton.targets()
        self.kafka.validate()
        self.archive.settings()
        from skinbatch.connect.kafka import COMPRESSION_TYPES
        from skinbatch.contract import ConfigurationError
        from skinbatch.settings import SHARED_MEMORY_MODES

        if self.pipeline.shared_memory not in SHARED_MEMORY_MODES:
            raise ConfigurationError(f"--shared-memory {self.pipeline.shared_memory!r}: use one of "
                                     f"{', '.join(SHARED_MEMORY_MODES)}")
        if self.consumer.compression_type not in COMPRESSION_TYPES:
            raise ConfigurationError(f"--compression-type {self.consumer.compression_type!r}: use one of "
                                     f"{', '.join(COMPRESSION_TYPES)}")
