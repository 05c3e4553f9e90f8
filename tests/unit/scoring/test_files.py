"""Opening referenced files in a decode worker, on the real filesystem: links swapped in after the request
was checked, FIFOs and sockets are typed refusals, and nothing blocks."""

from __future__ import annotations

import os
import shutil
import socket
import threading
from pathlib import Path

import pytest

from skinbatch.consumer.requests import resolve_reference
from skinbatch.contract import ErrorType
from skinbatch.imaging.model_input import ModelInput
from skinbatch.scoring.decoding import read_input
from skinbatch.scoring.files import FileRead

DATA = b"\xff\xd8\xff\xe0" + b"x" * 1000


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.jpg").write_bytes(DATA)
    (root / "other.jpg").write_bytes(b"other")
    return root


def _read_in_thread(path: str, max_bytes: int = 10_000) -> FileRead | ModelInput:
    """read_input in a thread, so that a test that would block fails instead of hanging the suite."""
    out: list[FileRead | ModelInput] = []
    thread = threading.Thread(target=lambda: out.append(read_input(path, max_bytes)), daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "reading the reference blocked"
    return out[0]


def _error(read: FileRead | ModelInput) -> str | None:
    return read.error_type if isinstance(read, ModelInput) else None


def test_a_regular_file_is_read_with_its_size_and_mtime(root: Path) -> None:
    path = resolve_reference("a/x.jpg", str(root))
    read = _read_in_thread(path)
    assert isinstance(read, FileRead)
    assert read.data == DATA and read.size == len(DATA) and read.mtime_ns == os.stat(path).st_mtime_ns


def test_a_file_over_the_limit_is_too_large_without_reading_it(root: Path) -> None:
    read = _read_in_thread(resolve_reference("a/x.jpg", str(root)), max_bytes=100)
    assert isinstance(read, ModelInput) and read.error_type == ErrorType.TOO_LARGE and read.nbytes == len(DATA)


def test_a_fifo_is_refused_without_blocking(root: Path) -> None:
    os.mkfifo(root / "a" / "pipe.jpg")
    assert _error(_read_in_thread(resolve_reference("a/pipe.jpg", str(root)))) == ErrorType.NOT_A_REGULAR_FILE


def test_a_socket_is_refused(root: Path) -> None:
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(root / "a" / "s.jpg"))
        server.listen()
        assert _error(_read_in_thread(resolve_reference("a/s.jpg", str(root)))) == ErrorType.NOT_A_REGULAR_FILE


def test_a_device_is_refused(root: Path) -> None:
    path = resolve_reference("a/x.jpg", str(root))
    # The check passed for a file; a character device's path is what the worker is handed.
    assert _error(_read_in_thread("/dev/zero")) == ErrorType.NOT_A_REGULAR_FILE
    assert isinstance(_read_in_thread(path), FileRead)


def test_a_file_swapped_for_a_link_after_the_check_is_refused(root: Path) -> None:
    path = resolve_reference("a/x.jpg", str(root))  # checked: a regular file under the root
    os.replace(root / "a" / "x.jpg", root / "a" / "moved.jpg")
    os.symlink("/etc/passwd", root / "a" / "x.jpg")  # swapped in before the worker opens it
    assert _error(_read_in_thread(path)) == ErrorType.NOT_A_REGULAR_FILE


def test_a_link_to_a_file_inside_the_root_swapped_in_is_refused_too(root: Path) -> None:
    path = resolve_reference("a/x.jpg", str(root))
    (root / "a" / "x.jpg").unlink()
    os.symlink(root / "other.jpg", root / "a" / "x.jpg")
    assert _error(_read_in_thread(path)) == ErrorType.NOT_A_REGULAR_FILE


def test_a_folder_swapped_for_a_link_after_the_check_is_refused(root: Path, tmp_path: Path) -> None:
    path = resolve_reference("a/x.jpg", str(root))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.jpg").write_bytes(b"secret")
    shutil.rmtree(root / "a")
    os.symlink(outside, root / "a")
    assert _error(_read_in_thread(path)) == ErrorType.NOT_A_REGULAR_FILE


def test_a_link_inside_the_root_that_the_check_resolved_still_works(root: Path) -> None:
    os.symlink(root / "a" / "x.jpg", root / "link.jpg")
    read = _read_in_thread(resolve_reference("link.jpg", str(root)))
    assert isinstance(read, FileRead) and read.data == DATA


def test_missing_files_and_folders_are_not_found(root: Path) -> None:
    path = resolve_reference("a/x.jpg", str(root))
    (root / "a" / "x.jpg").unlink()
    assert _error(_read_in_thread(path)) == ErrorType.REFERENCE_NOT_FOUND
    assert _error(_read_in_thread(str(root / "a"))) == ErrorType.REFERENCE_NOT_FOUND
