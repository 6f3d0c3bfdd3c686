"""The status page at ``/``: the gap matrix as HTML, readable without Prometheus."""

from __future__ import annotations

import html
import time
from collections.abc import Iterable

from exporter import __version__
from exporter.causes import REMEDIATION, Cause, rcode_name
from exporter.metrics import PairState

_CAUSE_CLASS = {
    Cause.NONE: "ok",
    Cause.NOT_IMPLEMENTED: "notimp",
    Cause.DSO_NOT_IMPLEMENTED: "nodso",
    Cause.DSO_TYPE_NOT_IMPLEMENTED: "dsotypeni",
    Cause.REFUSED: "refused",
    Cause.NO_RESPONSE: "silent",
}

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}
h1{font-size:1.4rem} table{border-collapse:collapse;width:100%}
th,td{border:1px solid #ccc;padding:.35rem .5rem;text-align:left;vertical-align:top;font-size:.9rem}
th{background:#f3f3f3} td.cause{font-weight:600}
tr.ok td.cause{background:#d8f5d8} tr.notimp td.cause{background:#ffd6d6}
tr.dsotypeni td.cause{background:#ffe2b8} tr.nodso td.cause{background:#f0d6ff}
tr.refused td.cause{background:#fff3b0} tr.silent td.cause{background:#ddd}
tr.other td.cause{background:#ffe9e0} tr.pending td.cause{background:#fff}
.legend span{display:inline-block;padding:.1rem .5rem;margin-right:.4rem;border:1px solid #ccc}
small{color:#666}
"""


def _ago(since: float | None, now: float) -> str:
    if since is None:
        return "-"
    seconds = max(0, int(now - since))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def render_status_page(pairs: Iterable[PairState], *, reload_ok: bool,
                       reload_error: str | None = None,
                       now: float | None = None) -> str:  # fmt: skip
    now = time.time() if now is None else now
    rows = []
    for pair in sorted(pairs, key=lambda p: (p.target, p.probe)):
        if pair.cause is None:
            css, cause_text, rcode, remedy = "pending", "pending", "-", "Not run yet."
        else:
            css = _CAUSE_CLASS.get(pair.cause, "other")
            cause_text = pair.cause.value
            rcode = rcode_name(None if pair.last_rcode < 0 else pair.last_rcode)
            remedy = REMEDIATION[pair.cause]
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
    reload_line = "config: loaded" if reload_ok else (
        f"config reload FAILED, running the last good config: {html.escape(reload_error or '')}"
    )  # fmt: skip
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>dnsgap: DNS support gaps</title><style>{_STYLE}</style></head><body>"
        f"<h1>dnsgap {html.escape(__version__)}: DNS support gaps</h1>"
        f"<p>{reload_line} &middot; <a href=metrics>/metrics</a> &middot; "
        "<a href=-/healthy>/-/healthy</a></p>"
        "<p class=legend><span style='background:#ffd6d6'>NOTIMP</span>"
        "<span style='background:#ffe2b8'>DSOTYPENI</span>"
        "<span style='background:#f0d6ff'>no DSO</span>"
        "<span style='background:#fff3b0'>REFUSED</span>"
        "<span style='background:#ddd'>silent</span>"
        "<span style='background:#d8f5d8'>supported</span></p>"
        "<table id=gaps><thead><tr><th>target</th><th>probe</th><th>kind</th><th>cause</th>"
        "<th>last rcode</th><th>since</th><th>remediation</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></body></html>"
    )
