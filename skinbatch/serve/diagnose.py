"""Turn Triton's start-up log into a typed error.

Triton 2.51 writes one line per event, the message in JSON-style quotes with ``\\n`` escapes, e.g.::

    E1127 07:05:52.579387 4631 model_lifecycle.cc:642] "failed to load 'broken' version 1: Internal: ..."
    E1127 07:06:09.815777 4850 main.cc:257] "failed to start HTTP service: … Socket '127.0.0.1:18000' already in use "
    error: creating server: Internal - failed to stat file /srv/models

Pure functions on text, so they can be tested without a server.
"""

from __future__ import annotations

import json
import re

from .errors import ModelLoadError, PortInUseError, RepositoryError, ServeError, ServerStartError

_FAILED_LOAD = re.compile(r"""failed to load '(?P<model>[^']+)' version (?P<version>\d+): (?P<reason>.*?)"?\s*$""")
_POLL_FAILED = re.compile(r"""Poll failed for model directory '(?P<model>[^']+)': (?P<reason>.*?)"?\s*$""")
_ENSEMBLE_MISSING = re.compile(
    r"""ensemble (?P<model>\S+) contains models that are not available or ambiguous: (?P<reason>.*?)"?\s*$"""
)
_STUB_FAILED = re.compile(r"Failed to (?:pre)?initialize Python stub(?: for auto-complete)?: (?P<reason>.*?)\"?\s*$")
_PORT_IN_USE = re.compile(
    r"failed to start (?P<service>HTTP|GRPC|Metrics) service: "
    r".*?Socket '(?P<address>[^']*):(?P<port>\d+)' already in use"
)
_CREATING_SERVER = re.compile(r"^error: creating server: (?P<reason>.*)$", re.MULTILINE)
_SERVICE_NAMES = {"HTTP": "HTTP", "GRPC": "gRPC", "Metrics": "metrics"}

# Lines that look alarming but are normal on a machine without a GPU, and shutdown countdowns.
_NOISE = ("CudaDriverHelper", "GPU metrics", "CUDA driver", "cuda_memory_manager", "pinned_memory_manager")
_NOISE_RE = re.compile(r"Timeout \d+: Found|\] $")  # countdowns; headers of Triton's boxed tables


def _unescape(text: str) -> str:
    try:
        return json.loads(f'"{text}"')
    except ValueError:
        return text.replace("\\n", "\n")


def model_failures(log: str) -> dict[str, str]:
    """Model name -> the reason Triton gave for not loading it, from a start-up log."""
    failures: dict[str, str] = {}
    for line in log.splitlines():
        for pattern in (_FAILED_LOAD, _POLL_FAILED, _ENSEMBLE_MISSING):
            match = pattern.search(line)
            if match:
                # Keep the first reason: later lines about the same model are consequences.
                failures.setdefault(match.group("model"), _unescape(match.group("reason")).strip())
                break
    return failures


def port_in_use(log: str) -> PortInUseError | None:
    match = _PORT_IN_USE.search(log)
    if match is None:
        return None
    return PortInUseError(
        int(match.group("port")), _SERVICE_NAMES[match.group("service")], address=match.group("address")
    )


def log_tail(log: str, lines: int = 15) -> str:
    """The last lines of the log without Triton's boxed tables and the CPU-only noise."""
    kept = [
        line
        for line in log.splitlines()
        if line.strip()
        and not line.startswith(("+", "|"))
        and not any(n in line for n in _NOISE)
        and not _NOISE_RE.search(line)
    ]
    return "\n".join(kept[-lines:])


def diagnose_exit(log: str, returncode: int | None) -> ServeError:
    """The error that best explains why the server exited (or never got ready), from its log."""
    tail = log_tail(log)
    busy = port_in_use(log)
    if busy is not None:
        return PortInUseError(busy.port, busy.service, address=busy.address, log_tail=tail)
    failures = model_failures(log)
    if failures:
        return ModelLoadError(failures, log_tail=tail)
    creating = _CREATING_SERVER.search(log)
    if creating and "failed to stat file" in creating.group("reason"):
        return RepositoryError(f"Triton cannot read the model repository: {creating.group('reason')}")
    stub = _STUB_FAILED.search(log)
    if stub:
        return ServerStartError(f"A python model's stub failed: {_unescape(stub.group('reason'))}", log_tail=tail)
    if returncode is not None and returncode < 0:
        reason = f"was killed by signal {-returncode}"
    elif returncode is not None:
        reason = f"exited with code {returncode}"
    else:
        reason = "failed"
    detail = f": {creating.group('reason')}" if creating else ""
    return ServerStartError(f"tritonserver {reason} during start-up{detail}.", log_tail=tail)


def loading_models(log: str) -> list[str]:
    """Models whose load started but neither finished nor failed (what a start-up hang waits on)."""
    started = re.findall(r'"loading: ([^:"]+):\d+"', log)
    done = set(re.findall(r"successfully loaded '([^']+)'", log)) | set(model_failures(log))
    return sorted(set(started) - done)
