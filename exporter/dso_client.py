"""The client side of DSO (RFC 8490) and DNS Push (RFC 8765): probes and sessions.

:func:`run_dso_probe` runs one DSO probe kind and returns an :class:`Outcome`;
nothing a server does makes it raise. A :class:`DsoConnection` owns one TCP/TLS
connection: a reader task dispatches every message the server sends (responses
to our pending requests, Keepalive updates, Retry Delay, PUSH), so unsolicited
traffic is handled the same way whether we wait for a response or not.

A :class:`DsoSessionPool` keeps one connection per target open across probes
(``dso.persistent``), keeps it alive on the server-granted interval and closes
it on the inactivity timeout, as RFC 8490 §6.2-§6.5 ask of a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import secrets
import ssl
import struct
from collections.abc import Callable

from exporter import certs
from exporter import transport as tx
from exporter.config import ProbeSpec, Target, Transport
from exporter.dso import (
    DSO_OPCODE,
    HEADER_LENGTH,
    INFINITE_MS,
    DsoDecodeError,
    DsoMessage,
    DsoType,
    Keepalive,
    MessageKind,
    Padding,
    Push,
    RetryDelay,
    Subscribe,
    Tlv,
    UnknownTlv,
    Unsubscribe,
)
from exporter.kinds import ProbeKind
from exporter.outcome import DsoFacts, Outcome, WireEvent

log = logging.getLogger(__name__)

NOERROR, FORMERR, DSOTYPENI = 0, 1, 11

#: Unsolicited messages (and bytes) one probe accepts before it calls the server
#: a flood: the deadline alone would let a server keep us busy parsing.
MAX_UNSOLICITED = 1000
MAX_PROBE_BYTES = 1 << 20
#: After the last response, how long a one-shot probe keeps reading for a Retry
#: Delay or Keepalive update sent right behind it (servers send both at once).
SETTLE_SECONDS = 0.05
#: Value bytes of the TLVs we make up (``dso_tlv`` and the echo check).
_PROBE_VALUE = b"dnsgap"
#: An unassigned type outside 0xF800-0xFBFF, for the echo check.
_UNASSIGNED_TYPE = 0xF7FF
#: Floor for timers a server grants, so a zero interval cannot make us spin.
_MIN_TIMER_SECONDS = 1.0

_UDP_ONLY_ERROR = "DSO is only valid over TCP/TLS (RFC 8490 §5.1)"

SessionClosedCallback = Callable[[str, str], None]

#: ``DsoFacts.closed_reason`` for a session the server (or the network) ended.
_END_REASONS = {WireEvent.CLOSED: "server_closed", WireEvent.RESET: "reset",
                WireEvent.TLS_ERROR: "tls_error"}  # fmt: skip
_SERVER_ENDS = frozenset({"server_closed", "reset", "retry_delay"})


# --- pure helpers ---------------------------------------------------------------------


def seconds_to_ms(seconds: float) -> int:
    """A timer for a Keepalive TLV; infinity (or anything too big) is INFINITE_MS."""
    if math.isinf(seconds) or seconds * 1000 >= INFINITE_MS:
        return INFINITE_MS
    return max(0, round(seconds * 1000))


def ms_to_seconds(ms: int) -> float:
    return math.inf if ms == INFINITE_MS else ms / 1000


def padding_for(unpadded_length: int, block: int) -> Padding:
    """An Encryption Padding TLV that makes the message a multiple of ``block``
    bytes (RFC 8490 §7.3, block padding as in RFC 8467); the 4-byte TLV header
    is counted in ``unpadded_length`` by the caller."""
    if block <= 1:
        return Padding.zeros(0)
    return Padding.zeros(-unpadded_length % block)


def dso_type_of(spec: ProbeSpec) -> int:
    """The DSO type a probe asks about, for ``DsoFacts.dso_type``."""
    if spec.kind is ProbeKind.DSO_TLV:
        return spec.dso.tlv_type
    if spec.kind is ProbeKind.DSO_PUSH_SUBSCRIBE:
        return int(DsoType.SUBSCRIBE)
    return int(DsoType.KEEPALIVE)


def keepalive_tlvs(spec: ProbeSpec) -> tuple[Tlv, ...]:
    """Our Keepalive request TLVs (RFC 8490 §7.1), padded for ``dso_padding``."""
    keepalive = Keepalive(seconds_to_ms(spec.dso.inactivity_timeout),
                          seconds_to_ms(spec.dso.keepalive_interval))  # fmt: skip
    if spec.kind is not ProbeKind.DSO_PADDING:
        return (keepalive,)
    unpadded = HEADER_LENGTH + 4 + 8 + 4
    return (keepalive, padding_for(unpadded, spec.dso.padding_block))


def parse_header(wire: bytes) -> tuple[int, int, int] | None:
    """(ID, flags, opcode) of a DNS message, or None when shorter than a header."""
    if len(wire) < HEADER_LENGTH:
        return None
    msg_id, flags = struct.unpack_from("!HH", wire)
    return msg_id, flags, (flags >> 11) & 0xF


def is_echo(request_wire: bytes, reply: DsoMessage, reply_wire: bytes) -> bool:
    """Our request came back: unchanged (QR still 0), or with QR set and the
    very TLV bytes we sent, which a DSO server never answers to a request."""
    if not reply.is_response:
        return True
    body = request_wire[HEADER_LENGTH:]
    return bool(body) and reply.rcode == NOERROR and reply_wire[HEADER_LENGTH:] == body


def judge_datagram(request_id: int, wire: bytes, transport: str) -> Outcome:
    """The outcome of a single reply message (the UDP path): same checks as a stream."""
    header = parse_header(wire)
    if header is None:
        return Outcome(WireEvent.MALFORMED, error=f"{len(wire)} bytes: not a DNS header",
                       transport=transport, bytes_received=len(wire))  # fmt: skip
    msg_id, flags, opcode = header
    if opcode != DSO_OPCODE:
        return Outcome(WireEvent.MISMATCHED, rcode=flags & 0xF, reply_opcode=opcode,
                       error=f"reply opcode {opcode}, not DSO", transport=transport,
                       bytes_received=len(wire))  # fmt: skip
    if msg_id != request_id:
        return Outcome(WireEvent.MISMATCHED, error=f"reply ID {msg_id} != {request_id}",
                       transport=transport, bytes_received=len(wire))  # fmt: skip
    try:
        reply = DsoMessage.from_wire(wire)
    except DsoDecodeError as exc:
        return Outcome(WireEvent.MALFORMED, error=str(exc), transport=transport,
                       bytes_received=len(wire))  # fmt: skip
    return Outcome(WireEvent.REPLY, rcode=reply.rcode, transport=transport,
                   bytes_received=len(wire))  # fmt: skip


# --- one connection -------------------------------------------------------------------

_Reply = tuple[DsoMessage, bytes]


class DsoConnection:
    """One DSO session over a TCP/TLS stream, with a reader task.

    Every way the session can end sets :attr:`failure` (what a pending request
    sees) and :attr:`closed_reason` once, and calls ``on_end(reason)``.
    """

    def __init__(self, stream: tx.StreamSession, *,
                 on_end: Callable[[str], None] | None = None,
                 max_unsolicited: int = MAX_UNSOLICITED,
                 max_bytes: int = MAX_PROBE_BYTES) -> None:  # fmt: skip
        self.stream = stream
        self.transport = stream.transport_name
        #: Earliest notAfter of the TLS peer's chain (None over TCP): the DoT gauge.
        self.cert_not_after = certs.ssl_chain_expiry(stream.writer.get_extra_info("ssl_object"))
        self.on_end = on_end
        self.max_unsolicited = max_unsolicited
        self.max_bytes = max_bytes
        self.established = False
        self.echoed = False
        self.inactivity_ms: int | None = None
        self.interval_ms: int | None = None
        self.retry_delay_ms: int | None = None
        self.retry_delay_rcode: int | None = None
        self.pushes = 0
        self.unsolicited = 0
        self.closed_reason: str | None = None
        self.failure: Outcome | None = None
        self.ended = asyncio.Event()
        self._byte_base = 0
        self._pending: dict[int, asyncio.Future[_Reply | Outcome]] = {}
        self._next_id = secrets.randbelow(0xFFFF) + 1
        loop = asyncio.get_running_loop()
        self.last_sent = loop.time()
        self.last_activity = loop.time()
        self._reader: asyncio.Task[None] | None = None

    # lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._reader = asyncio.create_task(self._read_loop())

    def new_probe(self) -> None:
        """Reset the per-probe caps, counters and facts (persistent sessions)."""
        self.unsolicited = 0
        self.pushes = 0
        # A Retry Delay in an earlier probe's error response (RFC 8490 §7.2.2) is
        # that probe's fact, not this one's.
        self.retry_delay_ms = self.retry_delay_rcode = None
        self._byte_base = self.stream.received

    @property
    def alive(self) -> bool:
        return not self.ended.is_set()

    def _end(self, reason: str, failure: Outcome, *, abort: bool = False) -> None:
        if self.ended.is_set():
            return
        self.closed_reason = reason
        self.failure = failure
        self.ended.set()
        for future in self._pending.values():
            if not future.done():
                future.set_result(failure)
        self._pending.clear()
        transport = self.stream.writer.transport
        if abort:  # RFC 8490 §5.3: a protocol error means forcibly abort
            transport.abort()
        else:
            self.stream.writer.close()
        if self.on_end is not None:
            self.on_end(reason)

    async def close(self, reason: str = "probe_done") -> None:
        """Close gracefully (TCP FIN) unless the session already ended."""
        self._end(reason, Outcome(WireEvent.CLOSED, error=f"session closed: {reason}",
                                  transport=self.transport))  # fmt: skip
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self.stream.close()

    def _fatal(self, event: WireEvent, error: str, *, reply_opcode: int | None = None,
               rcode: int | None = None) -> None:  # fmt: skip
        failure = Outcome(event, rcode=rcode, error=error, transport=self.transport,
                          reply_opcode=reply_opcode,
                          bytes_received=self.stream.received)  # fmt: skip
        self._end("protocol_error", failure, abort=True)

    # reading -------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            while self.alive:
                wire = await self.stream.read_message()
                self._dispatch(wire)
                if self.stream.received - self._byte_base > self.max_bytes:
                    self._fatal(
                        WireEvent.MALFORMED, f"more than {self.max_bytes} bytes in one probe"
                    )
                await asyncio.sleep(0)  # a flood must not starve the deadline
        except (OSError, EOFError, ssl.SSLError) as exc:
            outcome = tx.failure_outcome(exc, self.transport, self.stream.received)
            reason = _END_REASONS.get(outcome.event, "network_error")
            self._end(reason, outcome)

    def _dispatch(self, wire: bytes) -> None:
        header = parse_header(wire)
        if header is None:
            self._fatal(WireEvent.MALFORMED, f"{len(wire)}-byte message: not a DNS header")
            return
        msg_id, flags, opcode = header
        if opcode != DSO_OPCODE:
            # RFC 8490 §5.5: a response we cannot match is fatal to the session.
            self._fatal(WireEvent.MISMATCHED, f"reply opcode {opcode}, not DSO (ID {msg_id})",
                        reply_opcode=opcode, rcode=flags & 0xF)  # fmt: skip
            return
        try:
            msg = DsoMessage.from_wire(wire)
        except DsoDecodeError as exc:
            self._fatal(WireEvent.MALFORMED, str(exc))
            return
        future = self._pending.pop(msg_id, None) if msg_id else None
        if future is not None:
            if not future.done():
                future.set_result((msg, wire))
            return
        self.unsolicited += 1
        if self.unsolicited > self.max_unsolicited:
            self._fatal(
                WireEvent.MALFORMED, f"more than {self.max_unsolicited} unsolicited messages"
            )
            return
        if msg.kind is MessageKind.UNIDIRECTIONAL:
            self._unidirectional(msg)
        elif msg.kind is MessageKind.REQUEST:
            # §5.4.5: a request type we do not implement gets DSOTYPENI.
            self._send_nowait(msg.response(DSOTYPENI).to_wire())
        else:
            self._fatal(WireEvent.MISMATCHED, f"response ID {msg_id} matches no request of ours")

    def _unidirectional(self, msg: DsoMessage) -> None:
        primary = msg.primary
        if isinstance(primary, Keepalive):
            # §7.1.2: the server may change the timers at any time; we adopt them.
            self.inactivity_ms, self.interval_ms = primary.inactivity_ms, primary.interval_ms
        elif isinstance(primary, RetryDelay):
            self._retry_delay(primary, msg.rcode)
        elif isinstance(primary, Push):
            self.pushes += 1
        else:
            # §5.4.5: an unknown (or client-only) unidirectional type is fatal.
            what = "no TLV" if primary is None else f"primary TLV {int(primary.tlv_type):#06x}"
            self._fatal(WireEvent.MALFORMED, f"unidirectional message with {what}")

    def _retry_delay(self, tlv: RetryDelay, rcode: int) -> None:
        # §6.6.1.1 / §7.2.1: the client closes the session at once and stays away
        # for the delay; requests still pending get no answer.
        self.retry_delay_ms, self.retry_delay_rcode = tlv.delay_ms, rcode
        error = f"server sent Retry Delay {tlv.delay_ms} ms (RFC 8490 §7.2)"
        if rcode != NOERROR:
            failure = Outcome(WireEvent.REPLY, rcode=rcode, error=error, transport=self.transport)
        else:
            failure = Outcome(WireEvent.CLOSED, error=error, transport=self.transport)
        self._end("retry_delay", failure)

    # writing -------------------------------------------------------------------------

    def _send_nowait(self, wire: bytes) -> None:
        if self.alive and not self.stream.writer.is_closing():
            self.stream.write(wire)  # over TLS, the length in a record of its own
            self.last_sent = asyncio.get_running_loop().time()

    def _allocate_id(self) -> int:
        while True:
            msg_id = self._next_id
            self._next_id = self._next_id % 0xFFFF + 1  # never 0: 0 is unidirectional
            if msg_id not in self._pending:
                return msg_id

    async def request(self, tlvs: tuple[Tlv, ...],
                      timeout: float) -> tuple[bytes, _Reply | Outcome]:  # fmt: skip
        """Send a request; return our wire and the response (or why there is none)."""
        if self.failure is not None:
            return b"", self.failure
        msg_id = self._allocate_id()
        wire = DsoMessage(msg_id, tlvs=tlvs).to_wire()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_Reply | Outcome] = loop.create_future()
        self._pending[msg_id] = future
        if not isinstance(tlvs[0], Keepalive):
            self.last_activity = loop.time()  # §6.3: Keepalive is not activity
        try:
            await self.stream.send(wire)
            self.last_sent = loop.time()
            async with asyncio.timeout(max(timeout, 0.0)):
                return wire, await future
        except TimeoutError:
            self._pending.pop(msg_id, None)
            return wire, Outcome(WireEvent.TIMEOUT, error="timed out waiting for the DSO response",
                                 transport=self.transport)  # fmt: skip
        except (OSError, ssl.SSLError) as exc:
            self._pending.pop(msg_id, None)
            outcome = tx.failure_outcome(exc, self.transport, self.stream.received)
            self._end("reset" if outcome.event is WireEvent.RESET else "network_error", outcome)
            return wire, self.failure or outcome

    async def send_unidirectional(self, tlvs: tuple[Tlv, ...]) -> None:
        if self.alive:
            self._send_nowait(DsoMessage(0, tlvs=tlvs).to_wire())
            with contextlib.suppress(OSError, ssl.SSLError):
                await self.stream.writer.drain()

    async def wait_ended(self, timeout: float) -> bool:
        """Read on (in the background) for up to ``timeout``; True if the session ended."""
        if timeout > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.ended.wait()
        return not self.alive

    # facts ---------------------------------------------------------------------------

    def adopt_timers(self, reply: DsoMessage) -> None:
        keepalive = reply.find(Keepalive)
        if isinstance(keepalive, Keepalive):
            self.inactivity_ms, self.interval_ms = keepalive.inactivity_ms, keepalive.interval_ms

    def note_retry_delay(self, reply: DsoMessage) -> None:
        """§7.2.2: an error response may say when to try again."""
        tlv = reply.find(RetryDelay)
        if isinstance(tlv, RetryDelay):
            self.retry_delay_ms, self.retry_delay_rcode = tlv.delay_ms, reply.rcode

    def facts(self, dso_type: int, *, closed_reason: str | None = None) -> DsoFacts:
        return DsoFacts(
            session_established=self.established and not self.echoed,
            inactivity_timeout=None if self.inactivity_ms is None
            else ms_to_seconds(self.inactivity_ms),
            keepalive_interval=None if self.interval_ms is None
            else ms_to_seconds(self.interval_ms),
            retry_delay=None if self.retry_delay_ms is None else self.retry_delay_ms / 1000,
            retry_delay_rcode=self.retry_delay_rcode,
            dso_type=dso_type,
            push_notifications=self.pushes,
            echoed=self.echoed,
            closed_reason=closed_reason,
        )  # fmt: skip

    @property
    def bytes_received(self) -> int:
        return self.stream.received - self._byte_base


# --- the operations of each probe kind ------------------------------------------------


class _Budget:
    """One probe's deadline, shared by every step (connect, requests, push wait)."""

    def __init__(self, seconds: float) -> None:
        self.deadline = asyncio.get_running_loop().time() + seconds

    def left(self) -> float:
        return max(0.0, self.deadline - asyncio.get_running_loop().time())


