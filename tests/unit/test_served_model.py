"""A rollout under a running client: answers from another model version are never named with the old card."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from skinbatch.consumer.config import ConsumerConfig
from skinbatch.consumer.jobs import Job
from skinbatch.consumer.service import ScoringConsumer
from skinbatch.contract import ExitCode
from skinbatch.modelcard import ModelCard
from skinbatch.scoring import Answer, ServedModelChanged, TritonScorer
from skinbatch.scoring.client import check_served_version
from skinbatch.taxonomy import default_taxonomy


@pytest.fixture(scope="module")
def card() -> ModelCard:
    t = default_taxonomy()
    return ModelCard(name="demo", version="1", trained=False, source={}, target="cpu", precision="fp32",
                     preprocessing={"size": 299}, max_batch_size=8,
                     taxonomy={"sha256": t.sha256(), "name": t.name, "training_classes": t.training_classes,
                               "coarse_labels": t.coarse_labels, "fine_labels": t.fine_labels})


def _answer(version: str, card: Any) -> Answer:
    """What the transport hands back: outputs and the version of the model that answered."""
    n = len(card.training_classes)
    return Answer(outputs={"TRAINING_PROBS": np.full((1, n), 1 / n, np.float32),
                           "COARSE_PROBS": np.full((1, len(card.coarse_labels)), 0.1, np.float32),
                           "FINE_PROBS": np.full((1, len(card.fine_labels)), 0.1, np.float32),
                           "MALIGNANCY": np.array([0.5], np.float32)}, model_version=version)


class _Transport:
    """Answers every inference with one fixed version."""

    def __init__(self, version: str, card: Any) -> None:
        self.version, self.card = version, card

    def infer_async(self, model: str, images: Any, outputs: Any, timeout_s: float, callback: Any) -> None:
        callback(_answer(self.version, self.card), None)


def test_check_served_version(card: Any) -> None:
    check_served_version("skin_classifier", card.version, card)
    check_served_version("skin_classifier", "", card)  # a server that does not say: trusted
    with pytest.raises(ServedModelChanged, match="version 7 of 'skin_classifier'") as info:
        check_served_version("skin_classifier", "7", card)
    assert (info.value.served, info.value.card_version) == ("7", card.version)


def test_scores_are_named_only_with_the_cards_own_version(card: Any) -> None:
    got: list[tuple[Any, Any]] = []
    image = np.zeros((1, 299, 299, 3), np.uint8)
    for version in (card.version, "99"):
        scorer = TritonScorer("x:1", transport=_Transport(version, card))  # type: ignore[arg-type]
        scorer._card = card
        scorer.infer_async(image, lambda s, e: got.append((s, e)))
    (scores, error), (no_scores, changed) = got
    assert error is None and scores[0].malignancy == pytest.approx(0.5)
    assert no_scores is None and isinstance(changed, ServedModelChanged)


def test_consumer_stops_without_publishing_when_the_model_changes(card: Any) -> None:
    from kafka import TopicPartition

    service = ScoringConsumer(ConsumerConfig(bootstrap_servers="x:1", triton_url="x:2", metrics_port=None))
    service.card = card
    published: list[Job] = []
    service._publish_results = published.append  # type: ignore[method-assign]
    tp = TopicPartition("req", 0)
    jobs = []
    for offset in (5, 6):
        service.tracker.started(tp, offset)
        job = Job(tp=tp, offset=offset, generation=0, timestamp_ms=0, polled=0.0)
        job.scores, job.infer_ms, job.remaining_frames = [None], [0.0], 1
        jobs.append(job)
    service._infer_in_flight = 2
    service._on_inferred(jobs[0], 0, 0.0, None, ServedModelChanged("skin_classifier", "2", card.version))
    assert service._stop.is_set() and service._exit_code == ExitCode.MODEL_CHANGED
    assert published == [] and service.metrics.errors.labels("model_changed")._value.get() == 1
    # A second answer from the new version changes nothing more; the first is not retried.
    service._on_inferred(jobs[1], 0, 0.0, None, ServedModelChanged("skin_classifier", "2", card.version))
    assert service.metrics.errors.labels("model_changed")._value.get() == 1
    assert not service._infer_backlog and service._triton_down_since is None
    assert service.tracker.to_commit() in ({}, {tp: 5})  # nothing past the done prefix



def test_a_model_rebuilt_under_the_same_version_is_caught_by_its_card(card: Any) -> None:
    from dataclasses import replace

    service = ScoringConsumer(ConsumerConfig(bootstrap_servers="x:1", triton_url="x:2", metrics_port=None))
    service.card = card
    same = SimpleNamespace(load_card=lambda: card)
    service._check_card(same)  # type: ignore[arg-type]
    service._handle_events(timeout=0)
    assert not service._stop.is_set()
    rebuilt = replace(card, source={"sha256": "f" * 64})  # new weights, same version number
    service._check_card(SimpleNamespace(load_card=lambda: rebuilt))  # type: ignore[arg-type]
    service._handle_events(timeout=0)
    assert service._stop.is_set() and service._exit_code == ExitCode.MODEL_CHANGED


def test_an_unreadable_card_is_not_a_change(card: Any) -> None:
    from skinbatch.scoring import TritonUnavailable

    def fail() -> Any:
        raise TritonUnavailable("down")

    service = ScoringConsumer(ConsumerConfig(bootstrap_servers="x:1", triton_url="x:2", metrics_port=None))
    service.card = card
    service._check_card(SimpleNamespace(load_card=fail))  # type: ignore[arg-type]
    service._handle_events(timeout=0)
    assert not service._stop.is_set()
