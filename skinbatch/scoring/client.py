"""A client for the ``skin_classifier`` ensemble, shared by the consumer, triage, evaluate and status.

It speaks gRPC or HTTP, with or without TLS, as its :class:`~skinbatch.connect.triton.TritonEndpoint`
says (:mod:`skinbatch.scoring.transport`), reads the model card through Triton, and turns answers into
:class:`~skinbatch.scoring.scores.Scores` named after that card. Every answer carries the version of the
ensemble that produced it; one that differs from the card's raises :class:`ServedModelChanged`, so that
nothing is ever named after the wrong model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from skinbatch.connect.triton import TritonEndpoint, TritonTLS, parse_triton_url
from skinbatch.contract import ENSEMBLE, SCORE_OUTPUTS, ServedModelChanged, Tensor, TritonUnavailable
from skinbatch.modelcard import ModelCard, card_from_model_config

from .scores import Scores, scores_from_outputs
from .transport import Answer, Images, ShmInput, Transport, TritonTLSError, open_transport

ScoresCallback = Callable[[list[Scores] | None, Exception | None], None]


def check_served_version(model: str, served: str | None, card: ModelCard) -> None:
    """Raise :class:`ServedModelChanged` unless the version that answered is the card's (None: not reported)."""
    if served and served != card.version:
        raise ServedModelChanged(model, served, card.version)


class TritonScorer:
    """Scores preprocessed images (uint8 N×S×S×3) on a Triton server."""

    def __init__(self, endpoint: TritonEndpoint | str, model: str = ENSEMBLE, timeout_s: float = 30.0, *,
                 tls: TritonTLS | None = None, transport: Transport | None = None) -> None:
        self.endpoint = parse_triton_url(endpoint) if isinstance(endpoint, str) else endpoint
        self.url = self.endpoint.url
        self.model = model
        self.timeout_s = timeout_s
        self._transport = transport or open_transport(self.endpoint, tls)
        self._card: ModelCard | None = None

    @property
    def transport(self) -> Transport:
        return self._transport

    # -- health and the model card ----------------------------------------------------------
    def is_ready(self) -> bool:
        try:
            return self._transport.server_ready(2.0) and self._transport.model_ready(self.model, 2.0)
        except TritonTLSError:
            raise  # not a server that is down: a misconfiguration that waiting will not fix
        except TritonUnavailable:
            return False

    @property
    def card(self) -> ModelCard:
        if self._card is None:
            self._card = self.load_card()
        return self._card

    def load_card(self) -> ModelCard:
        """Read the model card through Triton's model-configuration API."""
        try:
            config = self._transport.model_config(self.model, self.timeout_s)
        except TritonUnavailable as exc:
            raise type(exc)(f"cannot read the configuration of {self.model!r}: {exc}") from exc
        self._card = card_from_model_config(config)
        return self._card

    # -- inference --------------------------------------------------------------------------
    @staticmethod
    def _checked(images: Images) -> Images:
        if isinstance(images, ShmInput):
            return images
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"expected uint8 N×H×W×3 images, got {images.dtype} {images.shape}")
        return np.ascontiguousarray(images)

    def outputs(self, with_map: bool = False) -> tuple[str, ...]:
        """The outputs to ask for: the scores, and the malignancy map where wanted and served."""
        if with_map and self.card.serves_malignancy_map:
            return (*SCORE_OUTPUTS, Tensor.MALIGNANCY_MAP)
        return SCORE_OUTPUTS

    def _scores(self, answer: Answer, card: ModelCard) -> list[Scores]:
        check_served_version(self.model, answer.model_version, card)
        return scores_from_outputs(answer.outputs, card)

    def infer(self, images: Images, *, with_map: bool = False) -> list[Scores]:
        """Score a batch synchronously."""
        answer = self._transport.infer(self.model, self._checked(images), self.outputs(with_map), self.timeout_s)
        return self._scores(answer, self.card)

    def infer_async(self, images: Images, callback: ScoresCallback, *, with_map: bool = False) -> None:
        """Score a batch in the background; ``callback(scores, error)`` runs on a client thread."""
        card = self.card

        def done(answer: Answer | None, error: Exception | None) -> None:
            if error is not None or answer is None:
                callback(None, error or TritonUnavailable("Triton gave no answer"))
                return
            try:
                scores = self._scores(answer, card)
            except Exception as exc:  # noqa: BLE001 - report, never lose the callback
                callback(None, exc)
                return
            callback(scores, None)

        self._transport.infer_async(self.model, self._checked(images), self.outputs(with_map), self.timeout_s, done)

    def statistics(self) -> dict[str, Any]:
        """Triton's inference statistics for all models (JSON form)."""
        return self._transport.statistics(self.timeout_s)

    def close(self) -> None:
        self._transport.close()


__all__ = ["ScoresCallback", "ServedModelChanged", "TritonScorer", "TritonUnavailable", "check_served_version"]
