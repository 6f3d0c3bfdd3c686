"""The support-gap taxonomy: one outcome, one cause."""

from __future__ import annotations

import pytest

from exporter.causes import (
    REMEDIATION,
    Cause,
    classify,
    possible_gap_series,
    rcode_label,
    rcode_name,
)
from exporter.kinds import ProbeKind
from exporter.outcome import DsoFacts, Outcome, WireEvent


def reply(rcode: int, transport: str = "udp", **kwargs: object) -> Outcome:
    return Outcome(WireEvent.REPLY, rcode, transport=transport, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "rcode", "cause"),
    [
        (ProbeKind.QUERY, 0, Cause.NONE),
        (ProbeKind.QUERY, 3, Cause.NONE),  # NXDOMAIN answers the question
        (ProbeKind.QUERY, 1, Cause.FORMAT_ERROR),
        (ProbeKind.QUERY, 2, Cause.SERVER_FAILURE),
        (ProbeKind.QUERY, 4, Cause.NOT_IMPLEMENTED),
        (ProbeKind.QUERY, 5, Cause.REFUSED),
        (ProbeKind.QUERY, 16, Cause.BAD_VERSION),
        (ProbeKind.QUERY, 23, Cause.BAD_COOKIE),
        (ProbeKind.QUERY, 11, Cause.UNEXPECTED_RCODE),  # DSOTYPENI to a QUERY is nonsense
        (ProbeKind.QUERY, 42, Cause.UNEXPECTED_RCODE),
        (ProbeKind.AXFR, 9, Cause.NOT_AUTHORIZED),
        (ProbeKind.IXFR, 4, Cause.NOT_IMPLEMENTED),
        (ProbeKind.UPDATE, 8, Cause.NONE),  # NXRRSET: prerequisite checked = UPDATE works
        (ProbeKind.UPDATE, 3, Cause.NONE),
        (ProbeKind.UPDATE, 6, Cause.NONE),
        (ProbeKind.UPDATE, 7, Cause.NONE),
        (ProbeKind.UPDATE, 10, Cause.NOT_ZONE),
        (ProbeKind.UPDATE, 5, Cause.REFUSED),
        (ProbeKind.UPDATE, 4, Cause.NOT_IMPLEMENTED),
        (ProbeKind.NOTIFY, 4, Cause.NOT_IMPLEMENTED),
        (ProbeKind.OPCODE, 4, Cause.NOT_IMPLEMENTED),
        (ProbeKind.OPCODE, 1, Cause.FORMAT_ERROR),
    ],
)
def test_rcode_maps_to_cause(kind: ProbeKind, rcode: int, cause: Cause) -> None:
    assert classify(kind, reply(rcode)) is cause


def test_a_resolver_refusing_a_query_without_rd_is_its_own_cause() -> None:
    refused = reply(5, ra_to_rd_clear=True)
    assert classify(ProbeKind.QUERY, refused) is Cause.REFUSED_NON_RECURSIVE
    assert "resolver that refuses non-recursive queries" in REMEDIATION[
        Cause.REFUSED_NON_RECURSIVE]  # fmt: skip
    # Without RA, or for a transfer, REFUSED is policy as ever.
    assert classify(ProbeKind.QUERY, reply(5)) is Cause.REFUSED
    assert classify(ProbeKind.AXFR, refused) is Cause.REFUSED
    assert ("REFUSED", Cause.REFUSED_NON_RECURSIVE) in possible_gap_series(
        ProbeKind.QUERY, "udp", sends_rd=False)  # fmt: skip
    assert ("REFUSED", Cause.REFUSED_NON_RECURSIVE) not in possible_gap_series(
        ProbeKind.QUERY, "udp")  # fmt: skip


def test_notimp_to_dso_means_no_dso_at_all_not_a_missing_type() -> None:
    assert classify(ProbeKind.DSO_KEEPALIVE, reply(4, "tcp")) is Cause.DSO_NOT_IMPLEMENTED


