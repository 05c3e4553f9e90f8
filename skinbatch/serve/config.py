"""Typed configuration of the local Triton server (the binary bundled in ``nvidia-pytriton``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from skinbatch.connect.triton import GRPC_PORT, HTTP_PORT, METRICS_PORT

# Triton's own defaults, so that clients written for a stock Triton connect unchanged.
DEFAULT_HTTP_PORT = HTTP_PORT
DEFAULT_GRPC_PORT = GRPC_PORT
DEFAULT_METRICS_PORT = METRICS_PORT


@dataclass
class TritonServerConfig:
    """How to run the local Triton server.

    Attributes:
        repository: the model repository (one folder per model, each with ``config.pbtxt``).
        http_port: HTTP/REST port; 0 picks a free port once, and ``restart()`` keeps it.
        grpc_port: gRPC port; 0 picks a free port.
        metrics_port: Prometheus metrics port; 0 picks a free port.
        address: the address all three services bind to. Loopback by default: this server has
            no authentication, so exposing it is an explicit choice (``0.0.0.0``).
        work_dir: where the python backend is assembled (``<work_dir>/backends/python``) and the log
            goes by default; ``None`` makes a temporary folder, removed by ``LocalTriton.cleanup()``.
        log_file: the server's stdout and stderr (Triton's log and the python models' prints);
            ``None`` means ``<work_dir>/tritonserver.log``.
        log_verbose: Triton's ``--log-verbose`` level (0 = off, 1 = model and request life cycle).
        startup_timeout_s: how long ``wait_ready()`` waits for ``/v2/health/ready`` by default.
        exit_timeout_s: how long Triton waits for in-flight requests after SIGTERM.
        stop_timeout_s: how long ``stop()`` waits after SIGTERM before it kills the process.
        exit_on_error: exit at start-up when a model fails to load, instead of serving the rest.
        strict_readiness: ready means every model is ready, not merely that the server is up.
        summary_latencies: expose latency quantiles (``nv_inference_*_summary_us``) on ``/metrics``.
        extra_args: further ``tritonserver`` arguments, passed last (e.g. ``--backend-config=...``).
    """

    repository: Path
    http_port: int = DEFAULT_HTTP_PORT
    grpc_port: int = DEFAULT_GRPC_PORT
    metrics_port: int = DEFAULT_METRICS_PORT
    address: str = "127.0.0.1"
    work_dir: Path | None = None
    log_file: Path | None = None
    log_verbose: int = 0
    startup_timeout_s: float = 120.0
    exit_timeout_s: int = 10
    stop_timeout_s: float = 20.0
    exit_on_error: bool = True
    strict_readiness: bool = True
    summary_latencies: bool = True
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        self.repository = Path(self.repository)
        if self.work_dir is not None:
            self.work_dir = Path(self.work_dir)
        if self.log_file is not None:
            self.log_file = Path(self.log_file)
        self.extra_args = tuple(self.extra_args)
        for name in ("http_port", "grpc_port", "metrics_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise ValueError(f"{name} must be between 0 and 65535 (0 = pick a free port), got {port}")
        if self.stop_timeout_s <= self.exit_timeout_s:
            # Otherwise stop() would kill the server while Triton itself still drains requests.
            raise ValueError("stop_timeout_s must be longer than exit_timeout_s")

    def replace(self, **changes: object) -> TritonServerConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
