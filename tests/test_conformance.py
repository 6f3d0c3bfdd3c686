"""Conformance checks read like genreport and Zonemaster: one reply, one verdict per check."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import conformance as cf
from exporter.config import EdnsSettings, ProbeSpec, Target
from exporter.conformance import Expectation, Role, judge
from exporter.kinds import ProbeKind
from exporter.probes import run_probe

ZONE = "gap.test."
AUTH = Expectation(role=Role.AUTHORITATIVE)
RECURSIVE = Expectation(role=Role.RECURSIVE)


def query(qname: str = ZONE, qtype: str = "SOA", *, edns: int = -1, ednsflags: int = 0,
          options: tuple[tuple[int, bytes], ...] = (), payload: int = 4096, flags: int = 0,
          opcode: int = 0, question: bool = True) -> dns.message.Message:  # fmt: skip
    message = dns.message.make_query(qname, qtype, use_edns=False)
    message.id = 4242
    message.flags = flags | (opcode << 11)
    if not question:
        message.question = []
    if edns >= 0:
        message.use_edns(edns, ednsflags, payload,
                         options=[dns.edns.GenericOption(code, data) for code, data in options])
    return message


def answer(request: dns.message.Message, *, rcode: int = 0, flags: int = dns.flags.AA,
           soa: bool = True, edns: int | None = 0, ednsflags: int | None = None,
           options: tuple[tuple[int, bytes], ...] = (), clear: int = 0,
           question: bool = True) -> dns.message.Message:  # fmt: skip
    """What a conformant authoritative server sends back, unless told otherwise."""
    reply = dns.message.Message(request.id)
    copied = request.flags & (dns.flags.RD | dns.flags.CD | 0x7800)
    reply.flags = (dns.flags.QR | copied | flags) & ~clear
    if question:
        reply.question = list(request.question)
    if soa and request.question and rcode == 0 and request.edns <= 0:
        rrset = request.question[0]
        if rrset.rdtype == dns.rdatatype.SOA:
            reply.answer.append(dns.rrset.from_text(rrset.name, 300, "IN", "SOA",
                                                    "ns. host. 1 2 3 4 5"))  # fmt: skip
    if request.edns >= 0 and edns is not None:
        do = request.ednsflags & dns.flags.DO
        reply.use_edns(edns, do if ednsflags is None else ednsflags, 1232,
                       options=[dns.edns.GenericOption(c, d) for c, d in options])  # fmt: skip
    reply.set_rcode(rcode)
    return reply


def violations(request: dns.message.Message, reply: dns.message.Message | bytes,
               expectation: Expectation = AUTH, udp: bool = False) -> set[str]:  # fmt: skip
    wire = reply if isinstance(reply, bytes) else reply.to_wire(max_size=65535)
    return set(judge(request.to_wire(), wire, expectation, wire if udp else None))


def test_a_conformant_authoritative_answer_violates_nothing() -> None:
    for request in (query(), query(edns=0), query(edns=0, ednsflags=dns.flags.DO),
                    query(edns=0, ednsflags=0x0080), query(edns=0, options=((100, b""),))):
        assert violations(request, answer(request)) == set(), request


def test_edns1_answered_noerror_is_badversion_and_rcode() -> None:
    # Knot Resolver and dnsmasq: EDNS version 1 answered as if it were 0.
    request = query(edns=1)
    reply = answer(request, soa=True)
    reply.answer.append(dns.rrset.from_text(ZONE, 300, "IN", "SOA", "ns. host. 1 2 3 4 5"))
    found = violations(request, reply, Expectation(frozenset({16}), Role.RECURSIVE))
    assert {"badversion", "rcode", "soa"} <= found


def test_a_wrong_rcode_that_is_a_gap_is_not_also_an_rcode_violation() -> None:
    # REFUSED, NOTIMP, SERVFAIL ... already carry a gap cause: one problem, one signal.
    request = query()
    for rcode in (1, 2, 4, 5):
        assert "rcode" not in violations(request, answer(request, rcode=rcode)), rcode


def test_noerror_where_a_refusal_is_expected_is_an_rcode_violation() -> None:
    # An open AXFR-like answer where the probe expects REFUSED: no gap cause, so the
    # check is what makes it visible (issue 13 item 7).
    request = query()
    assert "rcode" in violations(request, answer(request), Expectation(frozenset({5})))


def test_edns1_answered_badvers_under_a_version_1_opt() -> None:
    request = query(edns=1)
    found = violations(request, answer(request, rcode=16, edns=1), Expectation(frozenset({16})))
    assert found == {"version-not-zero", "badversion"}


def test_conformant_badvers_passes() -> None:
    request = query(edns=1)
    assert violations(request, answer(request, rcode=16), Expectation(frozenset({16}))) == set()


def test_opcode15_with_every_flag_answered_notimp_but_flags_echoed() -> None:
    # genreport `opcodeflg`: opcode 15, header only, TC RD RA CD AD AA Z all set.
    every = (dns.flags.TC | dns.flags.RD | dns.flags.RA | dns.flags.CD | dns.flags.AD
             | dns.flags.AA | 0x0040)  # fmt: skip
    request = query(opcode=15, flags=every, question=False)
    reply = dns.message.Message(request.id)
    reply.flags = dns.flags.QR | every | (15 << 11)
    reply.set_rcode(4)
    found = violations(request, reply, Expectation(frozenset({4})))
    assert found == {"aa", "ra", "rd", "ad", "cd", "z"}


def test_opcode15_clean_notimp_passes() -> None:
    request = query(opcode=15, question=False)
    reply = dns.message.Message(request.id)
    reply.flags = dns.flags.QR | (15 << 11)
    reply.set_rcode(4)
    assert violations(request, reply, Expectation(frozenset({4}))) == set()


def test_unknown_opcode_answered_as_a_query() -> None:
    request = query(opcode=15, question=False)
    reply = answer(query(), rcode=0)  # a full QUERY answer with the request's ID
    reply.id = request.id
    found = violations(request, reply, Expectation(frozenset({4})))
    assert {"opcode-mismatch", "rcode", "non-empty-question-section",
            "non-empty-answer-section", "aa"} <= found  # fmt: skip


def test_opt_rules_both_ways() -> None:
    plain = query()
    assert "opt" in violations(plain, _with_opt(plain))
    request = query(edns=0)
    assert "noopt" in violations(request, answer(request, edns=None))


def _with_opt(request: dns.message.Message) -> dns.message.Message:
    reply = answer(request)
    reply.use_edns(0, 0, 1232)
    return reply


def test_unknown_option_echoed_and_unknown_flag_kept() -> None:
    request = query(edns=0, options=((100, b""),), ednsflags=0x0080)
    found = violations(request, answer(request, options=((100, b""),), ednsflags=0x0080))
    assert found == {"echoed", "mbz"}


def test_known_options_coming_back_are_not_echoes() -> None:
    request = query(edns=0, options=((3, b""),))
    assert violations(request, answer(request, options=((3, b"ns1"),))) == set()


def test_do_not_copied_is_nodo() -> None:
    request = query(edns=0, ednsflags=dns.flags.DO)
    assert violations(request, answer(request, ednsflags=0)) == {"nodo"}


def test_header_z_bit_echoed() -> None:
    request = query(flags=0x0040)
    assert violations(request, answer(request, flags=dns.flags.AA | 0x0040)) == {"z"}


def test_rd_set_on_its_own_and_rd_dropped() -> None:
    request = query()
    assert violations(request, answer(request, flags=dns.flags.AA | dns.flags.RD)) == {"rd"}
    asked = query(flags=dns.flags.RD)
    assert "nord" in violations(asked, answer(asked, clear=dns.flags.RD))


def test_authoritative_answer_without_aa_and_with_ra() -> None:
    request = query()
    found = violations(request, answer(request, flags=dns.flags.RA))
    assert found == {"noaa", "is-a-recursor"}
    # The same reply from a resolver is fine: RA is its job, AA is not required.
    assert violations(request, answer(request, flags=dns.flags.RA), RECURSIVE) == set()


def test_role_checks_are_skipped_when_the_role_is_unknown() -> None:
    request = query()
    assert violations(request, answer(request, flags=dns.flags.RA), Expectation()) == set()


def test_ad_without_ad_or_do_in_the_request() -> None:
    request = query()
    assert violations(request, answer(request, flags=dns.flags.AA | dns.flags.AD)) == {"ad"}
    asked = query(flags=dns.flags.AD)
    assert violations(asked, answer(asked, flags=dns.flags.AA | dns.flags.AD)) == set()


def test_soa_missing_from_a_noerror_answer() -> None:
    request = query()
    assert violations(request, answer(request, soa=False)) == {"nosoa"}


def test_udp_reply_over_the_advertised_buffer_is_toobig() -> None:
    request = query(qtype="DNSKEY", edns=0, ednsflags=dns.flags.DO, payload=512)
    reply = answer(request)
    for n in range(6):
        reply.answer.append(dns.rrset.from_text(ZONE, 300, "IN", "TXT", f'"{n}{"x" * 200}"'))
    assert "toobig" in violations(request, reply, udp=True)
    assert "toobig" not in violations(request, reply, udp=False)


def test_truncated_reply_without_opt() -> None:
    request = query(qtype="DNSKEY", edns=0, ednsflags=dns.flags.DO, payload=512)
    reply = answer(request, edns=None, flags=dns.flags.AA | dns.flags.TC)
    assert {"missing-opt-in-truncated", "noopt"} <= violations(request, reply, udp=True)


def test_qname_case_must_be_kept() -> None:
    request = query("DnsGap-0x20.GaP.tEsT.", "A")
    reply = answer(request, rcode=3)
    wire = bytearray(reply.to_wire())
    assert violations(request, bytes(wire)) == set()
    wire[12:12 + 12] = wire[12:12 + 12].lower()  # first label, lowered by the server
    assert violations(request, bytes(wire)) == {"qname-case"}


def test_upward_referral_to_the_root() -> None:
    request = query(".", "NS")
    reply = answer(request, flags=0, soa=False)
    reply.authority.append(dns.rrset.from_text(".", 300, "IN", "NS", "a.root-servers.net."))
    found = violations(request, reply, Expectation(frozenset({0, 3, 5}), Role.AUTHORITATIVE))
    assert "upward-referral" in found


def test_aaaa_with_four_bytes_of_rdata() -> None:
    request = query(qtype="AAAA")
    wire = bytearray(answer(request).to_wire())
    name = dns.name.from_text(ZONE).to_wire()
    rr = name + struct.pack("!HHIH", 28, 1, 300, 4) + bytes([192, 0, 2, 1])
    wire[6:8] = struct.pack("!H", 1)
    header, rest = bytes(wire[:12]), bytes(wire[12:])
    question_end = len(name) + 4
    patched = header + rest[:question_end] + rr + rest[question_end:]
    assert violations(request, patched) == {"aaaa-bad-rdata"}


def test_cookie_from_someone_else() -> None:
    ours = bytes(range(1, 9))
    request = query(edns=0, options=((10, ours),))
    good = answer(request, options=((10, ours + b"S" * 8),))
    bad = answer(request, options=((10, b"X" * 8 + b"S" * 8),))
    assert violations(request, good) == set()
    assert violations(request, bad) == {"cookie-mismatch"}


def test_a_reply_to_another_id_is_not_judged() -> None:
    request = query()
    reply = answer(request, flags=dns.flags.RA | 0x0040)
    reply.id = 1
    assert violations(request, reply) == set()


def test_applicable_checks_follow_the_request() -> None:
    def names(message: dns.message.Message, exp: Expectation = AUTH) -> set[str]:
        return set(cf.applicable(cf.parse(message.to_wire()), exp))

    plain = names(query())
    assert {"opt", "nosoa", "noaa", "is-a-recursor", "z", "rd"} <= plain
    assert not {"noopt", "badversion", "mbz", "non-empty-answer-section"} & plain
    edns1 = names(query(edns=1))
    assert {"noopt", "badversion", "version-not-zero", "soa", "mbz"} <= edns1
    assert not {"nosoa", "noaa", "opt"} & edns1
    opcode = names(query(opcode=15, question=False), Expectation(frozenset({4})))
    assert {"non-empty-question-section", "aa", "ra", "rcode"} <= opcode
    assert names(query(opcode=6, question=False)) == set()


def test_expect_lists_read_as_rcodes() -> None:
    assert cf.expected_rcodes({"none"}) == {0, 3}
    assert cf.expected_rcodes({"bad_version", "NOTIMP", "RCODE42"}) == {16, 4, 42}
    assert cf.expected_rcodes({"no_response"}) == frozenset()


def test_every_check_is_documented() -> None:
    text = (Path(__file__).parents[1] / "docs" / "conformance.md").read_text(encoding="utf-8")
    for check in cf.CHECKS:
        assert f"`{check.name}`" in text, check.name
        assert check.rule
        assert check.source
        assert check.remediation


# -- properties -------------------------------------------------------------------

REQUESTS = [query(), query(edns=0, ednsflags=dns.flags.DO | 0x0080, options=((100, b""),)),
            query(edns=1), query(opcode=15, question=False, flags=0x0FF0), query(".", "NS"),
            query(qtype="AAAA")]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_parse_never_raises(data: bytes) -> None:
    cf.parse(data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(REQUESTS), st.binary(max_size=300), st.sampled_from([AUTH, RECURSIVE]))
def test_any_reply_bytes_get_a_verdict_within_the_applicable_checks(
    request: dns.message.Message, tail: bytes, expectation: Expectation
) -> None:
    wire = request.to_wire()
    reply = wire[:2] + bytes([wire[2] | 0x80]) + tail  # our ID, QR set, then anything
    found = judge(wire, reply, expectation, reply)
    assert set(found) <= set(cf.applicable(cf.parse(wire), expectation))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 0xFFFF), st.sampled_from(REQUESTS))
def test_header_bit_checks_follow_the_bits(flags: int, request: dns.message.Message) -> None:
    wire = request.to_wire()
    reply_flags = (flags | 0x8000) & ~0x7800 | (wire[2] & 0x78) << 8
    reply = wire[:2] + struct.pack("!H", reply_flags) + wire[4:]
    found = set(judge(wire, reply, Expectation(frozenset(), None, "tcp")))
    assert ("z" in found) == bool(reply_flags & 0x0040)
    opcode = (wire[2] >> 3) & 0xF
    if opcode:
        assert ("ra" in found) == bool(reply_flags & 0x0080)
        assert ("aa" in found) == bool(reply_flags & 0x0400)


@pytest.mark.parametrize("name", cf.NAMES)
def test_check_names_are_bounded_label_values(name: str) -> None:
    assert name.replace("-", "").isalnum()
    assert name == name.lower()


# -- the compliance survey mirrors genreport -------------------------------------------


def test_compliance_survey_sends_genreports_queries() -> None:
    from exporter.config import survey_probes
    from exporter.wire import build_request

    probes = {p.name: p for p in survey_probes("compliance", "gap.test.")}
    wire = {name: cf.parse(build_request(p, "gap.test.", msg_id=1).wire)
            for name, p in probes.items() if p.kind.value in ("query", "opcode")}  # fmt: skip
    for name, message in wire.items():
        assert message is not None
        # genreport clears RD everywhere but in `rd` and `opcodeflg`.
        assert bool(message.flags & cf.RD) == (name in {"rd", "opcodeflg", "nameserver01"}), name
    opcodeflg = wire["opcodeflg"]
    assert opcodeflg.opcode == 15
    assert opcodeflg.qdcount == 0
    assert opcodeflg.flags & 0x07F0 == 0x07F0  # AA TC RD RA Z AD CD, all set
    assert wire["opcode"].flags & 0x07F0 == 0
    assert wire["zflag"].flags & cf.Z
    assert wire["dns"].opt is None
    assert wire["edns"].opt is not None
    assert wire["edns"].opt.payload == 4096
    assert wire["edns1"].opt is not None
    assert wire["edns1"].opt.version == 1
    assert wire["optlist"].opt is not None
    assert wire["optlist"].opt.options == ((3, b""), (8, b"\x00\x01\x00\x00"), (9, b""),
                                           (10, bytes(range(1, 9))))  # fmt: skip
    assert wire["edns512"].opt is not None
    assert (wire["edns512"].opt.payload, wire["edns512"].opt.flags) == (512, cf.DO)
    assert probes["ednstcp"].transport.value == "tcp"
    assert probes["TYPE1000"].qtype == 1000
    assert probes["type666"].qtype == 666
    assert wire["nameserver08"].question is not None
    assert wire["nameserver08"].question[0].startswith(b"\x0bDnsGap-0x20")
    assert probes["edns1opt"].expect == {"bad_version"}


def test_role_comes_from_the_survey_or_the_target() -> None:
    from exporter.config import ConfigError, parse_config

    def role(target: str) -> str | None:
        config = parse_config(f"targets: [{target}]", "<test>")
        return config.targets[0].role

    assert role("{server: 192.0.2.1, survey: compliance}") == "authoritative"
    assert role("{server: 192.0.2.1, survey: recursive}") == "recursive"
    assert role("{server: 192.0.2.1, survey: compliance, role: recursive}") == "recursive"
    assert role("{server: 192.0.2.1, probes: [{name: a, kind: query}]}") is None
    with pytest.raises(ConfigError, match="authoritative, recursive"):
        role("{server: 192.0.2.1, survey: compliance, role: stub}")
    with pytest.raises(ConfigError, match="header flags"):
        role("{server: 192.0.2.1, probes: [{name: a, kind: query, header_flags: [rd]}]}")


# -- metrics ------------------------------------------------------------------------


def test_every_applicable_check_has_both_series_from_start_up() -> None:
    from exporter.config import parse_config
    from exporter.metrics import MetricsState

    config = parse_config("targets: [{name: ns, server: 192.0.2.1, zone: gap.test,"
                          " survey: compliance}]", "<test>")  # fmt: skip
    state = MetricsState()
    state.sync(config, [(t, s) for t in config.targets for s in t.probes])
    text = state.render()
    assert 'dnsgap_conformance_violation{target="ns",probe="edns1",check="badversion"} 0' in text
    assert ('dnsgap_conformance_violations_total{target="ns",probe="opcodeflg",check="z"} 0'
            in text)  # fmt: skip
    assert 'probe="dns",check="noopt"' not in text  # no OPT sent: `opt` applies instead
    checks = {line.split('check="')[1].split('"')[0] for line in text.splitlines()
              if line.startswith("dnsgap_conformance_violation{")}  # fmt: skip
    assert checks <= set(cf.NAMES)

    off = parse_config("scheduler: {conformance_series: false}\n"
                       "targets: [{name: ns, server: 192.0.2.1, survey: compliance}]", "<t>")
    quiet = MetricsState()
    quiet.sync(off, [(t, s) for t in off.targets for s in t.probes])
    assert "dnsgap_conformance_violation{" not in quiet.render()


# -- through real sockets: the UDP reply is judged even when TCP gave the answer ----------


class _SplitServer:
    """UDP answers with whatever ``udp_reply`` builds (TC, no OPT ...); TCP answers
    like a conformant server. One free port of 127.0.0.1 for both."""

    def __init__(self, udp_reply: Callable[[dns.message.Message], dns.message.Message]) -> None:
        self.udp_reply = udp_reply
        self.port = 0

    async def __aenter__(self) -> _SplitServer:
        loop = asyncio.get_running_loop()
        self.tcp = await asyncio.start_server(self._tcp, "127.0.0.1", 0)
        self.port = self.tcp.sockets[0].getsockname()[1]
        server = self

        class Udp(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                reply = server.udp_reply(dns.message.from_wire(data))
                self.transport.sendto(reply.to_wire(max_size=65535), addr)  # type: ignore[attr-defined]

        self.udp, _ = await loop.create_datagram_endpoint(Udp, local_addr=("127.0.0.1", self.port))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.udp.close()
        self.tcp.close()
        await self.tcp.wait_closed()

    async def _tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        length = struct.unpack("!H", await reader.readexactly(2))[0]
        request = dns.message.from_wire(await reader.readexactly(length))
        wire = answer(request).to_wire()
        writer.write(struct.pack("!H", len(wire)) + wire)
        await writer.drain()
        writer.close()


def _dnskey_probe(port: int) -> tuple[Target, ProbeSpec]:
    spec = ProbeSpec(name="nameserver13", kind=ProbeKind.QUERY, qname=ZONE, qtype=48,
                     timeout=2.0, edns=EdnsSettings(payload=512, dnssec_ok=True),
                     expect=frozenset({"NOERROR"}))  # fmt: skip
    return Target("t", "127.0.0.1", port, (spec,), zone=ZONE, role="authoritative"), spec


def test_truncated_udp_reply_without_opt_is_judged_after_the_tcp_retry() -> None:
    def truncated(request: dns.message.Message) -> dns.message.Message:
        return answer(request, edns=None, soa=False, flags=dns.flags.AA | dns.flags.TC)

    async def scenario() -> tuple[str, tuple[str, ...]]:
        async with _SplitServer(truncated) as server:
            target, spec = _dnskey_probe(server.port)
            result = await run_probe(target, spec)
            return result.outcome.transport, result.outcome.violations

    transport, found = asyncio.run(scenario())
    # The TCP answer is fine (it carries OPT): only the UDP reply broke RFC 6891 §7.
    assert (transport, found) == ("tcp", ("missing-opt-in-truncated",))


def test_udp_reply_bigger_than_the_advertised_buffer_is_toobig() -> None:
    def big(request: dns.message.Message) -> dns.message.Message:
        reply = answer(request)
        for n in range(4):
            reply.answer.append(dns.rrset.from_text(ZONE, 300, "IN", "TXT", f'"{n}{"x" * 200}"'))
        return reply

    async def scenario() -> tuple[str, ...]:
        async with _SplitServer(big) as server:
            target, spec = _dnskey_probe(server.port)
            return (await run_probe(target, spec)).outcome.violations

    assert asyncio.run(scenario()) == ("toobig",)


def test_dnsgap_survey_shows_a_violated_check_never_ok() -> None:
    from exporter.causes import Cause
    from exporter.outcome import Outcome, WireEvent
    from exporter.probes import ProbeResult
    from exporter.survey import cell

    def result(success: bool, *violations: str) -> ProbeResult:
        outcome = Outcome(WireEvent.REPLY, 0, violations=violations)
        return ProbeResult(outcome, Cause.NONE, success, 0.001, 0.0)

    # kresd's NOERROR to EDNS version 1: no gap cause, yet not what was expected.
    assert cell(result(False, "rcode", "badversion", "soa")) == "badversion"
    assert cell(result(True, "z")) == "z"  # dnsmasq's zflag: NOERROR with Z echoed
    assert cell(result(False, "rcode")) == "rcode"
    assert cell(result(True)) == "ok"


# -- the status page ----------------------------------------------------------------


def test_status_page_never_shows_a_violating_answer_green() -> None:
    import time

    from exporter.causes import Cause
    from exporter.config import parse_config
    from exporter.metrics import MetricsState
    from exporter.outcome import Outcome, WireEvent
    from exporter.probes import ProbeResult
    from exporter.statuspage import render_status_page

    config = parse_config("targets: [{name: kresd, server: 192.0.2.1, zone: gap.test,"
                          " role: recursive, survey: {preset: compliance, rd: true}}]",
                          "<test>")  # fmt: skip
    state = MetricsState()
    state.sync(config, [(t, s) for t in config.targets for s in t.probes])

    def record(probe: str, success: bool, *violations: str) -> None:
        outcome = Outcome(WireEvent.REPLY, 0, violations=violations)
        state.record("kresd", probe, ProbeResult(outcome, Cause.NONE, success, 0.001,
                                                 time.time()))  # fmt: skip

    record("edns1", False, "rcode", "badversion", "soa")  # NOERROR to EDNS version 1
    record("zflag", True, "z")
    record("dns", True)
    page = render_status_page(state.pairs.values(), reload_ok=True)
    assert ('<span class="chip violation" data-probe="edns1" data-cause="none"' in page)
    assert "edns1: <b>badversion \u2717</b>" in page
    assert "zflag: <b>z \u2717</b>" in page
    assert 'class="chip ok" data-probe="dns"' in page
    section = page.split("<table id=conformance>")[1].split("</table>")[0]
    assert section.count("<tr class=\"violation\"") == 4
    assert 'data-probe="edns1" data-check="badversion"' in section
    assert cf.remediation("badversion") in section
    assert "4 violated checks on 2 probes" in page


def test_reference_server_ignoring_the_edns_version_is_badversion_like_knot_resolver() -> None:
    from exporter.config import survey_probes
    from exporter.refserver import ServerBehaviour, start

    specs = {p.name: p for p in survey_probes("compliance", "demo.example.")}

    async def scenario(behaviour: ServerBehaviour) -> dict[str, tuple[str, ...]]:
        async with await start(behaviour) as server:
            target = Target("ref", "127.0.0.1", server.port, (), zone="demo.example.",
                            role="authoritative")  # fmt: skip
            out = {}
            for name in ("edns1", "edns1opt", "edns", "dns", "opcode"):
                result = await run_probe(target, specs[name])
                out[name] = result.outcome.violations
            return out

    assert asyncio.run(scenario(ServerBehaviour())) == {
        "edns1": (), "edns1opt": (), "edns": (), "dns": (), "opcode": ()}
    ignoring = asyncio.run(scenario(ServerBehaviour(edns_version="ignore")))
    assert ignoring["edns1"] == ("rcode", "badversion", "soa")
    assert ignoring["edns1opt"] == ("rcode", "badversion", "soa")
    assert ignoring["edns"] == ()


def test_the_overview_dashboard_has_a_conformance_row_of_targets_x_checks() -> None:
    import json

    from exporter.palette import OK, VIOLATION

    board = json.loads((Path(__file__).parents[1] / "grafana" / "dashboards"
                        / "dnsgap-overview.json").read_text(encoding="utf-8"))  # fmt: skip
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert "Conformance" in rows
    matrix = next(p for p in board["panels"] if p["title"].startswith("Conformance matrix"))
    assert "dnsgap_conformance_violation" in matrix["targets"][0]["expr"]
    grouping = matrix["transformations"][0]["options"]
    assert (grouping["rowField"], grouping["columnField"]) == ("target", "check")
    verdicts = matrix["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert (verdicts["0"]["color"], verdicts["1"]["color"]) == (OK.colour, VIOLATION.colour)
    for check in cf.CHECKS:  # every check's remedy is one hover away
        assert check.remediation in matrix["description"]
