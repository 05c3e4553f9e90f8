"""Is Triton live and ready, and is each model ready (with which version)?

Used by ``skinbatch status`` and, before any work starts, by ``triage`` and ``evaluate``, so that all
three tell a down server from a model that did not load in the same words and with the same exit code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from skinbatch.modelcard import ENSEMBLE_NAME

from .exitcodes import ExitCode


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
    required_model: str = ENSEMBLE_NAME

    @property
    def problems(self) -> list[str]:
        """One sentence per problem, each saying what to do next."""
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
        if not self.live:
            return ExitCode.TRITON_DOWN
        return ExitCode.NOT_READY if self.problems else ExitCode.OK

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["problems"] = self.problems
        return d


def health_from_index(url: str, live: bool, ready: bool, index: list[dict[str, Any]],
                      required_model: str = ENSEMBLE_NAME) -> TritonHealth:
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


def check_triton(url: str, model: str = ENSEMBLE_NAME, timeout_s: float = 3.0) -> TritonHealth:
    """Ask a Triton (gRPC ``host:port``) whether it is live and ready, and about every model it knows."""
    import tritonclient.grpc as grpcclient

    from skinbatch.scoring import grpc_target

    target = grpc_target(url)
    client = grpcclient.InferenceServerClient(target)
    try:
        try:
            live = bool(client.is_server_live(client_timeout=timeout_s))
        except Exception as exc:  # noqa: BLE001 - any failure to answer means "down"
            return TritonHealth(url=target, live=False, error=_short(exc), required_model=model)
        try:
            ready = bool(client.is_server_ready(client_timeout=timeout_s))
            index = client.get_model_repository_index(as_json=True, client_timeout=timeout_s).get("models", [])
        except Exception as exc:  # noqa: BLE001
            return TritonHealth(url=target, live=live, ready=False, error=_short(exc), required_model=model)
        return health_from_index(target, live, ready, index, required_model=model)
    finally:
        client.close()


def _short(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    text = message() if callable(message) else str(exc)
    return (text or type(exc).__name__).splitlines()[0][:200]
