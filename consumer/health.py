"""Liveness and readiness of one consumer process: ``/livez`` and ``/readyz`` next to ``/metrics``.

Pure state, fed by the loop thread and read by the HTTP thread (plain attribute reads and writes of
floats and bools; no locks needed under the GIL):

* **live**: the main loop turned within ``liveness_timeout_s``, and work in flight has finished
  something within ``stuck_after_s`` (not counted while Triton or the archive is down: then the work
  waits on purpose). A supervisor restarts a process that is not live.
* **ready**: live, connected to Kafka (the group coordinator known, the last poll without error), Triton
  answering and, where one is configured, the archive answering. *Not* "has partitions": a member that
  waits for a rebalance is ready, or a rolling update could never finish.

compose does not restart an unhealthy container, so :class:`WedgeWatch`, a thread, also ends the
process with ExitCode.WEDGED (17) once the loop has not turned for twice ``liveness_timeout_s``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from skinbatch.contract import ExitCode

log = logging.getLogger("skinbatch.consumer")


class Health:
    """What ``/livez`` and ``/readyz`` answer. ``clock`` is passed in so unit tests can move time."""

    def __init__(self, liveness_timeout_s: float, stuck_after_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.liveness_timeout_s = liveness_timeout_s
        self.stuck_after_s = stuck_after_s if stuck_after_s is not None else 10 * liveness_timeout_s
        self._clock = clock
        now = clock()
        self.turned_at = now
        self.progress_at = now
        self.started = False
        """Set once the loop runs (the model card read, the pipeline started)."""
        self.stopping = False
        self.kafka = False
        self.triton = False
        self.archive: bool | None = None
        """None: no archive configured."""

    # -- fed by the loop --------------------------------------------------------------------------------
    def turned(self, work_in_flight: bool, waiting_on_purpose: bool) -> None:
        """One turn of the main loop. Work waiting on purpose (Triton or the archive down) or no work
        at all counts as progress: nothing is stuck."""
        now = self._clock()
        self.turned_at = now
        if not work_in_flight or waiting_on_purpose:
            self.progress_at = now

    def progressed(self) -> None:
        """A message was answered."""
        self.progress_at = self._clock()

    # -- read by the HTTP thread -----------------------------------------------------------------------
    def live(self) -> tuple[bool, str]:
        if not self.enabled:
            return True, "liveness checks disabled"
        now = self._clock()
        idle = now - self.turned_at
        if idle > self.liveness_timeout_s:
            return False, f"the main loop has not turned for {idle:.0f} s (limit {self.liveness_timeout_s:g} s)"
        stuck = now - self.progress_at
        if self.stuck_after_s > 0 and stuck > self.stuck_after_s:
            return False, f"work in flight has finished nothing for {stuck:.0f} s (limit {self.stuck_after_s:g} s)"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        live, why = self.live()
        problems = [] if live else [why]
        if not self.started:
            problems.append("starting: waiting for Triton and the model card")
        if self.stopping:
            problems.append("stopping")
        if not self.kafka:
            problems.append("not connected to Kafka")
        if not self.triton:
            problems.append("Triton does not answer")
        if self.archive is False:
            problems.append("the DICOMweb archive does not answer")
        return (not problems, "; ".join(problems) or "ok")

    @property
    def enabled(self) -> bool:
        return self.liveness_timeout_s > 0

    def wedged_for(self) -> float:
        """Seconds since the loop last turned (0 before it starts and while it stops)."""
        if not self.started or self.stopping:
            return 0.0
        return self._clock() - self.turned_at


class WedgeWatch:
    """A daemon thread: once the loop has not turned for ``2 × liveness_timeout_s``, log why and end the
    process with ExitCode.WEDGED. ``exit`` is passed in (os._exit in production: the loop thread that
    would run a normal exit is the one that is stuck)."""

    def __init__(self, health: Health, *, on_exit: Callable[[], None] = lambda: None,
                 exit: Callable[[int], None] = os._exit, interval_s: float = 1.0) -> None:
        self.health = health
        self.on_exit = on_exit
        self._exit = exit
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wedge-watch", daemon=True)

    def start(self) -> None:
        if self.health.enabled:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        limit = 2 * self.health.liveness_timeout_s
        while not self._stop.wait(self.interval_s):
            wedged = self.health.wedged_for()
            if wedged > limit:
                log.critical("the main loop has not turned for %.0f s; exiting so that a new process takes over "
                             "(uncommitted messages are redelivered)", wedged,
                             extra={"event": "wedged", "exit_code": int(ExitCode.WEDGED)})
                for handler in logging.getLogger().handlers:
                    handler.flush()
                try:
                    self.on_exit()
                finally:
                    self._exit(int(ExitCode.WEDGED))
                return


__all__ = ["Health", "WedgeWatch"]
