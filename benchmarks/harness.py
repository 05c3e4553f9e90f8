"""What the benchmark scripts share: a stand-in model, a converted repository, CPU accounting from /proc."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.fixtures.standin import build_standin_onnx  # noqa: E402  (one stand-in for tests and benchmarks)

__all__ = ["REPO_ROOT", "build_standin_onnx", "children_of", "convert", "cpu_seconds", "cpu_snapshot",
           "tree_cpu_seconds"]


def convert(args: list[str], repo: Path) -> Path:
    subprocess.run([sys.executable, "-m", "skinbatch.cli", "convert", *args, "--target", "cpu",
                    "--repository", str(repo), "--force"], check=True, stdout=subprocess.DEVNULL, cwd=REPO_ROOT)
    return repo


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_of() -> dict[int, list[int]]:
    """Parent pid → child pids, from one pass over /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    return children


def tree_cpu_seconds(pid: int | None, children: dict[int, list[int]]) -> float:
    """CPU seconds of a process and all its living descendants (Triton's backend stubs, decode workers)."""
    total, stack = 0.0, [] if pid is None else [pid]
    while stack:
        p = stack.pop()
        total += cpu_seconds(p)
        stack.extend(children.get(p, []))
    return total


def cpu_snapshot(consumer_pid: int, others: dict[str, int | None]) -> dict[str, float]:
    children = children_of()
    main = cpu_seconds(consumer_pid)
    snap = {"consumer": main, "decode": tree_cpu_seconds(consumer_pid, children) - main}
    snap.update({name: tree_cpu_seconds(pid, children) for name, pid in others.items()})
    return snap
