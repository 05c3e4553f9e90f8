"""One interface to Triton over gRPC or HTTP: health, model configuration, statistics and inference.

Both protocols do everything skinbatch needs, so every command works over either; the URL chooses
(:mod:`skinbatch.connect.triton`). Answers come back in one form whatever the protocol: the model
configuration and statistics as Triton's JSON, inference as :class:`Answer`.

* gRPC: tritonclient's gRPC client; asynchronous inference through its callback API.
* HTTP: tritonclient's asyncio client (aiohttp), run on one event-loop thread owned by the
  transport; synchronous calls wait on it. (tritonclient's synchronous HTTP client is built on gevent,
  which does not mix with the threads of the consumer and triage.)

Errors are :class:`skinbatch.contract.TritonUnavailable` (no answer, an error status) or
:class:`TritonTLSError` (a failed handshake: a TLS client against a plain server or the reverse, an
untrusted certificate), so callers tell "down" from "misconfigured".
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from skinbatch.connect.triton import TritonEndpoint, TritonTLS
from skinbatch.contract import ExitCode, Tensor, TritonUnavailable

log = logging.getLogger("skinbatch.scoring")

T = TypeVar("T")


class TritonTLSError(TritonUnavailable):
    """The TLS handshake with Triton failed: say which side is wrong, not just "unavailable"."""

    exit_code = ExitCode.TLS


@dataclass(frozen=True)
class ShmInput:
    """The model input as a span of a registered system shared-memory region (uint8 ``shape``)."""

    region: str
    offset: int
    shape: tuple[int, ...]

    @property
    def byte_size(self) -> int:
        size = 1
        for n in self.shape:
            size *= n
        return size


Images = np.ndarray | ShmInput
"""What a request carries: the pixels themselves, or where they lie in shared memory."""


@dataclass(frozen=True)
class Answer:
    """One inference answer: the requested outputs and the version of the model that produced them."""

    outputs: dict[str, np.ndarray]
    model_version: str


AnswerCallback = Callable[[Answer | None, Exception | None], None]


class Transport(Protocol):
    """What skinbatch asks of Triton. Implementations are thread-safe."""

    endpoint: TritonEndpoint

    def server_live(self, timeout_s: float) -> bool: ...
    def server_ready(self, timeout_s: float) -> bool: ...
    def model_ready(self, model: str, timeout_s: float) -> bool: ...
    def repository_index(self, timeout_s: float) -> list[dict[str, Any]]: ...
    def model_config(self, model: str, timeout_s: float) -> dict[str, Any]: ...
    def statistics(self, timeout_s: float) -> dict[str, Any]: ...
    def infer(self, model: str, images: Images, outputs: Sequence[str], timeout_s: float) -> Answer: ...
    def infer_async(self, model: str, images: Images, outputs: Sequence[str], timeout_s: float,
                    callback: AnswerCallback) -> None: ...
    def register_shm(self, region: str, key: str, byte_size: int, timeout_s: float) -> None: ...
    def unregister_shm(self, region: str, timeout_s: float) -> None: ...
    def close(self) -> None: ...


def open_transport(endpoint: TritonEndpoint, tls: TritonTLS | None = None) -> Transport:
    """A transport for ``endpoint`` (its scheme chooses the protocol and TLS)."""
    tls = tls or TritonTLS()
    tls.check(endpoint)
    if endpoint.protocol == "grpc":
        return GrpcTransport(endpoint, tls)
    return HttpTransport(endpoint, tls)


# -- errors -----------------------------------------------------------------------------------------

_TLS_MARKERS = ("handshake", "certificate", "wrong_version_number", "wrong version number", "ssl_error",
                "sslerror", "tlsv1 alert", "sslv3 alert", "record layer", "answers a tls handshake")
_REFUSED_MARKERS = ("refused", "connect call failed", "cannot connect to host", "deadline", "timeout", "timed out")


def _describe(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    text = message() if callable(message) else str(exc)
    return (text or type(exc).__name__).strip().splitlines()[0][:300] if text else type(exc).__name__


def speaks_tls(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """Whether a TLS server answers on ``host:port``: a handshake (with no verification) completes, or
    the server answers it with a TLS alert (a client certificate it wants, say). A plain server makes
    the handshake fail on the first bytes, or closes the connection."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock, \
                context.wrap_socket(sock, server_hostname=host):
            return True
    except ssl.SSLError as exc:
        return "ALERT" in str(exc).upper()
    except OSError:
        return False


