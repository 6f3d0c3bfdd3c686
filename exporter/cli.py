"""Command line: arguments, exit codes, what is printed — nothing else (serving with its
signals is `exporter.serve`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype

from exporter import __version__, conformance
from exporter.causes import REMEDIATION, rcode_name
from exporter.config import (
    DEFAULT_LISTEN,
    DEFAULT_PORTS,
    HEADER_FLAGS,
    PRESET_ROLES,
    SURVEY_PRESETS,
    ConfigError,
    DiscoverySettings,
    DohSettings,
    DsoSettings,
    EdnsSettings,
    ProbeSpec,
    Target,
    TlsSettings,
    Transport,
    TsigKey,
    ZoneTarget,
    default_expect,
    dso_tlv_type_problem,
    parse_server,
)
from exporter.kinds import ProbeKind
from exporter.sharding import Shard

if TYPE_CHECKING:
    from exporter.probes import ProbeResult

_KIND_DEFAULT_TRANSPORT = {ProbeKind.AXFR: Transport.TCP, ProbeKind.IXFR: Transport.TCP}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dnsgap",
        description="Prometheus exporter for the DNS operations a server does not support.",
    )
    parser.add_argument("--version", action="version", version=f"dnsgap {__version__}")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])  # fmt: skip
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="run the scheduler and the HTTP server (default)")
    serve.add_argument("--config", "-c", required=True, help="YAML config file")
    _add_serve_options(serve)

    check = sub.add_parser("check-config", help="validate a config file; exit 0 or 1")
    check.add_argument("file")

    sub.add_parser("schema", help="print the JSON Schema of the config file (for editors)")

    survey = sub.add_parser("survey", help="run a preset once against every name server "
                            "address of a zone (or one server) and print the gaps")  # fmt: skip
    survey.add_argument("zone", nargs="?", default=None,
                        help="the zone whose name servers to survey (with --server: the zone "
                        "the probes ask about, default the root)")  # fmt: skip
    survey.add_argument("--server", metavar="HOST:PORT", help="survey this one server")
    survey.add_argument("--resolver", metavar="HOST:PORT",
                        help="resolver for the NS and address lookups (default: the system's)")
    survey.add_argument("--port", type=int, default=None, metavar="N",
                        help="port to probe the discovered addresses on (default 53)")
    survey.add_argument("--preset", default="authoritative", choices=list(SURVEY_PRESETS))
    survey.add_argument("--transport", default="both", choices=["udp", "tcp", "both"],
                        help="udp: the preset as it is; tcp: every probe over TCP; both "
                        "(default): also every UDP probe over TCP, as NAME_tcp")  # fmt: skip
    survey.add_argument("--json", action="store_true", help="print one JSON object")
    survey.add_argument("--html", metavar="FILE", help="write the status page of this run")

    demo = sub.add_parser("demo", help="run reference servers in-process and probe them")
    _add_serve_options(demo)
    demo.add_argument("--config-out", metavar="FILE", default=None,
                      help="write the demo's config to FILE: `dnsgap serve --config FILE` "
                      "then probes the demo's servers")  # fmt: skip

    probe = sub.add_parser("probe", help="run one probe and print its outcome (the dig of gaps)")
    probe.add_argument("server", help="host:port, [v6]:port or hostname (port 53; 853 for tls "
                                      "and doq, 443 for doh)")
    probe.add_argument("--kind", "-k", default=ProbeKind.QUERY.value,
                       choices=[k.value for k in ProbeKind], help="default: query, as dig")
    probe.add_argument("--transport", "-t", choices=[t.value for t in Transport])
    probe.add_argument("--name", "-n", default=None, help="query name (default: the zone)")
    probe.add_argument("--qtype", "-q", default="SOA", help="query type (name or TYPEnnn)")
    probe.add_argument("--qclass", default="IN")
    probe.add_argument("--zone", "-z", default=".", help="zone for ixfr/axfr/update/notify")
    probe.add_argument("--opcode", type=int, default=15, help="raw opcode for --kind opcode")
    probe.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    probe.add_argument("--serial", type=int, default=0, help="IXFR: the serial we claim")
    probe.add_argument("--rd", action=argparse.BooleanOptionalAction, default=None,
                       help="set RD (recursion desired); the default for --kind query "
                       "(as dig sends it), --no-rd clears it")  # fmt: skip
    probe.add_argument("--header-flag", action="append", default=[], metavar="FLAG",
                       choices=sorted(HEADER_FLAGS),
                       help="also set this header bit (aa, tc, ra, z, ad, cd); repeatable")
    probe.add_argument("--header-only", action="store_true",
                       help="--kind opcode: send no question (all counts zero)")
    probe.add_argument("--role", choices=[r.value for r in conformance.Role],
                       help="the server's role, for the role conformance checks")
    probe.add_argument("--expect", action="append", default=None, metavar="RCODE|CAUSE",
                       help="what counts as healthy (default: as in a config file)")
    probe.add_argument("--no-edns", action="store_true", help="send no OPT record")
    probe.add_argument("--edns-version", type=int, default=0)
    probe.add_argument("--edns-flags", type=lambda s: int(s, 0), default=0,
                       help="extra EDNS flag bits, e.g. 0x4000")  # fmt: skip
    probe.add_argument("--edns-option", action="append", default=[], metavar="CODE[:HEX]",
                       help="add an EDNS option (repeatable)")  # fmt: skip
    probe.add_argument("--nsid", action="store_true", help="ask for NSID (RFC 5001)")
    probe.add_argument("--dnssec-ok", "--do", action="store_true", dest="dnssec_ok")
    probe.add_argument("--no-tcp-fallback", action="store_true",
                       help="report a truncated UDP reply instead of retrying over TCP")
    probe.add_argument("--allow-notify", action="store_true",
                       help="required for --kind notify and --kind opcode --opcode 4: "
                       "NOTIFY makes secondaries refresh")  # fmt: skip
    probe.add_argument("--dso-type", type=lambda s: int(s, 0), default=None,
                       help="dso_tlv: TLV type (default 0xF7FF, unassigned)")
    probe.add_argument("--push-name", default=None, help="dso_push_subscribe: name")
    probe.add_argument("--push-type", default="SOA", help="dso_push_subscribe: type")
    probe.add_argument("--push-wait", type=float, default=0.0,
                       help="dso_push_subscribe: seconds to wait for PUSH messages")
    probe.add_argument("--allow-udp-dso", action="store_true",
                       help="send DSO over UDP anyway (not valid DSO: the result says so)")
    probe.add_argument("--method", choices=["POST", "GET", "post", "get"], default="POST",
                       help="doh: HTTP method (RFC 8484 §4.1; default POST)")  # fmt: skip
    probe.add_argument("--path", default="/dns-query", help="doh: URI path (default /dns-query)")
    probe.add_argument("--ca-file"), probe.add_argument("--server-name")
    probe.add_argument("--cert-file"), probe.add_argument("--key-file")
    probe.add_argument("--insecure", action="store_true", help="TLS: do not verify")
    probe.add_argument("--tsig", metavar="NAME:ALGORITHM:SECRET",
                       help="sign transfers/updates with this TSIG key")
    probe.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _add_serve_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", "-l", default=None,
                        help=f"HTTP listen address (default {DEFAULT_LISTEN})")  # fmt: skip
    parser.add_argument("--shard", default=None, metavar="INDEX/COUNT",
                        help="run only this replica's share of the (target, probe) pairs")


# -- dnsgap probe ----------------------------------------------------------------------

def probe_from_args(args: argparse.Namespace) -> tuple[Target, ProbeSpec]:
    """The ad-hoc target and probe that ``dnsgap probe`` arguments describe."""
    from exporter.http import split_host_port

    kind = ProbeKind(args.kind)
    transport = Transport(args.transport) if args.transport else (
        Transport.TCP if kind.is_dso else _KIND_DEFAULT_TRANSPORT.get(kind, Transport.UDP))
    if kind.is_dso and transport in (Transport.DOH, Transport.DOQ):
        raise ValueError(f"--kind {kind.value} needs --transport tcp or tls: RFC 8490 defines "
                         "DSO over TCP and TLS only")  # fmt: skip
    host, port = split_host_port(args.server, DEFAULT_PORTS[transport])
    options = []
    for item in args.edns_option:
        code, _, data = item.partition(":")
        options.append((int(code, 0), bytes.fromhex(data)))
    edns = EdnsSettings(enabled=not args.no_edns, version=args.edns_version,
                        dnssec_ok=args.dnssec_ok, flags=args.edns_flags,
                        options=tuple(options), nsid=args.nsid)  # fmt: skip
    tsig = None
    if args.tsig:
        name, algorithm, secret = args.tsig.split(":", 2)
        tsig = TsigKey(name, algorithm, secret)
    zone = args.zone
    dso = DsoSettings(
        tlv_type=args.dso_type if args.dso_type is not None else DsoSettings().tlv_type,
        push_name=args.push_name or args.name or zone,
        push_type=int(dns.rdatatype.from_text(args.push_type)),
        push_wait=args.push_wait, allow_udp=args.allow_udp_dso,
    )  # fmt: skip
    spec = ProbeSpec(
        name=kind.value, kind=kind, transport=transport, interval=max(args.timeout, 1.0),
        timeout=args.timeout, qname=args.name or zone,
        qtype=int(dns.rdatatype.from_text(args.qtype)),
        qclass=int(dns.rdataclass.from_text(args.qclass)), recursion_desired=args.rd,
        edns=edns, zone=zone, serial=args.serial, opcode=args.opcode,
        tcp_fallback=not args.no_tcp_fallback, tsig_key=tsig, dso=dso,
        allow_notify=args.allow_notify, question=not args.header_only,
        header_flags=sum({HEADER_FLAGS[flag] for flag in args.header_flag}),
        doh=DohSettings(method=args.method.upper(), path=args.path),
    )  # fmt: skip
    spec = dataclasses.replace(spec, expect=frozenset(args.expect) if args.expect
                               else default_expect(spec))  # fmt: skip
    tls = TlsSettings(ca_file=args.ca_file, server_name=args.server_name,
                      cert_file=args.cert_file, key_file=args.key_file,
                      verify=not args.insecure)  # fmt: skip
    target = Target(name=args.server, host=host, port=port, probes=(spec,), zone=zone, tls=tls,
                    role=args.role)  # fmt: skip
    return target, spec


async def _probe_once(target: Target, spec: ProbeSpec) -> ProbeResult:
    from exporter import sessions
    from exporter.probes import run_probe

    try:
        return await run_probe(target, spec)
    finally:
        # A DoH or DoQ connection still open when asyncio.run ends is an unclosed
        # transport (and, for DoH, a reader task destroyed while pending).
        await sessions.close_all()


def _probe_command(args: argparse.Namespace) -> int:

    try:
        target, spec = probe_from_args(args)
    except (ValueError, dns.rdatatype.UnknownRdatatype) as exc:
        print(f"dnsgap probe: {exc}", file=sys.stderr)
        return 2
    if spec.sends_notify and not spec.allow_notify:
        what = "--kind notify" if spec.kind is ProbeKind.NOTIFY else "--opcode 4 (NOTIFY)"
        print(f"dnsgap probe: {what} makes the server's secondaries refresh; "
              "add --allow-notify to send it", file=sys.stderr)  # fmt: skip
        return 2
    if spec.kind is ProbeKind.DSO_TLV and (why := dso_tlv_type_problem(spec.dso.tlv_type)):
        print(f"dnsgap probe: --dso-type: expected {why}", file=sys.stderr)
        return 2
    result = asyncio.run(_probe_once(target, spec))
    if args.json:
        data = {"server": args.server, "kind": spec.kind.value, **result.as_json()}
        print(json.dumps(data, sort_keys=True))
        return 0
    outcome = result.outcome
    rcode = rcode_name(outcome.rcode) if outcome.rcode is not None else "no reply"
    line = (f"{args.server} {spec.kind.value}/{outcome.transport}: {rcode} -> "
            f"cause={result.cause.value} ({result.duration * 1000:.1f} ms)")  # fmt: skip
    if outcome.error:
        line += f" [{outcome.error}]"
    print(line)
    if outcome.dso is not None and outcome.dso.session_established:
        print(f"  DSO session: inactivity {outcome.dso.inactivity_timeout}s, "
              f"keepalive {outcome.dso.keepalive_interval}s")  # fmt: skip
    if result.fallback is not None:
        print(f"  fallback {result.fallback.kind.value}: cause={result.fallback.cause.value}")
    print(f"  {REMEDIATION[result.cause]}")
    for check in outcome.violations:
        # docs/conformance.md: one line per violated check, with what to do about it.
        print(f"  violation {check}: {conformance.remediation(check)}")
    return 0


# -- dnsgap check-config ----------------------------------------------------------------

def _check_config_command(path: str) -> int:
    from exporter.config import load_config

    try:
        config = load_config(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
        return 1
    pairs = sum(len(target.probes) for target in config.targets)
    zones = (f", zone targets: {len(config.zones)} (servers found at run time)"
             if config.zones else "")  # fmt: skip
    print(f"{path}: OK: {len(config.targets)} targets, {pairs} (target, probe) pairs{zones}")
    return 0


# -- dnsgap survey ---------------------------------------------------------------------

def _survey_targets(args: argparse.Namespace, zone: str) -> list[Target]:
    """The servers to survey: ``--server``, or the zone's discovered name servers.
    Raises ValueError (bad arguments) or DiscoveryError."""
    from exporter.zones import ZoneServer, discover, expand, plain

    if args.server:
        host, port = parse_server(args.server)
        return [Target(name=args.server, host=host, port=port, probes=(), zone=zone,
                       role=PRESET_ROLES.get(args.preset))]  # fmt: skip
    resolver = parse_server(args.resolver) if args.resolver else None
    settings = DiscoverySettings(resolver=resolver, port=args.port or 53,
                                 max_addresses=64)  # fmt: skip
    found = asyncio.run(discover(zone, settings))
    for what, names in (("only in the parent's delegation", found.parent_only),
                        ("only in the zone's NS set", found.child_only),
                        ("without addresses", found.unresolved)):  # fmt: skip
        if names:
            print(f"dnsgap survey: NS names {what}: {', '.join(names)}", file=sys.stderr)
    if found.parent_error:
        print(f"dnsgap survey: parent delegation not checked: {found.parent_error}",
              file=sys.stderr)  # fmt: skip
    servers: list[ZoneServer] = list(found.servers)
    zone_target = ZoneTarget(name=plain(zone), zone=zone, discovery=settings, probes=())
    return list(expand(zone_target, servers))


def _survey_command(args: argparse.Namespace) -> int:
    from exporter.survey import (
        SurveyTransport,
        render_html,
        render_matrix,
        report_json,
        run_survey,
        survey_specs,
    )
    from exporter.zones import DiscoveryError

    if args.zone is None and not args.server:
        print("dnsgap survey: name a ZONE, or a server with --server HOST:PORT",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        zone = dns.name.from_text(args.zone or ".").to_text()
        targets = _survey_targets(args, zone)
    except (ValueError, dns.exception.DNSException) as exc:
        print(f"dnsgap survey: {exc}", file=sys.stderr)
        return 2
    except DiscoveryError as exc:
        print(f"dnsgap survey: {exc}", file=sys.stderr)
        return 1
    if not targets:
        print(f"dnsgap survey: no name server addresses found for {zone}", file=sys.stderr)
        return 1
    specs = survey_specs(args.preset, zone, SurveyTransport(args.transport))
    tty = sys.stderr.isatty()
    shown_zone = zone.rstrip(".") or "."
    shown = [-1]

    def progress(done: int, total: int) -> None:
        # On a terminal one line redrawn in place; in a log a line every 10%.
        step = done * 10 // total
        if tty:
            print(f"\rdnsgap survey {shown_zone}: {done}/{total} probes", end="", file=sys.stderr,
                  flush=True)  # fmt: skip
        elif step != shown[0]:
            shown[0] = step
            print(f"dnsgap survey {shown_zone}: {done}/{total} probes", file=sys.stderr,
                  flush=True)  # fmt: skip

    report = asyncio.run(run_survey(zone, [dataclasses.replace(t, probes=specs)
                                           for t in targets], specs, progress=progress))
    if tty:
        print("\r\033[K", end="", file=sys.stderr, flush=True)
    if args.html:
        with open(args.html, "w", encoding="utf-8") as out:
            out.write(render_html(report))
    if args.json:
        print(json.dumps(report_json(report), sort_keys=True))
    else:
        colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        print(render_matrix(report, colour=colour), end="")
    return 0


# -- dnsgap schema ---------------------------------------------------------------------

def _schema_command() -> int:
    from exporter.config.json_schema import config_schema

    print(json.dumps(config_schema(), indent=2))
    return 0


# -- dnsgap serve / demo ----------------------------------------------------------------

def _serve_command(args: argparse.Namespace) -> int:
    from exporter.config import load_config
    from exporter.serve import serve

    try:
        config = load_config(args.config)
        shard = Shard.parse(args.shard) if args.shard else Shard(0, 1)
    except ConfigError as exc:
        print(f"dnsgap: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"dnsgap: {exc}", file=sys.stderr)
        return 1
    listen = args.listen or config.http.listen
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config, args.config, listen, shard))
    return 0


def _demo_command(args: argparse.Namespace) -> int:
    from exporter.demo import run_demo

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_demo(args.listen or DEFAULT_LISTEN, args.config_out))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in {"serve", "check-config", "schema", "survey", "probe", "demo", "-h",
                                "--help",
                                "--version", "--log-level"}:  # fmt: skip
        argv.insert(0, "serve")  # `dnsgap --config x.yml` means serve
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    # APScheduler narrates every job run at INFO: noise next to our own logs.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    if args.command == "check-config":
        return _check_config_command(args.file)
    if args.command == "schema":
        return _schema_command()
    if args.command == "survey":
        return _survey_command(args)
    if args.command == "probe":
        return _probe_command(args)
    if args.command == "demo":
        return _demo_command(args)
    if args.command == "serve":
        return _serve_command(args)
    parser.print_help()
    return 2
