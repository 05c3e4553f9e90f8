"""Every command over every Triton endpoint form, against the real local Triton.

* **TLS**: Triton started with its own ``--grpc-use-ssl`` flags and a CA made here; ``grpcs://`` works
  for ``consume``, ``triage`` and ``status``; a plain ``grpc://`` client, and a ``grpcs://`` client that
  does not trust the server's CA, each fail clearly (exit 13, naming TLS) instead of waiting.
* **HTTP**: ``status``, ``triage`` and ``evaluate`` with ``http://host:PORT`` give what they give over gRPC.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from skinbatch.contract import ExitCode
from skinbatch.samples import synthetic_jpeg, synthetic_png
from skinbatch.serve import LocalTriton
from tests.fixtures.stack import ConsumerProcess, TopicReader, produce, unique_topics
from tests.fixtures.tls import Pki, make_pki
from tests.fixtures.triton import local_triton

pytestmark = [pytest.mark.system, pytest.mark.timeout(400)]

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str | Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "skinbatch.cli", *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Another CA: its certificate is not the one Triton's was signed by."""
    return make_pki(tmp_path_factory.mktemp("other-pki"))


@pytest.fixture(scope="module")
def tls_triton(cpu_repository: Path, pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTriton]:
    """Triton serving gRPC over TLS only (HTTP stays plain: Triton leaves HTTPS to a proxy)."""
    args = ("--grpc-use-ssl=true", f"--grpc-server-cert={pki.server.cert}", f"--grpc-server-key={pki.server.key}",
            f"--grpc-root-cert={pki.ca}")
    with local_triton(cpu_repository, tmp_path_factory.mktemp("triton-tls"), extra_args=args) as server:
        yield server


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    for i in range(3):
        (root / f"photo{i}.jpg").write_bytes(synthetic_jpeg(640, 480, seed=i))
    (root / "lesion.png").write_bytes(synthetic_png(320, 240, seed=5))
    return root


