"""The support-gap taxonomy: one table from an outcome to a cause label.

A cause answers the operator's question "why did this operation not work?".
Each has a remediation text shown in the status page, the CLI and alerts.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping

from exporter.kinds import ProbeKind
from exporter.outcome import DsoFacts, Outcome, WireEvent

# RFC 1035 / 2136 / 6891 / 8490 / 8945 / 7873 rcode values.
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
YXDOMAIN, YXRRSET, NXRRSET, NOTAUTH, NOTZONE, DSOTYPENI = 6, 7, 8, 9, 10, 11
BADVERS, BADSIG, BADKEY, BADTIME, BADCOOKIE = 16, 16, 17, 18, 23

RCODE_NAMES: Mapping[int, str] = {
    0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP",
    5: "REFUSED", 6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH",
    10: "NOTZONE", 11: "DSOTYPENI", 16: "BADVERS", 17: "BADKEY", 18: "BADTIME",
    19: "BADMODE", 20: "BADNAME", 21: "BADALG", 22: "BADTRUNC", 23: "BADCOOKIE",
}  # fmt: skip


def rcode_name(rcode: int | None) -> str:
    """Mnemonic for an rcode; ``"none"`` when no reply came, ``"RCODE42"`` when unassigned."""
    if rcode is None:
        return "none"
    return RCODE_NAMES.get(rcode, f"RCODE{rcode}")


class Cause(enum.StrEnum):
    """Why an operation did or did not work: the ``cause`` label."""

    NONE = "none"
    NOT_IMPLEMENTED = "not_implemented"
    REFUSED = "refused"
    REFUSED_NON_RECURSIVE = "refused_non_recursive"
    NOT_AUTHORIZED = "not_authorized"
    NOT_ZONE = "not_zone"
    FORMAT_ERROR = "format_error"
    SERVER_FAILURE = "server_failure"
    BAD_VERSION = "bad_version"
    BAD_SIGNATURE = "bad_signature"
    BAD_KEY = "bad_key"
    BAD_TIME = "bad_time"
    BAD_COOKIE = "bad_cookie"
    UNEXPECTED_RCODE = "unexpected_rcode"
    NO_RESPONSE = "no_response"
    CONNECTION_CLOSED = "connection_closed"
    CONNECTION_RESET = "connection_reset"
    CONNECTION_REFUSED = "connection_refused"
    TRUNCATED = "truncated"
    MISMATCHED_REPLY = "mismatched_reply"
    MALFORMED = "malformed"
    TLS_ERROR = "tls_error"
    TLS_CERTIFICATE_INVALID = "tls_certificate_invalid"
    ALPN_NOT_OFFERED = "alpn_not_offered"
    HTTP_STATUS = "http_status"
    WRONG_CONTENT_TYPE = "wrong_content_type"
    QUIC_HANDSHAKE_TIMEOUT = "quic_handshake_timeout"
    QUIC_VERSION_MISMATCH = "quic_version_mismatch"
    STREAM_RESET = "stream_reset"
    NETWORK_ERROR = "network_error"
    DSO_NOT_IMPLEMENTED = "dso_not_implemented"
    DSO_TYPE_NOT_IMPLEMENTED = "dso_type_not_implemented"
    DSO_ECHOED = "dso_echoed"
    DSO_OVER_UDP = "dso_over_udp"
    NOT_SENT = "not_sent"


#: Outcomes that never reached the server: silence, a refused or reset connection, a
#: network error, a failed TLS or QUIC handshake. When every probe of a target (or
#: of one transport) ends so, the server or its listener is down: an outage, not a
#: change in what it supports. A connection the server closes (``connection_closed``,
#: Knot and PowerDNS on a DSO message) is an answer. deploy/prometheus/alerts.yml
#: (``dnsgap:pair_reached``) and the status page use this list.
UNREACHED: frozenset[Cause] = frozenset({
    Cause.NO_RESPONSE, Cause.CONNECTION_REFUSED, Cause.CONNECTION_RESET,
    Cause.NETWORK_ERROR, Cause.TLS_ERROR, Cause.QUIC_HANDSHAKE_TIMEOUT,
})  # fmt: skip


#: What the cause means and what the operator can do about it.
REMEDIATION: Mapping[Cause, str] = {
    Cause.NONE: "The server handled the operation.",
    Cause.NOT_IMPLEMENTED: (
        "NOTIMP: the server does not implement this opcode or query kind. Verify the "
        "server supports the operation; enable zone transfers / dynamic updates in its "
        "config, or use server software that has it."
    ),
    Cause.REFUSED: (
        "REFUSED: the server implements the operation but policy forbids it for us "
        "(allow-transfer / allow-update / ACL). Add the prober's address to the ACL "
        "if it should be allowed."
    ),
    Cause.REFUSED_NON_RECURSIVE: (
        "REFUSED with RA set, to a query with RD clear: the server is a resolver that "
        "refuses non-recursive queries. Probe it with `rd: true` (the default for query "
        "probes; `dnsgap probe` without --no-rd), or point the probe at an authoritative "
        "server if that is what you meant to test."
    ),
    Cause.NOT_AUTHORIZED: (
        "NOTAUTH: the server is not authoritative for the zone, or (with TSIG) the key "
        "is not authorized. Check the zone is loaded and the key is in the ACL."
    ),
    Cause.NOT_ZONE: "NOTZONE: a name in the request is outside the zone; check the probe's zone.",
    Cause.FORMAT_ERROR: (
        "FORMERR: the server could not parse the request (often an EDNS option or flag "
        "it does not handle). Compare with `dnsgap probe --json` and the server's logs."
    ),
    Cause.SERVER_FAILURE: "SERVFAIL: the server failed internally; see its logs.",
    Cause.BAD_VERSION: (
        "BADVERS: the server does not support this EDNS version (expected for version 1 "
        "on a compliant server: RFC 6891 §6.1.3)."
    ),
    Cause.BAD_SIGNATURE: "TSIG BADSIG: the key's secret does not match the server's.",
    Cause.BAD_KEY: "TSIG BADKEY: the server does not know this key name or algorithm.",
    Cause.BAD_TIME: "TSIG BADTIME: the clocks of prober and server differ too much.",
    Cause.BAD_COOKIE: "BADCOOKIE: the server rejected our DNS cookie (RFC 7873).",
    Cause.UNEXPECTED_RCODE: "The server answered with an rcode that does not fit the request.",
    Cause.NO_RESPONSE: (
        "Silence until the timeout: the server drops this kind of request (common for "
        "unassigned opcodes), or a firewall does."
    ),
    Cause.CONNECTION_CLOSED: (
        "The server closed the TCP connection without answering. To a DSO message this "
        "is how Knot and PowerDNS say they have no DSO (RFC 8490 asks for NOTIMP): upgrade "
        "to server software with DSO, or fall back to traditional DNS queries."
    ),
    Cause.CONNECTION_RESET: "The server reset the TCP connection.",
    Cause.CONNECTION_REFUSED: "Nothing listens on that address and port (or a firewall rejects).",
    Cause.TRUNCATED: "The UDP reply was truncated (TC) and not retried over TCP.",
    Cause.MISMATCHED_REPLY: (
        "The reply's ID, opcode or question differs from the request: the server "
        "answered something else (some answer UPDATE or unknown opcodes as QUERY)."
    ),
    Cause.MALFORMED: "The server sent bytes that are not a valid DNS/DSO message.",
    Cause.TLS_ERROR: (
        "The TLS handshake failed before any certificate was judged: the port does "
        "not speak TLS (plain DNS on it?), or client and server share no TLS version "
        "or cipher. Check the port and the server's TLS settings; the error says which."
    ),
    Cause.TLS_CERTIFICATE_INVALID: (
        "The server's certificate did not verify: expired, issued by a CA we do not "
        "trust, or not for this name. Renew or fix the certificate, or set `tls: "
        "{ca_file, server_name}` to the CA and name the server really uses."
    ),
    Cause.ALPN_NOT_OFFERED: (
        "The TLS handshake did not select the protocol we asked for by ALPN: `h2` for "
        "DoH (RFC 8484 §5.2 recommends HTTP/2), `doq` for DoQ (RFC 9250 §4.1). The port "
        "serves something else (DoT, HTTP/1.1 only, HTTP/3): enable HTTP/2 / DoQ on it "
        "or point the probe at the right port."
    ),
    Cause.HTTP_STATUS: (
        "The DoH server answered with an HTTP status other than 200 (`details.http_status`): "
        "404 usually means a wrong `path` (default /dns-query), 415 a media type it does "
        "not take, 400 a request it could not read, 5xx a failing backend."
    ),
    Cause.WRONG_CONTENT_TYPE: (
        "The DoH reply was not `application/dns-message` (RFC 8484 §6), often an HTML "
        "page from a web server or proxy in front of the resolver: check the path and "
        "what serves it."
    ),
    Cause.QUIC_HANDSHAKE_TIMEOUT: (
        "No QUIC handshake completed before the deadline: nothing speaks QUIC on that "
        "UDP port (DoQ's default is 853/udp, RFC 9250 §4.1.1), or a firewall drops UDP."
    ),
    Cause.QUIC_VERSION_MISMATCH: (
        "The server offered only QUIC versions we do not speak (Version Negotiation, "
        "RFC 9000 §6): it runs a draft or future QUIC; upgrade the server."
    ),
    Cause.STREAM_RESET: (
        "The server reset the stream of our query (HTTP/2 RST_STREAM, QUIC RESET_STREAM "
        "or STOP_SENDING; code in `details.stream_error`): it refused or gave up on the "
        "query, often from load or a limit on streams. See the server's logs."
    ),
    Cause.NETWORK_ERROR: "A network error prevented the exchange (unreachable, bad address).",
    Cause.DSO_NOT_IMPLEMENTED: (
        "The server does not implement DNS Stateful Operations at all (NOTIMP to a DSO "
        "message, RFC 8765 §6.2.2). Upgrade to server software with DSO, or fall back "
        "to traditional DNS queries."
    ),
    Cause.DSO_TYPE_NOT_IMPLEMENTED: (
        "DSOTYPENI: the server speaks DSO but not this TLV type. Both sides must "
        "support the same DSO type; upgrade the server or fall back to traditional "
        "DNS queries."
    ),
    Cause.DSO_ECHOED: (
        "The server echoed the DSO message back instead of processing it: it does not "
        "speak DSO. Fall back to traditional DNS queries."
    ),
    Cause.DSO_OVER_UDP: "DSO is only valid over a connection (RFC 8490 §5.1); this was UDP.",
    Cause.NOT_SENT: (
        "The request was not sent: not valid for this transport, or held back while the "
        "server's DSO Retry Delay runs (RFC 8490 §6.6.1; scheduled runs count that as "
        "skipped and keep the previous cause)."
    ),
}

_EVENT_CAUSES: Mapping[WireEvent, Cause] = {
    WireEvent.TIMEOUT: Cause.NO_RESPONSE,
    WireEvent.CLOSED: Cause.CONNECTION_CLOSED,
    WireEvent.RESET: Cause.CONNECTION_RESET,
    WireEvent.CONNECTION_REFUSED: Cause.CONNECTION_REFUSED,
    WireEvent.TRUNCATED: Cause.TRUNCATED,
    WireEvent.MISMATCHED: Cause.MISMATCHED_REPLY,
    WireEvent.MALFORMED: Cause.MALFORMED,
    WireEvent.TLS_ERROR: Cause.TLS_ERROR,
    WireEvent.CERT_INVALID: Cause.TLS_CERTIFICATE_INVALID,
    WireEvent.ALPN_MISMATCH: Cause.ALPN_NOT_OFFERED,
    WireEvent.HTTP_STATUS: Cause.HTTP_STATUS,
    WireEvent.CONTENT_TYPE: Cause.WRONG_CONTENT_TYPE,
    WireEvent.QUIC_HANDSHAKE_TIMEOUT: Cause.QUIC_HANDSHAKE_TIMEOUT,
    WireEvent.QUIC_VERSION_MISMATCH: Cause.QUIC_VERSION_MISMATCH,
    WireEvent.STREAM_RESET: Cause.STREAM_RESET,
    WireEvent.NETWORK_ERROR: Cause.NETWORK_ERROR,
    WireEvent.NOT_SENT: Cause.NOT_SENT,
}

#: Rcodes that say "this works" (or that the request was understood and
#: answered on its merits) for every probe kind.
_RCODE_CAUSES: Mapping[int, Cause] = {
    NOERROR: Cause.NONE,
    NXDOMAIN: Cause.NONE,
    FORMERR: Cause.FORMAT_ERROR,
    SERVFAIL: Cause.SERVER_FAILURE,
    NOTIMP: Cause.NOT_IMPLEMENTED,
    REFUSED: Cause.REFUSED,
    NOTAUTH: Cause.NOT_AUTHORIZED,
    NOTZONE: Cause.NOT_ZONE,
    BADVERS: Cause.BAD_VERSION,
    BADCOOKIE: Cause.BAD_COOKIE,
}

# RFC 2136 §3.2: a prerequisite failure shows UPDATE is implemented. Not that we may
# update: the requestor's permission is checked after the prerequisites (§3.3).
_UPDATE_PREREQ_RCODES = frozenset({NXDOMAIN, YXDOMAIN, YXRRSET, NXRRSET})

_TSIG_CAUSES: Mapping[int, Cause] = {
    BADSIG: Cause.BAD_SIGNATURE,
    BADKEY: Cause.BAD_KEY,
    BADTIME: Cause.BAD_TIME,
}


def classify(kind: ProbeKind, outcome: Outcome) -> Cause:
    """The cause of an outcome, for a probe of the given kind."""
    if outcome.event is not WireEvent.REPLY:
        return _EVENT_CAUSES[outcome.event]
    if outcome.tsig_error:
        return _TSIG_CAUSES.get(outcome.tsig_error, Cause.NOT_AUTHORIZED)
    rcode = outcome.rcode
    if rcode is None:  # pragma: no cover - a REPLY always carries an rcode
        return Cause.MALFORMED
    if kind.is_dso:
        return _classify_dso(outcome, rcode)
    if kind is ProbeKind.UPDATE and rcode in _UPDATE_PREREQ_RCODES:
        return Cause.NONE
    if kind is ProbeKind.QUERY and rcode == REFUSED and outcome.ra_to_rd_clear:
        # Unbound and Knot Resolver refuse RD=0 queries for data they would have to
        # recurse for (RA says they are resolvers): not an ACL matter.
        return Cause.REFUSED_NON_RECURSIVE
    if rcode == DSOTYPENI:
        return Cause.UNEXPECTED_RCODE
    return _RCODE_CAUSES.get(rcode, Cause.UNEXPECTED_RCODE)


def _classify_dso(outcome: Outcome, rcode: int) -> Cause:
    # RFC 8490 §5.1.1 / RFC 8765 §6.2.2: NOTIMP to a DSO message means "no DSO at all",
    # a different gap from DSOTYPENI (DSO spoken, this TLV type not).
    if rcode == NOTIMP:
        return Cause.DSO_NOT_IMPLEMENTED
    if rcode == DSOTYPENI:
        return Cause.DSO_TYPE_NOT_IMPLEMENTED
    if outcome.dso is not None and outcome.dso.echoed:
        return Cause.DSO_ECHOED
    if outcome.transport == "udp":
        # RFC 8490 §4.2: DSO does not apply to UDP, and no answer is prescribed; any
        # reply but NOTIMP (FORMERR, or an answer as if it were valid) says just that.
        return Cause.DSO_OVER_UDP
    if rcode == NXDOMAIN:
        return Cause.UNEXPECTED_RCODE
    return _RCODE_CAUSES.get(rcode, Cause.UNEXPECTED_RCODE)


#: Causes of a reply that is not the server's answer to this request: a reply to
#: something else (ID, opcode or question), bytes that are not DNS, our own DSO
#: message echoed back, DSO answered over UDP. Their rcode never meets an
#: expectation and never names the ``rcode`` label. (A TSIG error the server
#: reports is its answer; a reply failing our own TSIG check is ``malformed``.)
_NOT_ANSWERS = frozenset({Cause.MISMATCHED_REPLY, Cause.MALFORMED, Cause.DSO_ECHOED,
                          Cause.DSO_OVER_UDP})  # fmt: skip


def answer_rcode(outcome: Outcome, cause: Cause) -> int | None:
    """The rcode of the server's real answer to this request, or None when there is none."""
    if outcome.event is not WireEvent.REPLY or cause in _NOT_ANSWERS:
        return None
    return outcome.rcode


