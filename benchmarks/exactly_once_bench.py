"""What ``consume --exactly-once`` costs: throughput and the consumer's CPU per message, with and without.

    python benchmarks/exactly_once_bench.py [--messages 600] [--rounds 2] [--model stand-in|inception-v3]

Against one real Kafka broker and the real local Triton, in one run: the same messages (1024x768 JPEGs)
consumed by ``skinbatch consume`` at least once (the default) and with ``--exactly-once``, alternating,
``--rounds`` times each. The result reader reads ``read_committed`` in both modes, so a result counts
once its transaction commits. Rates run from the first result to the last (start-up not counted); CPU
is the consumer's main process (Kafka client, transactions, gRPC, JSON, bookkeeping), per message, over
the same interval. Transactions are one per commit interval (``commit_interval_s``, 1 s): each holds the
answers of the done prefix of every partition the member owns.

The stand-in model (a cheap ONNX graph) makes the consumer's own cost visible; Inception-v3 shows what
remains of it when inference dominates.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from harness import build_standin_onnx, convert  # noqa: E402
from pipeline_bench import consumer_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", choices=["stand-in", "inception-v3"], default="stand-in")
    args = parser.parse_args()

    from skinbatch.localstack.kafka import KafkaBroker
    from skinbatch.samples import synthetic_jpeg
    from skinbatch.serve import LocalTriton, TritonServerConfig
    from skinbatch.taxonomy import default_taxonomy

    runs: dict[str, list[dict[str, float]]] = {"at least once": [], "exactly once": []}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        jpegs = [synthetic_jpeg(1024, 768, seed=s) for s in range(16)]
        values = [jpegs[i % 16] for i in range(args.messages)]
        if args.model == "stand-in":
            onnx = tmp / "standin.onnx"
            build_standin_onnx(onnx, len(default_taxonomy().training_classes))
            repo = convert(["--onnx", str(onnx), "--model-name", "standin"], tmp / "repo")
        else:
            repo = convert(["--demo-weights"], tmp / "repo")
        cfg = TritonServerConfig(repository=repo, http_port=0, grpc_port=0, metrics_port=0, work_dir=tmp / "triton")
        with KafkaBroker(work_dir=tmp / "kafka") as broker, LocalTriton(cfg) as triton:
            for round_ in range(args.rounds):
                for mode, extra in (("at least once", []), ("exactly once", ["--exactly-once"])):
                    run = consumer_run(broker, triton, values, ["--max-in-flight", "128", *extra,
                                                                "--transactional-id", f"bench-{round_}"], tmp,
                                       isolation_level="read_committed")
                    runs[mode].append({"rate": run["rate"], "cpu": run["cpu"]["consumer"],
                                       "kafka": run["cpu"]["kafka"]})
                    print(f"round {round_ + 1} {mode}: {run['rate']:.1f} msg/s, consumer "
                          f"{run['cpu']['consumer']:.2f} CPU ms/msg, broker {run['cpu']['kafka']:.2f}",
                          file=sys.stderr, flush=True)
    print(f"{args.model}, {args.messages} messages (1024x768 JPEG), {args.rounds} rounds, {os.cpu_count()} CPUs; "
          "median of the rounds")
    print(f"{'mode':14} {'msg/s':>7} {'consumer CPU ms/msg':>20} {'broker CPU ms/msg':>18}")
    for mode, rows in runs.items():
        print(f"{mode:14} {statistics.median(r['rate'] for r in rows):7.1f} "
              f"{statistics.median(r['cpu'] for r in rows):20.2f} {statistics.median(r['kafka'] for r in rows):18.2f}")


if __name__ == "__main__":
    main()
