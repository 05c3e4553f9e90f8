"""One scoring pipeline for the consumer and triage: inputs in, scored frames out.

::

    submit(ticket, bytes | path) ──▶ decode pool ──▶ ready frames ──▶ batches ──▶ Triton ──▶ listener.scored
                                     (workers write      (shared-memory   (one request per batch,
                                      the first frame     slots, or        bounded requests in flight;
                                      into a shared-      in-band)         backoff while Triton is out)
                                      memory slot)

* **Decode pool**: worker processes (spawned, so no gRPC channel is ever forked) read, hash, decode and
  preprocess. With shared memory they write the model input straight into a slot of one segment that
  Triton has registered, so no pixels are pickled back and no tensor is copied into a request.
* **Batches**: frames that are ready together go to Triton in one request, up to the model's maximum
  batch size. Nagle's rule: with nothing at Triton, whatever is ready goes at once; with a request
  out, the next goes when a full batch is ready (up to ``max_requests`` outstanding) or, otherwise,
  when an answer comes back, with all that became ready meanwhile. Frames wait at most one request's
  time, and decoding goes on while they wait. Triton charges a fixed price for each execution (on the
  CPU, 2 ms of its python steps), so on a slow server the batches grow until they pay for it, and on
  a fast one they go as soon as they are ready. Triton's dynamic batcher still merges requests. With
  shared memory a batch is a run of consecutive slots (allocated in ring order, so frames decoded in
  order lie side by side), or is copied into a staging block; without it the frames are stacked into
  the request.
* **Faults**: Triton failing puts the batch back and pauses sending, probing with backoff; a worker
  that dies restarts the pool and the item is decoded again; a file that cannot be read now is handed
  to the listener to retry. Bad input is the listener's to report. Nothing is ever dropped silently.

Everything here runs on the caller's loop thread: the pool's and the client's threads only post into
the :class:`Mailbox`, which the loop drains. The caller's :class:`PipelineListener` decides what an
outcome means (a Kafka result, a row in triage's store) and whether a ticket still counts.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import logging
import queue
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from skinbatch.backoff import Backoff
from skinbatch.contract import (
    ArchiveUnavailable,
    ConfigurationError,
    ServedModelChanged,
    TritonUnavailable,
)
from skinbatch.imaging import DecodeLimits
from skinbatch.imaging.model_input import ModelInput
from skinbatch.settings import SHARED_MEMORY_MODES
from skinbatch.timers import Timers

from .decoding import decode_task, decode_worker_init, limits_dict
from .scores import Scores
from .servers import AnyScorer
from .slots import SharedSlots, remove_stale_segments
from .transport import ShmInput, TritonTLSError
from .workers import DecodePool, TaskOutOfMemory, TaskTimedOut

log = logging.getLogger("skinbatch.scoring")

MAX_CRASHES = 2
"""An input that was in the pool when a worker died this often is given up as a decoder fault."""


class Mailbox:
    """Work handed to the loop thread from other threads, run in order by :meth:`run`."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...]]] = queue.SimpleQueue()

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        self._queue.put((fn, args))

    def run(self, timeout: float = 0.0) -> int:
        """Run what is waiting, waiting up to ``timeout`` seconds for the first; returns how many ran."""
        try:
            fn, args = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return 0
        fn(*args)
        done = 1
        while True:
            try:
                fn, args = self._queue.get_nowait()
            except queue.Empty:
                return done
            fn(*args)
            done += 1


@dataclass(frozen=True)
class ScoredFrame:
    number: int
    """From 1, as in the source image."""
    scores: Scores
    infer_ms: float


@dataclass(frozen=True)
class ScoredInput:
    """One submitted input, all its selected frames scored. ``decoded`` holds no pixels any more."""

    decoded: ModelInput
    frames: list[ScoredFrame]


