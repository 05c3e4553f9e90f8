"""What the consumer's Kafka settings cost its process, in one run against a real broker.

    python benchmarks/kafka_client_bench.py [--messages 2400] [--rounds 2]

* **Fetch sizes.** 160 KB JPEG messages are consumed the way ``skinbatch consume`` takes them under a
  backlog: 64 held at a time and finished at a steady rate, every partition paused while 64 are held.
  The process's CPU per message with Kafka's default fetch sizes (1 MB a partition, 50 MB a fetch: the
  consumer's settings) against fetches sized for its largest message (32 MB a partition, the previous
  settings), and 256 KB.
* **Socket reads.** With Kafka's default fetch sizes, kafka-python's own socket reads (4 KiB a call)
  against the consumer's (256 KiB, ``skinbatch/connect/kafka_reads.py``).
* **Linger.** 3 KB results produced at a steady rate the way the consumer produces them (acks=all,
  idempotence, lz4), with ``linger_ms`` 5 (the previous setting) and 50 (the consumer's default).

Variants alternate, ``--rounds`` times each; CPU is the whole process's (every kafka-python thread).
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

FETCH = {
    "default 1 MB/partition": {"max_partition_fetch_bytes": 1 << 20, "fetch_max_bytes": 50 << 20},
    "largest message 32 MB": {"max_partition_fetch_bytes": (32 << 20) + 65536, "fetch_max_bytes": 50 << 20},
    "small 256 KB": {"max_partition_fetch_bytes": 256 << 10, "fetch_max_bytes": 1 << 20},
}


def library_reads(on: bool) -> None:
    """kafka-python's own 4 KiB socket reads (``on``), or the consumer's 256 KiB ones."""
    from kafka.net import transport

    from skinbatch.connect import kafka_reads

    if not hasattr(library_reads, "original"):
        library_reads.original = (transport.KafkaTCPTransport._sock_recv,  # type: ignore[attr-defined]
                                  transport.KafkaSSLTransport._sock_recv)
    tcp, tls = library_reads.original if on else (kafka_reads._tcp_recv, kafka_reads._ssl_recv)  # type: ignore[attr-defined]
    transport.KafkaTCPTransport._sock_recv, transport.KafkaSSLTransport._sock_recv = tcp, tls


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def consume(bootstrap: str, topic: str, partitions: int, n: int, sizes: dict[str, int], rate: float) -> float:
    """CPU ms per message, taking ``n`` records with at most 64 held, finished at ``rate`` a second."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", max_poll_records=64,
                             enable_incremental_fetch_sessions=False, **sizes)  # type: ignore[arg-type]
    consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
    held: collections.deque[float] = collections.deque()
    taken, paused, cpu0 = 0, False, None
    try:
        while taken < n or held:
            now = time.monotonic()
            while held and held[0] <= now:
                held.popleft()
            full = len(held) >= 64
            assignment = consumer.assignment()
            if full and not paused:
                consumer.pause(*assignment)
                paused = True
            elif not full and paused:
                consumer.resume(*assignment)
                paused = False
            if paused:
                time.sleep(0.01)
                continue
            for records in consumer.poll(timeout_ms=10).values():
                for _ in records:
                    taken += 1
                    if cpu0 is None:
                        cpu0 = cpu_s()
                    held.append(max(held[-1] if held else now, time.monotonic()) + 1 / rate)
        assert cpu0 is not None
        return (cpu_s() - cpu0) * 1000 / n
    finally:
        consumer.close()


def produce(bootstrap: str, topic: str, n: int, linger_ms: int, rate: float) -> float:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                             linger_ms=linger_ms, compression_type="lz4")
    try:
        producer.send(topic, b"warm-up").get(30)
        value = os.urandom(1500) + b'{"name": "melanoma", "probability": 0.1}' * 40
        cpu0 = cpu_s()
        for i in range(n):
            producer.send(topic, key=str(i).encode(), value=value)
            time.sleep(1 / rate)
        producer.flush()
        return (cpu_s() - cpu0) * 1000 / n
    finally:
        producer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2400)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=float, default=150.0, help="messages a second, as the consumer takes them")
    args = parser.parse_args()

    from kafka import KafkaProducer

    from skinbatch.localstack.kafka import KafkaBroker
    from skinbatch.samples import synthetic_jpeg

    results: dict[str, list[float]] = collections.defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp, KafkaBroker(work_dir=Path(tmp) / "kafka",
                                                         message_max_bytes=16 << 20) as broker:
        broker.create_topics({"requests": 6, "results": 1})
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=20, batch_size=1 << 20,
                                 max_request_size=16 << 20)
        jpegs = [synthetic_jpeg(1024, 768, seed=s) for s in range(16)]
        for i in range(args.messages):
            producer.send("requests", key=str(i).encode(), value=jpegs[i % 16] + i.to_bytes(4, "big"))
        producer.flush()
        producer.close()
        size_kb = sum(map(len, jpegs)) / len(jpegs) / 1024
        # Warm-up, not counted: connections, metadata, the broker's page cache. Reads: the consumer's,
        # except where a variant says otherwise.
        library_reads(False)
        consume(broker.bootstrap_servers, "requests", 6, min(args.messages, 600), FETCH["small 256 KB"], args.rate * 4)
        for _ in range(args.rounds):
            library_reads(False)
            for name, sizes in FETCH.items():
                results[f"fetch {name}"].append(consume(broker.bootstrap_servers, "requests", 6, args.messages,
                                                        sizes, args.rate))
            library_reads(True)
            results["fetch default, library's 4 KiB reads"].append(
                consume(broker.bootstrap_servers, "requests", 6, args.messages, FETCH["default 1 MB/partition"],
                        args.rate))
            library_reads(False)
            for linger in (5, 50):
                results[f"produce linger_ms {linger}"].append(
                    produce(broker.bootstrap_servers, "results", args.messages // 2, linger, args.rate))
            print({k: [round(v, 3) for v in vs] for k, vs in results.items()}, file=sys.stderr, flush=True)
    print(f"{args.messages} messages of {size_kb:.0f} KB at {args.rate:.0f}/s, {args.rounds} rounds; "
          "process CPU ms per message")
    base = {"fetch": min(results["fetch largest message 32 MB"]), "produce": min(results["produce linger_ms 5"])}
    print("  (fetch: the consumer's 256 KiB socket reads unless the line says otherwise)")
    for name, values in results.items():
        best = min(values)
        print(f"  {name:34} " + " ".join(f"{v:6.3f}" for v in values) +
              f"   best {best:6.3f}  x{best / base[name.split()[0]]:.2f}")



if __name__ == "__main__":
    main()
