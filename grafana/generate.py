"""Generates dnsgap's Grafana dashboards (grafana/dashboards/*.json).

Run ``python grafana/generate.py`` after changing a panel and commit both this
file and its output; ``--check`` exits 1 when the committed JSON is stale.

Why generated: the colours and short texts of a (target, probe) cell come from
``exporter/palette.py`` (the status page uses the same), and the remediation
texts from ``exporter/causes.py``, so that the dashboards say exactly what the
exporter, CLI and alerts say.

Conventions, checked by tests/test_operator_kit.py (which also implements the rules
of the Grafana dashboard-linter) and by the end-to-end test against a real
Prometheus scraping ``dnsgap demo``:

- Every selector carries ``job=~"$job",instance=~"$instance"``; pair panels also
  ``target=~"$target",probe=~"$probe"`` and join ``dnsgap_probe_info`` for the kind
  and transport filters.
- Scale: a fleet has tens of thousands of pairs. Timelines and tables show the
  pairs that changed in the selected range or are not as expected, at most
  ``TOP`` of them (``topk`` over ``@ end()``, so the set does not change along the
  time axis); the matrix has an "unexpected or changed only" switch.
- No ``or vector(0)``: a stat with no series shows 0 (``noValue``), other panels
  show nothing rather than a phantom series. Bar panels count per ``$__interval``
  with ``round(increase(...))``; range tables keep only rows ``> 0``.
- No recording rules: an aggregated series has no ``instance`` to filter on.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere, without installing
    sys.path.insert(0, str(REPO))

from exporter import conformance  # noqa: E402
from exporter.causes import RCODE_NAMES, REMEDIATION, Cause  # noqa: E402
from exporter.palette import (  # noqa: E402
    EXPECTED,
    GAP_SWATCHES,
    HANDLED_UNEXPECTEDLY,
    OK,
    OTHER_GAP,
    PENDING,
    UNEXPECTED_MARK,
    VIOLATION,
    cell_text,
    gap_swatch,
)

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
SCHEMA_VERSION = 39
DS: dict[str, str] = {"type": "prometheus", "uid": "${datasource}"}
#: Where a series comes from (every selector), which targets, which pairs.
XSEL = 'job=~"$job",instance=~"$instance"'
TSEL = f'{XSEL},target=~"$target"'
SEL = f'{TSEL},probe=~"$probe"'
#: The pairs the kind and transport filters select (labels of dnsgap_probe_info).
INFO = f'dnsgap_probe_info{{{SEL},kind=~"$kind",transport=~"$transport"}}'
#: At most this many pairs (or targets) in a timeline or a table.
TOP = 30

Json = dict[str, Any]

# --- cells: what a pair shows, and its colour ---------------------------------

#: Numeric code of each cell in the timelines (0 ok, 1..5 the styled gaps).
GAP_CODES: dict[Cause, int] = {cause: code for code, cause in enumerate(GAP_SWATCHES, 1)}
OTHER_GAP_CODE, EXPECTED_CODE, HANDLED_CODE, VIOLATION_CODE = 9, 10, 11, 12

RCODE_COLORS: Mapping[int, str] = {
    0: OK.colour, 3: OK.colour, 4: GAP_SWATCHES[Cause.NOT_IMPLEMENTED].colour,
    5: GAP_SWATCHES[Cause.REFUSED].colour,
    11: GAP_SWATCHES[Cause.DSO_TYPE_NOT_IMPLEMENTED].colour,
    -1: GAP_SWATCHES[Cause.NO_RESPONSE].colour,
}  # fmt: skip


def cell_mappings() -> list[Json]:
    """Value mappings for the matrix's ``cell`` label (see :func:`matrix_expr`)."""
    options: Json = {}
    for cause in Cause:
        if cause is Cause.NONE:
            continue
        options[cause.value] = {"text": cell_text(cause, expected=False),
                                "color": gap_swatch(cause).colour}  # fmt: skip
        options[f"{cause.value} expected"] = {"text": cell_text(cause, expected=True),
                                              "color": EXPECTED.colour}  # fmt: skip
    options["ok"] = {"text": cell_text(Cause.NONE, expected=True), "color": OK.colour}
    options["handled"] = {"text": cell_text(Cause.NONE, expected=False),
                          "color": HANDLED_UNEXPECTEDLY.colour}  # fmt: skip
    # No gap, but the reply violates a conformance check: named by the check, as on
    # the status page (kresd's NOERROR to EDNS version 1: "badversion \u2717").
    for check in conformance.NAMES:
        options[f"violation {check}"] = {"text": f"{check} {UNEXPECTED_MARK}",
                                         "color": VIOLATION.colour}  # fmt: skip
    options["pending"] = {"text": PENDING.text, "color": PENDING.colour}
    for index, value in enumerate(options.values()):
        value["index"] = index
    return [{"type": "value", "options": options}]


def cause_mappings() -> list[Json]:
    """Value mappings for a ``cause`` label column."""
    options: Json = {}
    for index, cause in enumerate(Cause):
        swatch = gap_swatch(cause)
        options[cause.value] = {"text": swatch.text if swatch is not OTHER_GAP else cause.value,
                                "color": swatch.colour, "index": index}  # fmt: skip
    return [{"type": "value", "options": options}]


def code_mappings() -> list[Json]:
    """Value mappings for :func:`cell_code_expr`'s numbers."""
    options: Json = {"0": {"text": OK.text, "color": OK.colour, "index": 0}}
    for cause, code in GAP_CODES.items():
        swatch = GAP_SWATCHES[cause]
        options[str(code)] = {"text": swatch.text, "color": swatch.colour, "index": code}
    for code, swatch, text in (
        (OTHER_GAP_CODE, OTHER_GAP, OTHER_GAP.text),
        (EXPECTED_CODE, EXPECTED, "expected gap \u2713"),
        (HANDLED_CODE, HANDLED_UNEXPECTEDLY, cell_text(Cause.NONE, expected=False)),
        (VIOLATION_CODE, VIOLATION, f"{VIOLATION.text} {UNEXPECTED_MARK}"),
    ):
        options[str(code)] = {"text": text, "color": swatch.colour, "index": code}
    return [{"type": "value", "options": options}]


