"""The scoring consumer: Kafka → the scoring pipeline → Kafka, at least once (exactly once with --exactly-once).

One loop thread drives a few collaborators, each with one job, all passed in:

* :class:`~skinbatch.consumer.source.KafkaSource`: the request topic (poll, pause, commit the done
  prefix, rebalances, the fetch watchdog);
* :class:`~skinbatch.scoring.pipeline.ScoringPipeline`: decode pool, batched inference on Triton, backoff
  while Triton is out (the same pipeline triage runs);
* :class:`~skinbatch.consumer.sink.ResultSink`: results, dead letters and FHIR bundles, each acknowledged;
* :class:`~skinbatch.consumer.resolver.DicomWebResolver`: requests that name instances in a DICOMweb
  archive, and the structured reports stored back there;
* :class:`~skinbatch.consumer.modelwatch.ModelWatch`: a thread that notices a model rebuilt under us.

This module decides what each outcome means for a Kafka message: which result or dead letter answers
it, and when it is done. A message is done once every record answering it is acknowledged by the
broker; only the fully done prefix of a partition is committed. Threads hand work to the loop through
one :class:`~skinbatch.scoring.pipeline.Mailbox`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

from skinbatch import faults
from skinbatch.backoff import Backoff
from skinbatch.contract import (
    ArchiveUnavailable,
    ErrorType,
    ExitCode,
    KafkaProblem,
    ServedModelChanged,
    SkinbatchError,
)
from skinbatch.drift import ScoreWindow
from skinbatch.imaging.model_input import ModelInput
from skinbatch.modelcard import ModelCard
from skinbatch.privacy import derived_id
from skinbatch.scoring import TritonTLSError, TritonUnavailable
from skinbatch.scoring.pipeline import Mailbox, PipelineOptions, ScoredInput, ScoringPipeline
from skinbatch.scoring.servers import AnyScorer
from skinbatch.timers import Timers

from . import messages
from .config import ConsumerConfig
from .errors import RequestRejected
from .health import Health, WedgeWatch
from .jobs import Job
from .metrics import ConsumerMetrics
from .modelwatch import ModelWatch
from .poison import PoisonGuard
from .producer import ResultProducer
from .requests import Request, explicit_request_id, parse_request
from .resolver import DicomWebResolver
from .sink import Record, ResultSink
from .source import KafkaSource, Taken
from .transactions import make_committer
from .watchdog import Verdict

log = logging.getLogger("skinbatch.consumer")

INTERNAL_ERROR_LIMIT = 3
"""Consecutive unexpected decoder failures after which the consumer stops instead of dead-lettering."""


class ScoringConsumer:
    """A member of the consumer group. ``run()`` blocks until ``stop()``; ``stop()`` is safe from any thread."""

    def __init__(self, config: ConsumerConfig, *, kafka_consumer: Any, producer: ResultProducer,
                 scorer: AnyScorer, watch_scorer: AnyScorer | None = None, archive: Any = None,
                 metrics: ConsumerMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or ConsumerMetrics()
        self.scorer = scorer
        self.card: ModelCard | None = None
        self.mailbox = Mailbox()
        self.timers = Timers()
        self._stop = threading.Event()
        self._exit_code = 0
        self._abandoned = False
        self._internal_errors = 0
        self._instance = f"{socket.gethostname()}/{os.getpid()}"
        self._windows: dict[str, ScoreWindow] = {}
        self._next_gauges = 0.0
        self._next_paused_poll = 0.0
        own, pipe = config.consumer, config.pipeline
        self.guard = PoisonGuard(slack=max(8, own.max_in_flight // 4))
        self._held: deque[Taken] = deque()
        """Records taken from Kafka and not started: behind a suspect that must run alone (consumer/poison.py)."""
        self.committer = make_committer(own.exactly_once, kafka_consumer, producer,
                                        on_fatal=lambda problem: self._fail(problem, "transaction_fenced"))
        self.source = KafkaSource(kafka_consumer, config.topics.request_topic, self.metrics,
                                  commit_interval_s=own.commit_interval_s, fetch_stall_s=own.fetch_stall_s,
                                  guard=self.guard, committer=self.committer)
        self.sink = ResultSink(producer, self.mailbox, self.timers, self.metrics,
                               dead_letter_topic=config.topics.dead_letter_topic, retry_s=own.retry_initial_s,
                               retry_max_s=own.retry_max_s,
                               on_fatal=lambda problem: self._fail(problem, "dead_letter_too_large"),
                               committer=self.committer)
        self._read_backoff = Backoff(max(own.retry_initial_s, own.retry_max_s / 4), own.retry_max_s)
        options = PipelineOptions(workers=pipe.decode_workers, limits=config.decode_limits(),
                                  max_frames=pipe.max_infer_in_flight, max_requests=pipe.max_infer_requests,
                                  max_batch=pipe.max_infer_batch,
                                  shared_memory=pipe.shared_memory, timeout_s=config.triton.triton_timeout_s,
                                  retry_initial_s=own.retry_initial_s, retry_max_s=own.retry_max_s,
                                  decode_timeout_s=pipe.decode_timeout_s or None,
                                  decode_memory_bytes=(pipe.decode_memory_mb << 20) or None)
        self.pipeline = ScoringPipeline(scorer, self.mailbox, self, options)
        self.resolver = None if archive is None else DicomWebResolver(
            archive, self, self.mailbox, self.timers, self.metrics, workers=config.archive.dicomweb_workers,
            retry_initial_s=own.retry_initial_s, retry_max_s=own.retry_max_s,
            store_results=config.archive.store_results, room=self._room_for_bytes, limits=config.decode_limits())
        self.health = Health(config.consumer.liveness_timeout_s)
        self.health.archive = None if archive is None else True
        self.metrics.health = self.health
        self.wedge_watch = WedgeWatch(self.health, on_exit=_end_children)
        self.watch = None if watch_scorer is None else ModelWatch(
            watch_scorer, lambda: self.card, self.mailbox, self.metrics, on_changed=self.model_changed,
            on_new_card=self._new_card)

    # -- public -------------------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def exit_code(self) -> int:
        """What ``run()`` returns: 0, or the ExitCode of the reason it stopped."""
        return self._exit_code

    def run(self) -> int:
        try:
            self.card = self._wait_for_model()
        except TritonTLSError as exc:
            log.critical("cannot speak to Triton: %s", exc,
                         extra={"event": "triton_tls", "exit_code": int(exc.exit_code)})
            return int(exc.exit_code)
        if self.card is None:
            return 0
        log.info("model loaded", extra={"event": "model", "model": self.card.model_summary(),
                                        "preprocessing": self.card.preprocessing_spec().to_dict()})
        if not self.card.trained:
            log.warning("serving an UNTRAINED model: scores are random", extra={"event": "untrained"})
        try:
            try:
                self.pipeline.start()
            except SkinbatchError as exc:
                log.critical("%s", exc, extra={"event": "pipeline", "exit_code": int(exc.exit_code)})
                return int(exc.exit_code)
            self.source.subscribe()
            if self.watch is not None:
                self.watch.start()
            self.health.started = True
            self.wedge_watch.start()
            topics = self.config.topics
            log.info("consuming", extra={"event": "start", "topic": topics.request_topic, "group": topics.group_id,
                                         "shared_memory": self.pipeline.shared_memory})
            while not self._stop.is_set():
                self._step()
            self._drain()
        finally:
            self._close()
        return self._exit_code

    def _wait_for_model(self) -> ModelCard | None:
        backoff = Backoff(self.config.consumer.retry_initial_s, self.config.consumer.retry_max_s)
        while not self._stop.is_set():
            self.health.turned(work_in_flight=False, waiting_on_purpose=True)
            try:
                if self.scorer.is_ready():
                    self.metrics.triton_up.set(1)
                    return self.scorer.load_card()
            except TritonTLSError:
                raise  # a misconfiguration, not an outage: waiting will not fix it
            except TritonUnavailable as exc:
                log.warning("model card unreadable", extra={"event": "triton_wait", "error": str(exc)})
            self.metrics.triton_up.set(0)
            delay = backoff.next()
            log.warning("waiting for Triton",
                        extra={"event": "triton_wait", "url": self.scorer.url, "retry_in_s": round(delay, 2)})
            self._stop.wait(delay)
        return None

    # -- the loop ------------------------------------------------------------------------------------------
    def _step(self) -> None:
        self.health.turned(self.source.tracker.in_flight() > 0, self._waiting_on_purpose())
        self.timers.run_due()
        self.pipeline.pump()
        if self.resolver is not None:
            self.resolver.pump()
        if self._held:
            self._release_held()
        self._flow_control()
        busy = self.source.tracker.in_flight() > 0
        now = time.monotonic()
        if self.source.paused and busy and now < self._next_paused_poll:
            # Paused with work in flight (the usual state under a backlog): Kafka has nothing to hand over,
            # so wait for that work instead of spinning through kafka-python's poll. Heartbeats run on
            # kafka-python's own thread; a poll every 100 ms still serves rebalances.
            self.mailbox.run(timeout=0.05)
        else:
            self._next_paused_poll = now + 0.1
            try:
                self._admit(list(self.source.poll(timeout_ms=10 if busy else 200)))
            except KafkaProblem as problem:
                self._fail(problem, "kafka_codec")
            self.mailbox.run(timeout=0.005 if busy else 0.0)
        self.source.maybe_commit()
        if now >= self._next_gauges:
            self._next_gauges = now + 1.0
            self._update_gauges()
        if self.source.watch() is Verdict.EXIT:
            self._exit_code = int(ExitCode.FETCH_STALLED)
            self._stop.set()

    def _waiting_on_purpose(self) -> bool:
        """Work waits for Triton or the archive to come back: not stuck."""
        return self.pipeline.down_since is not None or (self.resolver is not None
                                                        and self.resolver.down_since is not None)

    def _room_for_bytes(self) -> bool:
        """The byte budget (``--max-in-flight-bytes``): payloads waiting to be decoded, and what DICOMweb
        retrievals hold or may still receive (each counts ``--max-image-bytes`` until its size is known)."""
        held = self.resolver.meter.held if self.resolver is not None else 0
        return self.pipeline.payload_bytes + held < self.config.consumer.max_in_flight_bytes

    def _flow_control(self) -> None:
        limit = self.config.consumer.max_in_flight
        resolver = self.resolver
        saturated = (self.source.tracker.in_flight() >= limit or not self._room_for_bytes() or self._held
                     or self.committer.holding >= limit  # answers waiting for their transaction
                     or self.pipeline.saturated
                     or (resolver is not None and (resolver.backlog >= limit or resolver.down_since)))
        self.source.flow(bool(saturated) or self._stop.is_set())

    # -- admitting records: poison messages (consumer/poison.py) -------------------------------------------
    def _admit(self, takens: list[Taken]) -> None:
        """Records just taken: read their partitions' suspects where new, then start what may start."""
        for taken in takens:
            if not self.guard.loaded(taken.tp):
                self.source.load_guard(taken.tp)
            self.guard.passed(taken.tp, taken.offset, partial(self.source.tracker.is_tracked, taken.tp))
        self._held.extend(takens)
        self._release_held()

    def _processing(self) -> int:
        """Messages started and not yet answered (taken, less those held back)."""
        return self.source.tracker.in_flight() - sum(1 for t in self._held if self._taken_current(t))

    def _taken_current(self, taken: Taken) -> bool:
        return self.source.current(taken.tp, taken.generation, taken.offset)

    def _release_held(self) -> None:
        """Start held records in order: poison is dead-lettered unstarted; a suspect starts alone, once
        nothing else is in flight, under a grant of its own; the rest start together."""
        guard = self.guard
        batch: list[Taken] = []
        while self._held and guard.alone_in_flight is None:
            taken = self._held[0]
            if not self._taken_current(taken):
                self._held.popleft()  # its partition was revoked: the new owner takes it
                continue
            if guard.poison(taken.tp, taken.offset):
                self._held.popleft()
                self._poisoned(taken)
                continue
            if guard.suspect(taken.tp, taken.offset):
                if batch or self._processing() > 0:
                    break
                self._held.popleft()
                self.source.commit_guard(guard.go_alone(taken.tp, taken.offset))
                log.info("retrying a message alone", extra={"event": "suspect_alone", **_where(taken)})
                self._accept(taken)
                break
            self._held.popleft()
            batch.append(taken)
        if batch:
            self._start(batch)

    def _start(self, batch: list[Taken]) -> None:
        """Commit a grant first where a record lies past its partition's, then start them all."""
        tops: dict[Any, int] = {}
        for taken in batch:
            if not self.guard.may_start(taken.tp, taken.offset):
                tops[taken.tp] = max(tops.get(taken.tp, -1), taken.offset)
        for tp, top in tops.items():
            self.guard.grant(tp, top + 1)
        if tops:
            self.source.commit_guard(list(tops))
        for taken in batch:
            self._accept(taken)

    def _poisoned(self, taken: Taken) -> None:
        """In flight at a death, then alone at a further one: answered with a dead letter, never started."""
        record = taken.record
        job = Job(taken=taken, timestamp_ms=record.timestamp or 0, polled=time.monotonic())
        job.size = len(record.value) if record.value else 0
        log.error("a message was in flight at two deaths of the consumer's process; dead-lettered as poison",
                  extra={"event": "poison", **_where(taken)})
        self.reject(job, _fallback_id(record), ErrorType.POISON,
                    "the consumer's process died twice while this message was in flight, the second time with "
                    "it alone; it is not processed again (docs/runbook.md, poison messages)", {"bytes": job.size})

    # -- accepting a record ----------------------------------------------------------------------------------
    def _accept(self, taken: Taken) -> None:
        cfg, record = self.config, taken.record
        job = Job(taken=taken, timestamp_ms=record.timestamp or 0, polled=time.monotonic())
        value = record.value
        job.size = len(value) if value else 0
        try:
            request = parse_request(value, record.key, list(record.headers or []), cfg.consumer.archive_root,
                                    cfg.pipeline.max_image_bytes, dicomweb_enabled=self.resolver is not None)
        except RequestRejected as exc:
            self.reject(job, _fallback_id(record), exc.type, exc.message, {"bytes": job.size})
            return
        if cfg.consumer.malignancy_maps and not request.want_map:
            request = replace(request, want_map=True)
        job.request = replace(request, payload=None)  # the pipeline holds the bytes until they are decoded
        if request.dicomweb is not None:
            assert self.resolver is not None
            self.resolver.resolve(job)
        else:
            self.pipeline.submit(job, payload=request.payload, path=request.path, want_map=job.want_map)
        _test_faults(record)

    def _resubmit(self, job: Job) -> None:
        """A referenced file that could not be read: read it again (an archive mount that comes back)."""
        if self.current(job) and job.request is not None:
            self.pipeline.submit(job, path=job.request.path, want_map=job.want_map)

    # -- the pipeline's listener -------------------------------------------------------------------------------
    def current(self, job: Job) -> bool:
        """False once the job's partition was revoked: its work is dropped, a new owner redoes it."""
        return self.source.current(job.tp, job.taken.generation, job.offset)

    def frames(self, job: Job, decoded: ModelInput) -> Sequence[int]:
        self._internal_errors = 0
        self._read_backoff.reset()
        job.decoded = decoded
        wanted = job.request.dicomweb.frame if job.request and job.request.dicomweb else None
        if wanted is None:
            return range(len(decoded.frame_numbers))
        if wanted not in decoded.frame_numbers:
            self.reject(job, self.base_id(job, decoded.sha256), ErrorType.INSTANCE_NOT_FOUND,
                        f"the instance has {len(decoded.frame_numbers)} frame(s); frame {wanted} is not one",
                        _input_info(decoded))
            return ()
        return [decoded.frame_numbers.index(wanted)]

    def scored(self, job: Job, result: ScoredInput) -> None:
        job.decoded, job.frames = result.decoded, result.frames
        self.metrics.decode_seconds.observe(result.decoded.decode_ms / 1000)
        for frame in result.frames:
            self.metrics.infer_seconds.observe(frame.infer_ms / 1000)
        if self.config.archive.store_results and self.resolver is not None and job.instance is not None \
                and job.source_header is not None:
            assert self.card is not None
            self.resolver.store(job, self.card)
            return
        self._publish(job)

    def rejected(self, job: Job, decoded: ModelInput) -> None:
        self._internal_errors = 0
        self.metrics.decode_seconds.observe(decoded.decode_ms / 1000)
        self.reject(job, self.base_id(job, decoded.sha256 or _offset_id(job)), decoded.error_type or "corrupt",
                    decoded.error_message or "", _input_info(decoded))

    def unreadable(self, job: Job, error: ArchiveUnavailable) -> None:
        self.metrics.errors.labels("archive_unavailable").inc()
        self.metrics.retries.labels("archive").inc()
        log.warning("archive read failed; will retry", extra={"event": "retry", "stage": "archive",
                                                              "error": str(error), **job.source})
        self.timers.later(self._read_backoff.next(), lambda: self._resubmit(job))

    def decode_bug(self, job: Job, error: BaseException) -> None:
        self._internal_errors += 1
        log.error("unexpected decode failure: %s: %s", type(error).__name__, error,
                  extra={"event": "decode_bug", **job.source})
        if self._internal_errors >= INTERNAL_ERROR_LIMIT:
            # A run of them is a broken deployment, not bad input: stop before the whole stream is
            # dead-lettered. This message stays uncommitted and is redelivered.
            log.critical("repeated internal decode failures; stopping", extra={"event": "circuit_open"})
            self._exit_code = int(ExitCode.INTERNAL)
            self._stop.set()
            return
        self.reject(job, self.base_id(job, _offset_id(job)), ErrorType.INTERNAL_ERROR,
                    f"{type(error).__name__}: {error}", None)

    def triton_down(self, error: BaseException) -> None:
        """Triton failed: the pipeline keeps the frames, pauses and probes. Never a dead letter."""
        self.metrics.errors.labels("triton_unavailable").inc()
        self.metrics.retries.labels("triton").inc()
        self.metrics.triton_up.set(0)
        log.error("Triton failed; pausing consumption and retrying", extra={"event": "triton_down",
                                                                            "error": str(error)[:300]})
        if isinstance(error, TritonTLSError):
            self._exit_code = int(ExitCode.TLS)
            self._stop.set()

    def triton_up(self, down_s: float) -> None:
        self.metrics.triton_up.set(1)
        log.info("Triton is back; resuming", extra={"event": "triton_up", "down_s": round(down_s, 1)})

    def model_changed(self, error: ServedModelChanged) -> None:
        """A rollout happened under us: stop at once, with nothing labelled by the wrong model card.

        No drain: what is in flight would be answered by the new model and named after the old card.
        The done prefix is committed; everything after it is redelivered to the restarted process,
        which reads the new card.
        """
        if self._abandoned:
            return
        self._abandoned = True
        self.pipeline.abandon()
        self.metrics.errors.labels("model_changed").inc()
        log.critical("Triton serves another model version than the model card read at start-up; exiting so "
                     "that a restart reads the new card", extra={"event": "model_changed", "served": error.served,
                                                                 "card_version": error.card_version,
                                                                 "exit_code": int(ExitCode.MODEL_CHANGED)})
        self._exit_code = int(ExitCode.MODEL_CHANGED)
        self._stop.set()

    def _new_card(self, card: ModelCard) -> None:
        """Same model, new card (a reference distribution added): adopt it, nothing to restart."""
        self.card = card
        log.info("the model card changed without the model (reference distribution); adopted",
                 extra={"event": "card_updated"})

    # -- the DICOMweb resolver's owner -----------------------------------------------------------------------
    def children(self, parent: Job, children: list[Job]) -> None:
        parent.pending_children = len(children)

    def retrieved(self, child: Job, data: bytes) -> None:
        child.size = len(data)
        self.pipeline.submit(child, payload=data, want_map=child.want_map)

    def stored(self, job: Job, report: dict[str, str] | None) -> None:
        job.sr = report
        self._publish(job)

    # -- answers ---------------------------------------------------------------------------------------------
    def base_id(self, job: Job, fallback: str) -> str:
        """The request id results of this job derive from (before ``:<frame>``).

        A study or series fans out: each instance gets ``<request id>/<SOP Instance UID>``, or without an
        explicit id the keyed hash of the SOP Instance UID (``skinbatch.privacy.derived_id``), never the
        UID itself. An instance reference keeps the usual rule; a ``fallback`` that is a UID is hashed too.
        """
        explicit = job.request.explicit_id if job.request else None
        ref = job.request.dicomweb if job.request else None
        if job.instance is not None and ref is not None and ref.level != "instance":
            return f"{explicit}/{job.instance.instance}" if explicit else derived_id(job.instance.instance)
        if job.instance is not None:
            return explicit or derived_id(job.instance.instance)
        return explicit or fallback

    def _publish(self, job: Job) -> None:
        assert self.card is not None and job.decoded is not None
        d, card = job.decoded, self.card
        sop = (d.dicom or {}).get("sop_instance_uid")
        base = self.base_id(job, derived_id(sop) if sop else d.sha256)
        frames = len(d.frame_numbers)
        # One frame named out of a multi-frame instance: its id keeps the ":<frame>" suffix.
        reference = job.request.dicomweb if job.request is not None else None
        one_frame_named = reference is not None and bool(reference.frame)
        total_ms = (time.monotonic() - job.polled) * 1000
        scored_at = messages.now()  # one clock read for every frame of the message
        results = []
        for frame in job.frames:
            rid = messages.frame_request_id(base, frame.number, 2 if one_frame_named else frames)
            dicom = None if d.dicom is None else {**d.dicom, "frame": frame.number}
            msg = messages.result_message(
                request_id=rid, scores=frame.scores, card=card, src=job.source,
                input_info={**_input_info(d, job.request), "frame": frame.number, "frames": frames}, dicom=dicom,
                timings_ms={"decode": d.decode_ms, "infer": frame.infer_ms, "total": total_ms},
                with_map=job.want_map, scored_at=scored_at)
            msg["consumer"] = self._instance
            if job.sr is not None:
                msg["sr"] = job.sr
            results.append(msg)
            self._observe(frame.scores.malignancy, card.version)
        records = [Record(self.config.topics.result_topic, m["request_id"], m) for m in results]
        if self.config.topics.fhir_topic:
            records.append(self._fhir_record(base, results, card))
        job.outcome = "ok"
        self.sink.send(records, lambda: self._answered(job), current=lambda: self.current(job), source=job.source)

    def _fhir_record(self, base: str, results: list[dict[str, Any]], card: ModelCard) -> Record:
        from skinbatch.fhir import CONTENT_TYPE, FhirFrame, encode, fhir_bundle

        bundle = fhir_bundle(base, [FhirFrame.from_result(m) for m in results], card.model_summary(),
                             codes=card.taxonomy.get("codes"), issued=datetime.now(UTC),
                             taxonomy_name=card.taxonomy.get("name"))
        assert self.config.topics.fhir_topic is not None
        return Record(self.config.topics.fhir_topic, base, encode(bundle), (("content-type", CONTENT_TYPE.encode()),))

    def reject(self, job: Job, request_id: str, error_type: str, message: str,
               input_info: dict[str, Any] | None) -> None:
        self.metrics.errors.labels(error_type).inc()
        log.warning("input rejected", extra={"event": "rejected", "type": error_type, **job.source})
        msg = messages.dead_letter_message(request_id=request_id, error_type=error_type, error_message=message,
                                           src=job.source, input_info=input_info)
        job.outcome = "rejected"
        topic = self.config.topics.dead_letter_topic
        self.sink.send([Record(topic, msg["request_id"], msg)], lambda: self._answered(job),
                       current=lambda: self.current(job), source=job.source)

    def _answered(self, job: Job) -> None:
        if job.outcome == "ok":
            self.metrics.images.inc(len(job.frames))
        if job.parent is not None:
            parent = job.parent
            parent.any_ok = parent.any_ok or job.outcome == "ok"
            parent.pending_children -= 1
            job.decoded, job.source_header, job.frames = None, None, []
            if parent.pending_children > 0:
                return
            parent.outcome = "ok" if parent.any_ok else "rejected"
            job = parent
        if not self.source.done(job.tp, job.offset):
            return
        if self.guard.finished(job.tp, job.offset):
            self.source.commit_guard([job.tp])  # the suspect retried alone is answered: no longer "alone"
        self.health.progressed()
        self.metrics.messages.labels(job.outcome).inc()
        if job.timestamp_ms:
            self.metrics.latency.observe(max(0.0, time.time() - job.timestamp_ms / 1000))
        job.decoded, job.frames = None, []

    # -- drift and gauges --------------------------------------------------------------------------------------
    def _observe(self, malignancy: float, version: str) -> None:
        self.metrics.malignancy.labels(version).observe(malignancy)
        self._windows.setdefault(version, ScoreWindow()).observe(malignancy)

    def _update_gauges(self) -> None:
        health = self.health
        health.kafka = self.source.connected()
        health.triton = self.pipeline.down_since is None and (self.watch is None or self.watch.reachable is not False)
        if self.resolver is not None:
            health.archive = self.resolver.down_since is None
        self.metrics.in_flight.set(self.source.tracker.in_flight())
        self.metrics.infer_in_flight.set(self.pipeline.frames_at_triton)
        for tp, lag in self.source.lags():
            self.metrics.lag.labels(tp.topic, str(tp.partition)).set(lag)
        reference = self.card.reference() if self.card is not None else None
        if reference is not None:
            for version, window in self._windows.items():
                value = window.psi(reference)
                if value is not None:
                    self.metrics.malignancy_psi.labels(version).set(value)

    # -- stopping ----------------------------------------------------------------------------------------------
    def _fail(self, problem: KafkaProblem, event: str) -> None:
        """Stop with the problem's exit code and one line saying why; what is done is still committed."""
        if self._exit_code == 0:
            log.critical("%s", problem, extra={"event": event, "exit_code": int(problem.exit_code)})
            self.metrics.errors.labels(event).inc()
            self._exit_code = int(problem.exit_code)
        self._stop.set()

    def _drain(self) -> None:
        """After SIGTERM: take nothing new, finish what is in flight, commit.

        Abandoned work (the served model changed, before or during the drain) is not finished: only the
        done prefix is committed, and the rest is redelivered.
        """
        deadline = time.monotonic() + self.config.consumer.drain_timeout_s
        if not self._abandoned:
            log.info("draining", extra={"event": "drain", "in_flight": self.source.tracker.in_flight()})
        while self._processing() > 0 and time.monotonic() < deadline and not self._abandoned:
            self.health.turned(True, True)
            self.timers.run_due()
            self.pipeline.pump()
            if self.resolver is not None:
                self.resolver.pump()
            self.source.flow(True)
            self.source.keep_alive()
            self.mailbox.run(timeout=0.05)
        if self._processing() and not self._abandoned:
            log.warning("drain timed out; unfinished messages will be redelivered",
                        extra={"event": "drain_timeout", "in_flight": self._processing()})
        self.guard.stop_cleanly()  # what is dropped now was not killed: no grant, no suspects from it
        self.source.maybe_commit(force=True)

    def _close(self) -> None:
        self._stop.set()
        self.health.stopping = True
        self.wedge_watch.stop()
        if self.watch is not None:
            self.watch.stop()
        self.sink.close(10)
        self.source.close()
        self.pipeline.close()
        if self.resolver is not None:
            self.resolver.close()
        self.scorer.close()
        sent = self.pipeline.batches_sent
        log.info("stopped", extra={"event": "stop", "requests": sent, "frames": self.pipeline.frames_sent,
                                   "average_batch": round(self.pipeline.frames_sent / sent, 2) if sent else None})


