"""Is Triton live and ready, and is each model ready (with which version)?

Used by ``skinbatch status`` and, before any work starts, by ``triage`` and ``evaluate``, so that all
three tell a down server from a model that did not load in the same words and with the same exit code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from skinbatch.connect.options import TritonTarget
from skinbatch.connect.triton import TritonEndpoint, TritonTLS, parse_triton_url
from skinbatch.contract import ENSEMBLE, ExitCode

if TYPE_CHECKING:
    from skinbatch.scoring import Transport


@dataclass
class ModelHealth:
    name: str
    version: str
    state: str
    """Triton's repository-index state: READY, UNAVAILABLE, LOADING, UNLOADING, or "" if never loaded."""
    ready: bool
    reason: str = ""


@dataclass
class TritonHealth:
    url: str
    live: bool = False
    ready: bool = False
    error: str = ""
    """Why the server could not be asked (connection refused, timeout); empty when it answered."""
    models: list[ModelHealth] = field(default_factory=list)
    required_model: str = ENSEMBLE
    tls_error: bool = False
    """The TLS handshake failed: a plain client against a TLS server, the reverse, or an untrusted certificate."""

    @property
    def problems(self) -> list[str]:
        """One sentence per problem, each saying what to do next."""
        if self.tls_error:
            return [self.error]
        if not self.live:
            return [
                f"Triton at {self.url} is not reachable ({self.error or 'no answer'}). "
                "Start it (`skinbatch serve --repository …` or the Triton container) or fix --triton-url."
            ]
        out = []
        if not self.ready:
            out.append(f"Triton at {self.url} is live but not ready; a model may have failed to load: read its log.")
        names = {m.name for m in self.models}
        if self.required_model and self.required_model not in names:
            out.append(
                f"model {self.required_model!r} is not in Triton's repository at {self.url}; "
                "serve a repository written by `skinbatch convert`, or pass --model."
            )
        for m in self.models:
            if not m.ready:
                why = f": {m.reason}" if m.reason else ""
                out.append(f"model {m.name!r} (version {m.version or '?'}) is {m.state or 'not loaded'}{why}")
        return out

    @property
    def exit_code(self) -> ExitCode:
        if self.tls_error:
            return ExitCode.TLS
        if not self.live:
            return ExitCode.TRITON_DOWN
        return ExitCode.NOT_READY if self.problems else ExitCode.OK

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["problems"] = self.problems
        return d


def health_from_index(url: str, live: bool, ready: bool, index: list[dict[str, Any]],
                      required_model: str = ENSEMBLE) -> TritonHealth:
    """Pure: a TritonHealth from the answers (``index`` is the repository index, JSON form)."""
    models = []
    for entry in index:
        state = str(entry.get("state", ""))
        models.append(
            ModelHealth(
                name=str(entry.get("name", "")),
                version=str(entry.get("version", "")),
                state=state,
                ready=state == "READY",
                reason=str(entry.get("reason", "")),
            )
        )
    models.sort(key=lambda m: (m.name != required_model, m.name, m.version))
    return TritonHealth(url=url, live=live, ready=ready, models=models, required_model=required_model)


def check_triton(target: TritonTarget | TritonEndpoint | str, model: str = ENSEMBLE, timeout_s: float = 3.0,
                 transport: Transport | None = None) -> TritonHealth:
    """Ask a Triton (over gRPC or HTTP, as its URL says) whether it is live and ready, and about every
    model it knows. A failed TLS handshake is reported as such (``tls_error``), not as a server that is down."""
    from skinbatch.scoring import TritonTLSError, TritonUnavailable, open_transport

    endpoint, tls = _target(target)
    client = transport or open_transport(endpoint, tls)
    try:
        try:
            live = client.server_live(timeout_s)
        except TritonTLSError as exc:
            return TritonHealth(url=endpoint.url, live=False, error=str(exc), tls_error=True, required_model=model)
        except TritonUnavailable as exc:
            return TritonHealth(url=endpoint.url, live=False, error=_short(exc), required_model=model)
        try:
            ready = client.server_ready(timeout_s)
            index = client.repository_index(timeout_s)
        except TritonUnavailable as exc:
            return TritonHealth(url=endpoint.url, live=live, ready=False, error=_short(exc), required_model=model)
        return health_from_index(endpoint.url, live, ready, index, required_model=model)
    finally:
        if transport is None:
            client.close()


def _target(target: TritonTarget | TritonEndpoint | str) -> tuple[TritonEndpoint, TritonTLS]:
    if isinstance(target, TritonTarget):
        return target.endpoint, target.tls
    if isinstance(target, str):
        return parse_triton_url(target), TritonTLS()
    return target, TritonTLS()


def _short(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    text = message() if callable(message) else str(exc)
    return (text or type(exc).__name__).splitlines()[0][:200]
