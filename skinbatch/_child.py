"""One base for the servers skinbatch runs as child processes: the local Kafka broker, Triton and Orthanc.

A subclass says how to prepare one run of its program (:meth:`ChildServer._prepare`), how to tell that it
answers (:meth:`ChildServer._is_ready`) and which typed errors a failed start becomes. The base owns what
every such server needs and what is easy to get subtly wrong when each one writes it again:

* ports given as 0 are picked once, distinct, and kept, so a restart serves on the same addresses;
* the child's stdout and stderr go to one log file, appended to, so a restarted server keeps its history,
  and :meth:`~ChildServer.logs` and :meth:`~ChildServer.log_tail` read back the current run for messages;
* :meth:`~ChildServer.wait_ready` watches for an early exit while it waits;
* :meth:`~ChildServer.stop` is SIGTERM, then SIGKILL of the whole process group after a timeout, and
  :meth:`~ChildServer.kill` is SIGKILL at once, as a crash would; both keep the work folder, so
  :meth:`~ChildServer.start` brings the same server back;
* :meth:`~ChildServer.close` also deletes a work folder the object made itself; ``with`` starts, waits,
  and closes.

Every child runs in its own session, so a terminal's Ctrl-C reaches our handler, which decides how the
server stops, instead of hitting the child and us at once. It also gets SIGTERM from the kernel when the
thread that started it dies (:func:`skinbatch._process.die_with_parent`), so a killed test run or demo
leaves no JVM, Triton or Orthanc behind.
"""

from __future__ import annotations

import abc
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from skinbatch._process import die_with_parent
from skinbatch.contract import ExitCode, SkinbatchError

__all__ = [
    "ChildServer",
    "Launch",
    "ServerNotStartedError",
    "bind",
    "free_port",
    "free_ports",
    "http_status",
    "port_open",
    "tail",
]

LOGGER = logging.getLogger(__name__)


class ServerNotStartedError(SkinbatchError, RuntimeError):
    """An operation needs the server's process or its resolved settings, and it was never started."""

    exit_code = ExitCode.INTERNAL  # the calling code forgot start(): a bug, not an operator's error


@dataclass(frozen=True)
class Launch:
    """One run of a child server: its command line, working folder and environment (``None``: ours)."""

    command: Sequence[str]
    cwd: Path
    env: Mapping[str, str] | None = None


