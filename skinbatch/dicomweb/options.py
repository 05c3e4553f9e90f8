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
from typing import TYPE_CHECKING, Any, TypeVar

import click

from skinbatch.connect.options import OptionSpec, _folded, warn_on_command_line

if TYPE_CHECKING:
    from .client import DicomWebSettings

F = TypeVar("F", bound=Callable[..., Any])

DICOMWEB_OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec("dicomweb_url", "DICOMweb root of the PACS/VNA (QIDO-RS, WADO-RS, STOW-RS), "
               "e.g. https://pacs.example.org/dicom-web."),
    OptionSpec("dicomweb_user", "User for HTTP basic authentication at the archive."),
    OptionSpec("dicomweb_password", "Password for the archive.", secret=True),
    # Not secret=True: its file variant is --dicomweb-token-file below, re-read whenever it changes.
    OptionSpec("dicomweb_token", "Fixed bearer token for the archive, instead of a user and password.",
               (("callback", warn_on_command_line),)),
    OptionSpec("dicomweb_token_file", "File with the archive's bearer token, re-read when it changes (a "
               "projected service-account token, a sidecar's output)."),
    OptionSpec("dicomweb_token_url", "OAuth2 token URL of the identity provider: client-credentials tokens "
               "for the archive, refreshed before they expire."),
    OptionSpec("dicomweb_client_id", "OAuth2 client id (with --dicomweb-token-url)."),
    OptionSpec("dicomweb_client_secret", "OAuth2 client secret.", secret=True),
    OptionSpec("dicomweb_scope", "OAuth2 scopes to ask for, space-separated."),
    OptionSpec("dicomweb_audience", "OAuth2 audience (resource) to ask tokens for, where the issuer wants one."),
    OptionSpec("dicomweb_ca", "CA bundle that signed the archive's certificate (an internal CA)."),
    OptionSpec("dicomweb_cert", "Client certificate for mutual TLS with the archive."),
    OptionSpec("dicomweb_key", "Client key for mutual TLS with the archive (unencrypted PEM)."),
)
DICOMWEB_FIELDS = tuple(spec.name for spec in DICOMWEB_OPTIONS)


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


def _build(values: dict[str, Any]) -> DicomWebSettings | None:
    try:
        return dicomweb_settings(values)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def dicomweb_options(help: str | None = None) -> Callable[[F], F]:
    """Add the archive options; the command receives ``dicomweb: DicomWebSettings | None``."""
    return _folded(DICOMWEB_OPTIONS, "dicomweb", _build, False, help)


__all__ = ["DICOMWEB_FIELDS", "DICOMWEB_OPTIONS", "dicomweb_options", "dicomweb_settings"]
