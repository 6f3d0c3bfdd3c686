"""Load loops that run in a child process of their own and report their own CPU.

``python -m bench.workers MODE PORT COUNT CONCURRENCY`` prints one JSON line:
the CPU-seconds the loop cost (``resource.getrusage`` of this process, measured
around the loop only, so interpreter start-up is not counted), the wall time and
how many exchanges got an answer.

Modes:
- ``raw-shared``: pre-built query, ID patched, one UDP socket, ID -> future demux.
- ``raw-per-query``: the same with a new connected UDP socket per query.
- ``dnspython``: ``dns.message.make_query`` + ``dns.asyncquery.udp`` per query.
- ``dnsgap-engine``: dnsgap's ``run_probe`` + ``MetricsState.record`` per probe
  (the scheduled path without the scheduler and HTTP).
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from collections.abc import Awaitable, Callable

import dns.asyncquery
import dns.message

from bench.dnsserver import ZONE

HOST = "127.0.0.1"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _drive(count: int, concurrency: int, one: Callable[[int], Awaitable[bool]]) -> int:
    """Run ``one(i)`` for i in range(count) with at most ``concurrency`` at once."""
    answered = 0
    next_index = 0

    async def lane() -> None:
        nonlocal answered, next_index
        while next_index < count:
            index = next_index
            next_index += 1
            if await one(index):
                answered += 1

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return answered


class _Demux(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.waiting: dict[int, asyncio.Future[bytes]] = {}

    def datagram_received(self, data: bytes, addr: object) -> None:
        future = self.waiting.pop(int.from_bytes(data[:2], "big"), None)
        if future is not None and not future.done():
            future.set_result(data)


class _One(asyncio.DatagramProtocol):
    def __init__(self, future: asyncio.Future[bytes]) -> None:
        self.future = future

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self.future.done():
            self.future.set_result(data)


def _template() -> bytes:
    return dns.message.make_query(ZONE, "SOA").to_wire()


async def raw_shared(port: int, count: int, concurrency: int) -> tuple[float, float, int]:
    loop = asyncio.get_running_loop()
    transport, demux = await loop.create_datagram_endpoint(_Demux, remote_addr=(HOST, port))
    tail = _template()[2:]

    async def one(index: int) -> bool:
        msg_id = index & 0xFFFF
        future: asyncio.Future[bytes] = loop.create_future()
        demux.waiting[msg_id] = future
        transport.sendto(msg_id.to_bytes(2, "big") + tail)
        try:
            async with asyncio.timeout(2.0):
                await future
        except TimeoutError:
            demux.waiting.pop(msg_id, None)
            return False
        return True

    cpu, wall = _cpu(), time.perf_counter()
    answered = await _drive(count, concurrency, one)
    result = _cpu() - cpu, time.perf_counter() - wall, answered
    transport.close()
    return result


async def raw_per_query(port: int, count: int, concurrency: int) -> tuple[float, float, int]:
    loop = asyncio.get_running_loop()
    tail = _template()[2:]

    async def one(index: int) -> bool:
        future: asyncio.Future[bytes] = loop.create_future()
        transport, _ = await loop.create_datagram_endpoint(lambda: _One(future),
                                                           remote_addr=(HOST, port))
        try:
            transport.sendto((index & 0xFFFF).to_bytes(2, "big") + tail)
            async with asyncio.timeout(2.0):
                await future
        except TimeoutError:
            return False
        finally:
            transport.close()
        return True

    cpu, wall = _cpu(), time.perf_counter()
    answered = await _drive(count, concurrency, one)
    return _cpu() - cpu, time.perf_counter() - wall, answered


async def dnspython(port: int, count: int, concurrency: int) -> tuple[float, float, int]:
    async def one(_: int) -> bool:
        query = dns.message.make_query(ZONE, "SOA")
        try:
            await dns.asyncquery.udp(query, HOST, timeout=2.0, port=port)
        except (OSError, dns.exception.Timeout):
            return False
        return True

    cpu, wall = _cpu(), time.perf_counter()
    answered = await _drive(count, concurrency, one)
    return _cpu() - cpu, time.perf_counter() - wall, answered


async def dnsgap_engine(port: int, count: int, concurrency: int) -> tuple[float, float, int]:
    from exporter.config import Config, EdnsSettings, ProbeSpec, Target
    from exporter.kinds import ProbeKind
    from exporter.metrics import MetricsState
    from exporter.probes import TlsContexts, run_probe

    spec = ProbeSpec(name="soa", kind=ProbeKind.QUERY, qname=ZONE, qtype=6, timeout=2.0,
                     edns=EdnsSettings(payload=1232))  # fmt: skip
    target = Target(name="bench", host=HOST, port=port, probes=(spec,), zone=ZONE)
    state = MetricsState()
    state.sync(Config(targets=(target,)), [(target, spec)])
    contexts = TlsContexts()

    async def one(_: int) -> bool:
        result = await run_probe(target, spec, contexts)
        state.record(target.name, spec.name, result)
        return result.outcome.rcode == 0

    await one(0)  # first-use costs (imports, caches) are not per-probe costs
    cpu, wall = _cpu(), time.perf_counter()
    answered = await _drive(count, concurrency, one)
    return _cpu() - cpu, time.perf_counter() - wall, answered


MODES = {"raw-shared": raw_shared, "raw-per-query": raw_per_query, "dnspython": dnspython,
         "dnsgap-engine": dnsgap_engine}  # fmt: skip


def main(argv: list[str]) -> int:
    mode, port, count, concurrency = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    cpu, wall, answered = asyncio.run(MODES[mode](port, count, concurrency))
    print(json.dumps({"cpu": cpu, "wall": wall, "count": count, "answered": answered}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
