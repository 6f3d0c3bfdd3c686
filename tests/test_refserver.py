"""The reference server's behaviours, over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import ssl
import struct
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.update
import pytest

from exporter.dso import (
    DsoMessage,
    Keepalive,
    MessageKind,
    Padding,
    Push,
    Reconfirm,
    RetryDelay,
    Subscribe,
    UnknownTlv,
    Unsubscribe,
    frame,
)
from exporter.refserver import RunningServer, ServerBehaviour, start
from tests.support import require_binary

HOST = "127.0.0.1"
ZONE = "demo.example."


def run(behaviour: ServerBehaviour, body: Callable[[RunningServer], Awaitable[Any]]) -> Any:
    """Start a server on a free port, run ``body`` against it, stop it."""

    async def main() -> Any:
        async with await start(behaviour) as server:
            return await body(server)

    return asyncio.run(main())


class Stream:
    """A raw TCP (or TLS) DNS connection: framed writes, reads that report
    how the connection ended instead of raising."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, ssl_context: ssl.SSLContext | None = None) -> Stream:
        return cls(*await asyncio.open_connection(HOST, port, ssl=ssl_context))

    async def send(self, wire: bytes | DsoMessage | dns.message.Message) -> None:
        if isinstance(wire, (DsoMessage, dns.message.Message)):
            wire = wire.to_wire()
        self.writer.write(frame(wire))
        await self.writer.drain()

    async def read(self, timeout: float = 2.0) -> bytes | str:
        """A message, or "closed" / "reset" / "timeout"."""
        try:
            head = await asyncio.wait_for(self.reader.readexactly(2), timeout)
            return await asyncio.wait_for(
                self.reader.readexactly(struct.unpack("!H", head)[0]), timeout
            )
        except TimeoutError:
            return "timeout"
        except asyncio.IncompleteReadError:
            return "closed"
        except ConnectionResetError:
            return "reset"

    async def read_dso(self, timeout: float = 2.0) -> DsoMessage | str:
        wire = await self.read(timeout)
        return wire if isinstance(wire, str) else DsoMessage.from_wire(wire)

    def close(self) -> None:
        self.writer.close()


def keepalive(msg_id: int = 1) -> DsoMessage:
    return DsoMessage(msg_id, tlvs=(Keepalive(15_000, 3_600_000),))


async def udp(server: RunningServer, q: dns.message.Message) -> dns.message.Message:
    return await dns.asyncquery.udp(q, HOST, port=server.port, timeout=2)


async def tcp(server: RunningServer, q: dns.message.Message) -> dns.message.Message:
    return await dns.asyncquery.tcp(q, HOST, port=server.port, timeout=2)


# --- classic DNS -----------------------------------------------------------------


def test_query_answers_from_the_zone_over_udp_and_tcp() -> None:
    async def body(server: RunningServer) -> None:
        q = dns.message.make_query("www.demo.example.", "A")
        for reply in (await udp(server, q), await tcp(server, q)):
            assert reply.rcode() == dns.rcode.NOERROR
            assert reply.flags & dns.flags.AA
            assert [rd.to_text() for rd in reply.answer[0]] == ["192.0.2.10"]

    run(ServerBehaviour(), body)


def test_unknown_name_in_the_zone_is_nxdomain_with_soa() -> None:
    async def body(server: RunningServer) -> None:
        reply = await udp(server, dns.message.make_query("nope.demo.example.", "A"))
        assert reply.rcode() == dns.rcode.NXDOMAIN
        assert reply.authority[0].rdtype == dns.rdatatype.SOA

    run(ServerBehaviour(), body)


def test_name_outside_the_zone_is_refused() -> None:
    async def body(server: RunningServer) -> None:
        reply = await udp(server, dns.message.make_query("example.org.", "A"))
        assert reply.rcode() == dns.rcode.REFUSED

    run(ServerBehaviour(), body)


