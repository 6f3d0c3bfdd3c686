"""Classic probes against the reference server: each gap gets its exact cause."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import ssl
import threading
import time

import dns.flags
import dns.message
import dns.rrset
import pytest

from exporter import refserver
from exporter.causes import Cause
from exporter.cli import main
from exporter.config import (
    EdnsSettings,
    FallbackSettings,
    ProbeSpec,
    Target,
    TlsSettings,
    Transport,
)
from exporter.kinds import ProbeKind
from exporter.probes import ProbeResult, run_probe
from exporter.refserver import ServerBehaviour
from tests.hostile import HostileServer, Mode
from tests.support import make_self_signed_cert

ZONE = "demo.example."


def probe_spec(kind: ProbeKind, transport: Transport = Transport.UDP,
               **kwargs: object) -> ProbeSpec:  # fmt: skip
    fields: dict[str, object] = {"qname": ZONE, "timeout": 1.0, "zone": ZONE}
    fields.update(kwargs)
    return ProbeSpec(name=kind.value, kind=kind, transport=transport, **fields)  # type: ignore[arg-type]


def run_against(behaviour: ServerBehaviour, spec: ProbeSpec) -> ProbeResult:
    async def scenario() -> ProbeResult:
        async with await refserver.start(behaviour) as server:
            target = Target("ref", "127.0.0.1", server.port, (spec,), zone=ZONE)
            return await run_probe(target, spec)

    return asyncio.run(scenario())


GAPS = ServerBehaviour(update="notimp", ixfr="notimp", axfr="refused", notify="refused",
                       unknown_opcode="drop")  # fmt: skip
FULL = ServerBehaviour()


def cli_against_gaps(server: str, *args: str, host: str = "127.0.0.1") -> int:
    """``dnsgap probe SERVER ARGS...`` against a reference server with :data:`GAPS`
    on ``host``; ``{port}`` in ``server`` is its port. Returns the exit status."""

    async def scenario() -> int:
        async with await refserver.start(GAPS, host=host) as running:
            address = server.format(port=running.port)
            return await asyncio.to_thread(main, ["probe", address, *args])

    return asyncio.run(scenario())


@pytest.mark.parametrize("transport", [Transport.UDP, Transport.TCP])
@pytest.mark.parametrize(
    ("behaviour", "kind", "rcode", "cause"),
    [
        (FULL, ProbeKind.QUERY, "NOERROR", Cause.NONE),
        (FULL, ProbeKind.UPDATE, "NXRRSET", Cause.NONE),
        (GAPS, ProbeKind.UPDATE, "NOTIMP", Cause.NOT_IMPLEMENTED),
        (FULL, ProbeKind.NOTIFY, "NOERROR", Cause.NONE),
        (GAPS, ProbeKind.NOTIFY, "REFUSED", Cause.REFUSED),
        (FULL, ProbeKind.OPCODE, "NOTIMP", Cause.NOT_IMPLEMENTED),
        (GAPS, ProbeKind.OPCODE, "none", Cause.NO_RESPONSE),
    ],
)
def test_classic_probe_reports_what_the_server_answers(
    behaviour: ServerBehaviour, kind: ProbeKind, rcode: str, cause: Cause, transport: Transport
) -> None:
    result = run_against(behaviour, probe_spec(kind, transport, allow_notify=True))
    assert (result.rcode_label, result.cause) == (rcode, cause)


@pytest.mark.parametrize(
    ("behaviour", "kind", "rcode", "cause"),
    [
        (FULL, ProbeKind.AXFR, "NOERROR", Cause.NONE),
        (FULL, ProbeKind.IXFR, "NOERROR", Cause.NONE),
        (GAPS, ProbeKind.AXFR, "REFUSED", Cause.REFUSED),
        (GAPS, ProbeKind.IXFR, "NOTIMP", Cause.NOT_IMPLEMENTED),
    ],
)
def test_transfers_are_classified_from_the_first_message(
    behaviour: ServerBehaviour, kind: ProbeKind, rcode: str, cause: Cause
) -> None:
    result = run_against(behaviour, probe_spec(kind, Transport.TCP))
    assert (result.rcode_label, result.cause) == (rcode, cause)


def _serve_one_transfer_message(message: dns.message.Message) -> socket.socket:
    """A TCP listener that answers one request with ``message`` under the request's ID."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            head = conn.recv(2)
            request = dns.message.from_wire(conn.recv(int.from_bytes(head, "big")))
            message.id = request.id
            message.question = request.question
            wire = message.to_wire()
            with contextlib.suppress(OSError):  # the prober stops reading at its cap
                conn.sendall(len(wire).to_bytes(2, "big") + wire)

    threading.Thread(target=serve, daemon=True).start()
    return listener