def rcode_mappings() -> list[Json]:
    options: Json = {"-1": {"text": "none (no reply)", "color": RCODE_COLORS[-1], "index": 0}}
    for index, (code, name) in enumerate(sorted(RCODE_NAMES.items()), start=1):
        color = RCODE_COLORS.get(code, OTHER_GAP.colour)
        options[str(code)] = {"text": name, "color": color, "index": index}
    return [{"type": "value", "options": options}]


def success_by_pair() -> str:
    return f"min by (target, probe) (dnsgap_probe_success{{{SEL}}})"


def violated_check() -> str:
    """Per pair whose latest reply violates conformance checks, the one a cell names
    (label ``check``): the status page's choice, the first in docs/conformance.md order
    other than ``rcode`` (which says least), else ``rcode``."""
    named = [name for name in conformance.NAMES if name != "rcode"]
    order = [*named, "rcode"]
    parts = [f'(dnsgap_conformance_violation{{{SEL},check="{name}"}} == 1) * {len(order) - i}'
             for i, name in enumerate(order)]  # fmt: skip
    return f"topk by (target, probe) (1, max by (target, probe, check) ({' or '.join(parts)}))"


def matrix_expr() -> str:
    """One series per pair with a ``cell`` label: the cause of an unexpected gap, "<cause>
    expected", "ok", "handled" (worked where a refusal was expected), "violation <check>"
    (no gap, but the reply violates a conformance check; never green) or "pending".

    With ``$unexpected`` = 1 the expected cells ("<cause> expected", "ok") are left out
    unless the pair changed in the selected range. Every value is 1.
    """
    gap = f'max by (target, probe, cause) (dnsgap_support_gap{{{SEL},cause=~"$cause"}} == 1)'
    success = success_by_pair()
    # Cells without a gap have cause none: shown when the cause filter lets "none" through
    # (a pair with a none outcome has that counter series).
    handled = (f"and on (target, probe) increase(dnsgap_probe_responses_total"
               f'{{{SEL},cause="none",cause=~"$cause"}}[$__range]) >= 0')  # fmt: skip
    shown = (f"(max by (target, probe) ({INFO}) unless on () (vector($unexpected) > 0)"
             f" or sum by (target, probe) (increase(dnsgap_gap_changes_total{{{SEL}}}"
             "[$__range])) > 0)")  # fmt: skip
    violated = violated_check()
    branches = [
        f'label_replace({gap} and on (target, probe) ({success} == 0),'
        ' "cell", "$1", "cause", "(.+)")',
        f"label_replace({gap} and on (target, probe) ({success} == 1)"
        f' and on (target, probe) {shown}, "cell", "$1 expected", "cause", "(.+)")',
        f"label_replace({violated} and on (target, probe) {success}"
        f' unless on (target, probe) {gap} {handled}, "cell", "violation $1", "check", "(.+)")',
        f'label_replace(({success} == 0) + 1 unless on (target, probe) {gap} {handled}'
        f' unless on (target, probe) {violated}, "cell", "handled", "", "")',
        f'label_replace({success} == 1 unless on (target, probe) {gap} {handled}'
        f' unless on (target, probe) {violated}'
        f' and on (target, probe) {shown}, "cell", "ok", "", "")',
        f'label_replace(max by (target, probe) ({INFO}) unless on (target, probe)'
        f' dnsgap_probe_success{{{SEL}}}, "cell", "pending", "", "")',
    ]  # fmt: skip
    return f"({' or '.join(branches)}) and on (target, probe) {INFO}"


def cell_code_expr(extra_filter: str = "") -> str:
    """One number per pair over time: 0 ok, 1..5 a styled unexpected gap, 9 any other
    unexpected gap, 10 an expected gap, 11 handled where a refusal was expected, 12 no
    gap but a conformance violation.

    At most one cause of a pair is 1 at a time (the latest outcome's), so the max over
    causes is that cause's code; ``max``/``min`` also fold the same pair scraped by
    several jobs or instances.
    """
    styled = [cause.value for cause in GAP_CODES]
    parts = [f'dnsgap_support_gap{{{SEL},cause="{cause.value}"}} * {code}'
             for cause, code in GAP_CODES.items()]  # fmt: skip
    others = "|".join([Cause.NONE.value, *styled])
    parts.append(f'dnsgap_support_gap{{{SEL},cause!~"{others}"}} * {OTHER_GAP_CODE}')
    code = f"max by (target, probe) ({' or '.join(parts)})"
    success = success_by_pair()
    violated = f"max by (target, probe) (dnsgap_conformance_violation{{{SEL}}} == 1)"
    expr = (f"({code} > 0 and on (target, probe) {success} == 0)"
            f" or ({code} > 0 and on (target, probe) {success} == 1) * 0 + {EXPECTED_CODE}"
            f" or ({code} == 0 and on (target, probe) {violated}) * 0 + {VIOLATION_CODE}"
            f" or ({code} == 0 and on (target, probe) {success} == 0) * 0 + {HANDLED_CODE}"
            f" or ({code} == 0 and on (target, probe) {success} == 1)")  # fmt: skip
    return f"({expr}) and on (target, probe) {INFO}{extra_filter}"


def interesting_pairs(top: int = TOP) -> str:
    """The pairs worth a row: changed in the selected range (most changes first) or not
    as expected at some point in it; evaluated once at the range's end (``@ end()``) so
    that a timeline shows the same rows from left to right."""
    changed = (f"sum by (target, probe) (increase(dnsgap_gap_changes_total{{{SEL}}}"
               "[$__range] @ end())) > 0")  # fmt: skip
    failing = (f"min by (target, probe) (min_over_time(dnsgap_probe_success{{{SEL}}}"
               "[$__range] @ end())) == 0")  # fmt: skip
    return f"topk({top}, {changed} or {failing})"


