"""Static checks of the production deployment in ``compose/`` (Docker cannot run on the development machines).

What is checked, and with what:

* the compose file loads with compose-go, the library Docker Compose itself uses (schema, interpolation
  from ``compose/.env``, consistency), through the small Go program in ``composecheck/``; and, without Go,
  with PyYAML plus a minimal ``${VAR}`` interpolation for the structural rules below;
* every service has an image or a build, a health check or a restart policy; the one-shot jobs gate
  the services after them; ports agree across compose, the Prometheus config, the health checks and
  the consumer's environment; Triton and the converter share one NGC release;
* every ``SKINBATCH_*`` variable of the consumer is an option of ``skinbatch consume`` (introspected
  from the click command) and the whole environment parses through that command into a ``ConsumerConfig``;
* the Dockerfiles: a slim, non-root consumer with a health check, a converter on the NGC TensorRT image;
* the topic job and the converter's entrypoint, run against stub commands;
* the Prometheus config and alert rules with ``promtool`` (Debian's ``prometheus`` package) when it is
  installed, and structurally always; the Grafana dashboard structurally, its PromQL with ``promtool``,
  and its metric names against Triton's documented metrics and the consumer's registry.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.needs import kustomize_command, need_module, need_tool

yaml = need_module("yaml", "PyYAML is needed for the compose checks (the `test` extra)")

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "compose"
COMPOSE_FILE = COMPOSE / "compose.yaml"
ENV_FILE = COMPOSE / ".env"
CHECKER = Path(__file__).resolve().parent / "composecheck"
DASHBOARD = COMPOSE / "grafana" / "dashboards" / "skinbatch.json"
DATASOURCES = COMPOSE / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
DASHBOARD_PROVIDERS = COMPOSE / "grafana" / "provisioning" / "dashboards" / "skinbatch.yaml"
PROMETHEUS = COMPOSE / "prometheus" / "prometheus.yml"
ALERTS = COMPOSE / "prometheus" / "alerts.yml"
# Only for the checks that need it: the Grafana password has no default on purpose.
TEST_ENV = {"GRAFANA_ADMIN_PASSWORD": "test-only"}

#: Triton's metrics as documented (server docs/user_guide/metrics.md): inference counts and latencies
#: per model, pending requests, GPU and CPU utilisation and memory, power and energy.
TRITON_METRICS = {
    "nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
    "nv_inference_exec_count", "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us", "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us", "nv_inference_pending_request_count",
    "nv_gpu_utilization", "nv_gpu_memory_total_bytes", "nv_gpu_memory_used_bytes", "nv_gpu_power_usage",
    "nv_gpu_power_limit", "nv_energy_consumption", "nv_cpu_utilization", "nv_cpu_memory_total_bytes",
    "nv_cpu_memory_used_bytes",
}
#: Series Prometheus makes itself for every target.
PROMETHEUS_METRICS = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


# -- loading ----------------------------------------------------------------------------------------

def read_dotenv(path: Path = ENV_FILE) -> dict[str, str]:
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}``: enough for these files."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if env.get(name):
            return env[name]
        if op and op.endswith("-"):
            return arg
        if op and op.endswith("?"):
            raise KeyError(f"{name}: {arg}")
        raise KeyError(f"{name} is not set in compose/.env")

    return _VAR.sub(sub, value)


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def dotenv() -> dict[str, str]:
    return read_dotenv()


@pytest.fixture(scope="module")
def services(raw: dict[str, Any], dotenv: dict[str, str]) -> dict[str, Any]:
    """The services with every variable resolved from compose/.env."""
    return interpolate(raw["services"], {**dotenv, **TEST_ENV})


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def healthcheck_text(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else test


def container_ports(service: dict[str, Any]) -> set[int]:
    return {int(str(p).rsplit(":", 1)[-1].split("/")[0]) for p in service.get("ports", [])}


def duration_s(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text))


# -- compose-go: the real loader ----------------------------------------------------------------------

def run_composecheck(*extra_env: str) -> subprocess.CompletedProcess[str]:
    go = need_tool("go", "Go (golang), for compose-go, Docker Compose's loader")
    # The first run fetches compose-go through the Go module proxy and builds it (about 40 s); later
    # runs come from Go's build cache.
    return subprocess.run(
        [go, "run", ".", str(COMPOSE_FILE), *extra_env],
        cwd=CHECKER, capture_output=True, text=True, timeout=600, check=False,
    )


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    result = run_composecheck(*(f"{k}={v}" for k, v in TEST_ENV.items()))
    assert result.returncode == 0, f"compose-go refused compose/compose.yaml:\n{result.stderr}"
    assert "is not set" not in result.stderr, f"compose/.env lacks variables:\n{result.stderr}"
    return json.loads(result.stdout)


def test_compose_go_loads_the_file_and_agrees(resolved: dict[str, Any], services: dict[str, Any]) -> None:
    assert set(resolved["services"]) == set(services)
    consumer = resolved["services"]["consumer"]
    assert {k: v or "" for k, v in consumer["environment"].items()} == environment(services["consumer"])
    assert consumer["deploy"]["replicas"] == int(services["consumer"]["deploy"]["replicas"])


def test_compose_go_requires_the_grafana_password() -> None:
    result = run_composecheck()
    assert result.returncode != 0
    assert "GRAFANA_ADMIN_PASSWORD" in result.stderr


# -- services ---------------------------------------------------------------------------------------

EXPECTED = {"kafka", "kafka-init", "converter", "triton", "consumer", "prometheus", "grafana"}


def test_the_expected_services(services: dict[str, Any]) -> None:
    assert set(services) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_service_has_image_or_build_and_health_or_restart(services: dict[str, Any], name: str) -> None:
    service = services[name]
    assert service.get("image") or service.get("build"), f"{name}: no image and no build"
    assert "healthcheck" in service or "restart" in service, f"{name}: no health check and no restart policy"
    if "build" in service:
        dockerfile = (COMPOSE / service["build"]["context"] / service["build"]["dockerfile"]).resolve()
        assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"
        assert Path(f"{dockerfile}.dockerignore").is_file(), f"{name}: no {dockerfile.name}.dockerignore"


def test_long_running_services_restart_and_one_shots_do_not(services: dict[str, Any]) -> None:
    for name in ("kafka", "triton", "consumer", "prometheus", "grafana"):
        assert services[name]["restart"] in ("always", "unless-stopped"), name
        assert "healthcheck" in services[name], name
    for name in ("kafka-init", "converter"):
        assert services[name]["restart"] == "no", name


def test_start_up_order(services: dict[str, Any]) -> None:
    assert services["kafka-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["triton"]["depends_on"]["converter"]["condition"] == "service_completed_successfully"
    consumer = services["consumer"]["depends_on"]
    assert consumer["kafka-init"]["condition"] == "service_completed_successfully"
    assert consumer["triton"]["condition"] == "service_healthy"


def test_gpu_for_triton_and_the_converter(services: dict[str, Any]) -> None:
    for name in ("triton", "converter"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices), name


def test_one_ngc_release_for_triton_and_tensorrt(raw: dict[str, Any], dotenv: dict[str, str]) -> None:
    assert re.fullmatch(r"\d\d\.\d\d", dotenv["NGC_RELEASE"]), "NGC releases are YY.MM"
    assert raw["services"]["triton"]["image"] == "nvcr.io/nvidia/tritonserver:${NGC_RELEASE}-py3"
    assert raw["services"]["converter"]["build"]["args"]["NGC_RELEASE"] == "${NGC_RELEASE}"
    assert raw["services"]["converter"]["environment"]["NGC_RELEASE"] == "${NGC_RELEASE}"
    froms = re.findall(r"^FROM\s+(\S+)", (COMPOSE / "Dockerfile.converter").read_text(), re.M)
    assert froms == ["nvcr.io/nvidia/tensorrt:${NGC_RELEASE}-py3"]


def test_versions_are_pinned_in_dotenv(raw: dict[str, Any], dotenv: dict[str, str]) -> None:
    for name, service in raw["services"].items():
        image = service["image"]
        tag = image.rsplit(":", 1)[-1]
        assert "${" in tag, f"{name}: the tag of {image} should come from compose/.env"
        for var in _VAR.findall(image):
            assert dotenv.get(var[0]), f"{name}: {var[0]} is not set in compose/.env"
    for key in ("NGC_RELEASE", "KAFKA_VERSION", "PYTHON_VERSION", "PROMETHEUS_VERSION", "GRAFANA_VERSION"):
        assert dotenv[key] and dotenv[key] != "latest", key


def test_kafka_is_4x_and_the_same_as_the_local_broker(dotenv: dict[str, str]) -> None:
    from skinbatch.localstack.kafka import kafka_version

    assert dotenv["KAFKA_VERSION"].startswith("4.")
    assert dotenv["KAFKA_VERSION"] == kafka_version(), "compose/.env and kafka-pom.xml name different Kafkas"


def test_kafka_runs_kraft(services: dict[str, Any]) -> None:
    env = environment(services["kafka"])
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", env["CLUSTER_ID"])
    listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) == set(protocols)
    advertised = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert set(advertised) <= set(listeners) and "CONTROLLER" not in advertised
    voter_port = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].rsplit(":", 1)[1]
    assert listeners["CONTROLLER"] == f":{voter_port}"


def test_ports_agree(services: dict[str, Any]) -> None:
    kafka_env = environment(services["kafka"])
    internal = dict(i.split("://") for i in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(","))["INTERNAL"]
    external = dict(i.split("://") for i in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(","))["EXTERNAL"]
    consumer_env = environment(services["consumer"])
    assert consumer_env["SKINBATCH_BOOTSTRAP_SERVERS"] == internal == "kafka:9092"
    assert environment(services["kafka-init"])["BOOTSTRAP_SERVERS"] == internal
    assert "localhost:9092" in healthcheck_text(services["kafka"])
    assert container_ports(services["kafka"]) == {int(external.rsplit(":", 1)[1])}

    command = " ".join(services["triton"]["command"])
    triton = {k: int(v) for k, v in re.findall(r"--(http|grpc|metrics)-port=(\d+)", command)}
    assert container_ports(services["triton"]) == set(triton.values())
    assert f"localhost:{triton['http']}/v2/health/ready" in healthcheck_text(services["triton"])
    assert consumer_env["SKINBATCH_TRITON_URL"] == f"triton:{triton['grpc']}"

    prometheus = yaml.safe_load(PROMETHEUS.read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert jobs["triton"]["static_configs"][0]["targets"] == [f"triton:{triton['metrics']}"]
    sd = jobs["skinbatch-consumer"]["dns_sd_configs"][0]
    metrics_port = int(consumer_env["SKINBATCH_METRICS_PORT"])
    assert sd["names"] == ["consumer"] and sd["port"] == metrics_port
    assert services["consumer"]["expose"] == [str(metrics_port)]
    assert f"127.0.0.1:{metrics_port}/metrics" in healthcheck_text(services["consumer"])
    assert consumer_env["SKINBATCH_METRICS_HOST"] == "0.0.0.0", "Prometheus scrapes from another container"
    assert "ports" not in services["consumer"], "a published port would collide between replicas"

    listen = [a for a in services["prometheus"]["command"] if a.startswith("--web.listen-address=")]
    assert listen == ["--web.listen-address=:9090"] and container_ports(services["prometheus"]) == {9090}
    datasource = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"
    grafana_port = int(environment(services["grafana"])["GF_SERVER_HTTP_PORT"])
    assert container_ports(services["grafana"]) == {grafana_port}
    assert f"localhost:{grafana_port}/api/health" in healthcheck_text(services["grafana"])


def test_published_ports_bind_to_the_configured_address(raw: dict[str, Any]) -> None:
    for name, service in raw["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("${PUBLISH_ADDR}:"), f"{name}: {port} would bind to every interface"


def test_mounted_files_exist(raw: dict[str, Any]) -> None:
    # Literal ./ paths ship with the repository; ${MODEL_INPUT_DIR} is the operator's own folder.
    for name, service in raw["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (COMPOSE / source).exists(), f"{name}: {source} does not exist"


def test_no_path_of_a_development_machine() -> None:
    pattern = re.compile(r"(?<![\w.])/(work|root|home/[a-z])[/\s]")
    for path in [*COMPOSE.rglob("*"), ROOT / "docs" / "deploy.md", ROOT / "docs" / "runbook.md"]:
        if path.is_file():
            hits = [m.group(0) for m in pattern.finditer(path.read_text(encoding="utf-8"))]
            assert not hits, f"{path.relative_to(ROOT)} names a local path: {hits}"


# -- the consumer's environment ------------------------------------------------------------------------

def consume_envvars() -> dict[str, str]:
    from skinbatch.consumer.cli import consume

    return {p.envvar: p.name for p in consume.params if isinstance(p.envvar, str)}


def test_consumer_variables_are_cli_options(services: dict[str, Any]) -> None:
    env = environment(services["consumer"])
    known = consume_envvars()
    unknown = sorted(set(env) - set(known))
    assert not unknown, f"not options of `skinbatch consume`: {unknown}"
    assert {"SKINBATCH_BOOTSTRAP_SERVERS", "SKINBATCH_TRITON_URL"} <= set(env)


def test_consumer_environment_parses_through_the_cli(services: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    from skinbatch.consumer.cli import consume
    from skinbatch.consumer.config import ConsumerConfig

    for name in consume_envvars():
        monkeypatch.delenv(name, raising=False)
    # Secret files (/run/secrets/...) exist only in the container: one local file stands for each.
    secret = tmp_path / "secret"
    secret.write_text("from-a-secret\n")
    for key, value in environment(services["consumer"]).items():
        monkeypatch.setenv(key, str(secret) if key.endswith("_FILE") and value.startswith("/run/secrets/") else value)
    ctx = consume.make_context("consume", [])
    options = {k: v for k, v in ctx.params.items() if v is not None and k != "log_level"}
    config = ConsumerConfig.from_values(**options)
    assert config.kafka.bootstrap_servers == "kafka:9092" and config.triton.triton_url == "triton:8001"
    assert config.metrics.metrics_host == "0.0.0.0" and config.metrics.metrics_port == 9108
    plain = {"bootstrap_servers": ["kafka:9092"], "security_protocol": "PLAINTEXT"}
    assert config.kafka_connection().client_kwargs() == plain, "empty SASL variables must drop out"


def test_stop_grace_period_covers_the_drain(services: dict[str, Any]) -> None:
    drain = float(environment(services["consumer"])["SKINBATCH_DRAIN_TIMEOUT_S"])
    assert duration_s(services["consumer"]["stop_grace_period"]) > drain + 5


def test_topic_limits_fit_the_consumer(services: dict[str, Any]) -> None:
    consumer_limit = int(environment(services["consumer"])["SKINBATCH_MAX_IMAGE_BYTES"])
    kafka = environment(services["kafka"])
    init = environment(services["kafka-init"])
    topic_limit = int(init["REQUEST_MAX_MESSAGE_BYTES"])
    # Room for the record batch and headers: an image at the consumer's limit reaches the consumer,
    # which dead-letters anything larger as `too_large` instead of the producer failing.
    assert topic_limit >= consumer_limit + 65536
    assert int(kafka["KAFKA_MESSAGE_MAX_BYTES"]) >= topic_limit
    assert int(kafka["KAFKA_REPLICA_FETCH_MAX_BYTES"]) >= topic_limit
    assert int(kafka["KAFKA_SOCKET_REQUEST_MAX_BYTES"]) > topic_limit
    assert environment(services["consumer"])["SKINBATCH_REQUEST_TOPIC"] == init["REQUEST_TOPIC"]
    assert environment(services["consumer"])["SKINBATCH_RESULT_TOPIC"] == init["RESULT_TOPIC"]
    assert environment(services["consumer"])["SKINBATCH_DEAD_LETTER_TOPIC"] == init["DEAD_LETTER_TOPIC"]


# -- scripts, run against stubs -------------------------------------------------------------------------

def stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/usr/bin/env bash\n" + body + "\n", encoding="utf-8")
    path.chmod(0o755)


def test_create_topics_script(services: dict[str, Any], tmp_path: Path) -> None:
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    for tool in ("kafka-topics.sh", "kafka-configs.sh"):
        stub(bin_dir, tool, f'echo "{tool} $*" >> "{log}"')
    env = {"PATH": os.environ["PATH"], "KAFKA_BIN": str(bin_dir), **environment(services["kafka-init"])}
    script = services["kafka-init"]["volumes"][0].split(":")[0]
    result = subprocess.run(["bash", str(COMPOSE / script)], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    creates = [line for line in log.read_text().splitlines() if "--create" in line]
    assert len(creates) == 3
    init = environment(services["kafka-init"])
    request = next(line for line in creates if f"--topic {init['REQUEST_TOPIC']} " in line)
    assert f"--partitions {init['REQUEST_PARTITIONS']} " in request
    assert f"retention.ms={init['REQUEST_RETENTION_MS']}" in request
    assert f"max.message.bytes={init['REQUEST_MAX_MESSAGE_BYTES']}" in request
    assert "--bootstrap-server kafka:9092" in request
    assert "--if-not-exists" in request


@pytest.fixture
def converter_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    models, repo, bin_dir = tmp_path / "models", tmp_path / "repo", tmp_path / "bin"
    for folder in (models, repo, bin_dir):
        folder.mkdir()
    (models / "checkpoint.pt").write_bytes(b"weights")
    (models / "taxonomy.json").write_text("{}")
    stub(bin_dir, "nvidia-smi", 'echo "NVIDIA H100 80GB HBM3"')
    stub(bin_dir, "python3", 'echo "10.11.0"')
    # Records its arguments and writes the plan where `skinbatch convert` would.
    stub(bin_dir, "skinbatch", f'''echo "$*" >> "{tmp_path}/convert.log"
while [[ $# -gt 0 ]]; do case $1 in --repository) r=$2; shift;; --model-version) v=$2; shift;; esac; shift; done
mkdir -p "$r/inception_v3/$v" && touch "$r/inception_v3/$v/model.plan"''')
    yield {
        "PATH": f"{bin_dir}:{os.environ['PATH']}", "NGC_RELEASE": "25.06", "MODEL_VERSION": "1",
        "CHECKPOINT": str(models / "checkpoint.pt"), "TAXONOMY": str(models / "taxonomy.json"),
        "REPOSITORY": str(repo), "MAX_BATCH_SIZE": "32", "PREFERRED_BATCH_SIZES": "16,32",
        "MAX_QUEUE_DELAY_US": "2000", "TRITON_INSTANCES": "1", "LOG": str(tmp_path / "convert.log"),
    }


def run_entrypoint(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(COMPOSE / "converter" / "entrypoint.sh")], env=env,
                          capture_output=True, text=True, check=False)


def test_converter_entrypoint_builds_once_and_again_on_a_new_release(converter_env: dict[str, str]) -> None:
    log = Path(converter_env["LOG"])
    first = run_entrypoint(converter_env)
    assert first.returncode == 0, first.stderr
    call = log.read_text().splitlines()
    assert len(call) == 1
    args = call[0].split()
    assert args[:1] == ["convert"] and "--force" in args
    assert args[args.index("--target") + 1] == "tensorrt"
    assert args[args.index("--checkpoint") + 1] == converter_env["CHECKPOINT"]
    assert args[args.index("--repository") + 1] == converter_env["REPOSITORY"]
    assert args[args.index("--preferred-batch-sizes") + 1] == "16,32"

    again = run_entrypoint(converter_env)
    assert again.returncode == 0 and "up to date" in again.stdout
    assert len(log.read_text().splitlines()) == 1, "an unchanged repository must not be rebuilt"

    newer = run_entrypoint({**converter_env, "NGC_RELEASE": "25.07"})
    assert newer.returncode == 0
    assert len(log.read_text().splitlines()) == 2, "another TensorRT release needs another plan"


def test_converter_entrypoint_flags_are_real(converter_env: dict[str, str]) -> None:
    cli = need_module("skinbatch.converter.cli", "the converter's dependencies are not installed")
    assert run_entrypoint(converter_env).returncode == 0
    used = {a for a in Path(converter_env["LOG"]).read_text().split() if a.startswith("--")}
    known = {opt for p in cli.convert.params for opt in p.opts}
    assert used <= known, f"not options of `skinbatch convert`: {sorted(used - known)}"


def test_converter_entrypoint_exit_codes(converter_env: dict[str, str], tmp_path: Path) -> None:
    missing = run_entrypoint({**converter_env, "CHECKPOINT": str(tmp_path / "nope.pt")})
    assert missing.returncode == 2 and "nope.pt not found" in missing.stderr
    stub(Path(converter_env["PATH"].split(":")[0]), "nvidia-smi", "exit 9")
    no_gpu = run_entrypoint(converter_env)
    assert no_gpu.returncode == 14 and "no NVIDIA GPU" in no_gpu.stderr  # ExitCode.ENVIRONMENT


# -- Dockerfiles ---------------------------------------------------------------------------------------

def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            rows.append((op.upper(), rest.strip()))
    return rows


def final_stage(rows: list[tuple[str, str]]) -> list[tuple[str, str]]:
    start = max(i for i, (op, _) in enumerate(rows) if op == "FROM")
    return rows[start:]


def test_consumer_image_is_slim_and_unprivileged() -> None:
    rows = dockerfile_instructions(COMPOSE / "Dockerfile.consumer")
    installs = [rest for op, rest in rows if op == "RUN" and re.search(r"\bpip (install|wheel)\b", rest)]
    assert installs, "the consumer image installs nothing"
    for command in installs:
        assert "[" not in command, f"the consumer installs an extra: {command}"
        assert not re.search(r"torch|tensorrt|onnx", command), command
    last = final_stage(rows)
    assert last[0][1].startswith("python:${PYTHON_VERSION}-slim")
    users = [rest for op, rest in last if op == "USER"]
    assert users and users[-1] not in ("root", "0"), "the consumer must not run as root"
    assert any(op == "HEALTHCHECK" and "/metrics" in rest for op, rest in last)
    assert ("ENTRYPOINT", '["skinbatch", "consume"]') in last
    env = " ".join(rest for op, rest in last if op == "ENV")
    assert "SKINBATCH_METRICS_HOST=0.0.0.0" in env


def test_consumer_image_installs_the_tested_versions() -> None:
    rows = dockerfile_instructions(COMPOSE / "Dockerfile.consumer")
    installs = [rest for op, rest in rows if op == "RUN" and re.search(r"\bpip (install|wheel)\b", rest)]
    assert installs and all(re.search(r"-c \S*constraints\.txt", command) for command in installs), installs
    assert any(op == "COPY" and "constraints.txt" in rest for op, rest in rows)
    assert "!constraints.txt" in (COMPOSE / "Dockerfile.consumer.dockerignore").read_text().splitlines()


def test_converter_image_installs_versions_for_its_base() -> None:
    rows = dockerfile_instructions(COMPOSE / "Dockerfile.converter")
    installs = [rest for op, rest in rows if op == "RUN" and "pip install" in rest]
    assert installs and all("-c constraints-converter.txt" in command for command in installs), installs
    assert ("COPY", "compose/constraints-converter.txt ./") in rows
    ignore = (COMPOSE / "Dockerfile.converter.dockerignore").read_text().splitlines()
    assert "!compose/constraints-converter.txt" in ignore


def test_converter_image_uses_the_images_tensorrt() -> None:
    rows = dockerfile_instructions(COMPOSE / "Dockerfile.converter")
    installs = " ".join(rest for op, rest in rows if op == "RUN" and "pip install" in rest)
    assert "'.[convert]'" in installs
    assert "tensorrt]" not in installs and "pip install tensorrt" not in installs, (
        "a PyPI TensorRT would not match the Triton image's")
    assert ("ENTRYPOINT", '["skinbatch-build-engine"]') in rows
    users = [rest for op, rest in rows if op == "USER"]
    assert users and users[-1] not in ("root", "0")


# -- Prometheus ------------------------------------------------------------------------------------------

def promtool() -> str:
    return need_tool("promtool", "Debian's prometheus")


def test_prometheus_config_structure() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert {job["job_name"] for job in config["scrape_configs"]} == {"triton", "skinbatch-consumer"}
    for rule_file in config["rule_files"]:
        rules = yaml.safe_load((PROMETHEUS.parent / rule_file).read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                assert rule["alert"] and rule["expr"] and rule["annotations"]["runbook"].startswith("docs/runbook.md#")


def test_prometheus_config_with_promtool() -> None:
    result = subprocess.run([promtool(), "check", "config", str(PROMETHEUS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_runbook_anchors_exist() -> None:
    runbook = (ROOT / "docs" / "runbook.md").read_text(encoding="utf-8")
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", runbook, re.M)}
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            anchor = rule["annotations"]["runbook"].split("#", 1)[1]
            assert anchor in anchors, f"{rule['alert']}: docs/runbook.md has no section #{anchor}"


# -- Grafana -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def test_dashboard_structure(dashboard: dict[str, Any]) -> None:
    datasource_uid = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]["uid"]
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["type"] and panel["title"], panel
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert panel["datasource"]["uid"] == datasource_uid, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"]["uid"] == datasource_uid
    titles = " | ".join(p["title"].lower() for p in dashboard["panels"])
    for needed in ("throughput", "batch size", "queue time", "gpu utilisation", "lag", "dead-letter"):
        assert needed in titles, f"no panel for {needed}"


def test_dashboard_is_provisioned(services: dict[str, Any]) -> None:
    provider = yaml.safe_load(DASHBOARD_PROVIDERS.read_text())["providers"][0]
    mounts = dict(v.split(":")[:2][::-1] for v in services["grafana"]["volumes"] if v.startswith("./"))
    assert mounts[provider["options"]["path"]] == "./grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"


_PROMQL_WORDS = {
    "sum", "avg", "min", "max", "count", "rate", "irate", "increase", "deriv", "histogram_quantile",
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "absent",
    "le", "bool", "offset", "topk", "bottomk", "clamp_min", "clamp_max", "abs", "time", "vector",
}


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r"\{[^}]*\}", "", expr)           # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)          # ranges
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    expr = re.sub(r'"[^"]*"', "", expr)
    names = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", expr))
    return {n for n in names if n not in _PROMQL_WORDS and not re.fullmatch(r"\d+|e\d*", n)}


def consumer_metric_names() -> set[str]:
    from skinbatch.consumer.metrics import ConsumerMetrics

    names = set()
    for family in ConsumerMetrics().registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        names.update(family.name + s for s in suffixes)
    return names


def test_dashboard_and_alert_metrics_exist(dashboard: dict[str, Any]) -> None:
    known = TRITON_METRICS | PROMETHEUS_METRICS | consumer_metric_names()
    exprs = dashboard_exprs(dashboard)
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        exprs += [rule["expr"] for rule in group["rules"]]
    used = set().union(*(metric_names(e) for e in exprs))
    assert "skinbatch_consumer_lag" in used and "nv_gpu_utilization" in used
    assert used <= known, f"metrics neither Triton nor the consumer export: {sorted(used - known)}"


def test_dashboard_promql_with_promtool(dashboard: dict[str, Any], tmp_path: Path) -> None:
    # promtool parses PromQL in rule files: one recording rule per panel query, with Grafana's
    # $__rate_interval replaced by a literal range.
    rules = [{"record": f"skinbatch:dashboard_query_{i}", "expr": e.replace("$__rate_interval", "5m")}
             for i, e in enumerate(dashboard_exprs(dashboard))]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([promtool(), "check", "rules", str(path), str(ALERTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# -- Kubernetes manifests (compose/k8s) ----------------------------------------------------------------

K8S = COMPOSE / "k8s"


@pytest.fixture(scope="module")
def k8s() -> dict[tuple[str, str], dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    objects = {}
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / resource).read_text()):
            assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], resource
            objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return obj["spec"]["template"]["spec"]["containers"]


def test_k8s_workloads_are_well_formed(k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    claims = {name for kind, name in k8s if kind == "PersistentVolumeClaim"}
    for (kind, name), obj in k8s.items():
        if kind not in ("Deployment", "Job"):
            continue
        template = obj["spec"]["template"]
        if kind == "Deployment":
            assert obj["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items(), name
        for volume in template["spec"].get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, name
        volume_names = {v["name"] for v in template["spec"].get("volumes", [])}
        for container in containers(obj):
            assert container["image"], name
            assert {m["name"] for m in container.get("volumeMounts", [])} <= volume_names, name
            if kind == "Deployment":
                assert "readinessProbe" in container and "livenessProbe" in container, name


def test_k8s_services_and_ports_agree(k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    triton = containers(k8s[("Deployment", "triton")])[0]
    named = {p["name"]: p["containerPort"] for p in triton["ports"]}
    args = " ".join(triton["args"])
    for kind in ("http", "grpc", "metrics"):
        assert f"--{kind}-port={named[kind]}" in args
    service = k8s[("Service", "triton")]
    pods = k8s[("Deployment", "triton")]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pods.items()
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert all(p["targetPort"] in named for p in ports.values())
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    config = k8s[("ConfigMap", "skinbatch-consumer")]["data"]
    assert config["SKINBATCH_TRITON_URL"] == f"triton:{ports['grpc']['port']}"
    consumer = containers(k8s[("Deployment", "skinbatch-consumer")])[0]
    assert consumer["ports"][0]["containerPort"] == int(config["SKINBATCH_METRICS_PORT"])
    assert config["SKINBATCH_METRICS_HOST"] == "0.0.0.0"


def test_k8s_consumer_settings_are_cli_options(
    k8s: dict[tuple[str, str], dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from skinbatch.consumer.cli import consume
    from skinbatch.consumer.config import ConsumerConfig

    deployment = k8s[("Deployment", "skinbatch-consumer")]
    config = k8s[("ConfigMap", "skinbatch-consumer")]["data"]
    # Secrets come as files (SKINBATCH_*_FILE, mounted from Secrets): here, one local file stands for each.
    secret = tmp_path / "secret"
    secret.write_text("from-a-secret\n")
    env = {**config, **{e["name"]: str(secret) if e["name"].endswith("_FILE") else "from-a-secret"
                        for e in containers(deployment)[0]["env"]}}
    known = consume_envvars()
    assert not sorted(set(env) - set(known)), f"not options of `skinbatch consume`: {sorted(set(env) - set(known))}"
    for name in known:
        monkeypatch.delenv(name, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    params = consume.make_context("consume", []).params
    parsed = ConsumerConfig.from_values(**{k: v for k, v in params.items() if v is not None and k != "log_level"})
    # The CA file is mounted from a Secret in the cluster; here only the settings' form is checked.
    assert parsed.kafka_connection(check_files=False).client_kwargs()["security_protocol"] == "SASL_SSL"
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(config["SKINBATCH_DRAIN_TIMEOUT_S"])
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_k8s_uses_the_same_ngc_release(k8s: dict[tuple[str, str], dict[str, Any]], dotenv: dict[str, str]) -> None:
    images = {i["name"]: i["newTag"] for i in yaml.safe_load((K8S / "kustomization.yaml").read_text())["images"]}
    assert images["nvcr.io/nvidia/tritonserver"] == f"{dotenv['NGC_RELEASE']}-py3"
    job = containers(k8s[("Job", "skinbatch-converter")])[0]
    assert {e["name"]: e["value"] for e in job["env"]}["NGC_RELEASE"] == dotenv["NGC_RELEASE"]
    selectors = {obj["spec"]["template"]["spec"]["nodeSelector"]["nvidia.com/gpu.product"]
                 for (kind, name), obj in k8s.items() if kind in ("Job", "Deployment") and name != "skinbatch-consumer"}
    assert len(selectors) == 1, "the converter must build on the GPU model Triton serves on"


def test_k8s_kustomize_renders() -> None:
    result = subprocess.run(kustomize_command(K8S), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    kinds = sorted(doc["kind"] for doc in yaml.safe_load_all(result.stdout))
    assert kinds == ["ConfigMap", "Deployment", "Deployment", "Job"] + ["NetworkPolicy"] * 7 + [
        "PersistentVolumeClaim", "PersistentVolumeClaim", "PodDisruptionBudget", "PodDisruptionBudget",
        "PodMonitor", "PrometheusRule", "ScaledObject", "ScaledObject", "Service"] + ["ServiceAccount"] * 3 + [
        "ServiceMonitor", "TriggerAuthentication"]
    assert all(doc["metadata"]["namespace"] == "skinbatch" for doc in yaml.safe_load_all(result.stdout))


def test_consumers_share_tritons_shared_memory(services: dict[str, Any]) -> None:
    """System shared memory needs one /dev/shm: the consumers join Triton's IPC namespace."""
    assert services["triton"]["ipc"] == "shareable"
    assert services["consumer"]["ipc"] == "service:triton"
    assert environment(services["consumer"])["SKINBATCH_SHARED_MEMORY"] in ("auto", "on")


