"""Exceptions raised while preparing, starting and stopping the local Triton server.

Every message says what went wrong and what to do next, because most of these reach a person through
``skinbatch serve`` or a failing CI job, not through code that can recover.
"""

from __future__ import annotations

from collections.abc import Mapping

from skinbatch.contract import ExitCode, SkinbatchError


class ServeError(SkinbatchError):
    """Base class for every error of ``skinbatch.serve``: the server did not start."""

    exit_code = ExitCode.START_FAILED


# --- the machine or the Python environment cannot run the bundled Triton -------------------------


class TritonEnvironmentError(ServeError):
    """The machine or the Python environment cannot run the Triton bundled in ``nvidia-pytriton``."""

    exit_code = ExitCode.ENVIRONMENT


class TritonBinaryNotFoundError(TritonEnvironmentError):
    """``nvidia-pytriton`` or one of the files it bundles (server binary, python backend) is missing."""


class PythonStubNotFoundError(TritonEnvironmentError):
    """No python-backend stub matches this interpreter, or the stub cannot load ``libpython``."""


class NumpyVersionError(TritonEnvironmentError):
    """The python-backend stub would import numpy 2, with which inputs arrive empty without any error."""


class GlibcVersionError(TritonEnvironmentError):
    """The C library is older than the one the bundled binary was linked against (or is not glibc)."""


# --- the model repository -----------------------------------------------------------------------


class RepositoryError(ServeError):
    """The model repository is missing, is not a folder, or holds no model."""


# --- starting and running the server ------------------------------------------------------------


class ServerStartError(ServeError):
    """The server exited during start-up or did not become ready in time.

    Attributes:
        log_tail: the last lines of the server log, for the report.
    """

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        self.log_tail = log_tail
        if log_tail:
            message = f"{message}\n--- last lines of the server log ---\n{log_tail}"
        super().__init__(message)


class PortInUseError(ServerStartError):
    """A port the server needs is taken by another process."""

    def __init__(self, port: int, service: str, *, address: str = "127.0.0.1", log_tail: str = "") -> None:
        self.port = port
        self.service = service
        self.address = address
        super().__init__(
            f"The {service} port {address}:{port} is already in use. Stop the process that holds it "
            f"(`ss -ltnp 'sport = :{port}'` shows which) or choose another port "
            f"(`--{service.lower()}-port`, or 0 for a free one).",
            log_tail=log_tail,
        )


class ModelLoadError(ServerStartError):
    """Triton could not load one or more models of the repository.

    Attributes:
        failures: model name -> the reason Triton gave.
    """

    def __init__(self, failures: Mapping[str, str], *, log_tail: str = "") -> None:
        self.failures = dict(failures)
        lines = "\n".join(f"  - {name}: {reason.strip()}" for name, reason in sorted(self.failures.items()))
        names = ", ".join(sorted(self.failures))
        super().__init__(
            f"Triton could not load model(s) {names}:\n{lines}\n"
            "Fix the model's config.pbtxt or model.py (the reason above comes from Triton) and start again.",
            log_tail=log_tail,
        )

    @property
    def models(self) -> list[str]:
        return sorted(self.failures)


class StartupTimeoutError(ServerStartError):
    """The server is still running but was not ready within the start-up timeout."""


class ServerNotRunningError(ServeError):
    """An operation needs a running server, and there is none."""

    exit_code = ExitCode.INTERNAL  # the calling code forgot start(): a bug, not an operator's error
