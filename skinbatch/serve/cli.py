"""``skinbatch serve``: run the local CPU Triton on a model repository until SIGTERM or Ctrl-C.

Also runnable as ``python -m skinbatch.serve.cli``.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import click

from skinbatch.contract import EXIT_CODE_EPILOG, ExitCode
from skinbatch.settings import JSON, REPOSITORY, WORK_DIR, Alias, lone

from .config import DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT, DEFAULT_METRICS_PORT, TritonServerConfig
from .errors import ServeError
from .server import LocalTriton

EXIT_OK = int(ExitCode.OK)
EXIT_SERVER_DIED = int(ExitCode.SERVER_DIED)

TRITON_METRICS_PORT = lone("triton_metrics_port", "The served Triton's Prometheus metrics port; 0 picks a free one.",
                           DEFAULT_METRICS_PORT, type=click.IntRange(0, 65535), env=False)
_EPILOG = (
    "Exit codes: 0 stopped cleanly on SIGTERM/Ctrl-C; 2 bad usage; 14 this environment cannot run the "
    "bundled Triton (glibc, stub, numpy); 15 the server did not start (repository, model, port, timeout); "
    "16 the server died or did not stop cleanly. " + EXIT_CODE_EPILOG
)


class _Shutdown(Exception):
    """Raised from the signal handler, so a stop request interrupts start-up and the serving loop alike."""


def _request_shutdown(signum: int, frame: FrameType | None) -> None:
    raise _Shutdown(signum)


class _Reporter:
    """Human-readable lines, or one JSON object per line with ``--json``."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def event(self, name: str, text: str, **fields: Any) -> None:
        if self.as_json:
            click.echo(json.dumps({"event": name, **fields}, default=str))
        else:
            click.echo(text)
        sys.stdout.flush()

    def error(self, error: BaseException, **fields: Any) -> None:
        if self.as_json:
            self.event("error", "", type=type(error).__name__, message=str(error), **fields)
        else:
            click.echo(f"Error: {error}", err=True)


@click.command("serve", epilog=_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@REPOSITORY.option(required=True, aliases=(Alias("--model-repository"),))
@click.option("--http-port", type=click.IntRange(0, 65535), default=DEFAULT_HTTP_PORT, show_default=True,
              help="HTTP/REST port; 0 picks a free one.")
@click.option("--grpc-port", type=click.IntRange(0, 65535), default=DEFAULT_GRPC_PORT, show_default=True,
              help="gRPC port; 0 picks a free one.")
@TRITON_METRICS_PORT.option(aliases=(Alias("--metrics-port"),))
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Address to bind; 0.0.0.0 exposes the (unauthenticated) server to the network.")
@click.option("--log-file", type=click.Path(path_type=Path, dir_okay=False),
              help="Server log (Triton and the models' output). Default: in the work folder.")
@click.option("--log-verbose", type=click.IntRange(0), default=0, show_default=True,
              help="Triton's --log-verbose level.")
@WORK_DIR.option(help="Where the python backend is assembled. Default: a temporary folder.")
@click.option("--startup-timeout", type=click.FloatRange(min=1), default=120.0, show_default=True,
              help="Seconds to wait for every model to be ready.")
@click.option("--triton-arg", "extra_args", multiple=True, metavar="ARG",
              help="Extra tritonserver argument, e.g. --triton-arg=--model-load-thread-count=2 (repeatable).")
@JSON.option(help="Print events (started, ready, stopped, error) as JSON lines.")
def serve(
    repository: Path,
    http_port: int,
    grpc_port: int,
    triton_metrics_port: int,
    address: str,
    log_file: Path | None,
    log_verbose: int,
    work_dir: Path | None,
    startup_timeout: float,
    extra_args: tuple[str, ...],
    as_json: bool,
) -> None:
    """Run the Triton bundled in nvidia-pytriton on the CPU, on REPOSITORY, until SIGTERM or Ctrl-C."""
    config = TritonServerConfig(
        repository=repository,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=triton_metrics_port,
        address=address,
        work_dir=work_dir,
        log_file=log_file,
        log_verbose=log_verbose,
        startup_timeout_s=startup_timeout,
        extra_args=extra_args,
    )
    sys.exit(run_server(config, _Reporter(as_json)))


def run_server(config: TritonServerConfig, reporter: _Reporter) -> int:
    """Start, report, serve until a stop signal, stop; return the exit code."""
    server = LocalTriton(config)
    previous = {sig: signal.signal(sig, _request_shutdown) for sig in (signal.SIGTERM, signal.SIGINT)}
    code = EXIT_OK
    try:
        server.start()
        reporter.event(
            "started",
            f"tritonserver (pid {server.pid}) starting on {config.repository}\n"
            f"  HTTP     {server.http_url}\n"
            f"  gRPC     {server.grpc_url}\n"
            f"  metrics  {server.metrics_url}\n"
            f"  log      {server.log_path}",
            pid=server.pid,
            repository=str(config.repository),
            http_url=server.http_url,
            grpc_url=server.grpc_url,
            metrics_url=server.metrics_url,
            ports=server.ports,
            log_file=str(server.log_path),
        )
        elapsed = server.wait_ready()
        reporter.event("ready", f"Ready in {elapsed:.1f} s. Stop with Ctrl-C or SIGTERM.", startup_s=round(elapsed, 3))
        while server.is_running():
            time.sleep(0.5)
        code = EXIT_SERVER_DIED
        reporter.event(
            "died",
            f"Error: tritonserver exited on its own (code {server.returncode}); see {server.log_path}",
            exit_code=server.returncode,
            log_file=str(server.log_path),
        )
    except _Shutdown:
        code = EXIT_OK
    except ServeError as error:
        # Reported here, not by skinbatch.cli: with --json the error is one more event on stdout, and the
        # server is stopped (and a temporary log kept) before the command exits with the error's own code:
        # 14 for the environment (TritonEnvironmentError), 15 for a server that did not start.
        reporter.error(error, log_file=str(server.log_path) if server.pid else None)
        code = int(error.exit_code)
    finally:
        # A second signal while draining means "now": kill instead of waiting.
        for sig in previous:
            signal.signal(sig, lambda signum, frame: server.kill())
        returncode = server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    # Killed by our own SIGTERM is a clean stop too: it happens when the request comes during model
    # loading, before Triton installs its signal handler.
    if code == EXIT_OK and returncode not in (None, 0, -signal.SIGTERM):
        reporter.event("stopped", f"tritonserver stopped with code {returncode}", exit_code=returncode)
        code = EXIT_SERVER_DIED
    elif code == EXIT_OK:
        reporter.event("stopped", "Stopped.", exit_code=returncode)
    if code == EXIT_OK or config.log_file is not None:
        server.cleanup()  # keep a temporary log after a failure, for the path printed above
    return code


if __name__ == "__main__":
    from skinbatch.cli import run_standalone

    run_standalone(serve)
