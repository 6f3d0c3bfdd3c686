"""The operator kit: Grafana dashboards, Prometheus rules and configs, Dockerfile.

Static checks only (promtool, hadolint, JSON structure); the end-to-end run of
every panel query against a real Prometheus lives elsewhere. Missing tools fail
the suite: scripts/install-system-deps.sh installs promtool, ``.[test]`` hadolint.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import palette
from exporter.causes import REMEDIATION, UNREACHED, Cause
from exporter.statuspage import CLASS_COLOURS

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
PROM_DIR = ROOT / "deploy" / "prometheus"

#: The metric contract (exporter/metrics.py); histograms with their series suffixes.
CONTRACT_METRICS = frozenset({
    "dnsgap_probe_responses_total", "dnsgap_support_gap", "dnsgap_probe_last_rcode",
    "dnsgap_probe_success", "dnsgap_probe_last_run_timestamp_seconds",
    "dnsgap_probe_interval_seconds", "dnsgap_support_gap_since_timestamp_seconds",
    "dnsgap_gap_changes_total", "dnsgap_probe_info", "dnsgap_build_info",
    "dnsgap_config_reload_success", "dnsgap_config_last_reload_success_timestamp_seconds",
    "dnsgap_config_reloads_total", "dnsgap_probes_in_flight", "dnsgap_probes_skipped_total",
    "dnsgap_dso_session_established", "dnsgap_dso_inactivity_timeout_seconds",
    "dnsgap_dso_keepalive_interval_seconds", "dnsgap_dso_retry_delay_seconds",
    "dnsgap_dso_sessions_closed_total", "dnsgap_dso_push_notifications_total",
    "dnsgap_fallback_total", "dnsgap_fallback_active", "dnsgap_tls_cert_expiry_timestamp_seconds",
    "dnsgap_conformance_violation", "dnsgap_conformance_violations_total",
    *(f"{histogram}{suffix}"
      for histogram in ("dnsgap_probe_duration_seconds", "dnsgap_scheduler_lateness_seconds")
      for suffix in ("_bucket", "_sum", "_count")),
})  # fmt: skip

#: Grafana variables a panel query may use (the e2e test substitutes exactly these).
ALLOWED_VARIABLES = frozenset({
    "$job", "$instance", "$target", "$probe", "$kind", "$transport", "$cause",
    "$unexpected", "$__rate_interval", "$__interval", "$__range",
})  # fmt: skip

_PROMQL_WORDS = frozenset({
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "and", "or", "unless", "inf", "nan",
})  # fmt: skip


def tool(name: str, *candidates: Path) -> str:
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (see scripts/install-system-deps.sh)")
    return found


def run(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120,
                            check=False)  # fmt: skip
    assert result.returncode == 0, f"{' '.join(argv)}:\n{result.stdout}\n{result.stderr}"
    return result


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return run(tool("promtool", Path("/usr/bin/promtool")), *args, cwd=PROM_DIR)


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def all_panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows nest their panels


def query_panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    return (panel for panel in all_panels(board) if panel["type"] != "row")


def metric_names(expr: str) -> set[str]:
    """Metric names referenced by a PromQL expression (a small lexer, enough for ours)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # string literals
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)  # matchers, ranges
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        word, is_call = match.group(1), match.group(2)
        if not is_call and word.lower() not in _PROMQL_WORDS:
            names.add(word)
    return names


def test_metric_name_lexer_sees_names_not_functions_or_labels() -> None:
    expr = (
        'histogram_quantile(0.9, sum by (le, target) (rate(a_bucket{x=~"$target"}[5m])))'
        ' or on (target) label_replace(b * 0, "cause", "none", "", "") unless c offset 1h'
    )
    assert metric_names(expr) == {"a_bucket", "b", "c"}


# --- Grafana -------------------------------------------------------------------------


def test_there_are_dashboards_for_gaps_dso_and_operations() -> None:
    assert {path.name for path in DASHBOARDS} >= {
        "dnsgap-overview.json",
        "dnsgap-dso.json",
        "dnsgap-operations.json",
    }