class PipelineListener(Protocol):
    """What the pipeline's owner does with outcomes. Every method runs on the loop thread."""

    def current(self, ticket: Any) -> bool:
        """False once the ticket's work no longer counts (its Kafka partition was revoked)."""

    def frames(self, ticket: Any, decoded: ModelInput) -> Sequence[int]:
        """Indices of the decoded frames to score (all of them, usually). Empty: the listener has
        reported the input itself (say, a frame the request named does not exist)."""

    def scored(self, ticket: Any, result: ScoredInput) -> None: ...

    def rejected(self, ticket: Any, decoded: ModelInput) -> None:
        """Bad input: ``decoded.error_type`` says what (skinbatch.contract.ErrorType)."""

    def unreadable(self, ticket: Any, error: ArchiveUnavailable) -> None:
        """The file could not be read now; submit it again later (or record it for the next run)."""

    def decode_bug(self, ticket: Any, error: BaseException) -> None:
        """A decoder raised something unexpected: a bug, not the input's fault."""

    def triton_down(self, error: BaseException) -> None: ...

    def triton_up(self, down_s: float) -> None: ...

    def model_changed(self, error: ServedModelChanged) -> None: ...


@dataclass
class PipelineOptions:
    workers: int = 1
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    max_frames: int = 256
    """Decoded frames held (waiting for Triton or at Triton): the shared-memory slots, and the bound
    on decoded pixels in memory. 256 frames of 299×299×3 are 69 MB."""
    max_requests: int = 4
    """Requests outstanding at Triton. Beyond the first, only full batches go (Nagle's rule, above)."""
    max_batch: int | None = None
    """Frames per request; the model's ``max_batch_size`` (from its card) when None."""
    shared_memory: str = "auto"
    """``auto``: shared memory when Triton can map this host's (same host, or a pod sharing /dev/shm),
    otherwise tensors in the request; ``on``: shared memory or stop; ``off``: never."""
    timeout_s: float = 60.0
    retry_initial_s: float = 0.5
    retry_max_s: float = 10.0
    decode_timeout_s: float | None = None
    """Wall-clock limit of one decode; past it the input is rejected ``decode_timeout`` and its worker
    replaced (None: no limit)."""
    decode_memory_bytes: int | None = None
    """Address-space limit of each decode worker; an input that needs more is rejected ``decode_memory``
    and its worker replaced (None: no limit)."""


@dataclass(eq=False)
class _Item:
    ticket: Any
    payload: bytes | None
    path: str | None
    want_map: bool
    seq: int
    slot: int | None = None
    sent: bool = False
    """A frame of it has gone to Triton: :meth:`ScoringPipeline.finish_started` still finishes it."""
    crashes: int = 0
    """Decode workers that died while this input was in the pool."""
    frames: list[_Frame] = field(default_factory=list)
    decoded: ModelInput | None = None
    remaining: int = 0


@dataclass(eq=False)
class _Batch:
    """Frames sent together. Formed once; after a Triton fault the same batch is sent again."""

    frames: list[_Frame]
    images: np.ndarray | ShmInput
    staging: int | None = None
    """The staging block of the segment its frames were copied into, freed when it is answered."""


@dataclass(eq=False)
class _Frame:
    item: _Item
    number: int
    slot: int | None
    pixels: np.ndarray | None
    seq: int
    scores: Scores | None = None
    infer_ms: float = 0.0


