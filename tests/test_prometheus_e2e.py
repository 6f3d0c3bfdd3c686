"""End to end: a real Prometheus (Debian `prometheus`) scrapes `dnsgap demo` with the
alert rules loaded. Through Prometheus' HTTP API: the README's series exist with the
documented labels, the NOTIMP and DSOTYPENI alerts fire, and every Grafana panel query
returns data."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
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
from tests.live_demo import ROOT, running_demo, wait_for_metrics
from tests.support import stop_process
from tests.test_metric_reference import DEMO_INFO_EXTRA_LABELS, readme_metric_table

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))

#: The test copy of alerts.yml shortens `for: 1m` to this ...
TEST_FOR = "5s"
#: ... and the "new gap" look-back `offset 1h` to this, so that a healthy-then-gap
#: transition fits in the test. demo-regress turns NOTIMP/DSOTYPENI after
#: REGRESS_AFTER_SECONDS, i.e. after Prometheus has more than this much healthy history.
TEST_NEW_WINDOW = "30s"
assert REGRESS_AFTER_SECONDS > 30 + 10

#: Grafana variables -> values a plain /api/v1/query accepts (All = ".*").
GRAFANA_VARIABLES = {
    "${target}": ".*", "$target": ".*", "${probe}": ".*", "$probe": ".*",
    "$__rate_interval": "1m", "$__interval": "15s", "$__range": "1m",
}  # fmt: skip


@dataclass(frozen=True)
class Stack:
    demo: str
    prometheus: str
    original_rules: str
    test_rules: str
    #: time.monotonic() when Prometheus became ready
    started: float


def _test_rules(original: dict[str, Any]) -> dict[str, Any]:
    """alerts.yml with shorter `for:` and "new" window; group names say it is the copy."""
    groups = []
    for group in original["groups"]:
        rules = []
        for shipped in group["rules"]:
            rule = dict(shipped)
            if "for" in rule:
                rule["for"] = TEST_FOR
            rule["expr"] = rule["expr"].replace("offset 1h", f"offset {TEST_NEW_WINDOW}")
            rules.append(rule)
        groups.append({**group, "name": f"{group['name']}-test-copy", "rules": rules})
    return {"groups": groups}


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


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("prometheus")
    original = yaml.safe_load(ALERTS.read_text())
    test_rules = tmp / "alerts-test-copy.yml"
    test_rules.write_text(yaml.safe_dump(_test_rules(original), sort_keys=False))
    with running_demo() as demo:
        wait_for_metrics(demo, r"^dnsgap_build_info")
        host_port = demo.removeprefix("http://")
        config = {
            "global": {"scrape_interval": "2s", "scrape_timeout": "2s",
                       "evaluation_interval": "1s"},
            # The unmodified rules and the test copy side by side.
            "rule_files": [str(ALERTS), str(test_rules)],
            "scrape_configs": [
                {"job_name": "dnsgap", "static_configs": [{"targets": [host_port]}]},
                # Nothing listens here: DnsgapExporterDown must fire for it.
                {"job_name": "dnsgap-gone",
                 "static_configs": [{"targets": [f"127.0.0.1:{free_port()}"]}]},
            ],
        }  # fmt: skip
        config_file = tmp / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        with _running_prometheus(config_file, tmp / "data") as prometheus:
            yield Stack(demo, prometheus, str(ALERTS), str(test_rules), time.monotonic())


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


def _alerts(stack: Stack, rules_file: str, alert: str, state: str) -> list[dict[str, str]]:
    """Label sets of ``alert``'s instances in ``state`` from one rules file."""
    found = []
    for group in _api(stack.prometheus, "/api/v1/rules", type="alert")["groups"]:
        if group["file"] != rules_file:
            continue
        for rule in group["rules"]:
            if rule["name"] == alert:
                found += [a["labels"] for a in rule["alerts"] if a["state"] == state]
    return found


def _firing_for(stack: Stack, rules_file: str, alert: str, target: str,
                probe: str) -> bool:  # fmt: skip
    return any(labels.get("target") == target and labels.get("probe") == probe
               for labels in _alerts(stack, rules_file, alert, "firing"))  # fmt: skip


# -- series ---------------------------------------------------------------------------


def test_prometheus_has_every_readme_metric_with_the_documented_labels(stack: Stack) -> None:
    rows = readme_metric_table()

    def series() -> list[dict[str, str]] | None:
        found: list[dict[str, str]] = _api(stack.prometheus, "/api/v1/series",
                                           **{"match[]": '{job="dnsgap",__name__=~"dnsgap_.+"}'})
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
    sel = 'job="dnsgap",target="demo-regress",probe="update",cause="not_implemented"'
    _wait("demo-regress/update NOTIMP", lambda: [
        r for r in _query(stack.prometheus, f"dnsgap_support_gap{{{sel}}}")
        if r["value"][1] == "1"], REGRESS_AFTER_SECONDS + 30)  # fmt: skip
    # The same series was there, at 0, before the gap: increase() sees the first NOTIMP.
    history = _query(stack.prometheus, f"min_over_time(dnsgap_support_gap{{{sel}}}[5m])")
    assert [r["value"][1] for r in history] == ["0"]


