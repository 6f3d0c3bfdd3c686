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
    #: The TLS handshake or certificate verification failed.
    TLS_ERROR = "tls_error"
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


@dataclass(frozen=True, slots=True)
class Outcome:
    """The facts of one probe exchange.

    ``rcode`` is the full 12-bit rcode (the OPT extension folded in) when a DNS
    reply came, else ``None``. ``error`` says why there was no usable reply.
    """

    event: WireEvent
    rcode: int | None = None
    error: str | None = None
    #: The transport that carried the final exchange ("udp", "tcp", "tls").
    transport: str = "udp"
    #: Opcode of the reply, when it differs from the request it is recorded here.
    reply_opcode: int | None = None
    #: TSIG error field of a signed reply (RFC 8945: BADSIG 16, BADKEY 17, BADTIME 18).
    tsig_error: int | None = None
    #: Bytes read from the server for this probe (transfers are capped).
    bytes_received: int = 0
    dso: DsoFacts | None = None
    #: Free-form facts for the CLI's --json (kept small: never label values).
    details: dict[str, object] = field(default_factory=dict)
    #: Conformance checks the reply violates (:mod:`exporter.conformance` names).
    violations: tuple[str, ...] = ()

    @property
    def replied(self) -> bool:
        return self.event is WireEvent.REPLY