def test_edns_version_1_gets_badvers() -> None:
    async def body(server: RunningServer) -> None:
        q = dns.message.make_query("www.demo.example.", "A", use_edns=1)
        reply = await udp(server, q)
        assert reply.rcode() == dns.rcode.BADVERS
        assert reply.edns == 0

    run(ServerBehaviour(), body)


def test_unknown_edns_options_are_ignored_and_unknown_flags_cleared() -> None:
    async def body(server: RunningServer) -> None:
        option = dns.edns.GenericOption(dns.edns.OptionType.make(65001), b"\x01\x02")
        q = dns.message.make_query(
            "www.demo.example.", "A", use_edns=0, ednsflags=0x0040, options=[option]
        )
        reply = await udp(server, q)
        assert reply.rcode() == dns.rcode.NOERROR
        assert reply.ednsflags == 0
        assert reply.options == ()

    run(ServerBehaviour(), body)


def test_axfr_streams_the_zone_in_several_messages_from_soa_to_soa() -> None:
    async def body(server: RunningServer) -> list[dns.message.Message]:
        stream = await Stream.open(server.port)
        await stream.send(dns.message.make_query(ZONE, "AXFR"))
        replies = []
        while True:
            wire = await stream.read()
            assert isinstance(wire, bytes)
            replies.append(dns.message.from_wire(wire, one_rr_per_rrset=True))
            if len(replies) > 1 and replies[-1].answer[0].rdtype == dns.rdatatype.SOA:
                break
        stream.close()
        return replies

    replies = run(ServerBehaviour(), body)
    assert len(replies) > 2
    assert replies[0].answer[0].rdtype == dns.rdatatype.SOA
    assert all(r.rcode() == dns.rcode.NOERROR for r in replies)


def test_ixfr_is_answered_with_a_full_axfr_style_reply() -> None:
    async def body(server: RunningServer) -> dns.message.Message:
        q = dns.message.make_query(ZONE, "IXFR")
        soa = dns.rrset.from_text(
            ZONE, 0, "IN", "SOA", "ns1.demo.example. hostmaster.demo.example. 0 1 1 1 1"
        )
        q.authority.append(soa)
        # one RR per RRset: the closing SOA must not merge into the opening one.
        return await dns.asyncquery.udp(q, HOST, port=server.port, timeout=2, one_rr_per_rrset=True)

    reply = run(ServerBehaviour(), body)
    types = [rrset.rdtype for rrset in reply.answer]
    assert types[0] == types[-1] == dns.rdatatype.SOA
    assert dns.rdatatype.A in types


def test_update_with_impossible_prerequisite_is_nxrrset_and_changes_nothing() -> None:
    async def body(server: RunningServer) -> tuple[int, dns.message.Message]:
        update = dns.update.UpdateMessage(ZONE)
        update.present("no-such-name-1234.demo.example.", "A")
        update.add("added.demo.example.", 300, "A", "192.0.2.1")
        reply = await udp(server, update)
        after = await udp(server, dns.message.make_query("added.demo.example.", "A"))
        return reply.rcode(), after

    rcode, after = run(ServerBehaviour(), body)
    assert rcode == dns.rcode.NXRRSET
    assert after.rcode() == dns.rcode.NXDOMAIN


def test_update_name_in_use_prerequisite_fails_with_nxdomain() -> None:
    async def body(server: RunningServer) -> int:
        update = dns.update.UpdateMessage(ZONE)
        update.present("no-such-name-1234.demo.example.")
        return (await udp(server, update)).rcode()

    assert run(ServerBehaviour(), body) == dns.rcode.NXDOMAIN


def test_update_for_another_zone_is_notauth() -> None:
    async def body(server: RunningServer) -> int:
        return (await udp(server, dns.update.UpdateMessage("example.org."))).rcode()

    assert run(ServerBehaviour(), body) == dns.rcode.NOTAUTH


