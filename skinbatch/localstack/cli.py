"""``skinbatch localstack``: run the local Apache Kafka broker in the foreground.

Exit codes (skinbatch.contract.ExitCode): 0 after a clean stop (Ctrl-C or SIGTERM), 2 for bad arguments,
14 if Java or Maven is missing or the jars could not be fetched (KafkaSetupError, FhirValidatorSetupError),
15 if the broker did not start (KafkaStartError), 16 if it died on its own (KafkaBrokerDied). The commands
raise those errors; the ``skinbatch`` group prints them and exits with their codes (skinbatch.cli).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path
from types import FrameType

import click

from skinbatch.localstack.kafka import (
    DEFAULT_MESSAGE_MAX_BYTES,
    KafkaBroker,
    KafkaBrokerDied,
    ensure_kafka_jars,
    kafka_version,
)
from skinbatch.settings import CACHE_DIR, JSON, WORK_DIR


def _topic_list(value: str | None) -> list[str]:
    return [name.strip() for name in (value or "").split(",") if name.strip()]


@click.group("localstack", context_settings={"help_option_names": ["-h", "--help"]})
def localstack() -> None:
    """Local services for the demo and the tests: a real Apache Kafka broker, no Docker needed."""
    # Our own progress lines (the one-time Maven fetch) on stderr; kafka-python's INFO chatter stays off.
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("skinbatch.localstack").setLevel(logging.INFO)


@localstack.command("fetch")
@CACHE_DIR.option()
def fetch(cache_dir: Path | None) -> None:
    """Download the Kafka jars and the HAPI FHIR validator with Maven now (done on first use otherwise);
    print their folders."""
    from skinbatch.localstack.fhir_validator import ensure_fhir_validator

    click.echo(str(ensure_kafka_jars(cache_dir)))
    click.echo(str(ensure_fhir_validator(cache_dir)))


@localstack.command("kafka")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Client port on 127.0.0.1 (default: a free one).")
@click.option("--controller-port", type=click.IntRange(1, 65535), default=None,
              help="KRaft controller port (default: a free one).")
@click.option("--topics", default=None, metavar="A,B,...", help="Topics to create at start.")
@click.option("--partitions", type=click.IntRange(1, 10_000), default=1, show_default=True,
              help="Partitions of each topic in --topics, and of auto-created topics.")
@click.option("--message-max-bytes", type=click.IntRange(1024), default=DEFAULT_MESSAGE_MAX_BYTES,
              show_default=True, help="The broker's message.max.bytes.")
@WORK_DIR.option(help="Keep data and logs here (a temporary folder, deleted at exit, by default).")
@CACHE_DIR.option()
@JSON.option(help="Print one JSON line with the address and paths once ready (for scripts).")
def kafka(
    port: int | None,
    controller_port: int | None,
    topics: str | None,
    partitions: int,
    message_max_bytes: int,
    work_dir: Path | None,
    cache_dir: Path | None,
    as_json: bool,
) -> None:
    """Run one Apache Kafka broker (KRaft, broker+controller) until Ctrl-C or SIGTERM.

    The first run downloads the Kafka jars with Maven (about 45 MB). The broker log goes to a file
    in the work dir; its path is printed.
    """
    if port is not None and port == controller_port:
        raise click.BadParameter("must differ from --port", param_hint="--controller-port")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # Event.set takes a lock; setting it from another thread keeps a second signal from deadlocking.
        threading.Thread(target=stop.set, daemon=True).start()

    # Installed before the (slow) start, so a Ctrl-C during start-up also ends in a clean close().
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    broker = KafkaBroker(
        port,
        controller_port,
        message_max_bytes=message_max_bytes,
        num_partitions=partitions,
        work_dir=work_dir,
        cache_dir=cache_dir,
    )
    try:
        broker.start()  # KafkaSetupError (14) or KafkaStartError (15)
        names = _topic_list(topics)
        if names:
            broker.create_topics(names, partitions=partitions, exist_ok=True)
        if as_json:
            click.echo(json.dumps({
                "bootstrap_servers": broker.bootstrap_servers,
                "kafka_version": kafka_version(),
                "topics": _topic_list(topics),
                "work_dir": str(broker.work_dir),
                "log_file": str(broker.log_file),
                "pid": broker.pid,
            }), nl=True)  # fmt: skip
        else:
            click.echo(f"Apache Kafka {kafka_version()} ready at {broker.bootstrap_servers}")
            if names:
                click.echo(f"topics: {', '.join(names)} ({partitions} partition(s) each)")
            click.echo(f"log: {broker.log_file}")
            click.echo("Ctrl-C to stop.")
        while not stop.wait(1.0):
            if not broker.is_running():
                raise KafkaBrokerDied(f"The Kafka broker exited on its own.\n{broker.log_tail()}")
        click.echo("Stopping Kafka...", err=True)
    finally:
        broker.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
