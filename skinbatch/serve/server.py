"""``LocalTriton``: the Triton binary bundled in ``nvidia-pytriton``, run on the CPU as a child process.

    config = TritonServerConfig(repository=Path("model_repository"), http_port=0, grpc_port=0, metrics_port=0)
    with LocalTriton(config) as server:          # start() + wait_ready(); stop() + cleanup() on exit
        client = tritonclient.grpc.InferenceServerClient(server.grpc_endpoint)

Ports, the log file, waiting, stopping and killing come from :class:`skinbatch._child.ChildServer`,
shared with the local Kafka broker and Orthanc. Triton's stdout and stderr, which carry its log and
whatever the python models print, go to one log file; :mod:`.diagnose` turns a failed start into a
typed error from it. ``stop()`` and ``kill()`` also end the python-backend stubs (the server's process
group).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import secrets
import urllib.error
import urllib.request
from pathlib import Path
from typing import ClassVar

from skinbatch._child import ChildServer, Launch, bind, http_status

from . import diagnose
from .config import TritonServerConfig
from .environment import TritonDistribution, check_environment, prepare_backends
from .errors import (
    ModelLoadError,
    PortInUseError,
    ServerNotRunningError,
    ServerStartError,
    StartupTimeoutError,
)
from .repository import check_repository

LOGGER = logging.getLogger(__name__)

_SERVICES = ("http", "grpc", "metrics")
_SERVICE_LABELS = {"http": "HTTP", "grpc": "gRPC", "metrics": "metrics"}


class LocalTriton(ChildServer):
    """One local ``tritonserver`` process on a model repository.

    ``start()`` checks the environment, the repository and the ports, then launches the server;
    ``wait_ready()`` waits for ``/v2/health/ready`` and turns a failed start into a typed error.
    Ports given as 0 are picked once and kept, so ``restart()`` serves on the same URLs.
    """

    name = "tritonserver"
    error_line: ClassVar[re.Pattern[str] | None] = re.compile(r"^E\d{4} ")
    work_dir_prefix = "skinbatch-triton-"

    def __init__(self, config: TritonServerConfig) -> None:
        super().__init__(
            work_dir=config.work_dir,
            startup_timeout_s=config.startup_timeout_s,
            stop_timeout_s=config.stop_timeout_s,
            address=config.address,
        )
        self.config = config
        self._dist: TritonDistribution | None = None
        self._env: dict[str, str] | None = None
        # Unique per server: two servers on one host must not share python-backend shared memory.
        self._shm_prefix = f"skinbatch_{os.getpid()}_{secrets.token_hex(4)}_"

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> LocalTriton:
        """Check everything that can be checked beforehand, then launch ``tritonserver``.

        Raises:
            TritonEnvironmentError: the bundled Triton cannot run here (binary, stub, glibc, numpy).
            RepositoryError: the repository is missing or empty.
            ModelLoadError: a python model lacks its model file.
            PortInUseError: a port is taken.
            ServerStartError: the server is already running.
        """
        if self.is_running():
            raise ServerStartError(f"tritonserver is already running (pid {self.pid}); stop() it first.")
        return super().start()

    def _prepare(self) -> Launch:
        check_repository(self.config.repository)
        if self._dist is None or self._env is None:
            self._dist, self._env = check_environment()
        ports = self._ports_once({s: getattr(self.config, f"{s}_port") for s in _SERVICES})
        for service in _SERVICES:
            _check_port_free(self.config.address, ports[service], _SERVICE_LABELS[service])
        work_dir = self._ensure_work_dir()
        backends = prepare_backends(self._dist, work_dir)
        # The stub puts its working folder on sys.path; ours keeps a stray `numpy/` or `model.py` in the
        # caller's folder from shadowing the models' imports.
        return Launch([str(self._dist.binary), *self._arguments(backends, ports)], cwd=work_dir, env=self._env)

    def wait_ready(self, timeout: float | None = None) -> float:
        """Wait until ``/v2/health/ready`` answers 200; return the seconds since ``start()``.

        With strict readiness (the default) ready means every model is loaded.

        Raises:
            ServerNotRunningError: ``start()`` was not called.
            PortInUseError, ModelLoadError, ServerStartError: the server exited; the log says why.
            ModelLoadError: the server runs but a model is unavailable (``exit_on_error=False``).
            StartupTimeoutError: not ready within ``timeout`` (default: the config's).
        """
        return super().wait_ready(timeout)

    def _is_ready(self) -> bool:
        status = http_status(f"{self.http_url}/v2/health/ready")
        # Triton starts the metrics service last, and it can still fail (port taken) after HTTP already
        # answers "ready"; only both together mean the server is up to stay.
        if status == 200 and http_status(self.metrics_url) == 200:
            return True
        if status is not None:
            # HTTP starts only after the models' load finished, so "up but not ready" means a model
            # failed and the server was told to carry on without it.
            failures = self._unavailable_models()
            if failures:
                raise ModelLoadError(failures, log_tail=diagnose.log_tail(self.logs()))
        return False

    def _exit_error(self, returncode: int) -> Exception:
        return diagnose.diagnose_exit(self.logs(), returncode)

    def _not_started_error(self) -> Exception:
        return ServerNotRunningError("tritonserver was not started; call start() first.")

    # --- addresses and logs -------------------------------------------------------------------

    @property
    def ports(self) -> dict[str, int]:
        """``{"http": ..., "grpc": ..., "metrics": ...}``, resolved (0 replaced) after the first start."""
        if self._ports is not None:
            return dict(self._ports)
        return {s: getattr(self.config, f"{s}_port") for s in _SERVICES}

    @property
    def host(self) -> str:
        """The host clients connect to: loopback when the server binds every address."""
        address = self.config.address
        if address in ("", "0.0.0.0"):
            return "127.0.0.1"
        if address == "::":
            return "[::1]"
        return f"[{address}]" if ":" in address else address

    @property
    def http_endpoint(self) -> str:
        """``host:port`` of the HTTP service, the form ``tritonclient.http`` expects."""
        return f"{self.host}:{self._port('http')}"

    @property
    def grpc_endpoint(self) -> str:
        """``host:port`` of the gRPC service, the form ``tritonclient.grpc`` expects."""
        return f"{self.host}:{self._port('grpc')}"

    @property
    def http_url(self) -> str:
        return f"http://{self.http_endpoint}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self.grpc_endpoint}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self._port('metrics')}/metrics"

    @property
    def log_path(self) -> Path:
        """The config's ``log_file``, else ``<work_dir>/tritonserver.log``."""
        if self.config.log_file is not None:
            return self.config.log_file
        return self._ensure_work_dir() / "tritonserver.log"

    # --- internals ----------------------------------------------------------------------------

    def _arguments(self, backends: Path, ports: dict[str, int]) -> list[str]:
        assert self._dist is not None
        cfg = self.config
        args = [
            f"--model-repository={Path(cfg.repository).resolve()}",
            f"--backend-directory={backends.resolve()}",
            f"--cache-directory={self._dist.cache_dir}",
            # No GPU here; these keep Triton from asking the CUDA driver for memory pools and metrics.
            "--allow-gpu-metrics=false",
            "--pinned-memory-pool-byte-size=0",
            "--cuda-memory-pool-byte-size=0:0",
            f"--http-address={cfg.address}",
            f"--http-port={ports['http']}",
            f"--grpc-address={cfg.address}",
            f"--grpc-port={ports['grpc']}",
            f"--metrics-address={cfg.address}",
            f"--metrics-port={ports['metrics']}",
            f"--strict-readiness={_flag(cfg.strict_readiness)}",
            f"--exit-on-error={_flag(cfg.exit_on_error)}",
            f"--exit-timeout-secs={cfg.exit_timeout_s}",
            f"--log-verbose={cfg.log_verbose}",
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
        ]
        if cfg.summary_latencies:
            args.append("--metrics-config=summary_latencies=true")
        args.extend(cfg.extra_args)
        return args

    def _port(self, service: str) -> int:
        port = self.ports[service]
        if port == 0:
            raise ServerNotRunningError(f"The {service} port is picked at start(); start the server first.")
        return port

    def _unavailable_models(self) -> dict[str, str]:
        """Model -> reason for every model the repository index lists as UNAVAILABLE."""
        request = urllib.request.Request(f"{self.http_url}/v2/repository/index", data=b"{}", method="POST")  # noqa: S310 - an http URL we build
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - our own server
                index = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return {}
        return {
            entry["name"]: entry.get("reason") or "unavailable"
            for entry in index
            if entry.get("state") == "UNAVAILABLE"
        }

    def _timeout_error(self, timeout_s: float) -> ServerStartError:
        log = self.logs()
        tail = diagnose.log_tail(log)
        failures = self._unavailable_models() or diagnose.model_failures(log)
        if failures:
            return ModelLoadError(failures, log_tail=tail)
        busy = diagnose.port_in_use(log)
        if busy is not None:
            return PortInUseError(busy.port, busy.service, address=busy.address, log_tail=tail)
        loading = diagnose.loading_models(log)
        waiting = f" Still loading: {', '.join(loading)}." if loading else ""
        return StartupTimeoutError(
            f"tritonserver was not ready within {timeout_s:.0f} s.{waiting} Raise the start-up timeout for "
            "large models, or read the log below for a model that hangs.",
            log_tail=tail,
        )


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _check_port_free(address: str, port: int, service: str) -> None:
    try:
        bind(address, port).close()
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise PortInUseError(port, service, address=address) from error
        raise ServerStartError(f"Cannot bind the {service} port {address}:{port}: {error.strerror}.") from error
