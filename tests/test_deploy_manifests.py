"""deploy/: the Kubernetes manifests and Prometheus configs parse and fit together."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from exporter.config import parse_config
from exporter.sharding import Shard
from tests.support import require_binary

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
K8S = DEPLOY / "kubernetes"
PROMETHEUS = DEPLOY / "prometheus"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _manifests() -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in _docs(path):
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_binary("promtool"), *args], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip


def test_every_kubernetes_manifest_parses_with_kind_and_name() -> None:
    for path in sorted(K8S.glob("*.yaml")):
        for doc in _docs(path):
            assert {"apiVersion", "kind", "metadata"} <= set(doc), path
            assert doc["metadata"]["name"], path


def test_statefulset_ordinal_is_the_shard_index_and_count_is_the_replicas() -> None:
    manifests = _manifests()
    sts = manifests[("StatefulSet", "dnsgap")]
    spec = sts["spec"]
    container = spec["template"]["spec"]["containers"][0]
    env = {item["name"]: item for item in container["env"]}
    assert "--shard=$(SHARD_INDEX)/$(SHARD_COUNT)" in container["args"]
    assert env["SHARD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['apps.kubernetes.io/pod-index']")
    assert int(env["SHARD_COUNT"]["value"]) == spec["replicas"]
    for index in range(spec["replicas"]):  # every ordinal makes a valid --shard
        assert Shard.parse(f"{index}/{env['SHARD_COUNT']['value']}").index == index


def test_statefulset_selector_service_and_ports_agree() -> None:
    manifests = _manifests()
    sts, service = manifests[("StatefulSet", "dnsgap")], manifests[("Service", "dnsgap")]
    spec = sts["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert spec["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"  # stable per-replica names for hashmod
    container = spec["template"]["spec"]["containers"][0]
    port_names = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] in port_names
    listen = next(arg for arg in container["args"] if arg.startswith("--listen="))
    assert listen.endswith(f":{port_names['http-metrics']}")
    assert container["readinessProbe"]["httpGet"]["path"] == "/-/ready"


def test_configmap_holds_a_valid_dnsgap_config_where_the_pod_reads_it() -> None:
    manifests = _manifests()
    configmap = manifests[("ConfigMap", "dnsgap")]
    pod = manifests[("StatefulSet", "dnsgap")]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    config_arg = next(arg for arg in container["args"] if arg.startswith("--config="))
    path = Path(config_arg.removeprefix("--config="))
    mount = next(m for m in container["volumeMounts"] if path.parent == Path(m["mountPath"]))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    config = parse_config(configmap["data"][path.name], "configmap.yaml")
    assert config.targets
    assert config.scheduler.duration_histogram is False


def _snake(key: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m[1].lower(), key)


def _operator_scrape_config(doc: dict[str, Any]) -> dict[str, Any]:
    """A Prometheus scrape_config from a ScrapeConfig custom resource's spec."""
    spec = doc["spec"]
    relabel = [{_snake(k): v for k, v in rule.items()} for rule in spec["relabelings"]]
    return {"job_name": doc["metadata"]["name"], "metrics_path": spec["metricsPath"],
            "scrape_interval": spec["scrapeInterval"], "scrape_timeout": spec["scrapeTimeout"],
            "static_configs": spec["staticConfigs"], "relabel_configs": relabel}  # fmt: skip


def _probe_scrape_config(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]
    static = spec["targets"]["staticConfig"]
    relabel = [{_snake(k): v for k, v in rule.items()} for rule in static["relabelingConfigs"]]
    return {"job_name": doc["metadata"]["name"], "metrics_path": spec["prober"]["path"],
            "scrape_interval": spec["interval"], "scrape_timeout": spec["scrapeTimeout"],
            "static_configs": [{"targets": static["static"]}],
            "relabel_configs": [*relabel, {"target_label": "__address__",
                                           "replacement": spec["prober"]["url"]}]}  # fmt: skip


def test_prometheus_operator_probe_and_scrapeconfig_pass_promtool(tmp_path: Path) -> None:
    manifests = _manifests()
    jobs = [_operator_scrape_config(manifests[("ScrapeConfig", "dnsgap-probe-hashmod")]),
            _probe_scrape_config(manifests[("Probe", "dnsgap-probe")])]  # fmt: skip
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"scrape_configs": jobs}))
    result = _promtool("check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr


def test_hashmod_modulus_matches_the_replicas() -> None:
    manifests = _manifests()
    replicas = manifests[("StatefulSet", "dnsgap")]["spec"]["replicas"]
    scrape = manifests[("ScrapeConfig", "dnsgap-probe-hashmod")]["spec"]["relabelings"]
    assert [rule["modulus"] for rule in scrape if rule.get("action") == "hashmod"] == [replicas]
    sharded = yaml.safe_load((PROMETHEUS / "prometheus-sharded.yml").read_text())
    jobs = {job["job_name"]: job for job in sharded["scrape_configs"]}
    replicas_scraped = len(jobs["dnsgap"]["static_configs"][0]["targets"])
    modulus = [rule["modulus"] for rule in jobs["dnsgap-probe"]["relabel_configs"]
               if rule.get("action") == "hashmod"]  # fmt: skip
    assert modulus == [replicas_scraped]


def test_sharded_prometheus_config_passes_promtool() -> None:
    result = _promtool("check", "config", str(PROMETHEUS / "prometheus-sharded.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