#: TLVs a response may lead with when it carries no response primary TLV
#: (RFC 8490 §5.4.1: only additional TLVs; §7.2: Retry Delay in an error response).
_RESPONSE_ADDITIONAL_FIRST = frozenset({DsoType.RETRY_DELAY, DsoType.ENCRYPTION_PADDING})


def response_type_problem(request_wire: bytes, reply: DsoMessage) -> str | None:
    """Why a successful response's first TLV cannot answer our request, if it cannot.

    RFC 8490 §5.4.1: a response primary TLV, when present, has the request primary
    TLV's type. A NOERROR response leading with another type (an unknown one, say)
    is not an answer to what we asked.
    """
    if reply.rcode != NOERROR or not reply.tlvs or len(request_wire) < HEADER_LENGTH + 2:
        return None
    asked = int.from_bytes(request_wire[HEADER_LENGTH:HEADER_LENGTH + 2], "big")
    got = int(reply.tlvs[0].tlv_type)
    if got == asked or got in _RESPONSE_ADDITIONAL_FIRST:
        return None
    return (f"response leads with TLV type {got:#06x}, not the request's {asked:#06x} "
            "(RFC 8490 §5.4.1)")  # fmt: skip


def _reply_outcome(conn: DsoConnection, request_wire: bytes, result: _Reply | Outcome) -> Outcome:
    if isinstance(result, Outcome):
        return result
    reply, reply_wire = result
    problem = response_type_problem(request_wire, reply)
    if problem is not None:
        return Outcome(WireEvent.MALFORMED, rcode=reply.rcode, error=problem,
                       transport=conn.transport)  # fmt: skip
    if is_echo(request_wire, reply, reply_wire):
        conn.echoed = True
    if reply.rcode != NOERROR:
        conn.note_retry_delay(reply)
    return Outcome(WireEvent.REPLY, rcode=reply.rcode, transport=conn.transport)


