"""Opening a referenced file in a decode worker: regular files only, never through a link, never blocking.

A request's ``{"uri": ...}`` is checked when it is parsed (``consumer/requests.py``): the path is
resolved, symbolic links included, and must lie under ``--archive-root``. Between that check and the
worker opening the file, the archive may change: a file replaced by a symbolic link (to anywhere), a
directory by a link, or a FIFO, socket or device put in its place. So the worker does not trust the path
twice:

* it walks the already-resolved path from ``/`` one component at a time with ``O_NOFOLLOW`` (``openat``),
  so a symbolic link anywhere on it is refused, not followed;
* it opens the last component with ``O_NOFOLLOW | O_NONBLOCK``: opening a FIFO without a writer returns
  at once instead of blocking the worker, and a UNIX socket fails with ``ENXIO``;
* it ``fstat``\\ s the descriptor it holds and reads only a regular file; size and modification time
  come from that descriptor, not from the path.

A link, FIFO, socket or device is bad input, dead-lettered as ``not_a_regular_file``.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from skinbatch.contract import ErrorType, InputRejected

__all__ = ["FileRead", "NotARegularFile", "open_regular_file", "read_regular_file"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_CHUNK = 1 << 20


class NotARegularFile(InputRejected):
    """The reference names a symbolic link, FIFO, socket or device when it is opened."""

    type = ErrorType.NOT_A_REGULAR_FILE


@dataclass(frozen=True)
class FileRead:
    data: bytes
    size: int
    mtime_ns: int


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a link")):
        if test(mode):
            return name
    return "not a regular file"


def _link_refused() -> NotARegularFile:
    return NotARegularFile("the referenced path holds a symbolic link where a file or folder was when the request "
                           "was accepted; it is not followed. Send a reference to the file itself")


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode)
    except OSError:
        return False


def open_regular_file(path: str) -> tuple[int, os.stat_result]:
    """An open descriptor on the regular file at the absolute, resolved ``path``, and its ``fstat``.

    Raises :class:`NotARegularFile` (a link on the path, a FIFO, socket or device), ``IsADirectoryError``,
    or the ``OSError`` of the failed ``open`` (``FileNotFoundError``, ``PermissionError`` …).
    """
    if not os.path.isabs(path):
        raise ValueError("a reference is opened by its absolute, resolved path")
    *folders, name = [p for p in path.split("/") if p]
    if not name or ".." in folders or name == "..":
        raise ValueError("a resolved reference has no '..' in it")
    dir_fd = os.open("/", _DIR_FLAGS)
    try:
        for folder in folders:
            try:
                next_fd = os.open(folder, _DIR_FLAGS, dir_fd=dir_fd)
            except OSError as exc:
                # O_DIRECTORY | O_NOFOLLOW on a link: ELOOP, or ENOTDIR on kernels that check the type first.
                if exc.errno == errno.ELOOP or (exc.errno == errno.ENOTDIR and _is_link(folder, dir_fd)):
                    raise _link_refused() from None
                raise
            os.close(dir_fd)
            dir_fd = next_fd
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _link_refused() from None
            if exc.errno == errno.ENXIO:  # a UNIX socket (or a device without its driver)
                raise NotARegularFile("the reference names a socket or device, not a regular file") from None
            raise
    finally:
        os.close(dir_fd)
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode):
        return fd, st
    os.close(fd)
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "the reference names a folder")
    raise NotARegularFile(f"the reference names {_kind(st.st_mode)}, not a regular file")


def read_regular_file(path: str, max_bytes: int) -> FileRead:
    """At most ``max_bytes + 1`` bytes of the regular file at ``path`` (the caller compares the size).

    Raises what :func:`open_regular_file` raises, and ``OSError`` on a failed read.
    """
    fd, st = open_regular_file(path)
    try:
        if st.st_size > max_bytes:
            return FileRead(b"", st.st_size, st.st_mtime_ns)
        chunks, total = [], 0
        while total <= max_bytes:
            chunk = os.read(fd, min(_CHUNK, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return FileRead(b"".join(chunks), st.st_size, st.st_mtime_ns)
    finally:
        os.close(fd)
