"""The decode pool: spawned worker processes, each fed through a pipe of its own.

An :class:`~concurrent.futures.Executor`, like :class:`~concurrent.futures.ProcessPoolExecutor`, but with
less work in the parent for each task, which is what limits a consumer (issue 15's profile: the standard
pool's manager and feeder threads cost the parent 0.45-0.5 ms of CPU a message):

* ``submit`` pickles the task and writes it to an idle worker's pipe on the caller's thread; no feeder
  thread, no call queue. A worker takes a second task while it works on the first only when both fit in
  its pipe, so a write never blocks the caller.
* One reader thread waits on all the workers' result pipes and their process sentinels; it completes
  the future and hands the worker its next task.

A worker that dies on its own (killed, a crash in a decoder) breaks the pool, as with the standard one:
every future not yet done fails with :class:`BrokenProcessPool`, and so does every later ``submit``. The
owner starts a new pool.

Bounds on one task, where asked (``task_timeout_s``, ``memory_bytes``): a task that runs past its
wall-clock limit fails with :class:`TaskTimedOut`, and one that runs its worker out of memory (the
worker's address space is capped with ``RLIMIT_AS``, so an allocation fails with ``MemoryError``
instead of the kernel's OOM killer ending the whole consumer) with :class:`TaskOutOfMemory`. Either way
only that worker is killed and replaced: the tasks queued behind it go to the others, and the pool
carries on.
"""

from __future__ import annotations

import fcntl
import itertools
import pickle
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future, wait as futures_wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from multiprocessing.connection import Connection, wait
from typing import Any

from skinbatch.contract import ErrorType, InputRejected

PIPE_BYTES = 1 << 20
"""What each task pipe is asked to hold (Linux ``F_SETPIPE_SZ``; 1 MiB is the default ceiling)."""
_F_SETPIPE_SZ, _F_GETPIPE_SZ = 1031, 1032
_READY = -1
"""The task id of a worker's first message: it has started."""
_HEADROOM = 4096
"""Room left in a pipe for a task's pickled arguments besides its payload."""


class TaskTimedOut(InputRejected):
    """The task ran past the pool's ``task_timeout_s``; its worker was killed and replaced."""

    type = ErrorType.DECODE_TIMEOUT


class TaskOutOfMemory(InputRejected):
    """The task ran its worker out of memory (``memory_bytes``); the worker was replaced."""

    type = ErrorType.DECODE_MEMORY


@dataclass(eq=False)
class _Task:
    task_id: int
    future: Future[Any]
    message: bytes
    """The pickled (id, function, arguments)."""
    running: bool = False
    """Its future was set running (a task given back by a replaced worker is written again as it is)."""


@dataclass(eq=False)
class _Worker:
    process: Any
    tasks: Connection
    results: Connection
    capacity: int
    queued: deque[_Task] = field(default_factory=deque)
    """The tasks written to this worker and not yet answered, oldest (the one it works on) first."""
    since: float = 0.0
    """When its oldest task became the one it works on (time.monotonic), or when it became ready."""
    ready: bool = False
    """It has started (run the initializer): a task's time limit counts from then, not from the spawn."""