def remediation_markdown(causes: Sequence[Cause]) -> str:
    lines = [f"- **{cause.value}**: {REMEDIATION[cause]}" for cause in causes]
    return "What each cause means and what to do:\n\n" + "\n".join(lines)


GAP_CAUSES_DOC = [*GAP_SWATCHES, Cause.NOT_AUTHORIZED, Cause.FORMAT_ERROR,
                  Cause.SERVER_FAILURE, Cause.CONNECTION_CLOSED]  # fmt: skip

# --- panel builders ----------------------------------------------------------


def query(expr: str, legend: str = "", *, instant: bool = False, fmt: str = "time_series") -> Json:
    return {
        "datasource": DS,
        "editorMode": "code",
        "expr": expr,
        "format": fmt,
        "instant": instant,
        "range": not instant,
        "legendFormat": legend or "__auto",
    }


@dataclass
class Panel:
    type: str
    title: str
    description: str
    targets: list[Json]
    width: int = 12
    height: int = 8
    unit: str = "short"
    mappings: list[Json] = field(default_factory=list)
    options: Json = field(default_factory=dict)
    custom: Json = field(default_factory=dict)
    color: Json = field(default_factory=dict)
    thresholds: Json | None = None
    overrides: list[Json] = field(default_factory=list)
    transformations: list[Json] = field(default_factory=list)
    extra: Json = field(default_factory=dict)
    #: What a panel with no series shows (stats: "0", not "No data").
    no_value: str | None = None

    def to_json(self, panel_id: int, x: int, y: int) -> Json:
        defaults: Json = {"unit": self.unit, "mappings": self.mappings, "custom": self.custom}
        if self.no_value is not None:
            defaults["noValue"] = self.no_value
        if self.color:
            defaults["color"] = self.color
        if self.thresholds is not None:
            defaults["thresholds"] = self.thresholds
        targets = [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(self.targets)]
        return {
            "id": panel_id,
            "type": self.type,
            "title": self.title,
            "description": self.description,
            "datasource": DS,
            "gridPos": {"h": self.height, "w": self.width, "x": x, "y": y},
            "targets": targets,
            "fieldConfig": {"defaults": defaults, "overrides": self.overrides},
            "options": self.options,
            "transformations": self.transformations,
            **self.extra,
        }


@dataclass
class Row:
    title: str
    panels: list[Panel]


def steps(*pairs: tuple[float | None, str]) -> Json:
    return {"mode": "absolute", "steps": [{"value": v, "color": c} for v, c in pairs]}


def timeseries(
    title: str,
    description: str,
    targets: list[Json],
    *,
    unit: str = "short",
    width: int = 12,
    stack: bool = False,
    bars: bool = False,
) -> Panel:
    custom: Json = {
        "drawStyle": "bars" if bars else "line",
        "lineWidth": 1,
        "fillOpacity": 20 if stack or bars else 10,
        "showPoints": "never",
        "spanNulls": True,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
    }
    options: Json = {
        "legend": {"displayMode": "table", "placement": "right", "showLegend": True,
                   "calcs": ["lastNotNull", "max"]},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }  # fmt: skip
    # Bars count per $__interval: at least 2 scrapes (30 s) per bar, or increase() is empty.
    extra: Json = {"interval": "1m"} if bars else {}
    return Panel("timeseries", title, description, targets, width=width, unit=unit,
                 custom=custom, options=options, color={"mode": "palette-classic"},
                 extra=extra)  # fmt: skip


def stat(
    title: str,
    description: str,
    expr: str,
    *,
    unit: str = "short",
    width: int = 6,
    thresholds: Json | None = None,
    mappings: list[Json] | None = None,
    no_value: str | None = None,
) -> Panel:
    options: Json = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "background", "graphMode": "none", "textMode": "auto",
        "justifyMode": "auto", "orientation": "auto",
    }  # fmt: skip
    return Panel("stat", title, description, [query(expr, instant=True)], width=width,
                 height=4, unit=unit, options=options, color={"mode": "thresholds"},
                 thresholds=thresholds or steps((None, "green")),
                 mappings=mappings or [], no_value=no_value)  # fmt: skip


def state_timeline(
    title: str,
    description: str,
    expr: str,
    legend: str,
    mappings: list[Json],
    *,
    width: int = 24,
    height: int = 10,
) -> Panel:
    options: Json = {
        "showValue": "auto", "rowHeight": 0.9, "mergeValues": True, "alignValue": "left",
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "single", "sort": "none"},
    }  # fmt: skip
    return Panel("state-timeline", title, description, [query(expr, legend)], width=width,
                 height=height, mappings=mappings, options=options,
                 custom={"fillOpacity": 80, "lineWidth": 0},
                 color={"mode": "thresholds"},
                 thresholds=steps((None, OTHER_GAP.colour)))  # fmt: skip


def table(
    title: str,
    description: str,
    expr: str,
    *,
    width: int = 12,
    height: int = 8,
    sort_by: str | None = "Value",
    descending: bool = True,
    transformations: list[Json] | None = None,
    mappings: list[Json] | None = None,
    overrides: list[Json] | None = None,
    cell: str = "auto",
    unit: str = "short",
) -> Panel:
    options: Json = {
        "showHeader": True, "cellHeight": "sm",
        "footer": {"show": False, "reducer": ["sum"], "fields": "", "countRows": False},
        "sortBy": [{"displayName": sort_by, "desc": descending}] if sort_by else [],
    }  # fmt: skip
    organize: Json = {"id": "organize", "options": {"excludeByName": {"Time": True}}}
    return Panel("table", title, description, [query(expr, instant=True, fmt="table")],
                 width=width, height=height, options=options, unit=unit,
                 custom={"align": "auto", "cellOptions": {"type": cell}, "inspect": False},
                 mappings=mappings or [], overrides=overrides or [],
                 color={"mode": "thresholds"}, thresholds=steps((None, "text")),
                 transformations=[organize] if transformations is None
                 else transformations)  # fmt: skip


