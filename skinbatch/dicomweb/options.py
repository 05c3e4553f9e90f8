"""The DICOMweb archive's options, the same in every command that talks to an archive (``consume``,
``triage``): flags, help and ``SKINBATCH_DICOMWEB_*`` variables (docs/deploy.md, docs/pacs.md).

    @click.command()
    @dicomweb_options()              # -> dicomweb: DicomWebSettings | None (None without --dicomweb-url)
    def triage(dicomweb, ...): ...

``skinbatch consume`` keeps them flat in its config (:data:`DICOMWEB_OPTIONS` as fields) and builds the
same settings with :func:`dicomweb_settings`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

from skinbatch.contract import ConfigurationError
from skinbatch.settings import part_options, setting, settings_of, warn_on_command_line

if TYPE_CHECKING:
    from .client import DicomWebSettings

F = TypeVar("F", bound=Callable[..., Any])

@dataclass
class ArchiveSettings:
    """A DICOMweb archive (PACS, VNA): where it is, how to authenticate, how hard to use it."""

    dicomweb_url: str | None = setting("DICOMweb root of the PACS/VNA (QIDO-RS, WADO-RS, STOW-RS), "
                                       "e.g. https://pacs.example.org/dicom-web.", None)
    dicomweb_user: str | None = setting("User for HTTP basic authentication at the archive.", None)
    dicomweb_password: str | None = setting("Password for the archive.", None, secret=True)
    # Not secret=True: its file variant is --dicomweb-token-file below, re-read whenever it changes.
    dicomweb_token: str | None = setting("Fixed bearer token for the archive, instead of a user and password.",
                                         None, callback=warn_on_command_line, repr=False)
    dicomweb_token_file: str | None = setting("File with the archive's bearer token, re-read when it changes (a "
                                              "projected service-account token, a sidecar's output).", None)
    dicomweb_token_url: str | None = setting("OAuth2 token URL of the identity provider: client-credentials tokens "
                                             "for the archive, refreshed before they expire.", None)
    dicomweb_client_id: str | None = setting("OAuth2 client id (with --dicomweb-token-url).", None)
    dicomweb_client_secret: str | None = setting("OAuth2 client secret.", None, secret=True)
    dicomweb_scope: str | None = setting("OAuth2 scopes to ask for, space-separated.", None)
    dicomweb_audience: str | None = setting("OAuth2 audience (resource) to ask tokens for, where the issuer "
                                            "wants one.", None)
    dicomweb_ca: str | None = setting("CA bundle that signed the archive's certificate (an internal CA).", None)
    dicomweb_cert: str | None = setting("Client certificate for mutual TLS with the archive.", None)
    dicomweb_key: str | None = setting("Client key for mutual TLS with the archive (unencrypted PEM).", None)
    dicomweb_workers: int = setting("Concurrent HTTP requests to the archive (searches, retrievals, stores).", 4,
                                    type=click.IntRange(min=1))
    dicomweb_timeout_s: float = setting("Read timeout of one archive request, in seconds.", 60.0,
                                        type=click.FloatRange(min=0.1))
    store_results: bool = setting("Store a DICOM Structured Report with the scores of each instance retrieved "
                                  "from the archive back into its study (STOW-RS).", False, is_flag=True)

    def settings(self) -> DicomWebSettings | None:
        """``DicomWebSettings`` for the archive, or None without ``--dicomweb-url``; ConfigurationError
        naming the flags when they do not fit together."""
        if not self.dicomweb_url and self.store_results:
            raise ConfigurationError("--store-results needs --dicomweb-url: the reports are stored in that archive")
        values = {name: getattr(self, name) for name in DICOMWEB_FIELDS}
        try:
            return dicomweb_settings(values, read_timeout_s=self.dicomweb_timeout_s)
        except ConfigurationError:
            raise
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None


ARCHIVE_CONNECTION = tuple(s.name for s in settings_of(ArchiveSettings)
                           if s.name not in ("dicomweb_workers", "dicomweb_timeout_s", "store_results"))
"""Where the archive is and how to authenticate: what ``triage`` takes."""
DICOMWEB_OPTIONS = tuple(s for s in settings_of(ArchiveSettings) if s.name in ARCHIVE_CONNECTION)
DICOMWEB_FIELDS = ARCHIVE_CONNECTION


def dicomweb_settings(values: dict[str, Any], **kw: Any) -> DicomWebSettings | None:
    """Settings from option values (``dicomweb_*`` keys), None without a URL; ValueError (a
    ConfigurationError) when they do not fit together. ``kw``: timeouts."""
    from .auth import ArchiveTLS
    from .client import DicomWebSettings

    url = values.get("dicomweb_url")
    if not url:
        given = [f"--{k.replace('_', '-')}" for k in DICOMWEB_FIELDS if values.get(k)]
        if given:
            raise ValueError(f"{', '.join(given)} given without --dicomweb-url")
        return None
    tls = ArchiveTLS(ca=values.get("dicomweb_ca"), cert=values.get("dicomweb_cert"), key=values.get("dicomweb_key"))
    return DicomWebSettings.from_values(url, values.get("dicomweb_user"), values.get("dicomweb_password"),
                                        values.get("dicomweb_token"), tls=tls, oauth=_oauth_client(values),
                                        token_file=values.get("dicomweb_token_file"), **kw)


def _oauth_client(values: dict[str, Any]) -> Any:
    from .oauth import OAuthClient

    url, client_id = values.get("dicomweb_token_url"), values.get("dicomweb_client_id")
    secret = values.get("dicomweb_client_secret")  # --dicomweb-client-secret-file is read into it by click
    if not (url or client_id or secret):
        return None
    if not (url and client_id):
        raise ValueError("OAuth2 to the archive needs --dicomweb-token-url and --dicomweb-client-id")
    if not secret:
        raise ValueError("OAuth2 to the archive needs the client secret: --dicomweb-client-secret-file")
    return OAuthClient(url, client_id, secret, scope=values.get("dicomweb_scope"),
                       audience=values.get("dicomweb_audience"))


def dicomweb_options(help: str | None = None) -> Callable[[F], F]:
    """Add the archive's connection options; the command receives ``dicomweb: DicomWebSettings | None``."""
    first = {"help": help} if help else {}
    return part_options(ArchiveSettings, "dicomweb", ArchiveSettings.settings, required=False,
                        only=ARCHIVE_CONNECTION, dicomweb_url=first)


__all__ = ["ARCHIVE_CONNECTION", "DICOMWEB_FIELDS", "DICOMWEB_OPTIONS", "ArchiveSettings", "dicomweb_options",
           "dicomweb_settings"]
