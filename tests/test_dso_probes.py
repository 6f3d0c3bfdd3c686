"""DSO probes (RFC 8490, RFC 8765) against real sockets: the reference server,
a hostile listener of our own, and the CLI's --json output."""

from __future__ import annotations

import asyncio
import json
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from exporter import dso_client, refserver
from exporter.cli import main
from exporter.config import Config, DsoSettings, ProbeSpec, Target, TlsSettings, Transport
from exporter.dso import DsoMessage, Keepalive, Push, PushRecord, frame
from exporter.dso_client import keepalive_tlvs
from exporter.kinds import ProbeKind
from exporter.metrics import MetricsState
from exporter.probes import ProbeResult, TlsContexts, run_probe
from exporter.refserver import ServerBehaviour
from tests.hostile import BackgroundLoop
from tests.support import make_self_signed_cert


@pytest.fixture
def loop_thread() -> Iterator[BackgroundLoop]:
    """An event loop in a thread, so servers keep running while the test calls
    ``asyncio.run`` (run_probe) or the CLI (which runs its own loop)."""
    background = BackgroundLoop()
    yield background
    background.close()


@pytest.fixture
def serve(loop_thread: BackgroundLoop) -> Iterator[Callable[..., refserver.RunningServer]]:
    servers: list[refserver.RunningServer] = []

    def start(behaviour: ServerBehaviour | None = None,
              ssl_context: ssl.SSLContext | None = None) -> refserver.RunningServer:  # fmt: skip
        server = loop_thread.run(refserver.start(behaviour, ssl_context=ssl_context))
        servers.append(server)
        return server

    yield start
    for server in servers:
        loop_thread.run(server.close())


def dso_spec(kind: ProbeKind = ProbeKind.DSO_KEEPALIVE, *, timeout: float = 2.0,
             transport: Transport = Transport.TCP, **dso: Any) -> ProbeSpec:  # fmt: skip
    return ProbeSpec(name=kind.value, kind=kind, transport=transport, timeout=timeout,
                     dso=DsoSettings(**dso))  # fmt: skip


def target(port: int, spec: ProbeSpec, tls: TlsSettings | None = None) -> Target:
    return Target(name=f"127.0.0.1:{port}", host="127.0.0.1", port=port, probes=(spec,),
                  zone="demo.example.", tls=tls or TlsSettings())  # fmt: skip


def probe(port: int, spec: ProbeSpec, tls: TlsSettings | None = None) -> ProbeResult:
    return asyncio.run(run_probe(target(port, spec, tls), spec, TlsContexts()))


def cli_json(capsys: pytest.CaptureFixture[str], port: int, kind: str,
             *extra: str) -> dict[str, Any]:  # fmt: skip
    assert main(["probe", f"127.0.0.1:{port}", "--kind", kind, "--json", *extra]) == 0
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert {"rcode", "rcode_value", "cause", "error", "duration_seconds"} <= data.keys()
    return data


# --- the reference server ----------------------------------------------------------------


def test_full_dso_server_establishes_a_session_with_granted_timers(
    serve: Callable[..., refserver.RunningServer], capsys: pytest.CaptureFixture[str]
) -> None:
    server = serve(ServerBehaviour(inactivity_timeout_ms=20_000, keepalive_interval_ms=60_000))
    result = probe(server.port, dso_spec())
    assert result.cause.value == "none"
    assert result.outcome.rcode == 0
    assert result.outcome.transport == "tcp"
    dso = result.outcome.dso
    assert dso is not None
    assert dso.session_established
    assert (dso.inactivity_timeout, dso.keepalive_interval) == (20.0, 60.0)
    assert dso.closed_reason == "probe_done"
    assert not dso.echoed

    data = cli_json(capsys, server.port, "dso_keepalive")
    assert (data["rcode"], data["rcode_value"], data["cause"]) == ("NOERROR", 0, "none")
    assert data["error"] is None
    assert data["dso"]["session_established"] is True
    assert data["dso"]["inactivity_timeout"] == 20.0
    assert data["dso"]["keepalive_interval"] == 60.0


