"""``skinbatch demo``: the main job on a local stack, start to finish.

A real Apache Kafka broker (jars from Maven Central) and the real Triton server (from nvidia-pytriton)
start on loopback ports; a demo model with random weights is converted into ``model_repository/`` if
none is there; pydicom's colour DICOM files and a few generated photographs are published; a consumer
scores them; a table of scores is printed; everything is shut down.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import click

from skinbatch.contract import DEAD_LETTER_TOPIC, REQUEST_TOPIC, RESULT_TOPIC
from skinbatch.modelcard import ModelCardError, load_model_card
from skinbatch.settings import JSON, REPOSITORY, Alias, lone

REQUEST, RESULT, DEAD = REQUEST_TOPIC, RESULT_TOPIC, DEAD_LETTER_TOPIC
WAIT_S = lone("wait_s", "Seconds to wait for every result.", 900.0, type=click.FloatRange(min=1), env=False)


def _say(text: str) -> None:
    click.echo(click.style("==> ", fg="cyan") + text, err=True)


def ensure_demo_repository(repository: Path) -> None:
    """Convert the untrained demo model for the CPU target unless a CPU repository is already there."""
    try:
        card = load_model_card(repository)
        if card.target == "cpu":
            _say(f"using the model repository in {repository} ({card.name} v{card.version}, "
                 f"{'trained' if card.trained else 'UNTRAINED'})")
            return
    except ModelCardError:
        pass
    _say(f"converting a demo Inception-v3 with random weights into {repository} (about a minute)")
    cmd = [sys.executable, "-m", "skinbatch.cli", "convert", "--demo-weights", "--target", "cpu",
           "--repository", str(repository), "--force"]
    if subprocess.run(cmd, check=False).returncode != 0:  # noqa: S603 - our own interpreter and command
        raise click.ClickException("the conversion failed; see the messages above")


def demo_requests(archive: Path) -> list[tuple[str, bytes, list[tuple[str, bytes]]]]:
    """(request id, value, headers): pydicom's colour DICOM files, generated photos, one reference, one bad file."""
    from skinbatch.samples import pydicom_colour_files, synthetic_jpeg, synthetic_png

    items: list[tuple[str, bytes, list[tuple[str, bytes]]]] = [
        (f"pydicom/{p.name}", p.read_bytes(), []) for p in pydicom_colour_files()]
    items += [(f"photo-{i}.jpg", synthetic_jpeg(2000 + 400 * i, 1500 + 300 * i, seed=i), []) for i in range(3)]
    items.append(("photo-3.png", synthetic_png(800, 600, seed=3), []))
    (archive / "photo-4.jpg").write_bytes(synthetic_jpeg(1600, 1200, seed=4))
    items.append(("photo-4.jpg (by reference)", b'{"uri": "photo-4.jpg"}', []))
    items.append(("not-an-image.bin", b"this is not an image", []))
    return [(rid, value, [("request-id", rid.encode()), *headers]) for rid, value, headers in items]


def _table(results: list[dict[str, Any]], dead: list[dict[str, Any]], trained: bool) -> str:
    lines = [f"{'request':46} {'format':7} {'frame':>5} {'P(malignant)':>12}  most likely (first level)"]
    for r in sorted(results, key=lambda r: -r["malignancy"]):
        coarse = max(r["coarse"].items(), key=lambda kv: kv[1])
        frame = f"{r['input']['frame']}/{r['input']['frames']}"
        lines.append(f"{r['request_id'][:46]:46} {r['input']['format']:7} {frame:>5} {r['malignancy']:12.4f}  "
                     f"{coarse[0]} ({coarse[1]:.3f})")
    for d in dead:
        lines.append(f"{d['request_id'][:46]:46} {'-':7} {'':>5} {'rejected':>12}  {d['error']['type']}")
    if not trained:
        lines.append("")
        lines.append("UNTRAINED demo model (random weights): these scores are meaningless and not for clinical use.")
    return "\n".join(lines)


@click.command()
@REPOSITORY.option(default=Path("model_repository"),
                   help="Model repository; a demo model is converted into it if it has none.")
