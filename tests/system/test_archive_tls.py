"""Mutual TLS to the DICOMweb archive: the real Orthanc behind nginx, which asks every client for a
certificate signed by the test CA (tests/fixtures/gateways.py says why not Orthanc's own HTTPS).

A consumer with the right client certificate scores UID requests through it; one without a certificate,
or with one the archive does not trust, exits 13 at start-up and says what to give.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.archive import exit_at_start, stored_copies, uid_request
from tests.fixtures.gateways import MutualTlsGateway
from tests.fixtures.orthanc import ORTHANC_USER
from tests.fixtures.stack import REPO_ROOT, ConsumerProcess, TopicReader, produce, unique_topics
from tests.fixtures.tls import Pki, make_pki

pytestmark = pytest.mark.system

TLS_EXIT = 13  # ExitCode.TLS


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("archive-pki"))


@pytest.fixture(scope="module")
def gateway(orthanc: Any, pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MutualTlsGateway]:
    with MutualTlsGateway(orthanc.url, pki, tmp_path_factory.mktemp("nginx")) as server:
        yield server  # ChildServer: started and ready on entry, closed on exit


def _archive_args(gateway: MutualTlsGateway, orthanc: Any, pki: Pki, cert: Path | None, key: Path | None) -> list[str]:
    args = ["--dicomweb-url", gateway.url + "/dicom-web", "--dicomweb-user", ORTHANC_USER,
            "--dicomweb-password", orthanc.password, "--dicomweb-ca", str(pki.ca)]
    if cert and key:
        args += ["--dicomweb-cert", str(cert), "--dicomweb-key", str(key)]
    return args


def test_consumer_with_the_client_certificate_scores_uid_requests(
        kafka_broker: Any, served_triton: Any, orthanc: Any, gateway: MutualTlsGateway, pki: Pki,
        tmp_path: Path) -> None:
    copies = stored_copies(orthanc.dicomweb_url, 2, ORTHANC_USER, orthanc.password)
    topics = unique_topics("mtls")
    kafka_broker.create_topics({topics["request"]: 1, topics["result"]: 1, topics["dead"]: 1})
    ids = [f"m-{i}" for i in range(len(copies))]
    produce(kafka_broker.bootstrap_servers, topics["request"],
            [(rid, uid_request(ds), []) for rid, ds in zip(ids, copies, strict=True)])
    consumer = ConsumerProcess(kafka_broker.bootstrap_servers, served_triton.grpc_url, topics, "g-mtls",
                               tmp_path / "consumer.log",
                               _archive_args(gateway, orthanc, pki, pki.client.cert, pki.client.key)).start()
    reader = TopicReader(kafka_broker.bootstrap_servers, topics["result"], topics["dead"])
    try:
        msgs = reader.read(lambda m: {x["request_id"] for x in m[topics["result"]]} >= set(ids)
                           or not consumer.alive(), timeout=300)
        assert consumer.alive(), consumer.log()
    finally:
        reader.close()
        assert consumer.stop() == 0, consumer.log()
    assert msgs[topics["dead"]] == []
    got = {m["request_id"]: m["dicom"]["sop_instance_uid"] for m in msgs[topics["result"]]}
    assert got == {rid: ds.SOPInstanceUID for rid, ds in zip(ids, copies, strict=True)}
    # Every request came through the TLS gateway, with our certificate.
    assert "/dicom-web/studies/" in (Path(gateway.work_dir or "") / "access.log").read_text()


@pytest.mark.parametrize("which", ["none", "untrusted"])
def test_consumer_without_a_trusted_client_certificate_exits_13(
        kafka_broker: Any, served_triton: Any, orthanc: Any, gateway: MutualTlsGateway, pki: Pki,
        tmp_path: Path, which: str) -> None:
    other = make_pki(tmp_path / "other")
    cert, key = (None, None) if which == "none" else (other.client.cert, other.client.key)
    topics = unique_topics("mtls-no")
    consumer = ConsumerProcess(kafka_broker.bootstrap_servers, served_triton.grpc_url, topics, "g-mtls-no",
                               tmp_path / "consumer.log", _archive_args(gateway, orthanc, pki, cert, key))
    code, log = exit_at_start(consumer)
    assert code == TLS_EXIT, log
    expected = "asks for a client certificate" if which == "none" else "refused our client certificate"
    assert expected in log and "--dicomweb-cert" in log, log
    assert orthanc.password not in log


def test_triage_names_the_missing_ca_and_the_missing_client_certificate(
        served_triton: Any, orthanc: Any, gateway: MutualTlsGateway, pki: Pki, tmp_path: Path) -> None:
    base = [sys.executable, "-m", "skinbatch.cli", "triage", "--triton-url", served_triton.grpc_url,
            "--out", str(tmp_path / "out"), "--dicomweb-url", gateway.url + "/dicom-web",
            "--dicomweb-user", ORTHANC_USER, "--study-date", "20310101", "--no-progress", "--decode-workers", "1"]
    env = {**os.environ, "SKINBATCH_DICOMWEB_PASSWORD": orthanc.password}
    no_ca = subprocess.run(base, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT, env=env)
    assert no_ca.returncode == TLS_EXIT, no_ca.stderr
    assert "--dicomweb-ca" in no_ca.stderr and "not trusted" in no_ca.stderr
    no_cert = subprocess.run([*base, "--dicomweb-ca", str(pki.ca)], capture_output=True, text=True, timeout=300,
                             cwd=REPO_ROOT, env={**env, "SKINBATCH_DICOMWEB_CA": ""})
    assert no_cert.returncode == TLS_EXIT, no_cert.stderr
    assert "asks for a client certificate" in no_cert.stderr
    # The same files from the environment: the search goes through (nothing matches that date).
    with_cert = subprocess.run(base, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT, env={
        **env, "SKINBATCH_DICOMWEB_CA": str(pki.ca), "SKINBATCH_DICOMWEB_CERT": str(pki.client.cert),
        "SKINBATCH_DICOMWEB_KEY": str(pki.client.key)})
    assert with_cert.returncode == 7, with_cert.stderr  # ExitCode.NO_INPUT: the archive answered, no match
    assert "DICOMweb: 0 studies" in with_cert.stderr
