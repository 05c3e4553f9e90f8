"""Score drift: bins shared with Prometheus, the reference distribution, and PSI that sees a shift.

The property tests draw a reference population (a Beta distribution of P(malignant), the usual shape of
a classifier's scores) and streams from it or from a shifted one; thresholds are the ones the alert uses.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from skinbatch.drift import (
    ALERT_THRESHOLD,
    BIN_EDGES,
    EPSILON,
    FILE_NAME,
    MIN_WINDOW,
    N_BINS,
    PROMETHEUS_BUCKETS,
    WARN_THRESHOLD,
    ReferenceDistribution,
    ReferenceDistributionError,
    ScoreWindow,
    bin_counts,
    bin_indices,
    counts_from_cumulative,
    cumulative_from_counts,
    expected_psi,
    level,
    load_reference,
    psi,
)
from skinbatch.modelcard import ModelCard

MODEL = {"name": "demo", "version": "1", "trained": True, "weights_sha256": "w" * 64, "taxonomy_sha256": "t" * 64}
REFERENCE_N = 5000
WINDOW = 1000


def _reference(rng: np.random.Generator, a: float, b: float, n: int = REFERENCE_N) -> ReferenceDistribution:
    return ReferenceDistribution.from_scores(rng.beta(a, b, n), MODEL, {"labels": "validation.csv"})


# -- bins ----------------------------------------------------------------------------------------------

def test_bins_are_prometheus_buckets_with_le_semantics() -> None:
    assert PROMETHEUS_BUCKETS == BIN_EDGES[1:] and BIN_EDGES[0] == 0.0 and BIN_EDGES[-1] == 1.0
    assert list(PROMETHEUS_BUCKETS) == sorted(set(PROMETHEUS_BUCKETS))
    # An edge value belongs to the bucket it bounds (value <= le), as Prometheus counts it.
    assert bin_indices(np.array([0.0, 0.01, 0.0100001, 0.5, 1.0])).tolist() == [0, 0, 1, 6, N_BINS - 1]
    # Rounding just outside [0, 1] lands in the end bins instead of failing.
    assert bin_indices([-1e-9, 1.0000001]).tolist() == [0, N_BINS - 1]
    with pytest.raises(ValueError, match="NaN"):
        bin_indices([float("nan")])


def test_prometheus_client_histogram_buckets_convert_to_our_counts() -> None:
    from prometheus_client import CollectorRegistry, Histogram

    registry = CollectorRegistry()
    histogram = Histogram("p_malignant", "test", buckets=PROMETHEUS_BUCKETS, registry=registry)
    scores = np.random.default_rng(1).beta(0.6, 4, 777)
    for s in scores:
        histogram.observe(float(s))
    buckets = {sample.labels["le"]: sample.value for family in registry.collect()
               for sample in family.samples if sample.name.endswith("_bucket")}
    assert "+Inf" in buckets and len(buckets) == N_BINS + 1
    counts = counts_from_cumulative(buckets)
    np.testing.assert_array_equal(counts, bin_counts(scores))
    assert cumulative_from_counts(counts) == [buckets[k] for k in buckets if k != "+Inf"]


def test_cumulative_round_trip_and_refusals() -> None:
    counts = np.arange(N_BINS, dtype=float)
    cumulative = cumulative_from_counts(counts)
    np.testing.assert_array_equal(counts_from_cumulative(dict(zip(PROMETHEUS_BUCKETS, cumulative))), counts)
    with pytest.raises(ValueError, match="PROMETHEUS_BUCKETS"):
        counts_from_cumulative({0.5: 1.0, 1.0: 2.0})
    with pytest.raises(ValueError, match="not cumulative"):
        counts_from_cumulative(dict(zip(PROMETHEUS_BUCKETS, cumulative[::-1])))
    with pytest.raises(ValueError, match="bins"):
        cumulative_from_counts([1, 2])


# -- the reference -------------------------------------------------------------------------------------

def test_reference_round_trips_and_is_checked(tmp_path) -> None:
    reference = _reference(np.random.default_rng(0), 0.5, 3)
    path = tmp_path / FILE_NAME
    path.write_text(reference.to_json())
    again = load_reference(path)
    assert again == reference and again.n == REFERENCE_N
    data = json.loads(path.read_text())
    assert data["fractions"] == pytest.approx(list(reference.fractions), abs=1e-6) and sum(data["counts"]) == data["n"]
    assert data["model"]["weights_sha256"] == "w" * 64 and data["source"]["labels"] == "validation.csv"

    reference.check_model(MODEL)
    with pytest.raises(ReferenceDistributionError, match="skinbatch evaluate"):
        reference.check_model({**MODEL, "weights_sha256": "x" * 64})
    with pytest.raises(ReferenceDistributionError, match="bins"):
        ReferenceDistribution.from_dict({**data, "edges": [0, 0.5, 1]})
    with pytest.raises(ReferenceDistributionError, match="format"):
        ReferenceDistribution.from_dict({**data, "format": "other/1"})
    with pytest.raises(ReferenceDistributionError, match="add up"):
        ReferenceDistribution.from_dict({**data, "n": 3})
    with pytest.raises(ReferenceDistributionError, match="no scores"):
        ReferenceDistribution.from_scores([], MODEL)
    with pytest.raises(ReferenceDistributionError, match="evaluate"):
        load_reference(tmp_path / "missing.json")


def test_model_card_carries_the_reference_and_old_cards_still_load() -> None:
    from skinbatch.taxonomy import default_taxonomy
    from skinbatch.taxonomy.card import taxonomy_card_entry

    card = ModelCard(name="demo", version="1", trained=True, source={"sha256": "w" * 64}, target="cpu",
                     precision="fp32", preprocessing={"size": 299},
                     taxonomy=taxonomy_card_entry(default_taxonomy(), "taxonomy.json"), max_batch_size=8)
    old = card.to_dict()
    for key in ("outputs", "malignancy_map", "reference_distribution"):
        old.pop(key)
    loaded = ModelCard.from_dict(old)
    assert loaded.reference() is None and not loaded.serves_malignancy_map and loaded.malignancy_map_grid is None
    assert loaded.outputs == ["TRAINING_PROBS", "COARSE_PROBS", "FINE_PROBS", "MALIGNANCY"]

    reference = _reference(np.random.default_rng(0), 0.5, 3)
    card.reference_distribution = reference.to_dict()
    card.outputs = [*card.outputs, "MALIGNANCY_MAP"]
    card.malignancy_map = {"tensor": "MALIGNANCY_MAP", "shape": [8, 8]}
    again = ModelCard.from_json(card.to_json())
    assert again.reference() == reference
    assert again.serves_malignancy_map and again.malignancy_map_grid == (8, 8)


# -- PSI -----------------------------------------------------------------------------------------------

def test_expected_noise_matches_two_samples_of_one_population() -> None:
    rng = np.random.default_rng(3)
    reference = _reference(rng, 0.6, 5.0, n=2000)
    readings = [psi(reference, bin_counts(rng.beta(0.6, 5.0, 500))) for _ in range(200)]
    # (B - 1)(1/n + 1/N) = 9 (1/500 + 1/2000) = 0.0225; the mean of 200 readings lands close to it.
    assert np.mean(readings) == pytest.approx(expected_psi(500, 2000), rel=0.25)
    with pytest.raises(ValueError):
        expected_psi(0, 10)


def test_psi_on_known_numbers() -> None:
    e = np.full(N_BINS, 0.1)
    assert psi(e, e * 50) == pytest.approx(0.0)
    a = np.zeros(N_BINS)
    a[:5] = 0.2
    # Half the bins empty: each adds (eps - 0.1) ln(eps / 0.1), each full one (0.2 - 0.1) ln 2.
    expected = 5 * (EPSILON - 0.1) * math.log(EPSILON / 0.1) + 5 * 0.1 * math.log(2)
    assert psi(e, a * 1000) == pytest.approx(expected)
    assert psi(e, a) == pytest.approx(psi(a, e))  # symmetric
    with pytest.raises(ValueError, match="no scores"):
        psi(e, np.zeros(N_BINS))
    assert [level(v) for v in (None, 0.05, WARN_THRESHOLD + 0.01, ALERT_THRESHOLD + 0.01)] == [
        "unknown", "ok", "moderate", "shift"]


beta_params = st.tuples(st.floats(0.3, 6.0), st.floats(0.3, 12.0))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params=beta_params, seed=st.integers(0, 2**32 - 1))
def test_a_stream_from_the_reference_stays_under_the_threshold(params: tuple[float, float], seed: int) -> None:
    rng = np.random.default_rng(seed)
    reference = _reference(rng, *params)
    window = rng.beta(*params, WINDOW)
    # Two samples of one distribution: PSI ≈ (B - 1)(1/n + 1/N) ≈ 0.011 on average, far below 0.25.
    assert psi(reference, bin_counts(window)) < WARN_THRESHOLD


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(params=beta_params, shifted=beta_params, seed=st.integers(0, 2**32 - 1))
def test_a_shifted_stream_goes_over_the_threshold(params: tuple[float, float], shifted: tuple[float, float],
                                                 seed: int) -> None:
    rng = np.random.default_rng(seed)
    # The populations themselves must differ by well over the threshold (their PSI from large samples);
    # then a window of 1000 must show it.
    population = psi(bin_counts(rng.beta(*params, 200_000)), bin_counts(rng.beta(*shifted, 200_000)))
    assume(population > 2 * ALERT_THRESHOLD)
    reference = _reference(rng, *params)
    assert psi(reference, bin_counts(rng.beta(*shifted, WINDOW))) > ALERT_THRESHOLD


def test_sliding_window_sees_the_shift_and_only_the_shift() -> None:
    """A stream scored like the validation set, then (a new camera, a new clinic) scored higher."""
    rng = np.random.default_rng(7)
    reference = _reference(rng, 0.6, 5.0)
    window = ScoreWindow(WINDOW)
    before = [*rng.beta(0.6, 5.0, 3000)]
    after = [*rng.beta(2.0, 3.0, 3000)]
    readings_before, readings_after = [], []
    for i, score in enumerate(before + after):
        window.observe(score)
        value = window.psi(reference)
        if i < MIN_WINDOW - 1:
            assert value is None  # too few scores to say anything
        elif i < len(before):
            readings_before.append(value)
        else:
            readings_after.append(value)
    assert max(readings_before) < WARN_THRESHOLD
    assert len(window) == WINDOW
    crossed = next(i for i, v in enumerate(readings_after) if v > ALERT_THRESHOLD)
    assert crossed < WINDOW // 2, "the shift took too long to show"
    assert min(readings_after[WINDOW:]) > ALERT_THRESHOLD  # once the window holds only shifted scores
    np.testing.assert_array_equal(window.counts(), bin_counts(after[-WINDOW:]))


@given(st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=300))
def test_the_window_bins_scores_as_the_batch_binning_does(scores: list[float]) -> None:
    window = ScoreWindow(size=1000)
    for score in scores:
        window.observe(score)
    assert window.counts().tolist() == bin_counts(scores).tolist()