async def _keepalive(conn: DsoConnection, spec: ProbeSpec, budget: _Budget) -> Outcome:
    """A Keepalive request; NOERROR establishes the session (RFC 8490 §5.1)."""
    wire, result = await conn.request(keepalive_tlvs(spec), budget.left())
    outcome = _reply_outcome(conn, wire, result)
    if isinstance(result, Outcome) or outcome.rcode != NOERROR:
        return outcome
    reply = result[0]
    if conn.echoed and reply.is_response and isinstance(reply.primary, Keepalive):
        # The same bytes back is also what a server that grants exactly the timers
        # we proposed sends. An unassigned type tells them apart: a DSO server
        # answers DSOTYPENI, a copier copies again.
        conn.echoed = False
        check_wire, check = await conn.request(
            (UnknownTlv(_UNASSIGNED_TYPE, _PROBE_VALUE),), budget.left())  # fmt: skip
        if isinstance(check, Outcome):
            conn.echoed = check.event is WireEvent.REPLY  # pragma: no cover - defensive
        else:
            conn.echoed = is_echo(check_wire, *check)
    if not conn.echoed:
        conn.adopt_timers(reply)
        conn.established = True
    return outcome


async def _custom_tlv(conn: DsoConnection, spec: ProbeSpec, budget: _Budget) -> Outcome:
    wire, result = await conn.request((UnknownTlv(spec.dso.tlv_type, _PROBE_VALUE),),
                                      budget.left())  # fmt: skip
    return _reply_outcome(conn, wire, result)


