"""UDP / TCP / TLS exchanges: deadlines, byte caps, typed outcomes.

A transport sends one request and returns either the reply's bytes
(:class:`Received`) or an :class:`Outcome` saying why there are none. No
exception that a server can cause escapes from here; one that the process causes
does: running out of file descriptors raises
:class:`~exporter.capacity.DescriptorsExhausted`, which the scheduler counts as a
skip instead of blaming the server with a network error.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import functools
import ipaddress
import socket
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass

from exporter import certs, udp
from exporter.capacity import DescriptorsExhausted, out_of_descriptors
from exporter.config import TlsSettings
from exporter.outcome import Outcome, WireEvent

_LENGTH = struct.Struct("!H")


@dataclass(frozen=True, slots=True)
class Received:
    wire: bytes
    #: Datagrams with another message ID that arrived before the matching one.
    mismatched: int = 0
    #: The message's length when ``wire`` holds only its first bytes (a transfer's
    #: first message longer than the cap); None when ``wire`` is the whole message.
    length: int | None = None
    #: Earliest certificate expiry of the TLS/QUIC peer's chain (exporter/certs.py).
    cert_not_after: float | None = None


ExchangeResult = Received | Outcome


def failure_outcome(exc: BaseException, transport: str, received: int = 0) -> Outcome:
    """Map a socket-level exception to the outcome it means."""
    if isinstance(exc, TimeoutError):
        return Outcome(WireEvent.TIMEOUT, error="timed out", transport=transport,
                       bytes_received=received)  # fmt: skip
    if isinstance(exc, ConnectionRefusedError):
        return Outcome(WireEvent.CONNECTION_REFUSED, error="connection refused",
                       transport=transport)  # fmt: skip
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return Outcome(WireEvent.RESET, error="connection reset by peer", transport=transport,
                       bytes_received=received)  # fmt: skip
    if isinstance(exc, asyncio.IncompleteReadError):
        what = "mid-message" if exc.partial or received else "before replying"
        return Outcome(WireEvent.CLOSED, error=f"connection closed {what}",
                       transport=transport, bytes_received=received + len(exc.partial))  # fmt: skip
    if isinstance(exc, ssl.SSLCertVerificationError | ssl.CertificateError):
        return Outcome(WireEvent.CERT_INVALID, error=f"TLS certificate: {exc}"[:200],
                       transport=transport)  # fmt: skip
    if isinstance(exc, ssl.SSLError):
        return Outcome(WireEvent.TLS_ERROR, error=f"TLS: {exc}"[:200], transport=transport)
    if isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED:
        return Outcome(WireEvent.CONNECTION_REFUSED, error="connection refused",
                       transport=transport)  # fmt: skip
    if isinstance(exc, OSError | EOFError):
        return Outcome(WireEvent.NETWORK_ERROR, error=f"{type(exc).__name__}: {exc}"[:200],
                       transport=transport)  # fmt: skip
    raise exc


_MAX_DATAGRAM = 65535
#: Datagrams with other IDs read per probe before we stop listening: a flooding
#: server costs one result, never unbounded work.
_MAX_STRAY_DATAGRAMS = udp.MAX_STRAY_DATAGRAMS


@functools.lru_cache(maxsize=65_536)
def _literal(host: str) -> tuple[socket.AddressFamily, str] | None:
    """The family and canonical text of an IP literal (the form ``recvfrom`` reports
    a source in), None for a name (cached: a fleet asks per probe)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return (socket.AF_INET6 if ip.version == 6 else socket.AF_INET), str(ip)


async def _resolve_udp(host: str, port: int) -> tuple[socket.AddressFamily, tuple[str, int]]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    family, _, _, _, address = infos[0]
    return family, (str(address[0]), int(address[1]))