# -- hardening: the rules checkov applies to the Kubernetes manifests, for compose.yaml -------------------

def test_every_service_runs_unprivileged_and_read_only(services: dict[str, Any]) -> None:
    for name, service in services.items():
        user = str(service.get("user", ""))
        assert user and user.split(":")[0] not in ("root", "0"), f"{name}: runs as root (set `user:`)"
        assert service.get("read_only") is True, f"{name}: the root filesystem is writable"
        assert service.get("cap_drop") == ["ALL"] and not service.get("cap_add"), f"{name}: capabilities kept"
        assert "no-new-privileges:true" in service.get("security_opt", []), f"{name}: privileges can escalate"
        assert not service.get("privileged") and service.get("network_mode") != "host", name
        for volume in service.get("volumes", []):
            assert not volume.startswith("/var/run/docker.sock"), name


def test_writable_paths_are_tmpfs_or_volumes(services: dict[str, Any]) -> None:
    """A read-only root needs /tmp writable; what a program keeps goes to a named volume."""
    for name, service in services.items():
        tmpfs = [t.split(":")[0] for t in service.get("tmpfs", [])]
        assert "/tmp" in tmpfs, f"{name}: no writable /tmp"


def test_every_service_has_cpu_and_memory_limits(services: dict[str, Any]) -> None:
    for name, service in services.items():
        limits = service.get("deploy", {}).get("resources", {}).get("limits", {})
        assert limits.get("cpus") and limits.get("memory"), f"{name}: no CPU or memory limit"