async def _subscribe(conn: DsoConnection, spec: ProbeSpec, budget: _Budget,
                     push_wait: float) -> Outcome:  # fmt: skip
    settings = spec.dso
    try:
        tlv = Subscribe.of(settings.push_name, settings.push_type, settings.push_class)
    except ValueError as exc:  # pragma: no cover - the config validates names
        return Outcome(WireEvent.NOT_SENT, error=f"SUBSCRIBE name: {exc}",
                       transport=conn.transport)  # fmt: skip
    wire, result = await conn.request((tlv,), budget.left() - push_wait)
    outcome = _reply_outcome(conn, wire, result)
    if outcome.rcode != NOERROR or conn.echoed or isinstance(result, Outcome):
        return outcome
    conn.established = True  # RFC 8765 §6.2: a successful SUBSCRIBE establishes it too
    await conn.wait_ended(min(push_wait, budget.left()))
    # RFC 8765 §6.4: end the subscription, naming the SUBSCRIBE's MESSAGE ID.
    await conn.send_unidirectional((Unsubscribe(result[0].msg_id),))
    return outcome


async def _operate(conn: DsoConnection, spec: ProbeSpec, budget: _Budget,
                   push_wait: float) -> Outcome:  # fmt: skip
    """The DSO exchanges of one probe on an open connection."""
    if spec.kind in (ProbeKind.DSO_KEEPALIVE, ProbeKind.DSO_PADDING) or not conn.established:
        outcome = await _keepalive(conn, spec, budget)
        if spec.kind in (ProbeKind.DSO_KEEPALIVE, ProbeKind.DSO_PADDING):
            return outcome
        if not conn.established:  # no session: that is the answer
            return outcome
    if spec.kind is ProbeKind.DSO_TLV:
        return await _custom_tlv(conn, spec, budget)
    return await _subscribe(conn, spec, budget, push_wait)