def coloured_column(name: str, mappings: list[Json]) -> Json:
    """A table override: column ``name`` shows its values through ``mappings``, each
    cell's background in the mapped colour (as the matrices' cells)."""
    return {"matcher": {"id": "byName", "options": name}, "properties": [
        {"id": "mappings", "value": mappings},
        {"id": "custom.cellOptions", "value": {"type": "color-background"}}]}  # fmt: skip


def matrix_table(
    title: str,
    description: str,
    expr: str,
    *,
    columns: str,
    values: str,
    mappings: list[Json],
    sort_columns: bool = False,
) -> Panel:
    """Targets down, ``columns`` across (Grafana's groupingToMatrix), each cell the
    series' ``values`` field, coloured by ``mappings``; the corner cell, which Grafana
    names ``target\\<columns>``, keeps plain text. ``sort_columns``: the columns come
    in the order the rows first name them, so sort the series by that field first."""
    corner = f"target\\{columns}"
    grouping: Json = {"id": "groupingToMatrix", "options": {
        "columnField": columns, "rowField": "target", "valueField": values,
        "emptyValue": "empty"}}  # fmt: skip
    presort: list[Json] = [{"id": "sortBy", "options": {"fields": {}, "sort": [
        {"field": columns}]}}] if sort_columns else []  # fmt: skip
    return table(title, description, expr, width=24, height=10, cell="color-background",
                 mappings=mappings, sort_by=corner, descending=False,
                 transformations=[*presort, grouping],
                 overrides=[{"matcher": {"id": "byName", "options": corner}, "properties": [
                     {"id": "custom.cellOptions", "value": {"type": "auto"}}]}])  # fmt: skip


def heatmap(title: str, description: str, expr: str, *, unit: str = "s", width: int = 12) -> Panel:
    options: Json = {
        "calculate": False,
        "cellGap": 1,
        "color": {"mode": "scheme", "scheme": "Oranges", "scale": "exponential",
                  "exponent": 0.5, "steps": 64, "fill": "dark-orange", "reverse": False},
        "yAxis": {"axisPlacement": "left", "unit": unit, "reverse": False},
        "rowsFrame": {"layout": "auto"},
        "tooltip": {"mode": "single", "yHistogram": False, "showColorScale": False},
        "legend": {"show": True},
        "exemplars": {"color": "rgba(255,0,255,0.7)"},
        "filterValues": {"le": 1e-9},
    }  # fmt: skip
    return Panel("heatmap", title, description,
                 [query(expr, "{{le}}", fmt="heatmap")], width=width, unit=unit,
                 options=options, custom={"scaleDistribution": {"type": "linear"}})  # fmt: skip


# --- dashboards --------------------------------------------------------------