@pytest.mark.parametrize("kind", [ProbeKind.AXFR, ProbeKind.IXFR])
def test_a_transfer_cap_below_the_first_message_still_judges_from_header_and_soa(
    kind: ProbeKind,
) -> None:
    # One first message of ~5 KB whose SOA alone ends past the 512-byte cap (long,
    # uncompressible MNAME and RNAME), as a server packing a whole zone would send.
    message = dns.message.Message()
    message.flags = dns.flags.QR | dns.flags.AA
    mname, rname = (".".join([letter * 60] * 4) + f".{letter}." for letter in "ab")
    message.answer.append(dns.rrset.from_text(ZONE, 300, "IN", "SOA",
                                              f"{mname} {rname} 7 3600 600 86400 300"))  # fmt: skip
    for i in range(40):
        message.answer.append(dns.rrset.from_text(f"t{i}.{ZONE}", 300, "IN", "TXT",
                                                  '"' + "x" * 100 + '"'))  # fmt: skip
    listener = _serve_one_transfer_message(message)
    spec = probe_spec(kind, Transport.TCP, max_transfer_bytes=512)
    target = Target("big", "127.0.0.1", listener.getsockname()[1], (spec,), zone=ZONE)
    try:
        result = asyncio.run(run_probe(target, spec))
    finally:
        listener.close()
    assert (result.rcode_label, result.cause) == ("NOERROR", Cause.NONE), result.as_json()
    details = result.outcome.details
    assert details["first_message_bytes"] > 4000  # type: ignore[operator]
    # Read: the header, question and SOA (past the cap, as they must be judged), no more.
    # header, question, SOA owner (a pointer), fixed part, MNAME, RNAME, five counters
    soa_end = 12 + len(ZONE) + 1 + 4 + 2 + 10 + (len(mname) + 1) * 2 + 20
    assert soa_end > 512
    assert details["read_bytes"] == result.outcome.bytes_received == soa_end


def test_edns_version_1_gets_badvers_and_that_meets_its_expectation() -> None:
    spec = probe_spec(ProbeKind.QUERY, edns=EdnsSettings(version=1),
                      expect=frozenset({"bad_version"}))  # fmt: skip
    result = run_against(FULL, spec)
    assert (result.rcode_label, result.cause, result.success) == (
        "BADVERS", Cause.BAD_VERSION, True)


def test_closing_server_costs_one_result_with_connection_closed() -> None:
    behaviour = ServerBehaviour(update="close")
    result = run_against(behaviour, probe_spec(ProbeKind.UPDATE, Transport.TCP))
    assert result.cause is Cause.CONNECTION_CLOSED
    assert result.outcome.rcode is None


def test_ixfr_answered_notimp_falls_back_to_axfr() -> None:
    behaviour = ServerBehaviour(ixfr="notimp")
    spec = probe_spec(ProbeKind.IXFR, Transport.TCP, fallback=FallbackSettings(ProbeKind.AXFR))
    result = run_against(behaviour, spec)
    assert result.cause is Cause.NOT_IMPLEMENTED
    assert result.fallback is not None
    assert (result.fallback.kind, result.fallback.cause) == (ProbeKind.AXFR, Cause.NONE)


def test_nothing_listening_is_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    spec = probe_spec(ProbeKind.QUERY, Transport.TCP)
    target = Target("gone", "127.0.0.1", port, (spec,), zone=ZONE)
    result = asyncio.run(run_probe(target, spec))
    assert result.cause is Cause.CONNECTION_REFUSED


