"""A gRPC client for the ``skin_classifier`` ensemble, shared by the consumer and triage.

Each image goes to Triton as its own request; many are kept in flight, so that the server's dynamic
batcher, not the client, forms the batches.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from skinbatch.modelcard import ENSEMBLE_NAME, ModelCard, card_from_model_config

from .scores import OUTPUTS, Scores, scores_from_outputs

ScoresCallback = Callable[[list[Scores] | None, Exception | None], None]


class TritonUnavailable(RuntimeError):
    """Triton cannot be reached or is not ready. An infrastructure fault: retry, never dead-letter."""


class ServedModelChanged(RuntimeError):
    """Triton answered with another version of the ensemble than the model card in hand describes.

    A model was rolled out (or back) while this client ran. The outputs are not named: the labels, the
    taxonomy and the version in the card may all be wrong for them. Read the card again (restart).
    """

    def __init__(self, model: str, served: str, card_version: str, detail: str | None = None) -> None:
        if detail:
            text = f"Triton now serves another {model!r} (version {served}): {detail} since start-up"
        else:
            text = (f"Triton now serves version {served} of {model!r}, but the model card read at start-up is "
                    f"version {card_version}")
        super().__init__(text)
        self.served = served
        self.card_version = card_version


def check_served_version(model: str, served: str | None, card: ModelCard) -> None:
    """Raise :class:`ServedModelChanged` unless the version that answered is the card's (None: not reported)."""
    if served and served != card.version:
        raise ServedModelChanged(model, served, card.version)


def grpc_target(url: str) -> str:
    """``grpc://host:port`` or ``host:port`` → ``host:port`` (what tritonclient.grpc expects)."""
    for prefix in ("grpc://", "http://", "https://"):
        if url.startswith(prefix):
            url = url[len(prefix):]
    return url.rstrip("/")


class TritonScorer:
    """Scores preprocessed images (uint8 N×S×S×3) on a Triton server."""

    def __init__(self, url: str, model: str = ENSEMBLE_NAME, timeout_s: float = 30.0, *, ssl: bool = False,
                 root_certificates: str | None = None, private_key: str | None = None,
                 certificate_chain: str | None = None) -> None:
        self.url = grpc_target(url)
        self.model = model
        self.timeout_s = timeout_s
        self._client = grpcclient.InferenceServerClient(
            self.url, ssl=ssl, root_certificates=root_certificates, private_key=private_key,
            certificate_chain=certificate_chain)
        self._card: ModelCard | None = None

    # -- health and the model card ----------------------------------------------------------
    def is_ready(self) -> bool:
        try:
            return bool(self._client.is_server_ready(client_timeout=2.0)) and bool(
                self._client.is_model_ready(self.model, client_timeout=2.0)
            )
        except Exception:  # noqa: BLE001 - any failure to answer means "not ready"
            return False

    def wait_ready(self, timeout_s: float = 60.0, poll_s: float = 0.5) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.is_ready():
            if time.monotonic() > deadline:
                raise TritonUnavailable(
                    f"Triton at {self.url} did not report model {self.model!r} ready within {timeout_s:.0f} s. "
                    "Check `skinbatch serve` (or the Triton container) and its log."
                )
            time.sleep(poll_s)

    @property
    def card(self) -> ModelCard:
        if self._card is None:
            self._card = self.load_card()
        return self._card

    def load_card(self) -> ModelCard:
        """Read the model card through Triton's model-configuration API."""
        try:
            config = self._client.get_model_config(self.model, as_json=True, client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise TritonUnavailable(f"cannot read the configuration of {self.model!r} at {self.url}: {exc}") from exc
        self._card = card_from_model_config(config.get("config", config))
        return self._card

    # -- inference --------------------------------------------------------------------------
    def _inputs(self, images: np.ndarray) -> tuple[list[Any], list[Any]]:
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"expected uint8 N×H×W×3 images, got {images.dtype} {images.shape}")
        inp = grpcclient.InferInput("IMAGE", list(images.shape), "UINT8")
        inp.set_data_from_numpy(np.ascontiguousarray(images))
        return [inp], [grpcclient.InferRequestedOutput(name) for name in OUTPUTS]

    def infer(self, images: np.ndarray) -> list[Scores]:
        """Score a batch synchronously."""
        inputs, outputs = self._inputs(images)
        try:
            result = self._client.infer(self.model, inputs, outputs=outputs, client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise TritonUnavailable(str(exc)) from exc
        check_served_version(self.model, result.get_response().model_version, self.card)
        return scores_from_outputs({n: result.as_numpy(n) for n in OUTPUTS}, self.card)

    def infer_raw(self, images: np.ndarray) -> dict[str, np.ndarray]:
        inputs, outputs = self._inputs(images)
        result = self._client.infer(self.model, inputs, outputs=outputs, client_timeout=self.timeout_s)
        return {n: result.as_numpy(n) for n in OUTPUTS}

    def infer_async(self, images: np.ndarray, callback: ScoresCallback) -> None:
        """Score in the background; ``callback(scores, error)`` runs on a gRPC thread."""
        inputs, outputs = self._inputs(images)
        card = self.card
        self._client.async_infer(
            self.model,
            inputs,
            functools.partial(_deliver, callback, card, self.model),
            outputs=outputs,
            client_timeout=self.timeout_s,
        )

    def statistics(self) -> dict[str, Any]:
        """Triton's inference statistics for all models (JSON form)."""
        return self._client.get_inference_statistics(as_json=True, client_timeout=self.timeout_s)

    def close(self) -> None:
        self._client.close()


def _deliver(callback: ScoresCallback, card: ModelCard, model: str, result: Any = None, error: Any = None) -> None:
    # tritonclient passes ``result=`` and ``error=`` by keyword; other names fail silently in gRPC's thread.
    if error is not None:
        callback(None, TritonUnavailable(str(error)))
        return
    try:
        check_served_version(model, result.get_response().model_version, card)
        callback(scores_from_outputs({n: result.as_numpy(n) for n in OUTPUTS}, card), None)
    except Exception as exc:  # noqa: BLE001 - report, never lose the callback
        callback(None, exc)