def test_committed_dashboards_match_the_generator() -> None:
    run(sys.executable, "grafana/generate.py", "--check")


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_importable_with_a_datasource_variable(path: Path) -> None:
    board = load(path)
    assert board["schemaVersion"] >= 39
    assert re.fullmatch(r"[a-z0-9-]{1,40}", board["uid"])
    assert board["title"].startswith("dnsgap")
    assert "id" not in board or board["id"] is None  # import must not clash with an id
    variables = {var["name"]: var for var in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("target", "probe"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"]["uid"] == "${datasource}"
        assert variables[name]["query"].startswith("label_values(dnsgap_probe_info")
        assert variables[name]["query"].endswith(f", {name})")


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_has_datasource_position_and_queries(path: Path) -> None:
    board = load(path)
    ids = [panel["id"] for panel in all_panels(board)]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel in all_panels(board):
        where = f"{path.name}: panel {panel['id']} {panel.get('title')!r}"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
        grid = panel["gridPos"]
        assert grid["w"] > 0, where
        assert grid["h"] > 0, where
        assert 0 <= grid["x"] <= 24 - grid["w"], where
        if panel["type"] == "row":
            continue
        assert panel["title"], where
        assert panel["description"], where
        assert panel["targets"], where
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), where
        for target in panel["targets"]:
            assert target["expr"].strip(), where
            assert target["datasource"]["uid"] == "${datasource}", where


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_panels_query_only_contract_metrics_and_known_variables(path: Path) -> None:
    for panel in query_panels(load(path)):
        for target in panel["targets"]:
            expr = target["expr"]
            assert metric_names(expr) <= CONTRACT_METRICS, (panel["title"], expr)
            assert metric_names(expr), (panel["title"], expr)
            # `$1` is a label_replace() capture group, not a variable.
            variables = set(re.findall(r"\$\{?[A-Za-z_]\w*\}?", expr))
            assert variables <= ALLOWED_VARIABLES, (panel["title"], expr)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_panels_do_not_overlap(path: Path) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in all_panels(load(path)):
        grid = panel["gridPos"]
        cells = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                 for y in range(grid["y"], grid["y"] + grid["h"])}  # fmt: skip
        assert not cells & taken, panel["title"]
        taken |= cells


def test_gap_matrix_colours_each_cell_from_the_palette_the_status_page_uses() -> None:
    board = load(ROOT / "grafana" / "dashboards" / "dnsgap-overview.json")
    matrix = next(p for p in query_panels(board) if p["title"].startswith("Support-gap matrix"))
    assert "dnsgap_support_gap" in matrix["targets"][0]["expr"]
    options = matrix["fieldConfig"]["defaults"]["mappings"][0]["options"]
    distinct = [Cause.NOT_IMPLEMENTED, Cause.DSO_TYPE_NOT_IMPLEMENTED, Cause.DSO_NOT_IMPLEMENTED,
                Cause.REFUSED, Cause.NO_RESPONSE]  # fmt: skip
    cells = [*(cause.value for cause in distinct), "ok", "handled", "pending",
             "not_implemented expected"]  # fmt: skip
    colours = [options[cell]["color"] for cell in cells]
    assert len(set(colours)) == len(cells)
    for cell, colour in zip(cells, colours, strict=True):
        assert colour in CLASS_COLOURS.values(), cell  # the status page's colours
    for cause in distinct:
        assert options[cause.value]["color"] == CLASS_COLOURS[palette.gap_swatch(cause).key]
        assert REMEDIATION[cause] in matrix["description"]
    assert options[Cause.NOT_IMPLEMENTED.value]["text"] == "NOTIMP"
    assert options[Cause.DSO_TYPE_NOT_IMPLEMENTED.value]["text"] == "DSOTYPENI"
    # An expected answer looks expected, as on the status page: not the cause's colour.
    assert options["not_implemented expected"]["text"] == "NOTIMP \u2713"
    assert options["not_implemented expected"]["color"] == CLASS_COLOURS["expected"]
    assert options["pending"]["text"] == "pending"
    # An answer without a gap that misses its expectation through a conformance
    # violation (kresd's NOERROR to EDNS version 1) is named by the check, as on the
    # status page; "handled" is only for an operation that worked where a refusal
    # was expected.
    assert options["violation badversion"]["text"] == "badversion \u2717"
    assert options["violation badversion"]["color"] == CLASS_COLOURS["violation"]
    assert options["handled"]["text"] == "handled \u2717"


