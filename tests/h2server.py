"""A DNS over HTTPS test server (TLS with ALPN h2, HTTP/2 from ``h2``) for what the
real DoH servers of the suite (Unbound, dnsdist) do not do on demand.

Modes:
- ``answer``: answers every query; ``max_streams`` sets its
  SETTINGS_MAX_CONCURRENT_STREAMS;
- ``reset``: every request's stream is reset (RST_STREAM, REFUSED_STREAM);
- ``goaway_first``: the first connection answers its first request with GOAWAY
  (last stream id 0: "not processed", RFC 9113 §6.8) and closes; later
  connections answer;
- ``close_second``: each connection answers its first request, then closes the
  TCP connection when the second arrives (a server closing an idle connection
  just as the client reuses it).

Answers are :func:`tests.doqserver.builtin_answer` for the POSTed or GET query.

    async with await H2Server.start(cert, key, "reset") as server:
        ...  # probe 127.0.0.1:server.port with transport doh
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from urllib.parse import parse_qs, urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from tests.doqserver import builtin_answer

MODES = ("answer", "reset", "goaway_first", "close_second")


class H2Server:
    def __init__(self, mode: str, max_streams: int = 100) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} not in {MODES}")
        self.mode = mode
        self.max_streams = max_streams
        #: The most streams open at once on one connection, as the server saw them.
        self.peak_streams = 0
        self.port = 0
        self.requests = 0
        self.connections = 0
        #: Connections open now (the client closing one ends it here too).
        self.open_connections = 0
        self._server: asyncio.Server | None = None

    @classmethod
    async def start(cls, cert: str, key: str, mode: str = "reset",
                    max_streams: int = 100, *, host: str = "127.0.0.1",
                    port: int = 0) -> H2Server:  # fmt: skip
        server = cls(mode, max_streams)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        context.set_alpn_protocols(["h2"])
        server._server = await asyncio.start_server(server._serve, host, port, ssl=context)
        server.port = int(server._server.sockets[0].getsockname()[1])
        return server

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_connections += 1
        first_connection = self.connections == 1
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.max_streams})
        writer.write(conn.data_to_send())
        try:
            await self._converse(conn, reader, writer, first_connection)
        except (OSError, ssl.SSLError, h2.exceptions.ProtocolError):
            pass
        finally:
            self.open_connections -= 1
            writer.close()

    async def _converse(self, conn: h2.connection.H2Connection, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter, first_connection: bool) -> None:  # fmt: skip
        requests_here = 0
        paths: dict[int, str] = {}
        bodies: dict[int, bytes] = {}
        while data := await reader.read(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived) and event.stream_id:
                    self.requests += 1
                    requests_here += 1
                    self.peak_streams = max(self.peak_streams, conn.open_inbound_streams)
                    headers = dict(event.headers or [])
                    paths[event.stream_id] = headers.get(b":path", b"/").decode()
                    if self.mode == "reset":
                        conn.reset_stream(event.stream_id,
                                          h2.errors.ErrorCodes.REFUSED_STREAM)  # fmt: skip
                    elif self.mode == "goaway_first" and first_connection:
                        conn.close_connection(last_stream_id=0)
                        writer.write(conn.data_to_send())
                        return
                    elif self.mode == "close_second" and requests_here == 2:
                        return
                elif isinstance(event, h2.events.DataReceived) and event.stream_id:
                    bodies[event.stream_id] = bodies.get(event.stream_id, b"") + (
                        event.data or b"")
                    conn.acknowledge_received_data(event.flow_controlled_length or 0,
                                                   event.stream_id)  # fmt: skip
                elif isinstance(event, h2.events.StreamEnded) and self.mode != "reset":
                    self._answer(conn, event.stream_id, paths.pop(event.stream_id, "/"),
                                 bodies.pop(event.stream_id, b""))  # fmt: skip
            writer.write(conn.data_to_send())
            await writer.drain()

    @staticmethod
    def _answer(conn: h2.connection.H2Connection, stream_id: int, path: str,
                body: bytes) -> None:  # fmt: skip
        if not body:  # GET: base64url in ?dns=, padding left out (RFC 8484 §6)
            encoded = parse_qs(urlsplit(path).query).get("dns", [""])[0]
            body = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        reply = builtin_answer(body)
        conn.send_headers(stream_id, [(":status", "200"),
                                      ("content-type", "application/dns-message"),
                                      ("content-length", str(len(reply)))])  # fmt: skip
        conn.send_data(stream_id, reply, end_stream=True)

    async def __aenter__(self) -> H2Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
