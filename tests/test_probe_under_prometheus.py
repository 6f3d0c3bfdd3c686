"""/probe under a real Prometheus (Debian `prometheus`): the shipped multi-target job
(deploy/prometheus/prometheus-probe.yml) scrapes 50 /probe targets every 5 s from
a `dnsgap serve` with the default /probe caps. Twenty of the servers never answer,
so their probes hold a slot for their whole timeout and many scrapes overlap
(20 x 3 s / 5 s = 12 at once on average): every scrape must still succeed."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.refserver import ServerBehaviour
from exporter.refserver import start as start_refserver
from tests.conftest import free_port
from tests.hostile import BackgroundLoop
from tests.live_demo import ROOT
from tests.test_probe_endpoint import exporter_process, http_get
from tests.test_prometheus_e2e import _query, _running_prometheus, _wait

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

HEALTHY, SILENT = 30, 20
PROBE_TIMEOUT = "3s"
ZONE = "demo.example."


def dnsgap_config(dns_port: int, silent_port: int) -> str:
    """50 targets with one SOA probe each; no `http.probe` section: the defaults."""
    targets = [{"name": f"healthy{i}", "server": f"127.0.0.1:{dns_port}", "zone": ZONE,
                "probes": ["soa"]} for i in range(HEALTHY)]  # fmt: skip
    targets += [{"name": f"silent{i}", "server": f"127.0.0.1:{silent_port}", "zone": ZONE,
                 "probes": ["soa"]} for i in range(SILENT)]  # fmt: skip
    config = {
        "probes": {"soa": {"kind": "query", "qname": "@", "qtype": "SOA",
                           "timeout": PROBE_TIMEOUT, "interval": "1h"}},
        "targets": targets,
    }  # fmt: skip
    return yaml.safe_dump(config, sort_keys=False)


def prometheus_config(exporter: str) -> dict[str, Any]:
    """The shipped /probe job, pointed at our targets and exporter, every 5 s."""
    shipped = yaml.safe_load((ROOT / "deploy/prometheus/prometheus-probe.yml").read_text())
    job = next(j for j in shipped["scrape_configs"] if j["job_name"] == "dnsgap-probe")
    job["scrape_interval"] = job["scrape_timeout"] = "5s"
    job["static_configs"] = [{"targets": [f"healthy{i};soa" for i in range(HEALTHY)]
                              + [f"silent{i};soa" for i in range(SILENT)]}]  # fmt: skip
    job["relabel_configs"][-1]["replacement"] = exporter
    return {"global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
            "scrape_configs": [job]}  # fmt: skip


def test_prometheus_scraping_50_probe_targets_every_5s_sees_up_1_for_all(
    tmp_path: Path,
) -> None:
    background = BackgroundLoop()
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        dns = background.run(start_refserver(ServerBehaviour()))
        silent.bind(("127.0.0.1", 0))  # bound, never read: probes time out
        config = tmp_path / "dnsgap.yml"
        config.write_text(dnsgap_config(dns.port, silent.getsockname()[1]))
        port = free_port()
        exporter = f"127.0.0.1:{port}"
        prom_config = tmp_path / "prometheus.yml"
        prom_config.write_text(yaml.safe_dump(prometheus_config(exporter), sort_keys=False))
        with exporter_process(config, port), _running_prometheus(
            prom_config, tmp_path / "data"
        ) as prometheus:  # fmt: skip
            job = 'job="dnsgap-probe"'

            def three_scrapes_each() -> bool:
                counts = _query(prometheus, f"count_over_time(up{{{job}}}[1m])")
                return len(counts) == HEALTHY + SILENT and all(
                    float(r["value"][1]) >= 3 for r in counts)  # fmt: skip

            _wait("three scrapes of every /probe target", three_scrapes_each, 60)
            # Every scrape, not only the latest, succeeded.
            worst = _query(prometheus, f"min_over_time(up{{{job}}}[1m])")
            failed = sorted(r["metric"]["instance"] for r in worst if r["value"][1] != "1")
            assert failed == [], f"scrapes failed for {failed}"
            # And Prometheus got real probe results: the silent ones as no_response.
            answered = _query(prometheus, f"dnsgap_probe_success{{{job}}} == 1")
            assert len(answered) == HEALTHY
            silence = _query(prometheus, f'dnsgap_support_gap{{{job},cause="no_response"}} == 1')
            assert {r["metric"]["target"] for r in silence} == {
                f"silent{i}" for i in range(SILENT)}  # fmt: skip
            metrics = http_get(f"http://{exporter}/metrics")
        refused = [line for line in metrics.splitlines()
                   if line.startswith("dnsgap_probe_requests_refused_total{")]  # fmt: skip
        assert len(refused) == 3
        assert all(line.endswith(" 0") for line in refused), refused
        background.run(dns.close())
    finally:
        silent.close()
        background.close()
