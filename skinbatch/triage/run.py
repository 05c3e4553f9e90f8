"""Scoring a list of files into triage's store, through the scoring pipeline the consumer runs too.

Files go to :class:`~skinbatch.scoring.pipeline.ScoringPipeline` by path: its decode workers read, hash,
decode and preprocess them, and its batches go to Triton. This module decides what each outcome means
for the resumable :class:`~skinbatch.triage.state.TriageStore`, and only the loop thread writes to it.

Never twice: a content already in the store is skipped (an unchanged path without even being read);
identical content found under two paths in one run is scored once. On Ctrl-C/SIGTERM the loop takes
nothing new, finishes every image that has a frame at Triton, saves and returns; a second Ctrl-C aborts
at once (the uncommitted tail is then scored again on the next run).

If Triton fails, the pipeline pauses and probes it with backoff; after ``triton_retry_s`` seconds the
run gives up, saving what was finished, so that the next run resumes from there.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from skinbatch.connect.options import TritonTarget
from skinbatch.contract import ENSEMBLE, ArchiveUnavailable, ErrorType, ServedModelChanged
from skinbatch.imaging import DecodeLimits
from skinbatch.imaging.model_input import ModelInput
from skinbatch.modelcard import ModelCard
from skinbatch.scoring import TritonScorer
from skinbatch.scoring.pipeline import Mailbox, PipelineOptions, ScoredInput, ScoringPipeline

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
    max_in_flight: int = 4
    """Requests outstanding at Triton; each carries up to the model's maximum batch of frames."""
    max_buffered_frames: int = 256
    """Decoded frames held for Triton (each 299×299×3 bytes; the shared-memory slots)."""
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    timeout_s: float = 60.0
    triton_retry_s: float = 30.0
    keep_training: bool = False
    """Store the training-class probabilities of every frame (evaluate needs them; triage does not)."""
    maps: bool = True
    """Ask for the malignancy map of every frame (where the model serves one); the report overlays it."""
    shared_memory: str = "auto"
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


# Read errors by path (retried on the next run) as triage's store names them.
_PATH_ERRORS: dict[str, str] = {ErrorType.REFERENCE_NOT_FOUND: "not_found",
                                ErrorType.REFERENCE_UNREADABLE: "unreadable"}


@dataclass(eq=False)
class _File:
    path: str
    size: int = 0
    mtime_ns: int = 0