def _push_wait(spec: ProbeSpec) -> float:
    return max(0.0, spec.dso.push_wait) if spec.kind is ProbeKind.DSO_PUSH_SUBSCRIBE else 0.0


def _finish(outcome: Outcome, conn: DsoConnection) -> Outcome:
    """A protocol failure after the answer (a flood, a bogus message) outranks it."""
    failure = conn.failure
    if failure is not None and failure.event in (WireEvent.MALFORMED, WireEvent.MISMATCHED):
        return failure
    return outcome


async def _open(target: Target, spec: ProbeSpec, ssl_context: ssl.SSLContext | None,
                budget: _Budget) -> tx.StreamSession | Outcome:  # fmt: skip
    transport = spec.transport.value
    try:
        async with asyncio.timeout(budget.left()):
            return await tx.open_stream(target.host, target.port, transport, ssl_context,
                                        target.tls.server_name)  # fmt: skip
    except (OSError, EOFError, TimeoutError, ssl.SSLError) as exc:
        return tx.failure_outcome(exc, transport)


async def _run_once(target: Target, spec: ProbeSpec, ssl_context: ssl.SSLContext | None,
                    holds: RetryDelayHolds) -> Outcome:  # fmt: skip
    held = holds.held(target.name, spec)
    if held is not None:
        return held
    push_wait = _push_wait(spec)
    budget = _Budget(spec.timeout + push_wait)
    dso_type = dso_type_of(spec)
    stream = await _open(target, spec, ssl_context, budget)
    if isinstance(stream, Outcome):
        return dataclasses.replace(stream, dso=DsoFacts(dso_type=dso_type))
    conn = DsoConnection(stream)
    conn.start()
    try:
        outcome = await _operate(conn, spec, budget, push_wait)
        if conn.alive and conn.established:
            await conn.wait_ended(min(SETTLE_SECONDS, budget.left()))
        outcome = _finish(outcome, conn)
    finally:
        ended_by_server = not conn.alive
        await conn.close("probe_done")
    reason = conn.closed_reason if ended_by_server else "probe_done"
    if reason == "retry_delay" and conn.retry_delay_ms is not None:
        holds.start(target.name, conn.retry_delay_ms, conn.retry_delay_rcode)
    if not conn.established and reason not in _SERVER_ENDS:
        reason = None  # no session, and the server did not end the connection
    facts = conn.facts(dso_type, closed_reason=reason)
    return dataclasses.replace(outcome, dso=facts, transport=conn.transport,
                               bytes_received=conn.bytes_received,
                               cert_not_after=conn.cert_not_after)  # fmt: skip


