"""Alert rules under ``promtool test rules``: the score-drift alert fires on a shifted stream and not on one
drawn from the validation set's distribution.

The series are what a consumer replica exports: once a minute, ``skinbatch_consumer_malignancy_psi`` of its
last :data:`skinbatch.drift.DEFAULT_WINDOW` scores against the model card's reference, computed here with
``skinbatch.drift`` itself on simulated streams (absent while the window holds too few scores).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.needs import need_module, need_tool

yaml = need_module("yaml", "PyYAML is needed for the compose checks (the `test` extra)")

from skinbatch.drift import ALERT_THRESHOLD, DEFAULT_WINDOW, ReferenceDistribution, ScoreWindow  # noqa: E402

ALERTS = Path(__file__).resolve().parents[3] / "compose" / "prometheus" / "alerts.yml"
ALERT = "SkinbatchScoreDrift"
GAUGE = "skinbatch_consumer_malignancy_psi"
SCORES_PER_MINUTE = 40
#: The alert's ``for``: a shift must hold this long before anyone is paged.
HOLD_MINUTES = 30


def promtool() -> str:
    return need_tool("promtool", "Debian's prometheus")


def readings(reference: ReferenceDistribution, stream: np.ndarray) -> list[float | None]:
    """The gauge's value at the end of each minute of ``stream``."""
    window = ScoreWindow(DEFAULT_WINDOW)
    out: list[float | None] = []
    for minute in range(len(stream) // SCORES_PER_MINUTE):
        for score in stream[minute * SCORES_PER_MINUTE:(minute + 1) * SCORES_PER_MINUTE]:
            window.observe(float(score))
        out.append(window.psi(reference))
    return out


def series_values(values: list[float | None]) -> str:
    """promtool's expanding notation, one sample a minute; ``_`` where the consumer exports nothing."""
    return " ".join("_" if v is None else f"{v:.4f}" for v in values)


@pytest.fixture(scope="module")
def streams() -> dict[str, list[float | None]]:
    rng = np.random.default_rng(11)
    # The validation set: mostly benign-looking, P(malignant) skewed towards 0.
    reference = ReferenceDistribution.from_scores(rng.beta(0.6, 5.0, 5000), {"weights_sha256": "w" * 64})
    steady = rng.beta(0.6, 5.0, 180 * SCORES_PER_MINUTE)
    # An hour like the validation set, then two hours of images that score higher (a new camera, a new site).
    shifted = np.concatenate([rng.beta(0.6, 5.0, 60 * SCORES_PER_MINUTE), rng.beta(2.0, 3.0, 120 * SCORES_PER_MINUTE)])
    return {"steady": readings(reference, steady), "shifted": readings(reference, shifted)}


def _alert(version: str, value: float) -> dict:
    return {"exp_labels": {"severity": "warning", "model_version": version},
            "exp_annotations": {
                "summary": f"P(malignant) of model version {version} has moved away from its validation set "
                           f"(PSI {value:.2f})",
                "runbook": "docs/runbook.md#scores-drift-from-the-validation-set"}}


def test_drift_alert_fires_on_a_shift_and_not_on_the_reference(streams, tmp_path: Path) -> None:
    steady, shifted = streams["steady"], streams["shifted"]
    assert max(v for v in steady if v is not None) < ALERT_THRESHOLD / 2
    crossed = next(minute for minute, v in enumerate(shifted) if v is not None and v > ALERT_THRESHOLD)
    assert 60 <= crossed < 60 + DEFAULT_WINDOW // SCORES_PER_MINUTE
    assert all(v > ALERT_THRESHOLD for v in shifted[crossed:]), "the test stream must stay shifted"
    last = len(shifted) - 1
    labels = 'job="skinbatch-consumer",instance="consumer-1:9108",model_version="{v}"'
    test = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": f"{GAUGE}{{{labels.format(v='7')}}}", "values": series_values(steady)},
                {"series": f"{GAUGE}{{{labels.format(v='8')}}}", "values": series_values(shifted)},
            ],
            "alert_rule_test": [
                # While both streams look like the validation set: nothing.
                {"eval_time": "59m", "alertname": ALERT, "exp_alerts": []},
                # Over the threshold, but not yet for 30 minutes: pending, not firing.
                {"eval_time": f"{crossed + HOLD_MINUTES - 5}m", "alertname": ALERT, "exp_alerts": []},
                # The shifted version fires; the steady one never does.
                {"eval_time": f"{crossed + HOLD_MINUTES + 5}m", "alertname": ALERT,
                 "exp_alerts": [_alert("8", shifted[crossed + HOLD_MINUTES + 5])]},
                {"eval_time": f"{last}m", "alertname": ALERT, "exp_alerts": [_alert("8", shifted[last])]},
            ],
        }],
    }
    path = tmp_path / "alert-tests.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    result = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
