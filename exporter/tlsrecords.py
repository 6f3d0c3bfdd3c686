"""Server-side TLS that sees record boundaries, for the reference server.

asyncio's SSL transport hands a server a byte stream: where one TLS record ended
and the next began is gone. Some servers act per record, though. Apple's
dnssd-proxy reads a DNS length prefix out of a record and then waits for the
socket to become readable again before it reads the message: when both came in
one record, the message sits in its TLS library's buffer until the client's next
record arrives. To behave like that, :class:`RecordTls` runs TLS over memory BIOs
and feeds them one record (RFC 8446 §5.1: a 5-byte header with the length, then
the body) at a time, so each read returns exactly one record's plaintext.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

#: TLS record header: content type (1), legacy version (2), length (2).
_RECORD_HEADER = 5


class RecordTls:
    """One server-side TLS connection read record by record.

    Reads raise what a stream does at its end (``IncompleteReadError``, also for
    the peer's close_notify, or ``ConnectionError``) and ``ssl.SSLError`` for TLS
    failures.
    """

    def __init__(self, context: ssl.SSLContext, reader: asyncio.StreamReader,
                 raw: asyncio.StreamWriter) -> None:  # fmt: skip
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._reader = reader
        self.raw = raw

    async def _next_record(self) -> bytes:
        header = await self._reader.readexactly(_RECORD_HEADER)
        length = int.from_bytes(header[3:5], "big")
        return header + await self._reader.readexactly(length)

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data and not self.raw.is_closing():
            self.raw.write(data)

    async def handshake(self) -> None:
        while True:
            try:
                self._tls.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                self._incoming.write(await self._next_record())
                continue
            self._flush()  # our Finished (and TLS 1.3 session tickets)
            return

    async def read_record(self) -> bytes:
        """The plaintext of the next record that carries application data."""
        while True:
            self._incoming.write(await self._next_record())
            chunks: list[bytes] = []
            while True:
                try:
                    chunk = self._tls.read(1 << 16)
                except ssl.SSLWantReadError:
                    break
                if not chunk:  # the peer's close_notify
                    raise asyncio.IncompleteReadError(b"", None)
                chunks.append(chunk)
            self._flush()  # a post-handshake message may need an answer
            data = b"".join(chunks)
            if data:
                return data

    def writer(self) -> RecordTlsWriter:
        return RecordTlsWriter(self)

    def write(self, data: bytes) -> None:
        self._tls.write(data)
        self._flush()


class RecordTlsWriter:
    """The ``StreamWriter`` face of a :class:`RecordTls` (what the server writes
    with): plaintext in, TLS records out on the raw connection."""

    def __init__(self, tls: RecordTls) -> None:
        self._tls = tls

    @property
    def transport(self) -> asyncio.WriteTransport:
        return self._tls.raw.transport

    def write(self, data: bytes) -> None:
        if not self._tls.raw.is_closing():
            self._tls.write(data)

    def is_closing(self) -> bool:
        return self._tls.raw.is_closing()

    def close(self) -> None:
        self._tls.raw.close()

    async def drain(self) -> None:
        await self._tls.raw.drain()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._tls.raw.get_extra_info(name, default)
