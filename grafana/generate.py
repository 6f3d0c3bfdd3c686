"""Generates dnsgap's Grafana dashboards (grafana/dashboards/*.json).

Run ``python grafana/generate.py`` after changing a panel and commit both this
file and its output; ``--check`` exits 1 when the committed JSON is stale.

Why generated: the cause colours, display names and remediation texts come from
``exporter/causes.py`` so that the dashboards say exactly what the exporter,
CLI and alerts say. Every panel query is one PromQL string in
``panels[].targets[].expr`` using only ``$target``, ``$probe``,
``$__rate_interval`` and ``$__range``, and each returns data on ``dnsgap demo``
(gap-cause series exist at 0 from start-up; counters that may not exist yet
end in ``or vector(0)``).
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

from exporter.causes import RCODE_NAMES, REMEDIATION, Cause  # noqa: E402

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
SCHEMA_VERSION = 39
DS: dict[str, str] = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'target=~"$target",probe=~"$probe"'
TSEL = 'target=~"$target"'

Json = dict[str, Any]

# --- cause and rcode presentation -------------------------------------------

#: The gaps an operator must tell apart at a glance: (cause, short text, colour).
GAP_STYLE: tuple[tuple[Cause, str, str], ...] = (
    (Cause.NOT_IMPLEMENTED, "NOTIMP", "red"),
    (Cause.DSO_TYPE_NOT_IMPLEMENTED, "DSOTYPENI", "purple"),
    (Cause.DSO_NOT_IMPLEMENTED, "no DSO", "dark-orange"),
    (Cause.REFUSED, "REFUSED", "orange"),
    (Cause.NO_RESPONSE, "silent", "blue"),
)
OTHER_GAP_COLOR = "yellow"
OK_COLOR = "green"
#: Numeric code of "other gap" in the state-timeline encoding (0 = ok, 1..5 = GAP_STYLE).
OTHER_GAP_CODE = 9

RCODE_COLORS: Mapping[int, str] = {
    0: OK_COLOR, 3: OK_COLOR, 4: "red", 5: "orange", 11: "purple", -1: "blue",
}  # fmt: skip


def cause_text_mappings() -> list[Json]:
    """Value mappings for a field holding a cause label (matrix cells)."""
    styled = {cause: (text, color) for cause, text, color in GAP_STYLE}
    options: Json = {}
    for index, cause in enumerate(Cause):
        text, color = styled.get(cause, (cause.value, OTHER_GAP_COLOR))
        if cause is Cause.NONE:
            text, color = "ok", OK_COLOR
        options[cause.value] = {"text": text, "color": color, "index": index}
    return [{"type": "value", "options": options}]


def cause_code_mappings() -> list[Json]:
    """Value mappings for :func:`cause_code_expr`'s numbers."""
    options: Json = {"0": {"text": "ok", "color": OK_COLOR, "index": 0}}
    for code, (_, text, color) in enumerate(GAP_STYLE, start=1):
        options[str(code)] = {"text": text, "color": color, "index": code}
    options[str(OTHER_GAP_CODE)] = {
        "text": "other gap", "color": OTHER_GAP_COLOR, "index": OTHER_GAP_CODE,
    }  # fmt: skip
    return [{"type": "value", "options": options}]


def rcode_mappings() -> list[Json]:
    options: Json = {"-1": {"text": "none (no reply)", "color": RCODE_COLORS[-1], "index": 0}}
    for index, (code, name) in enumerate(sorted(RCODE_NAMES.items()), start=1):
        color = RCODE_COLORS.get(code, OTHER_GAP_COLOR)
        options[str(code)] = {"text": name, "color": color, "index": index}
    return [{"type": "value", "options": options}]


def cause_code_expr(extra: str = "") -> str:
    """One number per (target, probe): 0 ok, 1..5 a styled gap, 9 any other gap.

    At most one cause of a probe is 1 at a time (the latest outcome's), so the
    max over causes is that cause's code; ``max`` also folds duplicate series
    from the scheduled and /probe jobs.
    """
    styled = [cause.value for cause, _, _ in GAP_STYLE]
    parts = [
        f'dnsgap_support_gap{{{SEL},cause="{value}"}} * {code}'
        for code, value in enumerate(styled, start=1)
    ]
    others = "|".join([Cause.NONE.value, *styled])
    parts.append(f'dnsgap_support_gap{{{SEL},cause!~"{others}"}} * {OTHER_GAP_CODE}')
    return f"max by (target, probe) ({' or '.join(parts)}){extra}"


