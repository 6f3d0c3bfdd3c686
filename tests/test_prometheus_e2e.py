"""End to end: a real Prometheus (Debian `prometheus`) scrapes `dnsgap demo` with the
shipped alert rules, their `for:` shortened in a test copy. The job is relabelled as the
Prometheus Operator does for a PodMonitor (`monitoring/dnsgap`). Through Prometheus'
HTTP API: the README's series exist with the documented labels, every Grafana panel
query returns data, and the alert scenario of issue 12 holds: a new-gap alert fires for
demo-regress after its change and for no other target, the exporter restarted under a
new instance label raises no new-gap alert, and the exporter stopped raises
DnsgapExporterDown."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.demo import REGRESS_AFTER_SECONDS
from tests.conftest import free_port
from tests.live_demo import DEMO_SETTLED, ROOT, running_demo, wait_for_metrics
from tests.support import stop_process
from tests.test_metric_reference import DEMO_INFO_EXTRA_LABELS, readme_metric_table

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))

#: The test copy of alerts.yml shortens every `for:` to this; nothing else changes.
TEST_FOR = "5s"
#: What the Prometheus Operator makes of `PodMonitor monitoring/dnsgap`: the scrape
#: job's name, and the `job` label it relabels every series to.
OPERATOR_SCRAPE_JOB = "podMonitor/monitoring/dnsgap/0"
JOB = "monitoring/dnsgap"
NEW_GAP_ALERTS = ("DnsgapNewNotImp", "DnsgapNewDsoTypeNotImplemented", "DnsgapNewGap")
PAIR_STATE_ALERTS = ("DnsgapProbeFailing", "DnsgapProbeSilent", "DnsgapDsoNotImplemented",
                     "DnsgapUnexpectedAnswer", "DnsgapFallbackFailing", "DnsgapProbeFlapping")

#: Grafana variables -> values a plain /api/v1/query accepts (All = ".*").
GRAFANA_VARIABLES = {
    "${target}": ".*", "$target": ".*", "${probe}": ".*", "$probe": ".*",
    "${job}": ".*", "$job": ".*", "${instance}": ".*", "$instance": ".*",
    "${cause}": ".*", "$cause": ".*", "${kind}": ".*", "$kind": ".*",
    "${transport}": ".*", "$transport": ".*", "${unexpected}": "0", "$unexpected": "0",
    "$__rate_interval": "1m", "$__interval": "15s", "$__range": "1m",
}  # fmt: skip


@dataclass(frozen=True)
class Stack:
    demo: str
    prometheus: str
    test_rules: str
    #: Prometheus' file_sd list of the job's targets: rewrite it to move the exporter.
    targets_file: Path
    tmp: Path
    #: time.monotonic() when Prometheus became ready
    started: float


def shortened_rules(original: dict[str, Any], for_: str = TEST_FOR) -> dict[str, Any]:
    """alerts.yml with every `for:` shortened; group names say it is the copy."""
    groups = []
    for group in original["groups"]:
        rules = []
        for shipped in group["rules"]:
            rule = dict(shipped)
            if "for" in rule:
                rule["for"] = for_
            rules.append(rule)
        groups.append({**group, "name": f"{group['name']}-test-copy", "rules": rules})
    return {"groups": groups}


#: The name tests/test_chaos_alerts.py imports.
_test_rules = shortened_rules


def _api(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]


def _query(base: str, expr: str) -> list[dict[str, Any]]:
    data = _api(base, "/api/v1/query", query=expr)
    result: list[dict[str, Any]] = data["result"]
    return result if data["resultType"] == "vector" else [{"value": result}]


@contextlib.contextmanager
def _running_prometheus(config: Path, storage: Path) -> Iterator[str]:
    binary = shutil.which("prometheus") or pytest.fail(
        "prometheus is not installed (see scripts/install-system-deps.sh)")
    port = free_port()
    log = (storage.parent / "prometheus.log").open("w")
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={storage}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail("prometheus did not become ready:\n"
                            + (storage.parent / "prometheus.log").read_text())  # fmt: skip
            time.sleep(0.2)
        yield base
    finally:
        stop_process(process, grace=15)
        log.close()


def _point_job_at(targets_file: Path, base_url: str) -> None:
    """The job's one target, written atomically (Prometheus watches the file)."""
    tmp = targets_file.with_suffix(".tmp")
    tmp.write_text(json.dumps([{"targets": [base_url.removeprefix("http://")]}]))
    tmp.replace(targets_file)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("prometheus")
    rules = tmp / "alerts-test-copy.yml"
    rules.write_text(yaml.safe_dump(shortened_rules(yaml.safe_load(ALERTS.read_text())),
                                    sort_keys=False))  # fmt: skip
    targets_file = tmp / "dnsgap-targets.json"
    # The demo writes its config, so that a second exporter can probe its servers.
    with running_demo("--config-out", str(tmp / "demo.yml")) as demo:
        wait_for_metrics(demo, r"^dnsgap_build_info")
        _point_job_at(targets_file, demo)
        config = {
            "global": {"scrape_interval": "2s", "scrape_timeout": "2s",
                       "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [{
                "job_name": OPERATOR_SCRAPE_JOB,
                "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "5s"}],
                # As the Operator does: the job label is the PodMonitor's namespace/name.
                "relabel_configs": [{"target_label": "job", "replacement": JOB}],
            }],
        }  # fmt: skip
        config_file = tmp / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        with _running_prometheus(config_file, tmp / "data") as prometheus:
            yield Stack(demo, prometheus, str(rules), targets_file, tmp, time.monotonic())


