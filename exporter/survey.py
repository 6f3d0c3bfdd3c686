"""``dnsgap survey``: one run of a preset against every address of a zone's name
servers (or one server), as a servers x probes matrix, JSON or the status page.

Building the probe set and rendering are pure; :func:`run_survey` is the I/O.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from exporter import conformance, dso_client, sessions
from exporter.causes import REMEDIATION, UNREACHED, Cause
from exporter.config import Config, ProbeSpec, Target, Transport, survey_probes
from exporter.metrics import MetricsState
from exporter.probes import ProbeResult, run_probe
from exporter.serial import serials_behind
from exporter.statuspage import render_status_page
from exporter.zones import plain, read_serial

#: Probes in flight at once: enough that silent servers cost one timeout per batch,
#: few enough not to look like an attack on a small server.
CONCURRENCY = 32


class SurveyTransport(enum.StrEnum):
    UDP = "udp"  # the preset as it is: queries over UDP, transfers and DSO over TCP
    TCP = "tcp"  # every probe over TCP
    BOTH = "both"  # the preset, and every UDP probe again over TCP as NAME_tcp


@dataclass(frozen=True, slots=True)
class SurveyServer:
    target: Target
    soa_serial: int | None
    serial_behind: int | None
    results: dict[str, ProbeResult]

    @property
    def server(self) -> str:
        """``host:port`` as ``dnsgap probe`` takes it."""
        host = self.target.host
        return f"[{host}]:{self.target.port}" if ":" in host else f"{host}:{self.target.port}"


@dataclass(frozen=True, slots=True)
class SurveyReport:
    zone: str
    probes: tuple[ProbeSpec, ...]
    servers: tuple[SurveyServer, ...]


# -- pure ------------------------------------------------------------------------------


def survey_specs(preset: str, zone: str, transport: SurveyTransport) -> tuple[ProbeSpec, ...]:
    """The preset's probes for the zone, over the transports asked for."""
    specs = survey_probes(preset, zone)
    if transport is SurveyTransport.UDP:
        return specs
    over_tcp = tuple(dataclasses.replace(s, transport=Transport.TCP) if s.transport
                     is Transport.UDP else s for s in specs)  # fmt: skip
    if transport is SurveyTransport.TCP:
        return over_tcp
    # Each UDP probe's TCP twin right after it: the matrix reads them side by side.
    out: list[ProbeSpec] = []
    for spec in specs:
        out.append(spec)
        if spec.transport is Transport.UDP:
            out.append(dataclasses.replace(spec, name=f"{spec.name}_tcp",
                                           transport=Transport.TCP))  # fmt: skip
    return tuple(out)


def probe_json(server: str, spec: ProbeSpec, result: ProbeResult) -> dict[str, object]:
    """The object ``dnsgap probe --json`` prints for this probe."""
    return {"server": server, "kind": spec.kind.value, **result.as_json()}


def server_json(server: SurveyServer, probes: Sequence[ProbeSpec]) -> dict[str, object]:
    return {
        "target": server.target.name,
        "address": server.target.host,
        "ns_name": server.target.ns_name,
        "soa_serial": server.soa_serial,
        "serial_behind": server.serial_behind,
        "probes": {
            spec.name: probe_json(server.server, spec, server.results[spec.name])
            for spec in probes
            if spec.name in server.results
        },
    }


def report_json(report: SurveyReport) -> dict[str, object]:
    """``--json``: the zone, and every server with its serial and probe results."""
    return {"zone": report.zone, "servers": [server_json(s, report.probes)
                                             for s in report.servers]}  # fmt: skip


def cell(result: ProbeResult | None) -> str:
    """What the matrix shows: ``ok``, the cause of the gap, or for an answer that is no
    gap but violates a conformance check (docs/conformance.md), that check: an answer
    that misses its expectation is never ``ok`` (kresd's NOERROR to EDNS version 1
    shows ``badversion``)."""
    if result is None:
        return "-"
    if result.cause is Cause.NONE and result.outcome.violations:
        named = [v for v in result.outcome.violations if v != "rcode"]
        return (named or ["rcode"])[0]
    return "ok" if result.success else result.cause.value


_GREEN, _RED, _YELLOW, _RESET = "\033[32m", "\033[31m", "\033[33m", "\033[0m"
#: Causes that say nothing about support: the server did not answer at all.
_SILENT = frozenset({Cause.NO_RESPONSE, Cause.CONNECTION_REFUSED, Cause.CONNECTION_RESET,
                     Cause.CONNECTION_CLOSED})  # fmt: skip


