"""The one Triton URL parser every command uses."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from skinbatch.connect.triton import ACCEPTED_FORMS, TritonEndpoint, TritonTLS, parse_triton_url
from skinbatch.contract import ConfigurationError


@pytest.mark.parametrize(("url", "protocol", "tls", "host", "port", "path"), [
    ("triton:8001", "grpc", False, "triton", 8001, ""),
    ("triton", "grpc", False, "triton", 8001, ""),
    ("10.0.0.5:9001", "grpc", False, "10.0.0.5", 9001, ""),
    ("grpc://triton", "grpc", False, "triton", 8001, ""),
    ("grpcs://triton.example.org", "grpc", True, "triton.example.org", 8001, ""),
    ("grpcs://triton:443", "grpc", True, "triton", 443, ""),
    ("http://triton", "http", False, "triton", 8000, ""),
    ("http://triton:8000/", "http", False, "triton", 8000, ""),
    ("HTTPS://triton", "http", True, "triton", 8000, ""),
    ("https://gateway.example.org:8443/triton/", "http", True, "gateway.example.org", 8443, "/triton"),
    ("http://[::1]:8000", "http", False, "::1", 8000, ""),
    ("[::1]:8001", "grpc", False, "::1", 8001, ""),
])
def test_accepted_forms(url: str, protocol: str, tls: bool, host: str, port: int, path: str) -> None:
    assert parse_triton_url(url) == TritonEndpoint(protocol, tls, host, port, path)  # type: ignore[arg-type]


@pytest.mark.parametrize(("url", "why"), [
    ("", "empty"),
    ("ftp://triton:21", "unknown scheme"),
    ("triton:99999", "port"),
    ("triton:0", "port"),
    ("grpc://triton:8001/v2", "no path"),
    ("http://user:pw@triton:8000", "password"),
    ("http://triton:8000?x=1", "query"),
    ("http://:8000", "host"),
    ("grpc://tri ton:8001", "host"),
])
def test_anything_else_is_a_usage_error_that_lists_the_forms(url: str, why: str) -> None:
    with pytest.raises(ConfigurationError, match=why) as info:
        parse_triton_url(url)
    assert ACCEPTED_FORMS in str(info.value)


def test_address_is_what_tritonclient_takes() -> None:
    assert parse_triton_url("https://g.example.org:8443/triton").address == "g.example.org:8443/triton"
    assert parse_triton_url("[::1]").address == "[::1]:8001"
    assert parse_triton_url("grpcs://t").url == "grpcs://t:8001"


@given(st.sampled_from(["grpc", "grpcs", "http", "https"]), st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True),
       st.integers(1, 65535))
def test_canonical_url_parses_back_to_the_same_endpoint(scheme: str, host: str, port: int) -> None:
    endpoint = parse_triton_url(f"{scheme}://{host}:{port}")
    assert parse_triton_url(endpoint.url) == endpoint


def test_tls_files_without_a_tls_url_are_refused(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    with pytest.raises(ConfigurationError, match="grpcs://triton:8001"):
        TritonTLS(ca=str(ca)).check(parse_triton_url("triton:8001"))
    with pytest.raises(ConfigurationError, match="https://triton:8000"):
        TritonTLS(ca=str(ca)).check(parse_triton_url("http://triton"))
    with pytest.raises(ConfigurationError, match="go together"):
        TritonTLS(cert=str(ca)).check(parse_triton_url("grpcs://triton"))
    with pytest.raises(ConfigurationError, match="no such file"):
        TritonTLS(ca=str(tmp_path / "missing")).check(parse_triton_url("grpcs://triton"))
    TritonTLS(ca=str(ca)).check(parse_triton_url("grpcs://triton"))
    assert TritonTLS(ca=str(ca)).grpc_kwargs(parse_triton_url("grpcs://t"))["ssl"] is True
    assert TritonTLS().grpc_kwargs(parse_triton_url("grpc://t")) == {}
