"""Score drift: has the distribution of P(malignant) moved away from the validation set's? Pure.

The measure is the population stability index over fixed bins of P(malignant),

    PSI = Σ_i (a_i − e_i) · ln(a_i / e_i)

with ``e`` the reference fractions (``skinbatch evaluate`` on a validation set, embedded in the model
card) and ``a`` the fractions of a recent window of served scores. It is symmetric, zero for equal
distributions, and by common practice under 0.1 means no real change, 0.1–0.25 a moderate one and
over 0.25 a significant shift (:data:`ALERT_THRESHOLD`).

The bins are fixed, not quantiles of the reference, so that the same bins serve as the buckets of the
consumer's Prometheus histogram (:data:`PROMETHEUS_BUCKETS`) and PSI can be computed from scraped
buckets as well as in process. Prometheus buckets are cumulative (``le``, "less or equal"); PSI needs
counts per bin: :func:`counts_from_cumulative` and :func:`cumulative_from_counts` convert. A bin is
``(lower, upper]``, the first ``[0, upper]``, exactly as Prometheus assigns an observation to buckets.

With ``B`` bins, a window of ``n`` and a reference of ``N`` scores, PSI between two samples of the same
distribution is about (B − 1)(1/n + 1/N) on average (a χ² with B − 1 degrees of freedom, scaled): 0.05 for
n = 200, N = 2000. Windows under :data:`MIN_WINDOW` are too noisy to report.
"""

from __future__ import annotations

import bisect
import json
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from skinbatch.contract import ConfigurationError

FORMAT = "skinbatch-reference-distribution/1"
FILE_NAME = "reference_distribution.json"

#: Bin edges of P(malignant). Finer near 0, where most scores of a mostly benign population fall; ten bins
#: keep the PSI's sampling noise low for windows of a few hundred scores.
BIN_EDGES: tuple[float, ...] = (0.0, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)
N_BINS = len(BIN_EDGES) - 1
#: ``buckets=`` of a ``prometheus_client.Histogram`` (it adds ``+Inf`` itself): the bins' upper edges.
PROMETHEUS_BUCKETS: tuple[float, ...] = BIN_EDGES[1:]

#: PSI above which the score distribution has shifted significantly: the alert fires.
ALERT_THRESHOLD = 0.25
#: PSI above which the shift is moderate: worth a look, not an alert.
WARN_THRESHOLD = 0.1
#: Floor for an empty bin's fraction: ln(0) is undefined. 1e-4 makes a bin that the reference never saw
#: but that holds 5% of the window add 0.31 by itself, and one stray score in a window of 1000 add 0.002.
EPSILON = 1e-4
#: Scores a window needs before its PSI means anything (expected noise ≈ 0.05 at 200 with ten bins).
MIN_WINDOW = 200
#: The consumer's default window: recent enough to catch a change within an hour at a few images a second.
DEFAULT_WINDOW = 1000
#: Scores a reference should hold: below this its own sampling noise is a sizeable part of the PSI.
MIN_REFERENCE = 500


class ReferenceDistributionError(ConfigurationError):
    """A reference distribution that cannot be used; the message says how to make a usable one."""


# -- binning -------------------------------------------------------------------------------------------

def bin_indices(scores: Iterable[float] | np.ndarray) -> np.ndarray:
    """The bin of each score. Scores are probabilities: a hair outside [0, 1] (rounding) is clipped in."""
    values = np.asarray(list(scores) if not isinstance(scores, np.ndarray) else scores, np.float64).reshape(-1)
    if np.isnan(values).any():
        raise ValueError("a score is NaN; P(malignant) must be a number in [0, 1]")
    # side="left": the first upper edge >= score, i.e. score <= le, as Prometheus counts.
    return np.minimum(np.searchsorted(PROMETHEUS_BUCKETS, values, side="left"), N_BINS - 1)


def bin_counts(scores: Iterable[float] | np.ndarray) -> np.ndarray:
    """How many scores fall in each bin (not cumulative), length :data:`N_BINS`."""
    return np.bincount(bin_indices(scores), minlength=N_BINS).astype(np.int64)


def cumulative_from_counts(counts: Sequence[float] | np.ndarray) -> list[float]:
    """Per-bin counts → Prometheus' cumulative bucket counts, one per :data:`PROMETHEUS_BUCKETS` edge (the
    ``+Inf`` bucket equals the last one: no probability is above 1)."""
    values = _check_counts(counts)
    return [float(v) for v in np.cumsum(values)]


