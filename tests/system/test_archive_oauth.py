"""OAuth2 to the archive against a real issuer and a real gateway: ORY Hydra issues client-credentials
JWTs that live 30 s, and oauth2-proxy in front of the real Orthanc lets only those for its audience pass
(tests/fixtures/gateways.py, built by tests/fixtures/go_tools.py).
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from skinbatch._child import free_port
from skinbatch.dicomweb.orthanc import LocalOrthanc
from tests.fixtures.archive import exit_at_start, stored_copies, uid_request
from tests.fixtures.gateways import BearerGateway, HydraIssuer
from tests.fixtures.orthanc import running_orthanc
from tests.fixtures.stack import ConsumerProcess, TopicReader, produce, unique_topics

pytestmark = pytest.mark.system

AUDIENCE = "archive"
SECRET = "client-secret-" + "7c1e"
AUTH_EXIT = 12  # ExitCode.AUTH


@pytest.fixture(scope="module")
def open_orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalOrthanc]:
    """An Orthanc without its own authentication: the gateway in front of it is the only door."""
    with running_orthanc(tmp_path_factory.mktemp("orthanc-open"), password=False) as server:
        yield server


@pytest.fixture(scope="module")
def hydra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HydraIssuer]:
    with HydraIssuer(tmp_path_factory.mktemp("hydra"), token_ttl_s=30) as server:
        server.add_client("skinbatch", SECRET, [AUDIENCE])
        server.add_client("elsewhere", SECRET, ["another-service"])
        yield server


@pytest.fixture(scope="module")
def gateway(open_orthanc: LocalOrthanc, hydra: HydraIssuer,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[BearerGateway]:
    with BearerGateway(open_orthanc.url, hydra.issuer, AUDIENCE, tmp_path_factory.mktemp("oauth2-proxy")) as server:
        yield server  # ChildServer: started and ready on entry, closed on exit


def _oauth_args(gateway: BearerGateway, hydra: HydraIssuer, secret_file: Path, client: str, audience: str) -> list[str]:
    return ["--dicomweb-url", gateway.url + "/dicom-web", "--dicomweb-token-url", hydra.token_url,
            "--dicomweb-client-id", client, "--dicomweb-client-secret-file", str(secret_file),
            "--dicomweb-audience", audience, "--dicomweb-scope", "dicomweb"]


def _secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "client-secret"
    path.write_text(SECRET + "\n")
    return path


def _metric(port: int, name: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:  # noqa: S310
            text = response.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def test_a_client_whose_tokens_the_gateway_refuses_exits_12(
        kafka_broker: Any, served_triton: Any, gateway: BearerGateway, hydra: HydraIssuer, tmp_path: Path) -> None:
    topics = unique_topics("oauth-no")
    consumer = ConsumerProcess(kafka_broker.bootstrap_servers, served_triton.grpc_url, topics, "g-oauth-no",
                               tmp_path / "consumer.log",
                               _oauth_args(gateway, hydra, _secret_file(tmp_path), "elsewhere", "another-service"))
    code, log = exit_at_start(consumer)
    assert code == AUTH_EXIT, log
    assert "refused our credentials" in log and "--dicomweb-audience" in log
    assert SECRET not in log


def test_30_s_tokens_through_a_stream_with_the_issuer_down_and_back(
        kafka_broker: Any, served_triton: Any, open_orthanc: LocalOrthanc, gateway: BearerGateway,
        hydra: HydraIssuer, tmp_path: Path) -> None:
    refs = [uid_request(ds) for ds in stored_copies(open_orthanc.dicomweb_url, 3)]
    topics = unique_topics("oauth")
    kafka_broker.create_topics({topics["request"]: 1, topics["result"]: 1, topics["dead"]: 1})
    port = free_port()
    log_path = tmp_path / "consumer.log"
    consumer = ConsumerProcess(kafka_broker.bootstrap_servers, served_triton.grpc_url, topics, "g-oauth", log_path,
                               [*_oauth_args(gateway, hydra, _secret_file(tmp_path), "skinbatch", AUDIENCE),
                                "--metrics-port", str(port)])
    sent: list[str] = []
    stop = threading.Event()

    def stream() -> None:  # one request every 2 s for the whole test: a steady stream across refreshes
        i = 0
        while not stop.is_set():
            rid = f"s-{i:04d}"
            produce(kafka_broker.bootstrap_servers, topics["request"], [(rid, refs[i % len(refs)], [])])
            sent.append(rid)
            i += 1
            stop.wait(2.0)

    reader = TopicReader(kafka_broker.bootstrap_servers, topics["result"], topics["dead"])
    producer = threading.Thread(target=stream, daemon=True)
    failures_seen: float | None = None
    token_ok_seen: float | None = None
    try:
        consumer.start()
        producer.start()
        reader.read(lambda m: len(m[topics["result"]]) >= 5, timeout=300)
        time.sleep(70)  # more than two token lifetimes of steady traffic
        before_outage = log_path.read_text()
        hydra.stop()
        deadline = time.monotonic() + 60  # longer than a token lives: the consumer must notice
        while time.monotonic() < deadline:
            failures_seen = _metric(port, "skinbatch_consumer_archive_token_refresh_failures_total")
            token_ok_seen = _metric(port, "skinbatch_consumer_archive_token_ok")
            if failures_seen and token_ok_seen == 0:
                break
            time.sleep(2)
        hydra.start()
        hydra.wait_ready()
        time.sleep(40)
        stop.set()
        producer.join(10)
        msgs = reader.read(lambda m: {x["request_id"] for x in m[topics["result"]]} >= set(sent), timeout=300)
        assert consumer.alive(), consumer.log()
        recovered = _metric(port, "skinbatch_consumer_archive_token_ok")
    finally:
        stop.set()
        reader.close()
        if not hydra.is_running():
            hydra.start()
        code = consumer.stop()
    assert code == 0, consumer.log()
    assert failures_seen and failures_seen >= 1 and token_ok_seen == 0
    assert recovered == 1
    got = [m["request_id"] for m in msgs[topics["result"]]]
    assert set(got) == set(sent) and msgs[topics["dead"]] == []
    # Tokens renewed in time: while the issuer was up the archive never refused us and nothing paused.
    assert '"event": "archive_down"' not in before_outage, before_outage[-3000:]
    text = log_path.read_text()
    assert text.count('"event": "token_refresh_failed"') == 1, text[-3000:]
    assert '"event": "token_refresh_ok"' in text
    assert SECRET not in text and "eyJ" not in text  # neither the secret nor a JWT in any log line
