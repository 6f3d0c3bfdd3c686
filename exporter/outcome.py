"""What happened on the wire when a probe ran: the typed facts, before any judgement.

Every transport and probe returns an :class:`Outcome`; nothing that a server can
do makes a probe raise. :mod:`exporter.causes` turns an outcome into a cause.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class WireEvent(enum.StrEnum):
    """How an exchange ended, as seen from our socket."""

    #: A DNS reply came back and matched our request (ID, opcode, question).
    REPLY = "reply"
    #: Nothing came back before the deadline.
    TIMEOUT = "timeout"
    #: The TCP/TLS peer closed the connection without a (complete) reply.
    CLOSED = "closed"
    #: The TCP/TLS peer reset the connection (RST).
    RESET = "reset"
    #: The connection was refused (TCP RST to SYN, ICMP port unreachable on UDP).
    CONNECTION_REFUSED = "connection_refused"
    #: A UDP reply had TC set and we did not (or could not) retry over TCP.
    TRUNCATED = "truncated"
    #: A reply came whose ID, opcode or question differs from the request.
    MISMATCHED = "mismatched"
    #: Bytes came back that are not a DNS message we can parse.
    MALFORMED = "malformed"
    #: The TLS (or QUIC crypto) handshake failed, for a reason other than the certificate.
    TLS_ERROR = "tls_error"
    #: The server's certificate did not verify (unknown CA, expired, wrong name).
    CERT_INVALID = "cert_invalid"
    #: The handshake did not select the protocol we offered by ALPN (h2 for DoH,
    #: doq for DoQ: RFC 8484 §5.2, RFC 9250 §4.1).
    ALPN_MISMATCH = "alpn_mismatch"
    #: A DoH server answered with an HTTP status other than 200 (RFC 8484 §4.2.1).
    HTTP_STATUS = "http_status"
    #: A DoH reply whose Content-Type is not application/dns-message (RFC 8484 §6).
    CONTENT_TYPE = "content_type"
    #: No QUIC handshake completed before the deadline (RFC 9000 §7).
    QUIC_HANDSHAKE_TIMEOUT = "quic_handshake_timeout"
    #: The server offered only QUIC versions we do not speak (RFC 9000 §6).
    QUIC_VERSION_MISMATCH = "quic_version_mismatch"
    #: The server reset the HTTP/2 or QUIC stream of our query (RST_STREAM,
    #: RESET_STREAM or STOP_SENDING).
    STREAM_RESET = "stream_reset"
    #: Any other socket-level failure (unreachable network, bad address).
    NETWORK_ERROR = "network_error"
    #: The request was not sent because it is not valid for the transport
    #: (a DSO message over UDP without the explicit opt-in, say).
    NOT_SENT = "not_sent"


@dataclass(frozen=True, slots=True)
class DsoFacts:
    """What a DSO exchange taught us about the server's session (RFC 8490)."""

    session_established: bool = False
    #: Timers the server granted, in seconds (Keepalive TLV in its reply, §7.1).
    inactivity_timeout: float | None = None
    keepalive_interval: float | None = None
    #: Retry Delay the server sent, in seconds (§7.2), with the rcode it came with.
    retry_delay: float | None = None
    retry_delay_rcode: int | None = None
    #: The DSO TLV type the probe asked for (for DSOTYPENI labelling).
    dso_type: int | None = None
    #: PUSH messages received during a SUBSCRIBE probe (RFC 8765).
    push_notifications: int = 0
    #: The reply echoed our request TLV back: the server copies, it does not speak DSO.
    echoed: bool = False
    #: Why the session ended, when it did during the probe (retry_delay, closed...).
    closed_reason: str | None = None
    #: Nothing was judged: the server's Retry Delay still held the target (RFC 8490
    #: §6.6.1), so the probe was not sent (or its session was ended by the Retry
    #: Delay before the answer). Scheduled runs count it as skipped, not as a cause.
    held_by_retry_delay: bool = False
    #: Nothing was judged: a config reload removed the target and closed its
    #: persistent session while the probe ran. The result is dropped, never recorded.
    target_removed: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """The facts of one probe exchange.

    ``rcode`` is the full 12-bit rcode (the OPT extension folded in) when a DNS
    reply came, else ``None``. ``error`` says why there was no usable reply.
    """

    event: WireEvent
    rcode: int | None = None
    error: str | None = None
    #: The transport that carried the final exchange ("udp", "tcp", "tls", "doh", "doq").
    transport: str = "udp"
    #: Opcode of the reply, when it differs from the request it is recorded here.
    reply_opcode: int | None = None
    #: TSIG error field of a signed reply (RFC 8945: BADSIG 16, BADKEY 17, BADTIME 18).
    tsig_error: int | None = None
    #: Bytes read from the server for this probe (transfers are capped).
    bytes_received: int = 0
    dso: DsoFacts | None = None
    #: Earliest notAfter (Unix time) of the certificate chain a DoT/DoH/DoQ server
    #: presented on the connection that carried the exchange.
    cert_not_after: float | None = None
    #: Free-form facts for the CLI's --json (kept small: never label values).
    details: dict[str, object] = field(default_factory=dict)
    #: Conformance checks the reply violates (:mod:`exporter.conformance` names).
    violations: tuple[str, ...] = ()
    #: A reply to a query that had RD clear, with RA set: a resolver may refuse
    #: non-recursive queries (see :func:`exporter.causes.classify`).
    ra_to_rd_clear: bool = False

    @property
    def replied(self) -> bool:
        return self.event is WireEvent.REPLY
