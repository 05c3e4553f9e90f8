"""Child processes that must not outlive the process that started them."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent thread dies (Linux only).

    Call it in the child: between fork and exec (``preexec_fn``) for servers, or in a pool worker's
    initializer. A SIGKILLed consumer or test run then leaves no JVM, Triton or decode worker behind.
    The signal follows the *thread* that started the child, so start children from a long-lived one.
    """
    if not sys.platform.startswith("linux"):
        return
    _libc().prctl(_PR_SET_PDEATHSIG, int(sig))
    parent = os.getppid()
    if parent == 1:  # the parent died before prctl took effect
        os.kill(os.getpid(), sig)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
LARGE_BUFFER_BYTES = 32 << 20
"""glibc's ceiling for ``M_MMAP_THRESHOLD`` on 64-bit: buffers up to this size come from the heap."""
TRIM_BYTES = 128 << 20


def reuse_large_buffers() -> bool:
    """Serve buffers up to 32 MiB from glibc's heap and keep up to 128 MiB of free heap, instead of a
    fresh ``mmap`` (page-faulted and zeroed, 4 KiB at a time) for every buffer over 128 KiB.

    A consumer copies each photo several times (Kafka's fetch buffers, the decode pipe, the decoder): with
    glibc's defaults that was 25,000 page faults a second in its main process, and 10-30% more CPU there
    and in its decoders (docs/benchmarks.md). Call it first thing in each process. It does nothing off glibc,
    when the operator set ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_`` themselves, or with
    ``SKINBATCH_MALLOC=glibc`` (glibc's own defaults). Returns whether it changed anything.
    """
    if os.environ.get("SKINBATCH_MALLOC") == "glibc" or any(
            var in os.environ for var in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    import platform

    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    libc = _libc()
    return bool(libc.mallopt(M_MMAP_THRESHOLD, LARGE_BUFFER_BYTES) and libc.mallopt(M_TRIM_THRESHOLD, TRIM_BYTES))


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
