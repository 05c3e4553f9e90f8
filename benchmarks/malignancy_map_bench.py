"""What ``MALIGNANCY_MAP`` costs: callers who do not ask for it, and callers who do.

    python benchmarks/malignancy_map_bench.py [--blocks 12] [--block-requests 32] [--concurrency 1,16]

Two ``cpu`` repositories are converted from the same seeded demo weights, one with the map in the graph
and one with ``--no-malignancy-map`` (the baseline), and served side by side by two real Tritons. One-image
requests ask for:

* ``baseline``: the four score outputs, from the repository without the map;
* ``map in graph, not asked``: the same four outputs, from the repository with the map;
* ``map asked``: the four outputs and ``MALIGNANCY_MAP``, from the repository with the map.

The three cases run in short blocks, in a new random order each time, so that a change in what else the
machine is doing hits all three alike; each block's rate is divided by the baseline's of the same
round, and the tables give the median of those ratios with their interquartile range. A second table
times the Inception ONNX alone in onnxruntime (batch 16, paired runs), which isolates the graph's own cost
from Triton and gRPC.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from skinbatch.contract import INCEPTION_STEP, SCORE_OUTPUTS, Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from triton_bench import run_level  # noqa: E402

SCORES = tuple(SCORE_OUTPUTS)
MAP = "MALIGNANCY_MAP"
CASES = (("baseline", "plain", SCORES), ("map in graph, not asked", "map", SCORES),
         ("map asked", "map", (*SCORES, MAP)))


def convert(target: Path, with_map: bool) -> Path:
    flags = [] if with_map else ["--no-malignancy-map"]
    subprocess.run([sys.executable, "-m", "skinbatch.cli", "convert", "--demo-weights", "--target", "cpu",
                    "--check-images", "2", "--repository", str(target), "--force", *flags],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return target


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, median, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else (values[0],) * 3
    return q1, median, q3


def measure(endpoints: dict[str, str], images: np.ndarray, levels: list[int], blocks: int, block_requests: int,
            seed: int = 0) -> dict[tuple[str, int], list[float]]:
    """Ratio to the baseline of the same round, per case and concurrency level."""
    order = random.Random(seed)
    ratios: dict[tuple[str, int], list[float]] = {}
    for _ in range(blocks):
        for level in levels:
            cases = list(CASES)
            order.shuffle(cases)
            rates = {name: run_level(endpoints[key], images, level, block_requests, outputs)["images_per_s"]
                     for name, key, outputs in cases}
            for name, _, _ in CASES:
                ratios.setdefault((name, level), []).append(rates[name] / rates["baseline"])
                ratios.setdefault((name + " (images/s)", level), []).append(rates[name])
    return ratios


def onnx_timing(repositories: dict[str, Path], images: np.ndarray, rounds: int) -> tuple[float, list[float]]:
    """Seconds per batch without the map (best), and the with/without ratio of each paired run."""
    import onnxruntime as ort

    sessions = {key: ort.InferenceSession(str(repo / INCEPTION_STEP / "1" / "model.onnx"),
                                          providers=["CPUExecutionProvider"]) for key, repo in repositories.items()}
    for session in sessions.values():  # first runs allocate
        session.run(None, {Tensor.IMAGE: images})
    best, ratios = float("inf"), []
    for r in range(rounds):
        took = {}
        for key in ("plain", "map") if r % 2 == 0 else ("map", "plain"):
            start = time.perf_counter()
            sessions[key].run(None, {Tensor.IMAGE: images})
            took[key] = time.perf_counter() - start
        best = min(best, took["plain"])
        ratios.append(took["map"] / took["plain"])
    return best, ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=12, help="rounds of the three cases per level")
    parser.add_argument("--block-requests", type=int, default=32, help="requests per case and round")
    parser.add_argument("--concurrency", default="1,16")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    images = np.random.default_rng(0).integers(0, 256, (16, 299, 299, 3), dtype=np.uint8)

    from skinbatch.serve import LocalTriton, TritonServerConfig

    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        root = Path(tmp)
        repos = {"map": convert(root / "with_map", True), "plain": convert(root / "without_map", False)}
        endpoints = {}
        for key, repo in repos.items():
            cfg = TritonServerConfig(repository=repo.resolve(), http_port=0, grpc_port=0, metrics_port=0,
                                     work_dir=root / f"triton-{key}")
            server = stack.enter_context(LocalTriton(cfg))
            endpoints[key] = server.grpc_endpoint
            run_level(server.grpc_endpoint, images, 4, 8, SCORES)  # warm-up
        ratios = measure(endpoints, images, levels, args.blocks, args.block_requests)
        stack.close()
        best, onnx_ratios = onnx_timing(repos, images, rounds=max(10, args.blocks))

    print(f"Triton ensemble, one image per request: {args.blocks} rounds of {args.block_requests} requests per "
          "case, cases in random order")
    print(f"{'case':<26} {'concurrency':>11} {'images/s':>9} {'vs baseline (median, IQR)':>27}")
    for level in levels:
        for name, _, _ in CASES:
            rate = statistics.median(ratios[(name + " (images/s)", level)])
            q1, median, q3 = quartiles(ratios[(name, level)])
            print(f"{name:<26} {level:>11} {rate:9.2f} {median:12.3f} ({q1:.3f}–{q3:.3f})")
    q1, median, q3 = quartiles(onnx_ratios)
    print()
    print(f"Inception ONNX alone, onnxruntime, batch {len(images)}: {best:.3f} s per batch without the map; "
          f"with it (both outputs) x{median:.3f} (IQR {q1:.3f}–{q3:.3f}, {len(onnx_ratios)} paired runs)")


if __name__ == "__main__":
    main()