async def udp_exchange(host: str, port: int, wire: bytes, msg_id: int,
                       timeout: float) -> ExchangeResult:  # fmt: skip
    """One datagram out, the matching datagram back (or why not).

    Over the event loop's shared UDP sockets (exporter/udp.py): a waiting probe
    costs a future and a timer, not a descriptor, and replies are matched by source
    address, port, message ID and question; ICMP port unreachable still ends the
    probe as ``connection_refused``.
    """
    literal = _literal(host)
    try:
        if literal is None:
            loop = asyncio.get_running_loop()
            started = loop.time()
            async with asyncio.timeout(timeout):
                family, address = await _resolve_udp(host, port)
            timeout -= loop.time() - started
        else:
            family, address = literal[0], (literal[1], port)
        try:
            reply, mismatched = await udp.exchange(family, address, wire, msg_id, timeout)
        except udp.Busy:
            return await _connected_exchange(family, address, wire, msg_id, timeout)
    except (OSError, EOFError, UnicodeError) as exc:
        if out_of_descriptors(exc):
            raise DescriptorsExhausted(str(exc)) from exc
        if isinstance(exc, UnicodeError):
            exc = OSError(f"bad host name: {exc}")
        return failure_outcome(exc, "udp")
    if reply is None:
        return failure_outcome(TimeoutError(), "udp")
    # A reply with our ID, or (only replies with other IDs came) the last of those:
    # the server answered, but not us; the reply reader judges it mismatched.
    return Received(reply, mismatched)


async def _connected_exchange(family: socket.AddressFamily, address: tuple[str, int],
                              wire: bytes, msg_id: int,
                              timeout: float) -> ExchangeResult:  # fmt: skip
    """The same exchange on a connected socket of its own: the kernel filters other
    sources and reports ICMP port unreachable as ECONNREFUSED. Used when the
    shared sockets are busy: the request's ID already pending for the destination
    on every one (a TSIG-signed request cannot take another ID), or a full send
    buffer."""
    loop = asyncio.get_running_loop()
    sock: socket.socket | None = None
    done: asyncio.Future[bytes] = loop.create_future()
    mismatched = 0
    last_mismatch: bytes | None = None

    def on_readable() -> None:
        nonlocal mismatched, last_mismatch
        while not done.done():
            try:
                data = sock.recv(_MAX_DATAGRAM) if sock is not None else b""
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ECONNREFUSED from ICMP, and the like
                done.set_exception(exc)
                return
            if len(data) >= 2 and int.from_bytes(data[:2], "big") == msg_id:
                done.set_result(data)
                return
            mismatched += 1
            last_mismatch = data
            if mismatched >= _MAX_STRAY_DATAGRAMS:
                done.set_result(data)  # judged as mismatched by the reply reader
                return

    reading = False
    try:
        async with asyncio.timeout(timeout):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.connect(address)
            loop.add_reader(sock.fileno(), on_readable)
            reading = True
            sock.send(wire)
            return Received(await done, mismatched)
    except TimeoutError as exc:
        if last_mismatch is not None:
            return Received(last_mismatch, mismatched)
        return failure_outcome(exc, "udp")
    finally:
        if sock is not None:
            if reading:
                loop.remove_reader(sock.fileno())
            sock.close()


def client_ssl_context(settings: TlsSettings) -> ssl.SSLContext:
    """An RFC 7858 client context: verification on unless the config says otherwise."""
    context = ssl.create_default_context(cafile=settings.ca_file)
    if not settings.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if settings.cert_file:
        context.load_cert_chain(settings.cert_file, settings.key_file)
    return context