#: Rcodes a DNS header carries (with the OPT extension, RFC 6891 §6.1.3): the values
#: the ``rcode`` label names. 17-22 belong to the TSIG/TKEY error field (RFC 8945,
#: RFC 2930), never to a header; they and unassigned values share the label ``other``,
#: so a hostile server cannot mint thousands of series per pair.
_LABELLED_RCODES = frozenset({*range(NOERROR, DSOTYPENI + 1), BADVERS, BADCOOKIE})


def rcode_label(rcode: int | None) -> str:
    """The bounded ``rcode`` label value: a mnemonic, ``other`` or ``none`` (no answer)."""
    if rcode is None:
        return "none"
    return RCODE_NAMES[rcode] if rcode in _LABELLED_RCODES else "other"


#: Events each transport can end in without an answer (UDP adds TCP's when a
#: truncated reply is retried over TCP; see possible_gap_series).
_UDP_EVENTS = (WireEvent.TIMEOUT, WireEvent.CONNECTION_REFUSED, WireEvent.MISMATCHED,
               WireEvent.MALFORMED, WireEvent.NETWORK_ERROR)  # fmt: skip
_STREAM_EVENTS = (*_UDP_EVENTS, WireEvent.CLOSED, WireEvent.RESET)
#: What the encrypted transports add: handshake, certificate, HTTP/2 and QUIC failures.
_HANDSHAKE_EVENTS = (WireEvent.TLS_ERROR, WireEvent.CERT_INVALID)
_ENCRYPTED_EVENTS: Mapping[str, tuple[WireEvent, ...]] = {
    "tls": _HANDSHAKE_EVENTS,
    "doh": (*_HANDSHAKE_EVENTS, WireEvent.ALPN_MISMATCH, WireEvent.HTTP_STATUS,
            WireEvent.CONTENT_TYPE, WireEvent.STREAM_RESET),
    "doq": (*_HANDSHAKE_EVENTS, WireEvent.ALPN_MISMATCH, WireEvent.QUIC_HANDSHAKE_TIMEOUT,
            WireEvent.QUIC_VERSION_MISMATCH, WireEvent.STREAM_RESET),
}  # fmt: skip
#: One rcode outside the labelled ones, standing for every unassigned value.
_UNASSIGNED_RCODE = 4095