@WAIT_S.option(aliases=(Alias("--timeout"),))
@JSON.option(help="Print the results as JSON lines instead of a table.")
@click.option("--protocol", type=click.Choice(["grpc", "http"]), default="grpc", show_default=True,
              help="How the consumer talks to the local Triton (the URL goes through the same parser as "
                   "every command's --triton-url).")
def demo(repository: Path, wait_s: float, as_json: bool, protocol: str) -> None:
    """Run the whole job on a local Kafka and a local Triton: sample images in, scores out."""
    from kafka import KafkaProducer

    from skinbatch.consumer.cli import build_consumer
    from skinbatch.consumer.config import ConsumerConfig
    from skinbatch.localstack.kafka import KafkaBroker
    from skinbatch.logs import configure_logging
    from skinbatch.serve import LocalTriton, TritonServerConfig

    configure_logging("WARNING")
    logging.getLogger("kafka").setLevel(logging.ERROR)  # a fresh broker's leader elections are expected here
    ensure_demo_repository(repository)
    with tempfile.TemporaryDirectory(prefix="skinbatch-demo-") as tmp:
        work = Path(tmp)
        archive = work / "archive"
        archive.mkdir()
        _say("starting Apache Kafka (local broker)")
        with KafkaBroker() as broker:
            broker.create_topics({REQUEST: 3, RESULT: 1, DEAD: 1})
            _say("starting Triton (CPU, python backend)")
            triton_cfg = TritonServerConfig(repository=repository.resolve(), http_port=0, grpc_port=0,
                                            metrics_port=0, work_dir=work / "triton")
            with LocalTriton(triton_cfg) as triton:
                requests = demo_requests(archive)
                producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all",
                                         max_request_size=16 << 20)
                for rid, value, headers in requests:
                    producer.send(REQUEST, value=value, headers=headers)
                producer.flush()
                producer.close()
                _say(f"published {len(requests)} requests; consuming with `skinbatch consume`")
                config = ConsumerConfig.from_values(
                    bootstrap_servers=broker.bootstrap_servers,
                    triton_url=triton.grpc_url if protocol == "grpc" else triton.http_url,
                    request_topic=REQUEST, result_topic=RESULT, dead_letter_topic=DEAD,
                    group_id="skinbatch-demo", archive_root=str(archive), metrics_port=None)
                config.validate()
                service = build_consumer(config)
                runner = threading.Thread(target=service.run, name="consumer", daemon=True)
                runner.start()
                results, dead = _collect(broker.bootstrap_servers, {rid for rid, _, _ in requests}, wait_s)
                service.stop()
                runner.join(60)
                trained = bool(results and results[0]["model"]["trained"])
        _say("stopped Triton and Kafka")
    if as_json:
        for msg in results + dead:
            click.echo(json.dumps(msg))
    else:
        click.echo(_table(results, dead, trained))


def _collect(
    bootstrap: str, request_ids: set[str], timeout: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read results and dead letters until every request has an answer (all frames of multi-frame files)."""
    from kafka import KafkaConsumer

    # read_committed: a consumer with --exactly-once shows its answers once their transaction commits.
    reader = KafkaConsumer(RESULT, DEAD, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                           enable_auto_commit=False, isolation_level="read_committed")
    results: dict[str, dict[str, Any]] = {}
    dead: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for tp, records in reader.poll(timeout_ms=500).items():
                for r in records:
                    msg = json.loads(r.value)
                    (results if tp.topic == RESULT else dead)[msg["request_id"]] = msg
            answered = set(dead) | {_base_id(m) for m in results.values() if _complete(m, results)}
            if answered >= request_ids:
                return list(results.values()), list(dead.values())
    finally:
        reader.close()
    raise click.ClickException(f"only {len(results)} results and {len(dead)} dead letters after {timeout:.0f} s")


def _base_id(msg: dict[str, Any]) -> str:
    frames = msg["input"]["frames"]
    return msg["request_id"] if frames == 1 else msg["request_id"].rsplit(":", 1)[0]


def _complete(msg: dict[str, Any], results: dict[str, dict[str, Any]]) -> bool:
    frames = msg["input"]["frames"]
    if frames == 1:
        return True
    base = _base_id(msg)
    return all(f"{base}:{n}" in results for n in range(1, frames + 1))
