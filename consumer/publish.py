"""``skinbatch publish``: send image files, or references to them, to the request topic."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from skinbatch.connect.kafka import COMPRESSION_TYPE, KafkaConnection, probe_kafka
from skinbatch.connect.options import kafka_options
from skinbatch.contract import EXIT_CODE_EPILOG, ExitCode
from skinbatch.settings import ARCHIVE_ROOT, JSON, Alias, PipelineSettings, Topics, options

REQUEST_OVERHEAD_BYTES = 64 * 1024
"""Room in a produce request for the record's key, headers and framing beside an image of the limit."""


def iter_files(paths: list[Path]) -> Iterator[Path]:
    """Files as given, and folders walked recursively in a stable order (hidden files skipped)."""
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                hidden = any(part.startswith(".") for part in child.relative_to(path).parts)
                # A DICOMDIR is an index of the folder, not an image.
                if child.is_file() and not hidden and child.name.upper() != "DICOMDIR":
                    yield child
        else:
            yield path


@click.command(epilog=EXIT_CODE_EPILOG)
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@kafka_options()
@options(Topics, only=("request_topic",), request_topic={"aliases": (Alias("--topic"),)})
@COMPRESSION_TYPE.option(
    default="none", help="Codec of the request records. JPEG and compressed DICOM do not shrink, so none by default; "
                   "uncompressed DICOM halves with lz4 or zstd. The consumer reads every codec.")
@click.option("--by-reference", is_flag=True, help="Send {\"uri\": ...} references instead of the bytes.")
@ARCHIVE_ROOT.option(help="With --by-reference: references are made relative to this folder (the consumer's "
                          "--archive-root).")
@click.option("--key", "key_mode", type=click.Choice(["none", "sha256", "counter"]), default="none", show_default=True,
              help="Message key (the request id unless a header sets one). 'none' lets the consumer derive it "
                   "from the DICOM SOP Instance UID or the content hash. File names are never used: they may "
                   "contain patient data.")
@options(PipelineSettings, only=("max_image_bytes",), max_image_bytes={
    "help": "Largest image sent inline, in bytes: the consumer's limit, so that nothing is sent that it would "
            "refuse; larger files are reported, not sent (send them --by-reference). The broker's own "
            "message.max.bytes also applies.", "aliases": (Alias("--max-request-bytes"),)})
@JSON.option(help="Print a machine-readable summary.")
def publish(paths: tuple[Path, ...], kafka: KafkaConnection, request_topic: str, compression_type: str,
            by_reference: bool, archive_root: str | None, key_mode: str, max_image_bytes: int, as_json: bool) -> None:
    """Send image files and folders (DICOM, JPEG, PNG) as scoring requests.

    Exit code 0 when every file was acknowledged by the broker, 3 when some were refused (for
    example over the broker's size limit: send those --by-reference), 2 on bad usage, 6, 12 or 13
    when Kafka refused the connection, the credentials or the TLS handshake.
    """
    from kafka import KafkaProducer

    if by_reference and archive_root is None:
        raise click.UsageError("--by-reference needs --archive-root, the folder the consumer resolves references under")
    root = Path(archive_root).resolve() if archive_root else None
    probe_kafka(kafka)  # KafkaProblem: 6, 12 or 13
    # Not idempotent: kafka-python 3.0's idempotent producer stays failed after one message the broker
    # refuses as too large, and here one oversized file must not stop the rest. A retried send may
    # duplicate a request, which the consumer's at-least-once contract already allows.
    producer = KafkaProducer(acks="all", enable_idempotence=False, linger_ms=10,
                             max_request_size=max_image_bytes + REQUEST_OVERHEAD_BYTES,
                             client_id="skinbatch-publish",
                             compression_type=None if compression_type == "none" else compression_type,
                             **kafka.client_kwargs())
    sent, failed = 0, []
    pending = []
    for n, path in enumerate(iter_files(list(paths))):
        headers: list[tuple[str, bytes]] = []
        if by_reference:
            assert root is not None
            try:
                rel = path.resolve().relative_to(root)
            except ValueError:
                failed.append({"file": str(path), "error": "outside --archive-root"})
                continue
            value = json.dumps({"uri": rel.as_posix()}).encode()
            headers.append(("content-type", b"application/vnd.skinbatch.reference+json"))
        else:
            size = path.stat().st_size
            if size > max_image_bytes:
                failed.append({"file": str(path), "error": f"{size} bytes, over --max-image-bytes {max_image_bytes} "
                               "(the consumer would refuse it as too_large); send it --by-reference"})
                continue
            value = path.read_bytes()
        key = None
        if key_mode == "sha256":
            key = hashlib.sha256(path.read_bytes() if by_reference else value).hexdigest().encode()
        elif key_mode == "counter":
            key = str(n).encode()
        try:
            pending.append((path, producer.send(request_topic, value=value, key=key, headers=headers or None)))
        except Exception as exc:  # noqa: BLE001 - reported per file below
            failed.append({"file": str(path), "error": _explain(exc)})
    for path, future in pending:
        try:
            future.get(timeout=60)
            sent += 1
        except Exception as exc:  # noqa: BLE001
            failed.append({"file": str(path), "error": _explain(exc)})
    producer.close(timeout=10)
    summary = {"topic": request_topic, "sent": sent, "failed": failed}
    if as_json:
        json.dump(summary, sys.stdout)
        click.echo()
    else:
        click.echo(f"sent {sent} request(s) to {request_topic}")
        for f in failed:
            click.echo(f"  not sent: {f['file']}: {f['error']}", err=True)
    sys.exit(int(ExitCode.PARTIAL if failed else ExitCode.OK))


def _explain(exc: Exception) -> str:
    name = type(exc).__name__
    if "TooLarge" in name:
        return (f"{name}: the message is over the broker's (or this client's) size limit; "
                "publish it --by-reference, or raise max.message.bytes on the topic")
    return f"{name}: {exc}"
