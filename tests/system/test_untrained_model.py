"""A model served with an untrained card says so everywhere its scores go.

The session's demo repository has a trained card (its checkpoint is a file, as a trained model's would
be), so the other system tests only ever see the warning absent. Here a copy of that repository gets a
card marked untrained, served by a Triton of its own: every result carries the warning, the consumer
logs it, and triage prints it and marks its report.
"""

from __future__ import annotations

import csv
import dataclasses
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from skinbatch.consumer.messages import UNTRAINED_WARNING
from skinbatch.converter.repository import update_card
from skinbatch.modelcard import load_model_card
from skinbatch.samples import synthetic_jpeg
from skinbatch.serve import LocalTriton
from tests.fixtures.stack import ConsumerProcess, TopicReader, produce, unique_topics
from tests.fixtures.triton import local_triton

pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def untrained_triton(cpu_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTriton]:
    repository = tmp_path_factory.mktemp("untrained") / "model_repository"
    shutil.copytree(cpu_repository, repository)
    card = load_model_card(repository)
    assert card.trained, "the session's demo card is expected to be trained; this test flips it"
    update_card(repository, dataclasses.replace(card, trained=False))
    with local_triton(repository, tmp_path_factory.mktemp("triton-untrained")) as server:
        yield server


def test_every_result_of_an_untrained_model_carries_the_warning(kafka_broker: Any, untrained_triton: LocalTriton,
                                                                tmp_path: Path) -> None:
    topics = unique_topics("untrained")
    kafka_broker.create_topics({topics["request"]: 1, topics["result"]: 1, topics["dead"]: 1})
    produce(kafka_broker.bootstrap_servers, topics["request"],
            [(f"img-{i}", synthetic_jpeg(400, 300, seed=70 + i), []) for i in range(3)])
    consumer = ConsumerProcess(kafka_broker.bootstrap_servers, untrained_triton.grpc_url, topics, "g-untrained",
                               tmp_path / "consumer.log").start()
    reader = TopicReader(kafka_broker.bootstrap_servers, topics["result"], topics["dead"])
    try:
        msgs = reader.read(lambda m: len(m[topics["result"]]) >= 3 or not consumer.alive(), timeout=240)
    finally:
        reader.close()
        code = consumer.stop()
    assert code == 0, consumer.log()
    results = msgs[topics["result"]]
    assert len(results) == 3 and all(r["model"]["trained"] is False for r in results)
    assert all(r["warning"] == UNTRAINED_WARNING for r in results), results[0]
    assert '"event": "untrained"' in consumer.log()


def test_triage_of_an_untrained_model_says_so(untrained_triton: LocalTriton, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "photo.jpg").write_bytes(synthetic_jpeg(400, 300, seed=80))
    r = subprocess.run([sys.executable, "-m", "skinbatch.cli", "triage", str(folder), "--triton-url",
                        untrained_triton.grpc_url, "--out", str(tmp_path / "out"), "--no-progress"],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "UNTRAINED" in r.stderr
    with open(tmp_path / "out" / "triage.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [row["model_trained"] for row in rows] == ["False"]
    assert "Untrained model (demo weights)" in (tmp_path / "out" / "triage.html").read_text(encoding="utf-8")