def _classify(endpoint: TritonEndpoint, exc: BaseException) -> TritonUnavailable:
    """Triton's error, turned into ours; a handshake failure names both likely causes.

    A plain gRPC client against a TLS port only sees "Socket closed", which a crashing server also
    gives; when the connection was not simply refused, the port is asked whether it speaks TLS.
    """
    if isinstance(exc, TritonUnavailable):
        return exc
    text = _describe(exc)
    lowered = text.lower()
    refused = any(marker in lowered for marker in _REFUSED_MARKERS)
    if not endpoint.tls and not refused and speaks_tls(endpoint.host, endpoint.port):
        text = f"{text}; the port answers a TLS handshake"
    tls_failure = isinstance(exc, ssl.SSLError) or isinstance(getattr(exc, "__cause__", None), ssl.SSLError)
    if tls_failure or any(marker in text.lower() for marker in _TLS_MARKERS):
        if endpoint.tls:
            hint = (f"check that Triton serves TLS on this port and that --triton-ca names the CA that signed its "
                    f"certificate; for a plain endpoint use {endpoint.protocol}://{endpoint.address}")
        else:
            scheme = "grpcs" if endpoint.protocol == "grpc" else "https"
            hint = f"if Triton serves TLS on this port, use {scheme}://{endpoint.address}"
        return TritonTLSError(f"the TLS handshake with Triton at {endpoint.url} failed ({text}): {hint}")
    return TritonUnavailable(f"Triton at {endpoint.url}: {text}")


# -- gRPC -------------------------------------------------------------------------------------------


