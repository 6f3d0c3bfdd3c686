"""A plain `query` probe sets RD, as dig, blackbox_exporter and dns_exporter do, so a
resolver answers it; a resolver refusing a query sent without RD says so.

Seen on the wire (Unbound 1.17, Knot Resolver 5, NSD 4): Unbound and kresd answer
REFUSED with RA set to an RD=0 query for data they would have to recurse for, and
answer the same query with RD=1; NSD (authoritative, no RA) refuses out-of-zone
names whatever RD says.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json

import pytest

from exporter.causes import REMEDIATION, Cause
from exporter.cli import main
from exporter.config import parse_config
from exporter.probes import run_probe

from .launch import RunningServer

CASES = [
    # kresd stubs gap.test to NSD: it answers a recursive query, refuses an RD=0 one.
    ("kresd", "www.gap.test.", [], "NOERROR", "none"),
    ("kresd", "www.gap.test.", ["--no-rd"], "REFUSED", "refused_non_recursive"),
    # Unbound recursed for www.example. (its only upstream is a dead port: SERVFAIL)...
    ("unbound", "www.example.", [], "SERVFAIL", "server_failure"),
    # ...and refuses to without RD.
    ("unbound", "www.example.", ["--no-rd"], "REFUSED", "refused_non_recursive"),
    # An authoritative server's REFUSED (no RA) stays a policy refusal.
    ("nsd", "www.example.", ["--no-rd"], "REFUSED", "refused"),
]


def probe_json(server: RunningServer, name: str, *extra: str) -> dict[str, object]:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        status = main(["probe", f"{server.host}:{server.port}", "--kind", "query",
                       "--name", name, "--qtype", "A", "--json", *extra])  # fmt: skip
    assert status == 0
    result: dict[str, object] = json.loads(buffer.getvalue())
    return result


@pytest.mark.parametrize("case", CASES, ids=[f"{s}-{n}-{'norec' if e else 'default'}"
                                             for s, n, e, _, _ in CASES])  # fmt: skip
def test_dnsgap_probe_query_sets_rd_by_default(
    case: tuple[str, str, list[str], str, str], request: pytest.FixtureRequest
) -> None:
    server, name, extra, rcode, cause = case
    running: RunningServer = request.getfixturevalue(server)
    result = probe_json(running, name, *extra)
    assert (result["rcode"], result["cause"]) == (rcode, cause), result
    flags = str(result["details"]["flags"]).split()  # type: ignore[index]
    assert ("RD" in flags) is (not extra), flags  # the reply echoes what we sent


def test_plain_output_tells_the_operator_the_resolver_wants_rd(
    kresd: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["probe", f"{kresd.host}:{kresd.port}", "--kind", "query",
                 "--name", "www.gap.test.", "--no-rd"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "cause=refused_non_recursive" in out
    assert REMEDIATION[Cause.REFUSED_NON_RECURSIVE] in out


def test_a_configured_query_probe_without_rd_gets_the_resolvers_answer(
    kresd: RunningServer,
) -> None:
    config = parse_config(f"""
targets:
  - name: resolver
    server: "{kresd.host}:{kresd.port}"
    probes:
      - {{name: www, kind: query, qname: www.gap.test., qtype: A}}
""", "<test>")  # fmt: skip
    target = config.targets[0]
    result = asyncio.run(run_probe(target, target.probes[0]))
    assert (result.rcode_label, result.cause) == ("NOERROR", Cause.NONE), result.as_json()