def test_dsotypeni_means_dso_spoken_but_not_this_type() -> None:
    assert classify(ProbeKind.DSO_PUSH_SUBSCRIBE, reply(11, "tcp")) is (
        Cause.DSO_TYPE_NOT_IMPLEMENTED
    )


def test_echoed_dso_message_is_its_own_cause() -> None:
    outcome = reply(0, "tcp", dso=DsoFacts(echoed=True))
    assert classify(ProbeKind.DSO_KEEPALIVE, outcome) is Cause.DSO_ECHOED


def test_dso_answered_over_udp_is_flagged() -> None:
    assert classify(ProbeKind.DSO_KEEPALIVE, reply(0, "udp")) is Cause.DSO_OVER_UDP
    assert classify(ProbeKind.DSO_KEEPALIVE, reply(1, "udp")) is Cause.DSO_OVER_UDP
    # NOTIMP still means "no DSO here at all", whatever the transport
    assert classify(ProbeKind.DSO_KEEPALIVE, reply(4, "udp")) is Cause.DSO_NOT_IMPLEMENTED


def test_dso_session_established_is_no_gap() -> None:
    outcome = reply(0, "tcp", dso=DsoFacts(session_established=True))
    assert classify(ProbeKind.DSO_KEEPALIVE, outcome) is Cause.NONE


@pytest.mark.parametrize(
    ("event", "cause"),
    [
        (WireEvent.TIMEOUT, Cause.NO_RESPONSE),
        (WireEvent.CLOSED, Cause.CONNECTION_CLOSED),
        (WireEvent.RESET, Cause.CONNECTION_RESET),
        (WireEvent.CONNECTION_REFUSED, Cause.CONNECTION_REFUSED),
        (WireEvent.TRUNCATED, Cause.TRUNCATED),
        (WireEvent.MISMATCHED, Cause.MISMATCHED_REPLY),
        (WireEvent.MALFORMED, Cause.MALFORMED),
        (WireEvent.TLS_ERROR, Cause.TLS_ERROR),
        (WireEvent.CERT_INVALID, Cause.TLS_CERTIFICATE_INVALID),
        (WireEvent.ALPN_MISMATCH, Cause.ALPN_NOT_OFFERED),
        (WireEvent.HTTP_STATUS, Cause.HTTP_STATUS),
        (WireEvent.CONTENT_TYPE, Cause.WRONG_CONTENT_TYPE),
        (WireEvent.QUIC_HANDSHAKE_TIMEOUT, Cause.QUIC_HANDSHAKE_TIMEOUT),
        (WireEvent.QUIC_VERSION_MISMATCH, Cause.QUIC_VERSION_MISMATCH),
        (WireEvent.STREAM_RESET, Cause.STREAM_RESET),
        (WireEvent.NETWORK_ERROR, Cause.NETWORK_ERROR),
        (WireEvent.NOT_SENT, Cause.NOT_SENT),
    ],
)
def test_wire_events_without_reply_map_to_their_cause(event: WireEvent, cause: Cause) -> None:
    for kind in ProbeKind:
        assert classify(kind, Outcome(event)) is cause


@pytest.mark.parametrize(
    ("tsig_error", "cause"), [(16, Cause.BAD_SIGNATURE), (17, Cause.BAD_KEY), (18, Cause.BAD_TIME)]
)
def test_tsig_errors_have_their_own_causes(tsig_error: int, cause: Cause) -> None:
    outcome = reply(9, "tcp", tsig_error=tsig_error)
    assert classify(ProbeKind.AXFR, outcome) is cause


def test_every_cause_has_a_remediation() -> None:
    assert set(REMEDIATION) == set(Cause)


def test_notimp_and_dsotypeni_remediations_name_the_fix() -> None:
    assert "enable zone transfers / dynamic updates" in REMEDIATION[Cause.NOT_IMPLEMENTED]
    # Knot and PowerDNS close the connection on a DSO message (docs/server-answers.md):
    # the operator must learn from it that the server has no DSO.
    assert "have no DSO" in REMEDIATION[Cause.CONNECTION_CLOSED]
    assert "fall back to traditional DNS queries" in REMEDIATION[Cause.DSO_TYPE_NOT_IMPLEMENTED]


