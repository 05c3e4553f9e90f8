"""Several Triton servers behind one scorer: requests spread per server, a server that is down skipped.

:class:`ScorerPool` stands where a :class:`~skinbatch.scoring.client.TritonScorer` stands (the scoring
pipeline, the consumer's model watch) and keeps one ``TritonScorer`` per server. It spreads requests
itself, to the up server with the fewest requests outstanding, and not with gRPC's round robin: shared
memory is registered on each server separately, so each request must go to a server that holds the
region it names.

* **Servers**: a list of URLs (``--triton-url a:8001,b:8001``), or the addresses one DNS name resolves to
  (``--triton-discovery dns``; in Kubernetes a headless Service such as compose/k8s's ``triton``), resolved again
  every ``resolve_every_s``.
* **Faults**: a request that fails on one server marks it down and goes to the next up server at once;
  the pipeline hears of a failure only when no server is left. A thread probes down servers every
  ``probe_every_s``; one that answers again gets the shared-memory regions registered again (a restarted
  Triton is a new process without them) before it takes work.
* **Rollouts** (servers briefly serve different versions): the pool serves one model card, the one it
  adopted first. A server whose card (or an answer's version) differs is set aside as ``other_version``
  and its batch goes to a server that still serves the card; nothing is ever named after the wrong
  model. Only when no server serves the card any more does the pipeline hear
  :class:`~skinbatch.contract.ServedModelChanged`, and the consumer exits 9 as with one server; its
  restart adopts the new card. A server set aside that serves the card again (a rollback) is used again.

Thread-safe: the pipeline's loop, the client libraries' callback threads and the probe thread share it.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from skinbatch.connect.triton import TritonEndpoint
from skinbatch.contract import ENSEMBLE, ServedModelChanged, TritonUnavailable
from skinbatch.modelcard import ModelCard

from .client import ScoresCallback, TritonScorer
from .scores import Scores
from .transport import Images, TritonTLSError

log = logging.getLogger("skinbatch.scoring")

UP, DOWN, OTHER_VERSION = "up", "down", "other_version"


def resolve_addresses(endpoint: TritonEndpoint,
                      lookup: Callable[..., Sequence[Any]] = socket.getaddrinfo) -> list[TritonEndpoint]:
    """One endpoint per address the endpoint's host name resolves to (sorted, no duplicates)."""
    try:
        infos = lookup(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        log.warning("cannot resolve the Triton name", extra={"event": "triton_dns", "error": str(exc)})
        return []
    addresses = sorted({str(info[4][0]) for info in infos})
    return [replace(endpoint, host=address) for address in addresses]


def merged_statistics(stats: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Inference counters of several servers, summed per model (ModelWatch's average batch). Pure."""
    totals: dict[str, dict[str, int]] = {}
    for one in stats:
        for model in one.get("model_stats", []):
            entry = totals.setdefault(model.get("name", ""), {"inference_count": 0, "execution_count": 0})
            entry["inference_count"] += int(model.get("inference_count", 0))
            entry["execution_count"] += int(model.get("execution_count", 0))
    return {"model_stats": [{"name": name, **counts} for name, counts in totals.items()]}


@dataclass(eq=False)
class _Server:
    endpoint: TritonEndpoint
    scorer: TritonScorer
    state: str = DOWN
    outstanding: int = 0
    since: float = field(default_factory=time.monotonic)
    gone: bool = False
    """Its address no longer resolves: no new work."""


@dataclass(frozen=True)
class _Region:
    name: str
    key: str
    byte_size: int


class _FanOut:
    """The pool's ``transport`` for shared memory: a region is registered on every server."""

    def __init__(self, pool: ScorerPool) -> None:
        self._pool = pool

    def register_shm(self, region: str, key: str, byte_size: int, timeout_s: float) -> None:
        self._pool.register_region(_Region(region, key, byte_size), timeout_s)

    def unregister_shm(self, region: str, timeout_s: float) -> None:
        self._pool.unregister_region(region, timeout_s)


class ScorerPool:
    """Scores on several Triton servers, as one :class:`TritonScorer` would."""

    def __init__(self, endpoints: Callable[[], list[TritonEndpoint]],
                 make_scorer: Callable[[TritonEndpoint], TritonScorer], *, model: str = ENSEMBLE,
                 probe_every_s: float = 1.0, resolve_every_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``endpoints()``: the servers now (a fixed list, or a DNS lookup); ``make_scorer``: a client for one."""
        self.model = model
        self._endpoints = endpoints
        self._make = make_scorer
        self.probe_every_s, self.resolve_every_s = probe_every_s, resolve_every_s
        self._clock = clock
        self._lock = threading.RLock()
        self._probing = threading.Lock()
        self._servers: dict[TritonEndpoint, _Server] = {}
        self._regions: dict[str, _Region] = {}
        self._card: ModelCard | None = None
        self._next = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._resolved_at = float("-inf")
        self.transport = _FanOut(self)
        self._refresh()
        if not self._servers:
            raise TritonUnavailable("no Triton server: the list is empty, or the name resolves to no address")
        self.timeout_s = next(iter(self._servers.values())).scorer.timeout_s

    # -- what the pipeline and the consumer read --------------------------------------------------------
    @property
    def url(self) -> str:
        return ",".join(s.endpoint.url for s in self._servers.values())

    def states(self) -> dict[str, str]:
        """Each server's state (``up``, ``down``, ``other_version``), by URL."""
        with self._lock:
            return {s.endpoint.url: s.state for s in self._servers.values() if not s.gone}

    @property
    def card(self) -> ModelCard:
        if self._card is None:
            return self.load_card()
        return self._card

    def is_ready(self) -> bool:
        """Some server serves the card (any server answers, before a card is adopted). Probes at once when
        none is up."""
        if not self._up():
            self.probe()
        return bool(self._up())

    def load_card(self) -> ModelCard:
        """The card the pool serves: the adopted one while some server still serves it (a newer copy, if its
        card was updated in place), else the card a live server serves now (a rollout finished)."""
        cards: list[ModelCard] = []
        error: Exception | None = None
        if not self._live():
            self.probe()
        for server in self._live():
            try:
                cards.append(server.scorer.load_card())
            except TritonUnavailable as exc:
                error = exc
                self._mark(server, DOWN, exc)
        if not cards:
            raise error or TritonUnavailable(f"no Triton server answers ({self.url})")
        with self._lock:
            current = self._card
            same = [c for c in cards if current is not None and c.model_summary() == current.model_summary()]
            chosen = same[0] if same else cards[0]
            if current is None:
                self._card = chosen
                self._settle_versions()
            elif same:
                self._card = chosen
        return chosen

    # -- inference --------------------------------------------------------------------------------------
    def infer_async(self, images: Images, callback: ScoresCallback, *, with_map: bool = False) -> None:
        """Score a batch on the least busy up server; on failure, on the next; ``callback`` once."""
        self._attempt(images, callback, with_map, tried=set(), last=None)

    def infer(self, images: Images, *, with_map: bool = False) -> list[Scores]:
        done = threading.Event()
        box: dict[str, Any] = {}

        def callback(scores: list[Scores] | None, error: Exception | None) -> None:
            box.update(scores=scores, error=error)
            done.set()

        self.infer_async(images, callback, with_map=with_map)
        done.wait()
        if box["error"] is not None:
            raise box["error"]
        return box["scores"]

    def _attempt(self, images: Images, callback: ScoresCallback, with_map: bool, tried: set[_Server],
                 last: Exception | None) -> None:
        server = self._choose(tried)
        if server is None:
            callback(None, last or TritonUnavailable(f"no Triton server is up ({self.url})"))
            return
        tried.add(server)

        def done(scores: list[Scores] | None, error: Exception | None) -> None:
            with self._lock:
                server.outstanding -= 1
            if error is None:
                callback(scores, None)
                return
            self._mark(server, OTHER_VERSION if isinstance(error, ServedModelChanged) else DOWN, error)
            if isinstance(error, ServedModelChanged) and not self._up():
                callback(None, error)  # nobody serves the card any more: the rollout is over
                return
            self._attempt(images, callback, with_map, tried, error)

        try:
            server.scorer.infer_async(images, done, with_map=with_map)
        except Exception as exc:  # noqa: BLE001 - a client that cannot even send: that server is down
            done(None, exc)

    def _choose(self, tried: set[_Server]) -> _Server | None:
        with self._lock:
            up = [s for s in self._servers.values() if s.state == UP and not s.gone and s not in tried]
            if not up:
                return None
            self._next += 1
            least = min(s.outstanding for s in up)
            candidates = [s for s in up if s.outstanding == least]
            server = candidates[self._next % len(candidates)]
            server.outstanding += 1
            return server

    # -- shared memory ----------------------------------------------------------------------------------
    def register_region(self, region: _Region, timeout_s: float) -> None:
        """Register on every up server; a server that cannot is marked down (and tried again later)."""
        with self._lock:
            self._regions[region.name] = region
        registered = 0
        last: Exception | None = None
        for server in self._live():
            try:
                self._register(server, region, timeout_s)
                registered += 1
            except TritonUnavailable as exc:
                last = exc
                self._mark(server, DOWN, exc)
        if not registered:
            raise last or TritonUnavailable(f"no Triton server is up to register shared memory ({self.url})")

    def unregister_region(self, name: str, timeout_s: float) -> None:
        """Unregister on every live server; "in use" from any is raised (the caller asks again)."""
        with self._lock:
            self._regions.pop(name, None)
        busy: Exception | None = None
        for server in self._live():
            try:
                server.scorer.transport.unregister_shm(name, timeout_s)
            except TritonUnavailable as exc:
                if "in use" in str(exc):
                    busy = exc
        if busy is not None:
            raise busy

    @staticmethod
    def _register(server: _Server, region: _Region, timeout_s: float) -> None:
        transport = server.scorer.transport
        try:
            transport.unregister_shm(region.name, timeout_s)  # a stale registration of ours, after a restart
        except TritonUnavailable:
            pass
        transport.register_shm(region.name, region.key, region.byte_size, timeout_s)

    # -- server states ----------------------------------------------------------------------------------
    def _live(self) -> list[_Server]:
        with self._lock:
            return [s for s in self._servers.values() if s.state != DOWN and not s.gone]

    def _up(self) -> list[_Server]:
        with self._lock:
            return [s for s in self._servers.values() if s.state == UP and not s.gone]

    def _mark(self, server: _Server, state: str, error: BaseException | None = None) -> None:
        with self._lock:
            if server.state == state:
                return
            was, server.state, server.since = server.state, state, self._clock()
        level = logging.INFO if state == UP else logging.WARNING
        log.log(level, "Triton server %s: %s -> %s", server.endpoint.url, was, state,
                extra={"event": "triton_server", "url": server.endpoint.url, "state": state,
                       "error": None if error is None else str(error)[:200]})

    def _settle_versions(self) -> None:
        """After a card was adopted: servers already up that serve another card are set aside."""
        for server in self._up():
            self._check_card(server)

    def _check_card(self, server: _Server) -> bool:
        card = self._card
        if card is None:
            return True
        served = server.scorer.load_card()
        if served.model_summary() != card.model_summary():
            self._mark(server, OTHER_VERSION, ServedModelChanged(self.model, served.version, card.version))
            return False
        return True

    def probe(self) -> None:
        """Probe every server that is not up: ready, serving the card, regions registered -> up."""
        if not self._probing.acquire(blocking=False):
            return
        try:
            if self._clock() - self._resolved_at >= self.resolve_every_s:
                self._refresh()
            with self._lock:
                waiting = [s for s in self._servers.values() if s.state != UP and not s.gone]
            for server in waiting:
                self._probe_one(server)
        finally:
            self._probing.release()

    def _probe_one(self, server: _Server) -> None:
        try:
            if not server.scorer.is_ready() or not self._check_card(server):
                return
            with self._lock:
                regions = list(self._regions.values())
            for region in regions:
                self._register(server, region, 5.0)
        except TritonTLSError:
            raise
        except TritonUnavailable:
            return
        self._mark(server, UP)

    def _refresh(self) -> None:
        """Add servers that appeared (they start down and are probed), retire those that are gone."""
        self._resolved_at = self._clock()
        now = self._endpoints()
        if not now:
            return  # a failed lookup is not "every server is gone": keep what there is
        with self._lock:
            for endpoint in now:
                server = self._servers.get(endpoint)
                if server is None:
                    self._servers[endpoint] = _Server(endpoint, self._make(endpoint))
                else:
                    server.gone = False
            for endpoint, server in self._servers.items():
                if endpoint not in now:
                    server.gone = True

    # -- the probe thread -------------------------------------------------------------------------------
    def start(self) -> ScorerPool:
        """Start probing down servers in the background (the pipeline also probes when all are down)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="triton-probe", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.probe_every_s):
            try:
                self.probe()
            except Exception as exc:  # noqa: BLE001 - the thread must outlive one bad probe
                log.warning("probing Triton servers failed", extra={"event": "triton_probe", "error": str(exc)})

    def statistics(self) -> dict[str, Any]:
        """Inference statistics summed over the servers that answer."""
        stats = []
        for server in self._up():
            try:
                stats.append(server.scorer.statistics())
            except TritonUnavailable:
                continue
        return merged_statistics(stats)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            servers = list(self._servers.values())
        for server in servers:
            server.scorer.close()


AnyScorer = TritonScorer | ScorerPool
"""What the pipeline, the consumer and the model watch score with: one server, or several."""

__all__ = ["OTHER_VERSION", "AnyScorer", "ScorerPool", "merged_statistics", "resolve_addresses"]
