"""A hostile DNS over HTTPS server: TLS with ALPN h2, HTTP/2 from ``h2``, and every
request's stream reset (RST_STREAM with REFUSED_STREAM) instead of answered.

The real DoH servers of the suite (Unbound, dnsdist) do not reset streams on
demand; this one exists for the ``stream_reset`` cause.

    async with await ResettingH2Server.start(cert, key) as server:
        ...  # probe 127.0.0.1:server.port with transport doh
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

import h2.config
import h2.connection
import h2.errors
import h2.events


class ResettingH2Server:
    def __init__(self) -> None:
        self.port = 0
        self.requests = 0
        self._server: asyncio.Server | None = None

    @classmethod
    async def start(cls, cert: str, key: str) -> ResettingH2Server:
        server = cls()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        context.set_alpn_protocols(["h2"])
        server._server = await asyncio.start_server(server._serve, "127.0.0.1", 0, ssl=context)
        server.port = int(server._server.sockets[0].getsockname()[1])
        return server

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        with contextlib.suppress(OSError, ssl.SSLError, h2.exceptions.ProtocolError):
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived) and event.stream_id:
                        self.requests += 1
                        conn.reset_stream(event.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                writer.write(conn.data_to_send())
        writer.close()

    async def __aenter__(self) -> ResettingH2Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
