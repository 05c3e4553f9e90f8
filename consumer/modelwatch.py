"""A thread that watches the served model: the batch size Triton forms, and its model card.

Every ``interval_s`` it reads Triton's statistics (the average batch size of the Inception step since
the last look, a gauge); every ``card_every`` looks it re-reads the served model card. Answers carry the
ensemble's version, which catches a normal rollout at once; a model rebuilt under the same version
number (new weights or taxonomy) shows only in its card, so a changed card is reported as a model
change. A card that differs only in what does not name scores (a new reference distribution, added by
``skinbatch convert --update-card``) is handed over instead: nothing needs a restart for it.

The thread only reads Triton and posts to the loop's mailbox; it never touches the consumer's state.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from skinbatch.contract import INCEPTION_STEP, ServedModelChanged
from skinbatch.modelcard import ModelCard
from skinbatch.scoring.pipeline import Mailbox
from skinbatch.scoring.servers import AnyScorer

from .metrics import ConsumerMetrics


def average_batch(stats: dict[str, Any], last: tuple[int, int] | None) -> tuple[float | None, tuple[int, int] | None]:
    """(inferences ÷ executions of the Inception step since ``last``, the new counters). Pure."""
    for model in stats.get("model_stats", []):
        if model.get("name") != INCEPTION_STEP:
            continue
        count, execs = int(model.get("inference_count", 0)), int(model.get("execution_count", 0))
        if last is not None and execs > last[1]:
            return (count - last[0]) / (execs - last[1]), (count, execs)
        return None, (count, execs)
    return None, last


class ModelWatch:
    def __init__(self, scorer: AnyScorer, card: Callable[[], ModelCard | None], mailbox: Mailbox,
                 metrics: ConsumerMetrics, *, on_changed: Callable[[ServedModelChanged], None],
                 on_new_card: Callable[[ModelCard], None], interval_s: float = 5.0, card_every: int = 12) -> None:
        self.scorer = scorer
        self.card = card
        self.mailbox = mailbox
        self.metrics = metrics
        self.on_changed, self.on_new_card = on_changed, on_new_card
        self.interval_s, self.card_every = interval_s, card_every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-watch", daemon=True)
        self.reachable: bool | None = None
        """Whether Triton answered the last look (None before the first): the consumer's readiness."""

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        last: tuple[int, int] | None = None
        ticks = 0
        while not self._stop.wait(self.interval_s):
            ticks += 1
            if ticks % self.card_every == 0:
                self.check_card()
            try:
                average, last = average_batch(self.scorer.statistics(), last)
            except Exception:  # noqa: BLE001 - statistics are best effort
                self.reachable = False
                continue
            self.reachable = True
            if average is not None:
                self.metrics.batch_size.set(average)
        self.scorer.close()

    def check_card(self) -> None:
        """Has the served model been replaced (under the same version, too)? Or only its card updated?"""
        current = self.card()
        try:
            served = self.scorer.load_card()
        except Exception:  # noqa: BLE001 - Triton down or reloading: the loop's own checks handle that
            return
        if current is None:
            return
        if served.model_summary() != current.model_summary():
            self.mailbox.post(self.on_changed, ServedModelChanged(
                self.scorer.model, served.version, current.version,
                detail="its model card (weights or taxonomy) changed"))
        elif served.to_dict() != current.to_dict():
            self.mailbox.post(self.on_new_card, served)


__all__ = ["ModelWatch", "average_batch"]
