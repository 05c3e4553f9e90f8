"""A local stack for the demo, the tests and the benchmarks: a real Apache Kafka broker.

The broker runs from Kafka's Maven Central jars on the machine's Java 17+, without Docker; see
:mod:`skinbatch.localstack.kafka`. ``skinbatch localstack kafka`` runs one in the foreground.
"""

from skinbatch.localstack.kafka import (
    DEFAULT_MESSAGE_MAX_BYTES,
    BrokerConfig,
    KafkaBroker,
    KafkaBrokerDied,
    KafkaSetupError,
    KafkaStartError,
    default_cache_dir,
    ensure_kafka_jars,
    kafka_version,
    render_server_properties,
)

__all__ = [
    "DEFAULT_MESSAGE_MAX_BYTES",
    "BrokerConfig",
    "KafkaBroker",
    "KafkaBrokerDied",
    "KafkaSetupError",
    "KafkaStartError",
    "default_cache_dir",
    "ensure_kafka_jars",
    "kafka_version",
    "render_server_properties",
]
