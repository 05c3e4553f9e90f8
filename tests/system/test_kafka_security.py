"""SASL_SSL on the real local Kafka broker: every command that connects, with the one set of options.

The broker gets a ``SASL_SSL`` listener with a certificate signed by a CA made here (``openssl``),
SCRAM-SHA-512 users created at format time, and OAUTHBEARER with Kafka's unsecured test tokens. Its
PLAINTEXT listener stays for the broker's own readiness probe, for creating topics and for reading the
results back. The commands get their settings only from ``SKINBATCH_*`` variables, as in compose and
Kubernetes:

* ``publish``, ``consume`` and ``status`` work over SCRAM-SHA-512 (and ``consume`` over OAUTHBEARER);
* a wrong password and an untrusted CA each make every one of them fail within 30 s, with the exit
  code and a message that say which it was (12: credentials, 13: TLS).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from skinbatch.contract import ExitCode
from skinbatch.localstack.kafka import KafkaBroker, free_port
from skinbatch.samples import synthetic_jpeg
from tests.fixtures.kafka import start_or_skip
from tests.fixtures.stack import ConsumerProcess, TopicReader, unique_topics
from tests.fixtures.tls import Pki, make_pki

pytestmark = [pytest.mark.system, pytest.mark.timeout(400)]

REPO_ROOT = Path(__file__).resolve().parents[2]
USER, PASSWORD = "skinbatch", "s3cret-for-tests"


def _distinct_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("kafka-pki"))


@pytest.fixture(scope="module")
def secure_broker(pki: Pki) -> Iterator[tuple[KafkaBroker, str]]:
    port, controller, secure = _distinct_ports(3)
    host = "127.0.0.1"
    listeners = f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller},SASL_SSL://{host}:{secure}"
    broker = KafkaBroker(
        port=port,
        controller_port=controller,
        extra_properties={
            "listeners": listeners,
            "advertised.listeners": listeners,
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL",
            "sasl.enabled.mechanisms": "SCRAM-SHA-512,OAUTHBEARER",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "listener.name.sasl_ssl.oauthbearer.sasl.jaas.config":
                "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(pki.server.pem),
        },
        format_args=["--add-scram", f"SCRAM-SHA-512=[name={USER},password={PASSWORD}]"],
    )
    start_or_skip(broker)
    try:
        yield broker, f"{host}:{secure}"
    finally:
        broker.close()


def secure_env(bootstrap: str, ca: Path, password: str = PASSWORD) -> dict[str, str]:
    """What an operator puts in the environment (compose's .env, a Kubernetes Secret)."""
    return {
        "SKINBATCH_BOOTSTRAP_SERVERS": bootstrap,
        "SKINBATCH_SECURITY_PROTOCOL": "SASL_SSL",
        "SKINBATCH_SASL_MECHANISM": "SCRAM-SHA-512",
        "SKINBATCH_SASL_USERNAME": USER,
        "SKINBATCH_SASL_PASSWORD": password,
        "SKINBATCH_SSL_CAFILE": str(ca),
    }


def run_cli(env: dict[str, str], *args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    import os

    clean = {k: v for k, v in os.environ.items() if not k.startswith("SKINBATCH_")}
    return subprocess.run([sys.executable, "-m", "skinbatch.cli", *map(str, args)], cwd=REPO_ROOT,
                          env={**clean, **env}, capture_output=True, text=True, timeout=timeout)


def _consumer(bootstrap: str, triton: Any, topics: dict[str, str], group: str, log: Path,
              env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> ConsumerProcess:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return ConsumerProcess(bootstrap, triton.grpc_url, topics, group, log).start()


def test_publish_consume_and_status_over_sasl_ssl(secure_broker: tuple[KafkaBroker, str], pki: Pki,
                                                  served_triton: Any, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    broker, bootstrap = secure_broker
    topics = unique_topics("sasl")
    broker.create_topics({topics["request"]: 2, topics["result"]: 1, topics["dead"]: 1})
    env = secure_env(bootstrap, pki.ca)
    images = []
    for i in range(3):
        images.append(tmp_path / f"photo{i}.jpg")
        images[-1].write_bytes(synthetic_jpeg(400, 300, seed=i))
    sent = run_cli(env, "publish", *images, "--request-topic", topics["request"], "--key", "counter", "--json")
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["sent"] == 3

    consumer = _consumer(bootstrap, served_triton, topics, "g-sasl", tmp_path / "consumer.log", env, monkeypatch)
    reader = TopicReader(broker.bootstrap_servers, topics["result"], topics["dead"])  # the PLAINTEXT listener
    try:
        msgs = reader.read(lambda m: len(m[topics["result"]]) >= 3, timeout=240)
        time.sleep(2)  # one more commit interval
        status = run_cli(env, "status", "--triton-url", served_triton.grpc_url, "--metrics-url",
                         served_triton.metrics_url, "--group-id", "g-sasl", "--dead-letter-topic", topics["dead"],
                         "--interval", "0", "--json")
    finally:
        reader.close()
        assert consumer.stop() == 0, consumer.log()
    assert {m["request_id"] for m in msgs[topics["result"]]} == {"0", "1", "2"}
    assert not msgs[topics["dead"]]
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["kafka"]["group_id"] == "g-sasl" and report["kafka"]["total_lag"] == 0, report["kafka"]


def test_consume_over_oauthbearer(secure_broker: tuple[KafkaBroker, str], pki: Pki, served_triton: Any,
                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unsecured (unsigned) token, which Kafka's default OAUTHBEARER validator accepts for tests."""
    broker, bootstrap = secure_broker
    topics = unique_topics("oauth")
    broker.create_topics({topics["request"]: 1, topics["result"]: 1, topics["dead"]: 1})
    from tests.fixtures.stack import produce

    produce(broker.bootstrap_servers, topics["request"], [("oauth-0", synthetic_jpeg(300, 200, seed=4), [])])

    def b64(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    now = int(time.time())
    token = tmp_path / "token"
    token.write_text(f"{b64({'alg': 'none'})}.{b64({'sub': USER, 'iat': now, 'exp': now + 3600})}.")
    env = {"SKINBATCH_SECURITY_PROTOCOL": "SASL_SSL", "SKINBATCH_SASL_MECHANISM": "OAUTHBEARER",
           "SKINBATCH_SASL_OAUTH_TOKEN_FILE": str(token), "SKINBATCH_SSL_CAFILE": str(pki.ca)}
    consumer = _consumer(bootstrap, served_triton, topics, "g-oauth", tmp_path / "consumer.log", env, monkeypatch)
    reader = TopicReader(broker.bootstrap_servers, topics["result"])
    try:
        msgs = reader.read(lambda m: len(m[topics["result"]]) >= 1, timeout=240)
    finally:
        reader.close()
        assert consumer.stop() == 0, consumer.log()
    assert msgs[topics["result"]][0]["request_id"] == "oauth-0"


@pytest.mark.parametrize("fault", ["wrong password", "untrusted CA"])
def test_every_command_fails_clearly_within_30_s(secure_broker: tuple[KafkaBroker, str], pki: Pki,
                                                 served_triton: Any, tmp_path: Path, fault: str) -> None:
    broker, bootstrap = secure_broker
    if fault == "wrong password":
        env, code, words = secure_env(bootstrap, pki.ca, password="not-the-password"), ExitCode.AUTH, "credentials"
    else:
        stranger = make_pki(tmp_path / "stranger")
        env, code, words = secure_env(bootstrap, stranger.ca), ExitCode.TLS, "does not trust"
    image = tmp_path / "photo.jpg"
    image.write_bytes(synthetic_jpeg(200, 100))
    topics = unique_topics("refused")
    commands = {
        "publish": ["publish", str(image), "--request-topic", topics["request"]],
        "consume": ["consume", "--triton-url", served_triton.grpc_url, "--request-topic", topics["request"],
                    "--result-topic", topics["result"], "--dead-letter-topic", topics["dead"], "--metrics-port", "0"],
        "status": ["status", "--triton-url", served_triton.grpc_url, "--metrics-url", served_triton.metrics_url,
                   "--group-id", "g-any", "--interval", "0"],
    }
    for name, args in commands.items():
        # The 60 s timeout is the hang guard: each command must end with the code, not retry forever.
        result = run_cli(env, *args, timeout=60)
        assert result.returncode == code, (name, result.returncode, result.stderr[-2000:])
        assert words in result.stderr, (name, result.stderr[-2000:])