def counts_from_cumulative(buckets: Mapping[float, float] | Mapping[str, float]) -> np.ndarray:
    """Prometheus bucket counts by ``le`` (numbers or label strings, ``+Inf`` optional) → per-bin counts.

    The ``le`` values must be :data:`PROMETHEUS_BUCKETS`: a histogram made with other buckets cannot be
    compared with the reference. Counts above 1 (``+Inf`` beyond the last edge) join the last bin.
    """
    by_edge: dict[float, float] = {}
    for le, count in buckets.items():
        by_edge[float(le)] = float(count)  # float("+Inf") == inf
    finite = sorted(e for e in by_edge if math.isfinite(e))
    if len(finite) != N_BINS or not np.allclose(finite, PROMETHEUS_BUCKETS, rtol=0, atol=1e-12):
        raise ValueError(
            f"histogram buckets {finite} are not skinbatch.drift.PROMETHEUS_BUCKETS {list(PROMETHEUS_BUCKETS)}; "
            "export the P(malignant) histogram with those buckets")
    cumulative = np.array([by_edge[e] for e in finite], np.float64)
    if math.inf in by_edge:
        cumulative[-1] = max(cumulative[-1], by_edge[math.inf])
    counts = np.diff(cumulative, prepend=0.0)
    if (counts < -1e-9).any():
        raise ValueError(f"bucket counts {cumulative.tolist()} are not cumulative (they decrease)")
    return np.maximum(counts, 0.0)


def _check_counts(counts: Sequence[float] | np.ndarray) -> np.ndarray:
    values = np.asarray(counts, np.float64).reshape(-1)
    if len(values) != N_BINS:
        raise ValueError(f"{len(values)} bin counts given; skinbatch.drift has {N_BINS} bins")
    if (values < 0).any() or not np.isfinite(values).all():
        raise ValueError("bin counts must be finite and non-negative")
    return values


def fractions(counts: Sequence[float] | np.ndarray) -> np.ndarray:
    values = _check_counts(counts)
    total = values.sum()
    if total <= 0:
        raise ValueError("no scores in the window: PSI needs at least one")
    return values / total


# -- the reference -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReferenceDistribution:
    """P(malignant) of one model on a validation set, binned: the baseline of the drift PSI."""

    counts: tuple[int, ...]
    """Scores per bin of :attr:`edges` (not cumulative)."""
    model: dict[str, Any]
    """``ModelCard.model_summary()`` of the model that produced the scores: name, version, trained,
    weights_sha256, taxonomy_sha256."""
    source: dict[str, Any] = field(default_factory=dict)
    """Where the scores came from: ``command``, ``labels`` (file name only), ``created``, ``cases``."""
    edges: tuple[float, ...] = BIN_EDGES
    format: str = FORMAT

    def __post_init__(self) -> None:
        if tuple(self.edges) != BIN_EDGES:
            raise ReferenceDistributionError(
                f"the reference uses bins {list(self.edges)}, not this version's {list(BIN_EDGES)}; "
                "run `skinbatch evaluate` again to write a new one")
        if len(self.counts) != N_BINS or any(int(c) != c or c < 0 for c in self.counts):
            raise ReferenceDistributionError(
                f"the reference needs {N_BINS} non-negative integer bin counts, got {list(self.counts)}")
        if sum(self.counts) == 0:
            raise ReferenceDistributionError("the reference holds no scores; evaluate a validation set first")

    @property
    def n(self) -> int:
        return int(sum(self.counts))

    @property
    def fractions(self) -> np.ndarray:
        return np.asarray(self.counts, np.float64) / self.n

    @classmethod
    def from_scores(cls, scores: Iterable[float] | np.ndarray, model: Mapping[str, Any],
                    source: Mapping[str, Any] | None = None) -> ReferenceDistribution:
        counts = bin_counts(scores)
        if counts.sum() == 0:
            raise ReferenceDistributionError("no scores to build a reference from; was anything scored?")
        return cls(counts=tuple(int(c) for c in counts), model=dict(model), source=dict(source or {}))

    def check_model(self, model: Mapping[str, Any]) -> None:
        """Refuse a reference made with other weights or another taxonomy than ``model`` (a card's
        ``model_summary()``): its scores would mean something else."""
        for key in ("weights_sha256", "taxonomy_sha256"):
            mine, theirs = str(self.model.get(key, "")), str(model.get(key, ""))
            if mine and theirs and mine != theirs:
                raise ReferenceDistributionError(
                    f"the reference distribution was made with {key.replace('_sha256', '')} {mine[:12]}…, but the "
                    f"model has {theirs[:12]}…; evaluate this model on the validation set "
                    f"(`skinbatch evaluate --out DIR`) and use DIR/{FILE_NAME}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "score": "P(malignant), the ensemble output MALIGNANCY, one per scored frame",
            "edges": list(self.edges),
            "counts": list(self.counts),
            "fractions": [round(float(f), 6) for f in self.fractions],
            "n": self.n,
            "model": dict(self.model),
            "source": dict(self.source),
        }

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReferenceDistribution:
        if d.get("format") != FORMAT:
            raise ReferenceDistributionError(
                f"unknown reference distribution format {d.get('format')!r}; this version reads {FORMAT!r}. "
                "Run `skinbatch evaluate` with this version to write a new one.")
        try:
            counts = tuple(int(c) for c in d["counts"])
            reference = cls(counts=counts, model=dict(d.get("model") or {}), source=dict(d.get("source") or {}),
                            edges=tuple(float(e) for e in d["edges"]))
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ReferenceDistributionError):
                raise
            raise ReferenceDistributionError(f"the reference distribution is incomplete or malformed ({exc!r}); "
                                             "write it again with `skinbatch evaluate`") from None
        if "n" in d and int(d["n"]) != reference.n:
            raise ReferenceDistributionError(f"the reference says n = {d['n']} but its counts add up to {reference.n}")
        return reference

    @classmethod
    def from_json(cls, text: str) -> ReferenceDistribution:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ReferenceDistributionError(f"the reference distribution is not valid JSON: {exc}") from None


