"""SASL against the real local Kafka broker, with the security options the consumer passes to kafka-python.

The broker gets a second listener, SASL_PLAINTEXT with the PLAIN mechanism and its users in the
listener's JAAS config; its PLAINTEXT listener stays for the broker's own readiness probe and for
creating the topic. The client options come from the consumer's environment variables, parsed by
``skinbatch consume`` into a ``ConsumerConfig``, exactly as in compose and Kubernetes.

TLS is not covered here: it needs a CA and keystores; docs/deploy.md lists the options.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

from skinbatch.consumer.cli import consume
from skinbatch.consumer.config import ConsumerConfig
from skinbatch.localstack.kafka import KafkaBroker, free_port
from tests.fixtures.kafka import start_or_skip

pytestmark = [pytest.mark.system, pytest.mark.timeout(180)]

USER, PASSWORD = "skinbatch", "s3cret-for-tests"


def _distinct_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


@pytest.fixture(scope="module")
def sasl_broker() -> Iterator[tuple[KafkaBroker, str]]:
    port, controller, sasl = _distinct_ports(3)
    host = "127.0.0.1"
    jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="admin" password="admin-secret" user_admin="admin-secret" user_{USER}="{PASSWORD}";'
    )
    broker = KafkaBroker(
        port=port,
        controller_port=controller,
        extra_properties={
            "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller},SASL_PLAINTEXT://{host}:{sasl}",
            "advertised.listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller},"
                                    f"SASL_PLAINTEXT://{host}:{sasl}",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
            "sasl.enabled.mechanisms": "PLAIN",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config": jaas,
        },
    )
    start_or_skip(broker)
    try:
        yield broker, f"{host}:{sasl}"
    finally:
        broker.close()


def config_from_environment(monkeypatch: pytest.MonkeyPatch, bootstrap: str, password: str) -> ConsumerConfig:
    """What `skinbatch consume` builds from the SKINBATCH_* variables that compose sets."""
    env = {
        "SKINBATCH_BOOTSTRAP_SERVERS": bootstrap,
        "SKINBATCH_TRITON_URL": "triton:8001",
        "SKINBATCH_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "SKINBATCH_SASL_MECHANISM": "PLAIN",
        "SKINBATCH_SASL_USERNAME": USER,
        "SKINBATCH_SASL_PASSWORD": password,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    params = consume.make_context("consume", []).params
    return ConsumerConfig(**{k: v for k, v in params.items() if v is not None and k != "log_level"})


def test_sasl_plain_with_the_consumers_options(
    sasl_broker: tuple[KafkaBroker, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    broker, bootstrap = sasl_broker
    topic = f"sasl-{uuid.uuid4().hex[:8]}"
    broker.create_topics([topic])
    config = config_from_environment(monkeypatch, bootstrap, PASSWORD)
    security: dict[str, Any] = config.kafka_security()
    assert security == {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
                        "sasl_plain_username": USER, "sasl_plain_password": PASSWORD}

    producer = KafkaProducer(bootstrap_servers=config.bootstrap_servers, acks="all", **security)
    try:
        producer.send(topic, key=b"k", value=b"authenticated").get(timeout=30)
    finally:
        producer.close(timeout=10)
    consumer = KafkaConsumer(topic, bootstrap_servers=config.bootstrap_servers, group_id=f"{topic}-group",
                             auto_offset_reset="earliest", enable_auto_commit=False, **security)
    try:
        values: list[bytes] = []
        deadline = time.monotonic() + 30
        while not values and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                values.extend(record.value for record in batch)
        assert values == [b"authenticated"]
        consumer.commit()
    finally:
        consumer.close()


def test_a_wrong_password_is_refused(sasl_broker: tuple[KafkaBroker, str], monkeypatch: pytest.MonkeyPatch) -> None:
    broker, bootstrap = sasl_broker
    config = config_from_environment(monkeypatch, bootstrap, "wrong-password")
    # kafka-python 3 does not surface the broker's authentication error: the broker closes the
    # connection and the client reports that it cannot bootstrap. The broker's log says why.
    with pytest.raises(KafkaError):
        producer = KafkaProducer(bootstrap_servers=config.bootstrap_servers, bootstrap_timeout_ms=8000,
                                 request_timeout_ms=8000, max_block_ms=8000, **config.kafka_security())
        try:
            producer.send("anything", value=b"x").get(timeout=10)
        finally:
            producer.close(timeout=5)
    deadline = time.monotonic() + 10
    while "Failed authentication" not in broker.log_file.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"the broker logged no failed authentication:\n{broker.log_tail()}"
        time.sleep(0.2)
    assert "Invalid username or password" in broker.log_file.read_text(errors="replace")
