"""``LocalOrthanc``: Debian's Orthanc PACS with its DICOMweb plugin, as a child process on loopback.

    with LocalOrthanc() as pacs:                     # start() + wait_ready(); stop() + cleanup() on exit
        client = DicomWebClient(pacs.dicomweb_url)

For the demo and the system tests: a real archive that speaks QIDO-RS, WADO-RS and STOW-RS (DICOM
PS3.18). The JSON configuration is written into a temporary folder that also holds the storage and the
index; ports are picked once and kept, so ``stop()`` then ``start()`` serves the same archive on the
same URLs (a test can stop the archive for a while and bring it back with its data).

Install with ``apt-get install orthanc orthanc-dicomweb``. The packages' post-install tries to restart a
system service and may be refused; that is harmless, this class never uses the system service.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

LOGGER = logging.getLogger(__name__)

PLUGIN_DIRS = (Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc/plugins"))
DICOMWEB_PLUGIN = "libOrthancDicomWeb.so"
DICOMWEB_ROOT = "/dicom-web/"


class OrthancNotInstalledError(RuntimeError):
    """The Orthanc binary or its DICOMweb plugin is missing."""


class OrthancStartError(RuntimeError):
    """Orthanc did not come up; the message carries the end of its log."""


def find_orthanc() -> tuple[str, Path]:
    """The Orthanc executable and the DICOMweb plugin, or ``OrthancNotInstalledError`` saying what to install."""
    binary = shutil.which("Orthanc") or next((p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc")
                                              if os.access(p, os.X_OK)), None)
    plugin = next((d / DICOMWEB_PLUGIN for d in PLUGIN_DIRS if (d / DICOMWEB_PLUGIN).is_file()), None)
    missing = [name for name, found in (("orthanc", binary), ("orthanc-dicomweb", plugin)) if not found]
    if missing:
        raise OrthancNotInstalledError(
            f"needs Debian's {' and '.join(missing)}: run `apt-get install orthanc orthanc-dicomweb`")
    assert binary is not None and plugin is not None
    return binary, plugin


@dataclass
class OrthancConfig:
    http_port: int = 0
    """0: a free loopback port, picked at the first start and kept."""
    dicom_port: int = 0
    users: dict[str, str] = field(default_factory=dict, repr=False)
    """HTTP basic-auth users; empty disables authentication."""
    work_dir: Path | None = None
    """Storage, index, configuration and log; a temporary folder when None (removed by ``cleanup``)."""
    startup_timeout_s: float = 60.0
    overwrite_instances: bool = False
    """Orthanc's ``OverwriteInstances``: False keeps the first copy of a SOP Instance UID stored twice."""


class LocalOrthanc:
    """One Orthanc process with the DICOMweb plugin, on loopback."""

    def __init__(self, config: OrthancConfig | None = None) -> None:
        self.config = config or OrthancConfig()
        self._binary, self._plugin = find_orthanc()
        self._owns_dir = self.config.work_dir is None
        self._dir = Path(self.config.work_dir or tempfile.mkdtemp(prefix="skinbatch-orthanc-"))
        self._http_port = self.config.http_port or _free_port()
        self._dicom_port = self.config.dicom_port or _free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self.is_running:
            return
        self._dir.mkdir(parents=True, exist_ok=True)
        config_path = self._dir / "orthanc.json"
        config_path.write_text(json.dumps(self._json_config(), indent=2))
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed when the process ends
        try:
            self._proc = subprocess.Popen([self._binary, str(config_path)], stdout=log, stderr=subprocess.STDOUT,
                                          cwd=self._dir, start_new_session=True)
        finally:
            log.close()

    def wait_ready(self, timeout: float | None = None) -> float:
        """Seconds until the DICOMweb root answers; raises ``OrthancStartError`` with the log otherwise."""
        started = time.monotonic()
        deadline = started + (timeout or self.config.startup_timeout_s)
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise OrthancStartError(f"Orthanc exited with {self._proc.returncode}:\n{self.logs()[-3000:]}")
            if self._status("/system") == 200 and self._status(DICOMWEB_ROOT + "studies?limit=1") == 200:
                return time.monotonic() - started
            time.sleep(0.1)
        raise OrthancStartError(f"Orthanc did not answer within {timeout or self.config.startup_timeout_s:.0f} s "
                                f"on port {self._http_port}:\n{self.logs()[-3000:]}")

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the storage stays for the next ``start()``."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        code = self._proc.returncode
        self._proc = None
        return code

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)
        self._proc = None

    def cleanup(self) -> None:
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> LocalOrthanc:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cleanup()

    # -- facts -------------------------------------------------------------------------------
    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http_port}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb root, without a trailing slash (as dicomweb-client wants it)."""
        return self.url + DICOMWEB_ROOT.rstrip("/")

    @property
    def http_port(self) -> int:
        return self._http_port

    @property
    def work_dir(self) -> Path:
        return self._dir

    @property
    def log_path(self) -> Path:
        return self._dir / "orthanc.log"

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- internals ---------------------------------------------------------------------------
    def _json_config(self) -> dict[str, object]:
        cfg = self.config
        return {
            "Name": "skinbatch-local",
            "StorageDirectory": str(self._dir / "storage"),
            "IndexDirectory": str(self._dir / "storage"),
            "HttpPort": self._http_port,
            "DicomPort": self._dicom_port,
            "DicomAet": "SKINBATCH",
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(cfg.users),
            "RegisteredUsers": dict(cfg.users),
            "OverwriteInstances": cfg.overwrite_instances,
            "HttpTimeout": 60,
            "Plugins": [str(self._plugin)],
            "DicomWeb": {"Enable": True, "Root": DICOMWEB_ROOT, "EnableWado": False},
        }

    def _status(self, path: str) -> int | None:
        request = urllib.request.Request(self.url + path)
        if self.config.users:
            user, password = next(iter(self.config.users.items()))
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310 - loopback only
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except (OSError, ValueError):
            return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