def test_notify_is_acknowledged() -> None:
    async def body(server: RunningServer) -> dns.message.Message:
        q = dns.message.make_query(ZONE, "SOA")
        q.set_opcode(dns.opcode.NOTIFY)
        q.flags |= dns.flags.AA
        return await udp(server, q)

    reply = run(ServerBehaviour(), body)
    assert (reply.opcode(), reply.rcode()) == (dns.opcode.NOTIFY, dns.rcode.NOERROR)


@pytest.mark.parametrize(
    ("answer", "rcode"),
    [("notimp", dns.rcode.NOTIMP), ("refused", dns.rcode.REFUSED), ("formerr", dns.rcode.FORMERR)],
)
def test_update_answer_is_configurable(answer: Any, rcode: int) -> None:
    async def body(server: RunningServer) -> int:
        update = dns.update.UpdateMessage(ZONE)
        update.present("x.demo.example.", "A")
        return (await udp(server, update)).rcode()

    assert run(ServerBehaviour(update=answer), body) == rcode


def test_dropped_operation_gets_silence() -> None:
    async def body(server: RunningServer) -> None:
        with pytest.raises(dns.exception.Timeout):
            await dns.asyncquery.udp(
                dns.message.make_query(ZONE, "AXFR"), HOST, port=server.port, timeout=0.3
            )

    run(ServerBehaviour(axfr="drop"), body)


def test_close_answer_closes_the_tcp_connection() -> None:
    async def body(server: RunningServer) -> bytes | str:
        stream = await Stream.open(server.port)
        await stream.send(dns.message.make_query(ZONE, "AXFR"))
        return await stream.read()

    assert run(ServerBehaviour(axfr="close"), body) == "closed"


@pytest.mark.parametrize("opcode", [1, 2, 3, 7, 15])
def test_unknown_opcode_gets_notimp_with_the_same_opcode(opcode: int) -> None:
    async def body(server: RunningServer) -> bytes:
        stream = await Stream.open(server.port)
        await stream.send(struct.pack("!HHHHHH", 77, opcode << 11, 0, 0, 0, 0))
        wire = await stream.read()
        assert isinstance(wire, bytes)
        return wire

    msg_id, flags = struct.unpack_from("!HH", run(ServerBehaviour(), body))
    assert msg_id == 77
    assert flags & 0x8000
    assert (flags >> 11) & 0xF == opcode
    assert flags & 0xF == dns.rcode.NOTIMP


# --- DSO ---------------------------------------------------------------------------


def dso_exchange(
    behaviour: ServerBehaviour, *messages: DsoMessage | bytes, reads: int = 1, timeout: float = 2
) -> tuple[list[DsoMessage | str], RunningServer]:
    async def body(server: RunningServer) -> list[DsoMessage | str]:
        stream = await Stream.open(server.port)
        for message in messages:
            await stream.send(message)
        out = [await stream.read_dso(timeout) for _ in range(reads)]
        stream.close()
        return out

    holder: list[RunningServer] = []

    async def capture(server: RunningServer) -> list[DsoMessage | str]:
        holder.append(server)
        return await body(server)

    return run(behaviour, capture), holder[0]


def test_keepalive_establishes_a_session_and_grants_the_configured_timers() -> None:
    behaviour = ServerBehaviour(inactivity_timeout_ms=20_000, keepalive_interval_ms=60_000)
    (reply,), server = dso_exchange(behaviour, keepalive(9))
    assert isinstance(reply, DsoMessage)
    assert (reply.kind, reply.msg_id, reply.rcode) == (MessageKind.RESPONSE, 9, 0)
    assert reply.tlvs == (Keepalive(20_000, 60_000),)
    assert server.stats.dso_sessions == 1


def test_keepalive_interval_below_ten_seconds_cannot_be_configured() -> None:
    with pytest.raises(ValueError, match="10000"):
        ServerBehaviour(keepalive_interval_ms=5_000)


