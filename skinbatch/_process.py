"""Child processes that must not outlive the process that started them."""

from __future__ import annotations

import ctypes
import ctypes.util
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
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(sig))
    parent = os.getppid()
    if parent == 1:  # the parent died before prctl took effect
        os.kill(os.getpid(), sig)
