"""DNS over HTTPS (RFC 8484) on HTTP/2: one connection per server, one stream per probe.

A probe's query becomes one HTTP exchange: POST with the message as body, or GET
with it base64url-encoded in the ``dns`` parameter (§4.1; servers must take
both). The message ID is 0 (§4.1: HTTP pairs request and reply, and a varying ID
defeats HTTP caches). Every server failure is an :class:`Outcome`: a status
other than 200, a body that is not ``application/dns-message``, a reset stream,
ALPN without ``h2``, a handshake or certificate that fails.

HTTP/2 comes from ``h2`` (the sans-IO protocol engine dnspython's own DoH uses
through httpx) over an asyncio TLS stream of ours, so that the handshake's
certificate chain and ALPN result are ours to read. Connections are kept per
(server, port, TLS name, TLS settings) and per event loop, and shared by every
probe of that server: the TLS handshake is paid once, not per probe.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from dataclasses import dataclass, field
from typing import cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions

from exporter import certs, sessions
from exporter.config import TlsSettings, Transport
from exporter.outcome import Outcome, WireEvent
from exporter.sessions import PerLoop, SharedConnections
from exporter.transport import ExchangeResult, Received, client_ssl_context, failure_outcome

DNS_MESSAGE = "application/dns-message"
DEFAULT_PATH = "/dns-query"
#: DNS messages are at most 65535 bytes (RFC 8484 §6 keeps the RFC 1035 limit).
MAX_MESSAGE = 65535
#: Connections kept per event loop; the least recently used one is closed past it.
MAX_CONNECTIONS = 4096
_READ_CHUNK = 65536
#: How long a closing connection waits for the server's close_notify.
_CLOSE_WAIT = 1.0
#: Streams one connection carries at once, at most (the server's
#: SETTINGS_MAX_CONCURRENT_STREAMS may say fewer, RFC 9113 §5.1.2); more probes of
#: one server wait for a stream to end.
_MAX_STREAMS = 100


# --- pure: request and response -----------------------------------------------------


def request_headers(method: str, authority: str, path: str,
                    wire: bytes) -> tuple[list[tuple[str, str]], bytes]:  # fmt: skip
    """HTTP/2 headers and body of one DoH query (RFC 8484 §4.1)."""
    headers = [(":method", method), (":scheme", "https"), (":authority", authority)]
    if method == "GET":
        # §6: base64url without padding, in the variable "dns".
        encoded = base64.urlsafe_b64encode(wire).rstrip(b"=").decode()
        separator = "&" if "?" in path else "?"
        headers += [(":path", f"{path}{separator}dns={encoded}"), ("accept", DNS_MESSAGE)]
        return headers, b""
    headers += [(":path", path), ("accept", DNS_MESSAGE), ("content-type", DNS_MESSAGE),
                ("content-length", str(len(wire)))]  # fmt: skip
    return headers, wire


def judge_response(status: int | None, content_type: str | None, body: bytes,
                   cert_not_after: float | None) -> ExchangeResult:  # fmt: skip
    """A complete HTTP response: the DNS reply in it, or why there is none."""
    if status != 200:
        # §4.2.1: a non-2xx response carries no DNS reply. 2xx other than 200 (204...)
        # carries none either for a DoH query: still a gap, with the status to show.
        return Outcome(WireEvent.HTTP_STATUS, error=f"HTTP status {status}", transport="doh",
                       bytes_received=len(body), cert_not_after=cert_not_after,
                       details={"http_status": status})  # fmt: skip
    media = (content_type or "").split(";")[0].strip().lower()
    if media != DNS_MESSAGE:
        return Outcome(WireEvent.CONTENT_TYPE,
                       error=f"content type {content_type or '(none)'!s:.80}, not {DNS_MESSAGE}",
                       transport="doh", bytes_received=len(body),
                       cert_not_after=cert_not_after,
                       details={"http_status": status,
                                "content_type": content_type or ""})  # fmt: skip
    return Received(body, cert_not_after=cert_not_after)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


# --- I/O: one HTTP/2 connection ------------------------------------------------------


@dataclass(slots=True)
class _Stream:
    done: asyncio.Future[ExchangeResult]
    max_bytes: int
    status: int | None = None
    content_type: str | None = None
    body: bytearray = field(default_factory=bytearray)
    #: The server finished or reset the stream (else we cancel it when done with it).
    ended: bool = False


class _Connection:
    """An HTTP/2 client connection: a reader task feeds h2, streams wait on futures."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 cert_not_after: float | None) -> None:  # fmt: skip
        self.reader, self.writer = reader, writer
        self.cert_not_after = cert_not_after
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.streams: dict[int, _Stream] = {}
        #: Set whenever a stream ends: probes waiting for a free stream look again.
        self.freed = asyncio.Event()
        #: No new streams: the server sent GOAWAY, or the connection is gone.
        self.draining = False
        #: Streams the server finished: a connection that answered before can have
        #: been closed by the server as idle just as a probe used it.
        self.answered = 0
        self.closed = False
        self.h2.initiate_connection()
        self._flush()
        self.task = asyncio.get_running_loop().create_task(self._read_loop())

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.closed:
            self.writer.write(data)

    async def exchange(self, headers: list[tuple[str, str]], body: bytes,
                       max_bytes: int) -> ExchangeResult | None:  # fmt: skip
        """The stream's result; None when the server never took the stream (GOAWAY
        with a lower last-stream-id, RFC 9113 §6.8: safe to retry elsewhere)."""
        await self._free_stream()
        if self.draining:
            return None
        stream_id = self.h2.get_next_available_stream_id()
        stream = _Stream(asyncio.get_running_loop().create_future(), max_bytes)
        self.streams[stream_id] = stream
        try:
            self.h2.send_headers(stream_id, headers, end_stream=not body)
            if body:
                self.h2.send_data(stream_id, body, end_stream=True)
            self._flush()
            await self.writer.drain()
            result = await stream.done
            return None if result is _UNPROCESSED else result
        except (h2.exceptions.ProtocolError, OSError) as exc:
            self.shut()
            return _connection_outcome(exc, self.cert_not_after)
        finally:
            self.streams.pop(stream_id, None)
            if not stream.ended and not self.closed:
                # Given up (deadline, a body over the cap) before the end: tell the
                # server, or it keeps sending what we would only throw away.
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
                    self._flush()
            self.freed.set()

    async def _free_stream(self) -> None:
        """Until the server's stream limit leaves room for one more (a stream over it
        would be refused, or h2 raises TooManyStreamsError before sending it)."""
        while not self.draining and self.h2.open_outbound_streams >= min(
                _MAX_STREAMS, self.h2.remote_settings.max_concurrent_streams):
            self.freed.clear()
            await self.freed.wait()

    async def _read_loop(self) -> None:
        error: BaseException | None = None
        try:
            while True:
                data = await self.reader.read(_READ_CHUNK)
                if not data:
                    break
                for event in self.h2.receive_data(data):
                    self._on_event(event)
                self._flush()
        except (OSError, ssl.SSLError, h2.exceptions.ProtocolError) as exc:
            error = exc
        finally:
            self._end(error)

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived) and event.stream_id is not None:
            # Even for a stream we gave up on: the connection's window must reopen.
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.acknowledge_received_data(event.flow_controlled_length or 0,
                                                  event.stream_id)  # fmt: skip
        if isinstance(event, h2.events.ConnectionTerminated):
            # GOAWAY: streams up to last_stream_id may still complete; the ones past
            # it were never processed and can be retried (RFC 9113 §6.8).
            self.draining = True
            self.freed.set()
            last = event.last_stream_id if event.last_stream_id is not None else 2**31
            for number, waiting in self.streams.items():
                if number > last and not waiting.done.done():
                    waiting.done.set_result(_UNPROCESSED)
            return
        stream_id: int | None = getattr(event, "stream_id", None)
        if stream_id is None:
            return
        stream = self.streams.get(stream_id)
        if stream is None or stream.done.done():
            return
        if isinstance(event, h2.events.ResponseReceived):
            headers = list(event.headers or [])
            status = _header(headers, b":status")
            stream.status = int(status) if status and status.isdigit() else None
            stream.content_type = _header(headers, b"content-type")
        elif isinstance(event, h2.events.DataReceived):
            stream.body += event.data or b""
            if len(stream.body) > stream.max_bytes:
                stream.done.set_result(Outcome(
                    WireEvent.MALFORMED, transport="doh", bytes_received=len(stream.body),
                    error=f"DoH body exceeds the cap of {stream.max_bytes} bytes",
                    cert_not_after=self.cert_not_after))  # fmt: skip
        elif isinstance(event, h2.events.StreamEnded):
            stream.ended = True
            self.answered += 1
            stream.done.set_result(judge_response(stream.status, stream.content_type,
                                                  bytes(stream.body), self.cert_not_after))
        elif isinstance(event, h2.events.StreamReset):
            stream.ended = True
            code = int(event.error_code or 0)
            stream.done.set_result(Outcome(
                WireEvent.STREAM_RESET, transport="doh", bytes_received=len(stream.body),
                error=f"HTTP/2 stream reset by the server ({_h2_error_name(code)})",
                cert_not_after=self.cert_not_after,
                details={"stream_error": code}))  # fmt: skip

    def _end(self, error: BaseException | None) -> None:
        """The connection is over: every waiting stream gets its outcome."""
        self.draining = True
        self.freed.set()
        if not self.closed:
            self.closed = True
            self.writer.close()
        for stream in self.streams.values():
            if stream.done.done():
                continue
            if error is not None:
                outcome = _connection_outcome(error, self.cert_not_after)
            else:
                outcome = Outcome(WireEvent.CLOSED, transport="doh",
                                  error="connection closed before replying",
                                  bytes_received=len(stream.body),
                                  cert_not_after=self.cert_not_after)  # fmt: skip
            stream.done.set_result(outcome)

    @property
    def usable(self) -> bool:
        return not self.draining

    def shut(self) -> None:
        self._end(None)
        self.task.cancel()

    async def wait_released(self) -> None:
        """Until the reader task has ended and the TLS transport is closed. A server
        that never answers our close_notify is cut off after a second (asyncio would
        wait 30 s for it, past a shutdown's end)."""
        await asyncio.gather(self.task, return_exceptions=True)
        try:
            async with asyncio.timeout(_CLOSE_WAIT):
                await self.writer.wait_closed()
        except (TimeoutError, OSError, ssl.SSLError):
            self.writer.transport.abort()


