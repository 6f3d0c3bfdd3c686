"""A DNS over QUIC (RFC 9250) test server on aioquic: no Debian server speaks DoQ yet.

    async with await DoqServer.start(cert, key) as server:
        ...  # probe 127.0.0.1:server.port with transport doq

It answers every query on its own stream, framed with the 2-byte length (§4.2):
forwarded over UDP to ``backend`` (a real server: DoQ in front of it, like a
dnsdist frontend) or, without one, with the built-in answer of
:func:`tests.hostile.correct_reply` (NOTIMP for opcodes other than QUERY). Modes
make it misbehave the ways the transport causes name:

- ``reset``: RESET_STREAM with DOQ_EXCESSIVE_LOAD instead of a reply;
- ``silent``: takes the query, never answers (the stream stays open);
- ``version_negotiation``: a raw UDP socket that answers every Initial with a
  Version Negotiation packet listing only a version nobody speaks;
- ``blackhole``: a raw UDP socket that never answers (no handshake);
- ``alpn=["dot"]`` and a certificate for another name make ALPN and
  verification fail in the handshake.

``python -m tests.doqserver --port N --cert C --key K [--backend HOST:PORT]`` runs
it in the foreground (the benchmarks start it that way).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass, field

import dns.exception
import dns.message
import dns.rcode
from aioquic.asyncio import serve
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.buffer import Buffer
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import encode_quic_version_negotiation, pull_quic_header

from tests.hostile import correct_reply

MODES = ("answer", "reset", "silent", "version_negotiation", "blackhole")
DOQ_EXCESSIVE_LOAD = 0x4
#: A reserved-looking version no implementation speaks (RFC 9000 §15 keeps
#: 0x?a?a?a?a for forcing version negotiation).
_BOGUS_VERSION = 0x1A2A3A4A
_LENGTH = struct.Struct("!H")


@dataclass
class DoqStats:
    queries: int = 0
    connections: int = 0
    streams: list[int] = field(default_factory=list)
    query_ids: list[int] = field(default_factory=list)


async def _forward(wire: bytes, backend: tuple[str, int], timeout: float = 2.0) -> bytes | None:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect(backend)
        await loop.sock_sendall(sock, wire)
        try:
            async with asyncio.timeout(timeout):
                return await loop.sock_recv(sock, 65535)
        except TimeoutError:
            return None


def builtin_answer(wire: bytes) -> bytes:
    try:
        query = dns.message.from_wire(wire, ignore_trailing=True)
    except dns.exception.DNSException:
        # A header we can read still gets FORMERR, like a real server would send.
        reply = bytearray(wire[:12].ljust(12, b"\0"))
        reply[2] |= 0x80
        reply[3] = (reply[3] & 0xF0) | dns.rcode.FORMERR
        return bytes(reply)
    if query.opcode() != 0:
        reply = dns.message.make_response(query)
        reply.set_rcode(dns.rcode.NOTIMP)
        return reply.to_wire()
    return correct_reply(wire, edns=query.edns >= 0).to_wire()


class _Protocol(QuicConnectionProtocol):
    server: DoqServer

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._buffers: dict[int, bytearray] = {}

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.HandshakeCompleted):
            self.server.stats.connections += 1
        elif isinstance(event, events.StreamDataReceived):
            buffer = self._buffers.setdefault(event.stream_id, bytearray())
            buffer += event.data
            if event.end_stream:  # §4.2: the client sends FIN after its query
                del self._buffers[event.stream_id]
                asyncio.get_running_loop().create_task(self._answer(event.stream_id, bytes(buffer)))

    async def _answer(self, stream_id: int, data: bytes) -> None:
        server = self.server
        if len(data) < 2:
            return
        (length,) = _LENGTH.unpack_from(data)
        wire = data[2 : 2 + length]
        server.stats.queries += 1
        server.stats.streams.append(stream_id)
        server.stats.query_ids.append(int.from_bytes(wire[:2], "big") if len(wire) >= 2 else -1)
        if server.mode == "reset":
            self._quic.reset_stream(stream_id, DOQ_EXCESSIVE_LOAD)
            self.transmit()
            return
        if server.mode == "silent":
            return
        reply = await _forward(wire, server.backend) if server.backend else builtin_answer(wire)
        if reply is None:
            self._quic.reset_stream(stream_id, 0x1)  # DOQ_INTERNAL_ERROR: backend silent
        else:
            self._quic.send_stream_data(stream_id, _LENGTH.pack(len(reply)) + reply,
                                        end_stream=True)  # fmt: skip
        self.transmit()


class _RawUdp(asyncio.DatagramProtocol):
    def __init__(self, negotiate: bool) -> None:
        self.negotiate = negotiate
        self.transport: asyncio.DatagramTransport | None = None
        self.datagrams = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.datagrams += 1
        if not self.negotiate or self.transport is None:
            return
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=8)
        except ValueError:
            return
        self.transport.sendto(encode_quic_version_negotiation(
            source_cid=header.destination_cid, destination_cid=header.source_cid,
            supported_versions=[_BOGUS_VERSION]), addr)  # fmt: skip


class DoqServer:
    def __init__(self, mode: str, backend: tuple[str, int] | None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} not in {MODES}")
        self.mode = mode
        self.backend = backend
        self.host = "127.0.0.1"
        self.port = 0
        self.stats = DoqStats()
        self._quic: QuicServer | None = None
        self._raw: asyncio.DatagramTransport | None = None
        self.raw: _RawUdp | None = None

    @classmethod
    async def start(cls, cert: str, key: str, *, mode: str = "answer",
                    alpn: list[str] | None = None, port: int = 0,
                    backend: tuple[str, int] | None = None) -> DoqServer:  # fmt: skip
        server = cls(mode, backend)
        loop = asyncio.get_running_loop()
        if mode in ("version_negotiation", "blackhole"):
            server.raw = _RawUdp(negotiate=mode == "version_negotiation")
            transport, _ = await loop.create_datagram_endpoint(
                lambda: server.raw or _RawUdp(False), local_addr=(server.host, port)
            )
            server._raw = transport
            server.port = int(transport.get_extra_info("sockname")[1])
            return server
        config = QuicConfiguration(is_client=False, alpn_protocols=alpn or ["doq"])
        config.load_cert_chain(cert, key)

        def protocol(*args: object, **kwargs: object) -> _Protocol:
            made = _Protocol(*args, **kwargs)
            made.server = server
            return made

        if port == 0:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind((server.host, 0))
                port = int(probe.getsockname()[1])
        server._quic = await serve(server.host, port, configuration=config,
                                   create_protocol=protocol)  # fmt: skip
        server.port = port
        return server

    async def __aenter__(self) -> DoqServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._quic is not None:
            self._quic.close()
            self._quic = None
        if self._raw is not None:
            self._raw.close()
            self._raw = None


async def _main(args: argparse.Namespace) -> None:
    backend = None
    if args.backend:
        host, _, port = args.backend.rpartition(":")
        backend = (host, int(port))
    server = await DoqServer.start(args.cert, args.key, port=args.port, backend=backend)
    print(f"doq server on {server.host}:{server.port}", flush=True)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--backend", help="HOST:PORT of a DNS server to forward to over UDP")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