class ChildServer(abc.ABC):
    """A server program run as a child process on local ports; see the module docstring.

    Subclasses implement :attr:`log_path`, :meth:`_prepare`, :meth:`_is_ready`, :meth:`_exit_error` and
    :meth:`_timeout_error`; they may override :meth:`_log_files` when the program keeps a log of its own
    next to its console output.
    """

    name: ClassVar[str] = "server"
    """How log records and messages name the program."""
    error_line: ClassVar[re.Pattern[str] | None] = None
    """Matches a line of the program's log that reports an error. :meth:`log_tail` quotes the first one,
    because a failed start is often followed by a long shutdown that pushes the cause out of the tail."""
    poll_interval_s: ClassVar[float] = 0.1
    """How often :meth:`wait_ready` asks."""
    work_dir_prefix: ClassVar[str] = "skinbatch-server-"
    """Name prefix of a temporary work folder."""

    def __init__(
        self,
        *,
        work_dir: Path | None,
        startup_timeout_s: float,
        stop_timeout_s: float,
        address: str = "127.0.0.1",
    ) -> None:
        """Prepare; nothing runs until :meth:`start`.

        Args:
            work_dir: the folder for the run's files; a temporary one, deleted by :meth:`close`, if None.
                A given folder is kept.
            startup_timeout_s: how long :meth:`wait_ready` waits by default.
            stop_timeout_s: how long :meth:`stop` waits after SIGTERM before it kills.
            address: the address the server binds to; free ports are picked on it.
        """
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._address = address
        self._given_work_dir = work_dir.expanduser().resolve() if work_dir is not None else None
        self._work_dir: Path | None = self._given_work_dir
        self._process: subprocess.Popen[bytes] | None = None
        self._ports: dict[str, int] | None = None
        self._log_offset = 0
        self._started_at = 0.0
        self._ready_after_s: float | None = None

    # ---- what a subclass says ---------------------------------------------------------------------

    @property
    @abc.abstractmethod
    def log_path(self) -> Path:
        """The file the child's stdout and stderr are appended to."""

    @abc.abstractmethod
    def _prepare(self) -> Launch:
        """Check what can be checked beforehand, write the run's files, and say what to launch.

        Raise the typed error a user can act on (a program missing, a port taken, a bad repository).
        """

    @abc.abstractmethod
    def _is_ready(self) -> bool:
        """Whether the running child answers as a ready server. May raise a typed error for a start that
        failed while the process lives on (Triton serving without a model that did not load)."""

    @abc.abstractmethod
    def _exit_error(self, returncode: int) -> Exception:
        """The error for a child that exited before it was ready; :meth:`logs` usually says why."""

    @abc.abstractmethod
    def _timeout_error(self, timeout_s: float) -> Exception:
        """The error for a child that runs but was not ready within ``timeout_s``."""

    def _log_files(self) -> list[Path]:
        """The logs :meth:`log_tail` quotes, the console output first."""
        return [self.log_path]

    def _not_started_error(self) -> Exception:
        return ServerNotStartedError(f"The {self.name} was not started: call start() first, or use `with`.")

    # ---- life cycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        """Prepare and launch the server; a running one is left as it is. Does not wait: see
        :meth:`wait_ready` (``with`` does both)."""
        if self.is_running():
            return self
        self._launch(self._prepare())
        return self

    def wait_ready(self, timeout: float | None = None) -> float:
        """Wait until the server answers; return the seconds since it was launched.

        Returns at once when this run was already seen ready and still runs.

        Raises:
            the subclass's errors: the child exited (:meth:`_exit_error`), or was not ready within
            ``timeout`` (default :attr:`startup_timeout_s`; :meth:`_timeout_error`).
        """
        process = self._process
        if process is None:
            raise self._not_started_error()
        if self._ready_after_s is not None and process.poll() is None:
            return self._ready_after_s
        timeout = self.startup_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise self._exit_error(process.returncode)
            if self._is_ready():
                self._ready_after_s = time.monotonic() - self._started_at
                LOGGER.info("%s (pid %d) ready in %.1f s", self.name, process.pid, self._ready_after_s)
                return self._ready_after_s
            if time.monotonic() >= deadline:
                raise self._timeout_error(timeout)
            time.sleep(self.poll_interval_s)

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGTERM, wait ``timeout_s`` (default :attr:`stop_timeout_s`) for a clean shutdown, then SIGKILL.

        The work folder stays: :meth:`start` brings the same server back. Safe to call more than once.

        Returns:
            The exit code of the last run (negative: the signal that ended it); None if never started.
        """
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            wait_s = self.stop_timeout_s if timeout_s is None else timeout_s
            LOGGER.info("Stopping the %s (pid %d)", self.name, process.pid)
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                LOGGER.warning("The %s (pid %d) ignored SIGTERM for %.0f s; killing it", self.name, process.pid,
                               wait_s)
                self.kill()
        _kill_group(process.pid)
        return process.returncode

    def kill(self) -> None:
        """SIGKILL the server and whatever it started, at once, as a crash would; the work folder stays."""
        process = self._process
        if process is None:
            return
        _kill_group(process.pid)  # also what it left behind when it already exited
        process.wait()

    def restart(self, timeout: float | None = None) -> float:
        """Stop, start on the same ports and work folder, and wait; return the start-up seconds."""
        self.stop()
        self.start()
        return self.wait_ready(timeout)

    def close(self) -> None:
        """Stop the server, and delete its work folder if this object made it."""
        self.stop()
        if self._given_work_dir is None and self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None

    def cleanup(self) -> None:
        """The same as :meth:`close` (the name :class:`~skinbatch.serve.LocalTriton` always had)."""
        self.close()

    def __enter__(self) -> Self:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()  # the files stay, for the log the error points to
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ---- state ------------------------------------------------------------------------------------

    def is_running(self) -> bool:
        """Whether the process is alive (not whether it answers)."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id of the current or last run; None before the first launch."""
        return None if self._process is None else self._process.pid

    @property
    def returncode(self) -> int | None:
        """The exit code of the last run; None while it runs or before the first launch."""
        return None if self._process is None else self._process.poll()

    @property
    def work_dir(self) -> Path | None:
        """The folder of the run's files; None before the first start when none was given."""
        return self._work_dir

    def logs(self) -> str:
        """What the child wrote to :attr:`log_path` in the current (or last) run."""
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(self._log_offset)
                return handle.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        """The first error and the last ``lines`` lines of each log, for messages."""
        parts = []
        for path in self._log_files():
            text = self.logs() if path == self.log_path else _read_text(path)
            if text.strip():
                parts.append(_excerpt(path, text, lines, self.error_line))
        return "\n".join(parts) or f"(the {self.name} wrote no log)"

    # ---- for subclasses ---------------------------------------------------------------------------

    def _ensure_work_dir(self) -> Path:
        if self._work_dir is None:
            self._work_dir = Path(tempfile.mkdtemp(prefix=self.work_dir_prefix))
        self._work_dir.mkdir(parents=True, exist_ok=True)
        return self._work_dir

    def _ports_once(self, wanted: Mapping[str, int]) -> dict[str, int]:
        """``wanted`` with each 0 replaced by a free port, picked on the first call and kept after."""
        if self._ports is None:
            given = {port for port in wanted.values() if port}
            free = iter(free_ports(self._address, sum(1 for port in wanted.values() if not port), avoid=given))
            self._ports = {name: port or next(free) for name, port in wanted.items()}
        return dict(self._ports)

    def _forget_ports(self) -> None:
        self._ports = None

    def _launch(self, launch: Launch) -> None:
        log_path = self.log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        command = list(launch.command)
        LOGGER.info("Starting %s", shlex.join(command))
        # The child gets its own copy of the descriptor; ours closes when the block ends.
        with open(log_path, "ab") as log:
            self._log_offset = log.tell()
            self._started_at = time.monotonic()
            self._ready_after_s = None
            self._process = subprocess.Popen(  # noqa: S603 - our own program and arguments
                command,
                cwd=launch.cwd,
                env=None if launch.env is None else dict(launch.env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - the only way to set PR_SET_PDEATHSIG
                close_fds=True,
            )


# --------------------------------------------------------------------------------------------------
# Ports, HTTP probes and logs
# --------------------------------------------------------------------------------------------------


def bind(address: str, port: int) -> socket.socket:
    """A TCP socket bound to ``address:port`` (IPv4 or IPv6); the caller closes it."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # Like the servers do: connections left in TIME_WAIT by a previous run do not block the port.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


def free_ports(address: str, count: int, *, avoid: Collection[int] = ()) -> list[int]:
    """``count`` distinct ports free on ``address`` now, none of them in ``avoid``.

    The sockets are held together while picking, so the ports differ; another process may still take
    one before the server binds it.
    """
    sockets: list[socket.socket] = []
    try:
        picked: list[int] = []
        while len(picked) < count:
            sock = bind(address, 0)
            sockets.append(sock)
            port = int(sock.getsockname()[1])
            if port not in avoid:
                picked.append(port)
        return picked
    finally:
        for sock in sockets:
            sock.close()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (another process may still take it later)."""
    return free_ports(host, 1)[0]


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        return sock.connect_ex((host, port)) == 0


def http_status(request: str | urllib.request.Request, timeout_s: float = 2.0,
                context: ssl.SSLContext | None = None) -> int | None:
    """The HTTP status of a request to a local server, or None when nothing answers (yet).
    ``context``: for an https URL, the CA (and client pair) to reach the server with."""
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=context) as response:  # noqa: S310 - our own server
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except (OSError, ValueError):  # URLError is an OSError; ValueError: a reply that is not HTTP
        return None


def tail(text: str, lines: int) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.splitlines()[-lines:])


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _excerpt(path: Path, text: str, lines: int, error_line: re.Pattern[str] | None) -> str:
    all_lines = text.splitlines()
    parts = []
    if error_line is not None:
        first = next((i for i, line in enumerate(all_lines) if error_line.search(line)), None)
        if first is not None and first < len(all_lines) - lines:
            parts.append(f"--- {path}, first error ---\n" + "\n".join(all_lines[first : first + 8]))
    parts.append(f"--- {path}, last lines ---\n{tail(text, lines)}")
    return "\n".join(parts)


def _kill_group(pgid: int) -> None:
    # Every child leads its own session, so its group holds what it started (python-backend stubs);
    # make sure none outlives it.
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