async def _run_udp(target: Target, spec: ProbeSpec) -> Outcome:
    facts = DsoFacts(dso_type=dso_type_of(spec))
    if not spec.dso.allow_udp:
        return Outcome(WireEvent.NOT_SENT, error=_UDP_ONLY_ERROR, transport="udp", dso=facts)
    msg_id = secrets.randbelow(0xFFFF) + 1
    wire = DsoMessage(msg_id, tlvs=keepalive_tlvs(spec)).to_wire()
    result = await tx.udp_exchange(target.host, target.port, wire, msg_id, spec.timeout)
    if isinstance(result, Outcome):
        return dataclasses.replace(result, dso=facts)
    outcome = judge_datagram(msg_id, result.wire, "udp")
    if outcome.event is WireEvent.REPLY:
        reply = DsoMessage.from_wire(result.wire)  # judge_datagram decoded it already
        facts = dataclasses.replace(facts, echoed=is_echo(wire, reply, result.wire))
    return dataclasses.replace(outcome, dso=facts)


async def run_dso_probe(target: Target, spec: ProbeSpec,
                        ssl_context: ssl.SSLContext | None) -> Outcome:  # fmt: skip
    """Run one DSO probe kind; never raises for anything a server does."""
    if spec.transport is Transport.UDP:
        return await _run_udp(target, spec)
    if spec.dso.persistent:
        return await default_pool.run(target, spec, ssl_context)
    return await _run_once(target, spec, ssl_context, default_pool.holds)


# --- Retry Delay -----------------------------------------------------------------------


class RetryDelayHolds:
    """Until when a server's Retry Delay keeps us away from each target.

    RFC 8490 §6.6.1: a client told to go away must not reconnect before the delay
    has passed. The server told the client, not one of its code paths, so the
    persistent pool and one-shot probes share one window per target.
    """

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._facts: dict[str, tuple[int, int | None]] = {}

    def start(self, name: str, delay_ms: int, rcode: int | None) -> None:
        self._until[name] = asyncio.get_running_loop().time() + delay_ms / 1000
        self._facts[name] = (delay_ms, rcode)

    def held(self, name: str, spec: ProbeSpec) -> Outcome | None:
        """The outcome of a probe the window holds back; None when it may run.

        The outcome judges nothing (``DsoFacts.held_by_retry_delay``): the
        scheduler counts the run as skipped and the pair keeps its cause.
        """
        left = self._until.get(name, 0.0) - asyncio.get_running_loop().time()
        if left <= 0:
            self._until.pop(name, None)
            return None
        delay_ms, rcode = self._facts[name]
        return Outcome(WireEvent.NOT_SENT, transport=spec.transport.value,
                       error=(f"held: the server asked for a Retry Delay of {delay_ms / 1000:g} s "
                              f"(RFC 8490 §6.6.1); {left:.1f} s left"),
                       dso=DsoFacts(retry_delay=delay_ms / 1000, retry_delay_rcode=rcode,
                                    dso_type=dso_type_of(spec),
                                    held_by_retry_delay=True))  # fmt: skip

    def clear(self) -> None:
        self._until.clear()
        self._facts.clear()


# --- persistent sessions --------------------------------------------------------------

#: How a reused session may end under a probe without the probe failing: the
#: server (or the path) closed it, or our own inactivity close came first. The
#: probe is retried once on a fresh session. Not for a Retry Delay (§6.6.1: stay
#: away), a protocol error (that is the finding), or our shutdown.
_RETRYABLE_ENDS = frozenset({"server_closed", "reset", "network_error", "tls_error",
                             "inactivity"})  # fmt: skip
#: Events of a request that a session end left unanswered.
_UNANSWERED = frozenset({WireEvent.CLOSED, WireEvent.RESET, WireEvent.NETWORK_ERROR,
                         WireEvent.TLS_ERROR})  # fmt: skip


def timer_action(now: float, *, last_sent: float, last_activity: float,
                 interval_ms: int | None, inactivity_ms: int | None,
                 margin: float) -> tuple[str | None, float]:  # fmt: skip
    """What a session's maintainer does now ("close", "keepalive" or None) and,
    when nothing, the time to look again.

    RFC 8490 §6.4.1: an idle client closes the session once the inactivity
    timeout passes (Keepalive is not activity, §6.3). §6.5: it sends something
    within the keepalive interval; ``margin`` keeps us ahead of it.
    """
    wake = math.inf
    if inactivity_ms is not None and inactivity_ms != INFINITE_MS:
        expires = last_activity + inactivity_ms / 1000
        if now >= expires:
            return "close", now
        wake = expires
    if interval_ms is not None and interval_ms != INFINITE_MS:
        due = last_sent + max(interval_ms / 1000, _MIN_TIMER_SECONDS) * margin
        if now >= due:
            return "keepalive", now
        wake = min(wake, due)
    return None, wake


class _PooledSession:
    def __init__(self, conn: DsoConnection, endpoint: tuple[str, int, str]) -> None:
        self.conn = conn
        self.endpoint = endpoint
        self.maintainer: asyncio.Task[None] | None = None


