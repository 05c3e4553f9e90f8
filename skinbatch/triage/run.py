"""Scoring a list of files through the same imaging and Triton path as the consumer, without Kafka.

One thread runs the loop. Files are read, hashed and decoded in a process pool; each frame then goes to
Triton as its own request through ``TritonScorer.infer_async``, with up to ``max_in_flight`` requests
outstanding, so Triton's dynamic batcher forms the batches. Completions from both come back through one
queue, and only this thread writes to the :class:`~skinbatch.triage.state.TriageStore`.

Never twice: a content already in the store is skipped (an unchanged path without even being read);
identical content found under two paths in one run is decoded at most twice and scored once. On
Ctrl-C/SIGTERM the loop takes nothing new, finishes every image that has a frame at Triton, saves and
returns; a second Ctrl-C aborts at once (the uncommitted tail is then scored again on the next run).

If Triton fails, the loop pauses and probes it with backoff for ``triton_retry_s`` seconds, then gives
up, saving what was finished, so that the next run resumes from there.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from types import FrameType
from typing import Any

from skinbatch.imaging import DecodeLimits
from skinbatch.imaging.model_input import decode_worker_init
from skinbatch.connect.options import TritonTarget
from skinbatch.contract import ENSEMBLE
from skinbatch.modelcard import ModelCard
from skinbatch.scoring import Scores, ServedModelChanged, TritonScorer

from .decode import Loaded, limits_dict, load_and_decode
from .progress import Progress
from .state import TriageStore


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2) - 1))


@dataclass
class RunOptions:
    triton: TritonTarget
    model: str = ENSEMBLE
    workers: int = field(default_factory=default_workers)
    """Decoding processes."""
    max_in_flight: int = 32
    """Frames outstanding at Triton; more than the model's max batch size keeps its batcher fed."""
    max_buffered_frames: int = 256
    """Decoded frames waiting for Triton (each 299×299×3 bytes) before decoding pauses."""
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    timeout_s: float = 60.0
    triton_retry_s: float = 30.0
    keep_training: bool = False
    """Store the training-class probabilities of every frame (evaluate needs them; triage does not)."""
    commit_every_s: float = 1.0


@dataclass
class RunSummary:
    files: int = 0
    scored: int = 0
    """Distinct contents scored in this run."""
    frames_scored: int = 0
    resumed: int = 0
    """Files whose content was already in the state (from an earlier run, or earlier in this one)."""
    duplicates: int = 0
    """Files whose content was also found under another path in this run (scored once)."""
    rejected: int = 0
    """Files that are not decodable images (bad input: recorded, not retried)."""
    path_errors: int = 0
    """Files that could not be read (retried on the next run)."""
    interrupted: bool = False
    triton_error: str | None = None
    model_changed: bool = False
    """Triton began serving another model version during the run (``triton_error`` says which)."""
    elapsed_s: float = 0.0

    @property
    def complete(self) -> bool:
        return not self.interrupted and self.triton_error is None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "complete": self.complete}


@dataclass
class _Job:
    """One distinct content on its way through Triton."""

    loaded: Loaded
    paths: list[Loaded]
    scores: list[Scores | None]
    infer_ms: list[float]
    sent: int = 0
    remaining: int = 0


