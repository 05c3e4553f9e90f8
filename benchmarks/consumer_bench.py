"""End-to-end consumer throughput through real Kafka and Triton, against Triton driven directly.

    python benchmarks/consumer_bench.py [--messages 240] [--standin-messages 1200] [--concurrency 64]

For each model (a cheap stand-in that makes the consumer's own overhead visible, and the Inception-v3
demo model) it measures, in one run:

* direct:    the same Triton model driven by a gRPC client at the same concurrency, with images already
             preprocessed (the ceiling: no Kafka, no decoding);
* inline:    `skinbatch consume` on messages that carry the JPEG bytes;
* reference: the same images sent as {"uri": ...} references under --archive-root.

Ratios are consumer ÷ direct. "CPU ms/msg" is the consumer's main process CPU time per message: Kafka
I/O, bookkeeping, gRPC and JSON, i.e. everything outside decoding (worker processes) and inference
(Triton). Messages are published before the consumer starts; its rate is taken between the first and
the last result, so start-up is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from harness import build_standin_onnx, convert  # noqa: E402


def direct_rate(endpoint: str, images: np.ndarray, concurrency: int, n: int) -> float:
    from skinbatch.scoring import TritonScorer

    scorer = TritonScorer(endpoint)
    scorer.load_card()
    slots = threading.Semaphore(concurrency)
    done = threading.Event()
    left = [n]
    lock = threading.Lock()

    def cb(scores: object, error: object) -> None:
        slots.release()
        if error is not None:
            raise SystemExit(f"direct inference failed: {error}")
        with lock:
            left[0] -= 1
            if left[0] == 0:
                done.set()

    start = time.perf_counter()
    for i in range(n):
        slots.acquire()
        scorer.infer_async(images[i % len(images)][None], cb)
    done.wait()
    rate = n / (time.perf_counter() - start)
    scorer.close()
    return rate


def consumer_rate(broker: object, triton: object, values: list[bytes], archive: Path,
                  concurrency: int, workdir: Path) -> tuple[float, dict[str, float]]:
    """Messages per second between the first and the last result, and CPU ms per message by component."""
    from pipeline_bench import consumer_run  # one consumer harness for both scripts

    run = consumer_run(broker, triton, values, ["--archive-root", str(archive), "--max-in-flight",
                                                str(2 * concurrency), "--max-infer-in-flight", str(concurrency)],
                       workdir)
    return run["rate"], run["cpu"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=240, help="messages per Inception run")
    parser.add_argument("--standin-messages", type=int, default=1200, help="messages per stand-in run")
    parser.add_argument("--concurrency", type=int, default=64, help="images in flight to Triton (both paths)")
    parser.add_argument("--image-size", default="1024x768", help="JPEG size WxH")
    parser.add_argument("--models", default="stand-in,inception-v3", help="which models to run, comma-separated")
    args = parser.parse_args()

    from skinbatch.imaging import decode, preprocess
    from skinbatch.localstack.kafka import KafkaBroker
    from skinbatch.samples import synthetic_jpeg
    from skinbatch.serve import LocalTriton, TritonServerConfig
    from skinbatch.taxonomy import default_taxonomy

    width, height = (int(v) for v in args.image_size.split("x"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        archive = tmp / "archive"
        archive.mkdir()
        jpegs = [synthetic_jpeg(width, height, seed=s) for s in range(16)]
        for i, data in enumerate(jpegs):
            (archive / f"{i}.jpg").write_bytes(data)
        standin = tmp / "standin.onnx"
        build_standin_onnx(standin, len(default_taxonomy().training_classes))
        wanted = args.models.split(",")
        unknown = set(wanted) - {"stand-in", "inception-v3"}
        if unknown:
            parser.error(f"unknown model(s) {sorted(unknown)}; choose from stand-in, inception-v3")
        repos = {}
        if "stand-in" in wanted:
            repos["stand-in"] = (convert(["--onnx", str(standin), "--model-name", "standin"], tmp / "repo-standin"),
                                 args.standin_messages)
        if "inception-v3" in wanted:
            repos["inception-v3"] = (convert(["--demo-weights"], tmp / "repo-inception"), args.messages)
        with KafkaBroker(work_dir=tmp / "kafka") as broker:
            for name, (repo, n) in repos.items():
                cfg = TritonServerConfig(repository=repo, http_port=0, grpc_port=0, metrics_port=0,
                                         work_dir=tmp / f"triton-{name}")
                with LocalTriton(cfg) as triton:
                    from skinbatch.scoring import TritonScorer

                    spec = TritonScorer(triton.grpc_endpoint).load_card().preprocessing_spec()
                    images = np.stack([preprocess(decode(j, target=spec).arrays[0], spec) for j in jpegs])
                    direct_rate(triton.grpc_endpoint, images, args.concurrency, min(n, 64))  # warm-up
                    direct = direct_rate(triton.grpc_endpoint, images, args.concurrency, n)
                    inline, cpu_inline = consumer_rate(broker, triton,
                                                       [jpegs[i % 16] for i in range(n)], archive,
                                                       args.concurrency, tmp)
                    refs = [json.dumps({"uri": f"{i % 16}.jpg"}).encode() for i in range(n)]
                    by_ref, cpu_ref = consumer_rate(broker, triton, refs, archive,
                                                    args.concurrency, tmp)
                rows.append((name, n, direct, inline, by_ref, cpu_inline, cpu_ref))
                print(f"{name}: direct {direct:.1f}/s, inline {inline:.1f}/s, reference {by_ref:.1f}/s",
                      file=sys.stderr, flush=True)
    print(f"JPEG {width}x{height}, concurrency {args.concurrency}, {os.cpu_count()} CPUs")
    print(f"{'model':13} {'msgs':>5} {'direct/s':>9} {'inline/s':>9} {'ratio':>6} {'ref/s':>8} {'ratio':>6} "
          f"{'CPU ms/msg inline':>17} {'ref':>6}")
    for name, n, direct, inline, by_ref, cpu_inline, cpu_ref in rows:
        print(f"{name:13} {n:5d} {direct:9.1f} {inline:9.1f} {inline / direct:6.2f} {by_ref:8.1f} "
              f"{by_ref / direct:6.2f} {cpu_inline['consumer']:17.2f} {cpu_ref['consumer']:6.2f}")
    print()
    print("CPU ms per message, by process (first to last result; 'consumer' is its main process)")
    parts = ["consumer", "decode", "triton", "kafka"]
    print(f"{'model':13} {'payload':9} " + " ".join(f"{p:>9}" for p in parts) + f" {'total':>9}")
    for name, _n, _d, _i, _r, cpu_inline, cpu_ref in rows:
        for payload, cpu in (("inline", cpu_inline), ("reference", cpu_ref)):
            print(f"{name:13} {payload:9} " + " ".join(f"{cpu[p]:9.2f}" for p in parts)
                  + f" {sum(cpu[p] for p in parts):9.2f}")


if __name__ == "__main__":
    main()
