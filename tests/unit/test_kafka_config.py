"""The pure parts of skinbatch.localstack.kafka: server.properties, cluster ids, the jar cache marker."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import importlib.resources
from pathlib import Path

import pytest

from skinbatch.localstack import kafka as kafka_module
from skinbatch.localstack.kafka import (
    DEFAULT_MESSAGE_MAX_BYTES,
    BrokerConfig,
    KafkaSetupError,
    ensure_kafka_jars,
    generate_cluster_id,
    kafka_version,
    render_server_properties,
)


def _parse(text: str) -> dict[str, str]:
    props = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            props[key] = value
    return props


@pytest.fixture
def config(tmp_path: Path) -> BrokerConfig:
    return BrokerConfig(port=19092, controller_port=19093, log_dir=tmp_path / "data")


def test_combined_kraft_node(config: BrokerConfig, tmp_path: Path) -> None:
    props = _parse(render_server_properties(config))
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"].startswith("PLAINTEXT://127.0.0.1:19092")
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["listener.security.protocol.map"] == "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    assert props["log.dirs"] == str(tmp_path / "data")
    assert config.bootstrap_servers == "127.0.0.1:19092"


def test_single_node_internal_topics(config: BrokerConfig) -> None:
    props = _parse(render_server_properties(config))
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "share.coordinator.state.topic.min.isr",
        "default.replication.factor",
        "min.insync.replicas",
    ):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "true"


def test_message_size_settings_agree(tmp_path: Path) -> None:
    props = _parse(render_server_properties(BrokerConfig(1, 2, tmp_path)))
    assert props["message.max.bytes"] == str(DEFAULT_MESSAGE_MAX_BYTES)
    assert props["replica.fetch.max.bytes"] == props["message.max.bytes"]

    big = 80 * 1024 * 1024
    props = _parse(render_server_properties(BrokerConfig(1, 2, tmp_path, message_max_bytes=big)))
    assert props["message.max.bytes"] == props["replica.fetch.max.bytes"] == str(big)
    # Otherwise the broker drops the connection instead of answering MESSAGE_TOO_LARGE.
    assert int(props["socket.request.max.bytes"]) > big


def test_extra_properties_win_and_render_as_java_values(tmp_path: Path) -> None:
    config = BrokerConfig(
        1, 2, tmp_path, auto_create_topics=False,
        extra={"num.partitions": 6, "log.cleaner.enable": False, "custom.key": "x"},
    )  # fmt: skip
    props = _parse(render_server_properties(config))
    assert props["auto.create.topics.enable"] == "false"
    assert props["num.partitions"] == "6"
    assert props["log.cleaner.enable"] == "false"
    assert props["custom.key"] == "x"
    assert len(props) == len(config.properties())  # no key twice


def test_backslashes_are_escaped(tmp_path: Path) -> None:
    config = BrokerConfig(1, 2, Path("C:\\kafka\\data"))
    assert "log.dirs=C:\\\\kafka\\\\data" in render_server_properties(config)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"controller_port": 19092}, "must differ"),
        ({"port": 0}, "TCP port"),
        ({"controller_port": 70000}, "TCP port"),
        ({"message_max_bytes": 10}, "at least 1024"),
        ({"num_partitions": 0}, "at least 1"),
    ],
)
def test_invalid_configs_are_refused(config: BrokerConfig, changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(config, **changes)


def test_cluster_id_matches_kafka_uuid_format() -> None:
    ids = {generate_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cluster_id in ids:
        assert len(cluster_id) == 22 and not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_kafka_version_comes_from_the_shipped_pom() -> None:
    pom = importlib.resources.files("skinbatch.localstack").joinpath("kafka-pom.xml").read_text()
    assert f"<kafka.version>{kafka_version()}</kafka.version>" in pom
    assert kafka_version().startswith("4.")


def _pom_digest() -> str:
    pom = importlib.resources.files("skinbatch.localstack").joinpath("kafka-pom.xml").read_text()
    return hashlib.sha256(pom.encode()).hexdigest()


def test_cached_jars_need_no_maven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    libs = tmp_path / f"kafka-{kafka_version()}" / "libs"
    libs.mkdir(parents=True)
    (libs / ".skinbatch-complete").write_text(_pom_digest() + "\n")
    monkeypatch.setattr(kafka_module.shutil, "which", lambda name: None)
    assert ensure_kafka_jars(tmp_path) == libs


def test_missing_maven_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    libs = tmp_path / f"kafka-{kafka_version()}" / "libs"
    libs.mkdir(parents=True)
    (libs / ".skinbatch-complete").write_text("digest of another pom\n")  # stale: must refetch
    monkeypatch.setattr(kafka_module.shutil, "which", lambda name: None)
    with pytest.raises(KafkaSetupError, match="apt-get install maven"):
        ensure_kafka_jars(tmp_path)


def test_default_cache_dir_honours_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKINBATCH_CACHE", str(tmp_path / "c"))
    assert kafka_module.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("SKINBATCH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert kafka_module.default_cache_dir() == tmp_path / "x" / "skinbatch"


def test_cluster_node_names_every_voter_and_replicates_internal_topics(tmp_path: Path) -> None:
    voters = "1@127.0.0.1:19093,2@127.0.0.1:19095,3@127.0.0.1:19097"
    node = BrokerConfig(port=19094, controller_port=19095, log_dir=tmp_path, node_id=2, voters=voters)
    props = _parse(render_server_properties(node))
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == voters
    assert props["offsets.topic.replication.factor"] == "3"
    assert props["transaction.state.log.replication.factor"] == "3"
    assert props["transaction.state.log.min.isr"] == "2"
    assert props["min.insync.replicas"] == "2"
    assert node.replicas == 3


def test_a_node_must_be_one_of_its_voters(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="node 4 is not among the voters"):
        BrokerConfig(port=19094, controller_port=19095, log_dir=tmp_path, node_id=4, voters="1@127.0.0.1:19093")
