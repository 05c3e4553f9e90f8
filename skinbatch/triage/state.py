"""Resumable triage state: one SQLite file in the output folder, keyed by the sha256 of each file's bytes.

* ``contents``: one row per distinct content (scored, or rejected as bad input). A content in this table
  is never decoded or scored again, whatever path it turns up under.
* ``frames``: the scores of each frame of a scored content.
* ``maps``: the malignancy map (class activation map) of each frame, where the model serves one.
* ``paths``: where each content was found, with size and mtime, so that an unchanged file is skipped on
  resume without reading it. Errors about a path (missing, unreadable) live here only and are retried.
* ``meta``: the model the scores came from. Resuming against another model is refused: mixing two
  models' scores in one ranking would be wrong.

Only the main thread touches the store. Writes are grouped into transactions (``commit`` every second
or so); an interrupted run loses at most the uncommitted tail, which is scored again on resume.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from skinbatch.contract import ExitCode, SkinbatchError
from skinbatch.scoring import Scores

STATE_FILE = "triage-state.sqlite"
SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS contents (
    sha256 TEXT PRIMARY KEY, status TEXT NOT NULL, bytes INTEGER, format TEXT, monochrome INTEGER,
    frames INTEGER, dicom TEXT, error_type TEXT, error_message TEXT, decode_ms REAL, scored_at TEXT);
CREATE TABLE IF NOT EXISTS frames (
    sha256 TEXT NOT NULL, frame INTEGER NOT NULL, malignancy REAL NOT NULL, coarse TEXT NOT NULL,
    fine TEXT NOT NULL, top_classes TEXT NOT NULL, training BLOB, infer_ms REAL,
    PRIMARY KEY (sha256, frame));
CREATE TABLE IF NOT EXISTS paths (
    path TEXT PRIMARY KEY, sha256 TEXT, size INTEGER, mtime_ns INTEGER, error_type TEXT,
    error_message TEXT, seen_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS maps (
    sha256 TEXT NOT NULL, frame INTEGER NOT NULL, height INTEGER NOT NULL, width INTEGER NOT NULL,
    map BLOB NOT NULL, PRIMARY KEY (sha256, frame));
CREATE INDEX IF NOT EXISTS paths_sha256 ON paths (sha256);
CREATE INDEX IF NOT EXISTS frames_malignancy ON frames (malignancy DESC);
"""


class StateMismatchError(SkinbatchError, RuntimeError):
    """The output folder holds the state of a run with another model."""

    exit_code = ExitCode.USAGE  # choose a new --out folder, or the model the folder was scored with


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class FrameRow:
    """One scored frame, with everything the report shows about it."""

    path: str
    sha256: str
    frame: int
    frames: int
    malignancy: float
    coarse: dict[str, float]
    fine: dict[str, float]
    top_classes: list[dict[str, Any]]
    format: str
    monochrome: bool
    bytes: int
    dicom: dict[str, Any] | None
    scored_at: str
    training: np.ndarray | None = None


@dataclass
class ErrorRow:
    path: str
    sha256: str | None
    error_type: str
    error_message: str
    bytes: int | None


_MODEL_KEYS = ("name", "version", "weights_sha256", "taxonomy_sha256")