def test_unknown_primary_tlv_gets_dsotypeni_without_a_copy_of_the_tlv() -> None:
    request = DsoMessage(5, tlvs=(UnknownTlv(0xF7FF, b"xyz"),))
    (reply,), _ = dso_exchange(ServerBehaviour(), request)
    assert isinstance(reply, DsoMessage)
    assert (reply.msg_id, reply.rcode, reply.tlvs) == (5, dns.rcode.DSOTYPENI, ())


def test_unknown_additional_tlvs_are_ignored() -> None:
    request = DsoMessage(5, tlvs=(Keepalive(1, 10_000), UnknownTlv(0xF7FF, b"xyz")))
    (reply,), _ = dso_exchange(ServerBehaviour(), request)
    assert isinstance(reply, DsoMessage)
    assert reply.rcode == dns.rcode.NOERROR


def test_padding_in_a_request_gets_padding_in_the_response() -> None:
    request = DsoMessage(5, tlvs=(Keepalive(1, 10_000), Padding.zeros(32)))
    (reply,), _ = dso_exchange(ServerBehaviour(), request)
    assert isinstance(reply, DsoMessage)
    assert reply.find(Padding) is not None


def test_dso_message_with_nonzero_counts_gets_formerr() -> None:
    wire = struct.pack("!HHHHHH", 0x0102, 6 << 11, 1, 0, 0, 0)
    (reply,), _ = dso_exchange(ServerBehaviour(), wire)
    assert isinstance(reply, DsoMessage)
    assert (reply.msg_id, reply.rcode) == (0x0102, dns.rcode.FORMERR)


def test_keepalive_with_id_zero_from_a_client_aborts_the_connection() -> None:
    (reply,), server = dso_exchange(ServerBehaviour(), keepalive(0))
    assert reply in ("reset", "closed")
    assert server.stats.closes == ["dso_keepalive_id_zero"]


def test_retry_delay_from_a_client_aborts_the_connection() -> None:
    (reply,), server = dso_exchange(ServerBehaviour(), DsoMessage(0, tlvs=(RetryDelay(1),)))
    assert reply in ("reset", "closed")
    assert server.stats.closes == ["dso_retry_delay_from_client"]


def test_truncated_tlv_aborts_the_connection() -> None:
    wire = DsoMessage(3).to_wire() + b"\x00\x01\x00\x08\x00"
    (reply,), server = dso_exchange(ServerBehaviour(), wire)
    assert reply in ("reset", "closed")
    assert server.stats.closes == ["dso_parse_error:tlv_past_end"]


def test_no_push_server_answers_subscribe_with_dsotypeni() -> None:
    sub = DsoMessage(2, tlvs=(Subscribe.of("www.demo.example.", 1),))
    replies, _ = dso_exchange(ServerBehaviour(dso="no_push"), keepalive(1), sub, reads=2)
    assert [r.rcode for r in replies if isinstance(r, DsoMessage)] == [0, dns.rcode.DSOTYPENI]


def test_server_without_dso_answers_notimp() -> None:
    (reply,), server = dso_exchange(ServerBehaviour(dso="none"), keepalive(4))
    assert isinstance(reply, DsoMessage)
    assert (reply.msg_id, reply.rcode) == (4, dns.rcode.NOTIMP)
    assert server.stats.dso_sessions == 0


def test_closing_server_closes_on_a_dso_message() -> None:
    (reply,), _ = dso_exchange(ServerBehaviour(dso="close"), keepalive())
    assert reply == "closed"


def test_stalling_server_never_answers() -> None:
    (reply,), _ = dso_exchange(ServerBehaviour(dso="stall"), keepalive(), timeout=0.3)
    assert reply == "timeout"


def test_echoing_server_copies_the_request_back_with_qr_set() -> None:
    request = keepalive(6)
    (reply,), _ = dso_exchange(ServerBehaviour(dso="echo"), request)
    assert reply == DsoMessage(6, True, 0, request.tlvs)


