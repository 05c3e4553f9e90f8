"""ScorerPool's choices, with fakes of the one-server client only: spreading, skipping a server that is
down and using it again, shared memory registered per server, and servers that serve another version."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from skinbatch.connect.triton import TritonEndpoint, parse_triton_url
from skinbatch.contract import ServedModelChanged, TritonUnavailable
from skinbatch.scoring.servers import OTHER_VERSION, ScorerPool, merged_statistics, resolve_addresses


@dataclass
class FakeCard:
    version: str

    def model_summary(self) -> dict[str, Any]:
        return {"name": "m", "version": self.version}


@dataclass
class FakeTransport:
    regions: dict[str, int] = field(default_factory=dict)
    refuse: bool = False

    def register_shm(self, region: str, key: str, byte_size: int, timeout_s: float) -> None:
        if self.refuse:
            raise TritonUnavailable("down")
        self.regions[region] = byte_size

    def unregister_shm(self, region: str, timeout_s: float) -> None:
        if self.refuse:
            raise TritonUnavailable("down")
        self.regions.pop(region, None)


class FakeServer:
    """One Triton: answers with its version, or fails while ``down``."""

    def __init__(self, endpoint: TritonEndpoint, version: str = "1") -> None:
        self.endpoint = endpoint
        self.version = version
        self.down = False
        self.calls = 0
        self.timeout_s = 30.0
        self.transport = FakeTransport()

    def is_ready(self) -> bool:
        return not self.down

    def load_card(self) -> FakeCard:
        if self.down:
            raise TritonUnavailable("down")
        return FakeCard(self.version)

    def infer_async(self, images: Any, callback: Any, *, with_map: bool = False) -> None:
        self.calls += 1
        if self.down:
            callback(None, TritonUnavailable("connection refused"))
        elif self.version != "1":
            callback(None, ServedModelChanged("m", self.version, "1"))
        else:
            callback([f"scores from {self.endpoint.host}"], None)

    def statistics(self) -> dict[str, Any]:
        return {"model_stats": [{"name": "x", "inference_count": 4, "execution_count": 2}]}

    def close(self) -> None:
        pass


def _pool(n: int = 2) -> tuple[ScorerPool, dict[str, FakeServer]]:
    endpoints = [parse_triton_url(f"grpc://10.0.0.{i + 1}:8001") for i in range(n)]
    servers: dict[str, FakeServer] = {}

    def make(endpoint: TritonEndpoint) -> Any:
        servers[endpoint.host] = FakeServer(endpoint)
        return servers[endpoint.host]

    pool = ScorerPool(lambda: endpoints, make, probe_every_s=3600)
    assert pool.is_ready()
    pool.load_card()
    return pool, servers


def _score(pool: ScorerPool) -> tuple[Any, Exception | None]:
    out: dict[str, Any] = {}
    pool.infer_async(np.zeros((1, 2, 2, 3), np.uint8), lambda s, e: out.update(scores=s, error=e))
    return out["scores"], out["error"]


def test_requests_are_spread_over_the_servers() -> None:
    pool, servers = _pool(2)
    for _ in range(10):
        assert _score(pool)[1] is None
    assert [s.calls for s in servers.values()] == [5, 5]


def test_a_server_that_is_down_is_skipped_and_used_again_when_back() -> None:
    pool, servers = _pool(2)
    a, b = servers["10.0.0.1"], servers["10.0.0.2"]
    a.down = True
    results = [_score(pool) for _ in range(6)]
    assert all(error is None for _, error in results)  # the failed request went to b at once
    assert pool.states() == {a.endpoint.url: "down", b.endpoint.url: "up"}
    assert a.calls == 1
    a.down = False
    pool.probe()
    assert pool.states()[a.endpoint.url] == "up"
    before = a.calls
    for _ in range(4):
        _score(pool)
    assert a.calls > before


def test_the_caller_hears_of_a_failure_only_when_every_server_is_down() -> None:
    pool, servers = _pool(2)
    for server in servers.values():
        server.down = True
    scores, error = _score(pool)
    assert scores is None and isinstance(error, TritonUnavailable)
    assert not pool.is_ready()


def test_shared_memory_is_registered_on_every_server_and_again_on_one_that_comes_back() -> None:
    pool, servers = _pool(2)
    a, b = servers["10.0.0.1"], servers["10.0.0.2"]
    pool.transport.register_shm("region", "/key", 1024, 1.0)
    assert a.transport.regions == b.transport.regions == {"region": 1024}
    a.down = True
    _score(pool)
    _score(pool)
    a.transport.regions.clear()  # a restarted Triton has no regions
    a.down = False
    pool.probe()
    assert a.transport.regions == {"region": 1024}
    pool.transport.unregister_shm("region", 1.0)
    assert a.transport.regions == b.transport.regions == {}


def test_during_a_rollout_a_server_with_another_version_is_set_aside() -> None:
    pool, servers = _pool(2)
    a, b = servers["10.0.0.1"], servers["10.0.0.2"]
    a.version = "2"  # rolled out first
    results = [_score(pool) for _ in range(4)]
    assert all(error is None for _, error in results)
    assert pool.states()[a.endpoint.url] == OTHER_VERSION
    b.version = "2"  # the rollout is over: now the consumer must restart with the new card
    scores, error = _score(pool)
    assert scores is None and isinstance(error, ServedModelChanged)


def test_a_server_serving_the_card_again_is_used_again() -> None:
    pool, servers = _pool(2)
    a = servers["10.0.0.1"]
    a.version = "2"
    for _ in range(3):
        _score(pool)
    a.version = "1"  # rolled back
    pool.probe()
    assert pool.states()[a.endpoint.url] == "up"


def test_load_card_keeps_the_adopted_card_while_some_server_serves_it() -> None:
    pool, servers = _pool(2)
    servers["10.0.0.1"].version = "2"
    assert pool.load_card().version == "1"
    servers["10.0.0.2"].version = "2"
    assert pool.load_card().version == "2"  # ModelWatch reports the change: nobody serves "1" any more


def test_dns_names_become_one_server_per_address() -> None:
    endpoint = parse_triton_url("grpc://triton-headless:8001")

    def lookup(host: str, port: int, type: int = 0) -> list[Any]:  # noqa: A002 - getaddrinfo's name
        return [(2, 1, 6, "", ("10.1.0.7", port)), (2, 1, 6, "", ("10.1.0.5", port)), (2, 1, 6, "", ("10.1.0.7", port))]

    assert [e.netloc for e in resolve_addresses(endpoint, lookup)] == ["10.1.0.5:8001", "10.1.0.7:8001"]


def test_servers_that_appear_and_vanish_in_dns() -> None:
    names = [[parse_triton_url("grpc://10.0.0.1:8001")]]
    pool = ScorerPool(lambda: names[0], lambda e: FakeServer(e), probe_every_s=3600, resolve_every_s=0)  # type: ignore[arg-type,return-value]
    names[0] = [parse_triton_url("grpc://10.0.0.2:8001")]
    pool.probe()
    assert list(pool.states()) == ["grpc://10.0.0.2:8001"]


def test_statistics_are_summed_per_model() -> None:
    merged = merged_statistics([{"model_stats": [{"name": "x", "inference_count": 4, "execution_count": 2}]},
                                {"model_stats": [{"name": "x", "inference_count": 6, "execution_count": 1}]}])
    assert merged == {"model_stats": [{"name": "x", "inference_count": 10, "execution_count": 3}]}


def test_an_empty_list_is_refused() -> None:
    with pytest.raises(TritonUnavailable, match="no Triton server"):
        ScorerPool(lambda: [], lambda e: FakeServer(e))  # type: ignore[arg-type,return-value]


def test_a_fresh_pool_reads_the_card_without_being_asked_whether_it_is_ready() -> None:
    endpoints = [parse_triton_url("grpc://10.0.0.1:8001")]
    pool = ScorerPool(lambda: endpoints, lambda e: FakeServer(e), probe_every_s=3600)  # type: ignore[arg-type,return-value]
    assert pool.load_card().version == "1"  # ModelWatch's first look
