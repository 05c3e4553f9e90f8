"""The consumer's event loop: Kafka → decode pool → Triton → Kafka, at least once.

One thread owns the KafkaConsumer (kafka-python's consumer is not thread-safe). Decoding runs in a
process pool; inference runs as many concurrent gRPC requests; produce acknowledgements arrive on the
producer's thread. All three report back through one queue, and the loop acts on them. An offset is
committed only once every output of its message (results or a dead letter) has been acknowledged by
the broker, and only as part of a fully processed prefix of its partition.

A DICOMweb request (a study, series or instance in the ``--dicomweb-url`` archive) fans out into one
child job per instance: consumer/fanout.py. consumer/watchdog.py decides when Kafka has stopped
delivering a waiting backlog.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

from skinbatch.connect.kafka import check_codecs, codec_problem, probe_kafka
from skinbatch.contract import ErrorType, ExitCode, KafkaProblem
from skinbatch.modelcard import ModelCard
from skinbatch.scoring import Scores, ServedModelChanged, TritonScorer, TritonTLSError, TritonUnavailable

from . import messages
from .config import ConsumerConfig
from .decode import ArchiveUnavailable, ModelInput, decode_request, decode_worker_init
from .errors import RequestRejected
from .fanout import DicomWebFanOut
from .jobs import Job
from .metrics import ConsumerMetrics
from .offsets import OffsetTracker
from .producer import RecordTooLarge, ResultProducer, read_record_limits
from .requests import Request, parse_request
from .watchdog import FetchWatchdog, Verdict

log = logging.getLogger("skinbatch.consumer")

CARD_CHECK_TICKS = 12
"""The served model card is re-read every this many statistics samples (5 s each): once a minute."""

INTERNAL_ERROR_LIMIT = 3
"""Consecutive unexpected decoder failures after which the consumer stops instead of dead-lettering."""


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, service: ScoringConsumer) -> None:
        self.service = service

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.service._on_revoked(list(revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.service._on_assigned(list(assigned))


class ScoringConsumer(DicomWebFanOut):
    """A member of the consumer group. ``run()`` blocks until ``stop()``; both are safe from a signal handler."""

    def __init__(self, config: ConsumerConfig, metrics: ConsumerMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or ConsumerMetrics()
        self.tracker = OffsetTracker()
        self._events: queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...]]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._generation: dict[TopicPartition, int] = {}
        self._restart_at: dict[TopicPartition, int] = {}
        self._gen_counter = itertools.count(1)
        self._infer_backlog: deque[tuple[Job, int]] = deque()
        self._infer_in_flight = 0
        self._bytes_in_flight = 0
        self._retry_heap: list[tuple[float, int, Callable[[], None]]] = []
        self._retry_seq = itertools.count()
        self._triton_down_since: float | None = None
        self._triton_backoff = config.retry_initial_s
        self._next_probe = 0.0
        self._last_commit = 0.0
        self._paused = False
        self.card: ModelCard | None = None
        self._internal_errors = 0
        self._exit_code = 0
        self._abandoned = False
        """Set when in-flight work must not be finished (the served model changed): exit without a drain."""
        self._instance = f"{socket.gethostname()}/{os.getpid()}"
        self._consumer: KafkaConsumer | None = None
        self._producer: ResultProducer | None = None
        self._pool: ProcessPoolExecutor | None = None
        self._scorer: TritonScorer | None = None
        self._init_fan_out()
        self._watchdog = FetchWatchdog(config.fetch_stall_s)
        self._delivered: set[TopicPartition] = set()
        self._next_watch = 0.0
        self._next_paused_poll = 0.0
        self._next_gauges = 0.0

    # -- public ------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def run(self) -> int:
        cfg = self.config
        # The pool is made before any gRPC channel exists: forking a process that holds one is unsafe.
        self._pool = self._new_pool()
        self._open_archive()
        target = cfg.triton_target()
        self._scorer = TritonScorer(target.endpoint, model=cfg.model, timeout_s=cfg.triton_timeout_s, tls=target.tls)
        try:
            self.card = self._wait_for_model()
        except TritonTLSError as exc:
            log.critical("cannot speak to Triton: %s", exc, extra={"event": "triton_tls", "exit_code": int(exc.exit_code)})
            self._shutdown_pool()
            return int(exc.exit_code)
        if self.card is None:
            self._shutdown_pool()
            return 0
        # Read once, from the model card: a card this version cannot honour stops start-up here,
        # instead of failing every message.
        self._preprocessing = self.card.preprocessing_spec()
        log.info("model loaded", extra={"event": "model", "model": self.card.model_summary(),
                                        "preprocessing": self._preprocessing.to_dict()})
        if not self.card.trained:
            log.warning("serving an UNTRAINED model: scores are random", extra={"event": "untrained"})
        security = cfg.kafka_connection().client_kwargs()
        self._producer = self._new_producer(security)
        self._consumer = KafkaConsumer(
            group_id=cfg.group_id, client_id=cfg.client_id,
            enable_auto_commit=False, auto_offset_reset="earliest",
            max_poll_records=max(1, min(cfg.max_in_flight, 500)),
            session_timeout_ms=cfg.session_timeout_ms, heartbeat_interval_ms=max(1000, cfg.session_timeout_ms // 4),
            max_partition_fetch_bytes=cfg.max_message_bytes + 65536,
            fetch_max_bytes=max(cfg.max_message_bytes + 65536, 52428800),
            # Full fetch requests: a few partitions per member make incremental fetch sessions
            # (KIP-227) save nothing, and in kafka-python they have left partitions unfetched
            # (upstream issue #2575).
            enable_incremental_fetch_sessions=False,
            **security,
        )
        self._consumer.subscribe([cfg.request_topic], listener=_Rebalance(self))
        stats = threading.Thread(target=self._sample_triton_statistics, name="triton-stats", daemon=True)
        stats.start()
        log.info("consuming", extra={"event": "start", "topic": cfg.request_topic, "group": cfg.group_id})
        try:
            while not self._stop.is_set():
                self._step()
            self._drain()
        finally:
            self._close()
        return self._exit_code

    # -- start-up ----------------------------------------------------------------------------
    def _new_producer(self, security: dict[str, Any]) -> ResultProducer:
        """Idempotent, acks=all, compressed; sized under the result and dead-letter topics' limits."""
        cfg = self.config
        topics = [cfg.result_topic, cfg.dead_letter_topic]

        def make(**sizes: int) -> KafkaProducer:
            return KafkaProducer(client_id=cfg.client_id, acks="all", enable_idempotence=True, linger_ms=5,
                                 compression_type=None if cfg.compression_type == "none" else cfg.compression_type,
                                 **sizes, **security)

        def limits() -> dict[str, int]:
            from kafka import KafkaAdminClient

            admin = KafkaAdminClient(client_id=f"{cfg.client_id}-limits", **security)
            try:
                return read_record_limits(admin, topics)
            finally:
                admin.close()

        producer = ResultProducer(make, limits)
        producer.check_limits()
        return producer

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=self.config.decode_workers, mp_context=get_context("spawn"),
                                   initializer=decode_worker_init)

    def _wait_for_model(self) -> ModelCard | None:
        backoff = self.config.retry_initial_s
        assert self._scorer is not None
        while not self._stop.is_set():
            try:
                if self._scorer.is_ready():
                    self.metrics.triton_up.set(1)
                    return self._scorer.load_card()
            except TritonTLSError:
                raise  # a misconfiguration, not an outage: waiting will not fix it
            except TritonUnavailable as exc:
                log.warning("model card unreadable", extra={"event": "triton_wait", "error": str(exc)})
            self.metrics.triton_up.set(0)
            log.warning("waiting for Triton", extra={"event": "triton_wait", "url": self._scorer.url,
                                                     "retry_in_s": backoff})
            self._stop.wait(backoff)
            backoff = min(backoff * 2, self.config.retry_max_s)
        return None

    # -- the loop ----------------------------------------------------------------------------
    def _step(self) -> None:
        self._run_due_retries()
        self._probe_triton()
        self._pump_retrievals()
        self._pump_inference()
        self._flow_control()
        assert self._consumer is not None
        busy = self.tracker.in_flight() > 0
        now = time.monotonic()
        if self._paused and busy and now < self._next_paused_poll:
            # Paused with work in flight (the usual state under a backlog): Kafka has nothing to hand
            # over, so wait for that work instead of spinning through kafka-python's poll. Heartbeats
            # run on kafka-python's own thread; a poll every 100 ms still serves rebalances.
            self._handle_events(timeout=0.05)
        else:
            self._next_paused_poll = now + 0.1
            records = self._poll(timeout_ms=10 if busy else 200)
            self._delivered.update(tp for tp, batch in records.items() if batch)
            for tp, batch in records.items():
                for record in batch:
                    self._accept(tp, record)
            self._handle_events(timeout=0.005 if busy else 0.0)
        self._maybe_commit()
        if now >= self._next_gauges:
            self._next_gauges = now + 1.0
            self._update_gauges()
        self._watch_fetching()

    def _poll(self, timeout_ms: int) -> dict[TopicPartition, list[Any]]:
        """kafka-python's poll; a batch in a codec this install cannot decode stops the consumer.

        Nothing of that batch was accepted, so the done prefix ends before it: the drain commits only
        that prefix, nothing is dead-lettered, and the restarted consumer (with the codec installed)
        reads the batch again.
        """
        from kafka.errors import UnsupportedCodecError

        assert self._consumer is not None
        try:
            return self._consumer.poll(timeout_ms=timeout_ms)
        except UnsupportedCodecError as exc:
            problem = codec_problem(exc)
            self._fail(problem, "kafka_codec")
            return {}

    def _fail(self, problem: KafkaProblem, event: str) -> None:
        """Stop with the problem's exit code and one line saying why; what is done is still committed."""
        if self._exit_code == 0:
            log.critical("%s", problem, extra={"event": event, "exit_code": int(problem.exit_code)})
            self.metrics.errors.labels(event).inc()
            self._exit_code = int(problem.exit_code)
        self._stop.set()

    def _handle_events(self, timeout: float) -> None:
        try:
            fn, args = self._events.get(timeout=timeout) if timeout else self._events.get_nowait()
        except queue.Empty:
            return
        fn(*args)
        while True:
            try:
                fn, args = self._events.get_nowait()
            except queue.Empty:
                return
            fn(*args)

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        """Hand work from another thread to the loop."""
        self._events.put((fn, args))

    def _current(self, job: Job) -> bool:
        """False once the job's partition was revoked: its work is dropped, a new owner redoes it."""
        return self._generation.get(job.tp) == job.generation and self.tracker.is_tracked(job.tp, job.offset)

    # -- accept a record ---------------------------------------------------------------------
    def _accept(self, tp: TopicPartition, record: Any) -> None:
        cfg = self.config
        job = Job(tp=tp, offset=record.offset, generation=self._generation.get(tp, 0),
                   timestamp_ms=record.timestamp or 0, polled=time.monotonic())
        self.tracker.started(tp, record.offset)
        value = record.value
        job.size = len(value) if value else 0
        try:
            job.request = parse_request(value, record.key, list(record.headers or []), cfg.archive_root,
                                        cfg.max_message_bytes, dicomweb_enabled=self._archive is not None)
        except RequestRejected as exc:
            rid = _fallback_id(record)
            self._reject(job, rid, exc.type, exc.message, {"bytes": job.size})
            return
        if job.request.dicomweb is not None:
            self._submit_resolve(job)
            return
        self._bytes_in_flight += job.size
        self._submit_decode(job)

    def _submit_decode(self, job: Job) -> None:
        assert self._pool is not None and self.card is not None and job.request is not None
        cfg = self.config
        try:
            future = self._pool.submit(decode_request, job.request.payload, job.request.path,
                                       self._preprocessing, cfg.max_message_bytes, cfg.max_pixels)
        except BrokenProcessPool:
            self._restart_pool()
            self._retry_later(cfg.retry_initial_s, lambda: self._submit_decode(job), "decode")
            return
        future.add_done_callback(lambda f: self._post(self._on_decoded, job, f))

    def _on_decoded(self, job: Job, future: Future[ModelInput]) -> None:
        if not self._current(job):
            self._release_payload(job)
            return
        try:
            decoded = future.result()
        except ArchiveUnavailable as exc:
            self.metrics.errors.labels("archive_unavailable").inc()
            log.warning("archive read failed; will retry", extra={"event": "retry", "stage": "archive",
                                                                  "error": str(exc), **job.source})
            self._retry_later(self.config.retry_max_s / 2, lambda: self._submit_decode(job), "archive")
            return
        except BrokenProcessPool:
            log.error("a decode worker died; restarting the pool", extra={"event": "pool_restart", **job.source})
            self._restart_pool()
            self._retry_later(self.config.retry_initial_s, lambda: self._submit_decode(job), "decode")
            return
        except Exception as exc:  # noqa: BLE001 - one decoder bug must not stop the consumer...
            self._internal_errors += 1
            log.exception("unexpected decode failure", extra={"event": "decode_bug", **job.source})
            if self._internal_errors >= INTERNAL_ERROR_LIMIT:
                # ...but a run of them is a broken deployment, not bad input: stop before the whole
                # stream is dead-lettered. This message stays uncommitted and is redelivered.
                log.critical("repeated internal decode failures; stopping", extra={"event": "circuit_open"})
                self._exit_code = int(ExitCode.INTERNAL)
                self._stop.set()
                return
            decoded = ModelInput(error_type="internal_error", error_message=f"{type(exc).__name__}: {exc}")
        else:
            self._internal_errors = 0
        self._release_payload(job)
        self.metrics.decode_seconds.observe(decoded.decode_ms / 1000)
        if not decoded.ok:
            rid = self._base_id(job, decoded.sha256 or _offset_id(job))
            self._reject(job, rid, decoded.error_type or "corrupt", decoded.error_message or "",
                         _input_info(decoded))
            return
        wanted = job.request.dicomweb.frame if job.request and job.request.dicomweb else None
        if wanted is not None:
            if wanted not in decoded.frame_numbers:
                self._reject(job, self._base_id(job, decoded.sha256), "instance_not_found",
                             f"the instance has {len(decoded.frame_numbers)} frame(s); frame {wanted} is not one",
                             _input_info(decoded))
                return
            keep = decoded.frame_numbers.index(wanted)
            assert decoded.images is not None
            decoded.images = decoded.images[keep:keep + 1]
            decoded.frame_numbers = [wanted]
        job.decoded = decoded
        n = len(decoded.frame_numbers)
        job.scores = [None] * n
        job.infer_ms = [0.0] * n
        job.remaining_frames = n
        for i in range(n):
            self._infer_backlog.append((job, i))
        self._pump_inference()

    def _release_payload(self, job: Job) -> None:
        """The raw bytes are not needed once decoded; only retries of the decode step keep them."""
        if job.request is not None and job.request.payload is not None:
            self._bytes_in_flight -= job.size
            job.request = Request(job.request.explicit_id, None, None, job.request.content_type,
                                  job.request.dicomweb)

    # -- inference ---------------------------------------------------------------------------
    def _pump_inference(self) -> None:
        if self._triton_down_since is not None or self._abandoned:
            return
        assert self._scorer is not None
        while self._infer_backlog and self._infer_in_flight < self.config.max_infer_in_flight:
            job, i = self._infer_backlog.popleft()
            if not self._current(job) or job.decoded is None or job.decoded.images is None:
                continue
            self._infer_in_flight += 1
            started = time.monotonic()
            try:
                self._scorer.infer_async(
                    job.decoded.images[i : i + 1],
                    lambda scores, error, job=job, i=i, started=started: self._post(
                        self._on_inferred, job, i, started, scores, error),
                )
            except Exception as exc:  # noqa: BLE001 - a channel failure is a Triton fault like any other
                self._on_inferred(job, i, started, None, exc)

    def _on_inferred(self, job: Job, i: int, started: float, scores: list[Scores] | None,
                     error: Exception | None) -> None:
        self._infer_in_flight -= 1
        if isinstance(error, ServedModelChanged):
            self._served_model_changed(error)
            return
        if error is not None or not scores:
            self._triton_fault(job, i, error)
            return
        self._triton_recovered()
        if not self._current(job):
            return
        elapsed = time.monotonic() - started
        self.metrics.infer_seconds.observe(elapsed)
        job.scores[i] = scores[0]
        job.infer_ms[i] = elapsed * 1000
        job.remaining_frames -= 1
        if job.remaining_frames == 0:
            if self.config.store_results and job.instance is not None and job.source_header is not None:
                self._submit_store(job)
            else:
                self._publish_results(job)

    def _served_model_changed(self, error: ServedModelChanged) -> None:
        """A rollout happened under us: stop at once, with nothing labelled by the wrong model card.

        No drain: what is in flight would be answered by the new model and named after the old card.
        The done prefix is committed; everything after it is redelivered to the restarted process,
        which reads the new card.
        """
        if self._abandoned:
            return
        self._abandoned = True
        self.metrics.errors.labels("model_changed").inc()
        log.critical("Triton serves another model version than the model card read at start-up; exiting so "
                     "that a restart reads the new card", extra={"event": "model_changed", "served": error.served,
                                                                 "card_version": error.card_version,
                                                                 "exit_code": int(ExitCode.MODEL_CHANGED)})
        self._exit_code = int(ExitCode.MODEL_CHANGED)
        self._stop.set()

    def _triton_fault(self, job: Job, i: int, error: Exception | None) -> None:
        """Triton failed: keep the frame, stop consuming, probe with backoff. Never a dead letter."""
        self.metrics.errors.labels("triton_unavailable").inc()
        self.metrics.retries.labels("triton").inc()
        if self._triton_down_since is None:
            self._triton_down_since = time.monotonic()
            self._triton_backoff = self.config.retry_initial_s
            self._next_probe = time.monotonic() + self._triton_backoff
            self.metrics.triton_up.set(0)
            log.error("Triton failed; pausing consumption and retrying",
                      extra={"event": "triton_down", "error": str(error)[:300]})
        if self._current(job):
            self._infer_backlog.appendleft((job, i))

    def _probe_triton(self) -> None:
        if self._triton_down_since is None or time.monotonic() < self._next_probe:
            return
        assert self._scorer is not None
        if self._scorer.is_ready():
            self._triton_recovered()
        else:
            self._triton_backoff = min(self._triton_backoff * 2, self.config.retry_max_s)
            self._next_probe = time.monotonic() + self._triton_backoff
            log.warning("Triton still unavailable", extra={"event": "triton_down",
                                                           "retry_in_s": self._triton_backoff})

    def _triton_recovered(self) -> None:
        if self._triton_down_since is None:
            return
        down_for = time.monotonic() - self._triton_down_since
        self._triton_down_since = None
        self.metrics.triton_up.set(1)
        log.info("Triton is back; resuming", extra={"event": "triton_up", "down_s": round(down_for, 1)})

    # -- output ------------------------------------------------------------------------------
    def _publish_results(self, job: Job) -> None:
        assert self.card is not None and job.decoded is not None
        d = job.decoded
        base = self._base_id(job, ((d.dicom or {}).get("sop_instance_uid")) or d.sha256)
        frames = len(d.frame_numbers)
        # One frame named out of a multi-frame instance: its id keeps the ":<frame>" suffix.
        one_frame_named = job.request is not None and job.request.dicomweb is not None and bool(job.request.dicomweb.frame)
        total_ms = (time.monotonic() - job.polled) * 1000
        out = []
        for i, frame in enumerate(d.frame_numbers):
            scores = job.scores[i]
            assert scores is not None
            rid = messages.frame_request_id(base, frame, 2 if one_frame_named else frames)
            dicom = None if d.dicom is None else {**d.dicom, "frame": frame}
            msg = messages.result_message(
                request_id=rid, scores=scores, card=self.card, src=job.source,
                input_info={**_input_info(d), "frame": frame, "frames": frames},
                dicom=dicom, timings_ms={"decode": d.decode_ms, "infer": job.infer_ms[i], "total": total_ms},
            )
            msg["consumer"] = self._instance
            if job.sr is not None:
                msg["sr"] = job.sr
            out.append((rid, msg))
        job.outcome = "ok"
        self._send(job, self.config.result_topic, out)

    def _reject(self, job: Job, request_id: str, error_type: str, message: str,
                input_info: dict[str, Any] | None) -> None:
        self.metrics.errors.labels(error_type).inc()
        log.warning("input rejected", extra={"event": "rejected", "type": error_type, **job.source})
        msg = messages.dead_letter_message(request_id=request_id, error_type=error_type, error_message=message,
                                           src=job.source, input_info=input_info)
        job.outcome = "rejected"
        self._send(job, self.config.dead_letter_topic, [(msg["request_id"], msg)])

    def _send(self, job: Job, topic: str, out: list[tuple[str, dict[str, Any]]]) -> None:
        assert self._producer is not None
        job.unacked = len(out)
        for key, msg in out:
            self._produce_one(job, topic, key, msg)

    def _produce_one(self, job: Job, topic: str, key: str, msg: dict[str, Any]) -> None:
        assert self._producer is not None
        try:
            future = self._producer.send(topic, key.encode("utf-8"), messages.encode(msg))
        except RecordTooLarge as exc:
            self._too_large(job, topic, key, msg, exc)
            return
        except Exception as exc:  # noqa: BLE001 - buffer full or broker gone: retry, never drop
            self._on_produced(job, topic, key, msg, exc)
            return
        future.add_callback(lambda _md: self._post(self._on_produced, job, topic, key, msg, None))
        future.add_errback(lambda exc: self._post(self._on_produced, job, topic, key, msg, exc))

    def _on_produced(self, job: Job, topic: str, key: str, msg: dict[str, Any], error: Exception | None) -> None:
        if error is not None:
            assert self._producer is not None
            self._producer.failed(error)
            if not self._current(job):
                return
            self.metrics.retries.labels("produce").inc()
            log.warning("producing failed; will retry", extra={"event": "retry", "stage": "produce",
                                                               "error": type(error).__name__, **job.source})
            self._retry_later(self.config.retry_initial_s, lambda: self._produce_one(job, topic, key, msg), "produce")
            return
        job.unacked -= 1
        if job.unacked > 0:
            return
        if job.outcome == "ok" and job.decoded is not None:
            self.metrics.images.inc(len(job.decoded.frame_numbers))
        if job.parent is not None:
            job.decoded = None
            job.source_header = None
            self._child_done(job)
            return
        self._message_done(job)

    def _too_large(self, job: Job, topic: str, key: str, msg: dict[str, Any], exc: RecordTooLarge) -> None:
        """A result over the topic's limit becomes a (small) dead letter that says so: never dropped,
        never sent to poison the producer."""
        if topic == self.config.dead_letter_topic:
            # Dead letters are bounded (messages.dead_letter_message); this one still is not: stop rather
            # than loop. Its message stays uncommitted and is redelivered after the limit is raised.
            self._fail(KafkaProblem(f"a dead letter does not fit topic {topic!r}: {exc}; raise its max.message.bytes",
                                    kind="refused"), "dead_letter_too_large")
            return
        log.error("a result is over the result topic's size limit; dead-lettering it",
                  extra={"event": "result_too_large", "bytes": exc.size, "limit": exc.limit, **job.source})
        dead = messages.dead_letter_message(
            request_id=key, error_type=ErrorType.RESULT_TOO_LARGE, src=job.source,
            error_message=f"{exc}. The image was scored; raise the topic's limit and send the request again",
            input_info=msg.get("input"))
        self.metrics.errors.labels(ErrorType.RESULT_TOO_LARGE).inc()
        self._produce_one(job, self.config.dead_letter_topic, dead["request_id"], dead)

    def _message_done(self, job: Job) -> None:
        if not self.tracker.finished(job.tp, job.offset):
            return
        self.metrics.messages.labels(job.outcome).inc()
        if job.timestamp_ms:
            self.metrics.latency.observe(max(0.0, time.time() - job.timestamp_ms / 1000))
        job.decoded = None  # free the pixels now, not when the last reference goes

    # -- request ids -------------------------------------------------------------------------
    def _base_id(self, job: Job, fallback: str) -> str:
        """The request id results of this job derive from (before ``:<frame>``).

        A study or series fans out: each instance gets ``<request id>/<SOP Instance UID>``, or just the
        SOP Instance UID without an explicit id. An instance reference keeps the usual rule.
        """
        explicit = job.request.explicit_id if job.request else None
        ref = job.request.dicomweb if job.request else None
        if job.instance is not None and ref is not None and ref.level != "instance":
            return f"{explicit}/{job.instance.instance}" if explicit else job.instance.instance
        if job.instance is not None:
            return explicit or job.instance.instance
        return explicit or fallback

    # -- retries, flow control, commits --------------------------------------------------------
    def _retry_later(self, delay: float, action: Callable[[], None], stage: str) -> None:
        heapq.heappush(self._retry_heap, (time.monotonic() + delay, next(self._retry_seq), action))

    def _run_due_retries(self) -> None:
        now = time.monotonic()
        while self._retry_heap and self._retry_heap[0][0] <= now:
            _, _, action = heapq.heappop(self._retry_heap)
            action()

    def _flow_control(self) -> None:
        assert self._consumer is not None
        cfg = self.config
        saturated = (self.tracker.in_flight() >= cfg.max_in_flight
                     or self._bytes_in_flight >= cfg.max_in_flight_bytes
                     or len(self._infer_backlog) >= cfg.max_in_flight)
        saturated = saturated or len(self._retrieve_backlog) >= cfg.max_in_flight
        should_pause = (saturated or self._triton_down_since is not None or self._archive_down_since is not None
                        or self._stop.is_set())
        assignment = self._consumer.assignment()
        if should_pause and assignment and not assignment <= self._consumer.paused():
            self._consumer.pause(*assignment)
        elif not should_pause and self._paused:
            self._consumer.resume(*assignment)
        self._paused = should_pause
        self.metrics.paused.set(1 if should_pause else 0)

    def _maybe_commit(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_commit < self.config.commit_interval_s:
            return
        self._last_commit = now
        positions = self.tracker.to_commit()
        if not positions:
            return
        self._commit(positions)

    def _commit(self, positions: dict[Any, int]) -> None:
        assert self._consumer is not None
        try:
            self._consumer.commit({tp: OffsetAndMetadata(pos, "", -1) for tp, pos in positions.items()},
                                  timeout_ms=10_000)
            self.tracker.mark_committed(positions)
        except Exception as exc:  # noqa: BLE001 - a failed commit only means some redelivery later
            log.warning("commit failed; will retry", extra={"event": "commit_failed", "error": type(exc).__name__})

    def _on_revoked(self, revoked: list[TopicPartition]) -> None:
        """Commit what is done, then drop in-flight work of the lost partitions."""
        positions = {tp: pos for tp, pos in self.tracker.to_commit().items() if tp in revoked}
        if positions:
            self._commit(positions)
        for tp in revoked:
            restart = self.tracker.committable(tp)
            if restart is not None:
                self._restart_at[tp] = restart
            self.tracker.forget(tp)
            self._generation[tp] = next(self._gen_counter)
        log.info("partitions revoked", extra={"event": "revoked", "partitions": [tp.partition for tp in revoked]})

    def _on_assigned(self, assigned: list[TopicPartition]) -> None:
        assert self._consumer is not None
        for tp in assigned:
            self._generation[tp] = next(self._gen_counter)
            # kafka-python keeps the fetch position of a partition that is revoked and assigned back
            # to the same member. Work past the done prefix was dropped on revocation, so rewind to
            # it, or those messages would never be processed.
            restart = self._restart_at.pop(tp, None)
            if restart is not None:
                self._consumer.seek(tp, restart)
        self._restart_at.clear()
        self._watchdog.joined()
        self._paused = True  # kafka-python also keeps the paused flag: let flow control resume explicitly
        log.info("partitions assigned", extra={"event": "assigned", "partitions": [tp.partition for tp in assigned]})

    # -- fetch watchdog ------------------------------------------------------------------------
    def _watch_fetching(self) -> None:
        """Every few seconds: is a backlog waiting that Kafka does not deliver? (see consumer/watchdog.py)"""
        wd = self._watchdog
        now = time.monotonic()
        if not wd.enabled or now < self._next_watch:
            return
        self._next_watch = now + max(1.0, min(10.0, wd.stall_after_s / 4))
        assert self._consumer is not None
        assignment = list(self._consumer.assignment())
        fetchable = bool(assignment) and not self._paused
        delivered, self._delivered = self._delivered, set()
        silent = wd.silent(assignment, delivered) if fetchable else []
        backlog = self._fetch_backlog(silent) if silent else ({} if fetchable else None)
        verdict = wd.observe(now, fetchable=fetchable, delivered=delivered, backlog=backlog)
        stalled = sorted(tp.partition for tp in wd.stalled())  # type: ignore[attr-defined]
        log.debug("fetch watchdog: fetchable=%s delivered=%d silent=%d backlog=%s -> %s", fetchable, len(delivered),
                  len(silent), None if backlog is None else sum(backlog.values()), verdict.value,
                  extra={"event": "watchdog", "stalled_partitions": stalled})
        if verdict is Verdict.NUDGE:
            self.metrics.fetch_stalls.labels("rejoin").inc()
            log.error("Kafka delivers nothing from partitions with records waiting; rejoining the group",
                      extra={"event": "fetch_stalled", "partitions": stalled,
                             "backlog": sum((backlog or {}).values())})
            self._rejoin(assignment)
        elif verdict is Verdict.EXIT:
            self.metrics.fetch_stalls.labels("exit").inc()
            log.critical("Kafka still delivers nothing after rejoining the group (or the rejoin never finished); "
                         "exiting so that a new process takes over",
                         extra={"event": "fetch_stalled_exit", "partitions": stalled,
                                "rejoin_pending": wd.rejoin_started is not None,
                                "exit_code": int(ExitCode.FETCH_STALLED)})
            self._exit_code = int(ExitCode.FETCH_STALLED)
            self._stop.set()

    def _fetch_backlog(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int] | None:
        """Records between each partition's fetch position and its end; None if the broker did not say in time."""
        assert self._consumer is not None
        deadline = time.monotonic() + 8.0  # one budget for the whole look: the loop thread waits meanwhile

        def left_ms() -> int:
            return max(100, int((deadline - time.monotonic()) * 1000))

        try:
            ends = self._consumer.end_offsets(partitions, timeout_ms=left_ms())
            starts: dict[TopicPartition, int] | None = None
            backlog = {}
            for tp in partitions:
                # position() also completes a pending offset reset or validation (upstream issue #3106).
                pos = self._consumer.position(tp, timeout_ms=left_ms())
                if pos is None:
                    starts = starts or self._consumer.beginning_offsets(partitions, timeout_ms=left_ms())
                    pos = starts[tp]
                backlog[tp] = max(0, ends[tp] - pos)
            return backlog
        except Exception as exc:  # noqa: BLE001 - unknown is not a stall; the next look tries again
            log.warning("cannot measure the backlog", extra={"event": "backlog_unknown", "error": type(exc).__name__})
            return None

    def _rejoin(self, assignment: list[TopicPartition]) -> None:
        """Leave the group and join again: a fresh assignment, fresh positions, fresh fetches."""
        assert self._consumer is not None
        self._on_revoked(assignment)  # kafka-python's unsubscribe() does not call the listener
        self._consumer.unsubscribe()
        self._consumer.subscribe([self.config.request_topic], listener=_Rebalance(self))

    def _update_gauges(self) -> None:
        self.metrics.in_flight.set(self.tracker.in_flight())
        self.metrics.infer_in_flight.set(self._infer_in_flight)
        assert self._consumer is not None
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            pos = self.tracker.committable(tp)
            if high is not None and pos is not None:
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, high - pos))

    def _sample_triton_statistics(self) -> None:
        """Average batch size Triton formed for the Inception model, from its statistics, every 5 s."""
        assert self._scorer is not None
        target = self.config.triton_target()
        scorer = TritonScorer(target.endpoint, model=self.config.model, timeout_s=5, tls=target.tls)
        last: tuple[int, int] | None = None
        ticks = 0
        while not self._stop.wait(5.0):
            ticks += 1
            if ticks % CARD_CHECK_TICKS == 0:
                self._check_card(scorer)
            try:
                stats = scorer.statistics()
            except Exception:  # noqa: BLE001 - statistics are best effort
                continue
            for model in stats.get("model_stats", []):
                if model.get("name") != "inception_v3":
                    continue
                count = int(model.get("inference_count", 0))
                execs = int(model.get("execution_count", 0))
                if last is not None and execs > last[1]:
                    self.metrics.batch_size.set((count - last[0]) / (execs - last[1]))
                last = (count, execs)
        scorer.close()

    def _check_card(self, scorer: TritonScorer) -> None:
        """Runs on the statistics thread: has the served model been replaced under the same version?

        Answers carry the ensemble's version, which catches a normal rollout at once; a model rebuilt
        under the same version number (new weights or taxonomy) shows only in its card.
        """
        current = self.card
        try:
            served = scorer.load_card()
        except Exception:  # noqa: BLE001 - Triton down or reloading: the loop's own checks handle that
            return
        if current is not None and served.model_summary() != current.model_summary():
            self._post(self._served_model_changed,
                       ServedModelChanged(self.config.model, served.version, current.version,
                                          detail="its model card (weights or taxonomy) changed"))

    # -- shutdown ----------------------------------------------------------------------------
    def _drain(self) -> None:
        """After SIGTERM: take nothing new, finish what is in flight, commit.

        Abandoned work (the served model changed, before or during the drain) is not finished: only
        the done prefix is committed, and the rest is redelivered.
        """
        deadline = time.monotonic() + self.config.drain_timeout_s
        if not self._abandoned:
            log.info("draining", extra={"event": "drain", "in_flight": self.tracker.in_flight()})
        assert self._consumer is not None
        while self.tracker.in_flight() > 0 and time.monotonic() < deadline and not self._abandoned:
            self._run_due_retries()
            self._probe_triton()
            self._pump_retrievals()
            self._pump_inference()
            self._flow_control()
            self._consumer.poll(timeout_ms=0)
            self._handle_events(timeout=0.05)
        if self.tracker.in_flight() and not self._abandoned:
            log.warning("drain timed out; unfinished messages will be redelivered",
                        extra={"event": "drain_timeout", "in_flight": self.tracker.in_flight()})
        self._maybe_commit(force=True)

    def _restart_pool(self) -> None:
        self._shutdown_pool()
        self._pool = self._new_pool()

    def _shutdown_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _close(self) -> None:
        self._stop.set()
        if self._producer is not None:
            self._producer.flush(timeout=10)
            self._producer.close(timeout=10)
        if self._consumer is not None:
            self._consumer.close(autocommit=False)
        self._shutdown_pool()
        self._close_archive()
        if self._scorer is not None:
            self._scorer.close()
        log.info("stopped", extra={"event": "stop"})


def preflight(config: ConsumerConfig) -> None:
    """Before any work: every codec decodes, and Kafka accepts these settings (within 30 s).

    Raises :class:`skinbatch.contract.KafkaProblem`: a missing codec package, a refused connection, an
    untrusted certificate or refused credentials, each with its own exit code and what to do next.
    """
    check_codecs()
    probe_kafka(config.kafka_connection())


def _fallback_id(record: Any) -> str:
    from .requests import explicit_request_id

    rid = explicit_request_id(list(record.headers or []), record.key)
    if rid:
        return rid
    import hashlib

    return hashlib.sha256(record.value or b"").hexdigest()


def _offset_id(job: Job) -> str:
    return f"{job.tp.topic}/{job.tp.partition}/{job.offset}"


def _input_info(d: ModelInput) -> dict[str, Any]:
    info: dict[str, Any] = {"sha256": d.sha256, "bytes": d.nbytes}
    if d.format:
        info["format"] = d.format
        info["monochrome"] = d.monochrome
    return info


__all__ = ["ScoringConsumer", "preflight"]
