"""A real Apache Kafka 4 broker, run from its Maven Central jars, for the demo, the tests and benchmarks.

No Docker and no Kafka tarball: the broker's runtime closure is resolved from the POM shipped next to
this module (``kafka-pom.xml``, the one place that names the Kafka version) with
``mvn dependency:copy-dependencies`` into a per-user cache, and ``kafka.Kafka`` is started with the
machine's Java 17+ as a single KRaft node that is both broker and controller.

Two layers, as everywhere in skinbatch:

* pure: :class:`BrokerConfig` and :func:`render_server_properties` (unit-tested without Java);
* I/O: :func:`ensure_kafka_jars` (Maven) and :class:`KafkaBroker` (the JVM process).

Choices that differ from Kafka's own defaults, and why:

* ``auto.create.topics.enable=true``: the demo and ad-hoc tools may write to a topic nobody created.
  Tests should still create their topics explicitly (:meth:`KafkaBroker.create_topics`) to choose the
  partition count and topic configs.
* 5 partitions (not 50) for ``__consumer_offsets``, the transaction-state and share-coordinator
  topics: the first consumer group on a fresh broker then starts in well under a second on a 2-core box.
* Replication factor 1 and min ISR 1 for those internal topics: there is one node.
* ``group.initial.rebalance.delay.ms=0``: a group's first member is assigned at once, not after 3 s.
* ``message.max.bytes`` (default 16 MiB) is raised for whole DICOM files; ``replica.fetch.max.bytes``
  and ``socket.request.max.bytes`` follow it so that the three never disagree.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import importlib.resources
import logging
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from skinbatch._child import ChildServer, Launch, ServerNotStartedError, free_port, port_open, tail
from skinbatch.contract import ExitCode, SkinbatchError

from . import maven

__all__ = [
    "DEFAULT_MESSAGE_MAX_BYTES",
    "BrokerConfig",
    "KafkaBroker",
    "KafkaSetupError",
    "KafkaStartError",
    "check_java",
    "default_cache_dir",
    "ensure_kafka_jars",
    "free_port",
    "generate_cluster_id",
    "kafka_version",
    "render_server_properties",
]

log = logging.getLogger(__name__)

DEFAULT_MESSAGE_MAX_BYTES = 16 * 1024 * 1024
# Kafka's own default; it must stay above message.max.bytes or large produce requests are cut off.
_DEFAULT_SOCKET_REQUEST_MAX_BYTES = 100 * 1024 * 1024
_MIN_JAVA = 17
_POM_RESOURCE = "kafka-pom.xml"
_LOG4J_RESOURCE = "kafka-log4j2.xml"
_MVN_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


class KafkaSetupError(SkinbatchError, RuntimeError):
    """Java or Maven is missing or too old, or the jars could not be fetched."""

    exit_code = ExitCode.ENVIRONMENT


class KafkaStartError(SkinbatchError, RuntimeError):
    """The broker process did not come up; the message carries the tail of its log."""

    exit_code = ExitCode.START_FAILED


class KafkaBrokerDied(SkinbatchError, RuntimeError):
    """The broker process exited on its own while it was serving; the message carries the tail of its log."""

    exit_code = ExitCode.SERVER_DIED


# --------------------------------------------------------------------------------------------------
# Pure part: configuration
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BrokerConfig:
    """Everything that goes into ``server.properties`` for one combined broker+controller node.

    Attributes:
        port: client (PLAINTEXT) listener port on 127.0.0.1.
        controller_port: KRaft controller listener port on 127.0.0.1.
        log_dir: where the partitions and the metadata log live.
        node_id: the KRaft node id; also the only voter.
        host: the loopback address both listeners bind to and advertise.
        message_max_bytes: largest record batch the broker accepts (``message.max.bytes``).
        num_partitions: partitions of auto-created topics.
        auto_create_topics: ``auto.create.topics.enable``.
        internal_topic_partitions: partitions of ``__consumer_offsets``, the transaction-state and the
            share-coordinator topics (Kafka's default, 50, is slow to create on a small machine).
        network_threads: ``num.network.threads``; Kafka's 3 is more than a 2-core box needs.
        io_threads: ``num.io.threads``; Kafka's 8 likewise.
        voters: ``controller.quorum.voters`` of a cluster (``1@host:port,2@host:port,...``); None: this
            node is the only voter. With other voters the internal topics are replicated to
            ``min(3, voters)`` nodes with a min ISR of ``replicas - 1`` (at least 1).
        extra: further properties; they win over everything above.
    """

    port: int
    controller_port: int
    log_dir: Path
    node_id: int = 1
    host: str = "127.0.0.1"
    message_max_bytes: int = DEFAULT_MESSAGE_MAX_BYTES
    num_partitions: int = 1
    auto_create_topics: bool = True
    internal_topic_partitions: int = 5
    network_threads: int = 2
    io_threads: int = 4
    voters: str | None = None
    extra: Mapping[str, str | int | bool] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.port == self.controller_port:
            raise ValueError(f"port and controller_port must differ (both are {self.port})")
        for name in ("port", "controller_port"):
            value = getattr(self, name)
            if not 0 < value < 65536:
                raise ValueError(f"{name} must be a TCP port in 1..65535, got {value}")
        if self.message_max_bytes < 1024:
            raise ValueError(f"message_max_bytes must be at least 1024, got {self.message_max_bytes}")
        if self.num_partitions < 1 or self.internal_topic_partitions < 1:
            raise ValueError("partition counts must be at least 1")
        if self.voters is not None and not any(v.startswith(f"{self.node_id}@") for v in self.voters.split(",")):
            raise ValueError(f"node {self.node_id} is not among the voters {self.voters!r}")

    @property
    def replicas(self) -> int:
        """Replicas of the internal topics: 1 for a single node, up to 3 in a cluster."""
        return 1 if self.voters is None else min(3, len(self.voters.split(",")))

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` of the client listener, as clients pass it to ``bootstrap_servers``."""
        return f"{self.host}:{self.port}"

    def properties(self) -> dict[str, str]:
        """The properties as an ordered mapping of strings (``extra`` applied last)."""
        controller = f"{self.host}:{self.controller_port}"
        # A produce request carries at least one whole batch plus headers; if the request is over
        # socket.request.max.bytes the broker drops the connection instead of answering
        # MESSAGE_TOO_LARGE, which clients report as a vague network error.
        socket_max = max(_DEFAULT_SOCKET_REQUEST_MAX_BYTES, 2 * self.message_max_bytes + 1024 * 1024)
        replicas = self.replicas
        min_isr = max(1, replicas - 1)
        props: dict[str, Any] = {
            "process.roles": "broker,controller",
            "node.id": self.node_id,
            "controller.quorum.voters": self.voters or f"{self.node_id}@{controller}",
            "listeners": f"PLAINTEXT://{self.bootstrap_servers},CONTROLLER://{controller}",
            # Both, as in Kafka's own config/server.properties for a combined node; clients only
            # ever get the PLAINTEXT one in metadata.
            "advertised.listeners": f"PLAINTEXT://{self.bootstrap_servers},CONTROLLER://{controller}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.log_dir),
            "num.partitions": self.num_partitions,
            "auto.create.topics.enable": self.auto_create_topics,
            "default.replication.factor": replicas,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": replicas,
            "offsets.topic.num.partitions": self.internal_topic_partitions,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            "transaction.state.log.num.partitions": self.internal_topic_partitions,
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min_isr,
            "share.coordinator.state.topic.num.partitions": self.internal_topic_partitions,
            "group.initial.rebalance.delay.ms": 0,
            "message.max.bytes": self.message_max_bytes,
            "replica.fetch.max.bytes": self.message_max_bytes,
            "socket.request.max.bytes": socket_max,
            "num.network.threads": self.network_threads,
            "num.io.threads": self.io_threads,
            "num.recovery.threads.per.data.dir": 1,
        }
        props.update(self.extra)
        return {key: _property_value(value) for key, value in props.items()}


def _property_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render_server_properties(config: BrokerConfig) -> str:
    """Render ``server.properties`` text for ``config``.

    Values are written as Java properties: backslashes are escaped so that Windows-style or odd paths
    survive ``java.util.Properties.load``.
    """
    lines = ["# Written by skinbatch.localstack.kafka; one combined KRaft broker+controller node."]
    for key, value in config.properties().items():
        lines.append(f"{key}={_escape_property(value)}")
    return "\n".join(lines) + "\n"


def _escape_property(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def generate_cluster_id() -> str:
    """A KRaft cluster id in Kafka's format (``Uuid.randomUuid().toString()``).

    Done here rather than with ``kafka.tools.StorageTool random-uuid`` to save a JVM start. Kafka's
    ids are 16 random bytes in URL-safe base64 without padding; like Kafka, avoid ids that start with
    ``-`` (they read as command-line options) and the two reserved ones (all zeros, and 1).
    """
    while True:
        raw = uuid.uuid4().bytes
        if int.from_bytes(raw, "big") in (0, 1):
            continue
        text = base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
        if not text.startswith("-"):
            return text


# --------------------------------------------------------------------------------------------------
# The jars
# --------------------------------------------------------------------------------------------------


def _resource_text(name: str) -> str:
    return importlib.resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def kafka_version() -> str:
    """The Kafka version pinned in the shipped ``kafka-pom.xml``."""
    version = maven.pom_property(_resource_text(_POM_RESOURCE), "kafka.version")
    if not version:
        raise KafkaSetupError(f"{_POM_RESOURCE} has no <kafka.version> property; the package is broken.")
    return version


def default_cache_dir() -> Path:
    """``$SKINBATCH_CACHE``, else ``$XDG_CACHE_HOME/skinbatch``, else ``~/.cache/skinbatch``."""
    if env := os.environ.get("SKINBATCH_CACHE"):
        return Path(env).expanduser()
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "skinbatch"
    return Path.home() / ".cache" / "skinbatch"


def _java_executable() -> str:
    # Like Kafka's own scripts: JAVA_HOME first, so a user can pick a JDK without touching PATH.
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise KafkaSetupError(
            f"`java` was not found. The local Kafka broker needs Java {_MIN_JAVA} or newer: install it "
            "(Debian/Ubuntu: `apt-get install openjdk-17-jre-headless`) or set JAVA_HOME."
        )
    return found


def _java_major(java: str) -> int:
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)  # noqa: S603 - the java found above
    # `java -version` writes to stderr: 'openjdk version "17.0.15" ...' or '"1.8.0_392"'.
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        raise KafkaSetupError(f"Could not read the Java version from `{java} -version`:\n{out.stderr}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def check_java() -> str:
    """Return the ``java`` executable to use, or raise :class:`KafkaSetupError` if it is missing or old."""
    java = _java_executable()
    major = _java_major(java)
    if major < _MIN_JAVA:
        raise KafkaSetupError(
            f"{java} is Java {major}; Kafka {kafka_version()} needs Java {_MIN_JAVA} or newer. Install a "
            "newer JDK (Debian/Ubuntu: `apt-get install openjdk-17-jre-headless`) and point JAVA_HOME at it."
        )
    return java


def ensure_kafka_jars(cache_dir: Path | None = None, *, timeout_s: float = 1800.0) -> Path:
    """Make sure the broker's jars are in the cache and return their folder.

    The first call runs ``mvn -q dependency:copy-dependencies -DincludeScope=runtime`` on the shipped
    ``kafka-pom.xml`` into ``<cache_dir>/kafka-<version>/libs`` (about 45 MB, 46 jars). A marker file
    holding the POM's digest is written last, so an interrupted download is redone and a later call
    with the same POM returns at once without starting Maven. Maven's own settings (mirrors, proxies,
    ``~/.m2``) apply as usual.

    Args:
        cache_dir: the cache root; default :func:`default_cache_dir`.
        timeout_s: how long Maven may take.

    Returns:
        The ``libs`` folder, to be used as the class path ``libs/*``.

    Raises:
        KafkaSetupError: ``mvn`` is missing, or Maven failed (the message carries its output).
    """
    root = (cache_dir if cache_dir is not None else default_cache_dir()).expanduser()
    closure = maven.Closure(pom=_resource_text(_POM_RESOURCE), home=root / f"kafka-{kafka_version()}",
                            what=f"the Kafka {kafka_version()} jars", size="about 45 MB", expect="kafka_*.jar")
    # Maven itself needs Java: say so plainly instead of Maven's message.
    return maven.fetch(closure, timeout_s=timeout_s, error=KafkaSetupError, check_java=_java_executable)


# --------------------------------------------------------------------------------------------------
# The broker process
# --------------------------------------------------------------------------------------------------


class KafkaBroker(ChildServer):
    """One Apache Kafka broker+controller (KRaft) in a child JVM, on loopback ports.

    Use it as a context manager::

        with KafkaBroker() as broker:
            broker.create_topics({"images": 3}, config={"max.message.bytes": 8 << 20})
            producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers)

    :meth:`stop` and :meth:`kill` keep the storage, so :meth:`start` brings the same broker back on the
    same ports with its topics and committed offsets (to test crash recovery). :meth:`close` (and leaving
    the ``with`` block) stops it and deletes a work dir it created itself.

    The broker's log goes to ``<work_dir>/logs/server.log`` and the JVM's own output to
    ``<work_dir>/kafka.out``; nothing reaches the terminal. The process handling (ports, stop, kill,
    ``with``) is :class:`skinbatch._child.ChildServer`'s.
    """

    name = "Kafka broker"
    error_line: ClassVar[re.Pattern[str] | None] = re.compile(r" ERROR ")
    poll_interval_s = 0.2
    work_dir_prefix = "skinbatch-kafka-"

    def __init__(
        self,
        port: int | None = None,
        controller_port: int | None = None,
        *,
        message_max_bytes: int = DEFAULT_MESSAGE_MAX_BYTES,
        num_partitions: int = 1,
        auto_create_topics: bool = True,
        extra_properties: Mapping[str, str | int | bool] | None = None,
        work_dir: Path | None = None,
        cache_dir: Path | None = None,
        heap_min: str = "256m",
        heap_max: str = "768m",
        log_level: str = "INFO",
        startup_timeout_s: float = 90.0,
        format_args: Iterable[str] = (),
        node_id: int = 1,
        voters: str | None = None,
        cluster_id: str | None = None,
    ) -> None:
        """Prepare a broker; nothing starts until :meth:`start` (or ``with``).

        Args:
            port: client port on 127.0.0.1; a free one if None.
            controller_port: KRaft controller port; a free one if None.
            message_max_bytes: the broker's ``message.max.bytes``. Topics may lower it with
                ``max.message.bytes``; producers must raise ``max_request_size`` to send that much.
            num_partitions: partitions of auto-created topics.
            auto_create_topics: ``auto.create.topics.enable``.
            extra_properties: more ``server.properties`` entries; they override the defaults.
            work_dir: where server.properties, the data and the logs go; a temporary folder (deleted
                by :meth:`close`) if None. A given folder is kept.
            cache_dir: where the jars are cached; see :func:`ensure_kafka_jars`.
            heap_min: JVM ``-Xms``.
            heap_max: JVM ``-Xmx``. 768m is plenty for tests with 16 MiB messages and leaves room
                for Triton on a small machine.
            log_level: root level of the broker's log file (``INFO``, ``WARN``, ``DEBUG``...).
            startup_timeout_s: how long :meth:`start` waits for the broker to answer.
            format_args: more arguments for ``StorageTool format`` on first start, e.g.
                ``["--add-scram", "SCRAM-SHA-512=[name=alice,password=secret]"]`` (KRaft keeps SCRAM
                users in its metadata log).
            node_id: the KRaft node id (a cluster gives each node its own).
            voters: ``controller.quorum.voters`` of a cluster (see :class:`BrokerConfig`); None for a
                single node. Every node of a cluster needs fixed ports and the same ``cluster_id``,
                and :meth:`start` of the first node only returns once a majority of voters runs:
                start the nodes with :meth:`launch` and wait with :meth:`wait_ready` (see
                ``tests/fixtures/cluster.py``).
            cluster_id: the id formatted into new storage; a fresh one if None.
        """
        super().__init__(work_dir=work_dir, startup_timeout_s=startup_timeout_s, stop_timeout_s=30.0)
        self._requested_ports = {"port": port or 0, "controller_port": controller_port or 0}
        self._message_max_bytes = message_max_bytes
        self._num_partitions = num_partitions
        self._auto_create_topics = auto_create_topics
        self._extra = dict(extra_properties or {})
        self._cache_dir = cache_dir
        self._heap = (heap_min, heap_max)
        self._log_level = log_level
        self._format_args = list(format_args)
        self._node_id = node_id
        self._voters = voters
        self._cluster_id = cluster_id
        self._config: BrokerConfig | None = None
        self._last_probe_error = "no answer yet"

    # ---- facts ------------------------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:<port>`` for ``bootstrap_servers=`` of any Kafka client."""
        return self.config.bootstrap_servers

    @property
    def config(self) -> BrokerConfig:
        """The configuration the broker runs with (available once :meth:`start` was called)."""
        if self._config is None:
            raise self._not_started_error()
        return self._config

    @property
    def work_dir(self) -> Path:
        """The folder with server.properties, the data (``data/``) and the logs (``logs/``)."""
        if self._work_dir is None:
            raise self._not_started_error()
        return self._work_dir

    @property
    def log_path(self) -> Path:
        """The JVM's own output (``kafka.out``): start-up failures and crashes."""
        return self.work_dir / "kafka.out"

    @property
    def log_file(self) -> Path:
        """The broker's log (log4j2, INFO by default)."""
        return self.work_dir / "logs" / "server.log"

    @property
    def pid(self) -> int | None:
        """The JVM's process id while it runs."""
        return super().pid if self.is_running() else None

    def log_tail(self, lines: int = 40) -> str:
        """The first error and the last lines of the JVM output and of the broker log, for messages.

        The first ERROR line matters most: after a failed start Kafka logs its whole shutdown, which
        pushes the cause (say, "Address already in use") out of the tail.
        """
        return super().log_tail(lines)

    def _log_files(self) -> list[Path]:
        return [self.log_path, self.log_file]

    def _not_started_error(self) -> Exception:
        return ServerNotStartedError("The broker has not been started yet: call start() or use `with`.")

    # ---- life cycle -------------------------------------------------------------------------------

    def start(self) -> KafkaBroker:
        """Fetch the jars if needed, format the storage on first start, start the JVM and wait.

        Returns:
            self, once an admin client gets metadata from the broker.

        Raises:
            KafkaSetupError: Java or Maven missing or too old, or the jars could not be fetched.
            KafkaStartError: the JVM exited or did not answer within ``startup_timeout_s``.
        """
        super().start()
        self.wait_ready()
        return self

    def launch(self) -> KafkaBroker:
        """Start the JVM without waiting for it (a cluster node waits for its peers: see ``voters``)."""
        super().start()
        return self

    def close(self) -> None:
        """Stop the broker and delete its work dir if this object created it."""
        owned = self._given_work_dir is None
        super().close()
        if owned:  # its storage is gone: a later start() is a new broker, on new ports
            self._config = None
            self._forget_ports()

    def _prepare(self) -> Launch:
        java = check_java()
        libs = ensure_kafka_jars(self._cache_dir)
        work_dir = self._ensure_work_dir()
        if self._config is None:
            ports = self._ports_once(self._requested_ports)
            self._config = BrokerConfig(
                port=ports["port"],
                controller_port=ports["controller_port"],
                log_dir=work_dir / "data",
                message_max_bytes=self._message_max_bytes,
                num_partitions=self._num_partitions,
                auto_create_topics=self._auto_create_topics,
                node_id=self._node_id,
                voters=self._voters,
                extra=self._extra,
            )
        properties = work_dir / "server.properties"
        properties.write_text(render_server_properties(self.config), encoding="utf-8")
        log4j = work_dir / "log4j2.xml"
        log4j.write_text(_resource_text(_LOG4J_RESOURCE), encoding="utf-8")
        (work_dir / "logs").mkdir(exist_ok=True)
        base = self._java_command(java, libs, log4j)
        if not (self.config.log_dir / "meta.properties").exists():
            self._format_storage(base, properties)
        self._last_probe_error = "no answer yet"
        return Launch([*base, "kafka.Kafka", str(properties)], cwd=work_dir)

    def _java_command(self, java: str, libs: Path, log4j: Path) -> list[str]:
        heap_min, heap_max = self._heap
        return [
            java,
            f"-Xms{heap_min}",
            f"-Xmx{heap_max}",
            # Kafka's own JVM flags (kafka-run-class.sh), minus -server which is the default.
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            # A broker out of heap should die loudly rather than limp on and time tests out.
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={self.work_dir / 'logs'}",
            f"-Dskinbatch.kafka.log.level={self._log_level}",
            "-cp",
            str(libs / "*"),
        ]

    def _format_storage(self, base: list[str], properties: Path) -> None:
        command = [
            *base, "kafka.tools.StorageTool", "format", "-t", self._cluster_id or generate_cluster_id(),
            "-c", str(properties),
            *self._format_args,
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)  # noqa: S603
        if result.returncode != 0:
            raise KafkaStartError(
                f"Formatting the Kafka storage in {self.config.log_dir} failed (exit {result.returncode}):\n"
                f"{tail(result.stdout + result.stderr, 40)}"
            )

    def _is_ready(self) -> bool:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        if not port_open(self.config.host, self.config.port):
            return False
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap_servers,
                client_id="skinbatch-localstack-probe",
                request_timeout_ms=5000,
                bootstrap_timeout_ms=5000,
            )
            try:
                admin.list_topics()
            finally:
                admin.close()
        except (KafkaError, OSError) as exc:
            self._last_probe_error = f"{type(exc).__name__}: {exc}"
            return False
        return True

    def _exit_error(self, returncode: int) -> Exception:
        return KafkaStartError(
            f"The Kafka broker exited with code {returncode} while starting "
            f"(ports {self.config.port}/{self.config.controller_port}; a port taken by another "
            f"process shows as 'Address already in use'). Its files are kept in {self.work_dir}."
            f"\n{self.log_tail()}"
        )

    def _timeout_error(self, timeout_s: float) -> Exception:
        pid = self.pid
        self.kill()  # a broker that does not answer is of no use to anyone; do not leave it running
        return KafkaStartError(
            f"The Kafka broker (pid {pid}) did not answer on {self.bootstrap_servers} within "
            f"{timeout_s:.0f} s (last error: {self._last_probe_error}). It was killed; its files are "
            f"kept in {self.work_dir}. On a slow or busy machine raise startup_timeout_s.\n{self.log_tail()}"
        )

    def __del__(self) -> None:
        # Last resort for a forgotten broker; close() is the real way.
        with contextlib.suppress(Exception):
            self.kill()

    def __repr__(self) -> str:
        state = f"running at {self.bootstrap_servers}" if self.is_running() else "stopped"
        return f"<KafkaBroker {kafka_version()} {state}>"

    # ---- helpers for clients ----------------------------------------------------------------------

    def admin_client(self, **configs: Any) -> Any:
        """A ``kafka.KafkaAdminClient`` bound to this broker; the caller closes it."""
        from kafka import KafkaAdminClient

        return KafkaAdminClient(bootstrap_servers=self.bootstrap_servers, **configs)

    def create_topics(
        self,
        topics: Iterable[str] | Mapping[str, int],
        *,
        partitions: int = 1,
        config: Mapping[str, str | int] | None = None,
        exist_ok: bool = False,
        timeout_s: float = 30.0,
        replication_factor: int | None = None,
    ) -> None:
        """Create topics and wait until every partition has a leader.

        Args:
            topics: names (each gets ``partitions``), or a mapping name -> partition count.
            partitions: partition count for names given without one.
            config: topic configs for all of them, e.g. ``{"max.message.bytes": 8 << 20}``.
            exist_ok: do not fail on topics that already exist.
            timeout_s: how long to wait for the broker.
            replication_factor: replicas of each partition; 1 on a single node, up to 3 in a cluster.

        Raises:
            kafka.errors.TopicAlreadyExistsError: a topic exists and ``exist_ok`` is false.
            kafka.errors.KafkaError: any other refusal (bad config name or value, bad name...).
        """
        from kafka.errors import TopicAlreadyExistsError

        counts = dict(topics) if isinstance(topics, Mapping) else {name: partitions for name in topics}
        if not counts:
            return
        configs = {key: _property_value(value) for key, value in (config or {}).items()}
        request = {
            name: {"num_partitions": count, "replication_factor": replication_factor or self.config.replicas,
                   "configs": configs}
            for name, count in counts.items()
        }
        admin = self.admin_client(request_timeout_ms=int(timeout_s * 1000))
        try:
            if exist_ok:
                existing = set(admin.list_topics())
                request = {name: spec for name, spec in request.items() if name not in existing}
                if not request:
                    return
            try:
                admin.create_topics(request, timeout_ms=int(timeout_s * 1000), wait_for_metadata=True)
            except TopicAlreadyExistsError:
                if not exist_ok:  # lost a race with another creator otherwise: that is fine
                    raise
                admin.wait_for_topics(list(request), timeout_ms=int(timeout_s * 1000))
        finally:
            admin.close()
