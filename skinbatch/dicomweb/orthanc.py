"""``LocalOrthanc``: Debian's Orthanc PACS with its DICOMweb plugin, as a child process on loopback.

    with LocalOrthanc() as pacs:                     # start() + wait_ready(); stop() + cleanup() on exit
        client = DicomWebClient(pacs.dicomweb_url)

For the demo and the system tests: a real archive that speaks QIDO-RS, WADO-RS and STOW-RS (DICOM
PS3.18). The JSON configuration is written into a temporary folder that also holds the storage and the
index; ports are picked once and kept, so ``stop()`` then ``start()`` serves the same archive on the
same URLs (a test can stop the archive for a while and bring it back with its data). The process
handling (ports, log, waiting, stop and kill, ``with``) is :class:`skinbatch._child.ChildServer`'s.

Install with ``apt-get install orthanc orthanc-dicomweb``. The packages' post-install tries to restart a
system service and may be refused; that is harmless, this class never uses the system service.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from skinbatch._child import ChildServer, Launch, http_status
from skinbatch.contract import ExitCode, SkinbatchError

PLUGIN_DIRS = (Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc/plugins"))
DICOMWEB_PLUGIN = "libOrthancDicomWeb.so"
DICOMWEB_ROOT = "/dicom-web/"


class OrthancNotInstalledError(SkinbatchError, RuntimeError):
    """The Orthanc binary or its DICOMweb plugin is missing."""

    exit_code = ExitCode.ENVIRONMENT


class OrthancStartError(SkinbatchError, RuntimeError):
    """Orthanc did not come up; the message carries the end of its log."""

    exit_code = ExitCode.START_FAILED


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
    verbose_http: bool = False
    """Run with ``--verbose-http``: Orthanc's log names every HTTP request it serves (for tests that check
    which requests reached the archive)."""


class LocalOrthanc(ChildServer):
    """One Orthanc process with the DICOMweb plugin, on loopback."""

    name = "Orthanc"
    # Orthanc logs like glog: "E0712 10:01:02.345678 MAIN ..." for an error.
    error_line: ClassVar[re.Pattern[str] | None] = re.compile(r"^E\d{4} ")
    work_dir_prefix = "skinbatch-orthanc-"

    def __init__(self, config: OrthancConfig | None = None) -> None:
        self.config = config or OrthancConfig()
        super().__init__(work_dir=self.config.work_dir, startup_timeout_s=self.config.startup_timeout_s,
                         stop_timeout_s=20.0)
        self._binary, self._plugin = find_orthanc()
        # Picked now, not at start(): the URLs are known before the archive runs.
        ports = self._ports_once({"http": self.config.http_port, "dicom": self.config.dicom_port})
        self._http_port, self._dicom_port = ports["http"], ports["dicom"]
        self._ensure_work_dir()

    # -- lifecycle ---------------------------------------------------------------------------
    def _prepare(self) -> Launch:
        work_dir = self._ensure_work_dir()
        config_path = work_dir / "orthanc.json"
        config_path.write_text(json.dumps(self._json_config(), indent=2))
        flags = ["--verbose-http"] if self.config.verbose_http else []
        return Launch([self._binary, *flags, str(config_path)], cwd=work_dir)

    def _is_ready(self) -> bool:
        return self._status("/system") == 200 and self._status(DICOMWEB_ROOT + "studies?limit=1") == 200

    def _exit_error(self, returncode: int) -> Exception:
        return OrthancStartError(f"Orthanc exited with {returncode}:\n{self.log_tail()}")

    def _timeout_error(self, timeout_s: float) -> Exception:
        return OrthancStartError(f"Orthanc did not answer within {timeout_s:.0f} s on port {self._http_port}:\n"
                                 f"{self.log_tail()}")

    # -- facts -------------------------------------------------------------------------------
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
        return self._ensure_work_dir()

    @property
    def log_path(self) -> Path:
        return self.work_dir / "orthanc.log"

    # -- internals ---------------------------------------------------------------------------
    def _json_config(self) -> dict[str, object]:
        cfg = self.config
        return {
            "Name": "skinbatch-local",
            "StorageDirectory": str(self.work_dir / "storage"),
            "IndexDirectory": str(self.work_dir / "storage"),
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
        request = urllib.request.Request(self.url + path)  # noqa: S310 - an http URL we build
        if self.config.users:
            user, password = next(iter(self.config.users.items()))
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        return http_status(request)