class GrpcTransport:
    def __init__(self, endpoint: TritonEndpoint, tls: TritonTLS) -> None:
        import tritonclient.grpc as grpcclient

        self.endpoint = endpoint
        self._grpc = grpcclient
        self._client = grpcclient.InferenceServerClient(endpoint.address, **tls.grpc_kwargs(endpoint))
        self._admin = tls.admin_headers("grpc")
        self._stream_open = False

    def _keep_channel_thread(self) -> None:
        """Hold one idle stream open on the channel, so that gRPC keeps its one polling thread.

        gRPC Python starts a thread to poll a channel whenever a call begins with none in progress, and
        that thread ends with the last call: a consumer that waits for each answer before sending on
        paid a thread start (and the wait for it) on most requests. An idle ``ModelStreamInfer`` that
        sends nothing keeps one call in progress. When it fails (Triton restarted), the next request
        opens another; until then requests work as before."""
        if self._stream_open:
            return
        self._client.stop_stream(cancel_requests=True)  # a failed one: tritonclient holds one at a time

        def ended(result: Any = None, error: Any = None) -> None:
            self._stream_open = False

        try:
            self._client.start_stream(ended)
        except Exception as exc:  # noqa: BLE001 - only an optimisation: requests go without it
            log.debug("no idle stream: %s", exc)
            return
        self._stream_open = True

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every failure to answer becomes one of our two types
            raise _classify(self.endpoint, exc) from exc

    def server_live(self, timeout_s: float) -> bool:
        return bool(self._call(self._client.is_server_live, client_timeout=timeout_s))

    def server_ready(self, timeout_s: float) -> bool:
        return bool(self._call(self._client.is_server_ready, client_timeout=timeout_s))

    def model_ready(self, model: str, timeout_s: float) -> bool:
        return bool(self._call(self._client.is_model_ready, model, client_timeout=timeout_s))

    def repository_index(self, timeout_s: float) -> list[dict[str, Any]]:
        index = self._call(self._client.get_model_repository_index, headers=self._admin, as_json=True,
                           client_timeout=timeout_s)
        return list(index.get("models", []))

    def model_config(self, model: str, timeout_s: float) -> dict[str, Any]:
        config = self._call(self._client.get_model_config, model, as_json=True, client_timeout=timeout_s)
        return dict(config.get("config", config))

    def statistics(self, timeout_s: float) -> dict[str, Any]:
        return dict(self._call(self._client.get_inference_statistics, as_json=True, client_timeout=timeout_s))

    def _request(self, images: Images, outputs: Sequence[str]) -> tuple[list[Any], list[Any]]:
        inp = self._grpc.InferInput(Tensor.IMAGE, list(images.shape), "UINT8")
        _set_input(inp, images)
        return [inp], [self._grpc.InferRequestedOutput(name) for name in outputs]

    def register_shm(self, region: str, key: str, byte_size: int, timeout_s: float) -> None:
        self._call(self._client.register_system_shared_memory, region, key, byte_size, headers=self._admin,
                   client_timeout=timeout_s)

    def unregister_shm(self, region: str, timeout_s: float) -> None:
        self._call(self._client.unregister_system_shared_memory, region, headers=self._admin,
                   client_timeout=timeout_s)

    def infer(self, model: str, images: Images, outputs: Sequence[str], timeout_s: float) -> Answer:
        inputs, requested = self._request(images, outputs)
        result = self._call(self._client.infer, model, inputs, outputs=requested, client_timeout=timeout_s)
        return _answer(result, outputs, result.get_response().model_version)

    def infer_async(self, model: str, images: Images, outputs: Sequence[str], timeout_s: float,
                    callback: AnswerCallback) -> None:
        inputs, requested = self._request(images, outputs)
        endpoint = self.endpoint

        # tritonclient passes ``result=`` and ``error=`` by keyword; other names fail silently in gRPC's
        # thread and the caller waits forever.
        def done(result: Any = None, error: Any = None) -> None:
            if error is not None:
                callback(None, _classify(endpoint, error))
                return
            try:
                answer = _answer(result, outputs, result.get_response().model_version)
            except Exception as exc:  # noqa: BLE001 - reported, never lost in a gRPC thread
                callback(None, exc)
                return
            callback(answer, None)

        self._keep_channel_thread()
        self._call(self._client.async_infer, model, inputs, done, outputs=requested, client_timeout=timeout_s)

    def close(self) -> None:
        self._client.stop_stream(cancel_requests=True)  # not waiting for a Triton that may not answer
        self._client.close()


def _set_input(inp: Any, images: Images) -> None:
    if isinstance(images, ShmInput):
        inp.set_shared_memory(images.region, images.byte_size, images.offset)
    else:
        inp.set_data_from_numpy(images)


def _answer(result: Any, outputs: Sequence[str], version: Any) -> Answer:
    return Answer(outputs={name: result.as_numpy(name) for name in outputs}, model_version=str(version or ""))


# -- HTTP -------------------------------------------------------------------------------------------