def load_reference(path: str | Path) -> ReferenceDistribution:
    p = Path(path)
    if not p.is_file():
        raise ReferenceDistributionError(
            f"no reference distribution at {p}; `skinbatch evaluate --out DIR` writes DIR/{FILE_NAME}")
    return ReferenceDistribution.from_json(p.read_text(encoding="utf-8"))


# -- PSI -----------------------------------------------------------------------------------------------

def psi(reference: ReferenceDistribution | Sequence[float] | np.ndarray, counts: Sequence[float] | np.ndarray,
        epsilon: float = EPSILON) -> float:
    """PSI of a window's per-bin ``counts`` against ``reference`` (a :class:`ReferenceDistribution`, or its
    per-bin counts or fractions). Empty bins count as ``epsilon``."""
    expected = reference.fractions if isinstance(reference, ReferenceDistribution) else fractions(reference)
    actual = fractions(counts)
    e = np.maximum(expected, epsilon)
    a = np.maximum(actual, epsilon)
    return float(np.sum((a - e) * np.log(a / e)))


def expected_psi(window: int, reference: int) -> float:
    """PSI to expect between a window and a reference drawn from one population, about
    (B − 1)(1/window + 1/reference): the floor under which a reading means nothing."""
    if window < 1 or reference < 1:
        raise ValueError("both samples need at least one score")
    return (N_BINS - 1) * (1 / window + 1 / reference)


def level(value: float | None) -> str:
    """``ok``, ``moderate`` or ``shift`` for a PSI, ``unknown`` for None (no reference, too few scores)."""
    if value is None or math.isnan(value):
        return "unknown"
    if value > ALERT_THRESHOLD:
        return "shift"
    return "moderate" if value > WARN_THRESHOLD else "ok"


class ScoreWindow:
    """The last ``size`` scores, binned, for a PSI over a sliding window (the consumer's gauge).

    Not thread-safe: one owner observes and reads.
    """

    def __init__(self, size: int = DEFAULT_WINDOW) -> None:
        if size < 1:
            raise ValueError("the window must hold at least one score")
        self.size = size
        self._bins: deque[int] = deque()
        self._counts = np.zeros(N_BINS, np.int64)

    def observe(self, score: float) -> None:
        # One score at a time, on the consumer's loop: bisect, not numpy (a hundred times cheaper here).
        if score != score:  # NaN
            raise ValueError("a score is NaN; P(malignant) must be a number in [0, 1]")
        index = min(bisect.bisect_left(PROMETHEUS_BUCKETS, score), N_BINS - 1)
        self._bins.append(index)
        self._counts[index] += 1
        if len(self._bins) > self.size:
            self._counts[self._bins.popleft()] -= 1

    def __len__(self) -> int:
        return len(self._bins)

    def counts(self) -> np.ndarray:
        return self._counts.copy()

    def psi(self, reference: ReferenceDistribution, min_scores: int = MIN_WINDOW) -> float | None:
        """PSI of the window against ``reference``, or None while it holds fewer than ``min_scores``."""
        if len(self._bins) < max(1, min_scores):
            return None
        return psi(reference, self._counts)
