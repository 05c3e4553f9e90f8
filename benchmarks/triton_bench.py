"""Ensemble throughput and Triton's average batch size against client concurrency, on the CPU server.

    python benchmarks/triton_bench.py [--repository DIR] [--requests 96] [--concurrency 1,4,16,64]

Each request carries one image (as the consumer sends them), so every batch above 1 was formed by
Triton's dynamic batcher. The baseline is concurrency 1: the ratio column is throughput ÷ that.
Without --repository, an untrained demo model is converted into a temporary folder first.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from skinbatch.contract import ENSEMBLE, INCEPTION_STEP, Tensor


def convert_demo(target_dir: Path) -> Path:
    repo = target_dir / "model_repository"
    subprocess.run([sys.executable, "-m", "skinbatch.cli", "convert", "--demo-weights", "--target", "cpu",
                    "--repository", str(repo), "--force"], check=True, stdout=subprocess.DEVNULL)
    return repo


def inception_counts(client: object) -> tuple[int, int]:
    stats = client.get_inference_statistics(INCEPTION_STEP, as_json=True)  # type: ignore[attr-defined]
    model = stats["model_stats"][0]
    return int(model.get("inference_count", 0)), int(model.get("execution_count", 0))


def run_level(endpoint: str, images: np.ndarray, concurrency: int, requests: int,
              outputs: tuple[str, ...] = (Tensor.MALIGNANCY,)) -> dict[str, float]:
    """``requests`` one-image requests, at most ``concurrency`` in flight, each asking for ``outputs``."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(endpoint)
    slots = threading.Semaphore(concurrency)
    done = threading.Event()
    remaining = [requests]
    errors: list[str] = []
    lock = threading.Lock()

    def callback(result: object = None, error: object = None) -> None:
        if error is not None:
            errors.append(str(error))
        slots.release()
        with lock:
            remaining[0] -= 1
            if remaining[0] == 0:
                done.set()

    count0, exec0 = inception_counts(client)
    start = time.perf_counter()
    for i in range(requests):
        slots.acquire()
        inp = grpcclient.InferInput(Tensor.IMAGE, [1, *images.shape[1:]], "UINT8")
        inp.set_data_from_numpy(images[i % len(images)][None])
        client.async_infer(ENSEMBLE, [inp], callback,
                           outputs=[grpcclient.InferRequestedOutput(name) for name in outputs])
    done.wait()
    elapsed = time.perf_counter() - start
    count1, exec1 = inception_counts(client)
    client.close()
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, e.g. {errors[0]}")
    return {"concurrency": concurrency, "images_per_s": requests / elapsed,
            "avg_batch": (count1 - count0) / max(1, exec1 - exec0), "seconds": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, help="a cpu-target repository (default: convert a demo model)")
    parser.add_argument("--requests", type=int, default=96, help="requests per concurrency level")
    parser.add_argument("--concurrency", default="1,4,16,64", help="comma-separated client concurrency levels")
    args = parser.parse_args()

    from skinbatch.serve import LocalTriton, TritonServerConfig

    levels = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        repo = args.repository or convert_demo(Path(tmp))
        cfg = TritonServerConfig(repository=repo.resolve(), http_port=0, grpc_port=0, metrics_port=0,
                                 work_dir=Path(tmp) / "triton")
        images = np.random.default_rng(0).integers(0, 256, (8, 299, 299, 3), dtype=np.uint8)
        with LocalTriton(cfg) as server:
            run_level(server.grpc_endpoint, images, 4, 8)  # warm-up
            rows = [run_level(server.grpc_endpoint, images, c, args.requests) for c in levels]
    base = rows[0]["images_per_s"]
    print(f"{'concurrency':>11} {'images/s':>9} {'ratio':>6} {'avg batch':>9}")
    for r in rows:
        print(f"{r['concurrency']:>11} {r['images_per_s']:9.1f} {r['images_per_s'] / base:6.2f} {r['avg_batch']:9.2f}")


if __name__ == "__main__":
    main()
