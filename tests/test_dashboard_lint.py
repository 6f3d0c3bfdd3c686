"""The rules of Grafana's dashboard-linter (github.com/grafana/dashboard-linter, its
default rule set), applied to every generated dashboard.

The linter itself is a Go program that no registry this project installs from ships
(not on PyPI, npm or Debian), so its rules are implemented here, one test each, named
after the rule. PromQL is parsed by the real parser: promtool checks every panel and
variable query, with the variables expanded as the linter expands them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_operator_kit import DASHBOARDS, all_panels, load, metric_names, promtool

Panel = dict[str, Any]

#: Grafana's built-in variables and ours, expanded to something PromQL accepts (the
#: linter does the same before parsing).
EXPANSIONS = {
    "$__rate_interval": "8869ms", "$__interval": "1m", "$__range": "1h",
    "$unexpected": "1",
}  # fmt: skip
#: The units of Grafana's unit picker (the linter's list, abridged to the families a
#: dnsgap panel could use).
VALID_UNITS = frozenset({
    "none", "string", "short", "percent", "percentunit", "s", "ms", "µs", "ns", "m", "h",
    "d", "dtdurations", "dtdurationms", "dateTimeAsIso", "dateTimeAsIsoNoDateIfToday",
    "dateTimeAsLocal", "dateTimeFromNow", "reqps", "rps", "ops", "cps", "bytes",
    "decbytes", "bool", "bool_yes_no", "bool_on_off",
})  # fmt: skip
QUERY_PANEL_TYPES = frozenset({"stat", "singlestat", "graph", "table", "timeseries", "gauge",
                               "state-timeline", "heatmap"})  # fmt: skip
UNIT_PANEL_TYPES = frozenset({"stat", "singlestat", "graph", "table", "timeseries", "gauge"})


def panels(board: dict[str, Any]) -> Iterator[Panel]:
    return (p for p in all_panels(board) if p["type"] != "row")


def expand(expr: str) -> str:
    for variable in sorted(EXPANSIONS, key=len, reverse=True):
        expr = expr.replace(variable, EXPANSIONS[variable])
    # Template variables of the dashboard: a regex value, as in `job=~"$job"`.
    return re.sub(r"\$\{?([A-Za-z_]\w*)\}?", r"\1", expr)


def variables(board: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {var["name"]: var for var in board["templating"]["list"]}


# --- template rules ------------------------------------------------------------------


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_template_datasource_rule(path: Path) -> None:
    datasources = [v for v in load(path)["templating"]["list"] if v["type"] == "datasource"]
    assert len(datasources) == 1
    assert datasources[0]["name"] == "datasource"
    assert datasources[0]["label"] == "Data source"
    assert datasources[0]["query"] == "prometheus"


@pytest.mark.parametrize("name", ["job", "instance"])
@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_template_job_rule_and_template_instance_rule(path: Path, name: str) -> None:
    var = variables(load(path))[name]
    assert var["datasource"]["uid"] in {"$datasource", "${datasource}"}
    assert var["type"] == "query"
    assert var["label"] == name.capitalize()
    assert var["multi"] is True
    assert var["allValue"] == ".+"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_template_on_time_change_reload_rule(path: Path) -> None:
    for var in load(path)["templating"]["list"]:
        if var["type"] == "query":
            assert var["refresh"] == 2, var["name"]


def _variable_selectors(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for var in board["templating"]["list"]:
        if var["type"] != "query":
            continue
        match = re.fullmatch(r"([a-z_]+)\((.+)\)", var["query"])
        assert match is not None, var["query"]
        function, argument = match.groups()
        assert function in {"label_names", "label_values", "metrics", "query_result"}
        if function == "label_values":
            argument = argument.rsplit(",", 1)[0]
        yield var["name"], argument


def _promql_check(exprs: list[tuple[str, str]], tmp_path: Path) -> None:
    """promtool parses every expression (as a recording rule of a throw-away file)."""
    rules = [{"record": f"lint:expr_{index}", "expr": expand(expr)}
             for index, (_, expr) in enumerate(exprs)]  # fmt: skip
    (tmp_path / "lint.yml").write_text(yaml.safe_dump({"groups": [{"name": "lint",
                                                                    "rules": rules}]}))
    promtool("check", "rules", str(tmp_path / "lint.yml"))


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_template_label_promql_rule(path: Path, tmp_path: Path) -> None:
    _promql_check(list(_variable_selectors(load(path))), tmp_path)


# --- panel rules ---------------------------------------------------------------------


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_panel_datasource_rule(path: Path) -> None:
    for panel in panels(load(path)):
        assert panel["datasource"]["uid"] in {"$datasource", "${datasource}"}, panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_panel_title_description_rule(path: Path) -> None:
    for panel in panels(load(path)):
        assert panel["title"].strip(), panel["id"]
        assert panel["description"].strip(), panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_panel_units_rule(path: Path) -> None:
    for panel in panels(load(path)):
        if panel["type"] in UNIT_PANEL_TYPES:
            assert panel["fieldConfig"]["defaults"]["unit"] in VALID_UNITS, panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_panel_no_targets_rule(path: Path) -> None:
    for panel in panels(load(path)):
        assert panel["type"] in QUERY_PANEL_TYPES, panel["type"]
        assert panel["targets"], panel["title"]


# --- target rules --------------------------------------------------------------------


def _targets(path: Path) -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in panels(load(path))
            for target in panel["targets"]]  # fmt: skip


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_target_promql_rule(path: Path, tmp_path: Path) -> None:
    _promql_check(_targets(path), tmp_path)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_target_rate_interval_rule(path: Path) -> None:
    for title, expr in _targets(path):
        for match in re.finditer(r"\b(?:rate|irate)\((?:[^()\[\]]|\([^()]*\))*\[([^\]]+)\]",
                                 expr):  # fmt: skip
            assert match.group(1) == "$__rate_interval", (title, expr)


_SELECTOR = re.compile(r"(?<![\w:$])([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}")


@pytest.mark.parametrize("matcher", ["job", "instance"])
@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_target_job_rule_and_target_instance_rule(path: Path, matcher: str) -> None:
    """Every selector carries `job=~"$job"` and `instance=~"$instance"`."""
    for title, expr in _targets(path):
        selected = {m.group(1) for m in _SELECTOR.finditer(expr)}
        # Every metric the query names is a selector with braces (no bare names).
        assert metric_names(expr) <= selected, (title, expr)
        for match in _SELECTOR.finditer(expr):
            assert f'{matcher}=~"${matcher}"' in match.group(2), (title, match.group(0))


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_target_counter_agg_rule(path: Path) -> None:
    """A counter (`_total`) is only read through rate, irate or increase of a range."""
    for title, expr in _targets(path):
        for match in _SELECTOR.finditer(expr):
            if not match.group(1).endswith("_total"):
                continue
            before = expr[:match.start()].rstrip()
            after = expr[match.end():].lstrip()
            assert re.search(r"\b(?:rate|irate|increase)\($", before), (title, expr)
            assert after.startswith("["), (title, expr)


def test_the_rules_catch_what_they_are_for(tmp_path: Path) -> None:
    """The checks above fail on the mistakes the linter reports."""
    bad = 'sum(rate(dnsgap_probe_responses_total{job=~"$job"}[5m])) + dnsgap_build_info'
    assert not re.search(r'instance=~"\$instance"', bad)
    assert re.search(r"\b(?:rate|irate)\((?:[^()\[\]]|\([^()]*\))*\[([^\]]+)\]", bad).group(
        1) != "$__rate_interval"  # type: ignore[union-attr]  # fmt: skip
    assert "dnsgap_build_info" in metric_names(bad)
    assert "dnsgap_build_info" not in {m.group(1) for m in _SELECTOR.finditer(bad)}
    with pytest.raises(AssertionError):
        _promql_check([("broken", 'sum(dnsgap_build_info{job=~"$job"')], tmp_path)
    assert json.dumps(expand('x{job=~"$job"}[$__range]')) == json.dumps('x{job=~"job"}[1h]')
