"""What a decode pool costs the process that feeds it: ProcessPoolExecutor against skinbatch's DecodePool.

    python benchmarks/decode_pool_bench.py [--tasks 2000] [--rounds 2]

Two spawned workers, each task 2 ms of work (a stand-in for a decode), 16 in flight, with a 160 KB
payload (a 1024x768 JPEG's size) and with none. Reported: the parent's CPU ms per task (every thread:
the standard pool's manager and queue feeder threads; DecodePool's reader thread) and tasks/s. The pools
alternate, ``--rounds`` times each.
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import sys
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def work(payload: bytes, i: int) -> int:
    until = time.perf_counter() + 0.002
    while time.perf_counter() < until:
        pass
    return i


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(pool: Executor, tasks: int, size: int) -> tuple[float, float]:
    """Parent CPU ms per task, tasks/s."""
    payload = os.urandom(size)
    gate = threading.Semaphore(16)
    cpu0, started = cpu_s(), time.perf_counter()
    futures = []
    for i in range(tasks):
        gate.acquire()
        future = pool.submit(work, payload, i)
        future.add_done_callback(lambda _f: gate.release())
        futures.append(future)
    assert [f.result() for f in futures] == list(range(tasks))
    return (cpu_s() - cpu0) * 1000 / tasks, tasks / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from skinbatch.scoring.workers import DecodePool

    pools = {"ProcessPoolExecutor": lambda: ProcessPoolExecutor(2, mp_context=get_context("spawn")),
             "DecodePool": lambda: DecodePool(2)}
    results: dict[tuple[str, int], list[tuple[float, float]]] = collections.defaultdict(list)
    for _ in range(args.rounds):
        for name, make in pools.items():
            with make() as pool:
                list(pool.map(work, [b""] * 8, range(8)))  # warm-up: the workers are up
                for size in (160_000, 0):
                    results[(name, size)].append(measure(pool, args.tasks, size))
    print(f"{args.tasks} tasks of 2 ms on 2 spawned workers, 16 in flight, {args.rounds} rounds")
    for size in (160_000, 0):
        base = min(cpu for cpu, _ in results[("ProcessPoolExecutor", size)])
        for name in pools:
            runs = results[(name, size)]
            best = min(cpu for cpu, _ in runs)
            print(f"  payload {size // 1000:3d} KB  {name:20} parent CPU ms/task "
                  + " ".join(f"{cpu:.3f}" for cpu, _ in runs) + f"  best x{best / base:.2f}   tasks/s "
                  + " ".join(f"{rate:.0f}" for _, rate in runs))


if __name__ == "__main__":
    main()