def support_gap_rows() -> list[Row]:
    matrix = matrix_table(
        "Support-gap matrix (targets x probes, latest outcome)",
        "Each cell is the latest outcome of a probe, coloured as on the status page: a "
        "cause name (NOTIMP, DSOTYPENI, no DSO, REFUSED, silent, or any other cause) is a "
        "gap the probe does not expect; **\u2713** marks a gap the probe expects (NOTIMP to "
        "an unassigned opcode on a survey, BADVERS to EDNS version 1): the healthy answer; "
        "**ok** means the server handled the operation; **handled \u2717** that it handled "
        "one it should refuse (an open AXFR or UPDATE); a check name with **\u2717** "
        "(**badversion \u2717**) that there is no gap but the reply violates that "
        "conformance check (Knot Resolver's NOERROR to EDNS version 1, where BADVERS is "
        "due; see the conformance panels); **pending** that the probe has not "
        "run yet. Switch *Show* to *all pairs* to see the expected cells of pairs that did "
        "not change in the range too. When did a cell change? See *Since when*.\n\n"
        + remediation_markdown(GAP_CAUSES_DOC),
        matrix_expr(), columns="probe", values="cell", mappings=cell_mappings(),
        sort_columns=True,
    )
    since = table(
        "Since when (latest changes first)",
        f"When each pair's current answer began (`dnsgap_support_gap_since_timestamp_seconds`:"
        f" the first outcome with this cause), for the cells of the matrix; the {TOP * 2} "
        "latest.",
        f"topk({TOP * 2}, max by (target, probe) "
        f"(dnsgap_support_gap_since_timestamp_seconds{{{SEL}}}) * 1000"
        f" * on (target, probe) group_left (cell) ({matrix_expr()}))",
        width=24, unit="dateTimeAsIso",
        overrides=[coloured_column("cell", cell_mappings())],
    )  # fmt: skip
    timeline = state_timeline(
        f"Support gaps over time (pairs that changed or were not as expected, top {TOP})",
        "The latest outcome of each pair over time, with the matrix's colours; only pairs "
        "that changed in the selected range (most changes first) or were not as expected "
        "in it.\n\n" + remediation_markdown(GAP_CAUSES_DOC),
        cell_code_expr(f" and on (target, probe) {interesting_pairs()}"),
        "{{target}} / {{probe}}",
        code_mappings(),
    )
    failing = stat(
        "Pairs not as expected",
        "Pairs whose latest outcome does not match the probe's `expect` (a gap can be "
        "expected, e.g. DSOTYPENI for an unassigned TLV type).",
        f"count(({success_by_pair()} == 0) and on (target, probe) {INFO})",
        thresholds=steps((None, OK.colour), (1, GAP_SWATCHES[Cause.NOT_IMPLEMENTED].colour)),
        no_value="0",
    )  # fmt: skip
    gaps_now = stat(
        "Pairs with a gap",
        "Pairs whose latest outcome shows a support gap, expected or not.",
        f'count(max by (target, probe) (dnsgap_support_gap{{{SEL},cause=~"$cause"}} == 1)'
        f" and on (target, probe) {INFO})",
        thresholds=steps((None, "blue")), no_value="0",
    )  # fmt: skip
    pending = stat(
        "Pairs pending",
        "Configured pairs that have not run yet.",
        f"count(max by (target, probe) ({INFO}) unless on (target, probe) "
        f"dnsgap_probe_success{{{SEL}}})",
        thresholds=steps((None, "blue")), no_value="0",
    )  # fmt: skip
    changes = stat(
        "Gap changes in range",
        "How often a pair's answer changed (a gap appeared, went away or changed cause) in "
        "the selected time range.",
        f"round(sum(increase(dnsgap_gap_changes_total{{{SEL}}}[$__range])"
        f" and on (target, probe) {INFO}))",
        thresholds=steps((None, OK.colour), (1, GAP_SWATCHES[Cause.DSO_NOT_IMPLEMENTED].colour)),
        no_value="0",
    )  # fmt: skip
    new_changes = table(
        f"Gap changes in the selected range (top {TOP})",
        "Changes per pair in the selected range; a pair here has a new, resolved or "
        "changed gap (the matrix shows its current state).",
        f"topk({TOP}, round(sum by (target, probe) (increase(dnsgap_gap_changes_total"
        f"{{{SEL}}}[$__range])) and on (target, probe) {INFO}) > 0)",
    )  # fmt: skip
    gap_responses = table(
        f"Gap responses in the selected range, by cause (top {TOP})",
        "Responses that showed a gap, per pair and cause, in the selected range.\n\n"
        + remediation_markdown(GAP_CAUSES_DOC),
        f"topk({TOP}, round(sum by (target, probe, cause) (increase("
        f'dnsgap_probe_responses_total{{{SEL},cause!="none",cause=~"$cause"}}[$__range]))'
        f" and on (target, probe) {INFO}) > 0)",
        overrides=[coloured_column("cause", cause_mappings())],
    )  # fmt: skip
    overview = Row("Support-gap overview",
                   [failing, gaps_now, pending, changes, matrix, since, timeline, new_changes,
                    gap_responses])  # fmt: skip

    by_rcode = timeseries(
        "Responses by rcode",
        "Probe responses per second by DNS rcode; `none` means no DNS reply came.",
        [query(f"sum by (rcode) (rate(dnsgap_probe_responses_total{{{SEL}}}[$__rate_interval]))",
               "{{rcode}}")], unit="reqps", stack=True)  # fmt: skip
    by_cause = timeseries(
        "Responses by cause",
        "Probe responses per second by cause (`none`: the server handled the operation).",
        [query(f"sum by (cause) (rate(dnsgap_probe_responses_total{{{SEL}}}[$__rate_interval]))",
               "{{cause}}")], unit="reqps", stack=True)  # fmt: skip
    last_rcode = state_timeline(
        f"Last rcode (pairs that changed or were not as expected, top {TOP})",
        "The rcode of each pair's latest reply; `none (no reply)` is silence, a closed "
        "connection or a network error.",
        f"max by (target, probe) (dnsgap_probe_last_rcode{{{SEL}}})"
        f" and on (target, probe) {INFO} and on (target, probe) {interesting_pairs()}",
        "{{target}} / {{probe}}",
        rcode_mappings(),
    )
    rcode_table = table(
        f"Responses in the selected range by rcode and cause (top {TOP * 2})",
        "(target, probe, rcode, cause) combinations seen, with their count in the range.",
        f"topk({TOP * 2}, round(sum by (target, probe, rcode, cause) "
        f"(increase(dnsgap_probe_responses_total{{{SEL}}}[$__range]))"
        f" and on (target, probe) {INFO}) > 0)",
        width=24,
    )
    responses = Row("Response codes", [by_rcode, by_cause, last_rcode, rcode_table])
    return [overview, responses]


def conformance_rows() -> list[Row]:
    """Conformance checks (docs/conformance.md): targets x checks, and what to do."""
    violated = f"dnsgap_conformance_violation{{{SEL}}}"
    verdicts = {"0": {"text": OK.text, "color": OK.colour, "index": 0},
                "1": {"text": f"{VIOLATION.text} \u2717", "color": VIOLATION.colour,
                      "index": 1}}  # fmt: skip
    checks_doc = "What each check means and what to do (docs/conformance.md):\n\n" + "\n".join(
        f"- **{check.name}**: {check.remediation}" for check in conformance.CHECKS)
    now = stat(
        "Checks violated now",
        "(target, probe, check) whose latest reply violates the check.",
        f"count(max by (target, probe, check) ({violated} == 1)"
        f" and on (target, probe) {INFO})",
        thresholds=steps((None, OK.colour), (1, VIOLATION.colour)), no_value="0",
    )  # fmt: skip
    replies = stat(
        "Violating replies in range",
        "Replies that violated a conformance check in the selected range, all checks.",
        f"round(sum(increase(dnsgap_conformance_violations_total{{{SEL}}}[$__range])"
        f" and on (target, probe) {INFO}))",
        thresholds=steps((None, OK.colour), (1, VIOLATION.colour)), no_value="0",
    )  # fmt: skip
    # With "unexpected or changed", only targets with a violation in the range get a row.
    shown = (f"(max by (target) (max_over_time({violated}[$__range])) > 0"
             f" or max by (target) ({INFO}) unless on () (vector($unexpected) > 0))")
    matrix = matrix_table(
        "Conformance matrix (targets x checks, latest replies)",
        "Each cell: does the latest reply of any of the target's probes violate the check "
        "(ISC genreport's tags, Zonemaster's cases)? **ok** no, **violation \u2717** yes, "
        "empty: the check applies to none of its probes. *Show: unexpected or changed* "
        "keeps the targets with a violation in the range.\n\n" + checks_doc,
        f"max by (target, check) ({violated} and on (target, probe) {INFO})"
        f" and on (target) {shown}",
        columns="check", values="Value", mappings=[{"type": "value", "options": verdicts}],
    )  # fmt: skip
    current = table(
        f"Violations now, per probe (top {TOP * 2})",
        "The checks each probe's latest reply violates; reproduce one with "
        "`dnsgap probe --json` (its `violations`).\n\n" + checks_doc,
        f"topk({TOP * 2}, max by (target, probe, check) ({violated} == 1)"
        f" and on (target, probe) {INFO})",
        width=12,
    )  # fmt: skip
    counted = table(
        f"Violating replies in the selected range (top {TOP})",
        "Replies per (target, probe, check) that violated the check in the range: a check "
        "that is not violated now but has replies here came and went.",
        f"topk({TOP}, round(sum by (target, probe, check) (increase("
        f"dnsgap_conformance_violations_total{{{SEL}}}[$__range]))"
        f" and on (target, probe) {INFO}) > 0)",
        width=12,
    )  # fmt: skip
    return [Row("Conformance", [now, replies, matrix, current, counted])]


