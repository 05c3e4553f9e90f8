"""Secrets from files: ``skinbatch consume`` with every secret in a file, as compose ``secrets:`` and
Kubernetes Secret volumes hand them over, against the real SASL_SSL broker, Orthanc and Triton.

The consumer gets only ``SKINBATCH_*_FILE`` variables for its secrets: the SCRAM password, the
password of its encrypted client key (mutual-TLS material loaded with it), the archive's password and
Triton's admin key. It scores an inline image and one it retrieves from the archive (so the broker and
the archive both accepted what the files held), and while it runs no secret appears in
``/proc/PID/cmdline`` or ``/proc/PID/environ`` of it or of its decode workers, nor in its log.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest

from skinbatch.localstack.kafka import KafkaBroker
from skinbatch.samples import synthetic_jpeg
from tests.fixtures.orthanc import ORTHANC_USER
from tests.fixtures.stack import ConsumerProcess, TopicReader, produce, unique_topics
from tests.fixtures.tls import Pki
from tests.system.test_dicomweb import _sample_files, _store
from tests.system.test_kafka_security import PASSWORD, USER, pki, secure_broker  # noqa: F401 - fixtures

pytestmark = [pytest.mark.system, pytest.mark.timeout(500)]

SECRET_VARIABLES = ("SASL_PASSWORD", "SSL_PASSWORD", "DICOMWEB_PASSWORD", "DICOMWEB_TOKEN", "TRITON_ADMIN_KEY")


def write_secret(folder: Path, name: str, value: str) -> Path:
    path = folder / name
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


def encrypted_key(authority: Pki, folder: Path, password_file: Path) -> Path:
    out = folder / "client-encrypted.key"
    subprocess.run(["openssl", "pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", str(authority.client.key),
                    "-out", str(out), "-passout", f"file:{password_file}"], check=True, capture_output=True)
    assert b"ENCRYPTED PRIVATE KEY" in out.read_bytes()
    return out


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the decode workers), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def exposed(pids: list[int], values: dict[str, str]) -> list[str]:
    found = []
    for pid in pids:
        for part in ("cmdline", "environ"):
            try:
                data = Path(f"/proc/{pid}/{part}").read_bytes()
            except OSError:
                continue
            found += [f"{name} in /proc/{pid}/{part}" for name, value in values.items() if value.encode() in data]
    return found


def test_consume_with_every_secret_from_a_file(secure_broker: tuple[KafkaBroker, str], pki: Pki,  # noqa: F811
                                               served_triton: Any, orthanc: Any, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    broker, bootstrap = secure_broker
    folder = tmp_path / "secrets"
    folder.mkdir(mode=0o700)
    values = {"sasl": PASSWORD, "key": "key-pw-" + secrets.token_hex(8), "archive": orthanc.password,
              "admin": "admin-" + secrets.token_hex(16)}
    files = {name: write_secret(folder, name, value) for name, value in values.items()}
    keyfile = encrypted_key(pki, tmp_path, files["key"])

    topics = unique_topics("secret-files")
    broker.create_topics({topics["request"]: 1, topics["result"]: 1, topics["dead"]: 1})
    (dataset,) = _store(orthanc, _sample_files(2)[:1])
    reference = {"study": dataset.StudyInstanceUID, "series": dataset.SeriesInstanceUID,
                 "instance": dataset.SOPInstanceUID}
    produce(broker.bootstrap_servers, topics["request"], [  # the PLAINTEXT listener, as a test's producer
        ("inline-0", synthetic_jpeg(320, 240, seed=7), []),
        ("archived-0", json.dumps(reference).encode(), []),
    ])

    for name in SECRET_VARIABLES:
        monkeypatch.delenv(f"SKINBATCH_{name}", raising=False)
    env = {
        "SKINBATCH_SECURITY_PROTOCOL": "SASL_SSL", "SKINBATCH_SASL_MECHANISM": "SCRAM-SHA-512",
        "SKINBATCH_SASL_USERNAME": USER, "SKINBATCH_SASL_PASSWORD_FILE": str(files["sasl"]),
        "SKINBATCH_SSL_CAFILE": str(pki.ca), "SKINBATCH_SSL_CERTFILE": str(pki.client.cert),
        "SKINBATCH_SSL_KEYFILE": str(keyfile), "SKINBATCH_SSL_PASSWORD_FILE": str(files["key"]),
        "SKINBATCH_DICOMWEB_URL": orthanc.dicomweb_url, "SKINBATCH_DICOMWEB_USER": ORTHANC_USER,
        "SKINBATCH_DICOMWEB_PASSWORD_FILE": str(files["archive"]),
        "SKINBATCH_TRITON_ADMIN_KEY_FILE": str(files["admin"]),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert not exposed([os.getpid()], values), "the test leaked a secret into its own environment"

    consumer = ConsumerProcess(bootstrap, served_triton.grpc_url, topics, "g-secret-files", tmp_path / "consumer.log")
    consumer.start()
    reader = TopicReader(broker.bootstrap_servers, topics["result"], topics["dead"])
    try:
        msgs = reader.read(lambda m: len(m[topics["result"]]) + len(m[topics["dead"]]) >= 2, timeout=300)
        assert consumer.alive(), consumer.log()
        assert consumer.proc is not None
        pids = process_tree(consumer.proc.pid)
        leaks = exposed(pids, values)
    finally:
        reader.close()
        code = consumer.stop()
    log = consumer.log_path.read_text(errors="replace")
    assert code == 0, log[-3000:]
    assert not msgs[topics["dead"]], msgs[topics["dead"]]
    ids = {m["request_id"] for m in msgs[topics["result"]]}
    assert "inline-0" in ids and any(i.startswith("archived-0") for i in ids), ids
    assert len(pids) > 1, "no decode worker was checked"
    assert not leaks, leaks
    assert not [name for name, value in values.items() if value in log], "a secret reached the log"