def test_subscribe_then_change_pushes_the_new_records_until_unsubscribed() -> None:
    async def body(server: RunningServer) -> None:
        stream = await Stream.open(server.port)
        await stream.send(keepalive(1))
        await stream.send(DsoMessage(2, tlvs=(Subscribe.of("www.demo.example.", 1),)))
        replies = [await stream.read_dso(), await stream.read_dso()]
        assert [r.rcode for r in replies if isinstance(r, DsoMessage)] == [0, 0]
        assert await server.change_rrset("www.demo.example.", "A", ["192.0.2.99"]) == 1
        push = await stream.read_dso()
        assert isinstance(push, DsoMessage)
        assert push.kind is MessageKind.UNIDIRECTIONAL
        assert isinstance(push.primary, Push)
        added = [r for r in push.primary.records if r.is_addition]
        assert [r.rdata_object().to_text() for r in added] == ["192.0.2.99"]
        # A change to another type of the name is not pushed.
        assert await server.change_rrset("www.demo.example.", "TXT", ['"x"']) == 0
        await stream.send(DsoMessage(0, tlvs=(Unsubscribe(2),)))
        await asyncio.sleep(0.1)
        assert await server.change_rrset("www.demo.example.", "A", ["192.0.2.98"]) == 0
        assert server.stats.unsubscribes == 1
        stream.close()

    run(ServerBehaviour(), body)


def test_server_initiated_keepalive_is_unidirectional_with_the_new_timers() -> None:
    async def body(server: RunningServer) -> None:
        stream = await Stream.open(server.port)
        await stream.send(keepalive(1))
        assert isinstance(await stream.read_dso(), DsoMessage)
        assert await server.send_keepalive(30_000, 20_000) == 1
        assert await stream.read_dso() == DsoMessage(0, tlvs=(Keepalive(30_000, 20_000),))
        stream.close()

    run(ServerBehaviour(), body)


def test_edns_tcp_keepalive_inside_a_dso_session_aborts() -> None:
    query = dns.message.make_query(
        "www.demo.example.",
        "A",
        use_edns=0,
        options=[dns.edns.GenericOption(dns.edns.OptionType.KEEPALIVE, b"")],
    )
    replies, server = dso_exchange(ServerBehaviour(), keepalive(1), query.to_wire(), reads=2)
    assert replies[1] in ("reset", "closed")
    assert server.stats.closes == ["edns_tcp_keepalive_in_session"]


def test_initial_push_sends_the_current_records() -> None:
    sub = DsoMessage(2, tlvs=(Subscribe.of("www.demo.example.", 255),))
    replies, _ = dso_exchange(ServerBehaviour(initial_push=True), sub, reads=2)
    push = replies[1]
    assert isinstance(push, DsoMessage)
    assert isinstance(push.primary, Push)
    assert {r.rtype for r in push.primary.records} == {1, 28}


def test_subscribe_outside_the_zone_is_notauth() -> None:
    sub = DsoMessage(2, tlvs=(Subscribe.of("example.org.", 1),))
    (reply,), _ = dso_exchange(ServerBehaviour(), sub)
    assert isinstance(reply, DsoMessage)
    assert reply.rcode == dns.rcode.NOTAUTH


def test_reconfirm_is_accepted_silently_in_a_session() -> None:
    reconfirm = DsoMessage(
        0, tlvs=(Reconfirm(dns.name.from_text("www.demo.example."), 1, 1, bytes(4)),)
    )
    replies, server = dso_exchange(ServerBehaviour(), keepalive(1), reconfirm, reads=2, timeout=0.3)
    assert replies[1] == "timeout"
    assert server.stats.reconfirms == 1


def test_unidirectional_message_before_a_session_aborts() -> None:
    (reply,), server = dso_exchange(ServerBehaviour(), DsoMessage(0, tlvs=(Unsubscribe(1),)))
    assert reply in ("reset", "closed")
    assert server.stats.closes == ["dso_unexpected_unidirectional"]