def dso_rows() -> list[Row]:
    dso_pairs = f'max by (target, probe) (dnsgap_probe_info{{{SEL},kind=~"dso_.*"}})'
    outcomes = state_timeline(
        f"DSO probe outcomes (pairs that changed or were not as expected, top {TOP})",
        "Latest outcome of each DSO probe. `no DSO`: NOTIMP to a DSO message (RFC 8765 "
        "§6.2.2); DSOTYPENI: DSO spoken but not this TLV type.\n\n"
        + remediation_markdown([Cause.DSO_NOT_IMPLEMENTED, Cause.DSO_TYPE_NOT_IMPLEMENTED,
                                Cause.DSO_ECHOED, Cause.NO_RESPONSE]),
        cell_code_expr(f" and on (target, probe) {dso_pairs}"
                       f" and on (target, probe) {interesting_pairs()}"),
        "{{target}} / {{probe}}", code_mappings(), height=8,
    )  # fmt: skip
    sessions = state_timeline(
        f"DSO session established (targets without, or that changed; top {TOP})",
        "1 while a DSO session with the target is established (RFC 8490 §5.1); only targets "
        "whose session state changed in the range or that have none at its end.",
        f"max by (target) (dnsgap_dso_session_established{{{TSEL}}}) and on (target) "
        f"topk({TOP}, max by (target) (changes(dnsgap_dso_session_established{{{TSEL}}}"
        f"[$__range] @ end())) > 0 or max by (target) "
        f"(dnsgap_dso_session_established{{{TSEL}}} @ end()) == 0)",
        "{{target}}",
        [{"type": "value", "options": {
            "0": {"text": "no session", "color": OTHER_GAP.colour, "index": 0},
            "1": {"text": "established", "color": OK.colour, "index": 1}}}],
        width=12, height=8,
    )  # fmt: skip
    closed = timeseries(
        "DSO sessions closed by reason",
        "Session ends per reason (retry delay, inactivity, server closed, probe done...).",
        [query(f"round(sum by (target, reason) (increase(dnsgap_dso_sessions_closed_total"
               f"{{{TSEL}}}[$__interval])))", "{{target}} {{reason}}")],
        bars=True)  # fmt: skip
    inactivity = timeseries(
        "Granted inactivity timeout",
        "Inactivity timeout the server granted in its Keepalive response (RFC 8490 §7.1).",
        [query(f"max by (target) (dnsgap_dso_inactivity_timeout_seconds{{{TSEL}}})",
               "{{target}}")], unit="s", width=8)  # fmt: skip
    keepalive = timeseries(
        "Granted keepalive interval",
        "Keepalive interval the server granted (RFC 8490 §7.1).",
        [query(f"max by (target) (dnsgap_dso_keepalive_interval_seconds{{{TSEL}}})",
               "{{target}}")], unit="s", width=8)  # fmt: skip
    retry = timeseries(
        "Retry delay",
        "Delay the server asked for in a Retry Delay TLV (RFC 8490 §7.2) before reconnecting.",
        [query(f"max by (target) (dnsgap_dso_retry_delay_seconds{{{TSEL}}})",
               "{{target}}")], unit="s", width=8)  # fmt: skip
    push = timeseries(
        "DNS Push notifications",
        "PUSH messages received after a SUBSCRIBE (RFC 8765 §6.3).",
        [query(f"round(sum by (target, probe) (increase(dnsgap_dso_push_notifications_total"
               f"{{{SEL}}}[$__interval])))", "{{target}} / {{probe}}")],
        bars=True)  # fmt: skip
    fallbacks = timeseries(
        "Fallbacks by result",
        "Traditional queries run because DSO (or IXFR) was not available, by result.\n\n"
        + remediation_markdown([Cause.DSO_NOT_IMPLEMENTED]),
        [query(f"round(sum by (target, probe, result) (increase(dnsgap_fallback_total{{{SEL}}}"
               "[$__interval])))", "{{target}} / {{probe}} {{result}}")],
        bars=True)  # fmt: skip
    active = state_timeline(
        f"Fallback active (pairs that used it in the range, top {TOP})",
        "1 while a probe uses its traditional fallback instead of DSO (or IXFR).",
        f"max by (target, probe) (dnsgap_fallback_active{{{SEL}}}) and on (target, probe) "
        f"topk({TOP}, max by (target, probe) (max_over_time(dnsgap_fallback_active{{{SEL}}}"
        "[$__range] @ end())) == 1)",
        "{{target}} / {{probe}}",
        [{"type": "value", "options": {
            "0": {"text": "preferred", "color": OK.colour, "index": 0},
            "1": {"text": "fallback", "color": GAP_SWATCHES[Cause.DSO_NOT_IMPLEMENTED].colour,
                  "index": 1}}}],
        height=8,
    )  # fmt: skip
    return [
        Row("DSO sessions", [outcomes, sessions, closed, inactivity, keepalive, retry]),
        Row("DNS Push and fallback", [push, fallbacks, active]),
    ]