class DsoSessionPool:
    """One DSO session per target, kept open across probes (``dso.persistent``).

    Between probes a maintenance task sends a Keepalive request before the
    granted keepalive interval runs out (RFC 8490 §6.5: the client must send
    something within it) and closes the session once the inactivity timeout
    passes without a real operation (§6.4.1; Keepalive is not activity, §6.3),
    so a pool that only carries Keepalive probes ends its session every
    inactivity timeout, by design. The maintainer acts under the target's lock,
    so it never closes a session under a probe. A probe whose reused session
    ends before the answer anyway (the server's idle close racing our request)
    is retried once on a fresh session within its budget, which its
    ``details["retried"]`` says. A dropped session is reopened by the next probe,
    except during a Retry Delay (§6.6.1, :class:`RetryDelayHolds`). Every
    session end is reported to ``on_session_closed(target, reason)``; probes
    through the pool leave ``DsoFacts.closed_reason`` empty so that a hooked
    ``MetricsState.record_session_closed`` counts each end once.
    """

    def __init__(self, on_session_closed: SessionClosedCallback | None = None, *,
                 keepalive_margin: float = 0.8,
                 holds: RetryDelayHolds | None = None) -> None:  # fmt: skip
        self.on_session_closed = on_session_closed
        self.keepalive_margin = keepalive_margin
        self.holds = holds if holds is not None else RetryDelayHolds()
        self._sessions: dict[str, _PooledSession] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def session(self, target_name: str) -> DsoConnection | None:
        """The live session of a target, if any (for tests and the status page)."""
        pooled = self._sessions.get(target_name)
        return pooled.conn if pooled is not None and pooled.conn.alive else None

    def _ended(self, name: str, conn: DsoConnection, reason: str) -> None:
        if not conn.established and reason != "retry_delay":
            return  # no session was ever established: nothing ended
        if reason == "retry_delay" and conn.retry_delay_ms is not None:
            self.holds.start(name, conn.retry_delay_ms, conn.retry_delay_rcode)
        if self.on_session_closed is not None:
            try:
                self.on_session_closed(name, reason)
            except Exception:  # a metrics hook must not break the session machinery
                log.exception("DSO session-closed callback failed for %s", name)

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def _retired(self, name: str, lock: asyncio.Lock) -> bool:
        """True once :meth:`close` retired the target whose lock a probe took."""
        return self._locks.get(name) is not lock

    async def run(self, target: Target, spec: ProbeSpec,
                  ssl_context: ssl.SSLContext | None) -> Outcome:  # fmt: skip
        lock = self._lock(target.name)
        async with lock:
            if self._retired(target.name, lock):
                return _removed(spec)  # closed while this probe waited for its turn
            return await self._run_locked(target, spec, ssl_context, lock)

    async def _run_locked(self, target: Target, spec: ProbeSpec,
                          ssl_context: ssl.SSLContext | None,
                          lock: asyncio.Lock) -> Outcome:  # fmt: skip
        budget = _Budget(spec.timeout + _push_wait(spec))
        outcome, lost = await self._attempt(target, spec, ssl_context, budget, lock)
        if lost is None:
            return outcome
        first = {"session_closed": lost, "error": outcome.error}
        if lost == "retry_delay" and outcome.dso is not None:
            # The server sent Retry Delay while our request was pending (§6.6.1.1):
            # no answer to judge, and no retry while it holds.
            return dataclasses.replace(outcome, dso=dataclasses.replace(
                outcome.dso, held_by_retry_delay=True))  # fmt: skip
        if budget.left() <= 0:
            return dataclasses.replace(outcome, details={**outcome.details,
                                                         "not_retried": first})  # fmt: skip
        retry, _ = await self._attempt(target, spec, ssl_context, budget, lock)
        if retry.dso is not None and retry.dso.target_removed:
            return retry
        return dataclasses.replace(retry, details={**retry.details, "retried": first})

    async def _attempt(self, target: Target, spec: ProbeSpec,
                       ssl_context: ssl.SSLContext | None, budget: _Budget,
                       lock: asyncio.Lock) -> tuple[Outcome, str | None]:  # fmt: skip
        """One try on the target's session, reused when alive, else fresh. Returns
        the outcome and, when a reused session ended before it was answered, how
        it ended (a retryable reason, or "retry_delay"). A target that :meth:`close`
        retired meanwhile keeps no session and gets :func:`_removed`."""
        name, dso_type = target.name, dso_type_of(spec)
        push_wait = _push_wait(spec)
        endpoint = (target.host, target.port, spec.transport.value)
        pooled = self._sessions.get(name)
        if pooled is not None and (not pooled.conn.alive or pooled.endpoint != endpoint):
            await self._drop(name, "endpoint_changed")
            pooled = None
        reused = pooled is not None
        if pooled is None:
            held = self.holds.held(name, spec)
            if held is not None:
                return held, None
            stream = await _open(target, spec, ssl_context, budget)
            if self._retired(name, lock):
                # Removed while connecting: close() has come and gone, so nothing else
                # would ever close this session (or stop its keepalives).
                if not isinstance(stream, Outcome):
                    await stream.close()
                return _removed(spec), None
            if isinstance(stream, Outcome):
                return dataclasses.replace(stream, dso=DsoFacts(dso_type=dso_type)), None
            holder: list[DsoConnection] = []
            conn = DsoConnection(stream, on_end=lambda reason: self._ended(name, holder[0], reason))
            holder.append(conn)
            conn.start()
            pooled = _PooledSession(conn, endpoint)
            self._sessions[name] = pooled
        conn = pooled.conn
        conn.new_probe()
        outcome = _finish(await _operate(conn, spec, budget, push_wait), conn)
        if self._retired(name, lock):
            # close() ended the session under the request: no answer to judge, no
            # retry, no keepalives.
            return _removed(spec), None
        details: dict[str, object] = {"persistent": True}
        if not conn.established or conn.echoed or not conn.alive:
            if conn.alive:
                await conn.close("no_session")
            details["session_closed"] = conn.closed_reason
            if self._sessions.get(name) is pooled:
                del self._sessions[name]
        elif pooled.maintainer is None:
            pooled.maintainer = asyncio.create_task(self._maintain(name, pooled, spec))
        lost = None
        if reused and not conn.alive and outcome.event in _UNANSWERED:
            reason = conn.closed_reason or ""
            if reason in _RETRYABLE_ENDS or reason == "retry_delay":
                lost = reason
        facts = conn.facts(dso_type)
        return dataclasses.replace(outcome, dso=facts, transport=conn.transport,
                                   bytes_received=conn.bytes_received,
                                   cert_not_after=conn.cert_not_after,
                                   details={**outcome.details, **details}), lost  # fmt: skip

    def _timer_action(self, conn: DsoConnection, now: float) -> tuple[str | None, float]:
        return timer_action(now, last_sent=conn.last_sent, last_activity=conn.last_activity,
                            interval_ms=conn.interval_ms, inactivity_ms=conn.inactivity_ms,
                            margin=self.keepalive_margin)  # fmt: skip

    async def _maintain(self, name: str, pooled: _PooledSession, spec: ProbeSpec) -> None:
        conn = pooled.conn
        loop = asyncio.get_running_loop()
        while conn.alive:
            action, wake = self._timer_action(conn, loop.time())
            if action is None:
                # Poll at least every second: a probe may have changed the timers.
                if await conn.wait_ended(min(wake - loop.time(), 1.0)):
                    break
                continue
            async with self._lock(name):
                # A probe may have run while we waited for the lock: judge again.
                action, _ = self._timer_action(conn, loop.time())
                if not conn.alive:
                    break
                if action == "close":
                    await conn.close("inactivity")  # §6.4.1: an idle client closes
                    break
                if action == "keepalive":
                    await conn.request(keepalive_tlvs(spec), spec.timeout)
        if self._sessions.get(name) is pooled:
            del self._sessions[name]

    async def _drop(self, name: str, reason: str) -> None:
        pooled = self._sessions.pop(name, None)
        if pooled is None:
            return
        if pooled.maintainer is not None and pooled.maintainer is not asyncio.current_task():
            pooled.maintainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pooled.maintainer
        await pooled.conn.close(reason)

    async def close(self, target_name: str, reason: str = "target_removed") -> None:
        """Close a target's session and forget it (a reload removed the target).

        The target is retired first: a probe of it that holds (or waits for) its
        lock stops touching the pool and returns :func:`_removed`, whatever the
        session's end did to its request. The session closes at once, so a probe
        waiting on an answer ends now; close() then waits for the lock, which
        a probe still connecting lets go within its budget, closing what it
        opened. When close() returns, nothing of the target is open. A target
        added back starts with a fresh lock.
        """
        lock = self._locks.pop(target_name, None)
        await self._drop(target_name, reason)
        if lock is not None and lock.locked():
            async with lock:
                pass
        # Its Retry Delay hold stays: a target added back must still wait it out
        # (RFC 8490 §6.6.1).

    async def close_all(self, reason: str = "shutdown") -> None:
        """Close every session (at shutdown, or when a test ends)."""
        await asyncio.gather(*(self.close(name, reason)
                               for name in {*self._sessions, *self._locks}))  # fmt: skip
        self.holds.clear()


def _removed(spec: ProbeSpec) -> Outcome:
    """The result of a probe whose target a reload removed while it ran: nothing was
    judged, and MetricsState.record drops it (a session we closed is not the
    server's ``connection_closed``)."""
    return Outcome(WireEvent.CLOSED, transport=spec.transport.value,
                   error="not judged: a config reload removed the target and closed its "
                         "DSO session",
                   dso=DsoFacts(dso_type=dso_type_of(spec), target_removed=True))  # fmt: skip


#: The pool ``run_dso_probe`` uses for ``dso.persistent`` probes; its Retry Delay
#: windows hold one-shot probes of the same target too.
default_pool = DsoSessionPool()


async def close_all() -> None:
    """Close every persistent DSO session of the default pool (shutdown hook)."""
    await default_pool.close_all()
