"""The decode pool: spawned worker processes, each fed through a pipe of its own.

An :class:`~concurrent.futures.Executor`, like :class:`~concurrent.futures.ProcessPoolExecutor`, but with
less work in the parent for each task, which is what limits a consumer (issue 15's profile: the standard
pool's manager and feeder threads cost the parent 0.45-0.5 ms of CPU a message):

* ``submit`` pickles the task and writes it to an idle worker's pipe on the caller's thread; no feeder
  thread, no call queue. A worker takes a second task while it works on the first only when both fit in
  its pipe, so a write never blocks the caller.
* One reader thread waits on all the workers' result pipes and their process sentinels; it completes
  the future and hands the worker its next task.

A worker that dies (killed, out of memory, a crash in a decoder) breaks the pool, as with the standard
one: every future not yet done fails with :class:`BrokenProcessPool`, and so does every later
``submit``. The owner starts a new pool.
"""

from __future__ import annotations

import fcntl
import itertools
import pickle
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future, wait as futures_wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from multiprocessing.connection import Connection, wait
from typing import Any

PIPE_BYTES = 1 << 20
"""What each task pipe is asked to hold (Linux ``F_SETPIPE_SZ``; 1 MiB is the default ceiling)."""
_F_SETPIPE_SZ, _F_GETPIPE_SZ = 1031, 1032
_HEADROOM = 4096
"""Room left in a pipe for a task's pickled arguments besides its payload."""


@dataclass(eq=False)
class _Task:
    task_id: int
    future: Future[Any]
    message: bytes
    """The pickled (id, function, arguments)."""


@dataclass(eq=False)
class _Worker:
    process: Any
    tasks: Connection
    results: Connection
    capacity: int
    queued: deque[tuple[int, int]] = field(default_factory=deque)
    """(task id, bytes) of the tasks written to this worker and not yet answered."""


