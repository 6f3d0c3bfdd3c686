"""The status page at ``/``: the gap matrix as HTML, readable without Prometheus."""

from __future__ import annotations

import html
import time
from collections.abc import Iterable

from exporter import __version__, conformance
from exporter.causes import REMEDIATION, UNREACHED, Cause, rcode_name
from exporter.metrics import PairState
from exporter.palette import (
    EXPECTED,
    GAP_SWATCHES,
    LEGEND,
    UNEXPECTED_MARK,
    VIOLATION,
    cell_swatch,
    cell_text,
)

#: Background of each cell class, from the one palette (exporter/palette.py) that the
#: Grafana dashboards use too. Light tints keep black text readable.
CLASS_COLOURS = {swatch.key: swatch.colour for swatch in LEGEND}

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}"
    "h1{font-size:1.4rem;margin:0 0 .3rem} h2{font-size:1.1rem;margin:1.2rem 0 .4rem}"
    "table{border-collapse:collapse;width:100%}"
    "th,td{border:1px solid #ccc;padding:.35rem .5rem;text-align:left;vertical-align:top;"
    "font-size:.9rem} th{background:#f3f3f3} td.cause{font-weight:600}"
    "table#matrix td.target{font-weight:600;white-space:nowrap;width:1%}"
    "table#gaps td:first-child,table#conformance td:first-child{white-space:nowrap}"
    ".chip{display:inline-block;padding:.15rem .45rem;margin:.12rem .25rem .12rem 0;"
    "border:1px solid rgba(0,0,0,.18);border-radius:3px;font-size:.85rem}"
    ".chip b{font-weight:600} small{color:#555}"
    + "".join(f".chip.{c},tr.{c} td.cause{{background:{colour}}}"
              for c, colour in CLASS_COLOURS.items())
    # A gap the probe expects (BADVERS to EDNS version 1, DSOTYPENI to an unassigned
    # type) is the healthy answer: the expected colour, edged with its cause's colour.
    + "".join(f'.chip.{EXPECTED.key}[data-cause="{cause.value}"]'
              f"{{border-left:6px solid {swatch.colour}}}"
              for cause, swatch in GAP_SWATCHES.items())
)  # fmt: skip


def _ago(since: float | None, now: float) -> str:
    if since is None:
        return "-"
    seconds = max(0, int(now - since))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _violated(pair: PairState) -> list[str]:
    """The checks the pair's latest reply violates, in docs/conformance.md order."""
    if not pair.violating:
        return []
    return [check for check in conformance.NAMES if pair.violation.get(check)]


def _violation_row(pair: PairState, check: str, rcode: str) -> str:
    return (
        f'<tr class="{VIOLATION.key}" data-target="{html.escape(pair.target)}" '
        f'data-probe="{html.escape(pair.probe)}" data-check="{html.escape(check)}">'
        f"<td>{html.escape(pair.target)}</td><td>{html.escape(pair.probe)}</td>"
        f'<td class="cause">{html.escape(check)}</td><td>{html.escape(rcode)}</td>'
        f"<td>{pair.violations_total.get(check, 0)}</td>"
        f"<td>{html.escape(conformance.remediation(check))}</td></tr>"
    )


#: The remediation column of a pair whose gap is the answer its probe expects.
EXPECTED_REMEDY = "The answer this probe expects (its `expect`): nothing to do."


def unreachable_targets(pairs: Iterable[PairState]) -> list[str]:
    """Targets none of whose probes reached the server in their latest outcome
    (causes.UNREACHED: silence, refused or reset connections...), as
    ``dnsgap:target_unreachable`` in alerts.yml: pairs that have not run yet do not
    count, and one reply (or a closed connection, or an outcome the probe expects)
    makes a target reachable."""
    replied: dict[str, bool] = {}
    for pair in pairs:
        if pair.cause is not None:
            reached = pair.cause not in UNREACHED or pair.success == 1
            replied[pair.target] = replied.get(pair.target, False) or reached
    return sorted(target for target, any_reply in replied.items() if not any_reply)