def test_server_granting_exactly_our_timers_is_not_taken_for_an_echo(
    serve: Callable[..., refserver.RunningServer],
) -> None:
    # Same TLV bytes back: the follow-up with an unassigned type gets DSOTYPENI.
    server = serve(ServerBehaviour(inactivity_timeout_ms=15_000, keepalive_interval_ms=15_000))
    result = probe(server.port, dso_spec())
    assert result.cause.value == "none"
    assert result.outcome.dso is not None
    assert result.outcome.dso.session_established
    assert not result.outcome.dso.echoed


def test_server_without_dso_answers_notimp(
    serve: Callable[..., refserver.RunningServer], capsys: pytest.CaptureFixture[str]
) -> None:
    server = serve(ServerBehaviour(dso="none"))
    result = probe(server.port, dso_spec())
    assert result.cause.value == "dso_not_implemented"
    assert result.outcome.dso is not None
    assert not result.outcome.dso.session_established
    data = cli_json(capsys, server.port, "dso_keepalive")
    assert (data["rcode"], data["cause"]) == ("NOTIMP", "dso_not_implemented")
    assert data["dso"]["session_established"] is False


def test_echoing_server_is_reported_as_echo(
    serve: Callable[..., refserver.RunningServer], capsys: pytest.CaptureFixture[str]
) -> None:
    server = serve(ServerBehaviour(dso="echo"))
    result = probe(server.port, dso_spec())
    assert result.cause.value == "dso_echoed"
    assert result.outcome.dso is not None
    assert result.outcome.dso.echoed
    assert not result.outcome.dso.session_established
    data = cli_json(capsys, server.port, "dso_keepalive")
    assert data["cause"] == "dso_echoed"
    assert data["dso"]["echoed"] is True


def test_server_closing_on_dso_gives_connection_closed(
    serve: Callable[..., refserver.RunningServer], capsys: pytest.CaptureFixture[str]
) -> None:
    server = serve(ServerBehaviour(dso="close"))
    result = probe(server.port, dso_spec())
    assert result.cause.value == "connection_closed"
    assert result.outcome.dso is not None
    assert result.outcome.dso.closed_reason == "server_closed"
    data = cli_json(capsys, server.port, "dso_keepalive")
    assert data["cause"] == "connection_closed"
    assert data["rcode"] is None


def test_stalling_server_gives_no_response_within_the_timeout(
    serve: Callable[..., refserver.RunningServer], capsys: pytest.CaptureFixture[str]
) -> None:
    server = serve(ServerBehaviour(dso="stall"))
    result = probe(server.port, dso_spec(timeout=0.5))
    assert result.cause.value == "no_response"
    assert 0.4 < result.duration < 1.5
    data = cli_json(capsys, server.port, "dso_keepalive", "--timeout", "0.5")
    assert data["cause"] == "no_response"
    assert data["duration_seconds"] < 1.5


def test_retry_delay_is_recorded_and_ends_the_session(
    serve: Callable[..., refserver.RunningServer], capsys: pytest.CaptureFixture[str]
) -> None:
    server = serve(ServerBehaviour(retry_delay_ms=30_000, retry_delay_rcode=5))
    result = probe(server.port, dso_spec())
    dso = result.outcome.dso
    assert dso is not None
    assert result.cause.value == "none"  # the Keepalive itself was answered
    assert (dso.retry_delay, dso.retry_delay_rcode) == (30.0, 5)
    assert dso.closed_reason == "retry_delay"
    other = serve(ServerBehaviour(retry_delay_ms=30_000, retry_delay_rcode=5))
    data = cli_json(capsys, other.port, "dso_keepalive")
    assert data["dso"]["retry_delay"] == 30.0
    assert data["dso"]["closed_reason"] == "retry_delay"
    # RFC 8490 §6.6.1: for the next 30 s the first server is not contacted again.
    held = cli_json(capsys, server.port, "dso_keepalive")
    assert (held["cause"], held["dso"]["held_by_retry_delay"]) == ("not_sent", True)
    assert held["error"].startswith("held: the server asked for a Retry Delay of 30 s")
    assert server.stats.connections == 1


def test_unassigned_tlv_type_gets_dsotypeni(
    serve: Callable[..., refserver.RunningServer], capsys: pytest.CaptureFixture[str]
) -> None:
    server = serve()
    result = probe(server.port, dso_spec(ProbeKind.DSO_TLV))
    assert result.outcome.rcode == 11
    assert result.cause.value == "dso_type_not_implemented"
    assert result.outcome.dso is not None
    assert result.outcome.dso.dso_type == 0xF7FF
    assert result.outcome.dso.session_established
    data = cli_json(capsys, server.port, "dso_tlv")
    assert (data["rcode"], data["cause"]) == ("DSOTYPENI", "dso_type_not_implemented")
    assert data["dso"]["dso_type"] == 0xF7FF