def test_silence_is_bounded_by_the_timeout() -> None:
    spec = dataclasses.replace(probe_spec(ProbeKind.OPCODE), timeout=0.3)
    result = run_against(GAPS, spec)
    assert result.cause is Cause.NO_RESPONSE
    assert 0.25 < result.duration < 1.0


def test_cli_probe_json_has_the_documented_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_against_gaps("127.0.0.1:{port}", "--kind", "update", "--zone", ZONE,
                            "--timeout", "1", "--json") == 0  # fmt: skip
    data = json.loads(capsys.readouterr().out)
    assert data["rcode"] == "NOTIMP"
    assert data["rcode_value"] == 4
    assert data["cause"] == "not_implemented"
    assert data["error"] is None
    assert isinstance(data["duration_seconds"], float)


def test_cli_probe_without_a_kind_asks_a_plain_query_as_dig_does(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The operator's first command: `dnsgap probe HOST`, no flags.
    assert cli_against_gaps("127.0.0.1:{port}", "--name", ZONE, "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["kind"], data["transport"], data["rcode"]) == ("query", "udp", "NOERROR")


def test_cli_probe_json_reports_null_rcode_for_silence(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_against_gaps("127.0.0.1:{port}", "--kind", "opcode", "--opcode", "9",
                            "--timeout", "0.5", "--json") == 0  # fmt: skip
    data = json.loads(capsys.readouterr().out)
    assert (data["rcode"], data["rcode_value"], data["cause"]) == (None, None, "no_response")
    assert data["error"] == "timed out"


def test_cli_refuses_notify_without_opt_in(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", "127.0.0.1:9", "--kind", "notify"]) == 2
    assert "--allow-notify" in capsys.readouterr().err


def test_cli_refuses_raw_opcode_4_without_the_notify_opt_in(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def scenario() -> tuple[int, int, str, int]:
        async with await HostileServer.start(Mode.HEALTHY) as server:
            argv = ["probe", f"127.0.0.1:{server.port}", "--kind", "opcode", "--opcode", "4",
                    "--timeout", "0.5"]  # fmt: skip
            refused = await asyncio.to_thread(main, argv)
            err = capsys.readouterr().err
            seen = server.stats.datagrams
            assert await asyncio.to_thread(main, [*argv, "--allow-notify"]) == 0
            return refused, seen, err, server.stats.datagrams

    refused, seen, err, seen_after_opt_in = asyncio.run(scenario())
    assert refused == 2
    assert "--opcode 4 (NOTIFY)" in err
    assert "--allow-notify" in err
    assert seen == 0  # nothing was sent...
    assert seen_after_opt_in == 1  # ...until the operator opted in


def test_a_notify_built_any_other_way_is_not_sent_without_the_opt_in() -> None:
    async def scenario() -> tuple[ProbeResult, int]:
        async with await HostileServer.start(Mode.HEALTHY) as server:
            for spec in (probe_spec(ProbeKind.OPCODE, opcode=4), probe_spec(ProbeKind.NOTIFY)):
                target = Target("t", "127.0.0.1", server.port, (spec,), zone=ZONE)
                result = await run_probe(target, spec)
                assert result.cause is Cause.NOT_SENT, result.as_json()
            await asyncio.sleep(0.1)
            return result, server.stats.datagrams

    result, seen = asyncio.run(scenario())
    assert "allow_notify" in (result.outcome.error or "")
    assert seen == 0


def test_cli_refuses_dso_tlv_with_an_assigned_type(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", "127.0.0.1:9", "--kind", "dso_tlv", "--dso-type", "0x40"]) == 2
    assert "use kind dso_push_subscribe" in capsys.readouterr().err


def test_cli_readable_line_names_rcode_cause_and_remedy(
        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert cli_against_gaps("127.0.0.1:{port}", "--kind", "axfr", "--zone", ZONE) == 0
    out = capsys.readouterr().out
    assert "REFUSED -> cause=refused" in out
    assert "ACL" in out


def test_ipv6_servers_are_probed_over_udp_and_tcp() -> None:
    async def scenario() -> list[ProbeResult]:
        async with await refserver.start(GAPS, host="::1") as server:
            results = []
            for transport in (Transport.UDP, Transport.TCP):
                spec = probe_spec(ProbeKind.UPDATE, transport)
                target = Target("v6", "::1", server.port, (spec,), zone=ZONE)
                results.append(await run_probe(target, spec))
            return results

    results = asyncio.run(scenario())
    assert [(r.rcode_label, r.cause) for r in results] == [
        ("NOTIMP", Cause.NOT_IMPLEMENTED)] * 2


def test_cli_accepts_bracketed_ipv6_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_against_gaps("[::1]:{port}", "--kind", "axfr", "--zone", ZONE, "--json",
                            host="::1") == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["cause"] == "refused"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    cert, key = make_self_signed_cert(tmp_path_factory.mktemp("tls"), "dns.test", ip=None)
    return str(cert), str(key)


def _tls_run(tls_files: tuple[str, str], settings: TlsSettings) -> ProbeResult:
    cert, key = tls_files
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def scenario() -> ProbeResult:
        async with await refserver.start(GAPS, ssl_context=context) as server:
            assert server.tls_port is not None
            spec = probe_spec(ProbeKind.UPDATE, Transport.TLS)
            target = Target("dot", "127.0.0.1", server.tls_port, (spec,), zone=ZONE,
                            tls=settings)  # fmt: skip
            return await run_probe(target, spec)

    return asyncio.run(scenario())


def test_tls_probe_verifies_the_server_certificate(tls_files: tuple[str, str]) -> None:
    settings = TlsSettings(ca_file=tls_files[0], server_name="dns.test")
    result = _tls_run(tls_files, settings)
    assert (result.rcode_label, result.cause, result.outcome.transport) == (
        "NOTIMP", Cause.NOT_IMPLEMENTED, "tls")
    # The throw-away certificate is good for 2 days: its notAfter is the chain's.
    assert result.outcome.cert_not_after is not None
    assert 0 < result.outcome.cert_not_after - time.time() <= 2 * 86400 + 60


def test_tls_probe_with_an_unknown_ca_is_an_invalid_certificate(
    tls_files: tuple[str, str],
) -> None:
    result = _tls_run(tls_files, TlsSettings(server_name="dns.test"))
    assert result.cause is Cause.TLS_CERTIFICATE_INVALID
    assert "certificate" in (result.outcome.error or "").lower()


def test_tls_probe_with_the_wrong_server_name_is_an_invalid_certificate(
    tls_files: tuple[str, str],
) -> None:
    result = _tls_run(tls_files, TlsSettings(ca_file=tls_files[0], server_name="other.test"))
    assert result.cause is Cause.TLS_CERTIFICATE_INVALID


def test_check_config_accepts_the_examples_and_rejects_a_broken_file(
    tmp_path: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", "config/example.yml"]) == 0
    assert "OK" in capsys.readouterr().out
    broken = tmp_path / "broken.yml"  # type: ignore[operator]
    broken.write_text("targets:\n  - name: a\n    server: 127.0.0.1:53\n    intervall: 5s\n")
    assert main(["check-config", str(broken)]) == 1
    err = capsys.readouterr().err
    assert f"{broken}:4" in err
    assert "intervall" in err


def test_nothing_listening_on_udp_is_connection_refused_not_silence() -> None:
    # ICMP port unreachable reaches a connected UDP socket as ECONNREFUSED.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    spec = probe_spec(ProbeKind.QUERY, Transport.UDP)
    target = Target("gone", "127.0.0.1", port, (spec,), zone=ZONE)
    result = asyncio.run(run_probe(target, spec))
    assert result.cause is Cause.CONNECTION_REFUSED
    assert result.duration < 0.5


def test_udp_probe_to_a_hostname_resolves_it() -> None:
    async def scenario() -> ProbeResult:
        async with await refserver.start(GAPS) as server:
            spec = probe_spec(ProbeKind.UPDATE)
            target = Target("named", "localhost", server.port, (spec,), zone=ZONE)
            return await run_probe(target, spec)

    assert asyncio.run(scenario()).cause is Cause.NOT_IMPLEMENTED