def remediation_markdown(causes: Sequence[Cause]) -> str:
    lines = [f"- **{cause.value}**: {REMEDIATION[cause]}" for cause in causes]
    return "What each cause means and what to do:\n\n" + "\n".join(lines)


GAP_CAUSES_DOC = [cause for cause, _, _ in GAP_STYLE] + [
    Cause.NOT_AUTHORIZED, Cause.FORMAT_ERROR, Cause.SERVER_FAILURE, Cause.CONNECTION_CLOSED,
]  # fmt: skip

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

    def to_json(self, panel_id: int, x: int, y: int) -> Json:
        defaults: Json = {"unit": self.unit, "mappings": self.mappings, "custom": self.custom}
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
    return Panel("timeseries", title, description, targets, width=width, unit=unit,
                 custom=custom, options=options, color={"mode": "palette-classic"})  # fmt: skip


def stat(
    title: str,
    description: str,
    expr: str,
    *,
    unit: str = "short",
    width: int = 6,
    thresholds: Json | None = None,
    mappings: list[Json] | None = None,
) -> Panel:
    options: Json = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "background", "graphMode": "none", "textMode": "auto",
        "justifyMode": "auto", "orientation": "auto",
    }  # fmt: skip
    return Panel("stat", title, description, [query(expr, instant=True)], width=width,
                 height=4, unit=unit, options=options, color={"mode": "thresholds"},
                 thresholds=thresholds or steps((None, OK_COLOR)),
                 mappings=mappings or [])  # fmt: skip


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
                 thresholds=steps((None, OTHER_GAP_COLOR)))  # fmt: skip