class DecodePool(Executor):
    """``workers`` spawned processes that first run ``initializer(*initargs)``."""

    def __init__(self, workers: int, initializer: Callable[..., None] | None = None,
                 initargs: tuple[Any, ...] = (), *, task_timeout_s: float | None = None,
                 memory_bytes: int | None = None) -> None:
        """``task_timeout_s``: wall-clock limit of one task; ``memory_bytes``: each worker's RLIMIT_AS
        (None or 0: no limit)."""
        self._ctx = get_context("spawn")  # the parent holds gRPC channels and threads, which do not survive a fork
        self._initializer, self._initargs = initializer, initargs
        self.task_timeout_s = task_timeout_s or None
        self.memory_bytes = memory_bytes or None
        self._lock = threading.RLock()  # _dispatch may break the pool, which takes it again
        self._ids = itertools.count()
        self._pending: deque[_Task] = deque()
        self._futures: dict[int, Future[Any]] = {}
        self._broken: str | None = None
        self._shut = False
        self.replaced = 0
        """Workers killed and replaced for a task over a limit."""
        self._workers: list[_Worker] = [self._spawn() for _ in range(max(1, workers))]
        self._reader = threading.Thread(target=self._read, name="skinbatch-decode-results", daemon=True)
        self._reader.start()

    def _spawn(self) -> _Worker:
        task_read, task_write = self._ctx.Pipe(duplex=False)
        result_read, result_write = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(target=_worker_main, args=(task_read, result_write, self._initializer,
                                                               self._initargs, self.memory_bytes),
                                    daemon=True, name="skinbatch-decode")
        process.start()
        task_read.close()
        result_write.close()
        return _Worker(process, task_write, result_read, _pipe_capacity(task_write))

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
            if not task.running and not task.future.set_running_or_notify_cancel():
                self._futures.pop(task.task_id, None)
                continue
            task.running = True
            try:
                worker.tasks.send_bytes(task.message)
            except OSError as exc:
                self._break(f"writing to a decode worker failed ({exc.strerror or exc}; exit code "
                            f"{worker.process.exitcode}); restart the pool")
                return
            if not worker.queued:
                worker.since = time.monotonic()
            worker.queued.append(task)

    def _taker(self, size: int) -> _Worker | None:
        """An idle worker, or one whose pipe still holds this task beside what it has queued."""
        idle = next((w for w in self._workers if not w.queued), None)
        return idle or next((w for w in self._workers if len(w.queued) == 1
                             and len(w.queued[0].message) + size + _HEADROOM <= w.capacity), None)

    def _read(self) -> None:
        closed: set[Any] = set()  # result pipes at end-of-file (their workers exiting)
        gone: set[Any] = set()  # sentinels already seen
        while True:
            with self._lock:
                workers = list(self._workers)
            by_results = {w.results: w for w in workers if w.results not in closed}
            by_sentinel = {w.process.sentinel: w for w in workers if w.process.sentinel not in gone}
            if not by_sentinel:
                break
            ready = wait([*by_results, *by_sentinel], timeout=self._next_deadline(workers))
            for obj in ready:
                if obj in by_results and not self._receive(by_results[obj]):
                    closed.add(obj)
            died = [by_sentinel[s] for s in ready if s in by_sentinel]
            gone.update(w.process.sentinel for w in died)
            died = [w for w in died if w in self._workers]  # not one this thread replaced meanwhile
            if died and not self._shut:
                # Results it wrote before dying are read first, above; what it still held is lost.
                for worker in died:
                    while worker.results.poll() and self._receive(worker):
                        pass
                died[0].process.join(1.0)  # its sentinel fired: reap it, for its exit code
                code = died[0].process.exitcode
                self._break(f"a decode worker died (exit code {code}); restart the pool")
            self._expire()
        for worker in self._workers:
            _close_quietly(worker.results)

    def _next_deadline(self, workers: list[_Worker]) -> float | None:
        """Seconds until the first running task passes its limit (None: no limit, or nothing running)."""
        if self.task_timeout_s is None or self._shut or self._broken:
            return None
        starts = [w.since for w in workers if w.queued and w.ready]
        if not starts:
            return None
        return max(0.0, min(starts) + self.task_timeout_s - time.monotonic()) + 0.01

    def _expire(self) -> None:
        """Kill and replace every worker whose task ran past the limit (on the reader thread)."""
        if self.task_timeout_s is None or self._shut or self._broken:
            return
        now = time.monotonic()
        for worker in [w for w in self._workers if w.queued and w.ready and now - w.since > self.task_timeout_s]:
            while worker.results.poll() and self._receive(worker):
                pass  # it answered just in time
            if worker.queued and time.monotonic() - worker.since > self.task_timeout_s:
                self._replace(worker, TaskTimedOut(f"decoding took longer than {self.task_timeout_s:g} s; the "
                                                   "worker was replaced"))

    def _replace(self, worker: _Worker, error: BaseException | None) -> None:
        """Kill ``worker``, fail its current task with ``error`` (if any), hand the tasks queued behind it to
        the others and start a new worker in its place."""
        with self._lock:
            if worker not in self._workers or self._shut or self._broken:
                return
            self._workers.remove(worker)
            current = worker.queued.popleft() if error is not None and worker.queued else None
            self._pending.extendleft(reversed(worker.queued))
            worker.queued.clear()
            _close_quietly(worker.tasks)
            worker.process.kill()
            worker.process.join(5.0)
            _close_quietly(worker.results)
            self.replaced += 1
            self._workers.append(self._spawn())
            future = self._futures.pop(current.task_id, None) if current is not None else None
            self._dispatch()
        if future is not None and not future.done():
            future.set_exception(error)

    def _receive(self, worker: _Worker) -> bool:
        try:
            task_id, ok, value, retire = pickle.loads(worker.results.recv_bytes())
        except (EOFError, OSError):
            return False
        if task_id == _READY:
            worker.ready, worker.since = True, time.monotonic()
            return True
        with self._lock:
            if worker.queued and worker.queued[0].task_id == task_id:
                worker.queued.popleft()
                worker.since = time.monotonic()
            future = self._futures.pop(task_id, None)
            if not self._shut:
                self._dispatch()
        if future is not None:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        if retire:
            self._replace(worker, None)  # out of memory: its heap is not to be trusted with another task
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


def limit_memory(limit: int | None) -> None:
    """Cap this process's address space (``RLIMIT_AS``): an allocation past it fails with MemoryError."""
    if limit:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _worker_main(tasks: Connection, results: Connection, initializer: Callable[..., None] | None,
                 initargs: tuple[Any, ...], memory_bytes: int | None = None) -> None:
    if initializer is not None:
        initializer(*initargs)
    limit_memory(memory_bytes)  # after the imports: the limit is for the tasks
    results.send_bytes(pickle.dumps((_READY, True, None, False)))
    while True:
        try:
            task_id, fn, args, kwargs = pickle.loads(tasks.recv_bytes())
        except EOFError:
            return
        retire = False
        try:
            answer = (task_id, True, fn(*args, **kwargs), False)
        except MemoryError:
            retire = True
            answer = (task_id, False, TaskOutOfMemory("the input needs more memory than a decode worker may use "
                                                      f"({(memory_bytes or 0) >> 20} MiB); the worker was replaced"),
                      True)
        except BaseException as exc:  # noqa: BLE001 - the parent's future carries it
            answer = (task_id, False, exc, False)
        try:
            message = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - an answer that cannot be pickled is still an answer
            message = pickle.dumps((task_id, False, RuntimeError(f"cannot send the result back: {exc!r}"), retire))
        results.send_bytes(message)


__all__ = ["DecodePool", "TaskOutOfMemory", "TaskTimedOut", "limit_memory"]