@dataclass(slots=True)
class StreamSession:
    """An open TCP/TLS connection with DNS length framing (RFC 1035 §4.2.2)."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    transport_name: str
    received: int = 0

    def write(self, wire: bytes) -> None:
        """Queue one length-prefixed message.

        Over TLS the length goes in a TLS record of its own: Apple's dnssd-proxy
        reads the length out of a record, then waits for the socket before reading
        on, so a message sharing a record with its length is answered only after
        the next one. Each write on asyncio's SSL transport is one SSL_write, one
        record.
        """
        if self.transport_name == "tls":
            self.writer.write(_LENGTH.pack(len(wire)))
            self.writer.write(wire)
        else:
            self.writer.write(_LENGTH.pack(len(wire)) + wire)

    async def send(self, wire: bytes) -> None:
        self.write(wire)
        await self.writer.drain()

    async def read_head(self, max_bytes: int, needed: Callable[[bytes], int | None]) -> Received:
        """One length-prefixed message, or only its first bytes when it is longer than
        ``max_bytes``: those, extended to what ``needed(head)`` says the head must hold."""
        (length,) = _LENGTH.unpack(await self.reader.readexactly(2))
        self.received += 2
        if length <= max_bytes:
            data = await self.reader.readexactly(length)
            self.received += length
            return Received(data)
        head = await self.reader.readexactly(max_bytes)
        self.received += max_bytes
        while (want := needed(head)) is not None and len(head) < min(want, length):
            more = await self.reader.readexactly(min(want, length) - len(head))
            self.received += len(more)
            head += more
        return Received(head, length=length)

    async def read_message(self, max_bytes: int = 65535) -> bytes:
        """One length-prefixed message; raises on EOF/reset, refuses more than max_bytes."""
        (length,) = _LENGTH.unpack(await self.reader.readexactly(2))
        self.received += 2
        if length > max_bytes:
            raise _OverCap(length, max_bytes)
        data = await self.reader.readexactly(length)
        self.received += length
        return data

    async def close(self) -> None:
        self.writer.close()
        try:
            async with asyncio.timeout(1.0):
                await self.writer.wait_closed()
        except (OSError, TimeoutError, ssl.SSLError):
            pass  # the peer may already be gone; nothing more to learn


class _OverCap(Exception):  # noqa: N818 - private, never escapes this module
    def __init__(self, length: int, cap: int) -> None:
        super().__init__(f"message of {length} bytes exceeds the cap of {cap}")


async def open_stream(host: str, port: int, transport_name: str,
                      ssl_context: ssl.SSLContext | None,
                      server_hostname: str | None) -> StreamSession:  # fmt: skip
    try:
        reader, writer = await asyncio.open_connection(
            host,
            port,
            ssl=ssl_context if transport_name == "tls" else None,
            server_hostname=(server_hostname or host) if transport_name == "tls" else None,
            limit=2**16 + 2,
        )
    except OSError as exc:
        if out_of_descriptors(exc):  # the process's state, not the server's: a skip
            raise DescriptorsExhausted(str(exc)) from exc
        raise
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return StreamSession(reader, writer, transport_name)


async def stream_exchange(host: str, port: int, wire: bytes, timeout: float, *,
                          transport_name: str = "tcp",
                          ssl_context: ssl.SSLContext | None = None,
                          server_hostname: str | None = None,
                          max_bytes: int = 65535,
                          needed: Callable[[bytes], int | None] | None = None,
                          ) -> ExchangeResult:  # fmt: skip
    """Connect, send one message, read the first reply message, close.

    Transfers stop after the first message: it carries the rcode and the first
    SOA, which is all the classification needs. With ``needed``, a first message
    longer than ``max_bytes`` is read only as far as ``max_bytes`` or what
    ``needed`` asks for (its header and first SOA), whichever is more; without
    it, such a message is ``malformed``.
    """
    session: StreamSession | None = None
    try:
        async with asyncio.timeout(timeout):
            session = await open_stream(host, port, transport_name, ssl_context,
                                        server_hostname)  # fmt: skip
            await session.send(wire)
            if needed is not None:
                head = await session.read_head(max_bytes, needed)
            else:
                head = Received(await session.read_message(max_bytes))
            expiry = certs.ssl_chain_expiry(session.writer.get_extra_info("ssl_object"))
            return head if expiry is None else dataclasses.replace(head, cert_not_after=expiry)
    except _OverCap as exc:
        received = session.received if session else 0
        return Outcome(WireEvent.MALFORMED, error=str(exc), transport=transport_name,
                       bytes_received=received)  # fmt: skip
    except (OSError, EOFError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
        return failure_outcome(exc, transport_name, session.received if session else 0)
    finally:
        if session is not None:
            await session.close()


async def session_exchange(transport_name: str, host: str, port: int, wire: bytes,
                           timeout: float, *, tls: TlsSettings, method: str = "POST",
                           path: str = "/dns-query",
                           max_bytes: int = 65535) -> ExchangeResult:  # fmt: skip
    """DoH or DoQ on the server's shared connection: exporter/doh.py, exporter/doq.py.

    Imported on first use: h2 and aioquic (with cryptography) cost start-up time
    and memory an exporter that never speaks them should not pay.
    """
    if transport_name == "doh":
        from exporter import doh

        return await doh.exchange(host, port, wire, timeout, settings=tls, method=method,
                                  path=path, max_bytes=max_bytes)  # fmt: skip
    from exporter import doq

    return await doq.exchange(host, port, wire, timeout, settings=tls)