def test_dso_tlv_reports_the_keepalive_failure_when_there_is_no_session(
    serve: Callable[..., refserver.RunningServer],
) -> None:
    server = serve(ServerBehaviour(dso="none"))
    result = probe(server.port, dso_spec(ProbeKind.DSO_TLV))
    assert result.cause.value == "dso_not_implemented"


def test_server_without_push_answers_subscribe_with_dsotypeni(
    serve: Callable[..., refserver.RunningServer], capsys: pytest.CaptureFixture[str]
) -> None:
    server = serve(ServerBehaviour(dso="no_push"))
    spec = dso_spec(ProbeKind.DSO_PUSH_SUBSCRIBE, push_name="demo.example.")
    result = probe(server.port, spec)
    assert result.cause.value == "dso_type_not_implemented"
    assert result.outcome.dso is not None
    assert result.outcome.dso.dso_type == 0x40
    data = cli_json(capsys, server.port, "dso_push_subscribe", "--push-name", "demo.example.")
    assert data["cause"] == "dso_type_not_implemented"
    assert data["dso"]["dso_type"] == 0x40


def test_push_arrives_for_a_zone_change_during_push_wait(
    serve: Callable[..., refserver.RunningServer], loop_thread: BackgroundLoop
) -> None:
    server = serve()

    def change_when_subscribed() -> None:
        for _ in range(200):
            if server.stats.subscriptions:
                loop_thread.run(server.change_rrset("www.demo.example.", "A", ["192.0.2.99"]))
                return
            time.sleep(0.01)

    changer = threading.Thread(target=change_when_subscribed)
    changer.start()
    spec = dso_spec(ProbeKind.DSO_PUSH_SUBSCRIBE, push_name="www.demo.example.", push_type=1,
                    push_wait=1.0)  # fmt: skip
    result = probe(server.port, spec)
    changer.join()
    assert result.cause.value == "none"
    assert result.outcome.dso is not None
    assert result.outcome.dso.push_notifications >= 1
    assert server.stats.pushes_sent >= 1
    # RFC 8765 §6.4: the probe unsubscribed before closing.
    for _ in range(100):
        if server.stats.unsubscribes:
            break
        time.sleep(0.01)
    assert server.stats.unsubscribes == 1


def test_push_subscribe_cli_reports_success(
    serve: Callable[..., refserver.RunningServer], capsys: pytest.CaptureFixture[str]
) -> None:
    server = serve(ServerBehaviour(initial_push=True))
    data = cli_json(capsys, server.port, "dso_push_subscribe", "--push-name",
                    "www.demo.example.", "--push-type", "A", "--push-wait", "0.3")  # fmt: skip
    assert data["cause"] == "none"
    assert data["dso"]["push_notifications"] >= 1


def test_dso_over_udp_is_not_sent_without_the_opt_in(
    serve: Callable[..., refserver.RunningServer], capsys: pytest.CaptureFixture[str]
) -> None:
    server = serve()
    result = probe(server.port, dso_spec(transport=Transport.UDP))
    assert result.cause.value == "not_sent"
    assert result.outcome.error is not None
    assert "RFC 8490" in result.outcome.error
    data = cli_json(capsys, server.port, "dso_keepalive", "--transport", "udp")
    assert data["cause"] == "not_sent"


def test_dso_over_udp_with_the_opt_in_reports_the_reply(
    serve: Callable[..., refserver.RunningServer], capsys: pytest.CaptureFixture[str]
) -> None:
    server = serve(ServerBehaviour(dso_udp="formerr"))
    result = probe(server.port, dso_spec(transport=Transport.UDP, allow_udp=True))
    assert (result.outcome.transport, result.outcome.rcode) == ("udp", 1)
    # RFC 8490 §4.2 prescribes no answer over UDP: any reply but NOTIMP says "over UDP".
    assert result.cause.value == "dso_over_udp"
    data = cli_json(capsys, server.port, "dso_keepalive", "--transport", "udp",
                    "--allow-udp-dso")  # fmt: skip
    assert data["rcode"] == "FORMERR"