def preflight(config: ConsumerConfig) -> None:
    """Before any work: every codec decodes, Kafka accepts these settings, and so does the DICOMweb
    archive when one is configured (each within 30 s).

    Raises :class:`skinbatch.contract.KafkaProblem`: a missing codec package, a refused connection, an
    untrusted certificate or refused credentials, each with its own exit code and what to do next; and
    :class:`skinbatch.contract.ArchiveProblem` for the archive's certificate (13) or credentials (12). An
    archive that does not answer is only logged: DICOMweb requests wait for it with backoff.
    """
    from skinbatch.connect.kafka import check_codecs, probe_kafka

    check_codecs()
    probe_kafka(config.kafka_connection())
    settings = config.dicomweb_settings()
    if settings is not None:
        from skinbatch.dicomweb.client import DicomWebArchive

        down = DicomWebArchive(settings).probe()
        if down is not None:
            log.warning("the DICOMweb archive does not answer at start-up (%s); DICOMweb requests wait for it",
                        down, extra={"event": "archive_down_at_start"})


def _where(taken: Taken) -> dict[str, Any]:
    return {"topic": taken.tp.topic, "partition": taken.tp.partition, "offset": taken.offset}


def _test_faults(record: Any) -> None:
    """Test-only switches (skinbatch/faults.py; never set in production): die, or wedge the loop, on cue."""
    kill, wedge = faults.get("kill_in_flight"), faults.get("wedge")
    if kill is None and wedge is None:
        return
    rid = explicit_request_id(list(record.headers or []), record.key)
    if rid is not None and rid == kill:
        log.warning("test fault: killing this process with the request in flight", extra={"event": "test_fault"})
        os.kill(os.getpid(), signal.SIGKILL)
    if rid is not None and rid == wedge:
        log.warning("test fault: wedging the main loop", extra={"event": "test_fault"})
        threading.Event().wait()


def _end_children() -> None:
    """Before a wedged process exits: stop the decode workers it spawned (os._exit skips that)."""
    import multiprocessing

    for child in multiprocessing.active_children():
        child.terminate()


def _fallback_id(record: Any) -> str:
    rid = explicit_request_id(list(record.headers or []), record.key)
    return rid or hashlib.sha256(record.value or b"").hexdigest()


def _offset_id(job: Job) -> str:
    return f"{job.tp.topic}/{job.tp.partition}/{job.offset}"


def _input_info(d: ModelInput, request: Request | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {"sha256": d.sha256, "bytes": d.nbytes}
    if d.format:
        info["format"] = d.format
        info["monochrome"] = d.monochrome
    if d.color is not None:
        info["color_profile"] = d.color
    acquisition = {**((request.acquisition if request is not None else None) or {}), **(d.acquisition or {})}
    if acquisition:
        info["acquisition"] = acquisition
    return info


__all__ = ["ScoringConsumer", "preflight"]