#: A stream the server never processed (past a GOAWAY's last stream id).
_UNPROCESSED = Outcome(WireEvent.CLOSED, error="not processed before GOAWAY", transport="doh")


def _h2_error_name(code: int) -> str:
    try:
        return h2.errors.ErrorCodes(code).name
    except ValueError:
        return f"error {code}"


def _connection_outcome(exc: BaseException, cert_not_after: float | None) -> Outcome:
    if isinstance(exc, h2.exceptions.ProtocolError):
        outcome = Outcome(WireEvent.MALFORMED, error=f"HTTP/2: {exc}"[:200], transport="doh")
    else:
        outcome = failure_outcome(exc, "doh")
    return _with_cert(outcome, cert_not_after)


def _with_cert(outcome: Outcome, cert_not_after: float | None) -> Outcome:
    if cert_not_after is None or outcome.cert_not_after is not None:
        return outcome
    from dataclasses import replace

    return replace(outcome, cert_not_after=cert_not_after)


def handshake_outcome(exc: BaseException, transport: str) -> Outcome:
    """A failed TLS handshake: ALPN refused by alert, certificate, or anything else."""
    if isinstance(exc, ssl.SSLError) and "NO_APPLICATION_PROTOCOL" in str(exc.reason or ""):
        # RFC 7301 §3.2: a server that supports none of our protocols sends
        # no_application_protocol (120) instead of carrying on without ALPN.
        return Outcome(WireEvent.ALPN_MISMATCH, error="server refused ALPN h2 "
                       "(no_application_protocol)", transport=transport)  # fmt: skip
    return failure_outcome(exc, transport)