@functools.lru_cache(maxsize=256)
def possible_gap_series(kind: ProbeKind, transport: str, *, signed: bool = False,
                        tcp_fallback: bool = True,
                        sends_rd: bool = True) -> frozenset[tuple[str, Cause]]:  # fmt: skip
    """Every (``rcode`` label, cause) but ``none`` that a probe can report, pre-created
    at 0 so that ``increase()`` sees the very first occurrence.

    Derived from :func:`classify` itself, over every outcome the probe's transport
    can end in, so the two cannot drift apart.
    """
    if transport == "udp":
        events: tuple[WireEvent, ...] = _UDP_EVENTS
        if not kind.is_dso:
            events = _STREAM_EVENTS if tcp_fallback else (*_UDP_EVENTS, WireEvent.TRUNCATED)
    else:
        events = (*_STREAM_EVENTS, *_ENCRYPTED_EVENTS.get(transport, ()))
        if kind.is_dso:
            # held back during a Retry Delay; refused over DoH and DoQ
            events = (*events, WireEvent.NOT_SENT)
    outcomes = [Outcome(event, transport=transport) for event in events]
    for rcode in (*RCODE_NAMES, _UNASSIGNED_RCODE):
        outcomes.append(Outcome(WireEvent.REPLY, rcode, transport=transport))
        if kind.is_dso:
            outcomes.append(Outcome(WireEvent.REPLY, rcode, transport=transport,
                                    dso=DsoFacts(echoed=True)))  # fmt: skip
    if signed:
        # RFC 8945 §5.2: a server reports a TSIG error with rcode NOTAUTH.
        outcomes += [Outcome(WireEvent.REPLY, NOTAUTH, transport=transport, tsig_error=error)
                     for error in (BADSIG, BADKEY, BADTIME, 22)]  # fmt: skip
    if not sends_rd:
        outcomes.append(Outcome(WireEvent.REPLY, REFUSED, transport=transport,
                                ra_to_rd_clear=True))  # fmt: skip
    series = set()
    for outcome in outcomes:
        cause = classify(kind, outcome)
        if cause is not Cause.NONE:
            series.add((rcode_label(answer_rcode(outcome, cause)), cause))
    return frozenset(series)
