"""DICOMweb fan-out: a request that names a study, series or instance in the ``--dicomweb-url`` archive.

A thread pool resolves the request to instances (QIDO-RS) and retrieves each (WADO-RS); every instance
then continues as a child job through the decode pool and Triton, and, with ``--store-results``, stores
an SR (STOW-RS) before its results are produced. The message is done when all its children are.
Archive faults pause consumption and are retried with backoff, like Triton faults; an instance the
archive lacks is bad input.

:class:`DicomWebFanOut` is a part of :class:`skinbatch.consumer.service.ScoringConsumer`, kept apart because it is
the one path that only some deployments use. Its methods run on the consumer's loop thread, like the
rest of the service; work on the archive's threads reports back through the loop's event queue.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .jobs import Job
from .requests import Request

if TYPE_CHECKING:
    from skinbatch.modelcard import ModelCard

    from .config import ConsumerConfig
    from .metrics import ConsumerMetrics

log = logging.getLogger("skinbatch.consumer")


class DicomWebFanOut:
    """Resolve, retrieve and store against a DICOMweb archive; mixed into the scoring consumer."""

    config: ConsumerConfig
    metrics: ConsumerMetrics
    card: ModelCard | None
    _bytes_in_flight: int

    if TYPE_CHECKING:  # provided by the scoring consumer
        def _current(self, job: Job) -> bool: ...
        def _post(self, fn: Callable[..., None], *args: Any) -> None: ...
        def _retry_later(self, delay: float, action: Callable[[], None], stage: str) -> None: ...
        def _reject(self, job: Job, request_id: str, error_type: str, message: str,
                    input_info: dict[str, Any] | None) -> None: ...
        def _submit_decode(self, job: Job) -> None: ...
        def _publish_results(self, job: Job) -> None: ...
        def _message_done(self, job: Job) -> None: ...
        def _base_id(self, job: Job, fallback: str) -> str: ...

    def _init_fan_out(self) -> None:
        self._archive: Any = None
        self._io: ThreadPoolExecutor | None = None
        self._retrieve_backlog: deque[Job] = deque()
        self._retrievals = 0
        self._archive_down_since: float | None = None
        self._archive_backoff = self.config.retry_initial_s

    def _open_archive(self) -> None:
        """Connect to the archive if one is configured (``--dicomweb-url``)."""
        settings = self.config.dicomweb_settings()
        if settings is None:
            return
        from skinbatch.dicomweb.client import DicomWebArchive

        self._archive = DicomWebArchive(settings)
        self._io = ThreadPoolExecutor(max_workers=max(1, self.config.dicomweb_workers), thread_name_prefix="dicomweb")
        log.info("DICOMweb archive configured", extra={"event": "dicomweb", "auth": settings.auth_kind,
                                                        "store_results": self.config.store_results})

    def _close_archive(self) -> None:
        if self._io is not None:
            self._io.shutdown(wait=False, cancel_futures=True)

    def _io_submit(self, job: Job, fn: Callable[[], Any], on_done: Callable[[Job, tuple[Any, ...]], None]) -> None:
        """Run ``fn`` on the archive's thread pool; its outcome comes back to the loop as a tagged tuple."""
        assert self._io is not None

        def call() -> tuple[Any, ...]:
            from skinbatch.dicomweb.client import ArchiveRejected, ArchiveUnavailable, NotInArchive

            try:
                return ("ok", fn())
            except ArchiveUnavailable as exc:
                return ("retry", str(exc))
            except (NotInArchive, ArchiveRejected) as exc:
                return ("reject", exc.type, str(exc))
            except Exception as exc:  # noqa: BLE001 - reported to the loop, never lost in a thread
                return ("bug", f"{type(exc).__name__}: {exc}")

        future = self._io.submit(call)
        future.add_done_callback(lambda f: self._post(on_done, job, f.result()))

    def _archive_fault(self, job: Job, error: str, retry: Callable[[], None], stage: str) -> None:
        """The archive failed: pause consumption, retry this step with backoff. Never a dead letter."""
        self.metrics.errors.labels("archive_unavailable").inc()
        self.metrics.retries.labels("archive").inc()
        if self._archive_down_since is None:
            self._archive_down_since = time.monotonic()
            self._archive_backoff = self.config.retry_initial_s
            self.metrics.archive_up.set(0)
            log.error("the DICOMweb archive failed; pausing consumption and retrying",
                      extra={"event": "archive_down", "stage": stage, "error": error[:300], **job.source})
        delay = self._archive_backoff
        self._archive_backoff = min(self._archive_backoff * 2, self.config.retry_max_s)
        self._retry_later(delay, retry, stage)

    def _archive_recovered(self) -> None:
        if self._archive_down_since is None:
            return
        down_for = time.monotonic() - self._archive_down_since
        self._archive_down_since = None
        self._archive_backoff = self.config.retry_initial_s
        self.metrics.archive_up.set(1)
        log.info("the DICOMweb archive is back; resuming", extra={"event": "archive_up", "down_s": round(down_for, 1)})

    def _submit_resolve(self, job: Job) -> None:
        if not self._current(job):
            return
        assert job.request is not None and job.request.dicomweb is not None
        ref = job.request.dicomweb
        self._io_submit(job, lambda: self._archive.resolve(ref), self._on_resolved)

    def _on_resolved(self, job: Job, outcome: tuple[Any, ...]) -> None:
        if not self._current(job):
            return
        assert job.request is not None and job.request.dicomweb is not None
        ref = job.request.dicomweb
        if outcome[0] == "retry":
            self._archive_fault(job, outcome[1], lambda: self._submit_resolve(job), "resolve")
            return
        if outcome[0] != "ok":
            self._archive_recovered()
            error_type, message = (outcome[1], outcome[2]) if outcome[0] == "reject" else ("internal_error", outcome[1])
            self._reject(job, job.request.explicit_id or ref.uri, error_type, message, None)
            return
        self._archive_recovered()
        instances = outcome[1]
        job.pending_children = len(instances)
        for inst in instances:
            child = Job(tp=job.tp, offset=job.offset, generation=job.generation, timestamp_ms=job.timestamp_ms,
                         polled=job.polled, request=job.request, parent=job, instance=inst)
            self._retrieve_backlog.append(child)
        self._pump_retrievals()

    def _pump_retrievals(self) -> None:
        """Start retrievals while the archive is up and the bytes in memory stay under the limit."""
        if self._io is None or self._archive_down_since is not None:
            return
        limit = 2 * max(1, self.config.dicomweb_workers)
        while (self._retrieve_backlog and self._retrievals < limit
               and self._bytes_in_flight < self.config.max_in_flight_bytes):
            child = self._retrieve_backlog.popleft()
            if not self._current(child):
                continue
            self._submit_retrieve(child)

    def _submit_retrieve(self, child: Job) -> None:
        if not self._current(child):
            return
        inst = child.instance
        want_header = self.config.store_results

        def retrieve() -> tuple[bytes, Any]:
            data = self._archive.retrieve(inst)
            if not want_header:
                return data, None
            from skinbatch.dicomweb.sr import header_of

            try:
                return data, header_of(data)
            except Exception:  # noqa: BLE001 - not DICOM: the decoder will say what is wrong with it
                return data, None

        self._retrievals += 1
        self._io_submit(child, retrieve, self._on_retrieved)

    def _on_retrieved(self, child: Job, outcome: tuple[Any, ...]) -> None:
        self._retrievals -= 1
        if not self._current(child):
            return
        if outcome[0] == "retry":
            self._archive_fault(child, outcome[1], lambda: self._submit_retrieve(child), "retrieve")
            return
        self._archive_recovered()
        if outcome[0] != "ok":
            error_type, message = (outcome[1], outcome[2]) if outcome[0] == "reject" else ("internal_error", outcome[1])
            self._reject(child, self._base_id(child, child.instance.instance), error_type, message, None)
            return
        data, header = outcome[1]
        assert child.request is not None
        child.request = Request(child.request.explicit_id, data, None, child.request.content_type,
                                child.request.dicomweb)
        child.size = len(data)
        child.source_header = header
        self._bytes_in_flight += child.size
        self._submit_decode(child)
        self._pump_retrievals()

    def _submit_store(self, job: Job) -> None:
        """Build the SR and store it, unless the archive already has it (same derived UID)."""
        if not self._current(job):
            return
        assert self.card is not None and job.decoded is not None
        from skinbatch.dicomweb.sr import FrameScores, build_score_report, sr_instance_uid, sr_series_uid

        card, header, archive = self.card, job.source_header, self._archive
        model = card.model_summary()
        frames = [FrameScores(n, s) for n, s in zip(job.decoded.frame_numbers, job.scores) if s is not None]
        selection = job.request.dicomweb.frame if job.request and job.request.dicomweb else None
        input_sha256 = job.decoded.sha256

        def store() -> dict[str, Any]:
            sop = sr_instance_uid(header.SOPInstanceUID, model, selection)
            series = sr_series_uid(header.StudyInstanceUID, model)
            if archive.instance_exists(header.StudyInstanceUID, sop):
                return {"sop_instance_uid": sop, "series_instance_uid": series, "stored": False}
            sr = build_score_report(header, frames, model, coarse_labels=card.coarse_labels,
                                    fine_labels=card.fine_labels, frame_selection=selection,
                                    codes=card.taxonomy.get("codes"), input_sha256=input_sha256)
            archive.store(sr)
            return {"sop_instance_uid": sop, "series_instance_uid": series, "stored": True}

        self._io_submit(job, store, self._on_stored)

    def _on_stored(self, job: Job, outcome: tuple[Any, ...]) -> None:
        if not self._current(job):
            return
        if outcome[0] in ("retry", "reject"):
            # A refused store is not the input's fault either: the results wait until the report is in.
            message = outcome[1] if outcome[0] == "retry" else outcome[2]
            self._archive_fault(job, message, lambda: self._submit_store(job), "store")
            return
        self._archive_recovered()
        if outcome[0] == "bug":
            # The image was scored; a report that cannot be built must not hold its scores back.
            self.metrics.errors.labels("sr_failed").inc()
            log.error("building the structured report failed; results are sent without one",
                      extra={"event": "sr_failed", "error": outcome[1][:300], **job.source})
        else:
            info = outcome[1]
            job.sr = {"sop_instance_uid": info["sop_instance_uid"],
                      "series_instance_uid": info["series_instance_uid"]}
            self.metrics.reports.labels("stored" if info["stored"] else "already_stored").inc()
        self._publish_results(job)

    def _child_done(self, child: Job) -> None:
        parent = child.parent
        assert parent is not None
        parent.any_ok = parent.any_ok or child.outcome == "ok"
        parent.pending_children -= 1
        if parent.pending_children > 0:
            return
        parent.outcome = "ok" if parent.any_ok else "rejected"
        self._message_done(parent)
