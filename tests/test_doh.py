"""DNS over HTTPS (RFC 8484): the pure request/response half, and the failures no
Debian server produces on demand (a reset stream, a port that does not speak TLS).
Unbound and dnsdist serve DoH in tests/realservers/test_encrypted.py."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from pathlib import Path

import dns.message
import pytest

from exporter import doh
from exporter.causes import Cause
from exporter.certs import make_self_signed
from exporter.config import DohSettings, ProbeSpec, Target, TlsSettings, Transport
from exporter.kinds import ProbeKind
from exporter.outcome import Outcome, WireEvent
from exporter.probes import ProbeResult, run_probe
from exporter.transport import Received
from tests.h2server import H2Server

_QUERY = dns.message.make_query("gap.test.", "SOA", id=0).to_wire()


def test_get_carries_the_query_base64url_without_padding_in_the_dns_variable() -> None:
    headers, body = doh.request_headers("GET", "dns.test", "/dns-query", _QUERY)
    path = dict(headers)[":path"]
    assert path.startswith("/dns-query?dns=")
    assert body == b""
    encoded = path.split("dns=", 1)[1]
    assert not set(encoded) & set("=+/")
    assert base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)) == _QUERY
    assert dict(headers)["accept"] == "application/dns-message"


def test_post_carries_the_query_as_the_body_with_its_media_type() -> None:
    headers, body = doh.request_headers("POST", "dns.test:8443", "/q?x=1", _QUERY)
    fields = dict(headers)
    assert (fields[":method"], fields[":path"], fields[":authority"]) == (
        "POST", "/q?x=1", "dns.test:8443")
    assert fields["content-type"] == "application/dns-message"
    assert (body, fields["content-length"]) == (_QUERY, str(len(_QUERY)))


def test_a_response_is_a_reply_only_with_status_200_and_the_dns_media_type() -> None:
    ok = doh.judge_response(200, "application/dns-message", b"reply", 1.0)
    assert ok == Received(b"reply", cert_not_after=1.0)
    status = doh.judge_response(404, "text/html", b"nope", None)
    assert isinstance(status, Outcome)
    assert (status.event, status.details["http_status"]) == (WireEvent.HTTP_STATUS, 404)
    media = doh.judge_response(200, "text/html; charset=utf-8", b"<html>", None)
    assert isinstance(media, Outcome)
    assert (media.event, media.details["content_type"]) == (
        WireEvent.CONTENT_TYPE, "text/html; charset=utf-8")
    # Parameters and case do not matter (RFC 9110 §8.3.1).
    assert isinstance(doh.judge_response(200, "Application/DNS-Message; x=1", b"r", None),
                      Received)  # fmt: skip


def _probe(port: int, tls: TlsSettings, timeout: float = 2.0) -> tuple[Target, ProbeSpec]:
    spec = ProbeSpec(name="doh", kind=ProbeKind.QUERY, transport=Transport.DOH,
                     qname="gap.test.", timeout=timeout, doh=DohSettings())  # fmt: skip
    return Target(name="doh", host="127.0.0.1", port=port, probes=(spec,), tls=tls), spec


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    crt, key = make_self_signed(tmp_path_factory.mktemp("doh"))
    return str(crt), str(key)


def test_a_stream_reset_by_the_server_is_stream_reset(cert: tuple[str, str]) -> None:
    async def scenario() -> tuple[ProbeResult, ProbeResult, int]:
        async with await H2Server.start(*cert, "reset") as server:
            target, spec = _probe(server.port, TlsSettings(ca_file=cert[0]))
            first, second = await run_probe(target, spec), await run_probe(target, spec)
            # A reset stream leaves the connection in place for the next probe.
            assert doh.pool().open_connections == 1
            return first, second, server.requests

    first, second, requests = asyncio.run(scenario())
    assert (first.cause, second.cause, requests) == (Cause.STREAM_RESET, Cause.STREAM_RESET, 2)
    assert first.outcome.details["stream_error"] == 0x7  # REFUSED_STREAM (RFC 9113 §7)
    assert first.outcome.cert_not_after is not None


def test_a_port_that_does_not_speak_tls_is_a_tls_error(tmp_path: Path) -> None:
    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)  # the ClientHello, answered like an HTTP/1 server would
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def scenario() -> ProbeResult:
        server = await asyncio.start_server(plain, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            return await run_probe(*_probe(port, TlsSettings()))

    result = asyncio.run(scenario())
    assert result.cause is Cause.TLS_ERROR, result.outcome
    assert result.outcome.transport == "doh"


def test_nothing_listening_is_connection_refused() -> None:
    from tests.conftest import free_port

    result = asyncio.run(run_probe(*_probe(free_port(), TlsSettings())))
    assert result.cause is Cause.CONNECTION_REFUSED


def test_a_stream_the_server_never_processed_is_retried_on_a_new_connection(
    cert: tuple[str, str],
) -> None:
    # GOAWAY with last stream id 0: our stream was not processed (RFC 9113 §6.8).
    async def scenario() -> tuple[ProbeResult, int]:
        async with await H2Server.start(*cert, "goaway_first") as server:
            result = await run_probe(*_probe(server.port, TlsSettings(ca_file=cert[0])))
            return result, server.connections

    result, connections = asyncio.run(scenario())
    assert (result.cause, result.rcode_label) == (Cause.NONE, "NOERROR")
    assert connections == 2


def test_a_reused_connection_closed_by_the_server_is_retried_not_a_gap(
    cert: tuple[str, str],
) -> None:
    # The server closes the connection as the second query arrives on it, the way an
    # idle timeout races a probe: the probe goes again on a fresh connection.
    async def scenario() -> tuple[list[ProbeResult], int]:
        async with await H2Server.start(*cert, "close_second") as server:
            target, spec = _probe(server.port, TlsSettings(ca_file=cert[0]))
            results = [await run_probe(target, spec) for _ in range(3)]
            return results, server.connections

    results, connections = asyncio.run(scenario())
    assert [r.cause for r in results] == [Cause.NONE] * 3
    assert connections == 3  # probes 2 and 3 each found their connection closed


def test_get_queries_reach_the_server_decoded(cert: tuple[str, str]) -> None:
    async def scenario() -> ProbeResult:
        async with await H2Server.start(*cert, "goaway_first") as server:
            target, spec = _probe(server.port, TlsSettings(ca_file=cert[0]))
            spec = dataclasses.replace(spec, doh=DohSettings(method="GET"))
            return await run_probe(target, spec)

    result = asyncio.run(scenario())
    assert (result.cause, result.outcome.details["answers"]) == (Cause.NONE, 1)


def test_probes_beyond_the_servers_stream_limit_wait_for_a_free_stream(
    cert: tuple[str, str],
) -> None:
    # SETTINGS_MAX_CONCURRENT_STREAMS 2 (RFC 9113 §5.1.2): ten probes at once share the
    # connection two streams at a time instead of failing.
    async def scenario() -> tuple[list[ProbeResult], H2Server]:
        async with await H2Server.start(*cert, "answer", max_streams=2) as server:
            target, spec = _probe(server.port, TlsSettings(ca_file=cert[0]))
            await run_probe(target, spec)  # the connection and the server's SETTINGS
            results = await asyncio.gather(*(run_probe(target, spec) for _ in range(10)))
            return list(results), server

    results, server = asyncio.run(scenario())
    assert [r.cause for r in results] == [Cause.NONE] * 10
    assert (server.connections, server.peak_streams) == (1, 2)
