"""Larger socket reads for kafka-python 3.0: the consumer's fetch path reads 256 KiB a call, not 4 KiB.

kafka-python 3.0's transports read a socket 4 KiB at a time, in a Python loop, then join the pieces:
a 1 MB fetch response is 256 reads and a copy. For 160 KB photos that is a third of the client's CPU
(``benchmarks/kafka_client_bench.py``: 0.30-0.37 ms a message, 0.20-0.29 with this). :func:`install`
replaces the two transports' ``_sock_recv`` with the same loop and the same errors, reading
:data:`CHUNK` bytes a call; a plain-TCP read that comes back short has drained the socket, so the loop
stops there instead of asking once more for an ``EAGAIN``.

It changes nothing else, and only for the kafka-python versions it was written against (3.0.x, whose
loop it copies); on any other it leaves kafka-python alone and says so in the log.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

log = logging.getLogger("skinbatch.kafka")

CHUNK = 256 << 10
SUPPORTED = ("3.0.",)
"""kafka-python versions whose ``_sock_recv`` this replaces (the same loop, with a larger read)."""

_installed = False


def install() -> bool:
    """Replace the transports' socket reads (once per process). False when kafka-python is another version."""
    global _installed
    if _installed:
        return True
    import kafka

    try:
        from kafka.net import transport
    except ImportError:
        transport = None
    version = getattr(kafka, "__version__", "?")
    if (transport is None or not version.startswith(SUPPORTED)
            or not hasattr(transport.KafkaTCPTransport, "_sock_recv")
            or not hasattr(transport.KafkaSSLTransport, "_sock_recv")):
        log.info("kafka-python %s: leaving its socket reads as they are (written for %s)", version,
                 ", ".join(v + "x" for v in SUPPORTED), extra={"event": "kafka_reads"})
        return False
    transport.KafkaTCPTransport._sock_recv = _tcp_recv
    transport.KafkaSSLTransport._sock_recv = _ssl_recv
    _installed = True
    return True


def _tcp_recv(self: Any) -> tuple[bytes, Exception | None]:
    return _recv(self, (BlockingIOError, InterruptedError), drained_on_short_read=True)


def _ssl_recv(self: Any) -> tuple[bytes, Exception | None]:
    # One TLS record (16 KiB at most) a read: a short read says nothing about the socket.
    return _recv(self, (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError),
                 drained_on_short_read=False)


def _recv(transport: Any, would_block: tuple[type[BaseException], ...], *,
          drained_on_short_read: bool) -> tuple[bytes, Exception | None]:
    """kafka-python 3.0's ``_sock_recv``: what the socket holds now, and the error that ends the connection."""
    import kafka.errors as errors

    chunks: list[bytes] = []
    error: Exception | None = None
    while True:
        try:
            data = transport._sock.recv(CHUNK)
        except would_block:
            break
        except BaseException as exc:  # noqa: BLE001 - as kafka-python: any failure closes the connection
            logging.getLogger("kafka.net.transport").exception(
                "%s: Error receiving network data closing socket", transport)
            error = errors.KafkaConnectionError(exc)
            break
        if not data:
            logging.getLogger("kafka.net.transport").error("%s: socket disconnected", transport)
            error = errors.KafkaConnectionError("socket disconnected")
            break
        chunks.append(data)
        if drained_on_short_read and len(data) < CHUNK:
            break
    return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), error


__all__ = ["CHUNK", "install"]