def _exprs(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in query_panels(board):
        for target in panel["targets"]:
            yield panel["title"], target["expr"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_panels_scale_to_a_fleet(path: Path) -> None:
    """No phantom series, whole counts per bar, no zero rows, bounded timelines."""
    board = load(path)
    for title, expr in _exprs(board):
        assert "vector(0)" not in expr, title
        for match in re.finditer(r"increase\((?:[^()\[\]]|\([^()]*\))*\[(\$__\w+)", expr):
            assert match.group(1) in {"$__interval", "$__range", "$__rate_interval"}, title
    for panel in query_panels(board):
        expr = panel["targets"][0]["expr"]
        custom = panel["fieldConfig"]["defaults"]["custom"]
        if custom.get("drawStyle") == "bars":
            assert "[$__interval]" in expr, panel["title"]
            assert expr.startswith("round("), panel["title"]
            assert panel["interval"], panel["title"]
        if panel["type"] == "table" and expr.startswith("topk(") and "round(" in expr:
            assert expr.rstrip(")").endswith("> 0"), panel["title"]
        if panel["type"] == "state-timeline":
            assert re.search(r"topk\(\d+, ", expr), panel["title"]
            assert "@ end()" in expr, panel["title"]
        if panel["type"] == "stat" and expr.startswith("count("):
            assert panel["fieldConfig"]["defaults"]["noValue"] == "0", panel["title"]


def test_overview_filters_by_job_instance_cause_kind_and_transport() -> None:
    board = load(ROOT / "grafana" / "dashboards" / "dnsgap-overview.json")
    names = [var["name"] for var in board["templating"]["list"]]
    assert names[:3] == ["datasource", "job", "instance"]
    assert {"kind", "transport", "cause", "target", "probe", "unexpected"} <= set(names)
    matrix = next(p for p in query_panels(board) if p["title"].startswith("Support-gap matrix"))
    expr = matrix["targets"][0]["expr"]
    for variable in ("$kind", "$transport", "$cause", "$unexpected"):
        assert variable in expr
    # A stable order: columns sorted by probe, rows by target.
    assert matrix["transformations"][0] == {
        "id": "sortBy", "options": {"fields": {}, "sort": [{"field": "probe"}]}}
    assert matrix["options"]["sortBy"] == [{"displayName": "target\\probe", "desc": False}]


# --- Prometheus ------------------------------------------------------------------------

RULES = yaml.safe_load((PROM_DIR / "alerts.yml").read_text(encoding="utf-8"))
ALERT_RULES = [rule for group in RULES["groups"] for rule in group["rules"] if "alert" in rule]
RULE_NAMES = [rule["alert"] for rule in ALERT_RULES]
RUNBOOK = ROOT / "docs" / "alerts.md"
#: The labels that say where a pair ran, aggregated away by every pair rule (a knob:
#: docs/alerts.md#knobs).
LOCATION_LABELS = "instance, pod, container, endpoint, service"


def test_alert_rules_pass_promtool_check() -> None:
    promtool("check", "rules", "alerts.yml")


def test_alert_rules_pass_their_unit_tests() -> None:
    promtool("test", "rules", "alerts_test.yml")


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-probe.yml"])
def test_prometheus_config_passes_promtool_check(config: str) -> None:
    promtool("check", "config", config)


def test_the_required_alerts_exist() -> None:
    assert set(RULE_NAMES) >= {
        "DnsgapNewNotImp", "DnsgapNewDsoTypeNotImplemented", "DnsgapNewGap",
        "DnsgapDsoNotImplemented", "DnsgapProbeFailing", "DnsgapProbeSilent",
        "DnsgapUnexpectedAnswer", "DnsgapProbeFlapping", "DnsgapFallbackFailing",
        "DnsgapExporterDown", "DnsgapProbeScrapeFailed", "DnsgapConfigReloadFailed",
        "DnsgapProbesSkipped", "DnsgapSchedulerLate", "DnsgapProbeStale",
        "DnsgapDsoSessionChurn", "DnsgapNewConformanceViolation"}  # fmt: skip
    assert len(RULE_NAMES) == len(set(RULE_NAMES))


@pytest.mark.parametrize("name", RULE_NAMES)
def test_every_alert_is_unit_tested_firing_and_not_firing(name: str) -> None:
    tests = yaml.safe_load((PROM_DIR / "alerts_test.yml").read_text(encoding="utf-8"))
    cases = [case for group in tests["tests"] for case in group.get("alert_rule_test", [])
             if case["alertname"] == name]  # fmt: skip
    assert any(case["exp_alerts"] for case in cases), f"{name}: no firing case"
    assert any(not case["exp_alerts"] for case in cases), f"{name}: no silent case"


def test_the_unit_tests_cover_the_deployments_that_fooled_the_new_gap_alerts() -> None:
    tests = yaml.safe_load((PROM_DIR / "alerts_test.yml").read_text(encoding="utf-8"))
    names = " / ".join(group["name"] for group in tests["tests"])
    for scenario in ("first deploy", "restart under a new instance", "renamed target",
                     "reshard", "scrape outage", "/probe"):  # fmt: skip
        assert scenario in names, scenario


@pytest.mark.parametrize("name", RULE_NAMES)
def test_every_alert_carries_summary_remediation_and_a_runbook_section(name: str) -> None:
    rule = next(r for r in ALERT_RULES if r["alert"] == name)
    assert rule["annotations"]["summary"]
    assert rule["annotations"]["remediation"]
    assert rule["labels"]["severity"] in {"warning", "critical"}
    assert rule["annotations"]["runbook_url"] == f"docs/alerts.md#{name.lower()}"
    assert f"\n## {name}\n" in RUNBOOK.read_text(encoding="utf-8")


def _minutes(duration: str) -> float:
    value, unit = re.fullmatch(r"(\d+)([smh])", duration).groups()  # type: ignore[union-attr]
    return int(value) * {"s": 1 / 60, "m": 1, "h": 60}[unit]


@pytest.mark.parametrize("name", RULE_NAMES)
def test_every_alert_waits_a_few_probe_intervals(name: str) -> None:
    """Production `for:` (default interval 60 s): one lost packet pages nobody. A failed
    reload is the exception: the exporter logged it and keeps its last good config."""
    rule = next(r for r in ALERT_RULES if r["alert"] == name)
    if name == "DnsgapConfigReloadFailed":
        assert "for" not in rule
    else:
        assert _minutes(rule["for"]) >= 5, rule["for"]


def test_every_pair_rule_aggregates_the_same_location_labels_away() -> None:
    text = (PROM_DIR / "alerts.yml").read_text(encoding="utf-8")
    lists = re.findall(r"without \(([^)]*)\)", text)
    assert lists
    for found in lists:
        assert found.startswith(LOCATION_LABELS), found
    # The job matcher knob is one regex wherever it appears.
    assert set(re.findall(r'\bup\{job=~"([^"]*)"\}', text)) == {".*dnsgap.*"}


def test_outages_are_told_by_the_exporters_list_of_unreached_causes() -> None:
    """dnsgap:pair_reached (and through it every outage rule) counts a pair as not
    reaching its server for exactly the causes the status page names unreachable."""
    rule = next(r for g in yaml.safe_load((PROM_DIR / "alerts.yml").read_text())["groups"]
                for r in g["rules"] if r.get("record") == "dnsgap:pair_reached")  # fmt: skip
    listed = re.search(r'dnsgap_support_gap\{cause=~"([^"]+)"\}', rule["expr"])
    assert listed is not None
    assert set(listed.group(1).split("|")) == {cause.value for cause in UNREACHED}
    # ... and flapping leaves out the replies of exactly those causes.
    flapping = next(r for g in yaml.safe_load((PROM_DIR / "alerts.yml").read_text())["groups"]
                    for r in g["rules"] if r.get("record") == "dnsgap:pair_flapping")  # fmt: skip
    left_out = re.search(r'dnsgap_probe_responses_total\{cause!~"([^"]+)"\}', flapping["expr"])
    assert left_out is not None
    assert set(left_out.group(1).split("|")) == {cause.value for cause in UNREACHED}


@pytest.mark.parametrize(("name", "cause"), [
    ("DnsgapNewNotImp", Cause.NOT_IMPLEMENTED),
    ("DnsgapNewDsoTypeNotImplemented", Cause.DSO_TYPE_NOT_IMPLEMENTED),
])  # fmt: skip
def test_gap_alerts_give_the_same_remediation_as_the_exporter(name: str, cause: Cause) -> None:
    rule = next(r for r in ALERT_RULES if r["alert"] == name)
    assert rule["annotations"]["remediation"] in REMEDIATION[cause]


def test_probe_config_relabels_target_and_probe_onto_the_exporter() -> None:
    config = yaml.safe_load((PROM_DIR / "prometheus-probe.yml").read_text(encoding="utf-8"))
    job = next(j for j in config["scrape_configs"] if j["metrics_path"] == "/probe")
    labels = {step.get("target_label") for step in job["relabel_configs"]}
    assert labels >= {"__param_target", "__param_probe", "instance", "__address__"}


# --- Docker ----------------------------------------------------------------------------


def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = tool("hadolint", Path(sys.executable).parent / "hadolint")
    run(hadolint, "Dockerfile")


def test_dockerfile_runs_unprivileged_with_healthcheck_on_the_default_port() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim", text, re.MULTILINE)
    assert re.search(r"^USER (?!root|0\b)", text, re.MULTILINE)
    assert re.search(r"^EXPOSE 18553$", text, re.MULTILINE)
    assert "http://127.0.0.1:18553/-/healthy" in text
    assert '"serve", "--config", "/etc/dnsgap/dnsgap.yml"' in text
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".git", ".venv"} <= set(ignored)