class DecodePool(Executor):
    """``workers`` spawned processes that first run ``initializer(*initargs)``."""

    def __init__(self, workers: int, initializer: Callable[..., None] | None = None,
                 initargs: tuple[Any, ...] = ()) -> None:
        ctx = get_context("spawn")  # the parent holds gRPC channels and threads, which do not survive a fork
        self._lock = threading.RLock()  # _dispatch may break the pool, which takes it again
        self._ids = itertools.count()
        self._pending: deque[_Task] = deque()
        self._futures: dict[int, Future[Any]] = {}
        self._broken: str | None = None
        self._shut = False
        self._workers: list[_Worker] = []
        for _ in range(max(1, workers)):
            task_read, task_write = ctx.Pipe(duplex=False)
            result_read, result_write = ctx.Pipe(duplex=False)
            process = ctx.Process(target=_worker_main, args=(task_read, result_write, initializer, initargs),
                                  daemon=True, name="skinbatch-decode")
            process.start()
            task_read.close()
            result_write.close()
            self._workers.append(_Worker(process, task_write, result_read, _pipe_capacity(task_write)))
        self._reader = threading.Thread(target=self._read, name="skinbatch-decode-results", daemon=True)
        self._reader.start()

    # -- Executor ------------------------------------------------------------------------------------------
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        task_id = next(self._ids)
        message = pickle.dumps((task_id, fn, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            if self._broken is not None:
                raise BrokenProcessPool(self._broken)
            if self._shut:
                raise RuntimeError("cannot submit to a decode pool that was shut down")
            self._futures[task_id] = future
            self._pending.append(_Task(task_id, future, message))
            self._dispatch()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """As :meth:`Executor.shutdown`, except that ``wait=False`` also stops the workers: tasks no
        worker has finished are then never answered (the pipeline drops them; a new pool redoes them)."""
        if wait and not cancel_futures:
            with self._lock:
                running = list(self._futures.values())
            futures_wait(running)  # every task submitted so far is answered (or the pool breaks)
        with self._lock:
            if self._shut:
                return
            self._shut = True
            for task in self._pending:
                task.future.cancel()
            self._pending.clear()
            # Under the lock: a close racing _break's would close whatever a new pipe got that number.
            for worker in self._workers:
                _close_quietly(worker.tasks)  # a worker reads end-of-file, and exits once its tasks are done
        if wait:
            self._reader.join()
        else:
            for worker in self._workers:
                if worker.process.is_alive():
                    worker.process.terminate()

    # -- the parent's side -----------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        """Write pending tasks to workers that can take them now (called with the lock held)."""
        while self._pending:
            task = self._pending[0]
            worker = self._taker(len(task.message))
            if worker is None:
                return
            self._pending.popleft()
            if not task.future.set_running_or_notify_cancel():
                self._futures.pop(task.task_id, None)
                continue
            try:
                worker.tasks.send_bytes(task.message)
            except OSError as exc:
                self._break(f"writing to a decode worker failed ({exc.strerror or exc}; exit code "
                            f"{worker.process.exitcode}); restart the pool")
                return
            worker.queued.append((task.task_id, len(task.message)))

    def _taker(self, size: int) -> _Worker | None:
        """An idle worker, or one whose pipe still holds this task beside what it has queued."""
        idle = next((w for w in self._workers if not w.queued), None)
        return idle or next((w for w in self._workers if len(w.queued) == 1
                             and w.queued[0][1] + size + _HEADROOM <= w.capacity), None)

    def _read(self) -> None:
        by_results = {w.results: w for w in self._workers}
        by_sentinel = {w.process.sentinel: w for w in self._workers}
        while True:
            ready = wait([*by_results, *by_sentinel])
            for obj in ready:
                if obj in by_results:
                    if not self._receive(by_results[obj]):
                        del by_results[obj]
            died = [by_sentinel[s] for s in ready if s in by_sentinel]
            if died and not self._shut:
                # Results it wrote before dying are read first, above; what it still held is lost.
                for worker in died:
                    while worker.results.poll() and self._receive(worker):
                        pass
                died[0].process.join(1.0)  # its sentinel fired: reap it, for its exit code
                code = died[0].process.exitcode
                self._break(f"a decode worker died (exit code {code}); restart the pool")
            for worker in died:
                by_sentinel.pop(worker.process.sentinel, None)
                by_results.pop(worker.results, None)
            if not by_sentinel:
                break
        for worker in self._workers:
            _close_quietly(worker.results)

    def _receive(self, worker: _Worker) -> bool:
        try:
            task_id, ok, value = pickle.loads(worker.results.recv_bytes())
        except (EOFError, OSError):
            return False
        with self._lock:
            if worker.queued and worker.queued[0][0] == task_id:
                worker.queued.popleft()
            future = self._futures.pop(task_id, None)
            if not self._shut:
                self._dispatch()
        if future is not None:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        return True

    def _break(self, why: str) -> None:
        with self._lock:
            if self._broken is not None:
                return
            self._broken = why
            futures = list(self._futures.values())
            self._futures.clear()
            self._pending.clear()
            for worker in self._workers:
                _close_quietly(worker.tasks)
                if worker.process.is_alive():
                    worker.process.terminate()
        for future in futures:
            if not future.done():
                future.set_exception(BrokenProcessPool(why))


def _pipe_capacity(conn: Connection) -> int:
    """Grow the pipe to :data:`PIPE_BYTES` where the kernel lets us; what it holds now."""
    try:
        fcntl.fcntl(conn.fileno(), _F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:
        pass  # over /proc/sys/fs/pipe-max-size, or not Linux: the default is fine, just slower
    try:
        return int(fcntl.fcntl(conn.fileno(), _F_GETPIPE_SZ))
    except OSError:
        return 1 << 16


def _close_quietly(conn: Connection) -> None:
    try:
        conn.close()
    except OSError:
        pass


def _worker_main(tasks: Connection, results: Connection, initializer: Callable[..., None] | None,
                 initargs: tuple[Any, ...]) -> None:
    if initializer is not None:
        initializer(*initargs)
    while True:
        try:
            task_id, fn, args, kwargs = pickle.loads(tasks.recv_bytes())
        except EOFError:
            return
        try:
            answer = (task_id, True, fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - the parent's future carries it
            answer = (task_id, False, exc)
        try:
            message = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - an answer that cannot be pickled is still an answer
            message = pickle.dumps((task_id, False, RuntimeError(f"cannot send the result back: {exc!r}")))
        results.send_bytes(message)


__all__ = ["DecodePool"]
