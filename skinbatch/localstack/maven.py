"""Jars from Maven Central, fetched once into the per-user cache: the Kafka broker's and HAPI FHIR's.

``mvn dependency:copy-dependencies`` on a POM shipped with skinbatch copies the runtime closure into
``<cache>/<name>-<version>/libs``. A marker holding the POM's digest is written last and the folder is
renamed into place in one step, so an interrupted download is redone and a later call with the same POM
returns at once without Maven. A file lock serialises two processes that fetch at the same time.
Maven's own settings (mirrors, proxies, ``~/.m2``) apply as usual.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from skinbatch._child import tail

try:  # POSIX only; elsewhere concurrent first downloads are simply not serialised.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

MARKER = ".skinbatch-complete"


@dataclass(frozen=True)
class Closure:
    """What to fetch, and how to speak of it in messages."""

    pom: str
    """The POM's text."""
    home: Path
    """``<cache>/<name>-<version>``: the POM, the lock and ``libs`` go there."""
    what: str
    """For people: ``the Kafka jars``, ``HAPI FHIR's validator``."""
    size: str
    """For the log: ``about 45 MB``."""
    expect: str
    """A glob that must match in the result, or the fetch failed (``kafka_*.jar``)."""


def pom_property(pom: str, name: str) -> str | None:
    """A ``<properties>`` entry of a POM (the version it pins), or None."""
    import xml.etree.ElementTree as ET

    node = ET.fromstring(pom).find(f"m:properties/m:{name}", {"m": "http://maven.apache.org/POM/4.0.0"})
    return ((node.text or "").strip() or None) if node is not None else None


def digest(pom: str) -> str:
    return hashlib.sha256(pom.encode("utf-8")).hexdigest()


def is_complete(libs: Path, pom_digest: str) -> bool:
    try:
        return (libs / MARKER).read_text(encoding="utf-8").strip() == pom_digest
    except OSError:
        return False


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialise first downloads between processes (e.g. two pytest sessions started together)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def fetch(closure: Closure, *, timeout_s: float, error: Callable[[str], Exception],
          check_java: Callable[[], object]) -> Path:
    """The ``libs`` folder of ``closure``, fetched with Maven unless already complete.

    ``error(message)`` makes the exception to raise (each caller has its own, with its exit code);
    ``check_java()`` raises that error when Maven's Java is missing, in plainer words than Maven's.
    """
    libs, pom_digest = closure.home / "libs", digest(closure.pom)
    if is_complete(libs, pom_digest):
        return libs
    with file_lock(closure.home / ".lock"):
        if is_complete(libs, pom_digest):  # another process finished while we waited for the lock
            return libs
        mvn = shutil.which("mvn")
        if not mvn:
            raise error(f"`mvn` (Apache Maven) was not found. It fetches {closure.what} once: install it "
                        "(Debian/Ubuntu: `apt-get install maven`) and try again.")
        check_java()
        _run_maven(mvn, closure, timeout_s, error)
        partial = closure.home / "libs.partial"
        (partial / MARKER).write_text(pom_digest + "\n", encoding="utf-8")
        shutil.rmtree(libs, ignore_errors=True)
        partial.rename(libs)  # atomic: readers see either no libs or complete ones
    return libs


def _run_maven(mvn: str, closure: Closure, timeout_s: float, error: Callable[[str], Exception]) -> None:
    home = closure.home
    (home / "pom.xml").write_text(closure.pom, encoding="utf-8")
    partial = home / "libs.partial"
    shutil.rmtree(partial, ignore_errors=True)
    command = [
        mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(home / "pom.xml"),
        "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={partial}",
    ]  # fmt: skip
    log.info("Fetching %s with Maven into %s (once, %s)", closure.what, home / "libs", closure.size)
    started = time.monotonic()
    try:
        result = subprocess.run(command, cwd=home, capture_output=True, text=True,  # noqa: S603 - Maven, our POM
                                timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise error(f"Maven did not finish fetching {closure.what} within {timeout_s:.0f} s. Check that the Maven "
                    "repository is reachable (`mvn help:effective-settings` shows mirrors and proxies).") from None
    if result.returncode != 0 or not any(partial.glob(closure.expect)):
        output = tail((result.stdout or "") + (result.stderr or ""), 40)
        raise error(f"Maven could not fetch {closure.what} (exit {result.returncode}). Command:\n"
                    f"  {' '.join(command)}\nLast lines of its output:\n{output}\n"
                    "Check network access to the Maven repository and your ~/.m2/settings.xml.")
    log.info("Fetched %s in %.1f s", closure.what, time.monotonic() - started)


__all__ = ["MARKER", "Closure", "digest", "fetch", "file_lock", "is_complete", "pom_property"]