def operations_rows() -> list[Row]:
    duration = heatmap(
        "Probe duration",
        "Distribution of probe durations (all selected probes), from the histogram buckets.",
        f"sum by (le) (increase(dnsgap_probe_duration_seconds_bucket{{{SEL}}}[$__rate_interval]))",
    )
    p90 = timeseries(
        f"Probe duration p90 (slowest {TOP // 3})",
        "90th percentile duration of the slowest pairs; a probe that times out sits at its "
        "timeout.",
        [query(f"topk({TOP // 3}, histogram_quantile(0.9, sum by (le, target, probe) "
               f"(rate(dnsgap_probe_duration_seconds_bucket{{{SEL}}}[$__rate_interval]))))",
               "{{target}} / {{probe}}")], unit="s")  # fmt: skip
    errors = timeseries(
        "Error causes",
        "Responses that were not handled, per cause.\n\n" + remediation_markdown(GAP_CAUSES_DOC),
        [query(f'round(sum by (cause) (increase(dnsgap_probe_responses_total{{{SEL},'
               'cause!="none"}[$__interval])))', "{{cause}}")], bars=True, stack=True)  # fmt: skip
    success = state_timeline(
        f"Probe success (pairs that changed or were not as expected, top {TOP})",
        "1 when the latest outcome met the probe's expectation.",
        f"{success_by_pair()} and on (target, probe) {interesting_pairs()}",
        "{{target}} / {{probe}}",
        [{"type": "value", "options": {
            "0": {"text": "not as expected",
                  "color": GAP_SWATCHES[Cause.NOT_IMPLEMENTED].colour, "index": 0},
            "1": {"text": "as expected", "color": OK.colour, "index": 1}}}],
        width=12,
    )  # fmt: skip
    last_run = table(
        f"Stalest pairs (top {TOP})",
        "Age of each pair's latest run in probe intervals; far above 1 means the scheduler "
        "is behind or the probe is skipped (alert DnsgapProbeStale: 3).",
        f"topk({TOP}, (time() - max by (target, probe) "
        f"(dnsgap_probe_last_run_timestamp_seconds{{{SEL}}})) / max by (target, probe) "
        f"(dnsgap_probe_interval_seconds{{{SEL}}}))",
        unit="none",
    )  # fmt: skip
    cert_expiry = table(
        f"TLS certificate expiry (soonest {TOP})",
        "Time left until the earliest notAfter in the certificate chain each DoT, DoH and "
        "DoQ server presents; the DnsgapTlsCertificateExpiringSoon alert fires under 14 "
        "days. Negative: already expired (handshakes then fail with "
        "tls_certificate_invalid).",
        f"bottomk({TOP}, min by (target, probe) "
        f"(dnsgap_tls_cert_expiry_timestamp_seconds{{{SEL}}}) - time())",
        sort_by="Value", descending=False, unit="s",
        overrides=[{"matcher": {"id": "byName", "options": "Value"},
                    "properties": [
                        {"id": "unit", "value": "s"},
                        {"id": "custom.cellOptions", "value": {"type": "color-text"}},
                        {"id": "thresholds", "value": steps(
                            (None, "red"), (14 * 86400, "orange"), (30 * 86400, "green"))},
                    ]}],
    )  # fmt: skip
    latency = Row("Latency and errors", [duration, p90, errors, success, last_run, cert_expiry])

    reload_ok = stat(
        "Config reload", "Whether the latest configuration (re)load succeeded everywhere.",
        f"min(dnsgap_config_reload_success{{{XSEL}}})",
        thresholds=steps((None, GAP_SWATCHES[Cause.NOT_IMPLEMENTED].colour), (1, OK.colour)),
        mappings=[{"type": "value", "options": {
            "0": {"text": "FAILED", "index": 0}, "1": {"text": "OK", "index": 1}}}],
    )  # fmt: skip
    reload_age = stat(
        "Since last good reload",
        "Time since the configuration was last loaded successfully.",
        f"time() - max(dnsgap_config_last_reload_success_timestamp_seconds{{{XSEL}}})",
        unit="s",
        thresholds=steps((None, "blue")),
    )
    in_flight_now = stat(
        "Probes in flight",
        "Probes running right now, over the selected exporter instances.",
        f"sum(dnsgap_probes_in_flight{{{XSEL}}})",
        thresholds=steps((None, "blue")), no_value="0",
    )  # fmt: skip
    instances = stat(
        "Exporter instances",
        "Exporter processes reporting build info.",
        f"count(dnsgap_build_info{{{XSEL}}})",
        thresholds=steps((None, GAP_SWATCHES[Cause.NOT_IMPLEMENTED].colour), (1, OK.colour)),
        no_value="0",
    )  # fmt: skip
    lateness = timeseries(
        "Scheduler lateness",
        "How late probes start compared with their schedule; growing lateness means too "
        "many probes for the concurrency limit.",
        [query("histogram_quantile(0.5, sum by (le) "
               f"(rate(dnsgap_scheduler_lateness_seconds_bucket{{{XSEL}}}[$__rate_interval])))",
               "p50"),
         query("histogram_quantile(0.99, sum by (le) "
               f"(rate(dnsgap_scheduler_lateness_seconds_bucket{{{XSEL}}}[$__rate_interval])))",
               "p99")],
        unit="s")  # fmt: skip
    in_flight = timeseries(
        "Probes in flight",
        "Concurrent probes per exporter instance.",
        [query(f"sum by (instance) (dnsgap_probes_in_flight{{{XSEL}}})", "{{instance}}")],
        width=6)  # fmt: skip
    skipped = timeseries(
        "Probe runs skipped",
        "Scheduled runs skipped per reason (overlap: the previous run still going).",
        [query(f"round(sum by (reason) (increase(dnsgap_probes_skipped_total{{{XSEL}}}"
               "[$__interval])))", "{{reason}}")], bars=True, width=6)  # fmt: skip
    reloads = timeseries(
        "Config reloads by result",
        "Reload attempts (SIGHUP or POST /-/reload) by result.",
        [query(f"round(sum by (result) (increase(dnsgap_config_reloads_total{{{XSEL}}}"
               "[$__interval])))", "{{result}}")], bars=True)  # fmt: skip
    build = table(
        "Build info",
        "Version of each exporter instance.",
        f"max by (job, instance, version, python) (dnsgap_build_info{{{XSEL}}})",
        sort_by=None,
    )
    health = Row("Exporter health",
                 [reload_ok, reload_age, in_flight_now, instances, lateness, in_flight,
                  skipped, reloads, build])  # fmt: skip
    return [latency, health]