def test_rcode_names_include_dso_and_extended_codes() -> None:
    assert rcode_name(None) == "none"
    assert rcode_name(4) == "NOTIMP"
    assert rcode_name(11) == "DSOTYPENI"
    assert rcode_name(16) == "BADVERS"
    assert rcode_name(4000) == "RCODE4000"


def test_rcode_label_is_bounded_to_header_rcodes_and_other() -> None:
    assert rcode_label(None) == "none"
    assert [rcode_label(r) for r in (0, 5, 11, 16, 23)] == [
        "NOERROR", "REFUSED", "DSOTYPENI", "BADVERS", "BADCOOKIE"]  # fmt: skip
    # 12-15 and 24-4095 are unassigned; 17-22 live in the TSIG/TKEY error field only.
    labels = {rcode_label(r) for r in (*range(12, 16), *range(17, 23), *range(24, 4096))}
    assert labels == {"other"}


def test_gap_series_precreated_per_kind_include_the_headline_gaps() -> None:
    def causes(kind: ProbeKind, transport: str = "udp") -> set[Cause]:
        return {cause for _, cause in possible_gap_series(kind, transport)}

    assert Cause.NOT_IMPLEMENTED in causes(ProbeKind.UPDATE)
    assert Cause.BAD_VERSION in causes(ProbeKind.QUERY)
    dso = causes(ProbeKind.DSO_PUSH_SUBSCRIBE, "tcp")
    assert Cause.DSO_NOT_IMPLEMENTED in dso
    assert Cause.DSO_TYPE_NOT_IMPLEMENTED in dso
    assert Cause.DSO_ECHOED in dso


def test_every_cause_a_probe_can_report_is_precreated_with_its_rcode_label() -> None:
    query = possible_gap_series(ProbeKind.QUERY, "udp")
    assert ("none", Cause.MISMATCHED_REPLY) in query
    assert ("none", Cause.MALFORMED) in query
    assert ("none", Cause.CONNECTION_CLOSED) in query  # a truncated reply retried over TCP
    assert ("NOTZONE", Cause.NOT_ZONE) in query
    assert ("BADCOOKIE", Cause.BAD_COOKIE) in query
    assert ("other", Cause.UNEXPECTED_RCODE) in query
    assert ("YXRRSET", Cause.UNEXPECTED_RCODE) in query
    assert not {cause for _, cause in query} & {Cause.NONE, Cause.TLS_ERROR, Cause.TRUNCATED}
    assert ("none", Cause.TRUNCATED) in possible_gap_series(ProbeKind.QUERY, "udp",
                                                            tcp_fallback=False)  # fmt: skip
    assert ("none", Cause.TLS_ERROR) in possible_gap_series(ProbeKind.AXFR, "tls")
    doh = possible_gap_series(ProbeKind.QUERY, "doh")
    doq = possible_gap_series(ProbeKind.QUERY, "doq")
    for event in (WireEvent.CERT_INVALID, WireEvent.HTTP_STATUS, WireEvent.STREAM_RESET):
        assert ("none", classify(ProbeKind.QUERY, Outcome(event))) in doh, event
    for event in (WireEvent.QUIC_HANDSHAKE_TIMEOUT, WireEvent.QUIC_VERSION_MISMATCH):
        assert ("none", classify(ProbeKind.QUERY, Outcome(event))) in doq, event
    signed = possible_gap_series(ProbeKind.AXFR, "tcp", signed=True)
    assert {("NOTAUTH", Cause.BAD_SIGNATURE), ("NOTAUTH", Cause.BAD_KEY)} <= signed
    # UPDATE's prerequisite rcodes are answers, not gaps
    assert ("NXRRSET", Cause.UNEXPECTED_RCODE) not in possible_gap_series(
        ProbeKind.UPDATE, "udp")  # fmt: skip
