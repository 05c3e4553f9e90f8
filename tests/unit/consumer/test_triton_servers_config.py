"""--triton-url with several servers, and --triton-discovery."""

from __future__ import annotations

import pytest

from skinbatch.consumer.config import ConsumerConfig
from skinbatch.contract import ConfigurationError


def test_a_comma_separated_list_names_several_servers() -> None:
    config = ConsumerConfig.from_values(bootstrap_servers="k:9092", triton_url="grpc://a:8001, grpc://b:8001")
    assert [t.endpoint.netloc for t in config.triton_targets()] == ["a:8001", "b:8001"]
    assert config.triton.several()
    assert not ConsumerConfig.from_values(bootstrap_servers="k:9092", triton_url="grpc://a:8001").triton.several()


def test_dns_discovery_takes_one_plain_url() -> None:
    config = ConsumerConfig.from_values(bootstrap_servers="k:9092", triton_url="grpc://triton-headless:8001",
                            triton_discovery="dns")
    assert config.triton.several()
    config.validate()
    with pytest.raises(ConfigurationError, match="one plain"):
        ConsumerConfig.from_values(bootstrap_servers="k:9092", triton_url="grpc://a:8001,grpc://b:8001",
                       triton_discovery="dns").validate()


def test_a_bad_url_in_the_list_is_named() -> None:
    with pytest.raises(ConfigurationError, match="ftp"):
        ConsumerConfig.from_values(bootstrap_servers="k:9092", triton_url="grpc://a:8001,ftp://b").validate()
