"""Score drift for ``skinbatch status``: the PSI of P(malignant) over a recent window, against the model
card's reference distribution.

The consumers export the histogram ``skinbatch_consumer_malignancy`` (the bins of skinbatch.drift) per
model version, and each its own PSI gauge over its last scores. Status reads every consumer's metrics
page given to it; the window is what the histograms grew between its two readings, when that holds
enough scores, else everything since the consumers started. ``build_drift`` is pure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from skinbatch.drift import MIN_WINDOW, ReferenceDistribution, counts_from_cumulative, expected_psi, level, psi

from .prometheus import Sample

HISTOGRAM = "skinbatch_consumer_malignancy_bucket"
GAUGE = "skinbatch_consumer_malignancy_psi"


@dataclass
class DriftSnapshot:
    """One reading of the consumers' metrics pages."""

    buckets: dict[str, dict[str, float]] = field(default_factory=dict)
    """Model version → ``le`` → cumulative count, summed over the consumers."""
    gauges: list[float] = field(default_factory=list)
    """Each consumer's own PSI gauge for the card's version (its last scores)."""
    errors: list[str] = field(default_factory=list)


@dataclass
class ScoreDriftReport:
    """The PSI of the served P(malignant) over a recent window against the model card's reference. Not
    :class:`skinbatch.converter.drift.PrecisionDriftReport`, the FP16-against-FP32 check of a build."""

    model_version: str
    window: str
    """``interval`` (scores between the two readings), ``since start``, or ``none``."""
    scores: int
    psi: float | None
    level: str
    """``ok``, ``moderate``, ``shift`` or ``unknown``."""
    noise_floor: float | None
    """The PSI two samples of one population of these sizes show by chance."""
    consumer_psi: list[float]
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def snapshot(samples_by_page: list[list[Sample]], version: str, errors: list[str] | None = None) -> DriftSnapshot:
    """Sum the consumers' histograms by version; collect their gauges for ``version``. Pure."""
    snap = DriftSnapshot(errors=list(errors or []))
    for samples in samples_by_page:
        for s in samples:
            v = s.labels.get("model_version", "")
            if s.name == HISTOGRAM:
                per_le = snap.buckets.setdefault(v, {})
                per_le[s.labels["le"]] = per_le.get(s.labels["le"], 0.0) + s.value
            elif s.name == GAUGE and v == version:
                snap.gauges.append(s.value)
    return snap


def build_drift(now: DriftSnapshot, before: DriftSnapshot | None, reference: ReferenceDistribution | None,
                version: str) -> ScoreDriftReport:
    """The PSI of the recent window against ``reference``, and how much it can be trusted. Pure."""
    gauges = list(now.gauges)
    if reference is None:
        return ScoreDriftReport(version, "none", 0, None, "unknown", None, gauges,
                           "the model card has no reference distribution: make one with `skinbatch evaluate` and "
                           "add it with `skinbatch convert --update-card`")
    current = now.buckets.get(version)
    if not current:
        return ScoreDriftReport(version, "none", 0, None, "unknown", None, gauges,
                           f"no scores of model version {version} on the consumers' metrics pages")
    counts = counts_from_cumulative(current)
    window = "since start"
    previous = before.buckets.get(version) if before is not None else None
    if previous:
        delta = counts - counts_from_cumulative(previous)
        if delta.sum() >= MIN_WINDOW and (delta >= 0).all():
            counts, window = delta, "interval"
    n = int(np.sum(counts))
    if n < MIN_WINDOW:
        return ScoreDriftReport(version, window, n, None, "unknown", None, gauges,
                           f"{n} scores; a PSI needs at least {MIN_WINDOW}")
    value = float(psi(reference, counts))
    return ScoreDriftReport(version, window, n, round(value, 4), level(value),
                       round(expected_psi(n, reference.n), 4), gauges)


__all__ = ["DriftSnapshot", "ScoreDriftReport", "build_drift", "snapshot"]