def test_retry_delay_is_sent_after_the_session_is_established_then_the_server_aborts() -> None:
    behaviour = ServerBehaviour(retry_delay_ms=30_000, retry_delay_rcode=2, retry_grace=0.2)
    replies, server = dso_exchange(behaviour, keepalive(1), reads=3)
    response, retry, end = replies
    assert isinstance(response, DsoMessage)
    assert response.rcode == 0
    assert retry == DsoMessage(0, False, dns.rcode.SERVFAIL, (RetryDelay(30_000),))
    assert end in ("reset", "closed")
    assert server.stats.closes == ["retry_delay_grace"]


def test_requests_after_retry_delay_are_ignored() -> None:
    behaviour = ServerBehaviour(retry_delay_ms=1_000, retry_grace=0.5)
    replies, _ = dso_exchange(behaviour, keepalive(1), keepalive(2), reads=3, timeout=0.3)
    assert [r.msg_id for r in replies if isinstance(r, DsoMessage)] == [1, 0]


def test_idle_session_is_aborted_after_twice_the_inactivity_timeout() -> None:
    behaviour = ServerBehaviour(inactivity_timeout_ms=100, delinquency_floor=0.3)

    async def body(server: RunningServer) -> tuple[float, bytes | str]:
        stream = await Stream.open(server.port)
        await stream.send(keepalive(1))
        assert isinstance(await stream.read(), bytes)
        loop = asyncio.get_running_loop()
        began = loop.time()
        end = await stream.read(timeout=3)
        return loop.time() - began, end

    elapsed, end = run(behaviour, body)
    assert end in ("reset", "closed")
    assert 0.2 < elapsed < 1.5


def test_active_subscription_keeps_an_idle_session_open() -> None:
    behaviour = ServerBehaviour(inactivity_timeout_ms=100, delinquency_floor=0.3)
    sub = DsoMessage(2, tlvs=(Subscribe.of("www.demo.example.", 1),))
    replies, server = dso_exchange(behaviour, sub, reads=2, timeout=0.8)
    assert replies[1] == "timeout"
    assert "inactivity" not in server.stats.closes


@pytest.mark.parametrize(("dso_udp", "expect"), [("formerr", dns.rcode.FORMERR), ("drop", None)])
def test_dso_over_udp(dso_udp: Any, expect: int | None) -> None:
    async def body(server: RunningServer) -> int | None:
        loop = asyncio.get_running_loop()
        got: asyncio.Future[bytes] = loop.create_future()

        class Proto(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                if not got.done():
                    got.set_result(data)

        transport, _ = await loop.create_datagram_endpoint(Proto, remote_addr=(HOST, server.port))
        transport.sendto(keepalive(3).to_wire())
        try:
            data = await asyncio.wait_for(got, 0.5)
        except TimeoutError:
            return None
        finally:
            transport.close()
        return DsoMessage.from_wire(data).rcode

    assert run(ServerBehaviour(dso_udp=dso_udp), body) == expect


def test_stats_count_connections_and_messages() -> None:
    _, server = dso_exchange(ServerBehaviour(), keepalive(1), keepalive(2), reads=2)
    assert server.stats.connections == 1
    assert server.stats.tcp_messages == 2
    assert server.stats.dso_messages == 2
    assert server.stats.messages_received == 2


def test_dso_over_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [require_binary("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    client_ctx.check_hostname = False

    async def main() -> DsoMessage | str:
        async with await start(ServerBehaviour(), ssl_context=server_ctx) as server:
            assert server.tls_port is not None
            stream = await Stream.open(server.tls_port, client_ctx)
            await stream.send(DsoMessage(1, tlvs=(Keepalive(1, 10_000), Padding.zeros(40))))
            reply = await stream.read_dso()
            stream.close()
            return reply

    reply = asyncio.run(main())
    assert isinstance(reply, DsoMessage)
    assert reply.rcode == 0
    assert isinstance(reply.primary, Keepalive)
