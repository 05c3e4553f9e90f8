"""``LocalTriton``: the Triton binary bundled in ``nvidia-pytriton``, run on the CPU as a child process.

    config = TritonServerConfig(repository=Path("model_repository"), http_port=0, grpc_port=0, metrics_port=0)
    with LocalTriton(config) as server:          # start() + wait_ready(); stop() + cleanup() on exit
        client = tritonclient.grpc.InferenceServerClient(server.grpc_endpoint)

The server runs in its own process group (so a terminal's Ctrl-C reaches us, and we decide how it
stops) and gets SIGTERM from the kernel if the thread that started it dies (so a killed test run
leaves no server behind). Its stdout and stderr, which carry Triton's log and whatever the python
models print, go to one log file; start-up failures are read back from it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO

from skinbatch._process import die_with_parent

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
_POLL_INTERVAL_S = 0.1


class LocalTriton:
    """One local ``tritonserver`` process on a model repository.

    ``start()`` checks the environment, the repository and the ports, then launches the server;
    ``wait_ready()`` waits for ``/v2/health/ready`` and turns a failed start into a typed error.
    Ports given as 0 are picked once and kept, so ``restart()`` serves on the same URLs.
    """

    def __init__(self, config: TritonServerConfig) -> None:
        self.config = config
        self._process: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None
        self._log_offset = 0
        self._started_at = 0.0
        self._ports: dict[str, int] | None = None
        self._dist: TritonDistribution | None = None
        self._env: dict[str, str] | None = None
        self._owned_work_dir: Path | None = None
        self._work_dir: Path | None = config.work_dir
        # Unique per server: two servers on one host must not share python-backend shared memory.
        self._shm_prefix = f"skinbatch_{os.getpid()}_{secrets.token_hex(4)}_"

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
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
        check_repository(self.config.repository)
        if self._dist is None or self._env is None:
            self._dist, self._env = check_environment()
        ports = self._resolve_ports()
        for service in _SERVICES:
            _check_port_free(self.config.address, ports[service], _SERVICE_LABELS[service])

        work_dir = self._ensure_work_dir()
        backends = prepare_backends(self._dist, work_dir)
        log_path = self.log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_handle = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log_offset = self._log_handle.tell()
        command = [str(self._dist.binary), *self._arguments(backends, ports)]
        LOGGER.info("Starting %s", " ".join(command))
        self._started_at = time.monotonic()
        self._process = subprocess.Popen(  # noqa: S603 - our own binary and arguments
            command,
            env=self._env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            # The stub puts its working folder on sys.path; ours keeps a stray `numpy/` or
            # `model.py` in the caller's folder from shadowing the models' imports.
            cwd=work_dir,
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - needed; see the module docstring
            close_fds=True,
        )

    def wait_ready(self, timeout: float | None = None) -> float:
        """Wait until ``/v2/health/ready`` answers 200; return the seconds since ``start()``.

        With strict readiness (the default) ready means every model is loaded.

        Raises:
            ServerNotRunningError: ``start()`` was not called.
            PortInUseError, ModelLoadError, ServerStartError: the server exited; the log says why.
            ModelLoadError: the server runs but a model is unavailable (``exit_on_error=False``).
            StartupTimeoutError: not ready within ``timeout`` (default: the config's).
        """
        process = self._require_process()
        timeout = self.config.startup_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise diagnose.diagnose_exit(self.logs(), process.returncode)
            status = self._http_status("/v2/health/ready")
            # Triton starts the metrics service last, and it can still fail (port taken) after
            # HTTP already answers "ready"; only both together mean the server is up to stay.
            if status == 200 and _http_get_status(self.metrics_url) == 200:
                elapsed = time.monotonic() - self._started_at
                LOGGER.info("Triton ready in %.1f s at %s", elapsed, self.http_url)
                return elapsed
            if status is not None:
                # HTTP starts only after the models' load finished, so "up but not ready" means a
                # model failed and the server was told to carry on without it.
                failures = self._unavailable_models()
                if failures:
                    raise ModelLoadError(failures, log_tail=diagnose.log_tail(self.logs()))
            if time.monotonic() >= deadline:
                raise self._timeout_error(timeout)
            time.sleep(_POLL_INTERVAL_S)

    def stop(self) -> int | None:
        """SIGTERM, wait ``stop_timeout_s`` for in-flight requests and models to unload, then kill.

        Returns the exit code (None when never started). Safe to call more than once.
        """
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            LOGGER.info("Stopping tritonserver (pid %d)", process.pid)
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=self.config.stop_timeout_s)
            except subprocess.TimeoutExpired:
                LOGGER.warning("tritonserver did not stop within %.0f s; killing it", self.config.stop_timeout_s)
                self.kill()
        self._reap_group(process.pid)
        self._close_log()
        return process.returncode

    def kill(self) -> None:
        """SIGKILL the server and its python-backend stubs at once (no draining)."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
        self._reap_group(process.pid)
        self._close_log()

    def restart(self, timeout: float | None = None) -> float:
        """Stop, start on the same ports and wait until ready; return the start-up seconds."""
        self.stop()
        self.start()
        return self.wait_ready(timeout)

    def cleanup(self) -> None:
        """Remove the temporary work folder, if this object made one. Stops the server first."""
        self.stop()
        if self._owned_work_dir is not None:
            shutil.rmtree(self._owned_work_dir, ignore_errors=True)
            self._owned_work_dir = None
            self._work_dir = None

    def __enter__(self) -> LocalTriton:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
        self.cleanup()

    # --- state and addresses ------------------------------------------------------------------

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

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
    def work_dir(self) -> Path | None:
        return self._work_dir

    @property
    def log_path(self) -> Path:
        if self.config.log_file is not None:
            return self.config.log_file
        return self._ensure_work_dir() / "tritonserver.log"

    def logs(self) -> str:
        """The log of the current (or last) run."""
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(self._log_offset)
                return handle.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

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

    def _resolve_ports(self) -> dict[str, int]:
        if self._ports is None:
            wanted = {s: getattr(self.config, f"{s}_port") for s in _SERVICES}
            free = iter(_free_ports(self.config.address, sum(1 for p in wanted.values() if p == 0)))
            self._ports = {s: (p if p != 0 else next(free)) for s, p in wanted.items()}
        return self._ports

    def _port(self, service: str) -> int:
        port = self.ports[service]
        if port == 0:
            raise ServerNotRunningError(f"The {service} port is picked at start(); start the server first.")
        return port

    def _ensure_work_dir(self) -> Path:
        if self._work_dir is None:
            self._owned_work_dir = Path(tempfile.mkdtemp(prefix="skinbatch-triton-"))
            self._work_dir = self._owned_work_dir
        self._work_dir.mkdir(parents=True, exist_ok=True)
        return self._work_dir

    def _require_process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise ServerNotRunningError("tritonserver was not started; call start() first.")
        return self._process

    def _http_status(self, path: str) -> int | None:
        return _http_get_status(f"{self.http_url}{path}")

    def _unavailable_models(self) -> dict[str, str]:
        """Model -> reason for every model the repository index lists as UNAVAILABLE."""
        request = urllib.request.Request(f"{self.http_url}/v2/repository/index", data=b"{}", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                index = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return {}
        return {
            entry["name"]: entry.get("reason") or "unavailable"
            for entry in index
            if entry.get("state") == "UNAVAILABLE"
        }

    def _timeout_error(self, timeout: float) -> ServerStartError:
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
            f"tritonserver was not ready within {timeout:.0f} s.{waiting} Raise the start-up timeout for "
            "large models, or read the log below for a model that hangs.",
            log_tail=tail,
        )

    def _reap_group(self, pgid: int) -> None:
        # Python-backend stubs normally exit with the server; make sure none outlives it.
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _close_log(self) -> None:
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None


def _http_get_status(url: str) -> int | None:
    """The HTTP status of a GET, or None when nothing answers (yet)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own server
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError):
        return None


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _bind(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # Like the server will: connections left in TIME_WAIT by a previous run do not block the port.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _check_port_free(address: str, port: int, service: str) -> None:
    try:
        _bind(address, port).close()
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise PortInUseError(port, service, address=address) from error
        raise ServerStartError(f"Cannot bind the {service} port {address}:{port}: {error.strerror}.") from error


def _free_ports(address: str, count: int) -> list[int]:
    """``count`` distinct free ports, held together while picking so they differ."""
    sockets = [_bind(address, 0) for _ in range(count)]
    try:
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
