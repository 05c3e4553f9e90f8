"""reuse_large_buffers (skinbatch._process): glibc keeps large buffers for reuse instead of mapping
fresh pages for each one. Measured by the kernel's count of page faults, in child processes."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from skinbatch._process import reuse_large_buffers

REPO = Path(__file__).resolve().parents[2]
glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's thresholds are glibc's")

# A thread that copies buffers of 0.2-6 MB, as the consumer's Kafka thread copies fetch responses.
CHURN = """
import random, resource, sys, threading
from skinbatch._process import reuse_large_buffers
tuned = reuse_large_buffers() if sys.argv[1] == "tuned" else False
def churn():
    rnd, keep = random.Random(1), []
    for _ in range(300):
        b = bytearray(rnd.randrange(200_000, 6_000_000))
        b[::4096] = b"x" * len(b[::4096])
        keep.append(bytes(b[: len(b) // 2]))
        del keep[:-3]
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
t = threading.Thread(target=churn); t.start(); t.join()
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "SKINBATCH_MALLOC"}
    out = subprocess.run([sys.executable, "-c", CHURN, mode], cwd=REPO, env=env, capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    return out[0], int(out[1])


@glibc
def test_large_buffers_are_reused_instead_of_faulted_in_afresh() -> None:
    tuned, with_it = _faults("tuned")
    _, without = _faults("default")
    assert tuned == "True"
    assert with_it * 3 < without, (with_it, without)


@pytest.mark.parametrize(("var", "value"), [("MALLOC_TRIM_THRESHOLD_", "1000000"), ("SKINBATCH_MALLOC", "glibc")])
def test_an_operator_s_own_malloc_settings_are_left_alone(monkeypatch: pytest.MonkeyPatch, var: str,
                                                          value: str) -> None:
    monkeypatch.setenv(var, value)
    assert reuse_large_buffers() is False
