"""The scoring pipeline against the machine's limit, in one run: triage and the consumer, both on it.

    python benchmarks/pipeline_bench.py [--images 600] [--models stand-in,inception-v3] [--memory-gb 4]

Per model (a cheap stand-in that makes the host's own cost visible, and the demo Inception-v3), on
1024x768 JPEGs, against a real Kafka broker and the real local Triton:

* D: decode and preprocess alone, in the pipeline's decode pool (all CPUs, workers writing into
  shared-memory slots), images/s;
* T: the model on Triton alone, driven directly with preprocessed frames, the better of two ways:
  batches of the model's maximum size from shared memory with 4 requests in flight (the pipeline's own
  best path), and single-image requests with the tensor in the request at 64 in flight, frames/s;
* the limit when both share the cores: 1 / (1/D + 1/T);
* triage (`skinbatch triage` on a folder; its loop's elapsed time, no start-up) and the consumer
  (`skinbatch consume` on messages published beforehand; first to last result, start-up reported
  apart), each as a ratio to the limit; consumer / triage; consumer / direct Triton;
* the consumer's main-process CPU ms per message (Kafka client, gRPC, JSON, bookkeeping);
* each gain on its own: the consumer without shared memory, without client-side batching, and with its
  results lingering 5 ms instead of 50 before they are produced, and with glibc's malloc defaults
  (``SKINBATCH_MALLOC=glibc``: every large buffer a fresh mmap); triage with onnxruntime's threads in
  Triton spinning between batches (``convert --cpu-spin``) instead of sleeping.

With --memory-gb, the consumer's process tree (main process and decode workers) is sampled for its peak
resident memory while it works through a backlog of that many GB of 12 MP photos (stand-in model).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from harness import build_standin_onnx, convert, cpu_snapshot  # noqa: E402


def distinct(jpeg: bytes, i: int) -> bytes:
    """The same picture with a JPEG comment naming ``i``: other bytes, so triage (which scores a content
    once) scores every copy, at the cost of the same decode."""
    text = f"skinbatch benchmark copy {i}".encode()
    return jpeg[:2] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + jpeg[2:]


# -- D: the decode pool alone -------------------------------------------------------------------------

def decode_rate(jpegs: list[bytes], preprocessing: dict[str, Any], n: int) -> float:
    from skinbatch.imaging import DecodeLimits
    from skinbatch.scoring.decoding import decode_task, decode_worker_init, limits_dict
    from skinbatch.scoring.slots import SharedSlots
    from skinbatch.scoring.workers import DecodePool

    size = int(preprocessing["size"])
    slots = SharedSlots(64, (size, size, 3))
    workers = os.cpu_count() or 1
    limits = limits_dict(DecodeLimits())
    try:
        with DecodePool(workers, decode_worker_init, (slots.name, (size, size, 3))) as pool:
            list(pool.map(decode_task, jpegs, [None] * len(jpegs), [preprocessing] * len(jpegs),
                          [limits] * len(jpegs), range(len(jpegs))))  # warm-up: imports, first decodes
            gate = threading.Semaphore(4 * workers)
            started = time.perf_counter()
            futures = []
            for i in range(n):
                gate.acquire()
                f = pool.submit(decode_task, jpegs[i % len(jpegs)], None, preprocessing, limits, i % 64)
                f.add_done_callback(lambda _f: gate.release())
                futures.append(f)
            for f in futures:
                assert f.result().ok
            return n / (time.perf_counter() - started)
    finally:
        slots.close()


# -- T: the model on Triton alone -------------------------------------------------------------------------

def triton_rate(url: str, frames: np.ndarray, n: int, *, batch: int, in_flight: int, shm: bool) -> float:
    from skinbatch.scoring import ShmInput, TritonScorer
    from skinbatch.scoring.slots import SharedSlots

    scorer = TritonScorer(url)
    scorer.load_card()
    slots = None
    if shm:
        slots = SharedSlots(batch * in_flight, frames.shape[1:])
        for i in range(slots.count):
            slots.array[i] = frames[i % len(frames)]
        scorer.transport.register_shm(slots.name, slots.key, slots.byte_size, 10)
    gate = threading.Semaphore(in_flight)
    done = threading.Event()
    left = [n]
    lock = threading.Lock()

    def callback(scores: Any, error: Any, k: int) -> None:
        gate.release()
        if error is not None:
            print(f"direct inference failed: {error}", file=sys.stderr)
            os._exit(1)
        with lock:
            left[0] -= k
            if left[0] <= 0:
                done.set()

    try:
        started = time.perf_counter()
        sent, request = 0, 0
        while sent < n:
            k = min(batch, n - sent)
            gate.acquire()
            if slots is not None:
                first = (request % in_flight) * batch
                images: Any = ShmInput(slots.name, slots.offset(first), (k, *frames.shape[1:]))
            else:
                images = np.stack([frames[(sent + j) % len(frames)] for j in range(k)])
            scorer.infer_async(images, lambda s, e, k=k: callback(s, e, k))
            sent += k
            request += 1
        done.wait()
        return n / (time.perf_counter() - started)
    finally:
        if slots is not None:
            from skinbatch.scoring.pipeline import unregister

            unregister(scorer.transport, slots.name)
            slots.close()
        scorer.close()


# -- triage and the consumer ---------------------------------------------------------------------------------

def triage_rate(folder: Path, url: str, out: Path) -> float:
    r = subprocess.run([sys.executable, "-m", "skinbatch.cli", "triage", str(folder), "--triton-url", url,
                        "--out", str(out), "--json", "--no-progress", "--decode-workers", str(os.cpu_count() or 1)],
                       capture_output=True, text=True, cwd=REPO_ROOT, timeout=3600)
    if r.returncode != 0:
        raise SystemExit(f"triage failed: {r.stderr[-2000:]}")
    summary = json.loads(r.stdout)
    return summary["frames_scored"] / summary["elapsed_s"]


def triage_with_triton_cpu(folder: Path, triton: Any, out: Path, n: int) -> dict[str, float]:
    """Triage's rate and Triton's CPU ms per image meanwhile."""
    from harness import children_of as _children, tree_cpu_seconds

    before = tree_cpu_seconds(triton.pid, _children())
    rate = triage_rate(folder, triton.grpc_url, out)
    return {"rate": rate, "triton_ms": (tree_cpu_seconds(triton.pid, _children()) - before) * 1000 / n}


def _tree_rss_mb(pid: int) -> float:
    from harness import children_of as _children

    children, total, stack = _children(), 0, [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
        stack.extend(children.get(p, []))
    return total / 1024


def consumer_run(broker: Any, triton: Any, values: list[bytes], extra: list[str], workdir: Path,
                 sample_memory: bool = False, env: dict[str, str] | None = None,
                 isolation_level: str = "read_uncommitted") -> dict[str, Any]:
    """Rate between the first and the last result, start-up (process start to first result), CPU ms/msg.
    ``env``: variables added to the consumer's environment; ``isolation_level``: the result reader's
    (``read_committed`` counts a result once its transaction commits, ``consume --exactly-once``)."""
    from kafka import KafkaConsumer, KafkaProducer

    tag = uuid.uuid4().hex[:6]
    req, res, dlq = f"p-{tag}-req", f"p-{tag}-res", f"p-{tag}-dlq"
    broker.create_topics({req: 6, res: 1, dlq: 1})
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all", linger_ms=20,
                             max_request_size=16 << 20, batch_size=1 << 20)
    for i, v in enumerate(values):
        producer.send(req, key=str(i).encode(), value=v)
    producer.flush()
    producer.close()
    others = {"triton": triton.pid, "kafka": broker.pid}
    log = open(workdir / f"consumer-{tag}.log", "wb")  # noqa: SIM115
    launched = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "skinbatch.consumer.cli", "--bootstrap-servers", broker.bootstrap_servers,
         "--triton-url", triton.grpc_url, "--request-topic", req, "--result-topic", res, "--dead-letter-topic", dlq,
         "--group-id", f"bench-{tag}", "--metrics-port", "0", "--log-level", "INFO", *extra],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env={**os.environ, **(env or {})})
    reader = KafkaConsumer(res, dlq, bootstrap_servers=broker.bootstrap_servers, group_id=None,
                           auto_offset_reset="earliest", isolation_level=isolation_level)
    seen, first, peak = 0, None, 0.0
    cpu0: dict[str, float] = {}
    deadline = time.monotonic() + 3600
    next_sample = 0.0
    try:
        while seen < len(values):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"consumer stalled at {seen}/{len(values)}; see {log.name}")
            if sample_memory and time.monotonic() >= next_sample:
                peak = max(peak, _tree_rss_mb(proc.pid))
                next_sample = time.monotonic() + 0.2
            for tp, records in reader.poll(timeout_ms=100).items():
                if tp.topic == dlq and records:
                    raise SystemExit(f"unexpected dead letter: {json.loads(records[0].value)['error']}")
                for _ in records:
                    seen += 1
                    if first is None:
                        first, cpu0 = time.perf_counter(), cpu_snapshot(proc.pid, others)
        last, cpu1 = time.perf_counter(), cpu_snapshot(proc.pid, others)
    finally:
        reader.close()
        proc.terminate()
        proc.wait(60)
        log.close()
    assert first is not None
    per_msg = {k: (cpu1[k] - cpu0[k]) * 1000 / (len(values) - 1) for k in cpu0}
    return {"rate": (len(values) - 1) / (last - first), "startup_s": first - launched, "cpu": per_msg,
            "peak_mb": peak}


# -- main ------------------------------------------------------------------------------------------------------

def bench_model(name: str, repo: Path, spin_repo: Path, n: int, jpegs: list[bytes], broker: Any,
                tmp: Path) -> dict[str, Any]:
    """``spin_repo``: the same model converted with ``--cpu-spin``."""
    from skinbatch.imaging import decode, preprocess
    from skinbatch.scoring import TritonScorer
    from skinbatch.serve import LocalTriton, TritonServerConfig

    folder = tmp / f"images-{name}"
    folder.mkdir()
    values = [distinct(jpegs[i % len(jpegs)], i) for i in range(n)]
    for i, value in enumerate(values):
        (folder / f"{i:05d}.jpg").write_bytes(value)
    cfg = TritonServerConfig(repository=repo, http_port=0, grpc_port=0, metrics_port=0, work_dir=tmp / f"triton-{name}")
    row: dict[str, Any] = {"model": name, "images": n}
    with LocalTriton(cfg) as triton:
        card = TritonScorer(triton.grpc_url).load_card()
        spec = card.preprocessing_spec()
        frames = np.stack([preprocess(decode(j, target=spec).arrays[0], spec) for j in jpegs])
        batch = card.max_batch_size
        row["max_batch"] = batch
        row["D"] = decode_rate(jpegs, spec.to_dict(), n)
        # Warm-up: onnxruntime settles its memory for each batch size it meets.
        for size in (1, 2, 4, 8, 16, batch):
            triton_rate(triton.grpc_url, frames, size * 2, batch=size, in_flight=2, shm=True)
        row["T_batched"] = triton_rate(triton.grpc_url, frames, n, batch=batch, in_flight=4, shm=True)
        row["T_single"] = triton_rate(triton.grpc_url, frames, n, batch=1, in_flight=64, shm=False)
        row["T"] = max(row["T_batched"], row["T_single"])
        row["limit"] = 1 / (1 / row["D"] + 1 / row["T"])
        measured = triage_with_triton_cpu(folder, triton, tmp / f"triage-{name}", n)
        row["triage"], row["triage_triton_ms"] = measured["rate"], measured["triton_ms"]
        consumer_run(broker, triton, values[: max(32, n // 8)], [], tmp)  # warm-up, not counted
        row["consumer"] = consumer_run(broker, triton, values, [], tmp)
        row["consumer_no_shm"] = consumer_run(broker, triton, values, ["--shared-memory", "off"], tmp)
        row["consumer_no_batching"] = consumer_run(broker, triton, values, ["--max-infer-batch", "1"], tmp)
        row["consumer_linger_5"] = consumer_run(broker, triton, values, ["--linger-ms", "5"], tmp)
        row["consumer_glibc_malloc"] = consumer_run(broker, triton, values, [], tmp, env={"SKINBATCH_MALLOC": "glibc"})
    spin_cfg = TritonServerConfig(repository=spin_repo, http_port=0, grpc_port=0, metrics_port=0,
                                  work_dir=tmp / f"triton-{name}-spin")
    with LocalTriton(spin_cfg) as triton:
        spun = triage_with_triton_cpu(folder, triton, tmp / f"triage-{name}-spin", n)
        row["triage_spin"], row["triage_spin_triton_ms"] = spun["rate"], spun["triton_ms"]
    return row


def memory_run(repo: Path, gb: float, broker: Any, tmp: Path) -> dict[str, Any]:
    from skinbatch.samples import synthetic_jpeg
    from skinbatch.serve import LocalTriton, TritonServerConfig

    photos = [synthetic_jpeg(4000, 3000, seed=s) for s in range(8)]
    count = int(gb * 2**30 / (sum(map(len, photos)) / len(photos)))
    cfg = TritonServerConfig(repository=repo, http_port=0, grpc_port=0, metrics_port=0, work_dir=tmp / "triton-mem")
    with LocalTriton(cfg) as triton:
        result = consumer_run(broker, triton, [photos[i % len(photos)] for i in range(count)], [], tmp,
                              sample_memory=True)
    return {"messages": count, "gb": round(count * sum(map(len, photos)) / len(photos) / 2**30, 2), **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=600, help="images per stand-in measurement")
    parser.add_argument("--inception-images", type=int, default=120, help="images per Inception measurement")
    parser.add_argument("--models", default="stand-in,inception-v3")
    parser.add_argument("--memory-gb", type=float, default=0.0, help="also the memory run, with this backlog")
    args = parser.parse_args()

    from skinbatch.localstack.kafka import KafkaBroker
    from skinbatch.samples import synthetic_jpeg
    from skinbatch.taxonomy import default_taxonomy

    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        jpegs = [synthetic_jpeg(1024, 768, seed=s) for s in range(16)]
        standin = tmp / "standin.onnx"
        build_standin_onnx(standin, len(default_taxonomy().training_classes))
        sources = {"stand-in": ["--onnx", str(standin), "--model-name", "standin"]}
        if "inception-v3" in args.models:
            sources["inception-v3"] = ["--demo-weights"]  # seeded: both conversions hold the same weights
        repos = {name: convert(src, tmp / f"repo-{name}") for name, src in sources.items()}
        spin_repos = {name: convert([*src, "--cpu-spin"], tmp / f"repo-{name}-spin") for name, src in sources.items()}
        with KafkaBroker(work_dir=tmp / "kafka", message_max_bytes=16 << 20) as broker:
            for name in args.models.split(","):
                n = args.images if name == "stand-in" else args.inception_images
                rows.append(bench_model(name, repos[name], spin_repos[name], n, jpegs, broker, tmp))
                print(json.dumps(rows[-1], default=float), file=sys.stderr, flush=True)
            memory = memory_run(repos["stand-in"], args.memory_gb, broker, tmp) if args.memory_gb else None
    print(f"1024x768 JPEGs, {os.cpu_count()} CPUs; rates in images/s")
    print(f"{'model':13} {'D':>7} {'T batch':>7} {'T 1/req':>8} {'limit':>7} {'triage':>7} {'/limit':>7} "
          f"{'consumer':>9} "
          f"{'/limit':>7} {'cons/tri':>8} {'cons/T':>7} {'startup s':>9} {'main ms/msg':>11}")
    for r in rows:
        c = r["consumer"]
        print(f"{r['model']:13} {r['D']:7.1f} {r['T_batched']:7.1f} {r['T_single']:8.1f} {r['limit']:7.1f} "
              f"{r['triage']:7.1f} "
              f"{r['triage'] / r['limit']:7.2f} {c['rate']:9.1f} {c['rate'] / r['limit']:7.2f} "
              f"{c['rate'] / r['triage']:8.2f} {c['rate'] / r['T']:7.2f} {c['startup_s']:9.1f} "
              f"{c['cpu']['consumer']:11.2f}")
    print()
    print("The consumer with each gain taken away (rate, ratio to the full consumer, main-process CPU ms/msg):")
    for r in rows:
        for key, label in (("consumer", "shared memory + batching"), ("consumer_no_shm", "no shared memory"),
                           ("consumer_no_batching", "no client-side batching"),
                           ("consumer_linger_5", "results lingering 5 ms"),
                           ("consumer_glibc_malloc", "glibc's malloc defaults")):
            c = r[key]
            print(f"  {r['model']:13} {label:26} {c['rate']:7.1f}/s  x{c['rate'] / r['consumer']['rate']:.2f}  "
                  f"{c['cpu']['consumer']:6.2f} ms")
    print()
    print("Triage with onnxruntime's threads sleeping between batches (the converter's default) and spinning "
          "(--cpu-spin): rate, ratio, Triton's CPU ms per image:")
    for r in rows:
        print(f"  {r['model']:13} sleeping {r['triage']:7.1f}/s  {r['triage_triton_ms']:5.2f} ms   spinning "
              f"{r['triage_spin']:7.1f}/s  {r['triage_spin_triton_ms']:5.2f} ms   sleeping/spinning "
              f"x{r['triage'] / r['triage_spin']:.2f}")
    print()
    print("CPU ms per message, by process (consumer = its main process):")
    for r in rows:
        for key in ("consumer", "consumer_no_shm", "consumer_no_batching", "consumer_linger_5",
                    "consumer_glibc_malloc"):
            cpu = r[key]["cpu"]
            processes = ("consumer", "decode", "triton", "kafka")
            print(f"  {r['model']:13} {key:21} " + " ".join(f"{p} {cpu[p]:6.2f}" for p in processes))
    if memory:
        print()
        print(f"Memory: {memory['messages']} messages of 12 MP JPEG ({memory['gb']} GB backlog): peak RSS of the "
              f"consumer's process tree {memory['peak_mb']:.0f} MB, at {memory['rate']:.1f} msg/s")


if __name__ == "__main__":
    main()