def _paint(text: str, width: int, result: ProbeResult | None, colour: bool) -> str:
    padded = text.ljust(width)
    if not colour or result is None:
        return padded
    ok = result.success and not result.outcome.violations
    tint = _GREEN if ok else _YELLOW if result.cause in _SILENT else _RED
    return f"{tint}{padded}{_RESET}"


def render_matrix(report: SurveyReport, *, colour: bool) -> str:
    """Probes down, servers across (numbered, named in a legend above), a cause in
    every cell that is not ``ok``, and the remediation of each cause below."""
    lines = [f"dnsgap survey of {report.zone}: {len(report.servers)} servers, "
             f"{len(report.probes)} probes each"]  # fmt: skip
    for index, server in enumerate(report.servers, 1):
        serial = ("no SOA serial" if server.soa_serial is None
                  else f"serial {server.soa_serial}")  # fmt: skip
        if server.serial_behind:
            serial += f" ({server.serial_behind} behind)"
        if server.results and all(r.cause in UNREACHED and not r.success
                                  for r in server.results.values()):  # fmt: skip
            # One line for a dead server, by the rule of the status page and
            # DnsgapTargetUnreachable (causes.UNREACHED).
            serial += ", answers none of its probes (unreachable)"
        where = "" if server.target.name == server.server else f" ({server.server})"
        lines.append(f"  [{index}] {server.target.name}{where}, {serial}")
    names = [spec.name for spec in report.probes]
    first = max([len("probe"), *map(len, names)])
    widths = [max(len(f"[{i}]"), *(len(cell(s.results.get(n))) for n in names))
              for i, s in enumerate(report.servers, 1)]  # fmt: skip
    header = "probe".ljust(first) + "".join(
        "  " + f"[{i}]".ljust(w) for i, w in enumerate(widths, 1))
    lines += ["", header.rstrip()]
    for name in names:
        row = name.ljust(first)
        for server, width in zip(report.servers, widths, strict=True):
            result = server.results.get(name)
            row += "  " + _paint(cell(result), width, result, colour)
        lines.append(row.rstrip())
    gaps = sorted({r.cause for s in report.servers for r in s.results.values()
                   if not r.success}, key=lambda c: c.value)  # fmt: skip
    if gaps:
        lines.append("")
        lines += [f"{cause.value}: {REMEDIATION[cause]}" for cause in gaps]
    shown = {cell(r) for s in report.servers for r in s.results.values()}
    checks = [name for name in conformance.NAMES if name in shown]
    if checks:
        lines.append("")
        lines += [f"{name}: {conformance.remediation(name)}" for name in checks]
    return "\n".join(lines) + "\n"


def render_html(report: SurveyReport) -> str:
    """The status page (the exporter's ``/``) for this one run."""
    state = MetricsState()
    targets = tuple(dataclasses.replace(s.target, probes=report.probes) for s in report.servers)
    state.sync(Config(targets=targets), [(t, spec) for t in targets for spec in report.probes])
    for server in report.servers:
        for name, result in server.results.items():
            state.record(server.target.name, name, result)
    return render_status_page(state.pairs.values(), reload_ok=True)


# -- the run ---------------------------------------------------------------------------

Progress = Callable[[int, int], None]


async def run_survey(zone: str, targets: Sequence[Target], specs: Sequence[ProbeSpec],
                     timeout: float = 5.0, progress: Progress | None = None
                     ) -> SurveyReport:  # fmt: skip
    """Every probe against every target, at most :data:`CONCURRENCY` at once, and each
    target's SOA serial; ``progress(done, total)`` after every probe."""
    total = len(targets) * len(specs)
    done = 0
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(target: Target, spec: ProbeSpec) -> ProbeResult:
        nonlocal done
        async with limit:
            result = await run_probe(target, spec)
        done += 1
        if progress is not None:
            progress(done, total)
        return result

    try:
        results = await asyncio.gather(*(one(t, s) for t in targets for s in specs))
    finally:
        await dso_client.close_all()
        await sessions.close_all()  # DoH/DoQ connections, before asyncio.run ends
    serials = await asyncio.gather(*(read_serial(zone, t.host, t.port, timeout)
                                     for t in targets))  # fmt: skip
    known = {t.name: s for t, s in zip(targets, serials, strict=True) if s is not None}
    behind = serials_behind(known)
    servers = []
    for index, target in enumerate(targets):
        mine = results[index * len(specs):(index + 1) * len(specs)]
        servers.append(SurveyServer(
            target, known.get(target.name), behind.get(target.name),
            {spec.name: result for spec, result in zip(specs, mine, strict=True)},
        ))  # fmt: skip
    return SurveyReport(plain(zone), tuple(specs), tuple(servers))
