"""A hostile DNS server for tests: UDP and TCP on one free port of 127.0.0.1, whose
misbehaviour is chosen per test (:class:`Mode`).

    async with await HostileServer.start(Mode.POINTER_LOOP) as server:
        ...  # probe 127.0.0.1:server.port
        server.mode = Mode.GARBAGE  # the next datagram / connection gets garbage

Every mode answers what a broken or malicious server could really send; the
counters in :class:`HostileStats` let a test check what the server saw and sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import socket
import struct
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset

_T = TypeVar("_T")
_HEADER = struct.Struct("!HHHHHH")
_QR = 0x8000
_TC = 0x0200
_DSO_OPCODE = 6
# An OPT pseudo-RR (RFC 6891 §6.1.2): root owner, type 41, payload 1232, no options.
_OPT_RR = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)
# Keepalive TLV (RFC 8490 §7.1): 15 s inactivity timeout, 15 s keepalive interval.
_KEEPALIVE_TLV = struct.pack("!HHII", 1, 8, 15_000, 15_000)


class Mode(enum.StrEnum):
    #: 7 bytes after the request's ID: shorter than a DNS header.
    GARBAGE = "garbage"
    #: A plausible header (QR, same ID and opcode, counts 1/65535/0/0) then junk.
    GARBAGE_BODY = "garbage_body"
    #: A correct reply under another message ID.
    WRONG_ID = "wrong_id"
    #: A correct reply with another opcode (QUERY answered as STATUS, ...).
    WRONG_OPCODE = "wrong_opcode"
    #: A correct reply to another question.
    WRONG_QUESTION = "wrong_question"
    #: TCP: a length prefix of 512 followed by 20 bytes, then FIN.
    SHORT_PREFIX = "short_prefix"
    #: TCP: a length prefix of 65535, 100 bytes, then silence with the connection open.
    STALL_PREFIX = "stall_prefix"
    #: TCP: an AXFR reply that never ends: 4 KB messages, forever, as fast as the
    #: client reads them (RFC 5936 would end with the SOA; this never does).
    ENDLESS_AXFR = "endless_axfr"
    #: The question's owner name is a compression pointer to itself (RFC 1035 §4.1.4).
    POINTER_LOOP = "pointer_loop"
    #: A correct reply with two OPT records (RFC 6891 §6.1.1 allows one).
    DOUBLE_OPT = "double_opt"
    #: The request sent back unchanged (QR=0), as a reflector would.
    QR0_ECHO = "qr0_echo"
    #: A DSO response whose TLV header is cut after 3 bytes.
    DSO_TRUNCATED_TLV = "dso_truncated_tlv"
    #: A DSO response whose TLV claims 8 value bytes and carries 4.
    DSO_TLV_PAST_END = "dso_tlv_past_end"
    #: Thousands of unsolicited DSO Keepalive messages (ID 0) before the real response.
    DSO_FLOOD = "dso_flood"
    #: Thousands of unsolicited DSO messages and never the response.
    DSO_FLOOD_NO_REPLY = "dso_flood_no_reply"
    #: TCP: accept and never read (UDP: silence).
    ACCEPT_NO_READ = "accept_no_read"
    #: TCP: half a reply, then SO_LINGER 0 and close: an RST mid-reply.
    RST_MID_REPLY = "rst_mid_reply"
    #: A correct reply, but only ``late_delay`` seconds after the request.
    LATE_REPLY = "late_reply"
    #: UDP: the reply with TC=1 and no records; TCP: the correct reply.
    TC_UDP = "tc_udp"
    #: A correct reply whose rcode, with the OPT extension (RFC 6891 §6.1.3), is
    #: :attr:`HostileServer.rcode` (by default 3000, unassigned).
    EXTENDED_RCODE = "extended_rcode"
    #: A correct reply (the control case).
    HEALTHY = "healthy"


@dataclass
class HostileStats:
    datagrams: int = 0
    connections: int = 0
    tcp_messages: int = 0
    bytes_sent: int = 0
    #: Stream handler tasks that ended (so a test can wait for the server side to finish).
    connections_done: int = 0
    errors: list[str] = field(default_factory=list)


def _frame(wire: bytes) -> bytes:
    return struct.pack("!H", len(wire)) + wire


def _opcode(wire: bytes) -> int:
    return (struct.unpack_from("!H", wire, 2)[0] >> 11) & 0xF if len(wire) >= 4 else 0


def _request_id(wire: bytes) -> int:
    return struct.unpack_from("!H", wire)[0] if len(wire) >= 2 else 0


def correct_reply(request: bytes, *, edns: bool = False) -> dns.message.Message:
    """The reply a well-behaved server would send: a SOA answer to a SOA query,
    NOERROR with no records otherwise."""
    query = dns.message.from_wire(request, ignore_trailing=True)
    reply = dns.message.make_response(query)
    if edns:
        reply.use_edns(0, payload=1232)
    if query.question and query.question[0].rdtype in (dns.rdatatype.SOA, dns.rdatatype.AXFR):
        zone = query.question[0].name
        reply.answer.append(
            dns.rrset.from_text(zone, 300, "IN", "SOA", f"ns1.{zone} host.{zone} 1 2 3 4 5")
        )
    return reply


def _reply_flags(request: bytes) -> int:
    return _QR | (_opcode(request) << 11)


def _dso_reply(request: bytes, body: bytes) -> bytes:
    return _HEADER.pack(_request_id(request), _QR | (_DSO_OPCODE << 11), 0, 0, 0, 0) + body


def _unsolicited_keepalive() -> bytes:
    return _HEADER.pack(0, _DSO_OPCODE << 11, 0, 0, 0, 0) + _KEEPALIVE_TLV


def replies(mode: Mode, request: bytes, tcp: bool, flood: int = 5000,
            rcode: int = 3000) -> list[bytes]:  # fmt: skip
    """The messages ``mode`` answers ``request`` with (pure; no framing)."""
    msg_id = _request_id(request)
    if mode is Mode.GARBAGE:
        return [struct.pack("!H", msg_id) + b"\xde\xad\xbe\xef\x00"]
    if mode is Mode.GARBAGE_BODY:
        header = _HEADER.pack(msg_id, _reply_flags(request), 1, 0xFFFF, 0, 0)
        return [header + b"\x03abc\x00\x00\x06\x00\x01" + bytes(range(200, 240))]
    if mode is Mode.QR0_ECHO:
        return [request]
    if mode is Mode.POINTER_LOOP:
        header = _HEADER.pack(msg_id, _reply_flags(request), 1, 0, 0, 0)
        return [header + b"\xc0\x0c" + struct.pack("!HH", 6, 1)]
    if _opcode(request) == _DSO_OPCODE:
        return _dso_replies(mode, request, flood)
    reply = correct_reply(request, edns=mode in (Mode.DOUBLE_OPT, Mode.EXTENDED_RCODE))
    if mode is Mode.EXTENDED_RCODE:
        reply.set_rcode(dns.rcode.Rcode.make(rcode))
    elif mode is Mode.WRONG_ID:
        reply.id = (msg_id + 1) & 0xFFFF or 1
    elif mode is Mode.WRONG_OPCODE:
        other = dns.opcode.STATUS if reply.opcode() != dns.opcode.STATUS else dns.opcode.QUERY
        reply.set_opcode(other)
    elif mode is Mode.WRONG_QUESTION and reply.question:
        asked = reply.question[0]
        reply.question = [dns.rrset.RRset(dns.name.from_text("other.invalid."),
                                          asked.rdclass, asked.rdtype)]  # fmt: skip
        reply.answer = []
    elif mode is Mode.TC_UDP and not tcp:
        reply.flags |= dns.flags.TC
        reply.answer = []
    wire = reply.to_wire()
    if mode is Mode.DOUBLE_OPT:
        fields = list(_HEADER.unpack_from(wire))
        fields[5] += 1
        wire = _HEADER.pack(*fields) + wire[_HEADER.size :] + _OPT_RR
    return [wire]


def _dso_replies(mode: Mode, request: bytes, flood: int) -> list[bytes]:
    if mode is Mode.DSO_TRUNCATED_TLV:
        return [_dso_reply(request, b"\x00\x01\x00")]
    if mode is Mode.DSO_TLV_PAST_END:
        return [_dso_reply(request, struct.pack("!HH", 1, 8) + b"\x00\x00\x3a\x98")]
    if mode in (Mode.DSO_FLOOD, Mode.DSO_FLOOD_NO_REPLY):
        storm = [_unsolicited_keepalive()] * flood
        if mode is Mode.DSO_FLOOD_NO_REPLY:
            return storm
        return [*storm, _dso_reply(request, _KEEPALIVE_TLV)]
    if mode is Mode.WRONG_ID:
        wire = _dso_reply(request, _KEEPALIVE_TLV)
        return [struct.pack("!H", (_request_id(request) + 1) & 0xFFFF or 1) + wire[2:]]
    # Any other mode: a correct Keepalive response (RFC 8490 §7.1).
    return [_dso_reply(request, _KEEPALIVE_TLV)]


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: HostileServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        server = self.server
        server.stats.datagrams += 1
        mode = server.mode
        if mode in (Mode.ACCEPT_NO_READ, Mode.SHORT_PREFIX, Mode.STALL_PREFIX,
                    Mode.RST_MID_REPLY, Mode.ENDLESS_AXFR):  # fmt: skip
            return  # stream-only misbehaviours: silence on UDP
        try:
            out = replies(mode, data, tcp=False, flood=server.flood, rcode=server.rcode)
        except (dns.exception.DNSException, ValueError) as exc:
            server.stats.errors.append(repr(exc))
            return
        delay = server.late_delay if mode is Mode.LATE_REPLY else 0.0
        loop = asyncio.get_running_loop()
        for wire in out:
            loop.call_later(delay, self._send, wire, addr)

    def _send(self, wire: bytes, addr: tuple[str | object, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(wire, addr)
            self.server.stats.bytes_sent += len(wire)


class HostileServer:
    """UDP and TCP on the same free port of 127.0.0.1; behaviour set by :attr:`mode`."""

    def __init__(self, mode: Mode, host: str = "127.0.0.1") -> None:
        self.mode = mode
        self.host = host
        self.port = 0
        self.stats = HostileStats()
        #: Seconds LATE_REPLY waits before answering.
        self.late_delay = 2.0
        #: Seconds ACCEPT_NO_READ holds a connection before closing it.
        self.hold = 30.0
        #: Unsolicited messages the DSO flood modes send.
        self.flood = 5000
        #: The full (12-bit) rcode EXTENDED_RCODE answers with.
        self.rcode = 3000
        self._tcp: asyncio.Server | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._closing = asyncio.Event()

    @classmethod
    async def start(cls, mode: Mode = Mode.HEALTHY, host: str = "127.0.0.1") -> HostileServer:
        server = cls(mode, host)
        await server._listen()
        return server

    async def __aenter__(self) -> HostileServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(20):
            tcp = await asyncio.start_server(self._serve, self.host, 0)
            port = tcp.sockets[0].getsockname()[1]
            try:
                self._udp, _ = await loop.create_datagram_endpoint(
                    lambda: _Udp(self), local_addr=(self.host, port)
                )
            except OSError:
                tcp.close()
                await tcp.wait_closed()
                continue
            self._tcp, self.port = tcp, port
            return
        raise OSError("no port free for both TCP and UDP")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        self.stats.connections += 1
        try:
            await self._converse(reader, writer)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        except Exception as exc:  # a bug here must show in the test, not vanish
            self.stats.errors.append(repr(exc))
        finally:
            self._writers.discard(writer)
            if not writer.is_closing():
                writer.close()
            self.stats.connections_done += 1
            if task is not None:
                self._tasks.discard(task)

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode is Mode.ACCEPT_NO_READ:
            # Hold the connection (unread) for a while, then let it go: a long soak
            # must not pile up server-side sockets.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.hold)
            return
        while True:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            request = await reader.readexactly(length)
            self.stats.tcp_messages += 1
            mode = self.mode
            if mode is Mode.SHORT_PREFIX:
                await self._write(writer, struct.pack("!H", 512) + os.urandom(20))
                return
            if mode is Mode.STALL_PREFIX:
                await self._write(writer, struct.pack("!H", 65535) + bytes(100))
                await self._closing.wait()
                return
            if mode is Mode.RST_MID_REPLY:
                await self._write(writer, struct.pack("!H", 300) + bytes(40))
                await asyncio.sleep(0.05)
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            if mode is Mode.ENDLESS_AXFR:
                await self._endless_axfr(writer, request)
                return
            if mode is Mode.LATE_REPLY:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), self.late_delay)
            out = replies(mode, request, tcp=True, flood=self.flood, rcode=self.rcode)
            await self._write(writer, b"".join(_frame(wire) for wire in out))

    async def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        self.stats.bytes_sent += len(data)
        await writer.drain()

    async def _endless_axfr(self, writer: asyncio.StreamWriter, request: bytes) -> None:
        first = correct_reply(request)
        zone = first.question[0].name if first.question else dns.name.root
        batch = [
            dns.rrset.from_text(dns.name.Name((f"h{i}".encode(), *zone.labels)), 300,
                                "IN", "TXT", '"' + "x" * 200 + '"')
            for i in range(16)
        ]  # fmt: skip
        first.answer.extend(batch)
        await self._write(writer, _frame(first.to_wire()))
        more = dns.message.Message(first.id)
        more.flags = first.flags
        more.answer = batch
        chunk = _frame(more.to_wire())
        while not self._closing.is_set():  # never the closing SOA (RFC 5936 §2.2)
            await self._write(writer, chunk)

    async def close(self) -> None:
        self._closing.set()
        if self._tcp is not None:
            self._tcp.close()
        if self._udp is not None:
            self._udp.close()
        for writer in list(self._writers):
            writer.close()
        if self._tasks:
            # Closed writers end every handler; cancel only one that hangs anyway.
            _, pending = await asyncio.wait(list(self._tasks), timeout=2)
            for task in pending:
                task.cancel()
        if self._tcp is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 2)


class BackgroundLoop:
    """An event loop on its own thread, so servers keep running while the test thread
    blocks: in ``asyncio.run``, the CLI (which runs its own loop), or waiting on a
    subprocess under test that probes them."""

    def __init__(self) -> None:
        import threading

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, _T], timeout: float = 10.0) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()
