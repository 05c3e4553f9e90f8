"""Token caching, refresh before expiry, failure reporting and backoff (pure: a fake issuer and clock)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from skinbatch.contract import ArchiveUnavailable
from skinbatch.dicomweb.oauth import ClientCredentials, OAuthClient, TokenFile, refresh_delay
from skinbatch.dicomweb.options import dicomweb_settings

CLIENT = OAuthClient("https://idp.example.org/token", "skinbatch", "s3cret")


class Issuer:
    def __init__(self) -> None:
        self.calls = 0
        self.down = False

    def __call__(self) -> dict[str, Any]:
        self.calls += 1
        if self.down:
            raise ConnectionError("refused")
        return {"access_token": f"t{self.calls}", "expires_in": 30}


def test_refresh_when_a_fifth_of_the_life_is_left() -> None:
    assert refresh_delay(30) == 24 and refresh_delay(3600) == 3540


def test_cached_then_refreshed_before_expiry_and_on_invalidate() -> None:
    now = [0.0]
    issuer = Issuer()
    tokens = ClientCredentials(CLIENT, clock=lambda: now[0], fetch=issuer)
    assert tokens.token() == "t1" and tokens.token() == "t1"
    now[0] = 24.5
    assert tokens.token() == "t2"
    tokens.invalidate("t2")
    assert tokens.token() == "t3" and issuer.calls == 3


def test_issuer_down_reported_once_retried_with_backoff_and_recovers() -> None:
    now = [0.0]
    issuer = Issuer()
    failures: list[str] = []
    states: list[bool] = []
    tokens = ClientCredentials(CLIENT, clock=lambda: now[0], fetch=issuer)
    tokens.on_failure, tokens.on_state = failures.append, states.append
    tokens.token()
    issuer.down = True
    now[0] = 25.0  # time to refresh, but the old token is valid until 30 s
    assert tokens.token() == "t1"
    now[0] = 25.5  # within the backoff: no call
    assert tokens.token() == "t1" and issuer.calls == 2
    now[0] = 31.0  # expired, and the issuer still down
    with pytest.raises(ArchiveUnavailable, match="OAuth2 issuer") as info:
        tokens.token()
    assert "s3cret" not in str(info.value)
    assert len(failures) == 2 and states == [False]
    issuer.down = False
    now[0] = 40.0
    assert tokens.token() == "t4" and states == [False, True]


def test_token_file_is_re_read_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first\n")
    source = TokenFile(str(path))
    assert source.token() == "first"
    path.write_text("second-longer\n")
    assert source.token() == "second-longer"


def test_oauth_options_need_url_id_and_one_secret(tmp_path: Path) -> None:
    # --dicomweb-client-secret-file is read into dicomweb_client_secret by the shared secret option
    # (tests/unit/connect/test_secret_files.py); the settings get the secret itself.
    base = {"dicomweb_url": "https://pacs/dicom-web", "dicomweb_token_url": "https://idp/token",
            "dicomweb_client_id": "c"}
    settings = dicomweb_settings({**base, "dicomweb_client_secret": "from-file", "dicomweb_audience": "a"})
    assert settings is not None and settings.auth_kind == "oauth2"
    assert settings.oauth is not None and settings.oauth.client_secret == "from-file"
    assert "from-file" not in repr(settings)
    with pytest.raises(ValueError, match="client secret"):
        dicomweb_settings(base)
    with pytest.raises(ValueError, match="one way"):
        dicomweb_settings({**base, "dicomweb_client_secret": "x", "dicomweb_user": "u"})