def render_status_page(pairs: Iterable[PairState], *, reload_ok: bool,
                       reload_error: str | None = None,
                       now: float | None = None) -> str:  # fmt: skip
    now = time.time() if now is None else now
    ordered = sorted(pairs, key=lambda p: (p.target, p.probe))
    dead = unreachable_targets(ordered)
    rows = []
    violations: list[str] = []
    chips: dict[str, list[str]] = {}
    for pair in ordered:
        expected = pair.success == 1
        swatch = cell_swatch(pair.cause, expected=expected)
        violated = _violated(pair)
        if pair.cause is None:
            cause_text, rcode, remedy, short = "pending", "-", "Not run yet.", swatch.text
        else:
            cause_text = pair.cause.value
            rcode = rcode_name(None if pair.last_rcode is None or pair.last_rcode < 0
                               else pair.last_rcode)  # fmt: skip
            # An expected gap (NOTIMP to an unassigned opcode, BADVERS to EDNS 1) needs
            # no fix: the cause's remediation ("enable dynamic updates") would be wrong.
            remedy = EXPECTED_REMEDY if expected and pair.cause is not Cause.NONE else (
                REMEDIATION[pair.cause])  # fmt: skip
            short = cell_text(pair.cause, expected=expected)
        if violated and pair.cause is Cause.NONE:
            # No gap, but the reply is not what a conformant server sends (kresd's
            # NOERROR to EDNS version 1): never green, and named by the check.
            # `rcode` says least: name the first other check when there is one.
            check = next((c for c in violated if c != "rcode"), violated[0])
            swatch = VIOLATION
            short = f"{check} {UNEXPECTED_MARK}"
            remedy = f"{check}: {conformance.remediation(check)}"
        violations += [_violation_row(pair, check, rcode if pair.cause else "-")
                       for check in violated]  # fmt: skip
        css = swatch.key
        error = ""
        if pair.last_result is not None and pair.last_result.outcome.error:
            error = f"<br><small>{html.escape(pair.last_result.outcome.error)}</small>"
        rows.append(
            f'<tr class="{css}" data-target="{html.escape(pair.target)}" '
            f'data-probe="{html.escape(pair.probe)}" data-cause="{html.escape(cause_text)}">'
            f"<td>{html.escape(pair.target)}</td><td>{html.escape(pair.probe)}</td>"
            f"<td>{html.escape(pair.kind.value)}</td>"
            f'<td class="cause">{html.escape(cause_text)}</td><td>{html.escape(rcode)}</td>'
            f"<td>{_ago(pair.since, now)}</td><td>{html.escape(remedy)}{error}</td></tr>"
        )
        # The matrix: one line per target, one coloured cell per probe; the cause and
        # its remediation are in the tooltip and in the detail table below.
        chips.setdefault(pair.target, []).append(
            f'<span class="chip {css}" data-probe="{html.escape(pair.probe)}" '
            f'data-cause="{html.escape(cause_text)}" '
            f'title="{html.escape(cause_text)} ({html.escape(rcode)}): {html.escape(remedy)}">'
            f"{html.escape(pair.probe)}: <b>{html.escape(short)}</b></span>"
        )
    matrix = "".join(
        f'<tr data-target="{html.escape(target)}"><td class=target>{html.escape(target)}'
        f"{'<br><small>unreachable</small>' if target in dead else ''}</td>"
        f"<td>{''.join(cells)}</td></tr>"
        for target, cells in chips.items()
    )
    unreachable_line = (
        f"{len(dead)} answering none of {'its' if len(dead) == 1 else 'their'} probes "
        "(unreachable): "
        f"{html.escape(', '.join(dead))} &middot; " if dead else ""
    )
    gaps = sum(1 for p in ordered if p.cause is not None and p.cause is not Cause.NONE)
    checked = sum(1 for p in ordered if p.violation)
    violating = sum(1 for p in ordered if p.violating)
    conformance_table = (
        "<table id=conformance><thead><tr><th>target</th><th>probe</th><th>check</th>"
        "<th>last rcode</th><th>violating replies</th><th>what to do</th></tr></thead>"
        f"<tbody>{''.join(violations)}</tbody></table>" if violations else
        f"<p id=conformance>No latest reply of the {checked} checked probes violates a "
        "conformance check.</p>"
    )  # fmt: skip
    failing = sum(1 for p in ordered if p.success == 0)
    reload_line = "config: loaded" if reload_ok else (
        f"config reload FAILED, running the last good config: {html.escape(reload_error or '')}"
    )  # fmt: skip
    legend = "".join(
        f'<span class="chip {swatch.key}">{html.escape(swatch.text)}</span>' for swatch in LEGEND
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>dnsgap: DNS support gaps</title><style>{_STYLE}</style></head><body>"
        f"<h1>dnsgap {html.escape(__version__)}: DNS support gaps</h1>"
        f"<p>{len(chips)} targets, {len(ordered)} probes, {gaps} showing a gap, "
        f"{failing} not as expected (&#10003;: the expected answer, &#10007;: handled where "
        "a refusal was expected) &middot; "
        f"{unreachable_line}{reload_line} &middot; <a href=metrics>/metrics</a> &middot; "
        "<a href=-/healthy>/-/healthy</a></p>"
        f"<p class=legend>{legend}</p>"
        "<h2>Gap matrix: targets x probes, latest outcome</h2>"
        f"<table id=matrix><tbody>{matrix}</tbody></table>"
        "<h2>Conformance: checks the latest replies violate</h2>"
        "<p><small>What a reply does wrong beyond its rcode, judged like ISC's EDNS "
        "compliance tester and Zonemaster (docs/conformance.md); "
        f"{len(violations)} violated checks on {violating} probes."
        "</small></p>"
        f"{conformance_table}"
        "<h2>Details and remediation</h2>"
        "<table id=gaps><thead><tr><th>target</th><th>probe</th><th>kind</th><th>cause</th>"
        "<th>last rcode</th><th>since</th><th>remediation</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></body></html>"
    )