def test_padding_request_is_a_multiple_of_the_block() -> None:
    spec = dso_spec(ProbeKind.DSO_PADDING, padding_block=128)
    wire = DsoMessage(1, tlvs=keepalive_tlvs(spec)).to_wire()
    assert len(wire) % 128 == 0


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    return make_self_signed_cert(tmp_path, "localhost", "127.0.0.1")


def test_padding_over_tls_establishes_a_session(
    serve: Callable[..., refserver.RunningServer], capsys: pytest.CaptureFixture[str],
    tls_files: tuple[Path, Path],
) -> None:  # fmt: skip
    cert, key = tls_files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = serve(ssl_context=context)
    assert server.tls_port is not None
    tls = TlsSettings(ca_file=str(cert), server_name="localhost")
    result = probe(server.tls_port, dso_spec(ProbeKind.DSO_PADDING, transport=Transport.TLS), tls)
    assert result.cause.value == "none"
    assert result.outcome.transport == "tls"
    assert result.outcome.dso is not None
    assert result.outcome.dso.session_established
    assert result.outcome.cert_not_after is not None  # dnsgap_tls_cert_expiry_timestamp_seconds
    data = cli_json(capsys, server.tls_port, "dso_padding", "--transport", "tls",
                    "--ca-file", str(cert), "--server-name", "localhost")  # fmt: skip
    assert (data["cause"], data["transport"]) == ("none", "tls")
    data = cli_json(capsys, server.tls_port, "dso_padding", "--transport", "tls", "--insecure")
    assert data["cause"] == "none"
    data = cli_json(capsys, server.tls_port, "dso_padding", "--transport", "tls")
    assert data["cause"] == "tls_certificate_invalid"  # self-signed, verification on by default


def _server_context(tls_files: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_files)
    return context


async def _answers_within(port: int, writes: list[bytes], seconds: float) -> int:
    """How many DSO responses a TLS client gets within ``seconds`` after making one
    ``write`` (one TLS record) per item of ``writes``."""
    client = ssl.create_default_context()
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
    answers = 0
    try:
        for data in writes:
            writer.write(data)
        await writer.drain()
        async with asyncio.timeout(seconds):
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                await reader.readexactly(length)
                answers += 1
    except TimeoutError:
        pass
    finally:
        writer.close()
    return answers


def test_dnssd_proxy_mode_answers_a_message_sharing_a_record_with_its_length_only_later(
    serve: Callable[..., refserver.RunningServer], loop_thread: BackgroundLoop,
    tls_files: tuple[Path, Path],
) -> None:  # fmt: skip
    server = serve(ServerBehaviour(tls_reads="dnssd_proxy"), _server_context(tls_files))
    assert server.tls_port is not None
    first, second = (DsoMessage(i, tlvs=keepalive_tlvs(dso_spec())).to_wire() for i in (1, 2))
    one_record = [frame(first)]
    assert loop_thread.run(_answers_within(server.tls_port, one_record, 0.5)) == 0
    # The second message brings the first one's answer (and is itself held back).
    two_records = [frame(first), frame(second)]
    assert loop_thread.run(_answers_within(server.tls_port, two_records, 1.5)) == 1
    split = [frame(first)[:2], first]
    assert loop_thread.run(_answers_within(server.tls_port, split, 1.5)) == 1


@pytest.mark.parametrize("kind", [ProbeKind.DSO_KEEPALIVE, ProbeKind.DSO_PUSH_SUBSCRIBE])
@pytest.mark.parametrize("persistent", [False, True])
def test_dso_over_tls_gets_the_answer_of_a_server_reading_per_tls_record(
    serve: Callable[..., refserver.RunningServer], tls_files: tuple[Path, Path],
    kind: ProbeKind, persistent: bool,
) -> None:  # fmt: skip
    server = serve(ServerBehaviour(tls_reads="dnssd_proxy"), _server_context(tls_files))
    assert server.tls_port is not None
    tls = TlsSettings(ca_file=str(tls_files[0]), server_name="localhost")
    spec = dso_spec(kind, transport=Transport.TLS, persistent=persistent,
                    push_name="www.demo.example.", push_type=1)  # fmt: skip

    async def twice() -> list[ProbeResult]:
        tgt = target(server.tls_port or 0, spec, tls)
        try:
            return [await run_probe(tgt, spec, TlsContexts()) for _ in range(2)]
        finally:
            await dso_client.close_all()

    for result in asyncio.run(twice()):
        assert (result.cause.value, result.outcome.rcode) == ("none", 0), result.outcome.error
        assert result.outcome.transport == "tls"


