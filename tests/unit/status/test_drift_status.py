"""Score drift as `skinbatch status` reads it: the consumers' real Prometheus pages, the card's reference."""

from __future__ import annotations

import numpy as np
from prometheus_client import generate_latest

from skinbatch.consumer.metrics import ConsumerMetrics
from skinbatch.drift import ALERT_THRESHOLD, ReferenceDistribution
from skinbatch.status.drift import build_drift, snapshot
from skinbatch.status.prometheus import parse_metrics

MODEL = {"name": "demo", "version": "3", "weights_sha256": "w" * 64, "taxonomy_sha256": "t" * 64}


def _reference(rng: np.random.Generator) -> ReferenceDistribution:
    return ReferenceDistribution.from_scores(rng.beta(2, 8, 2000), MODEL, source={"kind": "test"})


def _page(metrics: ConsumerMetrics) -> list:
    return parse_metrics(generate_latest(metrics.registry).decode())


def _consumers(scores: np.ndarray, n: int = 2) -> list[ConsumerMetrics]:
    """``n`` consumers sharing the scores, as partitions would share them."""
    pages = [ConsumerMetrics() for _ in range(n)]
    for i, score in enumerate(scores):
        pages[i % n].malignancy.labels("3").observe(float(score))
    return pages


def test_a_stream_like_the_reference_is_not_drift_and_a_shifted_one_is() -> None:
    rng = np.random.default_rng(1)
    reference = _reference(rng)
    same = snapshot([_page(c) for c in _consumers(rng.beta(2, 8, 800))], "3")
    report = build_drift(same, None, reference, "3")
    assert report.window == "since start" and report.scores == 800
    assert report.psi is not None and report.psi < ALERT_THRESHOLD and report.level in ("ok", "moderate")
    shifted = snapshot([_page(c) for c in _consumers(rng.beta(5, 4, 800))], "3")
    report = build_drift(shifted, None, reference, "3")
    assert report.psi is not None and report.psi > ALERT_THRESHOLD and report.level == "shift"


def test_the_window_is_what_grew_between_two_readings() -> None:
    rng = np.random.default_rng(2)
    reference = _reference(rng)
    consumers = _consumers(rng.beta(2, 8, 1000))
    before = snapshot([_page(c) for c in consumers], "3")
    for i, score in enumerate(rng.beta(6, 3, 400)):  # then the population shifts
        consumers[i % 2].malignancy.labels("3").observe(float(score))
    now = snapshot([_page(c) for c in consumers], "3")
    interval = build_drift(now, before, reference, "3")
    since_start = build_drift(now, None, reference, "3")
    assert interval.window == "interval" and interval.scores == 400 and interval.level == "shift"
    assert since_start.psi is not None and interval.psi is not None and since_start.psi < interval.psi


def test_unknown_without_a_reference_or_enough_scores() -> None:
    rng = np.random.default_rng(3)
    few = snapshot([_page(c) for c in _consumers(rng.beta(2, 8, 50))], "3")
    assert build_drift(few, None, _reference(rng), "3").level == "unknown"
    assert "reference distribution" in build_drift(few, None, None, "3").note
    assert build_drift(few, None, _reference(rng), "9").note.startswith("no scores of model version 9")
