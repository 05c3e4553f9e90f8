"""A progress bar on stderr with rate and ETA, redrawn in place on a terminal.

Off a terminal (a log file, CI) it writes one plain line every ``log_every_s`` seconds instead, so logs
stay readable. Nothing about the images themselves (no path, no identifier) is ever printed.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "--:--"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Counts files done out of ``total``. Files skipped because they were done before (resumed) do not
    count towards the rate, so the ETA reflects the work that is really left."""

    def __init__(self, total: int, label: str = "triage", enabled: bool | None = None,
                 stream: TextIO | None = None, log_every_s: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        self.total = total
        self.label = label
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = self.tty if enabled is None else enabled
        self.log_every_s = log_every_s
        self.done = 0
        self.worked = 0
        self.resumed = 0
        self.failed = 0
        self.frames = 0
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._last_line = ""

    def advance(self, n: int = 1, *, resumed: bool = False, failed: bool = False, frames: int = 0) -> None:
        self.done += n
        self.frames += frames
        if resumed:
            self.resumed += n
        else:
            self.worked += n
        if failed:
            self.failed += n
        self.draw()

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self._start
        return self.worked / elapsed if elapsed > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        rate = self.rate
        return (self.total - self.done) / rate if rate > 0 else None

    def line(self, width: int = 100) -> str:
        pct = 100.0 * self.done / self.total if self.total else 100.0
        tail = (f" {self.done}/{self.total} ({pct:3.0f}%) {self.rate:5.1f} files/s "
                f"ETA {format_duration(self.eta_s)} elapsed {format_duration(time.monotonic() - self._start)}")
        extras = []
        if self.failed:
            extras.append(f"{self.failed} failed")
        if self.resumed:
            extras.append(f"{self.resumed} done before")
        if extras:
            tail += " · " + ", ".join(extras)
        bar_width = max(10, min(40, width - len(self.label) - len(tail) - 4))
        filled = int(bar_width * self.done / self.total) if self.total else bar_width
        return f"{self.label} [{'#' * filled}{'.' * (bar_width - filled)}]{tail}"

    def draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        interval = 0.2 if self.tty else self.log_every_s
        if not force and now - self._last_draw < interval and self.done < self.total:
            return
        self._last_draw = now
        line = self.line()
        if not self.tty and line == self._last_line:
            return
        self._last_line = line
        if self.tty:
            width = shutil.get_terminal_size((100, 20)).columns
            self.stream.write("\r" + self.line(width)[: width - 1].ljust(width - 1))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.draw(force=True)
            if self.tty:
                self.stream.write("\n")
                self.stream.flush()
