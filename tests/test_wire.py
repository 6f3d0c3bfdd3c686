"""Request builders say exactly what RFCs ask for; the reply reader judges bytes."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.update

from exporter.config import EdnsSettings, ProbeSpec
from exporter.kinds import ProbeKind
from exporter.outcome import WireEvent
from exporter.wire import (
    WireRequest,
    build_request,
    first_record_end,
    read_reply,
    read_transfer_head,
)


def spec(kind: ProbeKind, **kwargs: object) -> ProbeSpec:
    return ProbeSpec(name=kind.value, kind=kind, **kwargs)  # type: ignore[arg-type]


def parsed(kind: ProbeKind, **kwargs: object) -> dns.message.Message:
    request = build_request(spec(kind, **kwargs), "gap.test.")
    return dns.message.from_wire(request.wire)


def test_ixfr_carries_our_soa_with_the_configured_serial_in_authority() -> None:
    message = parsed(ProbeKind.IXFR, serial=2024)
    assert message.question[0].rdtype == dns.rdatatype.IXFR
    soa = message.authority[0]
    assert soa.rdtype == dns.rdatatype.SOA
    assert soa[0].serial == 2024  # type: ignore[attr-defined]


def test_update_is_prerequisite_only_on_a_random_name_in_the_zone() -> None:
    first = parsed(ProbeKind.UPDATE)
    second = parsed(ProbeKind.UPDATE)
    assert first.opcode() == dns.opcode.UPDATE
    assert isinstance(first, dns.update.UpdateMessage)
    prereq = first.prerequisite[0]
    assert prereq.name.to_text().startswith("dnsgap-")
    assert prereq.name.is_subdomain(dns.name.from_text("gap.test."))
    # RFC 2136 §2.4.1 "RRset exists (value independent)": class ANY, type TXT
    assert prereq.rdtype == dns.rdatatype.TXT
    assert prereq.deleting == dns.rdataclass.ANY
    # no update section at all: nothing to change even if the prerequisite held
    assert first.update == []
    assert first.prerequisite[0].name != second.prerequisite[0].name


def test_a_query_sets_rd_by_default_and_every_other_kind_clears_it() -> None:
    assert parsed(ProbeKind.QUERY).flags & dns.flags.RD
    assert not parsed(ProbeKind.QUERY, recursion_desired=False).flags & dns.flags.RD
    for kind in (ProbeKind.AXFR, ProbeKind.IXFR, ProbeKind.UPDATE, ProbeKind.NOTIFY,
                 ProbeKind.OPCODE):  # fmt: skip
        assert not parsed(kind, qname="gap.test.").flags & dns.flags.RD, kind


def test_refused_with_ra_to_a_query_without_rd_is_flagged_as_such() -> None:
    for rd, ra, flagged in ((False, True, True), (True, True, False), (False, False, False)):
        request = build_request(spec(ProbeKind.QUERY, recursion_desired=rd), "gap.test.")
        response = dns.message.make_response(dns.message.from_wire(request.wire))
        response.set_rcode(dns.rcode.REFUSED)
        response.flags = (response.flags | dns.flags.RA) if ra else response.flags & ~dns.flags.RA
        outcome = read_reply(request, response.to_wire(), "udp")
        assert outcome.ra_to_rd_clear is flagged, (rd, ra)


def test_notify_sets_the_notify_opcode_and_aa() -> None:
    message = parsed(ProbeKind.NOTIFY)
    assert message.opcode() == dns.opcode.NOTIFY
    assert message.flags & dns.flags.AA


def test_raw_opcode_probe_sends_the_opcode_asked_for() -> None:
    for opcode in (3, 7, 15):
        request = build_request(spec(ProbeKind.OPCODE, opcode=opcode, qname="gap.test."),
                                "gap.test.")
        assert (request.wire[2] >> 3) & 0xF == opcode


def test_query_sends_the_edns_knobs_configured() -> None:
    edns = EdnsSettings(version=1, dnssec_ok=True, flags=0x0080,
                        options=((100, b"\x01"),), nsid=True)
    message = parsed(ProbeKind.QUERY, qname="gap.test.", edns=edns)
    assert message.edns == 1
    assert message.ednsflags & dns.flags.DO
    assert message.ednsflags & 0x0080
    codes = sorted(int(option.otype) for option in message.options)
    assert codes == [3, 100]


def test_query_without_edns_has_no_opt_record() -> None:
    message = parsed(ProbeKind.QUERY, edns=EdnsSettings(enabled=False))
    assert message.edns == -1


def _reply_to(request_wire: bytes, rcode: int, opcode: int | None = None) -> bytes:
    query = dns.message.from_wire(request_wire)
    response = dns.message.make_response(query)
    response.set_rcode(dns.rcode.Rcode(rcode))
    if opcode is not None:
        response.set_opcode(dns.opcode.Opcode(opcode))
    return response.to_wire()


def test_reply_with_other_opcode_is_mismatched() -> None:
    request = build_request(spec(ProbeKind.UPDATE), "gap.test.")
    outcome = read_reply(request, _reply_to(request.wire, 0, opcode=0), "udp")
    assert outcome.event is WireEvent.MISMATCHED
    assert outcome.reply_opcode == 0


def test_reply_with_other_id_is_mismatched() -> None:
    request = build_request(spec(ProbeKind.QUERY), "gap.test.")
    wire = bytearray(_reply_to(request.wire, 0))
    wire[0] ^= 0xFF
    assert read_reply(request, bytes(wire), "udp").event is WireEvent.MISMATCHED


def test_request_echoed_back_without_qr_is_mismatched() -> None:
    request = build_request(spec(ProbeKind.QUERY), "gap.test.")
    outcome = read_reply(request, request.wire, "udp")
    assert outcome.event is WireEvent.MISMATCHED
    assert "QR=0" in (outcome.error or "")


def test_badvers_is_read_from_the_opt_extended_rcode() -> None:
    request = build_request(spec(ProbeKind.QUERY, edns=EdnsSettings(version=1)), "gap.test.")
    query = dns.message.from_wire(request.wire)
    response = dns.message.make_response(query)
    response.use_edns(0)
    response.set_rcode(dns.rcode.BADVERS)
    outcome = read_reply(request, response.to_wire(), "udp")
    assert outcome.event is WireEvent.REPLY
    assert outcome.rcode == 16


def test_short_garbage_is_malformed_not_an_exception() -> None:
    request = build_request(spec(ProbeKind.QUERY), "gap.test.")
    assert read_reply(request, b"\x00\x01", "udp").event is WireEvent.MALFORMED
    junk = request.wire[:2] + b"\x80\x00\x00\x05" + b"\xff" * 30
    assert read_reply(request, junk, "tcp").event is WireEvent.MALFORMED


def _axfr_reply(request: WireRequest, first: str, records: int) -> bytes:
    query = dns.message.from_wire(request.wire)
    response = dns.message.make_response(query)
    zone = query.question[0].name
    response.answer.append(dns.rrset.from_text(zone, 300, "IN", first, *(
        ["ns1.gap.test. host.gap.test. 1 2 3 4 5"] if first == "SOA" else ['"first"'])))
    for i in range(records):
        response.answer.append(dns.rrset.from_text(f"t{i}.gap.test.", 300, "IN", "TXT",
                                                   '"' + "x" * 100 + '"'))  # fmt: skip
    return response.to_wire()


def test_first_record_end_says_how_much_of_a_transfer_head_is_needed() -> None:
    request = build_request(spec(ProbeKind.AXFR), "gap.test.")
    wire = _axfr_reply(request, "SOA", 10)
    end = first_record_end(wire)
    assert end is not None
    # header, question (gap.test. AXFR IN), then the SOA: owner pointer, fixed part, rdata
    question_end = 12 + len(b"\x03gap\x04test\x00") + 4
    assert end == question_end + 2 + 10 + int.from_bytes(wire[question_end + 10:][:2], "big")
    for cut in (5, 12, 20, question_end + 3, end - 1):
        assert first_record_end(wire[:cut]) > cut  # type: ignore[operator]
    assert first_record_end(wire[:end]) == end
    assert first_record_end(wire[:12] + b"\x80") is None  # label type 0b10: not DNS


def test_a_transfer_head_is_judged_as_header_plus_first_record() -> None:
    request = build_request(spec(ProbeKind.AXFR), "gap.test.")
    wire = _axfr_reply(request, "SOA", 30)
    head = wire[:first_record_end(wire)]
    outcome = read_transfer_head(request, head, len(wire), "tcp")
    assert (outcome.event, outcome.rcode) == (WireEvent.REPLY, 0)
    assert outcome.details["first_message_bytes"] == len(wire)
    assert outcome.bytes_received == len(head)


def test_a_transfer_head_that_does_not_start_with_the_soa_is_malformed() -> None:
    request = build_request(spec(ProbeKind.AXFR), "gap.test.")
    wire = _axfr_reply(request, "TXT", 30)
    outcome = read_transfer_head(request, wire[:600], len(wire), "tcp")
    assert outcome.event is WireEvent.MALFORMED
    assert "not the zone's SOA (RFC 5936 §2.2)" in (outcome.error or "")


def test_with_id_changes_only_the_id() -> None:
    request = build_request(spec(ProbeKind.QUERY), "gap.test.")
    other = request.with_id(4242)
    assert other.wire[2:] == request.wire[2:]
    assert int.from_bytes(other.wire[:2], "big") == 4242