# -- alerts ---------------------------------------------------------------------------


@pytest.mark.parametrize(("alert", "probe", "cause"), [
    ("DnsgapNewNotImp", "update", "not_implemented"),
    ("DnsgapNewDsoTypeNotImplemented", "dso_push", "dso_type_not_implemented"),
])  # fmt: skip
def test_new_gap_alert_fires_after_a_healthy_then_gap_transition(
    stack: Stack, alert: str, probe: str, cause: str
) -> None:
    """The test copy (look-back TEST_NEW_WINDOW) fires for demo-regress, which was
    healthy and then regressed; at that moment Prometheus really has the healthy sample
    from TEST_NEW_WINDOW ago, so the alert fires for a transition, not for missing data."""
    _wait(f"{alert} firing for demo-regress/{probe}",
          lambda: _firing_for(stack, stack.test_rules, alert, "demo-regress", probe),
          REGRESS_AFTER_SECONDS + 60)  # fmt: skip
    then = _query(stack.prometheus, f'dnsgap_support_gap{{job="dnsgap",target="demo-regress",'
                  f'probe="{probe}",cause="{cause}"}} offset {TEST_NEW_WINDOW}')  # fmt: skip
    assert [r["value"][1] for r in then] == ["0"]


def test_a_gap_present_for_the_whole_window_is_not_new(stack: Stack) -> None:
    """demo-dso-nopush answers DSOTYPENI from start-up: once Prometheus has its gap
    from TEST_NEW_WINDOW ago (plus 3 s for rule evaluation), the copy does not fire."""
    sel = ('job="dnsgap",target="demo-dso-nopush",probe="dso_push",'
           'cause="dso_type_not_implemented"')  # fmt: skip
    _wait("a DSOTYPENI sample 33 s old", lambda: [
        r for r in _query(stack.prometheus, f"dnsgap_support_gap{{{sel}}} offset 33s")
        if r["value"][1] == "1"], 90)  # fmt: skip
    for state in ("pending", "firing"):
        assert not [labels for labels in _alerts(stack, stack.test_rules,
                                                 "DnsgapNewDsoTypeNotImplemented", state)
                    if labels["target"] == "demo-dso-nopush"]  # fmt: skip


@pytest.mark.parametrize(("alert", "target", "probe"), [
    # "New" with the shipped rules: no data from an hour ago (a freshly added target).
    ("DnsgapNewNotImp", "demo-auth", "update"),
    ("DnsgapNewDsoTypeNotImplemented", "demo-dso-nopush", "dso_push"),
])  # fmt: skip
def test_shipped_rules_fire_notimp_and_dsotypeni_on_the_demo(
    stack: Stack, alert: str, target: str, probe: str
) -> None:
    _wait(f"{alert} (alerts.yml, for: 1m) firing for {target}/{probe}",
          lambda: _firing_for(stack, stack.original_rules, alert, target, probe), 120)


@pytest.mark.parametrize(("alert", "where"), [
    ("DnsgapDsoNotImplemented", {"target": "demo-no-dso", "probe": "dso_keepalive"}),
    ("DnsgapProbeSilent", {"target": "demo-auth", "probe": "opcode15"}),
    ("DnsgapProbeFailing", {"target": "demo-auth", "probe": "axfr"}),
    ("DnsgapExporterDown", {"job": "dnsgap-gone"}),
])  # fmt: skip
def test_other_alerts_fire_in_the_test_copy(
    stack: Stack, alert: str, where: dict[str, str]
) -> None:
    def firing() -> bool:
        return any(all(labels.get(k) == v for k, v in where.items())
                   for labels in _alerts(stack, stack.test_rules, alert, "firing"))  # fmt: skip

    _wait(f"{alert} firing for {where}", firing, 60)


# -- dashboards -----------------------------------------------------------------------


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # collapsed rows nest their panels


def _panel_queries() -> list[tuple[str, str, str]]:
    out = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in _panels(dashboard.get("panels", [])):
            for target in panel.get("targets", []):
                if target.get("expr"):
                    out.append((path.name, panel.get("title", "?"), target["expr"]))
    return out


def _promql(expr: str) -> str:
    for variable in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(variable, GRAFANA_VARIABLES[variable])
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def test_dashboards_have_panel_queries() -> None:
    assert len(DASHBOARDS) >= 3
    assert len(_panel_queries()) >= 20


def test_every_dashboard_panel_query_returns_data(stack: Stack) -> None:
    # Range panels ($__range = 1m) need a minute of history, and the gap-change panels a
    # change: wait for demo-regress to regress, and for a minute of scrapes.
    _wait("demo-regress regressed", lambda: _query(
        stack.prometheus, 'dnsgap_gap_changes_total{job="dnsgap",target="demo-regress"} > 0'),
        REGRESS_AFTER_SECONDS + 30)  # fmt: skip
    time.sleep(max(0.0, stack.started + 65 - time.monotonic()))
    empty = []
    for dashboard, title, expr in _panel_queries():
        if not _query(stack.prometheus, _promql(expr)):
            empty.append(f"{dashboard}: {title}: {expr}")
    assert empty == [], "panels with No data on the demo:\n" + "\n".join(empty)