def test_gpus_are_still_reserved_next_to_the_limits(services: dict[str, Any]) -> None:
    for name in ("triton", "converter"):
        resources = services[name]["deploy"]["resources"]
        assert resources["limits"] and resources["reservations"]["devices"][0]["driver"] == "nvidia", name


def test_no_plaintext_listener_is_published(services: dict[str, Any], dotenv: dict[str, str]) -> None:
    """Kafka's published listener is SASL_SSL; the HTTP endpoints (Triton, Prometheus, Grafana) are
    published on PUBLISH_ADDR only, which is loopback unless an operator sets it (docs/deploy.md)."""
    env = environment(services["kafka"])
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    ports = {int(url.rsplit(":", 1)[1]): name for name, url in
             (item.split("://") for item in env["KAFKA_LISTENERS"].split(","))}
    for published in container_ports(services["kafka"]):
        assert protocols[ports[published]] in ("SASL_SSL", "SSL"), f"Kafka publishes {ports[published]} in plaintext"
    assert env["KAFKA_LISTENER_NAME_EXTERNAL_SSL_KEYSTORE_LOCATION"].startswith("/run/secrets/")
    assert "/run/secrets/" in env["KAFKA_OPTS"]
    assert dotenv["PUBLISH_ADDR"] in ("127.0.0.1", "::1")
    raw = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    for name, service in raw["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("${PUBLISH_ADDR}:"), f"{name}: {port} is not bound to PUBLISH_ADDR"


def test_secrets_are_files_not_variables(services: dict[str, Any], raw: dict[str, Any]) -> None:
    declared = raw["secrets"]
    assert set(declared) == {"triton_admin_key", "kafka_server_jaas", "kafka_external_pem"}
    for secret in declared.values():
        assert secret["file"].startswith("./secrets/"), "secrets live in compose/secrets/ (git-ignored)"
    for name, service in services.items():
        for key, value in environment(service).items():
            if re.search(r"PASSWORD|TOKEN|SECRET|ADMIN_KEY", key) and not key.endswith("_FILE"):
                assert name == "grafana" and key == "GF_SECURITY_ADMIN_PASSWORD", f"{name}: {key} in the environment"
            if key.endswith("_FILE") and value:
                used = [s.split(":")[0] if isinstance(s, str) else s["source"] for s in service.get("secrets", [])]
                assert value.removeprefix("/run/secrets/") in used, f"{name}: {key}={value} is not a secret it mounts"
    consumer = environment(services["consumer"])
    assert consumer["SKINBATCH_TRITON_ADMIN_KEY_FILE"] == "/run/secrets/triton_admin_key"
    assert not consumer.get("SKINBATCH_SASL_PASSWORD")


def test_triton_closes_its_admin_apis_with_the_key_file(raw: dict[str, Any]) -> None:
    triton = raw["services"]["triton"]
    assert "triton_admin_key" in triton["secrets"]
    script = " ".join(triton["entrypoint"])
    restricted = "model-repository,shared-memory,logging,trace:admin-key="
    assert f"--grpc-restricted-protocol={restricted}" in script and f"--http-restricted-api={restricted}" in script
    assert "/run/secrets/triton_admin_key" in script and 'exec "$$0" "$$@"' in script
    assert triton["command"][0] == "tritonserver"
