"""Triton's admin APIs behind a key: the real Triton in explicit model-control mode with the restricted
options that compose and k8s use (docs/deploy.md).

The consumer with the key (from a file) registers its shared memory and scores through it, and
``status`` reads the model-repository index; a client without the key can neither unload the model nor
register shared memory.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from skinbatch.contract import ENSEMBLE
from skinbatch.serve import LocalTriton
from tests.fixtures.stack import REPO_ROOT, ConsumerProcess, TopicReader, produce, unique_topics
from tests.fixtures.triton import local_triton

pytestmark = pytest.mark.system

RESTRICTED = "model-repository,shared-memory,logging,trace"


@pytest.fixture(scope="module")
def admin_key() -> str:
    return secrets.token_hex(16)


@pytest.fixture(scope="module")
def restricted_triton(cpu_repository: Path, admin_key: str,
                      tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTriton]:
    extra = ("--model-control-mode=explicit", "--load-model=*",
             f"--grpc-restricted-protocol={RESTRICTED}:admin-key={admin_key}",
             f"--http-restricted-api={RESTRICTED}:admin-key={admin_key}")
    with local_triton(cpu_repository, tmp_path_factory.mktemp("triton-restricted"), extra_args=extra) as server:
        yield server


def _key_file(tmp_path: Path, key: str) -> Path:
    path = tmp_path / "triton-admin-key"
    path.write_text(key + "\n")
    path.chmod(0o600)
    return path


def test_without_the_key_nobody_unloads_the_model_or_registers_shared_memory(
        restricted_triton: LocalTriton, admin_key: str) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    grpc = grpcclient.InferenceServerClient(restricted_triton.grpc_endpoint)
    http = httpclient.InferenceServerClient(restricted_triton.http_url.removeprefix("http://"))
    try:
        with pytest.raises(InferenceServerException):
            grpc.unload_model(ENSEMBLE)
        with pytest.raises(InferenceServerException):
            http.unload_model(ENSEMBLE)
        with pytest.raises(InferenceServerException):
            grpc.register_system_shared_memory("intruder", "/intruder", 1024)
        with pytest.raises(InferenceServerException):
            grpc.get_model_repository_index()
        assert grpc.is_model_ready(ENSEMBLE)
        # The key opens the same API.
        index = grpc.get_model_repository_index(headers={"triton-grpc-protocol-admin-key": admin_key}, as_json=True)
        assert http.get_model_repository_index(headers={"admin-key": admin_key})
        assert ENSEMBLE in {m["name"] for m in index["models"]}
    finally:
        grpc.close()
        http.close()


def test_status_with_the_key_reads_the_repository_and_without_it_says_so(
        restricted_triton: LocalTriton, admin_key: str, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "skinbatch.cli", "status", "--triton-url", restricted_triton.grpc_endpoint,
           "--metrics-url", restricted_triton.metrics_url, "--json", "--interval", "0"]
    env = {**os.environ, "SKINBATCH_TRITON_ADMIN_KEY_FILE": str(_key_file(tmp_path, admin_key))}
    ok = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    report = json.loads(ok.stdout)
    models = {m["name"]: m for m in report["triton"]["models"]}
    assert set(models) >= {"skin_classifier", "inception_v3", "taxonomy"}
    assert admin_key not in ok.stdout + ok.stderr


def test_consumer_with_the_key_scores_through_shared_memory(
        kafka_broker: Any, restricted_triton: LocalTriton, admin_key: str, tmp_path: Path) -> None:
    topics = unique_topics("admin")
    kafka_broker.create_topics({topics["request"]: 1, topics["result"]: 1, topics["dead"]: 1})
    from PIL import Image

    rng = np.random.default_rng(7)
    items = []
    for i in range(4):
        import io

        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (320, 320, 3), dtype=np.uint8)).save(buf, format="PNG")
        items.append((f"a-{i}", buf.getvalue(), []))
    produce(kafka_broker.bootstrap_servers, topics["request"], items)
    log = tmp_path / "consumer.log"
    consumer = ConsumerProcess(kafka_broker.bootstrap_servers, restricted_triton.grpc_url, topics, "g-admin", log,
                               ["--shared-memory", "on", "--triton-admin-key-file", str(_key_file(tmp_path, admin_key)),
                                "--log-level", "DEBUG"]).start()
    reader = TopicReader(kafka_broker.bootstrap_servers, topics["result"], topics["dead"])
    try:
        msgs = reader.read(lambda m: len(m[topics["result"]]) >= len(items) or not consumer.alive(), timeout=300)
        assert consumer.alive(), consumer.log()
    finally:
        reader.close()
        code = consumer.stop()
    assert code == 0, consumer.log()
    assert {m["request_id"] for m in msgs[topics["result"]]} == {rid for rid, _, _ in items}
    text = log.read_text()
    assert "shared memory" in text.lower() and admin_key not in text

    # The same consumer without the key cannot register its segment: with --shared-memory on it stops.
    refused = ConsumerProcess(kafka_broker.bootstrap_servers, restricted_triton.grpc_url, topics, "g-admin-no",
                              tmp_path / "refused.log", ["--shared-memory", "on"]).start()
    assert refused.proc is not None
    try:
        code = refused.proc.wait(180)
    finally:
        if refused.alive():
            refused.kill()
    assert code != 0, refused.log()
