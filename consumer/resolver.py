"""The DICOMweb resolver: a request that names a study, series or instance in the ``--dicomweb-url`` archive.

A thread pool talks to the archive (passed in: a :class:`~skinbatch.dicomweb.client.DicomWebArchive`);
outcomes come back to the loop thread through the mailbox. The resolver

* resolves a request to its image instances (QIDO-RS) and makes one child job per instance;
* retrieves each instance as stored (WADO-RS), at most ``2 × workers`` at a time and while the bytes
  held stay under the consumer's budget, then hands the bytes to the owner to score. Each retrieval is
  bounded (:mod:`skinbatch.dicomweb.retrieve`): its metadata is read first (a SOP class we do not score
  or too many pixels: a typed dead letter, nothing downloaded), and it streams under ``--max-image-bytes``.
  From its start until the owner has the bytes, a retrieval holds ``--max-image-bytes`` (then the
  announced size, then the size received) on :attr:`DicomWebResolver.meter`, which the owner counts in
  its byte budget: bytes still downloading count too;
* with ``--store-results``, stores the SR of a scored instance (STOW-RS) unless the archive has it.

Archive faults pause consumption (``archive_down``) and the failed step is retried with backoff; an
instance the archive lacks is bad input. The owner (the scoring consumer) implements
:class:`ResolverOwner`; the resolver never touches Kafka.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from skinbatch.backoff import Backoff
from skinbatch.contract import InputRejected
from skinbatch.dicomweb.client import ArchiveUnavailable
from skinbatch.dicomweb.retrieve import ByteMeter, Hold
from skinbatch.imaging import DecodeLimits
from skinbatch.modelcard import ModelCard
from skinbatch.privacy import derived_id
from skinbatch.scoring.pipeline import Mailbox
from skinbatch.timers import Timers

from .jobs import Job
from .metrics import ConsumerMetrics

log = logging.getLogger("skinbatch.consumer")


class ResolverOwner(Protocol):
    def current(self, job: Job) -> bool: ...
    def reject(self, job: Job, request_id: str, error_type: str, message: str,
               input_info: dict[str, Any] | None) -> None: ...
    def retrieved(self, child: Job, data: bytes) -> None: ...
    def children(self, parent: Job, children: list[Job]) -> None: ...
    def stored(self, job: Job, report: dict[str, str] | None) -> None: ...
    def base_id(self, job: Job, fallback: str) -> str: ...


class DicomWebResolver:
    def __init__(self, archive: Any, owner: ResolverOwner, mailbox: Mailbox, timers: Timers, metrics: ConsumerMetrics,
                 *, workers: int, retry_initial_s: float, retry_max_s: float, store_results: bool,
                 room: Callable[[], bool] = lambda: True, clock: Callable[[], float] = time.monotonic,
                 limits: DecodeLimits | None = None) -> None:
        """``room()``: whether the owner's memory budget takes another retrieved instance (it counts
        :attr:`meter`); ``limits``: the pixels and bytes an instance may have (the decoder's)."""
        self.archive = archive
        self.owner = owner
        self.mailbox = mailbox
        self.timers = timers
        self.metrics = metrics
        self.workers = max(1, workers)
        self.retry_initial_s, self.retry_max_s = retry_initial_s, retry_max_s
        self.store_results = store_results
        self.room = room
        self.limits = limits or DecodeLimits()
        self.meter = ByteMeter()
        """Bytes that retrievals hold or may still receive."""
        self._clock = clock
        self._io = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="dicomweb")
        self._backlog: deque[Job] = deque()
        self._retrievals = 0
        self.down_since: float | None = None
        self._backoff = Backoff(retry_initial_s, retry_max_s)

    @property
    def backlog(self) -> int:
        return len(self._backlog)

    def close(self) -> None:
        self._io.shutdown(wait=False, cancel_futures=True)

    # -- the archive's thread pool ----------------------------------------------------------------------------
    def _submit(self, job: Job, fn: Callable[[], Any], on_done: Callable[[Job, tuple[Any, ...]], None]) -> None:
        """Run ``fn`` on the archive's pool; its outcome comes back to the loop as a tagged tuple."""

        def call() -> tuple[Any, ...]:
            try:
                return ("ok", fn())
            except ArchiveUnavailable as exc:
                return ("retry", str(exc))
            except InputRejected as exc:  # not in the archive, refused by it, or refused by our limits
                return ("reject", exc.type, str(exc))
            except Exception as exc:  # noqa: BLE001 - reported to the loop, never lost in a thread
                return ("bug", f"{type(exc).__name__}: {exc}")

        future = self._io.submit(call)
        future.add_done_callback(lambda f: self.mailbox.post(on_done, job, f.result()))

    def _fault(self, job: Job, error: str, retry: Callable[[], None], stage: str) -> None:
        """The archive failed: pause consumption, retry this step with backoff. Never a dead letter."""
        self.metrics.errors.labels("archive_unavailable").inc()
        self.metrics.retries.labels("archive").inc()
        if self.down_since is None:
            self.down_since = self._clock()
            self._backoff.reset()
            self.metrics.archive_up.set(0)
            log.error("the DICOMweb archive failed; pausing consumption and retrying",
                      extra={"event": "archive_down", "stage": stage, "error": error[:300], **job.source})
        self.timers.later(self._backoff.next(), retry)

    def _recovered(self) -> None:
        if self.down_since is None:
            return
        down_for = self._clock() - self.down_since
        self.down_since = None
        self._backoff.reset()
        self.metrics.archive_up.set(1)
        log.info("the DICOMweb archive is back; resuming", extra={"event": "archive_up", "down_s": round(down_for, 1)})

    # -- resolve --------------------------------------------------------------------------------------------------
    def resolve(self, job: Job) -> None:
        if not self.owner.current(job):
            return
        assert job.request is not None and job.request.dicomweb is not None
        ref = job.request.dicomweb
        self._submit(job, lambda: self.archive.resolve(ref), self._on_resolved)

    def _on_resolved(self, job: Job, outcome: tuple[Any, ...]) -> None:
        if not self.owner.current(job):
            return
        assert job.request is not None and job.request.dicomweb is not None
        if outcome[0] == "retry":
            self._fault(job, outcome[1], lambda: self.resolve(job), "resolve")
            return
        self._recovered()
        if outcome[0] != "ok":
            self.owner.reject(job, job.request.explicit_id or derived_id(job.request.dicomweb.uri), *_error(outcome),
                              None)
            return
        children = [Job(taken=job.taken, timestamp_ms=job.timestamp_ms, polled=job.polled, request=job.request,
                        parent=job, instance=instance) for instance in outcome[1]]
        self.owner.children(job, children)
        self._backlog.extend(children)
        self.pump()

    # -- retrieve -------------------------------------------------------------------------------------------------
    def pump(self) -> None:
        """Start retrievals while the archive is up and the owner's memory budget has room."""
        if self.down_since is not None:
            return
        while self._backlog and self._retrievals < 2 * self.workers and self.room():
            child = self._backlog.popleft()
            if self.owner.current(child):
                self._retrieve(child)

    def _retrieve(self, child: Job) -> None:
        if not self.owner.current(child):
            return
        instance, want_header, limits = child.instance, self.store_results, self.limits
        hold = self.meter.hold(limits.max_bytes)  # counted now: pump() sees it before the download starts
        child.hold = hold

        def retrieve() -> tuple[bytes, Any]:
            data = self.archive.retrieve(instance, limits, hold)
            if not want_header:
                return data, None
            from skinbatch.dicomweb.sr import header_of

            try:
                return data, header_of(data)
            except Exception:  # noqa: BLE001 - not DICOM: the decoder will say what is wrong with it
                return data, None

        self._retrievals += 1
        self._submit(child, retrieve, self._on_retrieved)

    def _on_retrieved(self, child: Job, outcome: tuple[Any, ...]) -> None:
        self._retrievals -= 1
        hold: Hold | None = child.hold
        child.hold = None
        try:
            self._retrieved(child, outcome)
        finally:
            if hold is not None:
                hold.release()  # the owner counts the bytes from here on, or nobody holds them any more

    def _retrieved(self, child: Job, outcome: tuple[Any, ...]) -> None:
        if not self.owner.current(child):
            return
        if outcome[0] == "retry":
            self._fault(child, outcome[1], lambda: self._retrieve(child), "retrieve")
            return
        self._recovered()
        if outcome[0] != "ok":
            self.owner.reject(child, self.owner.base_id(child, child.instance.instance), *_error(outcome), None)
            return
        data, header = outcome[1]
        child.source_header = header
        self.owner.retrieved(child, data)

    # -- store the report -----------------------------------------------------------------------------------------
    def store(self, job: Job, card: ModelCard) -> None:
        """Build the SR and store it, unless the archive already has it (same derived UID)."""
        if not self.owner.current(job):
            return
        assert job.decoded is not None
        from skinbatch.dicomweb.sr import FrameScores, build_score_report, sr_instance_uid, sr_series_uid

        header, archive = job.source_header, self.archive
        model = card.model_summary()
        frames = [FrameScores(f.number, f.scores) for f in job.frames]
        selection = job.request.dicomweb.frame if job.request and job.request.dicomweb else None
        input_sha256, codes = job.decoded.sha256, card.taxonomy.get("codes")
        coarse, fine = card.coarse_labels, card.fine_labels

        def store() -> dict[str, Any]:
            sop = sr_instance_uid(header.SOPInstanceUID, model, selection)
            series = sr_series_uid(header.StudyInstanceUID, model)
            if archive.instance_exists(header.StudyInstanceUID, sop):
                return {"sop_instance_uid": sop, "series_instance_uid": series, "stored": False}
            sr = build_score_report(header, frames, model, coarse_labels=coarse, fine_labels=fine,
                                    frame_selection=selection, codes=codes, input_sha256=input_sha256)
            archive.store(sr)
            return {"sop_instance_uid": sop, "series_instance_uid": series, "stored": True}

        self._submit(job, store, lambda j, outcome: self._on_stored(j, outcome, card))

    def _on_stored(self, job: Job, outcome: tuple[Any, ...], card: ModelCard) -> None:
        if not self.owner.current(job):
            return
        if outcome[0] in ("retry", "reject"):
            # A refused store is not the input's fault either: the results wait until the report is in.
            message = outcome[1] if outcome[0] == "retry" else outcome[2]
            self._fault(job, message, lambda: self.store(job, card), "store")
            return
        self._recovered()
        if outcome[0] == "bug":
            # The image was scored; a report that cannot be built must not hold its scores back.
            self.metrics.errors.labels("sr_failed").inc()
            log.error("building the structured report failed; results are sent without one",
                      extra={"event": "sr_failed", "error": outcome[1][:300], **job.source})
            self.owner.stored(job, None)
            return
        info = outcome[1]
        self.metrics.reports.labels("stored" if info["stored"] else "already_stored").inc()
        self.owner.stored(job, {"sop_instance_uid": info["sop_instance_uid"],
                                "series_instance_uid": info["series_instance_uid"]})


def _error(outcome: tuple[Any, ...]) -> tuple[str, str]:
    """(error type, message) of a ``reject`` or ``bug`` outcome of :meth:`DicomWebResolver._submit`."""
    return (outcome[1], outcome[2]) if outcome[0] == "reject" else ("internal_error", outcome[1])


__all__ = ["DicomWebResolver", "ResolverOwner"]
