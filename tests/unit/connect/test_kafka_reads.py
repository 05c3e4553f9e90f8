"""Larger socket reads for kafka-python (skinbatch.connect.kafka_reads), on a real socket pair.

The consumer's system tests (tests/system/test_kafka_interop.py, test_kafka_security.py) run every
Kafka exchange through the replaced reads, over plain TCP and SASL_SSL, against a real broker.
"""

from __future__ import annotations

import os
import socket
import threading
from types import SimpleNamespace

import kafka.errors
import pytest
from kafka.net import transport

from skinbatch.connect import kafka_reads


class _Counting:
    """The socket, counting the reads made on it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.reads = sock, 0

    def recv(self, n: int) -> bytes:
        self.reads += 1
        return self.sock.recv(n)


class _Transport:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = _Counting(sock)


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    yield a, b
    a.close()
    b.close()


def test_install_replaces_both_transports_reads_once() -> None:
    assert kafka_reads.install()
    assert kafka_reads.install()
    assert transport.KafkaTCPTransport._sock_recv is kafka_reads._tcp_recv
    assert transport.KafkaSSLTransport._sock_recv is kafka_reads._ssl_recv


def test_a_stream_larger_than_any_read_comes_whole_and_in_order(pair) -> None:
    ours, peer = pair
    data = os.urandom(3 << 20)
    sender = threading.Thread(target=peer.sendall, args=(data,))
    sender.start()
    received, reader = bytearray(), _Transport(ours)
    while len(received) < len(data):
        chunk, error = kafka_reads._tcp_recv(reader)
        assert error is None
        received += chunk
    sender.join()
    assert bytes(received) == data


def test_what_the_kernel_holds_comes_in_one_read(pair) -> None:
    ours, peer = pair
    data = os.urandom(150_000)  # fits a socket pair's buffer: all of it is there before we read
    sender = threading.Thread(target=peer.sendall, args=(data,))
    sender.start()
    sender.join(30)
    assert not sender.is_alive()
    reader = _Transport(ours)
    assert kafka_reads._tcp_recv(reader) == (data, None)
    assert reader._sock.reads == 1  # kafka-python's own loop: 4 KiB a read, 37 here


def test_nothing_waiting_is_no_data_and_no_error(pair) -> None:
    assert kafka_reads._tcp_recv(_Transport(pair[0])) == (b"", None)


def test_a_closed_peer_is_kafka_python_s_connection_error(pair) -> None:
    ours, peer = pair
    peer.sendall(b"last words")
    peer.close()
    chunks = []
    while True:
        chunk, error = kafka_reads._ssl_recv(_Transport(ours))  # reads on until end-of-file
        chunks.append(chunk)
        if error is not None:
            break
    assert b"".join(chunks) == b"last words"
    assert isinstance(error, kafka.errors.KafkaConnectionError)


class _Full:
    """A socket whose kernel buffer holds more than one read: full reads, a short one, then nothing."""

    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts

    def recv(self, n: int) -> bytes:
        if not self.parts:
            raise BlockingIOError
        return self.parts.pop(0)[:n]


def test_several_full_reads_in_one_call_come_back_joined_in_order() -> None:
    parts = [os.urandom(kafka_reads.CHUNK), os.urandom(kafka_reads.CHUNK), b"tail"]
    assert kafka_reads._tcp_recv(SimpleNamespace(_sock=_Full(list(parts)))) == (b"".join(parts), None)