# --- connections kept per server ---------------------------------------------------


#: SSL contexts are costly to build: one per distinct TLS setting (ALPN h2 set).
_contexts: dict[TlsSettings, ssl.SSLContext] = {}


def _context(settings: TlsSettings) -> ssl.SSLContext:
    context = _contexts.get(settings)
    if context is None:
        context = client_ssl_context(settings)
        # RFC 8484 §5.2: HTTP/2 is the minimum recommended version; we speak only it.
        context.set_alpn_protocols(["h2"])
        _contexts[settings] = context
    return context


async def _connect(host: str, port: int, server_name: str, settings: TlsSettings,
                   timeout: float) -> _Connection | Outcome:  # fmt: skip
    # Bounded by the deadline of the probe that starts it: a stalled server must not
    # hold a handshake open for the probes after it.
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=_context(settings), server_hostname=server_name,
                limit=_READ_CHUNK,
            )  # fmt: skip
    except (OSError, EOFError, ssl.SSLError, UnicodeError, TimeoutError) as exc:
        if isinstance(exc, UnicodeError):
            exc = OSError(f"bad host name: {exc}")
        return handshake_outcome(exc, "doh")
    ssl_object = writer.get_extra_info("ssl_object")
    expiry = certs.ssl_chain_expiry(ssl_object)
    alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
    if alpn != "h2":
        writer.close()
        return Outcome(WireEvent.ALPN_MISMATCH, transport="doh", cert_not_after=expiry,
                       error=f"server did not select ALPN h2 (got {alpn or 'none'})",
                       details={"alpn": alpn or ""})  # fmt: skip
    return _Connection(reader, writer, expiry)


