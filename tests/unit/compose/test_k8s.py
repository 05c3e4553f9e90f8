"""The Kubernetes manifests (compose/k8s) as the cluster gets them, rendered by ``kubectl kustomize``, and
checkov (a third-party scanner of Kubernetes manifests and Dockerfiles) over compose/.

* every pod passes the "restricted" Pod Security Standard field by field, with requests and limits;
* KEDA scales the consumers on the group's lag (SASL_SSL through a TriggerAuthentication) up to at
  most the request topic's partitions, and Triton on queue time against compute time;
* the disruption budgets let a node drain at the replica minimums; topology spread; network policies;
* the consumer's probes are /livez and /readyz; secrets reach the consumer as files;
* the PrometheusRule is the alert file, regenerated; ``promtool check rules`` on both forms;
* checkov reports no failed check (installed in a virtualenv of its own: ``make checkov``).

kubectl (or kustomize), promtool and checkov are real tools: missing, these tests skip and say why,
except in CI (the variable CI set), where they fail.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.needs import kustomize_command, need_module, need_tool

yaml = need_module("yaml", "PyYAML, in the `test` extra")

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "compose"
K8S = COMPOSE / "k8s"
ALERTS = COMPOSE / "prometheus" / "alerts.yml"
RULE_SCRIPT = K8S / "prometheus_rule.py"
CHECKOV_VENV = ROOT / ".venv-checkov"
GPU_WORKLOADS = {"triton", "skinbatch-converter"}


def tool(name: str, why: str) -> str:
    return need_tool(name, why)


def dotenv() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (COMPOSE / ".env").read_text().splitlines()
             if "=" in line and not line.lstrip().startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    result = subprocess.run(kustomize_command(K8S), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_templates(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d["spec"]["template"] for d in docs if d["kind"] in ("Deployment", "Job")}


def test_the_objects(rendered: list[dict[str, Any]]) -> None:
    kinds = {d["kind"] for d in rendered}
    assert {"Deployment", "Job", "Service", "ConfigMap", "ServiceAccount", "PodDisruptionBudget", "NetworkPolicy",
            "ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PodMonitor", "PrometheusRule"} <= kinds
    assert set(pod_templates(rendered)) == {"triton", "skinbatch-consumer", "skinbatch-converter"}
    assert all(d["metadata"]["namespace"] == "skinbatch" for d in rendered)


def test_the_namespace_enforces_restricted() -> None:
    namespace = yaml.safe_load((K8S / "namespace.yaml").read_text())
    assert namespace["kind"] == "Namespace" and namespace["metadata"]["name"] == "skinbatch"
    labels = namespace["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted", mode


@pytest.mark.parametrize("workload", ["triton", "skinbatch-consumer", "skinbatch-converter"])
def test_every_container_is_restricted_and_bounded(rendered: list[dict[str, Any]], workload: str) -> None:
    """The "restricted" Pod Security Standard, and CPU/memory requests and limits on every container."""
    spec = pod_templates(rendered)[workload]["spec"]
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] >= 10000
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    accounts = by_kind(rendered, "ServiceAccount")
    assert accounts[spec["serviceAccountName"]]["automountServiceAccountToken"] is False
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
    assert not any("hostPath" in v for v in spec.get("volumes", []))
    mounts_needed = set()
    for container in spec["containers"] + spec.get("initContainers", []):
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False, container["name"]
        assert ctx["readOnlyRootFilesystem"] is True, container["name"]
        assert ctx["runAsNonRoot"] is True and ctx.get("runAsUser", pod["runAsUser"]) >= 10000
        assert ctx["capabilities"]["drop"] == ["ALL"] and not ctx["capabilities"].get("add")
        assert ctx.get("privileged") is not True
        assert ctx.get("seccompProfile", pod["seccompProfile"])["type"] == "RuntimeDefault"
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), (container["name"], kind)
        if workload in GPU_WORKLOADS:
            assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        mounts_needed |= {m["mountPath"] for m in container["volumeMounts"]}
    assert "/tmp" in mounts_needed, "a read-only root needs a writable /tmp (emptyDir)"


def test_secrets_reach_the_consumer_as_files(rendered: list[dict[str, Any]]) -> None:
    spec = pod_templates(rendered)["skinbatch-consumer"]["spec"]
    (container,) = spec["containers"]
    assert not [e for e in container.get("env", []) if "valueFrom" in e], "a secret in an environment variable"
    config = by_kind(rendered, "ConfigMap")["skinbatch-consumer"]["data"]
    assert not [k for k in config if re.search(r"PASSWORD$|TOKEN$|SECRET$|ADMIN_KEY$", k)]
    secret_mounts = {m["mountPath"] for m in container["volumeMounts"]
                     if any(v["name"] == m["name"] and "secret" in v for v in spec["volumes"])}
    files = {e["name"]: e["value"] for e in container["env"] if e["name"].endswith("_FILE")}
    assert set(files) == {"SKINBATCH_SASL_PASSWORD_FILE", "SKINBATCH_TRITON_ADMIN_KEY_FILE"}
    for name, path in files.items():
        assert str(Path(path).parent) in secret_mounts, f"{name}: {path} is not in a mounted Secret"
    assert config["SKINBATCH_SSL_CAFILE"].rsplit("/", 1)[0] in secret_mounts


def test_triton_closes_its_admin_apis(rendered: list[dict[str, Any]]) -> None:
    (container,) = pod_templates(rendered)["triton"]["spec"]["containers"]
    key = {e["name"]: e for e in container["env"]}["TRITON_ADMIN_KEY"]["valueFrom"]["secretKeyRef"]
    assert key == {"name": "skinbatch-triton-admin", "key": "admin-key"}
    restricted = "model-repository,shared-memory,logging,trace:admin-key=$(TRITON_ADMIN_KEY)"
    assert f"--grpc-restricted-protocol={restricted}" in container["args"]
    assert f"--http-restricted-api={restricted}" in container["args"]


def test_the_consumer_probes_its_health_endpoints(rendered: list[dict[str, Any]]) -> None:
    (container,) = pod_templates(rendered)["skinbatch-consumer"]["spec"]["containers"]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"]
    config = by_kind(rendered, "ConfigMap")["skinbatch-consumer"]["data"]
    assert int(config["SKINBATCH_METRICS_PORT"]) == port
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/livez"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == "metrics"


def test_consumers_scale_on_lag_up_to_the_partitions(rendered: list[dict[str, Any]]) -> None:
    scaled = by_kind(rendered, "ScaledObject")["skinbatch-consumer"]
    config = by_kind(rendered, "ConfigMap")["skinbatch-consumer"]["data"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == "skinbatch-consumer"
    (trigger,) = scaled["spec"]["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert meta["consumerGroup"] == config["SKINBATCH_GROUP_ID"]
    assert meta["topic"] == config["SKINBATCH_REQUEST_TOPIC"]
    assert meta["bootstrapServers"] == config["SKINBATCH_BOOTSTRAP_SERVERS"]
    assert int(meta["lagThreshold"]) > 0 and meta["allowIdleConsumers"] == "false"
    # SASL_SSL with the consumers' own mechanism, credentials through a TriggerAuthentication.
    assert config["SKINBATCH_SECURITY_PROTOCOL"] == "SASL_SSL" and meta["tls"] == "enable"
    keda_sasl = {"SCRAM-SHA-512": "scram_sha512", "SCRAM-SHA-256": "scram_sha256", "PLAIN": "plaintext"}
    assert meta["sasl"] == keda_sasl[config["SKINBATCH_SASL_MECHANISM"]]
    auth = by_kind(rendered, "TriggerAuthentication")[trigger["authenticationRef"]["name"]]
    assert {r["parameter"] for r in auth["spec"]["secretTargetRef"]} == {"username", "password", "ca"}
    partitions = int(dotenv()["REQUEST_PARTITIONS"])
    assert 2 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"] <= partitions


def test_triton_scales_on_queue_against_compute_time(rendered: list[dict[str, Any]], tmp_path: Path) -> None:
    from skinbatch.contract import INCEPTION_STEP

    scaled = by_kind(rendered, "ScaledObject")["triton"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == "triton"
    assert 2 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and float(trigger["metadata"]["threshold"]) > 0
    query = trigger["metadata"]["query"]
    assert "nv_inference_queue_duration_us" in query and "nv_inference_compute_infer_duration_us" in query
    assert query.count(f'model="{INCEPTION_STEP}"') == 2
    rules = tmp_path / "query.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "keda", "rules": [
        {"record": "skinbatch:triton_queue_compute_ratio", "expr": query}]}]}))
    promtool = tool("promtool", "the autoscaler's PromQL cannot be parsed (Debian: apt-get install prometheus)")
    result = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_triton_service_is_headless(rendered: list[dict[str, Any]]) -> None:
    service = by_kind(rendered, "Service")["triton"]
    assert service["spec"]["clusterIP"] == "None"
    config = by_kind(rendered, "ConfigMap")["skinbatch-consumer"]["data"]
    assert config["SKINBATCH_TRITON_URL"].split(":")[0] == "triton"
    # Each consumer spreads over every address the headless name resolves to, not one connection.
    assert config["SKINBATCH_TRITON_DISCOVERY"] == "dns"


def minimum_replicas(rendered: list[dict[str, Any]], workload: str) -> int:
    scaled = [s for s in by_kind(rendered, "ScaledObject").values()
              if s["spec"]["scaleTargetRef"]["name"] == workload]
    return scaled[0]["spec"].get("minReplicaCount", 0) if scaled else by_kind(rendered, "Deployment")[
        workload]["spec"]["replicas"]


@pytest.mark.parametrize("workload", ["triton", "skinbatch-consumer"])
def test_disruption_budgets_let_a_node_drain(rendered: list[dict[str, Any]], workload: str) -> None:
    """At the replica minimum a drain may still evict one pod, and at least one keeps serving."""
    labels = pod_templates(rendered)[workload]["metadata"]["labels"]
    budgets = [b for b in by_kind(rendered, "PodDisruptionBudget").values()
               if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
    assert len(budgets) == 1, f"{workload}: {len(budgets)} disruption budgets"
    spec = budgets[0]["spec"]
    least = minimum_replicas(rendered, workload)
    allowed = spec["maxUnavailable"] if "maxUnavailable" in spec else least - spec["minAvailable"]
    assert isinstance(allowed, int), "percentages round in ways that can block a drain; use a count"
    assert 1 <= allowed < least, f"{workload}: {allowed} evictions allowed at {least} replicas"


@pytest.mark.parametrize("workload", ["triton", "skinbatch-consumer"])
def test_replicas_spread_over_nodes(rendered: list[dict[str, Any]], workload: str) -> None:
    template = pod_templates(rendered)[workload]
    keys = {c["topologyKey"] for c in template["spec"]["topologySpreadConstraints"]
            if c["labelSelector"]["matchLabels"].items() <= template["metadata"]["labels"].items()}
    assert "kubernetes.io/hostname" in keys


def selected(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    return policy["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()


def test_network_policies_deny_by_default_and_allow_the_flows(rendered: list[dict[str, Any]]) -> None:
    policies = by_kind(rendered, "NetworkPolicy")
    deny = policies["default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    templates = pod_templates(rendered)
    for name, template in templates.items():
        labels = template["metadata"]["labels"]
        assert [p for p in policies.values() if p["spec"]["podSelector"] and selected(p, labels)], name

    def ports(rules: list[dict[str, Any]], peer_label: str) -> set[int]:
        found = set()
        for rule in rules:
            peers = rule.get("to", rule.get("from", []))
            if any(p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == peer_label
                   for p in peers):
                found |= {p["port"] for p in rule["ports"]}
        return found

    consumer = policies["skinbatch-consumer"]["spec"]
    assert 8001 in ports(consumer["egress"], "triton") and 9092 in ports(consumer["egress"], "kafka")
    assert {r["ports"][0]["port"] for r in consumer["egress"] if "ipBlock" in r["to"][0]} >= {443, 9092}
    triton = policies["triton"]["spec"]
    assert ports(triton["ingress"], "skinbatch-consumer") >= {8001}
    assert ports(triton["ingress"], "prometheus") == {8002}
    assert triton["egress"] == []
    kafka_from = [p for r in policies["kafka-from-keda"]["spec"]["ingress"] for p in r["from"]]
    assert any(p.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") == "keda"
               for p in kafka_from)


def test_monitoring_scrapes_triton_and_the_consumers(rendered: list[dict[str, Any]]) -> None:
    triton = by_kind(rendered, "ServiceMonitor")["triton"]["spec"]
    service = by_kind(rendered, "Service")["triton"]
    assert triton["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert triton["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    consumer = by_kind(rendered, "PodMonitor")["skinbatch-consumer"]["spec"]
    (container,) = pod_templates(rendered)["skinbatch-consumer"]["spec"]["containers"]
    assert consumer["podMetricsEndpoints"][0]["port"] in {p["name"] for p in container["ports"]}


# -- the alert rules in two forms -------------------------------------------------------------------------

def test_the_prometheus_rule_is_generated_from_the_alert_file(rendered: list[dict[str, Any]]) -> None:
    result = subprocess.run([sys.executable, str(RULE_SCRIPT), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rule = by_kind(rendered, "PrometheusRule")["skinbatch"]
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]


def test_a_stale_prometheus_rule_is_caught(tmp_path: Path) -> None:
    """The check fails when alerts.yml changed and the PrometheusRule was not regenerated."""
    sys.path.insert(0, str(K8S))
    try:
        import prometheus_rule
    finally:
        sys.path.remove(str(K8S))
    rules = yaml.safe_load(ALERTS.read_text())
    rules["groups"][0]["rules"][0]["for"] = "1m" if rules["groups"][0]["rules"][0].get("for") != "1m" else "2m"
    edited = tmp_path / "alerts.yml"
    edited.write_text(yaml.safe_dump(rules))
    assert prometheus_rule.render(edited) != (K8S / "prometheus-rule.yaml").read_text()
    assert prometheus_rule.render(ALERTS) == (K8S / "prometheus-rule.yaml").read_text()


def test_promtool_accepts_the_rules_in_both_forms(tmp_path: Path) -> None:
    promtool = tool("promtool", "the rules cannot be checked (Debian: apt-get install prometheus)")
    rule = yaml.safe_load((K8S / "prometheus-rule.yaml").read_text())
    extracted = tmp_path / "prometheus-rule-groups.yml"
    extracted.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    for path in (ALERTS, extracted):
        result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, f"{path.name}: {result.stdout}{result.stderr}"


# -- checkov --------------------------------------------------------------------------------------------------

def checkov() -> str:
    local = CHECKOV_VENV / "bin" / "checkov"
    if local.is_file():
        return str(local)
    return tool("checkov", "compose/ cannot be scanned; install it in a virtualenv of its own with `make checkov`")


def test_checkov_finds_no_failed_check(tmp_path: Path) -> None:
    """Every check passes or is skipped next to its object with a reason (checkov.io/skipN, # checkov:skip)."""
    result = subprocess.run([checkov(), "-d", str(COMPOSE), "-o", "json",
                             "--skip-download", "--framework", "kubernetes", "kustomize", "dockerfile"],
                            capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert result.stdout.strip(), result.stderr[-3000:]
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    frameworks = {r["check_type"] for r in reports}
    assert {"kubernetes", "dockerfile"} <= frameworks, frameworks
    failed = [(r["check_type"], c["check_id"], c["resource"], c.get("file_path"))
              for r in reports for c in r["results"]["failed_checks"]]
    assert not failed and not any(r["summary"]["failed"] for r in reports), "\n".join(map(str, failed))
    passed = sum(r["summary"]["passed"] for r in reports)
    assert passed > 100, "checkov scanned almost nothing"
    for report in reports:
        for check in report["results"]["skipped_checks"]:
            reason = (check.get("check_result") or {}).get("suppress_comment", "")
            assert len(reason) > 20, f"{check['check_id']} on {check['resource']} skipped without a reason"