class _TriageRun:
    """One run: the pipeline's listener, the loop, and the bookkeeping that ties paths to contents."""

    def __init__(self, runner: Runner, paths: Sequence[Path | str], store: TriageStore, progress: Progress,
                 say: Callable[[str], None]) -> None:
        self.opts, self.store, self.progress, self.say = runner.options, store, progress, say
        self.summary = RunSummary(files=len(paths))
        self.pending = deque(os.path.abspath(p) for p in paths)
        self.jobs: dict[str, list[_File]] = {}
        """Contents being scored → every path they were found under in this run."""
        self.mailbox = Mailbox()
        options = PipelineOptions(workers=self.opts.workers, limits=self.opts.limits,
                                  max_frames=self.opts.max_buffered_frames, max_requests=self.opts.max_in_flight,
                                  shared_memory=self.opts.shared_memory, timeout_s=self.opts.timeout_s)
        self.pipeline = ScoringPipeline(runner.scorer, self.mailbox, self, options)

    # -- the loop ---------------------------------------------------------------------------------------
    def execute(self) -> RunSummary:
        started = time.monotonic()
        last_commit = started
        self.pipeline.start()
        try:
            with _Stop() as stop:
                while not self._done(stop):
                    self._feed(stop)
                    self.pipeline.pump()
                    self.mailbox.run(timeout=0.2)
                    self._give_up_on_triton()
                    if time.monotonic() - last_commit >= self.opts.commit_every_s:
                        self.store.commit()
                        last_commit = time.monotonic()
                self.summary.interrupted = stop.requested.is_set()
        finally:
            self.pipeline.close()
            self.store.commit()
            self.summary.elapsed_s = round(time.monotonic() - started, 3)
            self.progress.close()
        return self.summary

    def _done(self, stop: _Stop) -> bool:
        if stop.requested.is_set() or self.summary.triton_error is not None:
            if not self.pipeline.finishing:
                self.pipeline.finish_started()
            return self.pipeline.finished or self.summary.triton_error is not None
        return not self.pending and not self.pipeline.busy

    def _feed(self, stop: _Stop) -> None:
        """Hand files to the pipeline while it has room; skip unchanged files the store already has."""
        while self.pending and not stop.requested.is_set() and self.summary.triton_error is None \
                and not self.pipeline.saturated and self.pipeline.decoding < 4 * self.opts.workers:
            path = self.pending.popleft()
            try:
                st = os.stat(path)
                known = self.store.known_unchanged(path, st.st_size, st.st_mtime_ns)
            except OSError:
                known = None
            if known is not None:
                self.summary.resumed += 1
                self.progress.advance(resumed=True)
                continue
            self.pipeline.submit(_File(path), path=path, want_map=self.opts.maps)

    def _give_up_on_triton(self) -> None:
        down = self.pipeline.down_since
        waited = time.monotonic() - down if down is not None else 0.0
        if down is not None and self.summary.triton_error is None and waited > self.opts.triton_retry_s:
            self.summary.triton_error = (f"Triton at {self.pipeline.scorer.url} failed and did not recover within "
                                         f"{self.opts.triton_retry_s:.0f} s")
            self.pipeline.abandon()

    # -- the pipeline's listener --------------------------------------------------------------------------
    def current(self, ticket: _File) -> bool:
        return not self.pipeline.abandoned

    def frames(self, ticket: _File, decoded: ModelInput) -> Sequence[int]:
        ticket.size, ticket.mtime_ns = decoded.nbytes, decoded.mtime_ns
        if self.store.has_content(decoded.sha256):
            self.store.link_path(ticket.path, decoded.sha256, ticket.size, ticket.mtime_ns)
            self.summary.resumed += 1
            self.progress.advance(resumed=True)
            return ()
        if decoded.sha256 in self.jobs:
            self.jobs[decoded.sha256].append(ticket)
            self.summary.duplicates += 1
            return ()
        self.jobs[decoded.sha256] = [ticket]
        return range(len(decoded.frame_numbers))

    def scored(self, ticket: _File, result: ScoredInput) -> None:
        d = result.decoded
        self.store.record_scored(d.sha256, d.nbytes, d.format, d.monochrome, d.dicom, d.decode_ms,
                                 [(f.number, f.scores, f.infer_ms) for f in result.frames],
                                 keep_training=self.opts.keep_training)
        files = self.jobs.pop(d.sha256, [ticket])
        for f in files:
            self.store.link_path(f.path, d.sha256, f.size, f.mtime_ns)
        self.summary.scored += 1
        self.summary.frames_scored += len(result.frames)
        self.progress.advance(len(files), frames=len(result.frames))

    def rejected(self, ticket: _File, decoded: ModelInput) -> None:
        error_type = decoded.error_type or ErrorType.CORRUPT
        if error_type in _PATH_ERRORS:
            self._path_error(ticket, _PATH_ERRORS[error_type], decoded.error_message or "")
            return
        if not decoded.sha256:  # too large before hashing: a content-independent refusal, by path
            self.store.record_path_error(ticket.path, str(error_type), decoded.error_message or "")
            self.summary.rejected += 1
            self.progress.advance(failed=True)
            return
        if self.store.has_content(decoded.sha256):
            self.store.link_path(ticket.path, decoded.sha256, decoded.nbytes, decoded.mtime_ns)
            self.summary.resumed += 1
            self.progress.advance(resumed=True)
            return
        self.store.record_rejected(decoded.sha256, decoded.nbytes, str(error_type), decoded.error_message or "",
                                   decoded.format)
        self.store.link_path(ticket.path, decoded.sha256, decoded.nbytes, decoded.mtime_ns)
        self.summary.rejected += 1
        self.progress.advance(failed=True)

    def unreadable(self, ticket: _File, error: ArchiveUnavailable) -> None:
        self._path_error(ticket, "io_error", f"{error}; retried on the next run")

    def decode_bug(self, ticket: _File, error: BaseException) -> None:
        self._path_error(ticket, ErrorType.INTERNAL_ERROR,
                         f"the decoder failed unexpectedly ({type(error).__name__}: {error}); retried on the next run")

    def _path_error(self, ticket: _File, error_type: str, message: str) -> None:
        self.store.record_path_error(ticket.path, str(error_type), message)
        self.summary.path_errors += 1
        self.progress.advance(failed=True)

    def triton_down(self, error: BaseException) -> None:
        self.say(f"Triton failed ({str(error)[:200]}); pausing and retrying for up to {self.opts.triton_retry_s:.0f} s")

    def triton_up(self, down_s: float) -> None:
        self.say(f"Triton is back after {down_s:.0f} s; resuming")

    def model_changed(self, error: ServedModelChanged) -> None:
        # Not a fault to wait out: this run's labels and model version no longer hold.
        self.summary.triton_error = str(error)
        self.summary.model_changed = True


class Runner:
    """Scores files into a store through the shared scoring pipeline."""

    def __init__(self, options: RunOptions, card: ModelCard | None = None, scorer: TritonScorer | None = None) -> None:
        self.options = options
        self.scorer = scorer or TritonScorer(options.triton.endpoint, model=options.model, timeout_s=options.timeout_s,
                                             tls=options.triton.tls)
        self.card = card or self.scorer.load_card()

    def close(self) -> None:
        self.scorer.close()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, paths: Sequence[Path | str], store: TriageStore, progress: Progress | None = None,
            on_event: Callable[[str], None] | None = None) -> RunSummary:
        progress = progress or Progress(len(paths), enabled=False)
        return _TriageRun(self, paths, store, progress, on_event or (lambda _msg: None)).execute()


__all__ = ["RunOptions", "RunSummary", "Runner", "default_workers"]
