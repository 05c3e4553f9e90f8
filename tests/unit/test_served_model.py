"""A rollout under a running client: answers from another model version are never named with the old card."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from skinbatch.consumer.config import ConsumerConfig
from skinbatch.consumer.metrics import ConsumerMetrics
from skinbatch.consumer.modelwatch import ModelWatch
from skinbatch.consumer.producer import ResultProducer
from skinbatch.consumer.service import ScoringConsumer
from skinbatch.contract import ExitCode
from skinbatch.modelcard import ModelCard
from skinbatch.scoring import Answer, ServedModelChanged, TritonScorer
from skinbatch.scoring.client import check_served_version
from skinbatch.scoring.pipeline import Mailbox
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
        transport = _Transport(version, card)
        served = {"parameters": {"model_card": {"string_value": card.to_json()}}}
        transport.model_config = lambda model, timeout_s: served  # type: ignore[attr-defined]
        scorer = TritonScorer("x:1", transport=transport)  # type: ignore[arg-type]
        scorer.infer_async(image, lambda s, e: got.append((s, e)))
    (scores, error), (no_scores, changed) = got
    assert error is None and scores[0].malignancy == pytest.approx(0.5)
    assert no_scores is None and isinstance(changed, ServedModelChanged)


class _NoKafka:
    """The consumer's Kafka clients are passed in; these tests never reach them."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the test should not use Kafka ({name})")


def _service(card: ModelCard) -> ScoringConsumer:
    producer = ResultProducer(lambda **sizes: _NoKafka(), lambda: {"res": 1 << 20, "dlq": 1 << 20})
    scorer = TritonScorer("x:2", transport=_Transport(card.version, card))  # type: ignore[arg-type]
    service = ScoringConsumer(ConsumerConfig.from_values(bootstrap_servers="x:1", triton_url="x:2", metrics_port=None),
                              kafka_consumer=_NoKafka(), producer=producer, scorer=scorer)
    service.card = card
    return service


def test_consumer_stops_without_publishing_when_the_model_changes(card: Any) -> None:
    service = _service(card)
    service.model_changed(ServedModelChanged("skin_classifier", "2", card.version))
    assert service.stopping and service.exit_code == ExitCode.MODEL_CHANGED
    assert service.pipeline.abandoned, "nothing more goes to Triton"
    assert service.metrics.errors.labels("model_changed")._value.get() == 1
    # A second answer from the new version changes nothing more.
    service.model_changed(ServedModelChanged("skin_classifier", "2", card.version))
    assert service.metrics.errors.labels("model_changed")._value.get() == 1
    assert service.source.tracker.to_commit() == {}  # nothing past the done prefix


def _watch(card: ModelCard, served: Any, mailbox: Mailbox, changed: list[Any], adopted: list[Any]) -> ModelWatch:
    return ModelWatch(SimpleNamespace(load_card=served, model="skin_classifier"), lambda: card, mailbox,  # type: ignore[arg-type]
                      ConsumerMetrics(), on_changed=changed.append, on_new_card=adopted.append)


def test_a_model_rebuilt_under_the_same_version_is_caught_by_its_card(card: Any) -> None:
    from dataclasses import replace

    mailbox, changed, adopted = Mailbox(), [], []
    _watch(card, lambda: card, mailbox, changed, adopted).check_card()
    mailbox.run()
    assert not changed and not adopted
    rebuilt = replace(card, source={"sha256": "f" * 64})  # new weights, same version number
    _watch(card, lambda: rebuilt, mailbox, changed, adopted).check_card()
    mailbox.run()
    assert len(changed) == 1 and isinstance(changed[0], ServedModelChanged) and not adopted


def test_a_card_with_a_new_reference_distribution_is_adopted_without_a_restart(card: Any) -> None:
    from dataclasses import replace

    mailbox, changed, adopted = Mailbox(), [], []
    updated = replace(card, reference_distribution={"counts": [1] * 10})
    _watch(card, lambda: updated, mailbox, changed, adopted).check_card()
    mailbox.run()
    assert not changed and adopted == [updated]


def test_an_unreadable_card_is_not_a_change(card: Any) -> None:
    from skinbatch.scoring import TritonUnavailable

    def fail() -> Any:
        raise TritonUnavailable("down")

    mailbox, changed, adopted = Mailbox(), [], []
    _watch(card, fail, mailbox, changed, adopted).check_card()
    mailbox.run()
    assert not changed and not adopted