class _Stop:
    """SIGINT/SIGTERM: the first asks the loop to finish and save; the second aborts."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested.is_set():
            raise KeyboardInterrupt
        self.requested.set()

    def __enter__(self) -> _Stop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Runner:
    """Scores files into a store. Create the runner (and its pool) before anything opens gRPC channels."""

    def __init__(self, options: RunOptions, card: ModelCard | None = None) -> None:
        self.options = options
        self._pool = self._new_pool()
        self.scorer = TritonScorer(options.triton.endpoint, model=options.model, timeout_s=options.timeout_s,
                                   tls=options.triton.tls)
        self.card = card or self.scorer.load_card()

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: the parent may hold gRPC channels, which do not survive a fork.
        return ProcessPoolExecutor(max_workers=self.options.workers, mp_context=get_context("spawn"),
                                   initializer=decode_worker_init)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.scorer.close()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the loop ------------------------------------------------------------------------------
    def run(self, paths: Sequence[Path | str], store: TriageStore, progress: Progress | None = None,
            on_event: Callable[[str], None] | None = None) -> RunSummary:
        opts = self.options
        progress = progress or Progress(len(paths), enabled=False)
        summary = RunSummary(files=len(paths))
        started = time.monotonic()
        preprocessing = self.card.preprocessing_spec().to_dict()
        limits = limits_dict(opts.limits)
        events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        pending = deque(os.path.abspath(p) for p in paths)
        decoding: dict[Future[Loaded], str] = {}
        jobs: dict[str, _Job] = {}
        backlog: deque[tuple[_Job, int]] = deque()
        in_flight = 0
        buffered = 0
        down_since: float | None = None
        backoff = 1.0
        next_probe = 0.0
        last_commit = time.monotonic()
        say = on_event or (lambda _msg: None)

        def finish_paths(job_or_loaded: list[Loaded], *, resumed: bool = False, failed: bool = False,
                         frames: int = 0) -> None:
            progress.advance(len(job_or_loaded), resumed=resumed, failed=failed, frames=frames)

        def submit(path: str) -> None:
            fut = self._pool.submit(load_and_decode, path, preprocessing, limits)
            decoding[fut] = path
            fut.add_done_callback(lambda f: events.put(("decoded", f)))

        def send(job: _Job, i: int) -> None:
            nonlocal in_flight
            images = job.loaded.images
            assert images is not None
            in_flight += 1
            job.sent = max(job.sent, i + 1)
            t0 = time.monotonic()
            try:
                self.scorer.infer_async(
                    images[i:i + 1],
                    lambda scores, error, job=job, i=i, t0=t0: events.put(("inferred", job, i, t0, scores, error)))
            except Exception as exc:  # noqa: BLE001 - a broken channel is a Triton fault like any other
                events.put(("inferred", job, i, t0, None, exc))

        def on_decoded(fut: Future[Loaded]) -> None:
            nonlocal buffered
            path = decoding.pop(fut)
            if fut.cancelled() or stop.requested.is_set() or summary.triton_error:
                return  # not recorded: done again on the next run
            try:
                loaded = fut.result()
            except BrokenProcessPool:
                store.record_path_error(path, "worker_crashed",
                                        "a decoding process died (out of memory?) while this file was in the pool; "
                                        "retried on the next run")
                summary.path_errors += 1
                finish_paths([Loaded(path=path)], failed=True)
                return
            if loaded.path_error:
                store.record_path_error(path, loaded.error_type or "io_error", loaded.error_message or "")
                summary.path_errors += 1
                finish_paths([loaded], failed=True)
                return
            if not loaded.sha256:  # too large before hashing: a content-independent refusal, by path
                store.record_path_error(path, loaded.error_type or "too_large", loaded.error_message or "")
                summary.rejected += 1
                finish_paths([loaded], failed=True)
                return
            if store.has_content(loaded.sha256):
                store.link_path(path, loaded.sha256, loaded.size, loaded.mtime_ns)
                summary.resumed += 1
                finish_paths([loaded], resumed=True)
                return
            if loaded.sha256 in jobs:
                jobs[loaded.sha256].paths.append(loaded)
                summary.duplicates += 1
                return
            if not loaded.ok:
                store.record_rejected(loaded.sha256, loaded.size, loaded.error_type or "corrupt",
                                      loaded.error_message or "", loaded.format)
                store.link_path(path, loaded.sha256, loaded.size, loaded.mtime_ns)
                summary.rejected += 1
                finish_paths([loaded], failed=True)
                return
            n = len(loaded.frame_numbers)
            job = _Job(loaded=loaded, paths=[loaded], scores=[None] * n, infer_ms=[0.0] * n, remaining=n)
            jobs[loaded.sha256] = job
            backlog.extend((job, i) for i in range(n))
            buffered += n

        def on_inferred(job: _Job, i: int, t0: float, scores: list[Scores] | None, error: Exception | None) -> None:
            nonlocal in_flight, down_since, next_probe, backoff, buffered
            in_flight -= 1
            if isinstance(error, ServedModelChanged):
                # Not a fault to wait out: this run's labels and model version no longer hold.
                summary.triton_error = str(error)
                summary.model_changed = True
                return
            if error is not None or not scores:
                backlog.appendleft((job, i))
                if down_since is None:
                    down_since = time.monotonic()
                    backoff = 1.0
                    next_probe = down_since + backoff
                    say(f"Triton failed ({str(error)[:200]}); pausing and retrying for up to {opts.triton_retry_s:.0f} s")
                return
            job.scores[i] = scores[0]
            job.infer_ms[i] = (time.monotonic() - t0) * 1000
            job.remaining -= 1
            buffered -= 1
            if job.remaining:
                return
            d = job.loaded
            store.record_scored(
                d.sha256, d.size, d.format, d.monochrome, d.dicom, d.decode_ms,
                [(num, s, ms) for num, s, ms in zip(d.frame_numbers, job.scores, job.infer_ms) if s is not None],
                keep_training=opts.keep_training)
            for p in job.paths:
                store.link_path(p.path, d.sha256, p.size, p.mtime_ns)
            del jobs[d.sha256]
            job.loaded.images = None
            summary.scored += 1
            summary.frames_scored += len(d.frame_numbers)
            finish_paths(job.paths, frames=len(d.frame_numbers))

        with _Stop() as stop:
            try:
                while True:
                    stopping = stop.requested.is_set() or summary.triton_error is not None
                    # 1. feed the decoders
                    while (pending and not stopping and len(decoding) < 2 * opts.workers
                           and buffered < opts.max_buffered_frames):
                        path = pending.popleft()
                        try:
                            st = os.stat(path)
                            known = store.known_unchanged(path, st.st_size, st.st_mtime_ns)
                        except OSError:
                            known = None
                        if known is not None:
                            summary.resumed += 1
                            progress.advance(resumed=True)
                            continue
                        submit(path)
                    # 2. feed Triton
                    if down_since is None and summary.triton_error is None:
                        while backlog and in_flight < opts.max_in_flight:
                            job, i = backlog.popleft()
                            if stop.requested.is_set() and job.sent == 0:
                                continue  # not started: left for the next run
                            send(job, i)
                    # 3. done?
                    if stopping:
                        for fut in list(decoding):
                            fut.cancel()
                        if summary.triton_error is not None:
                            unfinished_ok = in_flight == 0
                        else:
                            unfinished_ok = in_flight == 0 and not any(j.sent for j in jobs.values()
                                                                       if j.remaining)
                        if unfinished_ok:
                            break  # decodes still running are dropped: done again on the next run
                    elif not pending and not decoding and not jobs:
                        break
                    # 4. wait for something to happen
                    try:
                        event = events.get(timeout=0.2)
                    except queue.Empty:
                        event = None
                    while event is not None:
                        if event[0] == "decoded":
                            on_decoded(event[1])
                        else:
                            on_inferred(*event[1:])
                        try:
                            event = events.get_nowait()
                        except queue.Empty:
                            event = None
                    # 5. Triton down: probe with backoff, give up after triton_retry_s
                    if down_since is not None and time.monotonic() >= next_probe:
                        if self.scorer.is_ready():
                            say(f"Triton is back after {time.monotonic() - down_since:.0f} s; resuming")
                            down_since = None
                        elif time.monotonic() - down_since > opts.triton_retry_s:
                            summary.triton_error = (
                                f"Triton at {self.scorer.url} failed and did not recover within "
                                f"{opts.triton_retry_s:.0f} s")
                            backlog.clear()
                        else:
                            backoff = min(backoff * 2, 10.0)
                            next_probe = time.monotonic() + backoff
                    if time.monotonic() - last_commit >= opts.commit_every_s:
                        store.commit()
                        last_commit = time.monotonic()
            finally:
                store.commit()
                summary.interrupted = stop.requested.is_set()
                summary.elapsed_s = round(time.monotonic() - started, 3)
                progress.close()
        return summary
