"""A DNS over QUIC (RFC 9250) frontend on aioquic, for ``dnsgap demo`` and the tests.

No Debian DNS server speaks DoQ yet, so the demo puts this in front of one of its
reference servers (forwarding over UDP, like a dnsdist frontend) to have a DoQ
target to probe. Each query arrives on its own client stream, framed with the
2-byte length, ended by FIN (§4.2); the reply goes back on that stream, then FIN.
``answer`` returning None resets the stream instead (RESET_STREAM with
``reset_code``), which tests use to produce ``stream_reset``.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer, serve
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration

_LENGTH = struct.Struct("!H")
DOQ_INTERNAL_ERROR = 0x1

#: Turns a query (message bytes) into its reply, or None for "reset the stream".
Answer = Callable[[bytes], Awaitable[bytes | None]]


def forwarder(host: str, port: int, timeout: float = 2.0) -> Answer:
    """An :data:`Answer` that asks a DNS server over UDP (None when it stays silent)."""

    async def answer(wire: bytes) -> bytes | None:
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.connect((host, port))
            await loop.sock_sendall(sock, wire)
            try:
                async with asyncio.timeout(timeout):
                    return await loop.sock_recv(sock, 65535)
            except TimeoutError:
                return None

    return answer


@dataclass
class DoqStats:
    handshakes: int = 0
    #: Connections that ended (closed by the client, or idle).
    closed: int = 0
    queries: int = 0
    #: Stream IDs the queries came on, and the message ID of each query (§4.2.1: 0).
    streams: list[int] = field(default_factory=list)
    query_ids: list[int] = field(default_factory=list)


class _Protocol(QuicConnectionProtocol):
    def __init__(self, *args: Any, frontend: DoqFrontend, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.frontend = frontend
        self._buffers: dict[int, bytearray] = {}

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.HandshakeCompleted):
            self.frontend.stats.handshakes += 1
        elif isinstance(event, events.ConnectionTerminated):
            self.frontend.stats.closed += 1
        elif isinstance(event, events.StreamDataReceived):
            buffer = self._buffers.setdefault(event.stream_id, bytearray())
            buffer += event.data
            if event.end_stream:
                del self._buffers[event.stream_id]
                task = asyncio.get_running_loop().create_task(
                    self._answer(event.stream_id, bytes(buffer)))
                self.frontend.tasks.add(task)
                task.add_done_callback(self.frontend.tasks.discard)

    async def _answer(self, stream_id: int, data: bytes) -> None:
        if len(data) < 2:
            return
        (length,) = _LENGTH.unpack_from(data)
        wire = data[2 : 2 + length]
        stats = self.frontend.stats
        stats.queries += 1
        stats.streams.append(stream_id)
        stats.query_ids.append(int.from_bytes(wire[:2], "big") if len(wire) >= 2 else -1)
        reply = await self.frontend.answer(wire)
        if reply is None:
            self._quic.reset_stream(stream_id, self.frontend.reset_code)
        else:
            self._quic.send_stream_data(stream_id, _LENGTH.pack(len(reply)) + reply,
                                        end_stream=True)  # fmt: skip
        self.transmit()


class DoqFrontend:
    """A DoQ listener on ``host``; ``.port`` once started."""

    def __init__(self, answer: Answer, host: str = "127.0.0.1",
                 reset_code: int = DOQ_INTERNAL_ERROR) -> None:  # fmt: skip
        self.answer = answer
        self.host = host
        self.port = 0
        self.reset_code = reset_code
        self.stats = DoqStats()
        self.tasks: set[asyncio.Task[None]] = set()
        self._server: QuicServer | None = None

    async def start(self, cert_file: str, key_file: str, port: int = 0,
                    alpn: list[str] | None = None) -> DoqFrontend:  # fmt: skip
        config = QuicConfiguration(is_client=False, alpn_protocols=alpn or ["doq"])
        config.load_cert_chain(cert_file, key_file)
        if port == 0:
            # aioquic's serve() does not report the port it bound: pick a free one.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind((self.host, 0))
                port = int(probe.getsockname()[1])

        def protocol(*args: Any, **kwargs: Any) -> _Protocol:
            return _Protocol(*args, frontend=self, **kwargs)

        self._server = await serve(self.host, port, configuration=config,
                                   create_protocol=protocol)  # fmt: skip
        self.port = port
        return self

    def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()
            self._server = None
