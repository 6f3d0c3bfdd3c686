"""UDP probes share a few sockets per event loop, and lose nothing the socket per
probe gave: replies only from the destination, under a pending ID, to the question
asked; ICMP port unreachable for the right probe; late replies dropped."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from typing import cast

import dns.message

from exporter import transport, udp
from exporter.causes import Cause
from exporter.config import ProbeSpec, Target, Transport
from exporter.kinds import ProbeKind
from exporter.probes import run_probe
from exporter.refserver import ServerBehaviour
from exporter.refserver import start as start_refserver
from tests.conftest import free_port
from tests.hostile import HostileServer, Mode

ZONE = "demo.example."
Reply = Callable[[bytes], list[bytes]]


def _query(msg_id: int, name: str = ZONE) -> bytes:
    message = dns.message.make_query(name, "SOA")
    message.id = msg_id
    return message.to_wire()


def _answer(request: bytes, name: str | None = None) -> bytes:
    query = dns.message.from_wire(request)
    if name is not None:
        query = dns.message.make_query(name, "SOA")
        query.id = dns.message.from_wire(request).id
    return dns.message.make_response(query).to_wire()


class _Responder(asyncio.DatagramProtocol):
    """Answers each request with what ``reply`` makes of it, from ``source`` (its
    own socket unless another is given)."""

    def __init__(self, reply: Reply, source: socket.socket | None = None) -> None:
        self.reply = reply
        self.source = source
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        for out in self.reply(data):
            if self.source is not None:
                self.source.sendto(out, addr)
            elif self.transport is not None:
                self.transport.sendto(out, addr)


async def _serve(reply: Reply, source: socket.socket | None = None
                 ) -> tuple[asyncio.DatagramTransport, int]:  # fmt: skip
    loop = asyncio.get_running_loop()
    endpoint, _ = await loop.create_datagram_endpoint(lambda: _Responder(reply, source),
                                                      local_addr=("127.0.0.1", 0))  # fmt: skip
    return endpoint, endpoint.get_extra_info("sockname")[1]


def _exchange(port: int, msg_id: int = 4242, timeout: float = 0.5,
              name: str = ZONE) -> transport.ExchangeResult:  # fmt: skip
    return asyncio.run(transport.udp_exchange("127.0.0.1", port, _query(msg_id, name),
                                              msg_id, timeout))  # fmt: skip


def test_a_reply_from_another_port_is_not_an_answer() -> None:
    async def main() -> transport.ExchangeResult:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            other.bind(("127.0.0.1", 0))
            endpoint, port = await _serve(lambda data: [_answer(data)], source=other)
            try:
                return await transport.udp_exchange("127.0.0.1", port, _query(7), 7, 0.4)
            finally:
                endpoint.close()

    result = asyncio.run(main())
    assert not isinstance(result, transport.Received), result
    assert result.event.value == "timeout"


def test_a_reply_to_another_question_is_not_the_answer_the_real_one_is() -> None:
    async def main() -> transport.ExchangeResult:
        endpoint, port = await _serve(lambda data: [_answer(data, "other.example."),
                                                    _answer(data)])  # fmt: skip
        try:
            return await transport.udp_exchange("127.0.0.1", port, _query(9), 9, 1.0)
        finally:
            endpoint.close()

    result = asyncio.run(main())
    assert isinstance(result, transport.Received)
    assert dns.message.from_wire(result.wire).question[0].name.to_text() == ZONE
    assert result.mismatched == 1


def test_the_question_is_compared_without_regard_to_case() -> None:
    request = _query(1, "Demo.EXAMPLE.")
    assert udp.same_question(request, _answer(_query(1, "demo.example.")))
    assert not udp.same_question(request, _answer(_query(1, "demo.example.org.")))
    assert udp.same_question(request, request[:4] + b"\0\0" + request[6:12])  # no question


def test_icmp_port_unreachable_reaches_the_probe_it_answers_and_no_other() -> None:
    closed = free_port()

    async def main() -> tuple[transport.ExchangeResult, transport.ExchangeResult]:
        endpoint, port = await _serve(lambda data: [_answer(data)])
        try:
            # Same ID, both pending on the loop's shared sockets at once.
            refused, answered = await asyncio.gather(
                transport.udp_exchange("127.0.0.1", closed, _query(77), 77, 1.0),
                transport.udp_exchange("127.0.0.1", port, _query(77), 77, 1.0))
        finally:
            endpoint.close()
        return refused, answered

    refused, answered = asyncio.run(main())
    assert not isinstance(refused, transport.Received)
    assert refused.event.value == "connection_refused"
    assert isinstance(answered, transport.Received)


def test_an_icmp_error_for_one_server_is_not_the_next_send_failure_of_another() -> None:
    # Seen in a fleet with a dead server: healthy Unbound and NSD probes reported
    # connection_refused now and then. With IP_RECVERR an ICMP error also sets the
    # shared socket's pending error, which the kernel returns from the next call on
    # that socket, whoever makes it: a sendto() to a healthy server.
    closed = free_port()

    async def main() -> list[transport.ExchangeResult]:
        endpoint, port = await _serve(lambda data: [_answer(data)])
        try:
            refused = asyncio.create_task(
                transport.udp_exchange("127.0.0.1", closed, _query(1), 1, 1.0))
            await asyncio.sleep(0)  # its datagram is sent
            time.sleep(0.05)  # the ICMP error is queued; the loop has not read it yet
            # One probe per pooled socket: one of them shares the refused one's socket.
            healthy = [asyncio.create_task(
                transport.udp_exchange("127.0.0.1", port, _query(100 + n), 100 + n, 1.0))
                for n in range(udp.POOL_SIZE)]  # fmt: skip
            return list(await asyncio.gather(refused, *healthy))
        finally:
            endpoint.close()

    refused, *healthy = asyncio.run(main())
    assert not isinstance(refused, transport.Received)
    assert refused.event.value == "connection_refused"
    assert all(isinstance(result, transport.Received) for result in healthy), healthy


def test_a_late_reply_to_a_timed_out_probe_is_dropped_not_counted() -> None:
    spec = ProbeSpec(name="soa", kind=ProbeKind.QUERY, transport=Transport.UDP, timeout=0.3,
                     interval=1.0, qname=ZONE)  # fmt: skip

    async def main() -> tuple[Cause, Cause, int]:
        async with await HostileServer.start(Mode.LATE_REPLY) as server:
            server.late_delay = 0.5
            target = Target(name="late", host="127.0.0.1", port=server.port, probes=(spec,),
                            zone=ZONE)  # fmt: skip
            first = await run_probe(target, spec)
            server.mode = Mode.ACCEPT_NO_READ  # the next probe gets silence...
            second = await run_probe(target, spec)  # ...and the first one's late reply
            return first.cause, second.cause, server.stats.datagrams

    first, second, queries = asyncio.run(main())
    assert queries == 2
    assert first is Cause.NO_RESPONSE
    assert second is Cause.NO_RESPONSE  # not mismatched_reply


def test_probes_sharing_an_id_and_a_server_each_get_their_own_answer() -> None:
    async def main() -> list[transport.ExchangeResult]:
        endpoint, port = await _serve(lambda data: [_answer(data)])
        try:
            return await asyncio.gather(*(
                transport.udp_exchange("127.0.0.1", port, _query(5), 5, 1.0)
                for _ in range(udp.POOL_SIZE + 2)))  # past the pool: a socket of its own
        finally:
            endpoint.close()

    results = asyncio.run(main())
    assert all(isinstance(r, transport.Received) for r in results), results


def test_a_thousand_probes_waiting_on_a_silent_server_hold_no_descriptor_each() -> None:
    async def main() -> tuple[int, int, list[Cause]]:
        spec = ProbeSpec(name="soa", kind=ProbeKind.QUERY, timeout=0.8, interval=1.0,
                         qname=ZONE)  # fmt: skip
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
            silent.bind(("127.0.0.1", 0))
            targets = [Target(name=f"t{i}", host="127.0.0.1", port=silent.getsockname()[1],
                              probes=(spec,), zone=ZONE) for i in range(1000)]  # fmt: skip
            before = len(os.listdir("/proc/self/fd"))
            tasks = [asyncio.create_task(run_probe(t, spec)) for t in targets]
            await asyncio.sleep(0.3)
            during = len(os.listdir("/proc/self/fd"))
            results = await asyncio.gather(*tasks)
        return before, during, [r.cause for r in results]

    before, during, causes = asyncio.run(main())
    assert during - before <= udp.POOL_SIZE
    assert set(causes) == {Cause.NO_RESPONSE}


def test_the_shared_sockets_answer_a_real_server_across_event_loops() -> None:
    async def one() -> Cause:
        server = await start_refserver(ServerBehaviour())
        try:
            spec = ProbeSpec(name="soa", kind=ProbeKind.QUERY, qname="demo.example.")
            target = Target(name="ref", host="127.0.0.1", port=server.port, probes=(spec,),
                            zone="demo.example.")  # fmt: skip
            return (await run_probe(target, spec)).cause
        finally:
            await server.close()

    # Each asyncio.run is a new loop: a pool must never outlive its loop's use.
    assert [asyncio.run(one()) for _ in range(3)] == [Cause.NONE] * 3


def test_ipv6_errors_and_replies_reach_the_probe_whatever_the_literals_spelling() -> None:
    async def main() -> tuple[transport.ExchangeResult, transport.ExchangeResult]:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe_port:
            probe_port.bind(("::1", 0))
            closed = probe_port.getsockname()[1]
        loop = asyncio.get_running_loop()
        endpoint, _ = await loop.create_datagram_endpoint(
            lambda: _Responder(lambda data: [_answer(data)]), local_addr=("::1", 0))
        port = endpoint.get_extra_info("sockname")[1]
        try:
            return await asyncio.gather(
                transport.udp_exchange("::1", closed, _query(3), 3, 1.0),
                # recvfrom reports "::1": the spelling of the config must not matter.
                transport.udp_exchange("0:0:0:0:0:0:0:1", port, _query(3), 3, 1.0))
        finally:
            endpoint.close()

    refused, answered = asyncio.run(main())
    assert not isinstance(refused, transport.Received)
    assert refused.event.value == "connection_refused"
    assert isinstance(answered, transport.Received)