_POOLS = cast(PerLoop[SharedConnections[_Connection]],
              sessions.shared_pools(Transport.DOH, MAX_CONNECTIONS))


def pool() -> SharedConnections[_Connection]:
    """This event loop's HTTP/2 connections, one per (server, port, TLS name, settings)."""
    return _POOLS.get()


async def exchange(host: str, port: int, wire: bytes, timeout: float, *,
                   settings: TlsSettings, method: str = "POST", path: str = DEFAULT_PATH,
                   max_bytes: int = MAX_MESSAGE) -> ExchangeResult:  # fmt: skip
    """One DoH query on the server's shared HTTP/2 connection (opened if needed)."""
    server_name = settings.server_name or host
    authority = server_name if port == 443 else f"{_bracketed(server_name)}:{port}"
    headers, body = request_headers(method, authority, path, wire)
    connection: _Connection | Outcome | None = None
    result: ExchangeResult | None = None
    try:
        async with asyncio.timeout(timeout):
            # A second try, on a fresh connection, only when the server never saw the
            # stream: past a GOAWAY's last stream id (RFC 9113 §6.8), or on a connection
            # that had answered before and was closed (idle) as this probe used it.
            for _ in range(2):
                connection = await pool().get(
                    sessions.server_key(host, port, settings),
                    lambda: _connect(host, port, server_name, settings, timeout))
                if isinstance(connection, Outcome):
                    return connection
                reused = connection.answered > 0
                result = await connection.exchange(headers, body, max_bytes)
                if result is not None and not (reused and _lost_unseen(result)):
                    return result
            if result is not None:
                return result
            expiry = connection.cert_not_after if connection is not None else None
            return _with_cert(_UNPROCESSED, expiry)
    except TimeoutError as exc:
        expiry = connection.cert_not_after if isinstance(connection, _Connection) else None
        return _with_cert(failure_outcome(exc, "doh"), expiry)


def _lost_unseen(result: ExchangeResult) -> bool:
    return (isinstance(result, Outcome) and result.bytes_received == 0
            and result.event in (WireEvent.CLOSED, WireEvent.RESET))  # fmt: skip


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host