def test_a_query_over_tls_gets_the_answer_of_a_server_reading_per_tls_record(
    serve: Callable[..., refserver.RunningServer], tls_files: tuple[Path, Path],
) -> None:  # fmt: skip
    server = serve(ServerBehaviour(tls_reads="dnssd_proxy"), _server_context(tls_files))
    assert server.tls_port is not None
    tls = TlsSettings(ca_file=str(tls_files[0]), server_name="localhost")
    spec = ProbeSpec(name="soa", kind=ProbeKind.QUERY, transport=Transport.TLS, timeout=2.0,
                     qname="demo.example.", qtype=6)  # fmt: skip
    result = probe(server.tls_port, spec, tls)
    assert (result.cause.value, result.outcome.rcode) == ("none", 0), result.outcome.error


# --- a hostile listener ------------------------------------------------------------------

_DSO_RESPONSE = 0x8000 | (6 << 11)


def _header(msg_id: int, flags: int = _DSO_RESPONSE,
            counts: tuple[int, ...] = (0, 0, 0, 0)) -> bytes:  # fmt: skip
    return struct.pack("!HHHHHH", msg_id, flags, *counts)


def _flood(msg_id: int) -> bytes:
    record = PushRecord.remove_rrset("www.demo.example.", 1)
    push = DsoMessage(0, tlvs=(Push((record,)),)).to_wire()
    return frame(push) * 10_000


HOSTILE: dict[str, Callable[[int], bytes]] = {
    "truncated_tlv": lambda i: frame(_header(i) + b"\x00\x01\x00"),
    "tlv_past_end": lambda i: frame(_header(i) + struct.pack("!HH", 1, 8) + b"\x00\x00"),
    "nonzero_counts": lambda i: frame(_header(i, counts=(1, 0, 0, 0))),
    "garbage": lambda i: frame(b"\xde\xad\xbe\xef\x00"),
    "flood": _flood,
    "non_dso_opcode": lambda i: frame(_header(i, flags=0x8000)),
    "wrong_id": lambda i: frame(_header(i ^ 0x5555)),
    # NOERROR leading with an unassigned TLV type instead of Keepalive (RFC 8490 §5.4.1)
    "unknown_tlv": lambda i: frame(_header(i) + struct.pack("!HH", 0xF7F0, 2) + b"\x00\x01"),
    # a Keepalive TLV is 8 bytes (RFC 8490 §7.1): 4 is a wrong length
    "keepalive_wrong_length": lambda i: frame(_header(i) + struct.pack("!HHI", 1, 4, 15000)),
}


async def _hostile_server(answer: Callable[[int], bytes]) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            request = await reader.readexactly(length)
            writer.write(answer(struct.unpack_from("!H", request)[0]))
            await writer.drain()
            await reader.read()  # until the client goes away
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def _close_server(server: asyncio.Server) -> None:
    server.close()  # in the server's own loop: asyncio servers are not thread-safe
    await server.wait_closed()