class HttpTransport:
    """tritonclient's asyncio HTTP client on an event loop of its own (one daemon thread)."""

    def __init__(self, endpoint: TritonEndpoint, tls: TritonTLS, conn_limit: int = 64) -> None:
        import tritonclient.http.aio as httpclient

        self.endpoint = endpoint
        self._http = httpclient
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="triton-http", daemon=True)
        self._thread.start()
        context = tls.ssl_context() if endpoint.tls else None
        self._admin = tls.admin_headers("http")

        async def make() -> Any:
            return httpclient.InferenceServerClient(endpoint.address, conn_limit=conn_limit, ssl=endpoint.tls,
                                                    ssl_context=context)

        self._client = asyncio.run_coroutine_threadsafe(make(), self._loop).result()
        self._closed = False

    def _submit(self, make: Callable[[], Coroutine[Any, Any, T]], timeout_s: float) -> Future[T]:
        async def bounded() -> T:
            return await asyncio.wait_for(make(), timeout_s)

        if self._closed:
            raise TritonUnavailable(f"the client for Triton at {self.endpoint.url} is closed")
        return asyncio.run_coroutine_threadsafe(bounded(), self._loop)

    def _wait(self, make: Callable[[], Coroutine[Any, Any, T]], timeout_s: float) -> T:
        try:
            return self._submit(make, timeout_s).result(timeout_s + 5)
        except Exception as exc:  # noqa: BLE001 - every failure to answer becomes one of our two types
            raise _classify(self.endpoint, exc) from exc

    def server_live(self, timeout_s: float) -> bool:
        return bool(self._wait(self._client.is_server_live, timeout_s))

    def server_ready(self, timeout_s: float) -> bool:
        return bool(self._wait(self._client.is_server_ready, timeout_s))

    def model_ready(self, model: str, timeout_s: float) -> bool:
        return bool(self._wait(lambda: self._client.is_model_ready(model), timeout_s))

    def repository_index(self, timeout_s: float) -> list[dict[str, Any]]:
        return list(self._wait(lambda: self._client.get_model_repository_index(headers=self._admin), timeout_s))

    def model_config(self, model: str, timeout_s: float) -> dict[str, Any]:
        return dict(self._wait(lambda: self._client.get_model_config(model), timeout_s))

    def statistics(self, timeout_s: float) -> dict[str, Any]:
        return dict(self._wait(self._client.get_inference_statistics, timeout_s))

    def register_shm(self, region: str, key: str, byte_size: int, timeout_s: float) -> None:
        self._wait(lambda: self._client.register_system_shared_memory(region, key, byte_size, headers=self._admin),
                   timeout_s)

    def unregister_shm(self, region: str, timeout_s: float) -> None:
        self._wait(lambda: self._client.unregister_system_shared_memory(region, headers=self._admin), timeout_s)

    def _infer(self, model: str, images: Images, outputs: Sequence[str]) -> Callable[[], Coroutine[Any, Any, Answer]]:
        http = self._http
        inp = http.InferInput(Tensor.IMAGE, list(images.shape), "UINT8")
        if isinstance(images, ShmInput):
            inp.set_shared_memory(images.region, images.byte_size, images.offset)
        else:
            inp.set_data_from_numpy(images, binary_data=True)
        requested = [http.InferRequestedOutput(name, binary_data=True) for name in outputs]

        async def call() -> Answer:
            result = await self._client.infer(model, [inp], outputs=requested)
            return _answer(result, outputs, result.get_response().get("model_version"))

        return call

    def infer(self, model: str, images: Images, outputs: Sequence[str], timeout_s: float) -> Answer:
        return self._wait(self._infer(model, images, outputs), timeout_s)

    def infer_async(self, model: str, images: Images, outputs: Sequence[str], timeout_s: float,
                    callback: AnswerCallback) -> None:
        future = self._submit(self._infer(model, images, outputs), timeout_s)
        endpoint = self.endpoint

        def done(f: Future[Answer]) -> None:
            try:
                answer = f.result()
            except Exception as exc:  # noqa: BLE001 - reported, never lost on the loop thread
                callback(None, _classify(endpoint, exc))
                return
            callback(answer, None)

        future.add_done_callback(done)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            asyncio.run_coroutine_threadsafe(self._client.close(), self._loop).result(5)
        except Exception:  # noqa: BLE001 - closing is best effort
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


__all__ = ["Answer", "AnswerCallback", "GrpcTransport", "HttpTransport", "Images", "ShmInput", "Transport",
           "TritonTLSError", "open_transport"]
