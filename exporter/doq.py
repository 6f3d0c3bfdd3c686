"""DNS over dedicated QUIC connections (RFC 9250): one connection per server, one
stream per probe.

§4.1: ALPN ``doq``, UDP port 853 by default. §4.2: each query on the next
client-initiated bidirectional stream, framed by a 2-byte length like DNS over
TCP, then STREAM FIN; the reply comes back on the same stream. §4.2.1: message
ID 0 (the stream pairs query and reply). Every server failure is an
:class:`Outcome`: a handshake that never completes, a version negotiation with
no common version, ALPN refused, a certificate that does not verify, a reset
stream, a closed connection.

QUIC comes from ``aioquic`` (what dnspython's own DoQ uses): its connection is a
sans-IO state machine driven here by a datagram endpoint of ours.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
from dataclasses import dataclass, field, replace
from typing import cast

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicErrorCode

from exporter import certs, sessions
from exporter.config import TlsSettings, Transport
from exporter.outcome import Outcome, WireEvent
from exporter.sessions import PerLoop, SharedConnections
from exporter.transport import ExchangeResult, Received, failure_outcome

# Every failure becomes an Outcome; aioquic's per-connection log lines (INFO for each
# handshake, ERROR for each failed one) would only repeat them, once per probe.
logging.getLogger("quic").setLevel(logging.CRITICAL)

ALPN = "doq"
DEFAULT_PORT = 853
MAX_CONNECTIONS = 4096
#: A connection we keep for the next probes should outlive a minute's interval;
#: the effective idle timeout is the smaller of ours and the server's (RFC 9000 §10.1).
IDLE_TIMEOUT = 300.0
_LENGTH = struct.Struct("!H")

#: RFC 9250 §4.3 error codes, for stream resets and connection closes.
DOQ_ERRORS = {0x0: "DOQ_NO_ERROR", 0x1: "DOQ_INTERNAL_ERROR", 0x2: "DOQ_PROTOCOL_ERROR",
              0x3: "DOQ_REQUEST_CANCELLED", 0x4: "DOQ_EXCESSIVE_LOAD",
              0x5: "DOQ_UNSPECIFIED_ERROR", 0xD098EA5E: "DOQ_ERROR_RESERVED"}  # fmt: skip
DOQ_REQUEST_CANCELLED = 0x3

# TLS alerts (RFC 8446 §6.2) that QUIC carries as CRYPTO_ERROR + alert (RFC 9001 §4.8).
_ALERT_NO_APPLICATION_PROTOCOL = 120
_CERTIFICATE_ALERTS = frozenset({42, 43, 44, 45, 46, 48})  # bad .. unknown_ca
_NO_COMMON_VERSION = "common protocol version"  # aioquic's reason after Version Negotiation


def doq_error_name(code: int) -> str:
    return DOQ_ERRORS.get(code, f"error {code:#x}")


# --- pure: framing and judging ------------------------------------------------------


def frame(wire: bytes) -> bytes:
    """§4.2: a DoQ message is a 2-octet length and the message."""
    return _LENGTH.pack(len(wire)) + wire


def first_message(buffer: bytes) -> bytes | None:
    """The first complete length-prefixed message in ``buffer``, if it has arrived."""
    if len(buffer) < 2:
        return None
    (length,) = _LENGTH.unpack_from(buffer)
    if len(buffer) < 2 + length:
        return None
    return buffer[2 : 2 + length]


def terminated_outcome(error_code: int, reason: str, handshake_done: bool) -> Outcome:
    """What a QUIC connection close means for the probe waiting on it."""
    crypto = error_code - QuicErrorCode.CRYPTO_ERROR
    text = f"{reason or 'no reason given'} (code {error_code:#x})"[:200]
    if error_code == QuicErrorCode.VERSION_NEGOTIATION_ERROR or _NO_COMMON_VERSION in reason:
        return Outcome(WireEvent.QUIC_VERSION_MISMATCH, transport="doq",
                       error=f"no common QUIC version: {text}")  # fmt: skip
    if 0 <= crypto <= 0xFF:
        if crypto == _ALERT_NO_APPLICATION_PROTOCOL:
            return Outcome(WireEvent.ALPN_MISMATCH, transport="doq",
                           error=f"ALPN {ALPN} not offered: {text}")  # fmt: skip
        if crypto in _CERTIFICATE_ALERTS:
            return Outcome(WireEvent.CERT_INVALID, transport="doq",
                           error=f"TLS certificate: {text}")  # fmt: skip
        return Outcome(WireEvent.TLS_ERROR, transport="doq", error=f"TLS: {text}")
    if not handshake_done:
        return Outcome(WireEvent.TLS_ERROR, transport="doq",
                       error=f"QUIC handshake failed: {text}")  # fmt: skip
    return Outcome(WireEvent.CLOSED, transport="doq", details={"quic_error": error_code},
                   error=f"QUIC connection closed: {text}")  # fmt: skip


# --- I/O: one QUIC connection --------------------------------------------------------


@dataclass(slots=True)
class _Stream:
    done: asyncio.Future[ExchangeResult]
    buffer: bytearray = field(default_factory=bytearray)


class _Connection(QuicConnectionProtocol):
    """A DoQ client connection; aioquic calls :meth:`quic_event_received`."""

    def __init__(self, quic: QuicConnection) -> None:
        super().__init__(quic)
        self.streams: dict[int, _Stream] = {}
        self.handshake: asyncio.Future[Outcome | None] = asyncio.get_running_loop().create_future()
        self.cert_not_after: float | None = None
        self.closed = False

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.HandshakeCompleted):
            self._on_handshake()
        elif isinstance(event, events.StreamDataReceived):
            self._on_data(event.stream_id, event.data, event.end_stream)
        elif isinstance(event, events.StreamReset | events.StopSendingReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None and not stream.done.done():
                what = "reset" if isinstance(event, events.StreamReset) else "STOP_SENDING"
                stream.done.set_result(Outcome(
                    WireEvent.STREAM_RESET, transport="doq", bytes_received=len(stream.buffer),
                    error=f"QUIC stream {what} by the server ({doq_error_name(event.error_code)})",
                    cert_not_after=self.cert_not_after,
                    details={"stream_error": event.error_code}))  # fmt: skip
        elif isinstance(event, events.ConnectionTerminated):
            self._on_terminated(event.error_code, event.reason_phrase)

    def _on_handshake(self) -> None:
        tls = self._quic.tls
        chain = [getattr(tls, "_peer_certificate", None),
                 *getattr(tls, "_peer_certificate_chain", [])]  # fmt: skip
        self.cert_not_after = certs.earliest(certs.x509_expiry(c) for c in chain if c is not None)
        if not self.handshake.done():
            self.handshake.set_result(None)

    def _on_data(self, stream_id: int, data: bytes, end: bool) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or stream.done.done():
            return
        stream.buffer += data
        message = first_message(bytes(stream.buffer))
        if message is not None:
            # Transfers answer with several messages (§4.2); the first one has the
            # rcode and the first SOA, all the classification needs.
            stream.done.set_result(Received(message, cert_not_after=self.cert_not_after))
        elif end:
            what = "mid-message" if stream.buffer else "before replying"
            stream.done.set_result(Outcome(
                WireEvent.CLOSED, transport="doq", bytes_received=len(stream.buffer),
                error=f"stream finished {what}", cert_not_after=self.cert_not_after))  # fmt: skip

    def _on_terminated(self, error_code: int, reason: str) -> None:
        self.closed = True
        outcome = terminated_outcome(error_code, reason, self.handshake.done())
        if not self.handshake.done():
            self.handshake.set_result(outcome)
            return
        outcome = replace(outcome, cert_not_after=self.cert_not_after)
        for stream in self.streams.values():
            if not stream.done.done():
                stream.done.set_result(replace(outcome, bytes_received=len(stream.buffer)))

    async def exchange(self, wire: bytes) -> ExchangeResult:
        stream_id = self._quic.get_next_available_stream_id()
        stream = _Stream(asyncio.get_running_loop().create_future())
        self.streams[stream_id] = stream
        try:
            self._quic.send_stream_data(stream_id, frame(wire), end_stream=True)
            self.transmit()
            return await stream.done
        finally:
            del self.streams[stream_id]
            if not self.closed:
                self._abandon(stream_id)

    def _abandon(self, stream_id: int) -> None:
        """Stop the server's side of a stream we are done with (a transfer's other
        messages, a reply past our deadline): STOP_SENDING with REQUEST_CANCELLED."""
        quic_stream = self._quic._streams.get(stream_id)  # no public "is it finished?"
        if quic_stream is None or quic_stream.receiver.is_finished:
            return
        try:
            self._quic.stop_stream(stream_id, DOQ_REQUEST_CANCELLED)
            self.transmit()
        except ValueError:  # pragma: no cover - stream already gone on aioquic's side
            pass

    @property
    def usable(self) -> bool:
        return not self.closed

    def shut(self) -> None:
        if not self.closed:
            self.closed = True
            self.close(error_code=0, reason_phrase="")  # DOQ_NO_ERROR (§4.3)
        if self._transport is not None:
            # Give the CONNECTION_CLOSE datagram a moment, then drop the socket.
            asyncio.get_running_loop().call_later(0.1, self._transport.close)

    def close_socket(self) -> None:
        """Drop the socket now (a stopped loop never runs shut()'s delayed close): UDP
        sent the CONNECTION_CLOSE datagram as soon as shut() asked. aioquic's timer
        goes too, or it would fire on a closed socket."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    async def wait_released(self) -> None:
        self.close_socket()
        await asyncio.sleep(0)  # connection_lost runs on the next turn


# --- the pool -----------------------------------------------------------------------


def configuration(settings: TlsSettings, server_name: str) -> QuicConfiguration:
    config = QuicConfiguration(is_client=True, alpn_protocols=[ALPN],
                               idle_timeout=IDLE_TIMEOUT, server_name=server_name)  # fmt: skip
    if settings.verify:
        config.verify_mode = ssl.CERT_REQUIRED
        if settings.ca_file:
            config.load_verify_locations(cafile=settings.ca_file)
    else:
        config.verify_mode = ssl.CERT_NONE
    if settings.cert_file:
        config.load_cert_chain(settings.cert_file, settings.key_file)
    return config


async def _connect(host: str, port: int, server_name: str, settings: TlsSettings,
                   timeout: float) -> _Connection | Outcome:  # fmt: skip
    # Bounded by the deadline of the probe that starts it: a silent server must not
    # hold a handshake open for the probes after it.
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        family, _, _, _, address = infos[0]
        quic = QuicConnection(configuration=configuration(settings, server_name))
        local = ("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0)
        _, protocol = await loop.create_datagram_endpoint(
            lambda: _Connection(quic), local_addr=local, family=family
        )
    except (OSError, UnicodeError, ssl.SSLError) as exc:
        if isinstance(exc, UnicodeError):
            exc = OSError(f"bad host name: {exc}")
        return failure_outcome(exc, "doq")
    assert isinstance(protocol, _Connection)
    try:
        async with asyncio.timeout(timeout):
            protocol.connect((str(address[0]), int(address[1])))
            failed = await protocol.handshake
    except TimeoutError:
        protocol.shut()
        return Outcome(WireEvent.QUIC_HANDSHAKE_TIMEOUT, transport="doq",
                       error=f"no QUIC handshake within {timeout:g}s")  # fmt: skip
    except asyncio.CancelledError:
        # Shutdown cancels handshakes under way (SharedConnections.aclose).
        protocol.shut()
        protocol.close_socket()
        raise
    if failed is not None:
        protocol.shut()
        return failed
    return protocol


_POOLS = cast(PerLoop[SharedConnections[_Connection]],
              sessions.shared_pools(Transport.DOQ, MAX_CONNECTIONS))


def pool() -> SharedConnections[_Connection]:
    """This event loop's QUIC connections, one per (server, port, TLS name, settings)."""
    return _POOLS.get()


async def exchange(host: str, port: int, wire: bytes, timeout: float, *,
                   settings: TlsSettings) -> ExchangeResult:  # fmt: skip
    """One DoQ query on the server's shared QUIC connection (opened if needed)."""
    server_name = settings.server_name or host
    connection: _Connection | Outcome | None = None
    try:
        async with asyncio.timeout(timeout):
            connection = await pool().get(
                sessions.server_key(host, port, settings),
                lambda: _connect(host, port, server_name, settings, timeout))
            if isinstance(connection, Outcome):
                return connection
            return await connection.exchange(wire)
    except TimeoutError as exc:
        if not isinstance(connection, _Connection):
            # The handshake this probe waited on (started by another) was not done.
            return Outcome(WireEvent.QUIC_HANDSHAKE_TIMEOUT, transport="doq",
                           error=f"no QUIC handshake within {timeout:g}s")  # fmt: skip
        # A server restarted without CONNECTION_CLOSE drops our packets until the idle
        # timeout: start afresh next time instead of timing out for minutes.
        pool().forget(connection)
        return replace(failure_outcome(exc, "doq"), cert_not_after=connection.cert_not_after)