@pytest.mark.parametrize(("name", "cause"), [
    ("truncated_tlv", "malformed"), ("tlv_past_end", "malformed"),
    ("nonzero_counts", "malformed"), ("garbage", "malformed"), ("flood", "malformed"),
    ("non_dso_opcode", "mismatched_reply"), ("wrong_id", "mismatched_reply"),
    ("unknown_tlv", "malformed"), ("keepalive_wrong_length", "malformed"),
])  # fmt: skip
def test_hostile_replies_fail_promptly_and_the_next_probe_runs(
    name: str, cause: str, loop_thread: BackgroundLoop,
    serve: Callable[..., refserver.RunningServer], capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    hostile = loop_thread.run(_hostile_server(HOSTILE[name]))
    port = hostile.sockets[0].getsockname()[1]
    try:
        result = probe(port, dso_spec(timeout=5.0))
        assert result.cause.value == cause, result.outcome.error
        assert result.duration < 2.0
        assert result.outcome.error
        if name == "non_dso_opcode":
            assert result.outcome.reply_opcode == 0
        data = cli_json(capsys, port, "dso_keepalive")
        assert data["cause"] == cause
    finally:
        loop_thread.run(_close_server(hostile))
    good = serve()
    assert probe(good.port, dso_spec()).cause.value == "none"


def test_decode_problem_is_the_error_of_a_malformed_reply(loop_thread: BackgroundLoop) -> None:
    hostile = loop_thread.run(_hostile_server(HOSTILE["tlv_past_end"]))
    try:
        result = probe(hostile.sockets[0].getsockname()[1], dso_spec())
    finally:
        loop_thread.run(_close_server(hostile))
    assert result.outcome.error is not None
    assert result.outcome.error.startswith("tlv_past_end")


def test_keepalive_update_from_the_server_is_adopted(loop_thread: BackgroundLoop) -> None:
    def answer(msg_id: int) -> bytes:
        granted = DsoMessage(msg_id, True, 0, (Keepalive(20_000, 40_000),)).to_wire()
        update = DsoMessage(0, False, 0, (Keepalive(5_000, 50_000),)).to_wire()
        return frame(granted) + frame(update)

    hostile = loop_thread.run(_hostile_server(answer))
    try:
        result = probe(hostile.sockets[0].getsockname()[1], dso_spec())
    finally:
        loop_thread.run(_close_server(hostile))
    assert result.outcome.dso is not None
    assert (result.outcome.dso.inactivity_timeout, result.outcome.dso.keepalive_interval) == (
        5.0, 50.0)  # fmt: skip


# --- metrics -----------------------------------------------------------------------------


def test_metrics_record_dso_facts(serve: Callable[..., refserver.RunningServer]) -> None:
    server = serve(ServerBehaviour(inactivity_timeout_ms=20_000, keepalive_interval_ms=60_000))
    spec = dso_spec()
    tgt = target(server.port, spec)
    state = MetricsState()
    state.sync(Config(targets=(tgt,)), [(tgt, spec)])
    result = asyncio.run(run_probe(tgt, spec, TlsContexts()))
    state.record(tgt.name, spec.name, result)
    text = state.render()
    labels = f'target="{tgt.name}"'
    assert f"dnsgap_dso_session_established{{{labels}}} 1\n" in text
    assert f"dnsgap_dso_inactivity_timeout_seconds{{{labels}}} 20\n" in text
    assert f"dnsgap_dso_keepalive_interval_seconds{{{labels}}} 60\n" in text
    assert f'dnsgap_dso_sessions_closed_total{{{labels},reason="probe_done"}} 1\n' in text


class _UdpDsoResponder(asyncio.DatagramProtocol):
    """Answers any DSO datagram with a bare NOERROR response (a server that
    accepts DSO over UDP, which RFC 8490 §5.1 does not allow)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(_header(struct.unpack_from("!H", data)[0]), addr)


async def _close_datagram(transport: asyncio.DatagramTransport) -> None:
    transport.close()
    await asyncio.sleep(0.01)  # the socket is released on the next loop iteration


def test_dso_answered_over_udp_is_reported_as_dso_over_udp(
    loop_thread: BackgroundLoop, capsys: pytest.CaptureFixture[str]
) -> None:
    async def start() -> asyncio.DatagramTransport:
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            _UdpDsoResponder, local_addr=("127.0.0.1", 0))  # fmt: skip
        return transport

    udp = loop_thread.run(start())
    port = udp.get_extra_info("sockname")[1]
    try:
        result = probe(port, dso_spec(transport=Transport.UDP, allow_udp=True))
        assert (result.outcome.rcode, result.cause.value) == (0, "dso_over_udp")
        data = cli_json(capsys, port, "dso_keepalive", "--transport", "udp", "--allow-udp-dso")
        assert data["cause"] == "dso_over_udp"
    finally:
        loop_thread.run(_close_datagram(udp))


def test_echo_over_udp_is_still_an_echo(serve: Callable[..., refserver.RunningServer]) -> None:
    server = serve(ServerBehaviour(dso="echo"))
    result = probe(server.port, dso_spec(transport=Transport.UDP, allow_udp=True))
    assert result.cause.value == "dso_echoed"