def _triage_scores(out: Path) -> dict[str, float]:
    with open(out / "triage.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {Path(r["path"]).name: float(r["malignancy"]) for r in rows if r.get("malignancy")}


# -- TLS ----------------------------------------------------------------------------------------------


def test_status_over_grpcs(tls_triton: LocalTriton, pki: Pki) -> None:
    r = run_cli("status", "--triton-url", f"grpcs://{tls_triton.grpc_endpoint}", "--triton-ca", pki.ca,
                "--metrics-url", tls_triton.metrics_url, "--interval", "0", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["triton"]["ready"] and report["model_card"]["name"]


@pytest.mark.parametrize("how", ["plain client", "untrusted CA"])
def test_a_client_that_cannot_speak_tls_to_triton_says_so(tls_triton: LocalTriton, stranger: Pki, how: str) -> None:
    if how == "plain client":
        args = ["--triton-url", f"grpc://{tls_triton.grpc_endpoint}"]
    else:
        args = ["--triton-url", f"grpcs://{tls_triton.grpc_endpoint}", "--triton-ca", str(stranger.ca)]
    # run_cli's timeout is the hang guard: the command must end with the TLS code, not wait.
    r = run_cli("status", *args, "--metrics-url", tls_triton.metrics_url, "--interval", "0", timeout=60)
    assert r.returncode == ExitCode.TLS, (r.returncode, r.stderr)
    assert "TLS" in r.stderr, r.stderr
    if how == "plain client":
        assert f"grpcs://{tls_triton.grpc_endpoint}" in r.stderr, "the message should name the URL to use"


def test_triage_over_grpcs(tls_triton: LocalTriton, pki: Pki, images: Path, tmp_path: Path) -> None:
    r = run_cli("triage", images, "--triton-url", f"grpcs://{tls_triton.grpc_endpoint}", "--triton-ca", pki.ca,
                "--out", tmp_path / "out", "--json", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert len(_triage_scores(tmp_path / "out")) == 4


def test_consume_over_grpcs_and_a_plain_client_exits_13(kafka_broker: Any, tls_triton: LocalTriton, pki: Pki,
                                                      tmp_path: Path) -> None:
    topics = unique_topics("tls")
    kafka_broker.create_topics({topics["request"]: 1, topics["result"]: 1, topics["dead"]: 1})
    produce(kafka_broker.bootstrap_servers, topics["request"],
            [(f"img-{i}", synthetic_jpeg(500, 400, seed=i), []) for i in range(3)])
    plain = ConsumerProcess(kafka_broker.bootstrap_servers, f"grpc://{tls_triton.grpc_endpoint}", topics, "g-plain",
                            tmp_path / "plain.log").start()
    assert plain.proc is not None
    assert plain.proc.wait(60) == ExitCode.TLS, plain.log()
    assert "grpcs://" in plain.log()

    _answers_three(kafka_broker, f"grpcs://{tls_triton.grpc_endpoint}", topics, tmp_path / "tls.log",
                   ["--triton-ca", str(pki.ca)])


def _answers_three(kafka_broker: Any, url: str, topics: dict[str, str], log: Path, extra: list[str]) -> None:
    """A consumer on ``url`` answers the three images on the request topic, and dead-letters none."""
    consumer = ConsumerProcess(kafka_broker.bootstrap_servers, url, topics, f"g-{log.stem}", log, extra).start()
    reader = TopicReader(kafka_broker.bootstrap_servers, topics["result"], topics["dead"])
    try:
        msgs = reader.read(lambda m: len(m[topics["result"]]) >= 3, timeout=240)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}\nthe consumer's log ends:\n{consumer.log()[-6000:]}") from None
    finally:
        reader.close()
        assert consumer.stop() == 0, consumer.log()
    assert {m["request_id"] for m in msgs[topics["result"]]} == {"img-0", "img-1", "img-2"}
    assert not msgs[topics["dead"]]


# -- HTTP ---------------------------------------------------------------------------------------------


def test_status_over_http(served_triton: LocalTriton) -> None:
    reports = {}
    for url in (served_triton.http_url, served_triton.grpc_url):
        r = run_cli("status", "--triton-url", url, "--metrics-url", served_triton.metrics_url, "--interval", "0",
                    "--json")
        assert r.returncode == 0, (url, r.stderr)
        reports[url] = json.loads(r.stdout)
    http, grpc = reports[served_triton.http_url], reports[served_triton.grpc_url]
    assert http["model_card"] == grpc["model_card"] and http["model_card"]["name"]
    assert [m["name"] for m in http["triton"]["models"]] == [m["name"] for m in grpc["triton"]["models"]]
    assert http["counters_source"] == grpc["counters_source"] == "metrics"


def test_status_over_http_sees_a_down_server(tmp_path: Path) -> None:
    from skinbatch.localstack.kafka import free_port

    r = run_cli("status", "--triton-url", f"http://127.0.0.1:{free_port()}", "--interval", "0")
    assert r.returncode == ExitCode.TRITON_DOWN, r.stderr


def test_triage_over_http_scores_as_over_grpc(served_triton: LocalTriton, images: Path, tmp_path: Path) -> None:
    scores = {}
    for name, url in (("http", served_triton.http_url), ("grpc", served_triton.grpc_url)):
        r = run_cli("triage", images, "--triton-url", url, "--out", tmp_path / name, "--json", "--no-progress")
        assert r.returncode == 0, (name, r.stderr)
        scores[name] = _triage_scores(tmp_path / name)
    assert scores["http"].keys() == scores["grpc"].keys() and len(scores["http"]) == 4
    for key, value in scores["grpc"].items():
        assert scores["http"][key] == pytest.approx(value, abs=1e-5)


def test_evaluate_over_http_gives_what_grpc_gives(served_triton: LocalTriton, images: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    rows = ["path,label"] + [f"{images / name},{label}" for name, label in
                             (("photo0.jpg", "malignant"), ("photo1.jpg", "benign"), ("photo2.jpg", "malignant"),
                              ("lesion.png", "benign"))]
    labels.write_text("\n".join(rows) + "\n")
    metrics = {}
    for name, url in (("http", served_triton.http_url), ("grpc", served_triton.grpc_url)):
        r = run_cli("evaluate", "--labels", labels, "--triton-url", url, "--out", tmp_path / name,
                    "--no-plots", "--bootstrap", "20", "--json", "--no-progress")
        assert r.returncode == 0, (name, r.stderr)
        metrics[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    http, grpc = metrics["http"], metrics["grpc"]
    tasks = {t["key"]: t for t in grpc["tasks"]}
    assert tasks and {t["key"] for t in http["tasks"]} == set(tasks)
    assert tasks["malignant_vs_benign"]["n_positive"] == 2 and tasks["malignant_vs_benign"]["n_negative"] == 2
    for task in http["tasks"]:
        want = tasks[task["key"]]
        assert (task["n_positive"], task["n_negative"]) == (want["n_positive"], want["n_negative"])
        assert task["auc"] == (None if want["auc"] is None else pytest.approx(want["auc"], abs=1e-6)), task["key"]
    assert http["three_way"]["accuracy"] == pytest.approx(grpc["three_way"]["accuracy"])
    assert http["three_way"]["matrix"] == grpc["three_way"]["matrix"]
    # Ranks alone (AUC, argmax) would not see scores scaled or shifted on one transport: compare each case.
    cases = {name: _case_scores(tmp_path / name / "scores.csv") for name in metrics}
    assert cases["http"].keys() == cases["grpc"].keys() and len(cases["grpc"]) == 4
    for case, want in cases["grpc"].items():
        assert cases["http"][case] == pytest.approx(want, abs=1e-5), case


def _case_scores(path: Path) -> dict[str, dict[str, float]]:
    """Every score column of evaluate's scores.csv, per case."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    numeric = [c for c in rows[0] if c == "malignancy" or c.split(":")[0] in ("task", "coarse", "fine")]
    return {Path(r["path"]).name: {c: float(r[c]) for c in numeric if r[c]} for r in rows}


def test_consume_over_http(kafka_broker: Any, served_triton: LocalTriton, tmp_path: Path) -> None:
    topics = unique_topics("http")
    kafka_broker.create_topics({topics["request"]: 1, topics["result"]: 1, topics["dead"]: 1})
    produce(kafka_broker.bootstrap_servers, topics["request"],
            [(f"img-{i}", synthetic_jpeg(500, 400, seed=i), []) for i in range(3)])
    _answers_three(kafka_broker, served_triton.http_url, topics, tmp_path / "http.log", [])


def test_requests_one_after_another_share_one_grpc_polling_thread(served_triton: LocalTriton) -> None:
    """gRPC Python ends a channel's polling thread with its last call in progress; the scorer's idle
    stream keeps it, so a request that waits for the one before starts no thread."""
    import queue

    import numpy as np

    from skinbatch.scoring import TritonScorer

    scorer = TritonScorer(served_triton.grpc_url)
    try:
        size = scorer.load_card().input_size
        answers: queue.Queue[Any] = queue.Queue()
        pollers = []
        for _ in range(4):
            scorer.infer_async(np.zeros((1, size, size, 3), np.uint8), lambda scores, error: answers.put(error))
            assert answers.get(timeout=60) is None
            time.sleep(0.2)  # without the stream, the polling thread has ended by now
            pollers.append({ident for ident, frame in sys._current_frames().items() if _runs(frame, "channel_spin")})
        assert len(pollers[0]) == 1 and all(p == pollers[0] for p in pollers), pollers
    finally:
        scorer.close()


def _runs(frame: Any, function: str) -> bool:
    while frame is not None:
        if frame.f_code.co_name == function:
            return True
        frame = frame.f_back
    return False