def _wait(what: str, check: Any, seconds: float) -> Any:
    """Poll ``check()`` until it returns something truthy."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds}s")
        time.sleep(1)


def _active_alerts(stack: Stack) -> list[dict[str, Any]]:
    """Every pending or firing alert: {"labels", "state", "activeAt", ...}."""
    alerts: list[dict[str, Any]] = _api(stack.prometheus, "/api/v1/alerts")["alerts"]
    return alerts


def _firing(stack: Stack, alert: str, **where: str) -> list[dict[str, Any]]:
    return [a for a in _active_alerts(stack)
            if a["labels"]["alertname"] == alert and a["state"] == "firing"
            and all(a["labels"].get(k) == v for k, v in where.items())]  # fmt: skip


def _new_gap_alerts(stack: Stack) -> list[dict[str, Any]]:
    return [a for a in _active_alerts(stack) if a["labels"]["alertname"] in NEW_GAP_ALERTS]


# -- series ---------------------------------------------------------------------------


def test_prometheus_has_every_readme_metric_with_the_documented_labels(stack: Stack) -> None:
    rows = readme_metric_table()

    def series() -> list[dict[str, str]] | None:
        found: list[dict[str, str]] = _api(stack.prometheus, "/api/v1/series",
                                           **{"match[]": f'{{job="{JOB}",__name__=~"dnsgap_.+"}}'})
        names = {s["__name__"] for s in found}
        # Histograms are stored as their _bucket/_sum/_count series.
        missing = [r.name for r in rows
                   if r.name not in names and f"{r.name}_count" not in names]  # fmt: skip
        return None if missing else found

    found = _wait("every README metric scraped", series, 60)
    for row in rows:
        names = {row.name} if row.type != "histogram" else {
            f"{row.name}_bucket", f"{row.name}_sum", f"{row.name}_count"}
        label_sets = [(frozenset(s) - {"__name__", "job", "instance", "le"}, s)
                      for s in found if s["__name__"] in names]  # fmt: skip
        assert label_sets, row.name
        for labels, one in label_sets:
            if row.name == "dnsgap_probe_info" and one["kind"].startswith("dso_"):
                # DSO probes send no question: qtype="" is exported, and Prometheus
                # stores an empty label value as no label at all.
                assert labels | {"qtype"} >= row.labels, labels
                assert labels - row.labels <= DEMO_INFO_EXTRA_LABELS, labels
            elif row.name == "dnsgap_probe_info":
                assert row.labels <= labels, labels
                assert labels - row.labels <= DEMO_INFO_EXTRA_LABELS, labels
            else:
                assert labels == row.labels, (row.name, sorted(labels))


def test_gap_series_exist_at_zero_before_the_regression_and_one_after(stack: Stack) -> None:
    sel = f'job="{JOB}",target="demo-regress",probe="update",cause="not_implemented"'
    _wait("demo-regress/update NOTIMP", lambda: [
        r for r in _query(stack.prometheus, f"dnsgap_support_gap{{{sel}}}")
        if r["value"][1] == "1"], REGRESS_AFTER_SECONDS + 30)  # fmt: skip
    # The same series was there, at 0, before the gap: increase() sees the first NOTIMP.
    history = _query(stack.prometheus, f"min_over_time(dnsgap_support_gap{{{sel}}}[5m])")
    assert [r["value"][1] for r in history] == ["0"]


# -- dashboards -----------------------------------------------------------------------


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # collapsed rows nest their panels


def _panel_queries() -> list[tuple[str, str, str, bool]]:
    """(dashboard, panel title, expr, whether an empty result shows as 0 (noValue))."""
    out = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in _panels(dashboard.get("panels", [])):
            zero = "noValue" in panel.get("fieldConfig", {}).get("defaults", {})
            for target in panel.get("targets", []):
                if target.get("expr"):
                    out.append((path.name, panel.get("title", "?"), target["expr"], zero))
    return out


def _promql(expr: str) -> str:
    for variable in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(variable, GRAFANA_VARIABLES[variable])
    # `$1` is a label_replace() capture group, not a variable.
    assert not re.search(r"\$(?!\d)", expr), f"unsubstituted variable in {expr}"
    return expr


def test_dashboards_have_panel_queries() -> None:
    assert len(DASHBOARDS) >= 3
    assert len(_panel_queries()) >= 20


def test_every_dashboard_panel_query_returns_data(stack: Stack) -> None:
    # Range panels ($__range = 1m) need a minute of history, and the gap-change panels a
    # change: wait for demo-regress to regress, and for a minute of scrapes.
    _wait("demo-regress regressed", lambda: _query(
        stack.prometheus, f'dnsgap_gap_changes_total{{job="{JOB}",target="demo-regress"}} > 0'),
        REGRESS_AFTER_SECONDS + 30)  # fmt: skip
    time.sleep(max(0.0, stack.started + 65 - time.monotonic()))
    empty = []
    for dashboard, title, expr, zero in _panel_queries():
        # A count of nothing (no pending probe) is no series, which the stat shows as 0;
        # the query still has to be valid.
        if not _query(stack.prometheus, _promql(expr)) and not zero:
            empty.append(f"{dashboard}: {title}: {expr}")
    assert empty == [], "panels with No data on the demo:\n" + "\n".join(empty)


def _matrix_cells(stack: Stack, unexpected: str) -> dict[tuple[str, str], str]:
    """The overview matrix's (target, probe) -> cell, with the Show switch at
    ``unexpected`` (1: unexpected or changed only, 0: all pairs)."""
    board = json.loads((ROOT / "grafana" / "dashboards" / "dnsgap-overview.json").read_text())
    matrix = next(p for p in _panels(board["panels"])
                  if p.get("title", "").startswith("Support-gap matrix"))  # fmt: skip
    expr = _promql(matrix["targets"][0]["expr"].replace("$unexpected", unexpected))
    return {(r["metric"]["target"], r["metric"]["probe"]): r["metric"]["cell"]
            for r in _query(stack.prometheus, expr)}  # fmt: skip


def test_the_matrix_shows_expected_answers_as_expected(stack: Stack) -> None:
    """demo-auth is an authoritative server surveyed as such: BADVERS to EDNS version 1
    is its healthy answer, not a red cell; so is DSOTYPENI to an unassigned TLV type."""
    _wait("demo-regress regressed", lambda: _query(
        stack.prometheus, f'dnsgap_gap_changes_total{{job="{JOB}",target="demo-regress"}} > 0'),
        REGRESS_AFTER_SECONDS + 30)  # fmt: skip
    cells = _matrix_cells(stack, "0")
    assert cells[("demo-auth", "update")] == "not_implemented"
    assert cells[("demo-auth", "edns1")] == "bad_version expected"
    assert cells[("demo-dso-push", "dso_tlv")] == "dso_type_not_implemented expected"
    assert cells[("demo-dso-push", "dso_push")] == "ok"
    assert cells[("demo-regress", "update")] == "not_implemented"
    # NOERROR where BADVERS is due: no gap, a conformance violation, named by its check
    # (as on the status page), not "handled" (an operation that should be refused).
    _wait("demo-regress' edns1 violates badversion", lambda: _matrix_cells(stack, "0")[
        ("demo-regress", "edns1")] == "violation badversion", 30)  # fmt: skip
    # Every cell the query can produce has a colour and a text in the panel.
    board = json.loads((ROOT / "grafana" / "dashboards" / "dnsgap-overview.json").read_text())
    matrix = next(p for p in _panels(board["panels"])
                  if p.get("title", "").startswith("Support-gap matrix"))  # fmt: skip
    mapped = matrix["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert set(cells.values()) <= set(mapped)
    # "Unexpected or changed" leaves out what is as expected and did not change.
    only = _matrix_cells(stack, "1")
    assert ("demo-dso-push", "dso_push") not in only
    assert ("demo-auth", "edns1") not in only
    assert only[("demo-auth", "update")] == "not_implemented"
    assert only[("demo-regress", "update")] == "not_implemented"


# -- alerts (last: the scenario restarts and stops the exporter) ----------------------


@contextlib.contextmanager
def _running_exporter(config: Path, listen: str) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "exporter", "serve", "--config", str(config),
         "--listen", listen], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield process
    finally:
        stop_process(process)


@pytest.mark.timeout(300)
def test_alert_scenario_new_gap_restart_under_a_new_instance_and_exporter_down(
    stack: Stack,
) -> None:
    """One bounded run (about two minutes) of the story issue 12 tells."""

    def only_demo_regress() -> list[dict[str, Any]]:
        alerts = _new_gap_alerts(stack)
        others = [a["labels"] for a in alerts if a["labels"]["target"] != "demo-regress"]
        assert others == [], f"new-gap alerts for targets that did not change: {others}"
        return alerts

    # 1. demo-regress turns NOTIMP (UPDATE) and DSOTYPENI (DNS Push) after 45 s; the
    #    other targets have had their gaps from the start and never look new.
    def both_firing() -> list[dict[str, Any]]:
        firing = {(a["labels"]["alertname"], a["labels"]["probe"])
                  for a in only_demo_regress() if a["state"] == "firing"}  # fmt: skip
        wanted = {("DnsgapNewNotImp", "update"), ("DnsgapNewDsoTypeNotImplemented", "dso_push")}
        return [a for a in _new_gap_alerts(stack) if a["state"] == "firing"] if (
            firing >= wanted) else []

    before = _wait("new-gap alerts firing for demo-regress", both_firing,
                   REGRESS_AFTER_SECONDS + 60)
    assert {a["labels"]["job"] for a in before} == {JOB}
    assert all("instance" not in a["labels"] for a in before)
    # One alert per problem: the pair's standing-state alerts stay quiet.
    doubled = [a["labels"] for a in _active_alerts(stack)
               if a["labels"].get("target") == "demo-regress"
               and a["labels"]["alertname"] in PAIR_STATE_ALERTS]  # fmt: skip
    assert doubled == [], doubled
    active_at = {(a["labels"]["alertname"], a["labels"]["probe"]): a["activeAt"]
                 for a in before}  # fmt: skip

    # 2. The exporter restarts under a new instance label (a new pod IP): a new process
    #    probing the same servers, already regressed, so every outcome it sees is a
    #    first one. Prometheus' target moves to it.
    listen = f"127.0.0.1:{free_port()}"
    with _running_exporter(stack.tmp / "demo.yml", listen):
        wait_for_metrics(f"http://{listen}", *DEMO_SETTLED)
        _point_job_at(stack.targets_file, f"http://{listen}")
        _wait("Prometheus scrapes the restarted exporter", lambda: _query(
            stack.prometheus, f'up{{job="{JOB}",instance="{listen}"}} == 1'), 30)
        # Long enough for every pair's outcome to come from the new instance and for
        # any new alert to pass the test copy's `for:`.
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            alerts = only_demo_regress()
            # The same two alerts, never resolved and re-fired in between.
            assert {(a["labels"]["alertname"], a["labels"]["probe"]): a["activeAt"]
                    for a in alerts} == active_at, alerts  # fmt: skip
            time.sleep(1)
        assert _query(stack.prometheus, f'dnsgap_build_info{{job="{JOB}",instance="{listen}"}}')

    # 3. The exporter stops; its target stays: DnsgapExporterDown, with the job label
    #    the Operator gives, and nothing else for the same problem.
    down = _wait("DnsgapExporterDown firing", lambda: _firing(
        stack, "DnsgapExporterDown", job=JOB, instance=listen), 60)
    assert len(down) == 1
    assert down[0]["labels"]["severity"] == "critical"
    assert not _firing(stack, "DnsgapProbeScrapeFailed")
    assert len(_firing(stack, "DnsgapExporterDown")) == 1  # the dead-man holds back
