"""dnsgap's reference DNS server: faithful to RFC 8490 (DSO) and RFC 8765 (DNS
Push), with knobs that make it behave like the servers dnsgap meets in the wild.

Used by the tests and by ``dnsgap demo``. One asyncio server answers on UDP and
TCP on the same port (and optionally TLS on its own port)::

    server = await start(ServerBehaviour(dso="no_push", update="refused"))
    ...                                   # talk to 127.0.0.1:server.port
    await server.change_rrset("www.demo.example.", "A", ["192.0.2.99"])  # PUSHes
    await server.close()

Everything the server does is decided by :class:`ServerBehaviour`; counters in
:class:`ServerStats` let tests assert what happened on the server's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
import dns.update
import dns.wire
import dns.zone

from exporter.dso import (
    HEADER_LENGTH,
    INFINITE_MS,
    MIN_KEEPALIVE_INTERVAL_MS,
    DecodeProblem,
    DsoDecodeError,
    DsoMessage,
    DsoType,
    Keepalive,
    MessageKind,
    Padding,
    Push,
    PushRecord,
    RetryDelay,
    Subscribe,
    Unsubscribe,
    frame,
)
from exporter.tlsrecords import RecordTls

#: How the server answers one kind of classic operation.
#: ``implement``: real behaviour; ``notimp``/``refused``/``formerr``: that rcode;
#: ``drop``: silence; ``close``: close the TCP connection (silence on UDP).
OpAnswer = Literal["implement", "notimp", "refused", "drop", "close", "formerr"]

#: How the server treats DSO messages.
#: ``full``: Keepalive and DNS Push; ``no_push``: Keepalive, SUBSCRIBE gets
#: DSOTYPENI; ``none``: NOTIMP like a server without DSO; ``close``: closes the
#: connection; ``stall``: reads and never answers; ``echo``: sends the request
#: back with QR set and rcode 0, as a naive server does.
DsoMode = Literal["full", "no_push", "none", "close", "stall", "echo"]

DEFAULT_ZONE = "demo.example."
_DEFAULT_ZONE_TEXT = """\
$TTL 300
@    SOA  ns1 hostmaster 1 3600 600 86400 300
@    NS   ns1
ns1  A    127.0.0.1
www  A    192.0.2.10
www  AAAA 2001:db8::10
"""

_IXFR = dns.rdatatype.IXFR
_AXFR = dns.rdatatype.AXFR
_ANY = dns.rdatatype.ANY


@dataclass(frozen=True, slots=True)
class ServerBehaviour:
    """Everything that decides how the reference server answers."""

    zone: str = DEFAULT_ZONE
    #: Master-file text of the zone, relative to ``zone`` (None: a small default
    #: with SOA, NS, and A/AAAA records for ``ns1`` and ``www``).
    zone_text: str | None = None
    update: OpAnswer = "implement"
    ixfr: OpAnswer = "implement"
    axfr: OpAnswer = "implement"
    notify: OpAnswer = "implement"
    #: Opcodes 1-3 and 7-15 ("implement" answers NOTIMP, as RFC 1035 servers do).
    unknown_opcode: OpAnswer = "notimp"
    #: EDNS version 1 and up: "badvers" as RFC 6891 §6.1.3 says; "ignore" answers as
    #: if it were version 0, as Knot Resolver and dnsmasq do (docs/server-answers.md).
    edns_version: Literal["badvers", "ignore"] = "badvers"
    dso: DsoMode = "full"
    #: DSO over UDP. RFC 8490 §4.2 only says DSO does not apply to UDP and
    #: prescribes no answer: "formerr" answers FORMERR, "drop" stays silent.
    dso_udp: Literal["formerr", "drop"] = "formerr"
    #: Timers granted in Keepalive responses (RFC 8490 §7.1), in ms.
    inactivity_timeout_ms: int = 15_000
    keepalive_interval_ms: int = 3_600_000
    #: The server aborts a session idle for max(this, 2 x inactivity timeout)
    #: (RFC 8490 §6.4.1 says five seconds; tests lower it to stay fast).
    delinquency_floor: float = 5.0
    #: Send a Retry Delay unidirectional message right after the session is
    #: established, then ignore the client and abort after ``retry_grace``
    #: (RFC 8490 §6.6.1, §7.2.1).
    retry_delay_ms: int | None = None
    retry_delay_rcode: int = 0
    retry_grace: float = 5.0
    #: After a successful SUBSCRIBE, PUSH the records that exist now.
    initial_push: bool = False
    #: Idle timeout of a connection without DSO session (RFC 7766 §6.2.3).
    tcp_idle_timeout: float = 10.0
    #: End an established session instead of answering a message that arrives
    #: after it has been idle this long (seconds): a server whose idle close
    #: fires just as the client's next request arrives. The race a client that
    #: reuses sessions must survive (issue 10 item 1).
    close_idle_on_arrival: float | None = None
    #: How that close ends the connection: TCP FIN, or RST when True.
    close_idle_forcibly: bool = False
    #: How the TLS listener reads. ``stream``: any framing. ``dnssd_proxy``: like
    #: Apple's dnssd-proxy, which reads a length prefix out of a TLS record and
    #: leaves the rest of that record unread until the next record arrives, so a
    #: message sent in one record with its length is answered only after the
    #: client's next message (issue 10 item 11).
    tls_reads: Literal["stream", "dnssd_proxy"] = "stream"

    def __post_init__(self) -> None:
        # RFC 8490 §6.5.2: a server MUST NOT grant an interval below ten seconds.
        if self.keepalive_interval_ms < MIN_KEEPALIVE_INTERVAL_MS:
            raise ValueError("keepalive_interval_ms must be at least 10000 (RFC 8490 §6.5.2)")
        if not 0 <= self.inactivity_timeout_ms <= INFINITE_MS:
            raise ValueError("inactivity_timeout_ms must fit 32 bits")


@dataclass(slots=True)
class ServerStats:
    """What the server saw; tests read these."""

    udp_messages: int = 0
    tcp_messages: int = 0
    connections: int = 0
    dso_messages: int = 0
    dso_sessions: int = 0
    subscriptions: int = 0
    unsubscribes: int = 0
    reconfirms: int = 0
    pushes_sent: int = 0
    retry_delays_sent: int = 0
    #: Connections the server closed or aborted, with the reason (in order).
    closes: list[str] = field(default_factory=list)

    @property
    def messages_received(self) -> int:
        return self.udp_messages + self.tcp_messages


# --- classic DNS ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Reply:
    """What to do with one request: send these messages, and/or close."""

    messages: tuple[bytes, ...] = ()
    close: bool = False


_SILENCE = _Reply()
_CLOSE = _Reply(close=True)


def _error_reply(wire: bytes, rcode: int) -> bytes:
    """A header (and question, when it parses) answer with ``rcode``, for any
    opcode: dnspython cannot build responses to opcodes it does not know."""
    msg_id, flags = struct.unpack_from("!HH", wire)
    # Keep opcode and RD, set QR, clear everything else (RFC 1035 §4.1.1).
    out_flags = 0x8000 | (flags & 0x7800) | (flags & 0x0100) | (rcode & 0xF)
    question = b""
    qdcount = struct.unpack_from("!H", wire, 4)[0] if len(wire) >= HEADER_LENGTH else 0
    if qdcount == 1:
        parser = dns.wire.Parser(wire, HEADER_LENGTH)
        with contextlib.suppress(dns.exception.DNSException, struct.error, ValueError):
            parser.get_name()
            parser.get_struct("!HH")
            question = wire[HEADER_LENGTH : parser.current]
    return struct.pack("!HHHHHH", msg_id, out_flags, 1 if question else 0, 0, 0, 0) + question


def _answer_with(action: OpAnswer, wire: bytes) -> _Reply | None:
    """The reply for a non-implementing action; None for "implement"."""
    if action == "implement":
        return None
    if action == "drop":
        return _SILENCE
    if action == "close":
        return _CLOSE
    rcode = {"notimp": dns.rcode.NOTIMP, "refused": dns.rcode.REFUSED}.get(
        action, dns.rcode.FORMERR
    )
    return _Reply((_error_reply(wire, rcode),))


class _Zone:
    """The in-memory zone and its change log for PUSH."""

    def __init__(self, behaviour: ServerBehaviour) -> None:
        self.origin = dns.name.from_text(behaviour.zone)
        text = behaviour.zone_text if behaviour.zone_text is not None else _DEFAULT_ZONE_TEXT
        self.zone = dns.zone.from_text(text, origin=self.origin, relativize=False)

    def contains(self, name: dns.name.Name) -> bool:
        return name.is_subdomain(self.origin)

    def soa(self) -> dns.rrset.RRset:
        return self.zone.find_rrset(self.origin, dns.rdatatype.SOA)

    def rrsets_at(self, name: dns.name.Name, rtype: int) -> list[dns.rrset.RRset]:
        node = self.zone.get_node(name)
        if node is None:
            return []
        out = []
        for rdataset in node.rdatasets:
            if rtype in (_ANY, rdataset.rdtype):
                out.append(_rrset(name, rdataset))
        return out

    def all_rrsets(self) -> list[dns.rrset.RRset]:
        """Every RRset, SOA first (the AXFR order, RFC 5936 §2.2)."""
        soa = self.soa()
        out = [soa]
        for name, node in sorted(self.zone.nodes.items()):
            for rdataset in node.rdatasets:
                if name == self.origin and rdataset.rdtype == dns.rdatatype.SOA:
                    continue
                out.append(_rrset(name, rdataset))
        return out

    def bump_serial(self) -> None:
        soa = self.soa()
        new = soa[0].replace(serial=(soa[0].serial + 1) % 2**32)
        rdataset = dns.rdataset.from_rdata(soa.ttl, new)
        self.zone.replace_rdataset(self.origin, rdataset)


def _rrset(name: dns.name.Name, rdataset: dns.rdataset.Rdataset) -> dns.rrset.RRset:
    return dns.rrset.from_rdata_list(name, rdataset.ttl, list(rdataset))


def _query_reply(zone: _Zone, query: dns.message.Message) -> dns.message.Message:
    response = dns.message.make_response(query)
    question = query.question[0]
    qname, qtype = question.name, question.rdtype
    if not zone.contains(qname) or question.rdclass != dns.rdataclass.IN:
        response.set_rcode(dns.rcode.REFUSED)
        return response
    response.flags |= dns.flags.AA
    rrsets = zone.rrsets_at(qname, qtype)
    if rrsets:
        response.answer.extend(rrsets)
        return response
    if zone.zone.get_node(qname) is None:
        response.set_rcode(dns.rcode.NXDOMAIN)
    response.authority.append(zone.soa())  # negative answer (RFC 2308 §3)
    return response


def _transfer_messages(zone: _Zone, query: dns.message.Message, tcp: bool) -> tuple[bytes, ...]:
    """A full-zone reply: SOA, every RRset, SOA. Over TCP one RRset per message
    so clients see a transfer spanning several messages (RFC 5936 §2.2)."""
    rrsets = [*zone.all_rrsets(), zone.soa()]
    if not tcp:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        response.answer.extend(rrsets)
        return (response.to_wire(max_size=65535),)
    out = []
    for rrset in rrsets:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        response.answer.append(rrset)
        out.append(response.to_wire())
    return tuple(out)


def _update_reply(zone: _Zone, update: dns.message.Message) -> dns.message.Message:
    """RFC 2136 §3.1-3.2: zone check, then prerequisites. Nothing is ever changed:
    an UPDATE whose prerequisites hold is REFUSED (the zone changes only through
    :meth:`RunningServer.change_rrset`)."""
    response = dns.message.make_response(update)
    if len(update.question) != 1 or update.question[0].rdtype != dns.rdatatype.SOA:
        response.set_rcode(dns.rcode.FORMERR)
        return response
    if update.question[0].name != zone.origin:
        response.set_rcode(dns.rcode.NOTAUTH)
        return response
    response.set_rcode(_check_prerequisites(zone, update.answer))
    if response.rcode() == dns.rcode.NOERROR:
        response.set_rcode(dns.rcode.REFUSED)
    return response


def _check_prerequisites(zone: _Zone, prereqs: Iterable[dns.rrset.RRset]) -> dns.rcode.Rcode:
    for rrset in prereqs:
        if not zone.contains(rrset.name):
            return dns.rcode.NOTZONE
        if rrset.ttl != 0:
            return dns.rcode.FORMERR
        node = zone.zone.get_node(rrset.name)
        existing = zone.rrsets_at(rrset.name, rrset.rdtype)
        if rrset.deleting == dns.rdataclass.ANY:  # "name is in use" / "RRset exists"
            if len(rrset):
                return dns.rcode.FORMERR
            if rrset.rdtype == _ANY and node is None:
                return dns.rcode.NXDOMAIN
            if rrset.rdtype != _ANY and not existing:
                return dns.rcode.NXRRSET
        elif rrset.deleting == dns.rdataclass.NONE:  # "not in use" / "does not exist"
            if len(rrset):
                return dns.rcode.FORMERR
            if rrset.rdtype == _ANY and node is not None:
                return dns.rcode.YXDOMAIN
            if rrset.rdtype != _ANY and existing:
                return dns.rcode.YXRRSET
        elif rrset.rdclass == dns.rdataclass.IN:  # value-dependent "RRset exists"
            if not existing or set(existing[0]) != set(rrset):
                return dns.rcode.NXRRSET
        else:
            return dns.rcode.FORMERR
    return dns.rcode.NOERROR


def _edns_reply(query: dns.message.Message) -> dns.message.Message | None:
    """BADVERS for EDNS version > 0 (RFC 6891 §6.1.3). Unknown options are
    ignored and unknown flags cleared simply by not echoing them."""
    if query.edns > 0:
        response = dns.message.make_response(query)
        response.use_edns(0, 0, 1232)
        response.set_rcode(dns.rcode.BADVERS)
        return response
    return None


def classic_reply(behaviour: ServerBehaviour, zone: _Zone, wire: bytes, tcp: bool) -> _Reply:
    """The reply to a non-DSO DNS message (``wire`` has at least a header)."""
    opcode = (struct.unpack_from("!H", wire, 2)[0] >> 11) & 0xF
    if opcode == dns.opcode.UPDATE:
        action = behaviour.update
    elif opcode == dns.opcode.NOTIFY:
        action = behaviour.notify
    elif opcode != dns.opcode.QUERY:
        return _answer_with(behaviour.unknown_opcode, wire) or _Reply(
            (_error_reply(wire, dns.rcode.NOTIMP),)
        )
    else:
        action = "implement"
    try:
        msg = dns.message.from_wire(wire)
    except dns.message.UnknownTSIGKey:
        return _Reply((_error_reply(wire, dns.rcode.NOTAUTH),))
    except (dns.exception.DNSException, ValueError, struct.error, IndexError):
        return _Reply((_error_reply(wire, dns.rcode.FORMERR),))
    if msg.flags & dns.flags.QR:
        return _SILENCE  # never answer a response
    if opcode == dns.opcode.QUERY and len(msg.question) == 1:
        qtype = msg.question[0].rdtype
        if qtype == _AXFR:
            action = behaviour.axfr
        elif qtype == _IXFR:
            action = behaviour.ixfr
    fixed = _answer_with(action, wire)
    if fixed is not None:
        return fixed
    badvers = _edns_reply(msg) if behaviour.edns_version == "badvers" else None
    if badvers is not None:
        return _Reply((badvers.to_wire(),))
    if len(msg.question) != 1:
        return _Reply((_error_reply(wire, dns.rcode.FORMERR),))
    if opcode == dns.opcode.UPDATE:
        return _Reply((_update_reply(zone, msg).to_wire(),))
    if opcode == dns.opcode.NOTIFY:
        response = dns.message.make_response(msg)
        response.flags |= dns.flags.AA
        return _Reply((response.to_wire(),))
    qtype = msg.question[0].rdtype
    if qtype in (_AXFR, _IXFR):
        if msg.question[0].name != zone.origin:
            return _Reply((_error_reply(wire, dns.rcode.NOTAUTH),))
        if qtype == _AXFR and not tcp:  # RFC 5936 §4.2: AXFR only over TCP
            return _Reply((_error_reply(wire, dns.rcode.FORMERR),))
        # IXFR answered AXFR-style: allowed by RFC 1995 §4.
        return _Reply(_transfer_messages(zone, msg, tcp))
    max_size = 65535 if tcp else max(512, msg.payload if msg.edns >= 0 else 512)
    return _Reply((_query_reply(zone, msg).to_wire(max_size=max_size),))


def _echo(wire: bytes) -> bytes:
    """What a naive server does with a message it does not understand: send it
    back with QR set and rcode 0."""
    echoed = bytearray(wire)
    echoed[2] |= 0x80
    echoed[3] &= 0xF0
    return bytes(echoed)


def _has_tcp_keepalive(wire: bytes) -> bool:
    try:
        msg = dns.message.from_wire(wire)
    except (dns.exception.DNSException, ValueError, struct.error, IndexError):
        return False
    return any(option.otype == dns.edns.OptionType.KEEPALIVE for option in msg.options)


# --- DSO sessions -----------------------------------------------------------------


@dataclass(slots=True)
class _Subscription:
    name: dns.name.Name
    rtype: int
    rclass: int

    def matches(self, name: dns.name.Name, rtype: int) -> bool:
        return name == self.name and self.rtype in (_ANY, rtype)


class _Writer(Protocol):
    """What a connection writes with: an asyncio StreamWriter, or the TLS-record
    writer of the dnssd-proxy mode (:mod:`exporter.tlsrecords`)."""

    @property
    def transport(self) -> asyncio.WriteTransport: ...

    def write(self, data: bytes) -> None: ...

    def is_closing(self) -> bool: ...

    def close(self) -> None: ...

    async def drain(self) -> None: ...

    def get_extra_info(self, name: str, default: Any = None) -> Any: ...


class _Connection:
    """One TCP/TLS connection and its DSO session state."""

    def __init__(self, server: RunningServer, writer: _Writer) -> None:
        self.server = server
        self.writer = writer
        self.behaviour = server.behaviour
        self.established = False
        self.shutting_down_at: float | None = None  # Retry Delay sent
        self.subscriptions: dict[int, _Subscription] = {}
        now = time.monotonic()
        self.last_activity = now  # any message but Keepalive (RFC 8490 §6.3)
        self.last_message = now  # any message (keepalive timer)
        self.inactivity_ms = self.behaviour.inactivity_timeout_ms
        self.interval_ms = self.behaviour.keepalive_interval_ms
        self.closed = False

    # Timers (RFC 8490 §6.4.1, §6.5.1, §6.6.1) -------------------------------

    def deadline(self) -> tuple[float, str, bool]:
        """When the server ends this connection, why, and whether forcibly."""
        b = self.behaviour
        if self.shutting_down_at is not None:
            return self.shutting_down_at + b.retry_grace, "retry_delay_grace", True
        if not self.established:
            return self.last_message + b.tcp_idle_timeout, "idle", False
        deadlines: list[tuple[float, str, bool]] = []
        if not self.subscriptions and self.inactivity_ms != INFINITE_MS:
            limit = max(b.delinquency_floor, 2 * self.inactivity_ms / 1000)
            deadlines.append((self.last_activity + limit, "inactivity", True))
        if self.interval_ms != INFINITE_MS:
            deadlines.append((self.last_message + 2 * self.interval_ms / 1000, "keepalive", True))
        if not deadlines:
            return float("inf"), "", False
        return min(deadlines)

    async def watchdog(self) -> None:
        while not self.closed:
            when, reason, forcibly = self.deadline()
            now = time.monotonic()
            if now >= when:
                self.end(reason, forcibly=forcibly)
                return
            await asyncio.sleep(min(when - now, 0.5))

    def end(self, reason: str, *, forcibly: bool) -> None:
        if self.closed:
            return
        self.closed = True
        self.server.stats.closes.append(reason)
        self.server.connections.discard(self)
        if forcibly:  # RFC 8490 §5.3: "forcibly abort" means TCP RST
            sock = self.writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.writer.transport.abort()
        else:
            self.writer.close()

    def send(self, wire: bytes) -> None:
        if not self.closed and not self.writer.is_closing():
            self.writer.write(frame(wire))

    # Messages -----------------------------------------------------------------

    def handle(self, wire: bytes) -> None:
        now = time.monotonic()
        idle_limit = self.behaviour.close_idle_on_arrival
        if self.established and idle_limit is not None and now - self.last_message >= idle_limit:
            self.end("idle_on_arrival", forcibly=self.behaviour.close_idle_forcibly)
            return
        self.last_message = now
        if self.shutting_down_at is not None:
            return  # RFC 8490 §6.6.1.1: ignore everything after Retry Delay
        if len(wire) < HEADER_LENGTH:
            self.end("short_message", forcibly=True)
            return
        opcode = (struct.unpack_from("!H", wire, 2)[0] >> 11) & 0xF
        if opcode == 6:
            self.server.stats.dso_messages += 1
            self.handle_dso(wire, now)
            return
        self.last_activity = now
        if self.established and _has_tcp_keepalive(wire):
            # RFC 8490 §7.1.2: edns-tcp-keepalive inside a DSO session is fatal.
            self.fatal("edns_tcp_keepalive_in_session")
            return
        reply = classic_reply(self.behaviour, self.server.zone, wire, tcp=True)
        for message in reply.messages:
            self.send(message)
        if reply.close:
            self.end("close_on_request", forcibly=False)

    def handle_dso(self, wire: bytes, now: float) -> None:
        mode = self.behaviour.dso
        if mode == "none":
            self.send(_error_reply(wire, dns.rcode.NOTIMP))
            return
        if mode == "close":
            self.end("dso_close", forcibly=False)
            return
        if mode == "stall":
            return
        if mode == "echo":
            self.send(_echo(wire))
            return
        try:
            msg = DsoMessage.from_wire(wire)
        except DsoDecodeError as exc:
            if exc.problem is DecodeProblem.NONZERO_COUNTS and exc.msg_id:
                self.send(DsoMessage(exc.msg_id, True, dns.rcode.FORMERR).to_wire())
                return
            self.end(f"dso_parse_error:{exc.problem.value}", forcibly=True)  # §5.5.3
            return
        self.handle_dso_message(msg, now)

    def fatal(self, reason: str) -> None:
        self.end(reason, forcibly=True)

    def handle_dso_message(self, msg: DsoMessage, now: float) -> None:
        kind = msg.kind
        if kind in (MessageKind.RESPONSE, MessageKind.INVALID):
            # We never send DSO requests, so no response can match (§5.5.2).
            self.fatal("dso_unexpected_response")
            return
        primary = msg.primary
        request = kind is MessageKind.REQUEST
        if primary is None:  # §5.4.2: requests carry at least one TLV
            if request:
                self.send(msg.response(dns.rcode.FORMERR).to_wire())
            else:
                self.fatal("dso_no_tlv")
            return
        if not isinstance(primary, Keepalive):
            self.last_activity = now  # Keepalive resets only the keepalive timer (§6.3)
        padding = (Padding.zeros(0),) if msg.find(Padding) is not None else ()
        ptype = int(primary.tlv_type)
        if ptype == DsoType.KEEPALIVE:
            assert isinstance(primary, Keepalive)
            if not request:  # §7.1: a client Keepalive must be a request
                self.fatal("dso_keepalive_id_zero")
                return
            granted = Keepalive(self.inactivity_ms, self.interval_ms)
            self.send(msg.response(0, (granted, *padding)).to_wire())
            self.session_established()
            return
        if ptype == DsoType.RETRY_DELAY:  # §7.2.1: never from a client
            self.fatal("dso_retry_delay_from_client")
            return
        if ptype in (DsoType.UNSUBSCRIBE, DsoType.RECONFIRM, DsoType.PUSH):
            self.handle_unidirectional(msg, ptype, request)
            return
        if ptype == DsoType.SUBSCRIBE and self.behaviour.dso == "full":
            assert isinstance(primary, Subscribe)
            if not request:  # §5.4.1: a SUBSCRIBE needs an acknowledgement
                self.fatal("dso_subscribe_id_zero")
                return
            self.subscribe(msg.msg_id, primary, padding)
            return
        # Unknown primary type, Padding as primary, SUBSCRIBE without Push: §5.4.5.
        if request:
            self.send(msg.response(dns.rcode.DSOTYPENI, padding).to_wire())
        else:
            self.fatal("dso_unknown_unidirectional")

    def handle_unidirectional(self, msg: DsoMessage, ptype: int, request: bool) -> None:
        if request:  # §5.4.1: an ack cannot be requested for a unidirectional type
            self.fatal("dso_unidirectional_with_id")
            return
        # RFC 8765: these need a session and a Push-capable server; PUSH is server-only.
        if self.behaviour.dso != "full" or not self.established or ptype == DsoType.PUSH:
            self.fatal("dso_unexpected_unidirectional")
            return
        if ptype == DsoType.UNSUBSCRIBE:
            primary = msg.primary
            assert isinstance(primary, Unsubscribe)
            if self.subscriptions.pop(primary.message_id, None) is not None:
                self.server.stats.unsubscribes += 1
            return
        self.server.stats.reconfirms += 1

    def subscribe(self, msg_id: int, tlv: Subscribe, padding: tuple[Padding, ...]) -> None:
        zone = self.server.zone
        if msg_id in self.subscriptions:  # §5.5.2: an ID still in use
            self.fatal("dso_subscribe_id_in_use")
            return
        if tlv.rclass != dns.rdataclass.IN:
            rcode = dns.rcode.REFUSED
        elif not zone.contains(tlv.name):
            rcode = dns.rcode.NOTAUTH  # RFC 8765 §6.2.2
        else:
            rcode = dns.rcode.NOERROR
        self.send(DsoMessage(msg_id, True, rcode, padding).to_wire())
        if rcode != dns.rcode.NOERROR:
            return
        sub = _Subscription(tlv.name, tlv.rtype, tlv.rclass)
        self.subscriptions[msg_id] = sub
        self.server.stats.subscriptions += 1
        self.session_established()
        if self.behaviour.initial_push and self.shutting_down_at is None:
            records = [
                PushRecord.add(rrset.name, rdata, rrset.ttl)
                for rrset in zone.rrsets_at(tlv.name, tlv.rtype)
                for rdata in rrset
            ]
            if records:
                self.push(records)

    def session_established(self) -> None:
        if self.established:
            return
        self.established = True
        self.server.stats.dso_sessions += 1
        delay = self.behaviour.retry_delay_ms
        if delay is not None:
            retry = DsoMessage(0, False, self.behaviour.retry_delay_rcode, (RetryDelay(delay),))
            self.send(retry.to_wire())
            self.server.stats.retry_delays_sent += 1
            self.shutting_down_at = time.monotonic()

    def push(self, records: Sequence[PushRecord]) -> None:
        self.send(DsoMessage(0, tlvs=(Push(tuple(records)),)).to_wire())
        self.server.stats.pushes_sent += 1


# --- the server ---------------------------------------------------------------------


async def _framed_messages(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """Length-prefixed messages off a stream (RFC 1035 §4.2.2)."""
    while True:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
        yield await reader.readexactly(length)


async def _dnssd_proxy_messages(tls: RecordTls) -> AsyncIterator[bytes]:
    """Messages as Apple's dnssd-proxy reads them over TLS.

    Each incoming TLS record is one "socket readable" event. On an event it
    reads a length prefix and then waits for the next event; a message whose
    length came on an earlier event is read at once, and then the next length.
    What a record holds beyond a length stays buffered in TLS, unseen until the
    next record: a message that shares a record with its length is answered only
    after the client's next message. A length in a record of its own works.
    """
    buffered = b""
    length: int | None = None
    while True:
        buffered += await tls.read_record()
        while True:
            if length is None:
                if len(buffered) >= 2:
                    (length,) = struct.unpack_from("!H", buffered)
                    buffered = buffered[2:]
                break  # back to the event loop after reading a length
            if len(buffered) < length:
                break
            wire, buffered, length = buffered[:length], buffered[length:], None
            yield wire


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.server.stats.udp_messages += 1
        if len(data) < HEADER_LENGTH or self.transport is None:
            return
        reply = self.server.udp_reply(data)
        for message in reply:
            self.transport.sendto(message, addr)


class RunningServer:
    """A started reference server. Use :func:`start` to make one."""

    def __init__(self, behaviour: ServerBehaviour, host: str) -> None:
        self.behaviour = behaviour
        self.host = host
        self.port = 0
        #: TLS port when started with an SSL context, else None.
        self.tls_port: int | None = None
        self.stats = ServerStats()
        self.zone = _Zone(behaviour)
        self.connections: set[_Connection] = set()
        self._servers: list[asyncio.Server] = []
        self._udp: asyncio.DatagramTransport | None = None

    async def __aenter__(self) -> RunningServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def udp_reply(self, wire: bytes) -> tuple[bytes, ...]:
        opcode = (struct.unpack_from("!H", wire, 2)[0] >> 11) & 0xF
        if opcode == 6:
            mode = self.behaviour.dso
            if mode == "none":
                return (_error_reply(wire, dns.rcode.NOTIMP),)
            if mode == "echo":
                return (_echo(wire),)
            if mode in ("stall", "close") or self.behaviour.dso_udp == "drop":
                return ()
            return (_error_reply(wire, dns.rcode.FORMERR),)
        return classic_reply(self.behaviour, self.zone, wire, tcp=False).messages

    async def _serve_stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await self._serve(writer, _framed_messages(reader))

    async def _serve_tls_by_record(self, context: ssl.SSLContext, reader: asyncio.StreamReader,
                                   raw: asyncio.StreamWriter) -> None:  # fmt: skip
        tls = RecordTls(context, reader, raw)
        try:
            async with asyncio.timeout(10.0):
                await tls.handshake()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ssl.SSLError,
                OSError):  # fmt: skip
            raw.close()
            return
        await self._serve(tls.writer(), _dnssd_proxy_messages(tls))

    async def _serve(self, writer: _Writer, messages: AsyncIterator[bytes]) -> None:
        self.stats.connections += 1
        conn = _Connection(self, writer)
        self.connections.add(conn)
        watchdog = asyncio.create_task(conn.watchdog())
        try:
            async for wire in messages:
                self.stats.tcp_messages += 1
                conn.handle(wire)
                if conn.closed:
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            watchdog.cancel()
            if not conn.closed:
                conn.closed = True
                self.connections.discard(conn)
                writer.close()

    async def _listen(self, port: int, ssl_context: ssl.SSLContext | None) -> None:
        # TCP first (port 0 picks a free one), then UDP on the same number.
        for _ in range(20):
            tcp = await asyncio.start_server(
                self._serve_stream, self.host, port, reuse_address=True
            )
            chosen = tcp.sockets[0].getsockname()[1]
            try:
                loop = asyncio.get_running_loop()
                self._udp, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpProtocol(self), local_addr=(self.host, chosen)
                )
            except OSError:
                tcp.close()
                await tcp.wait_closed()
                if port:
                    raise
                continue
            self.port = chosen
            self._servers.append(tcp)
            break
        else:  # pragma: no cover - twenty busy UDP ports in a row
            raise OSError("no port free for both TCP and UDP")
        if ssl_context is not None and self.behaviour.tls_reads == "dnssd_proxy":
            tls = await asyncio.start_server(
                functools.partial(self._serve_tls_by_record, ssl_context), self.host, 0
            )
            self.tls_port = tls.sockets[0].getsockname()[1]
            self._servers.append(tls)
        elif ssl_context is not None:
            tls = await asyncio.start_server(self._serve_stream, self.host, 0, ssl=ssl_context)
            self.tls_port = tls.sockets[0].getsockname()[1]
            self._servers.append(tls)

    async def change_rrset(
        self, name: str | dns.name.Name, rdtype: str | int, rdatas: Sequence[str], ttl: int = 300
    ) -> int:
        """Replace (or with no ``rdatas``, delete) an RRset in the zone, bump the
        SOA serial, and PUSH the change to every matching subscription
        (RFC 8765 §6.3). Returns how many PUSH messages were sent."""
        owner = name if isinstance(name, dns.name.Name) else dns.name.from_text(name)
        rtype = dns.rdatatype.RdataType.make(rdtype)
        if not self.zone.contains(owner):
            raise ValueError(f"{owner} is outside the zone {self.zone.origin}")
        new = [dns.rdata.from_text(dns.rdataclass.IN, rtype, text) for text in rdatas]
        if new:
            rdataset = dns.rdataset.from_rdata_list(ttl, new)
            self.zone.zone.replace_rdataset(owner, rdataset)
        else:
            self.zone.zone.delete_rdataset(owner, rtype)
        self.zone.bump_serial()
        records = [PushRecord.remove_rrset(owner, rtype)]
        records += [PushRecord.add(owner, rdata, ttl) for rdata in new]
        sent = 0
        for conn in list(self.connections):
            if conn.shutting_down_at is not None or conn.closed:
                continue
            if any(sub.matches(owner, rtype) for sub in conn.subscriptions.values()):
                conn.push(records)
                sent += 1
                with contextlib.suppress(ConnectionError):
                    await conn.writer.drain()
        return sent

    async def send_keepalive(self, inactivity_ms: int, interval_ms: int) -> int:
        """Tell every established session new timers with a server-initiated
        Keepalive (unidirectional, RFC 8490 §7.1). Returns how many were sent."""
        if interval_ms < MIN_KEEPALIVE_INTERVAL_MS:
            raise ValueError("a server MUST NOT send an interval below 10 s (RFC 8490 §6.5.2)")
        sent = 0
        for conn in list(self.connections):
            if conn.established and conn.shutting_down_at is None and not conn.closed:
                conn.inactivity_ms, conn.interval_ms = inactivity_ms, interval_ms
                conn.send(DsoMessage(0, tlvs=(Keepalive(inactivity_ms, interval_ms),)).to_wire())
                sent += 1
                with contextlib.suppress(ConnectionError):
                    await conn.writer.drain()
        return sent

    async def close(self) -> None:
        for conn in list(self.connections):
            conn.end("server_close", forcibly=False)
        for server in self._servers:
            server.close()
        if self._udp is not None:
            self._udp.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)
        self._servers.clear()


async def start(
    behaviour: ServerBehaviour | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
) -> RunningServer:
    """Start a reference server on ``host``: UDP and TCP on ``port`` (0: a free
    one, see ``.port``), TLS on ``.tls_port`` when ``ssl_context`` is given."""
    server = RunningServer(behaviour or ServerBehaviour(), host)
    await server._listen(port, ssl_context)
    return server