class ScoringPipeline:
    """Decode pool → batched inference on Triton → outcomes to the listener. Not thread-safe: one loop."""

    def __init__(self, scorer: AnyScorer, mailbox: Mailbox, listener: PipelineListener,
                 options: PipelineOptions | None = None, clock: Callable[[], float] = time.monotonic,
                 pool_factory: Callable[[int, tuple[Any, ...]], Executor] | None = None) -> None:
        """``pool_factory(workers, initargs)``: the decode pool; spawned processes running
        :func:`~skinbatch.scoring.decoding.decode_worker_init` (``initargs``) when None."""
        self.scorer = scorer
        self.mailbox = mailbox
        self.listener = listener
        self.options = options or PipelineOptions()
        if self.options.shared_memory not in SHARED_MEMORY_MODES:
            raise ConfigurationError(f"--shared-memory {self.options.shared_memory!r}: use one of "
                                     f"{', '.join(SHARED_MEMORY_MODES)}")
        self._clock = clock
        self._pool_factory = pool_factory or self._process_pool
        self._seq = itertools.count()
        self._pool: Executor | None = None
        self._slots: SharedSlots | None = None
        self._region = ""
        self._shape: tuple[int, ...] = ()
        self._preprocessing: dict[str, Any] = {}
        self._limits = limits_dict(self.options.limits)
        self._waiting: deque[_Item] = deque()
        self._suspects: deque[_Item] = deque()
        """Inputs that were in the pool when a worker died: decoded one at a time, to find the culprit."""
        self._pool_generation = 0
        self._ready_slots: dict[int, _Frame] = {}
        self._ready_inband: deque[_Frame] = deque()
        self._retry: deque[_Batch] = deque()
        self._free_blocks: list[int] = []
        self._timers = Timers(clock)
        self.decoding = 0
        self.payload_bytes = 0
        """Inline bytes handed in and not yet decoded (or dropped): part of the owner's memory budget."""
        self.requests = 0
        self.frames_at_triton = 0
        self.frames_held = 0
        self.down_since: float | None = None
        self._backoff = Backoff(self.options.retry_initial_s, self.options.retry_max_s)
        self._next_probe = 0.0
        self.abandoned = False
        self.finishing = False
        self.batches_sent = 0
        self.frames_sent = 0

    # -- life cycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Read the card's preprocessing, set up shared memory (or not) and start the pool."""
        card = self.scorer.card
        self._preprocessing = card.preprocessing_spec().to_dict()
        size = int(self._preprocessing.get("size", card.input_size))
        self._shape = (size, size, 3)
        self._max_batch = max(1, self.options.max_batch or card.max_batch_size or 1)
        if self.options.shared_memory != "off":
            self._open_shared_memory()
        self._pool = self._new_pool()

    @property
    def shared_memory(self) -> bool:
        return self._slots is not None

    def _open_shared_memory(self) -> None:
        removed = remove_stale_segments()
        if removed:
            log.info("removed shared-memory segments of processes killed earlier", extra={"event": "shm_stale",
                                                                                          "count": len(removed)})
        # Decode slots, then one staging block per request: frames that are ready together but do not lie
        # side by side are copied into a block (a memcpy; far cheaper than Triton's cost of a small batch).
        staging = self.options.max_requests * self._max_batch
        try:
            slots = SharedSlots(self.options.max_frames + staging, self._shape, ring=self.options.max_frames)
        except OSError as exc:
            self._no_shared_memory(f"cannot create a segment under /dev/shm ({exc.strerror or exc})")
            return
        try:
            self.scorer.transport.register_shm(slots.name, slots.key, slots.byte_size, 10.0)
        except TritonUnavailable as exc:
            slots.close()
            self._no_shared_memory(f"Triton at {self.scorer.url} cannot map it ({str(exc)[:200]}): it runs on "
                                   "another host, or without this host's /dev/shm")
            return
        self._slots, self._region = slots, slots.name
        self._free_blocks = list(range(self.options.max_requests))
        log.info("sending images through shared memory", extra={"event": "shm", "slots": slots.count,
                                                                 "megabytes": round(slots.byte_size / 2**20)})

    def _no_shared_memory(self, why: str) -> None:
        if self.options.shared_memory == "on":
            raise ConfigurationError(f"--shared-memory on, but {why}. Share /dev/shm with Triton (docs/deploy.md) "
                                     "or use --shared-memory auto")
        log.info("sending images inside the requests: %s", why, extra={"event": "shm_off"})

    def _new_pool(self) -> Executor:
        args = (self._slots.name, self._shape) if self._slots is not None else ()
        return self._pool_factory(self.options.workers, args)

    def _process_pool(self, workers: int, initargs: tuple[Any, ...]) -> Executor:
        return DecodePool(workers, decode_worker_init, initargs, task_timeout_s=self.options.decode_timeout_s,
                          memory_bytes=self.options.decode_memory_bytes)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._slots is not None:
            unregister(self.scorer.transport, self._region)
            self._slots.close()
            self._slots = None

    # -- state the owner reads -------------------------------------------------------------------------
    @property
    def saturated(self) -> bool:
        """More input would only wait: every slot (or the frame budget) is taken, or Triton is out."""
        return (bool(self._waiting) or bool(self._suspects) or self.frames_held >= self.options.max_frames
                or self.down_since is not None)

    @property
    def busy(self) -> bool:
        return bool(self.decoding or self.frames_held or self._waiting or self._suspects or len(self._timers)
                    or self.requests or self._retry)

    def abandon(self) -> None:
        """Send nothing more (the served model changed): answers still out are ignored."""
        self.abandoned = True

    def finish_started(self) -> None:
        """Finish only inputs that have a frame at Triton; drop the rest (decoding, waiting, not sent).

        Triage's Ctrl-C: what is dropped was never recorded and is done again on the next run.
        """
        self.finishing = True
        while self._waiting or self._suspects:
            item = self._waiting.popleft() if self._waiting else self._suspects.popleft()
            self._release_slot(item.slot)
            self._drop_payload(item)
        self._timers.clear()

    @property
    def finished(self) -> bool:
        """After :meth:`finish_started`: nothing left at Triton, or waiting to go there."""
        return self.requests == 0 and not self._retry and not any(f.item.sent for f in self._ready())

    def _ready(self) -> list[_Frame]:
        return [*self._ready_slots.values(), *self._ready_inband]

    # -- input -------------------------------------------------------------------------------------------
    def submit(self, ticket: Any, payload: bytes | None = None, path: str | None = None, *,
               want_map: bool = False) -> None:
        """Decode and score ``payload`` (or the file at ``path``); the outcome goes to the listener."""
        self.payload_bytes += len(payload or b"")
        self._decode(_Item(ticket, payload, path, want_map, next(self._seq)))

    def _decode(self, item: _Item) -> None:
        if self._suspects and item.crashes == 0:
            self._waiting.append(item)  # while a culprit is sought, only the suspects go to the pool
            return
        if self._slots is not None and item.slot is None:
            item.slot = self._slots.ring.allocate()
            if item.slot is None:
                self._waiting.append(item)
                return
            self.frames_held += 1
        assert self._pool is not None, "start() the pipeline first"
        try:
            future = self._pool.submit(decode_task, item.payload, item.path, self._preprocessing, self._limits,
                                       item.slot)
        except BrokenProcessPool:
            self._restart_pool()
            self._timers.later(self.options.retry_initial_s, lambda: self._decode(item))
            return
        self.decoding += 1
        generation = self._pool_generation
        future.add_done_callback(lambda f: self.mailbox.post(self._on_decoded, item, f, generation))

    def _release_slot(self, slot: int | None) -> None:
        if slot is not None and self._slots is not None:
            self._slots.ring.release(slot)
            self.frames_held -= 1

    def _drop_payload(self, item: _Item) -> None:
        self.payload_bytes -= len(item.payload or b"")
        item.payload = None

    def _on_decoded(self, item: _Item, future: Future[ModelInput], generation: int = 0) -> None:
        self.decoding -= 1
        if self.finishing or not self.listener.current(item.ticket):
            self._release_slot(item.slot)
            self._drop_payload(item)
            return
        try:
            decoded = future.result()
        except BrokenProcessPool as exc:
            if generation == self._pool_generation:  # the first of its futures to report it
                log.error("a decode worker died; restarting the pool", extra={"event": "pool_restart"})
                self._restart_pool()
            item.crashes += 1
            if item.crashes >= MAX_CRASHES:
                # It was alone in the pool when a worker died again: the input itself (it exhausts a
                # worker's memory, say). Stop retrying it; the others go on.
                self._release_slot(item.slot)
                self._drop_payload(item)
                self.listener.decode_bug(item.ticket, exc)
                return
            self._suspects.append(item)  # keeps its slot
            return
        except (TaskTimedOut, TaskOutOfMemory) as exc:
            self._over_limit(item, exc)
            return
        except ArchiveUnavailable as exc:
            self._release_slot(item.slot)
            self._drop_payload(item)
            self.listener.unreadable(item.ticket, exc)
            return
        except Exception as exc:  # noqa: BLE001 - one decoder bug is the listener's to count, never lost
            self._release_slot(item.slot)
            self._drop_payload(item)
            self.listener.decode_bug(item.ticket, exc)
            return
        self._drop_payload(item)  # the bytes are no longer needed
        if decoded.slot is None:
            self._release_slot(item.slot)  # bad input, or nothing written there
        if not decoded.ok:
            self.listener.rejected(item.ticket, decoded)
            return
        self._accept_frames(item, decoded)

    def _over_limit(self, item: _Item, exc: TaskTimedOut | TaskOutOfMemory) -> None:
        """A decode over its time or memory limit: the pool replaced the worker; the input is rejected."""
        error_type = exc.type
        log.error("a decode went over its limit; its worker was replaced", extra={"event": str(error_type)})
        payload = item.payload
        decoded = ModelInput(sha256=hashlib.sha256(payload).hexdigest() if payload is not None else "",
                             nbytes=len(payload) if payload is not None else 0, error_type=error_type,
                             error_message=str(exc))
        self._release_slot(item.slot)
        self._drop_payload(item)
        self.listener.rejected(item.ticket, decoded)

    def _accept_frames(self, item: _Item, decoded: ModelInput) -> None:
        wanted = set(self.listener.frames(item.ticket, decoded))
        inband = decoded.images if decoded.images is not None else np.empty((0, *self._shape), np.uint8)
        offset = 1 if decoded.slot is not None else 0
        for index, number in enumerate(decoded.frame_numbers):
            if index not in wanted:
                continue
            in_slot = offset and index == 0
            frame = _Frame(item, number, decoded.slot if in_slot else None,
                           None if in_slot else inband[index - offset], next(self._seq))
            item.frames.append(frame)
        if decoded.slot is not None and 0 not in wanted:
            self._release_slot(decoded.slot)
        decoded.images = None
        item.decoded = decoded
        item.remaining = len(item.frames)
        for frame in item.frames:
            if frame.slot is not None:
                self._ready_slots[frame.slot] = frame
            else:
                self.frames_held += 1
                self._ready_inband.append(frame)

    def _restart_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._new_pool()
        self._pool_generation += 1

    # -- the loop's turn ---------------------------------------------------------------------------------
    def pump(self) -> None:
        """Run due retries, probe a failed Triton, start decodes that waited for a slot, send batches."""
        self._timers.run_due()
        self._probe()
        if self._suspects and self.decoding == 0:
            self._decode(self._suspects.popleft())  # one at a time: a second death names the culprit
        while self._waiting and not self._suspects and (self._slots is None or self._slots.ring.free):
            self._decode(self._waiting.popleft())
        while self.down_since is None and not self.abandoned and self.requests < self.options.max_requests:
            if self._retry:
                self._send(self._retry.popleft())
                continue
            if self.requests and len(self._ready_slots) + len(self._ready_inband) < self._max_batch:
                return  # a request is out: let its answer's wait fill the next batch (see the module's notes)
            batch = self._next_batch()
            if batch is None:
                return
            self._send(batch)

    def _next_batch(self) -> _Batch | None:
        """The oldest ready frames, up to the maximum batch, as one batch (None when nothing is ready)."""
        while self._ready_slots or self._ready_inband:
            frames = heapq.nsmallest(self._max_batch, [*self._ready_slots.values(), *self._ready_inband],
                                     key=lambda f: f.seq)
            live = []
            for frame in frames:
                if frame.slot is not None:
                    del self._ready_slots[frame.slot]
                else:
                    self._ready_inband.remove(frame)
                if self.listener.current(frame.item.ticket) and (frame.item.sent or not self.finishing):
                    live.append(frame)
                else:
                    self._done_with(frame)
            if live:
                return self._batch(live)
        return None

    def _batch(self, frames: list[_Frame]) -> _Batch:
        """In place when the frames' slots lie side by side; else copied into a staging block (shared
        memory), or stacked into the request (no shared memory)."""
        slots = [f.slot for f in frames]
        if self._slots is not None and slots[0] is not None and slots == list(range(slots[0], slots[0] + len(slots))):
            return _Batch(frames, ShmInput(self._region, self._slots.offset(slots[0]), (len(frames), *self._shape)))
        if self._slots is None:
            images = np.stack([f.pixels for f in frames])  # type: ignore[misc]
            for frame in frames:
                self._done_with(frame)
            return _Batch(frames, images)
        block = self._free_blocks.pop()
        first = self.options.max_frames + block * self._max_batch
        for i, frame in enumerate(frames):
            self._slots.array[first + i] = self._slots.array[frame.slot] if frame.slot is not None else frame.pixels
            self._done_with(frame)
        return _Batch(frames, ShmInput(self._region, self._slots.offset(first), (len(frames), *self._shape)), block)

    def _send(self, batch: _Batch) -> None:
        with_map = any(f.item.want_map for f in batch.frames)
        for frame in batch.frames:
            frame.item.sent = True
        self.requests += 1
        self.frames_at_triton += len(batch.frames)
        self.batches_sent += 1
        self.frames_sent += len(batch.frames)
        started = self._clock()
        try:
            self.scorer.infer_async(batch.images, lambda scores, error: self.mailbox.post(
                self._on_answer, batch, started, scores, error), with_map=with_map)
        except Exception as exc:  # noqa: BLE001 - a client that cannot even send is a Triton fault like any other
            self._on_answer(batch, started, None, exc)

    def _on_answer(self, batch: _Batch, started: float, scores: list[Scores] | None,
                   error: BaseException | None) -> None:
        self.requests -= 1
        self.frames_at_triton -= len(batch.frames)
        if self.abandoned or isinstance(error, ServedModelChanged):
            self._release(batch)
            if isinstance(error, ServedModelChanged) and not self.abandoned:
                self.abandon()
                self.listener.model_changed(error)
            return
        if error is not None or scores is None or len(scores) != len(batch.frames):
            self._failed(batch, error or TritonUnavailable("Triton answered without scores"))
            return
        self._recovered()
        elapsed_ms = (self._clock() - started) * 1000
        self._release(batch)
        for frame, frame_scores in zip(batch.frames, scores):
            frame.scores, frame.infer_ms = frame_scores, elapsed_ms
            self._finish(frame)

    def _release(self, batch: _Batch) -> None:
        for frame in batch.frames:
            self._done_with(frame)
        if batch.staging is not None:
            self._free_blocks.append(batch.staging)
            batch.staging = None

    def _finish(self, frame: _Frame) -> None:
        item = frame.item
        item.remaining -= 1
        if item.remaining == 0 and self.listener.current(item.ticket):
            assert item.decoded is not None
            scored = [ScoredFrame(f.number, f.scores, f.infer_ms) for f in item.frames if f.scores is not None]
            item.frames = []
            self.listener.scored(item.ticket, ScoredInput(item.decoded, scored))

    def _done_with(self, frame: _Frame) -> None:
        """The frame's pixels are no longer needed: free its slot (or its in-band copy)."""
        if frame.slot is not None:
            self._release_slot(frame.slot)
            frame.slot = None
        elif frame.pixels is not None:
            frame.pixels = None
            self.frames_held -= 1

    # -- Triton faults -----------------------------------------------------------------------------------
    def _failed(self, batch: _Batch, error: BaseException) -> None:
        """Keep the batch to send again, pause sending, probe with backoff. Never an outcome for the input."""
        self._retry.appendleft(batch)
        if self.down_since is None:
            self.down_since = self._clock()
            self._backoff.reset()
            self._next_probe = self.down_since + self._backoff.next()
            self.listener.triton_down(error)

    def _probe(self) -> None:
        if self.down_since is None or self._clock() < self._next_probe:
            return
        try:
            ready = self.scorer.is_ready()
        except TritonTLSError as exc:  # certificates changed under us: the owner decides (it was told)
            log.error("Triton's TLS handshake fails: %s", exc, extra={"event": "triton_tls"})
            ready = False
        if ready and self._register_again():
            self._recovered()
            return
        self._next_probe = self._clock() + self._backoff.next()

    def _register_again(self) -> bool:
        """After an outage Triton may be a new process without our region: register it again."""
        if self._slots is None:
            return True
        transport = self.scorer.transport
        try:
            unregister(transport, self._region, patience_s=0.5)
            transport.register_shm(self._region, self._slots.key, self._slots.byte_size, 5.0)
        except TritonUnavailable as exc:
            log.warning("registering shared memory again failed", extra={"event": "shm_register",
                                                                         "error": str(exc)[:200]})
            return False
        return True

    def _recovered(self) -> None:
        if self.down_since is None:
            return
        down_s = self._clock() - self.down_since
        self.down_since = None
        self.listener.triton_up(down_s)


def unregister(transport: Any, region: str, patience_s: float = 3.0) -> bool:
    """Unregister a shared-memory region; Triton refuses while it still holds a request's reference to
    it (for a moment after the last answer), so ask again for ``patience_s``. False if it never agreed."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            transport.unregister_shm(region, 2.0)
            return True
        except TritonUnavailable as exc:
            if "in use" not in str(exc) or time.monotonic() > deadline:
                return False  # Triton gone (nothing of ours is mapped there any more), or still busy
            time.sleep(0.05)




__all__ = ["SHARED_MEMORY_MODES", "Mailbox", "PipelineListener", "PipelineOptions", "ScoredFrame", "ScoredInput",
           "ScoringPipeline"]