def table(
    title: str,
    description: str,
    expr: str,
    *,
    width: int = 12,
    height: int = 8,
    sort_by: str | None = "Value",
    transformations: list[Json] | None = None,
    mappings: list[Json] | None = None,
    overrides: list[Json] | None = None,
    cell: str = "auto",
) -> Panel:
    options: Json = {
        "showHeader": True, "cellHeight": "sm",
        "footer": {"show": False, "reducer": ["sum"], "fields": "", "countRows": False},
        "sortBy": [{"displayName": sort_by, "desc": True}] if sort_by else [],
    }  # fmt: skip
    organize: Json = {"id": "organize", "options": {"excludeByName": {"Time": True}}}
    return Panel("table", title, description, [query(expr, instant=True, fmt="table")],
                 width=width, height=height, options=options,
                 custom={"align": "auto", "cellOptions": {"type": cell}, "inspect": False},
                 mappings=mappings or [], overrides=overrides or [],
                 color={"mode": "thresholds"}, thresholds=steps((None, "text")),
                 transformations=[organize] if transformations is None
                 else transformations)  # fmt: skip


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
    matrix_expr = (
        f"max by (target, probe, cause) (dnsgap_support_gap{{{SEL}}} == 1)"
        " or on (target, probe) "
        f"label_replace(max by (target, probe) (dnsgap_probe_info{{{SEL}}}) * 0,"
        ' "cause", "none", "", "")'
    )
    matrix = table(
        "Support-gap matrix (targets x probes, latest outcome)",
        "Each cell is the cause of the latest outcome of a probe; **ok** means the server "
        "handled the operation. NOTIMP (not_implemented), DSOTYPENI "
        "(dso_type_not_implemented), no DSO (dso_not_implemented), REFUSED and silent "
        "(no_response) have their own colours; other gaps are yellow.\n\n"
        + remediation_markdown(GAP_CAUSES_DOC),
        matrix_expr, width=24, height=9, cell="color-background",
        mappings=cause_text_mappings(),
        transformations=[{"id": "groupingToMatrix", "options": {
            "columnField": "probe", "rowField": "target", "valueField": "cause",
            "emptyValue": "empty"}}],
        overrides=[{"matcher": {"id": "byName", "options": "target\\probe"}, "properties": [
            {"id": "custom.cellOptions", "value": {"type": "auto"}}]}],
        sort_by=None,
    )  # fmt: skip
    timeline = state_timeline(
        "Support gaps over time",
        "The cause of each probe's latest outcome over time, with the same colours as the "
        "matrix.\n\n" + remediation_markdown(GAP_CAUSES_DOC),
        cause_code_expr(),
        "{{target}} / {{probe}}",
        cause_code_mappings(),
    )
    gaps_now = stat(
        "Probes with a gap now",
        "Probes whose latest outcome shows a support gap.",
        f"count(max by (target, probe) (dnsgap_support_gap{{{SEL}}}) == 1) or vector(0)",
        thresholds=steps((None, OK_COLOR), (1, "red")),
    )
    failing = stat(
        "Probes not meeting expectation",
        "Probes whose latest outcome did not match the probe's `expect` (a gap can be expected, "
        "e.g. DSOTYPENI for an unassigned TLV type).",
        f"count(min by (target, probe) (dnsgap_probe_success{{{SEL}}}) == 0) or vector(0)",
        thresholds=steps((None, OK_COLOR), (1, "red")),
    )
    probes = stat(
        "Probes",
        "Configured probes in the selection.",
        f"count(max by (target, probe) (dnsgap_probe_info{{{SEL}}})) or vector(0)",
        thresholds=steps((None, "blue")),
    )
    changes = stat(
        "Gap changes in range",
        "How often a probe's gap state changed (a gap appeared, went away or changed cause) "
        "in the selected time range.",
        f"sum(increase(dnsgap_gap_changes_total{{{SEL}}}[$__range])) or vector(0)",
        thresholds=steps((None, OK_COLOR), (1, "orange")),
    )
    new_changes = table(
        "Gap changes in the selected range",
        "Gap state changes per probe in the selected range; a non-zero row is a new, "
        "resolved or changed gap. Compare with the matrix for the current state.",
        f"sum by (target, probe) (increase(dnsgap_gap_changes_total{{{SEL}}}[$__range]))",
    )
    gap_responses = table(
        "Gap responses in the selected range, by cause",
        "Responses that showed a gap, per probe and cause, in the selected range.\n\n"
        + remediation_markdown(GAP_CAUSES_DOC),
        f'sum by (target, probe, cause) (increase(dnsgap_probe_responses_total{{{SEL},'
        f'cause!="none"}}[$__range]))',
        overrides=[{"matcher": {"id": "byName", "options": "cause"}, "properties": [
            {"id": "mappings", "value": cause_text_mappings()},
            {"id": "custom.cellOptions", "value": {"type": "color-text"}}]}],
    )  # fmt: skip
    overview = Row("Support-gap overview",
                   [gaps_now, failing, probes, changes, matrix, timeline, new_changes,
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
        "Last rcode per probe",
        "The rcode of each probe's latest reply; `none (no reply)` is silence, a closed "
        "connection or a network error.",
        f"max by (target, probe) (dnsgap_probe_last_rcode{{{SEL}}})",
        "{{target}} / {{probe}}",
        rcode_mappings(),
    )
    rcode_table = table(
        "Responses in the selected range by rcode and cause",
        "Every (target, probe, rcode, cause) combination seen, with its count in the range.",
        f"sum by (target, probe, rcode, cause) "
        f"(increase(dnsgap_probe_responses_total{{{SEL}}}[$__range]))",
        width=24,
    )
    responses = Row("Response codes", [by_rcode, by_cause, last_rcode, rcode_table])
    return [overview, responses]


def dso_rows() -> list[Row]:
    dso_probes = f'max by (target, probe) (dnsgap_probe_info{{{SEL},kind=~"dso_.*"}})'
    outcomes = state_timeline(
        "DSO probe outcomes",
        "Latest cause of each DSO probe. `no DSO`: NOTIMP to a DSO message (RFC 8765 §6.2.2); "
        "DSOTYPENI: DSO spoken but not this TLV type.\n\n"
        + remediation_markdown([Cause.DSO_NOT_IMPLEMENTED, Cause.DSO_TYPE_NOT_IMPLEMENTED,
                                Cause.DSO_ECHOED, Cause.NO_RESPONSE]),
        cause_code_expr(f" * on (target, probe) {dso_probes}"),
        "{{target}} / {{probe}}", cause_code_mappings(), height=8,
    )  # fmt: skip
    sessions = state_timeline(
        "DSO session established",
        "1 while a DSO session with the target is established (RFC 8490 §5.1).",
        f"max by (target) (dnsgap_dso_session_established{{{TSEL}}}) or vector(0)",
        "{{target}}",
        [{"type": "value", "options": {
            "0": {"text": "no session", "color": "text", "index": 0},
            "1": {"text": "established", "color": OK_COLOR, "index": 1}}}],
        width=12, height=8,
    )  # fmt: skip
    closed = timeseries(
        "DSO sessions closed by reason",
        "Session ends per reason (retry delay, inactivity, error ...).",
        [query(f"sum by (target, reason) (increase(dnsgap_dso_sessions_closed_total{{{TSEL}}}"
               "[$__rate_interval])) or vector(0)", "{{target}} {{reason}}")],
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
        [query(f"sum by (target, probe) (increase(dnsgap_dso_push_notifications_total{{{SEL}}}"
               "[$__rate_interval])) or vector(0)", "{{target}} / {{probe}}")],
        bars=True)  # fmt: skip
    fallbacks = timeseries(
        "Fallbacks by result",
        "Traditional queries run because DSO was not available, by result.\n\n"
        + remediation_markdown([Cause.DSO_NOT_IMPLEMENTED]),
        [query(f"sum by (target, probe, result) (increase(dnsgap_fallback_total{{{SEL}}}"
               "[$__rate_interval])) or vector(0)", "{{target}} / {{probe}} {{result}}")],
        bars=True)  # fmt: skip
    active = state_timeline(
        "Fallback active",
        "1 while a probe uses its traditional-query fallback instead of DSO.",
        f"max by (target, probe) (dnsgap_fallback_active{{{SEL}}}) or vector(0)",
        "{{target}} / {{probe}}",
        [{"type": "value", "options": {
            "0": {"text": "DSO", "color": OK_COLOR, "index": 0},
            "1": {"text": "fallback", "color": "orange", "index": 1}}}],
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
        "Probe duration p90",
        "90th percentile duration per probe; a probe that times out sits at its timeout.",
        [query("histogram_quantile(0.9, sum by (le, target, probe) "
               f"(rate(dnsgap_probe_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))",
               "{{target}} / {{probe}}")], unit="s")  # fmt: skip
    errors = timeseries(
        "Error causes",
        "Responses that were not handled, per cause.\n\n" + remediation_markdown(GAP_CAUSES_DOC),
        [query(f'sum by (cause) (increase(dnsgap_probe_responses_total{{{SEL},cause!="none"}}'
               "[$__rate_interval]))", "{{cause}}")], bars=True, stack=True)  # fmt: skip
    success = state_timeline(
        "Probe success",
        "1 when the latest outcome met the probe's expectation.",
        f"min by (target, probe) (dnsgap_probe_success{{{SEL}}})", "{{target}} / {{probe}}",
        [{"type": "value", "options": {
            "0": {"text": "failing", "color": "red", "index": 0},
            "1": {"text": "success", "color": OK_COLOR, "index": 1}}}],
        width=12,
    )  # fmt: skip
    last_run = table(
        "Seconds since last run",
        "Age of each probe's latest run; far above its interval means the scheduler is "
        "behind or the probe is skipped.",
        f"time() - max by (target, probe) (dnsgap_probe_last_run_timestamp_seconds{{{SEL}}})",
        overrides=[{"matcher": {"id": "byName", "options": "Value"},
                    "properties": [{"id": "unit", "value": "s"}]}],
    )  # fmt: skip
    cert_expiry = table(
        "TLS certificate expiry",
        "Time left until the earliest notAfter in the certificate chain each DoT, DoH and "
        "DoQ server presents; the DnsgapTlsCertificateExpiringSoon alert fires under 14 "
        "days. Negative: already expired (handshakes then fail with "
        "tls_certificate_invalid).",
        f"min by (target, probe) (dnsgap_tls_cert_expiry_timestamp_seconds{{{SEL}}}) - time()",
        sort_by=None,
        overrides=[{"matcher": {"id": "byName", "options": "Value"},
                    "properties": [
                        {"id": "unit", "value": "s"},
                        {"id": "custom.cellOptions", "value": {"type": "color-text"}},
                        {"id": "thresholds", "value": steps(
                            (None, "red"), (14 * 86400, "orange"), (30 * 86400, OK_COLOR))},
                    ]}],
    )  # fmt: skip
    latency = Row("Latency and errors", [duration, p90, errors, success, last_run, cert_expiry])

    reload_ok = stat(
        "Config reload", "Whether the latest configuration (re)load succeeded.",
        "min(dnsgap_config_reload_success)",
        thresholds=steps((None, "red"), (1, OK_COLOR)),
        mappings=[{"type": "value", "options": {
            "0": {"text": "FAILED", "index": 0}, "1": {"text": "OK", "index": 1}}}],
    )  # fmt: skip
    reload_age = stat(
        "Since last good reload",
        "Time since the configuration was last loaded successfully.",
        "time() - max(dnsgap_config_last_reload_success_timestamp_seconds)",
        unit="s",
        thresholds=steps((None, "blue")),
    )
    in_flight_now = stat(
        "Probes in flight",
        "Probes running right now, over all exporter instances.",
        "sum(dnsgap_probes_in_flight)",
        thresholds=steps((None, "blue")),
    )
    instances = stat(
        "Exporter instances",
        "Exporter processes reporting build info.",
        "count(dnsgap_build_info) or vector(0)",
        thresholds=steps((None, "red"), (1, OK_COLOR)),
    )
    lateness = timeseries(
        "Scheduler lateness",
        "How late probes start compared with their schedule; growing lateness means too "
        "many probes for the concurrency limit.",
        [query("histogram_quantile(0.5, sum by (le) "
               "(rate(dnsgap_scheduler_lateness_seconds_bucket[$__rate_interval])))", "p50"),
         query("histogram_quantile(0.99, sum by (le) "
               "(rate(dnsgap_scheduler_lateness_seconds_bucket[$__rate_interval])))", "p99")],
        unit="s")  # fmt: skip
    in_flight = timeseries(
        "Probes in flight and skipped",
        "Concurrent probes per exporter, and probes skipped per reason (e.g. the previous "
        "run still going, the concurrency limit).",
        [query("sum by (instance) (dnsgap_probes_in_flight)", "in flight {{instance}}"),
         query("sum by (reason) (increase(dnsgap_probes_skipped_total[$__rate_interval]))"
               " or vector(0)", "skipped {{reason}}")])  # fmt: skip
    reloads = timeseries(
        "Config reloads by result",
        "Reload attempts (SIGHUP or POST /-/reload) by result.",
        [query("sum by (result) (increase(dnsgap_config_reloads_total[$__rate_interval]))"
               " or vector(0)", "{{result}}")], bars=True)  # fmt: skip
    build = table(
        "Build info",
        "Version of each exporter instance.",
        "max by (instance, version, python) (dnsgap_build_info)",
        sort_by=None,
    )
    health = Row("Exporter health",
                 [reload_ok, reload_age, in_flight_now, instances, lateness, in_flight,
                  reloads, build])  # fmt: skip
    return [latency, health]


# --- assembly ----------------------------------------------------------------


def template_vars(target_filter: str = "") -> list[Json]:
    def label_var(name: str, definition: str) -> Json:
        return {
            "name": name, "label": name, "type": "query", "datasource": DS,
            "definition": definition, "query": definition, "refresh": 2, "sort": 1,
            "includeAll": True, "multi": True, "allValue": ".*", "regex": "", "hide": 0,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "options": [],
        }  # fmt: skip

    return [
        {"name": "datasource", "label": "Data source", "type": "datasource",
         "query": "prometheus", "refresh": 1, "regex": "", "hide": 0, "current": {},
         "options": [], "includeAll": False, "multi": False},
        label_var("target", f"label_values(dnsgap_probe_info{target_filter}, target)"),
        label_var("probe", 'label_values(dnsgap_probe_info{target=~"$target"}, probe)'),
    ]  # fmt: skip


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
    uid: str, title: str, description: str, rows: Sequence[Row], target_filter: str = ""
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
        "templating": {"list": template_vars(target_filter)},
        "panels": list(layout(rows)),
    }  # fmt: skip


def dashboards() -> dict[str, Json]:
    return {
        "dnsgap-overview.json": dashboard(
            "dnsgap-overview", "dnsgap / Support gaps",
            "Which DNS operations each server does not support, and why.",
            support_gap_rows()),
        "dnsgap-dso.json": dashboard(
            "dnsgap-dso", "dnsgap / DSO and DNS Push",
            "DNS Stateful Operations sessions, granted timers, push and fallbacks.",
            dso_rows(), target_filter='{kind=~"dso_.*"}'),
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