class TriageStore:
    def __init__(self, path: Path, model: dict[str, Any]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._in_tx = False
        self.model = self._check_model(model)

    @classmethod
    def open(cls, out_dir: Path, model: dict[str, Any]) -> TriageStore:
        return cls(Path(out_dir) / STATE_FILE, model)

    def _check_model(self, model: dict[str, Any]) -> dict[str, Any]:
        row = self._db.execute("SELECT value FROM meta WHERE key='model'").fetchone()
        if row is None:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('model', ?), ('schema', ?), ('created', ?)",
                             (json.dumps(model), SCHEMA_VERSION, _now()))
            return model
        stored = json.loads(row[0])
        if any(str(stored.get(k, "")) != str(model.get(k, "")) for k in _MODEL_KEYS):
            raise StateMismatchError(
                f"{self.path.parent} holds scores from model {stored.get('name')!r} version {stored.get('version')!r} "
                f"(weights {str(stored.get('weights_sha256', ''))[:12]}…), but Triton now serves "
                f"{model.get('name')!r} version {model.get('version')!r} "
                f"(weights {str(model.get('weights_sha256', ''))[:12]}…). "
                "Use a new --out folder for the new model (or delete the old one to start over)."
            )
        return stored

    # -- transactions ----------------------------------------------------------------------
    def _begin(self) -> None:
        if not self._in_tx:
            self._db.execute("BEGIN")
            self._in_tx = True

    def commit(self) -> None:
        if self._in_tx:
            self._db.execute("COMMIT")
            self._in_tx = False

    def close(self) -> None:
        self.commit()
        self._db.close()

    # -- look-ups for resuming ---------------------------------------------------------------
    def known_unchanged(self, path: str, size: int, mtime_ns: int) -> str | None:
        """The content hash of a path already handled, if the file has not changed since."""
        row = self._db.execute(
            "SELECT p.sha256 FROM paths p JOIN contents c ON c.sha256 = p.sha256 "
            "WHERE p.path = ? AND p.size = ? AND p.mtime_ns = ?", (path, size, mtime_ns)).fetchone()
        return row[0] if row else None

    def has_content(self, sha256: str) -> bool:
        return self._db.execute("SELECT 1 FROM contents WHERE sha256 = ?", (sha256,)).fetchone() is not None

    # -- writes ------------------------------------------------------------------------------
    def link_path(self, path: str, sha256: str, size: int, mtime_ns: int) -> None:
        self._begin()
        self._db.execute("INSERT OR REPLACE INTO paths VALUES (?, ?, ?, ?, NULL, NULL, ?)",
                         (path, sha256, size, mtime_ns, _now()))

    def record_path_error(self, path: str, error_type: str, message: str) -> None:
        self._begin()
        self._db.execute("INSERT OR REPLACE INTO paths VALUES (?, NULL, NULL, NULL, ?, ?, ?)",
                         (path, error_type, message, _now()))

    def record_rejected(self, sha256: str, nbytes: int, error_type: str, message: str, fmt: str = "") -> None:
        self._begin()
        self._db.execute(
            "INSERT OR REPLACE INTO contents VALUES (?, 'rejected', ?, ?, NULL, 0, NULL, ?, ?, NULL, ?)",
            (sha256, nbytes, fmt or None, error_type, message, _now()))

    def record_scored(self, sha256: str, nbytes: int, fmt: str, monochrome: bool, dicom: dict[str, Any] | None,
                      decode_ms: float, frames: list[tuple[int, Scores, float]], keep_training: bool = False) -> None:
        self._begin()
        for number, s, infer_ms in frames:
            training = np.asarray(s.training_probs, dtype=np.float32).tobytes() if keep_training else None
            self._db.execute(
                "INSERT OR REPLACE INTO frames VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (sha256, number, float(s.malignancy), json.dumps(s.coarse), json.dumps(s.fine),
                 json.dumps([{"name": n, "probability": p} for n, p in s.top_classes]), training, infer_ms))
            if s.malignancy_map is not None:
                grid = np.asarray(s.malignancy_map, dtype=np.float32)
                self._db.execute("INSERT OR REPLACE INTO maps VALUES (?, ?, ?, ?, ?)",
                                 (sha256, number, grid.shape[0], grid.shape[1], grid.tobytes()))
        self._db.execute(
            "INSERT OR REPLACE INTO contents VALUES (?, 'scored', ?, ?, ?, ?, ?, NULL, NULL, ?, ?)",
            (sha256, nbytes, fmt, int(monochrome), len(frames), json.dumps(dicom) if dicom else None,
             decode_ms, _now()))

    # -- reads for reports ---------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        q = self._db.execute
        return {
            "paths": q("SELECT COUNT(*) FROM paths").fetchone()[0],
            "contents_scored": q("SELECT COUNT(*) FROM contents WHERE status='scored'").fetchone()[0],
            "contents_rejected": q("SELECT COUNT(*) FROM contents WHERE status='rejected'").fetchone()[0],
            "frames": q("SELECT COUNT(*) FROM frames").fetchone()[0],
            "path_errors": q("SELECT COUNT(*) FROM paths WHERE sha256 IS NULL").fetchone()[0],
        }

    def frame_rows(self, paths: set[str] | None = None, with_training: bool = False) -> Iterator[FrameRow]:
        """Every scored frame under every path, highest malignancy first (ties: path, frame)."""
        cur = self._db.execute(
            "SELECT p.path, f.sha256, f.frame, c.frames, f.malignancy, f.coarse, f.fine, f.top_classes, c.format, "
            "c.monochrome, c.bytes, c.dicom, c.scored_at, f.training "
            "FROM frames f JOIN contents c ON c.sha256 = f.sha256 JOIN paths p ON p.sha256 = f.sha256 "
            "ORDER BY f.malignancy DESC, p.path, f.frame")
        for r in cur:
            if paths is not None and r[0] not in paths:
                continue
            training = np.frombuffer(r[13], dtype=np.float32) if with_training and r[13] is not None else None
            yield FrameRow(path=r[0], sha256=r[1], frame=r[2], frames=r[3], malignancy=r[4],
                           coarse=json.loads(r[5]), fine=json.loads(r[6]), top_classes=json.loads(r[7]),
                           format=r[8] or "", monochrome=bool(r[9]), bytes=r[10] or 0,
                           dicom=json.loads(r[11]) if r[11] else None, scored_at=r[12] or "", training=training)

    def maps(self) -> dict[tuple[str, int], np.ndarray]:
        """Every stored malignancy map by (sha256, frame)."""
        cur = self._db.execute("SELECT sha256, frame, height, width, map FROM maps")
        return {(r[0], r[1]): np.frombuffer(r[4], dtype=np.float32).reshape(r[2], r[3]) for r in cur}

    def error_rows(self, paths: set[str] | None = None) -> Iterator[ErrorRow]:
        cur = self._db.execute(
            "SELECT p.path, p.sha256, COALESCE(c.error_type, p.error_type), "
            "COALESCE(c.error_message, p.error_message), "
            "c.bytes FROM paths p LEFT JOIN contents c ON c.sha256 = p.sha256 "
            "WHERE p.sha256 IS NULL OR c.status = 'rejected' ORDER BY 3, p.path")
        for r in cur:
            if paths is not None and r[0] not in paths:
                continue
            yield ErrorRow(path=r[0], sha256=r[1], error_type=r[2] or "unknown", error_message=r[3] or "", bytes=r[4])