# --- assembly ----------------------------------------------------------------


def template_vars(kind_filter: str = "", overview: bool = False) -> list[Json]:
    """Data source, then job and instance (the dashboard-linter's required variables),
    then the pair filters; ``kind_filter`` narrows the kind variable's choices."""

    def label_var(name: str, definition: str, label: str | None = None) -> Json:
        return {
            "name": name, "label": label or name.capitalize(), "type": "query",
            "datasource": DS, "definition": definition, "query": definition,
            "refresh": 2, "sort": 1, "includeAll": True, "multi": True, "allValue": ".+",
            "regex": "", "hide": 0,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "options": [],
        }  # fmt: skip

    info = "dnsgap_probe_info"
    variables: list[Json] = [
        {"name": "datasource", "label": "Data source", "type": "datasource",
         "query": "prometheus", "refresh": 1, "regex": "", "hide": 0, "current": {},
         "options": [], "includeAll": False, "multi": False},
        label_var("job", f"label_values({info}, job)"),
        label_var("instance", f'label_values({info}{{job=~"$job"}}, instance)'),
        label_var("kind", f'label_values({info}{{{XSEL}{kind_filter}}}, kind)'),
        label_var("transport", f'label_values({info}{{{XSEL}}}, transport)'),
        label_var("target", f'label_values({info}{{{XSEL},kind=~"$kind",'
                            'transport=~"$transport"}, target)'),
        label_var("probe", f'label_values({info}{{{TSEL},kind=~"$kind",'
                           'transport=~"$transport"}, probe)'),
    ]  # fmt: skip
    if overview:
        variables.append(label_var("cause", f"label_values(dnsgap_support_gap{{{XSEL}}}, cause)"))
        variables.append({
            "name": "unexpected", "label": "Show", "type": "custom",
            "query": "unexpected or changed : 1,all pairs : 0",
            "current": {"selected": True, "text": "unexpected or changed", "value": "1"},
            "options": [
                {"selected": True, "text": "unexpected or changed", "value": "1"},
                {"selected": False, "text": "all pairs", "value": "0"}],
            "includeAll": False, "multi": False, "hide": 0,
            "description": "The matrix shows every pair, or only those not as expected, "
                           "pending, or changed in the selected range (for fleets).",
        })  # fmt: skip
    return variables


def layout(rows: Sequence[Row]) -> Iterator[Json]:
    """Panels left to right, wrapping at 24 columns; rows as full-width headers."""
    panel_id, y = 1, 0
    for row in rows:
        yield {"id": panel_id, "type": "row", "title": row.title, "collapsed": False,
               "datasource": DS, "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
               "panels": []}  # fmt: skip
        panel_id, y, x, line_height = panel_id + 1, y + 1, 0, 0
        for panel in row.panels:
            if x + panel.width > 24:
                y, x, line_height = y + line_height, 0, 0
            yield panel.to_json(panel_id, x, y)
            panel_id, x, line_height = panel_id + 1, x + panel.width, max(line_height, panel.height)
        y += line_height


def dashboard(
    uid: str, title: str, description: str, rows: Sequence[Row], *, kind_filter: str = "",
    overview: bool = False,
) -> Json:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["dnsgap", "dns"],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "liveNow": False,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "fiscalYearStartMonth": 0,
        "weekStart": "",
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts", "type": "dashboard"}]},
        "links": [{"title": "dnsgap", "type": "dashboards", "tags": ["dnsgap"],
                   "asDropdown": True, "includeVars": True, "keepTime": True,
                   "icon": "external link", "targetBlank": False, "tooltip": "", "url": ""}],
        "templating": {"list": template_vars(kind_filter, overview)},
        "panels": list(layout(rows)),
    }  # fmt: skip


def dashboards() -> dict[str, Json]:
    return {
        "dnsgap-overview.json": dashboard(
            "dnsgap-overview", "dnsgap / Support gaps",
            "Which DNS operations each server does not support, and why.",
            [*support_gap_rows(), *conformance_rows()], overview=True),
        "dnsgap-dso.json": dashboard(
            "dnsgap-dso", "dnsgap / DSO and DNS Push",
            "DNS Stateful Operations sessions, granted timers, push and fallbacks.",
            dso_rows(), kind_filter=',kind=~"dso_.*"'),
        "dnsgap-operations.json": dashboard(
            "dnsgap-operations", "dnsgap / Latency, errors and exporter health",
            "Probe latency and error causes, and the exporter's own health.",
            operations_rows()),
    }  # fmt: skip


def render(board: Json) -> str:
    return json.dumps(board, indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if the JSON files are stale")
    args = parser.parse_args(argv)
    stale = []
    OUT_DIR.mkdir(exist_ok=True)
    for name, board in dashboards().items():
        path, text = OUT_DIR / name, render(board)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"stale: {', '.join(stale)}; run python grafana/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
