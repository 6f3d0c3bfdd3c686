"""A DNS over QUIC (RFC 9250) test server: :class:`exporter.doqserver.DoqFrontend`
plus the misbehaviours the transport causes name (no Debian server speaks DoQ yet).

    async with await DoqServer.start(cert, key, mode="reset") as server:
        ...  # probe 127.0.0.1:server.port with transport doq

Modes:
- ``answer``: forwards to ``backend`` (a real server, over UDP) or, without one,
  answers like :func:`tests.hostile.correct_reply` (NOTIMP for opcodes but QUERY);
- ``reset``: RESET_STREAM with DOQ_EXCESSIVE_LOAD instead of a reply;
- ``silent``: takes the query, never answers (the stream stays open);
- ``version_negotiation``: a raw UDP socket that answers every Initial with a
  Version Negotiation packet listing only a version nobody speaks;
- ``blackhole``: a raw UDP socket that never answers (no handshake).
``alpn=["dot"]`` and a certificate for another name make ALPN and verification
fail in the handshake.

``python -m tests.doqserver --port N --cert C --key K [--backend HOST:PORT]`` runs
it in the foreground (the benchmarks start it that way).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

import dns.exception
import dns.message
import dns.rcode
from aioquic.buffer import Buffer
from aioquic.quic.packet import encode_quic_version_negotiation, pull_quic_header

from exporter.doqserver import Answer, DoqFrontend, DoqStats, forwarder
from tests.hostile import correct_reply

MODES = ("answer", "reset", "silent", "version_negotiation", "blackhole")
DOQ_EXCESSIVE_LOAD = 0x4
#: A version no implementation speaks, of the 0x?a?a?a?a pattern RFC 9000 §15
#: reserves for forcing version negotiation.
BOGUS_VERSION = 0x1A2A3A4A


def builtin_answer(wire: bytes) -> bytes:
    try:
        query = dns.message.from_wire(wire, ignore_trailing=True)
    except dns.exception.DNSException:
        reply = bytearray(wire[:12].ljust(12, b"\0"))
        reply[2] |= 0x80
        reply[3] = (reply[3] & 0xF0) | dns.rcode.FORMERR
        return bytes(reply)
    if query.opcode() != 0:
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.NOTIMP)
        return response.to_wire()
    return correct_reply(wire, edns=query.edns >= 0).to_wire()


def _answer_for(mode: str, backend: tuple[str, int] | None) -> Answer:
    forward = forwarder(*backend) if backend else None

    async def answer(wire: bytes) -> bytes | None:
        if mode == "reset":
            return None
        if mode == "silent":
            await asyncio.Event().wait()
        return await forward(wire) if forward else builtin_answer(wire)

    return answer


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
            supported_versions=[BOGUS_VERSION]), addr)  # fmt: skip


class DoqServer:
    def __init__(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} not in {MODES}")
        self.mode = mode
        self.host = "127.0.0.1"
        self.port = 0
        self.frontend: DoqFrontend | None = None
        self.raw: _RawUdp | None = None
        self._raw_transport: asyncio.BaseTransport | None = None

    @property
    def stats(self) -> DoqStats:
        return self.frontend.stats if self.frontend else DoqStats()

    @classmethod
    async def start(cls, cert: str, key: str, *, mode: str = "answer",
                    alpn: list[str] | None = None, port: int = 0,
                    backend: tuple[str, int] | None = None) -> DoqServer:  # fmt: skip
        server = cls(mode)
        if mode in ("version_negotiation", "blackhole"):
            raw = server.raw = _RawUdp(negotiate=mode == "version_negotiation")
            transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: raw, local_addr=(server.host, port)
            )
            server._raw_transport = transport
            server.port = int(transport.get_extra_info("sockname")[1])
            return server
        frontend = DoqFrontend(_answer_for(mode, backend), server.host,
                               reset_code=DOQ_EXCESSIVE_LOAD)  # fmt: skip
        server.frontend = await frontend.start(cert, key, port=port, alpn=alpn)
        server.port = frontend.port
        return server

    async def __aenter__(self) -> DoqServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.frontend is not None:
            self.frontend.close()
        if self._raw_transport is not None:
            self._raw_transport.close()


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
    parser = argparse.ArgumentParser(description="a DNS over QUIC test server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--backend", help="HOST:PORT of a DNS server to forward to over UDP")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
