"""Persistent DSO sessions (``dso.persistent``): one session per target kept
open across probes, kept alive on the granted interval, closed on inactivity,
every end reported (RFC 8490 §6.2-§6.6)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from exporter import dso_client, refserver
from exporter.causes import classify
from exporter.certs import make_self_signed
from exporter.config import DsoSettings, ProbeSpec, Target, TlsSettings, Transport, load_config
from exporter.dso import INFINITE_MS, DsoMessage, Keepalive, RetryDelay, frame
from exporter.dso_client import DsoSessionPool
from exporter.kinds import ProbeKind
from exporter.metrics import MetricsState, plan_pair
from exporter.outcome import Outcome, WireEvent
from exporter.probes import ProbeResult
from exporter.refserver import ServerBehaviour
from exporter.runtime import Exporter
from exporter.transport import client_ssl_context


def spec(kind: ProbeKind = ProbeKind.DSO_KEEPALIVE, **dso: Any) -> ProbeSpec:
    return ProbeSpec(name=kind.value, kind=kind, transport=Transport.TCP, timeout=2.0,
                     dso=DsoSettings(persistent=True, **dso))  # fmt: skip


def target(port: int) -> Target:
    return Target(name="t", host="127.0.0.1", port=port, probes=(), zone="demo.example.")


def run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(coro(), 30))


class Ends:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, target: str, reason: str) -> None:
        self.seen.append((target, reason))


@contextlib.asynccontextmanager
async def pool_against(
    behaviour: ServerBehaviour | None = None,
) -> AsyncIterator[tuple[Ends, DsoSessionPool, refserver.RunningServer]]:
    """A pool that records every session end, and a reference server; on the way
    out the pool closes first (its sessions end as "shutdown"), then the server."""
    ends = Ends()
    pool = DsoSessionPool(ends)
    async with await refserver.start(behaviour) as server:
        try:
            yield ends, pool, server
        finally:
            await pool.close_all()


async def _until(predicate: Callable[[], bool], seconds: float = 3.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)


def test_probes_share_one_session_and_shutdown_is_reported() -> None:
    async def scenario() -> None:
        async with pool_against() as (ends, pool, server):
            first = await pool.run(target(server.port), spec(), None)
            second = await pool.run(target(server.port), spec(ProbeKind.DSO_TLV), None)
            assert first.rcode == 0
            assert second.rcode == 11  # DSOTYPENI inside the same session
            assert server.stats.connections == 1
            assert first.dso is not None
            assert first.dso.session_established
            assert first.dso.closed_reason is None  # ends go to the callback only
            assert pool.session("t") is not None
        assert ends.seen == [("t", "shutdown")]

    run(scenario)


def test_idle_session_is_closed_on_the_inactivity_timeout_and_reopened() -> None:
    async def scenario() -> None:
        async with pool_against(ServerBehaviour(inactivity_timeout_ms=300)) as (ends, pool, server):
            await pool.run(target(server.port), spec(), None)
            await _until(lambda: bool(ends.seen))
            assert ends.seen == [("t", "inactivity")]
            again = await pool.run(target(server.port), spec(), None)
            assert again.rcode == 0
            assert server.stats.connections == 2
            # We closed first: the server never had to abort us (§6.4.1).
            assert "inactivity" not in server.stats.closes

    run(scenario)


def test_keepalives_are_sent_within_the_granted_interval() -> None:
    keepalives: list[float] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The reference server refuses intervals under 10 s (§6.5.2); this one
        # grants one second so the test stays short.
        try:
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                msg = DsoMessage.from_wire(await reader.readexactly(length))
                if isinstance(msg.primary, Keepalive) and msg.msg_id:
                    keepalives.append(asyncio.get_running_loop().time())
                    reply = msg.response(0, (Keepalive(INFINITE_MS, 1000),))
                    writer.write(frame(reply.to_wire()))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def scenario() -> None:
        ends = Ends()
        pool = DsoSessionPool(ends)
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            outcome = await pool.run(target(port), spec(), None)
            assert outcome.dso is not None
            assert outcome.dso.keepalive_interval == 1.0
            await asyncio.sleep(2.6)
            assert len(keepalives) >= 3  # the probe's own, then about one a second
            gaps = [b - a for a, b in itertools.pairwise(keepalives)]
            assert max(gaps) < 1.0
            assert ends.seen == []
        finally:
            await pool.close_all()
            server.close()

    run(scenario)


def test_retry_delay_keeps_the_pool_away_for_the_delay() -> None:
    async def scenario() -> None:
        async with pool_against(ServerBehaviour(retry_delay_ms=60_000)) as (ends, pool, server):
            first = await pool.run(target(server.port), spec(), None)
            assert first.rcode == 0
            await _until(lambda: bool(ends.seen))
            assert ends.seen == [("t", "retry_delay")]
            second = await pool.run(target(server.port), spec(), None)
            assert second.event is WireEvent.NOT_SENT
            assert second.dso is not None
            assert second.dso.retry_delay == 60.0
            assert server.stats.connections == 1

    run(scenario)


def test_reset_session_is_reported_and_the_next_probe_reconnects() -> None:
    async def scenario() -> None:
        async with pool_against() as (ends, pool, server):
            await pool.run(target(server.port), spec(), None)
            for conn in list(server.connections):
                conn.end("test_abort", forcibly=True)
            await _until(lambda: bool(ends.seen))
            assert ends.seen == [("t", "reset")]
            again = await pool.run(target(server.port), spec(), None)
            assert again.rcode == 0
            assert server.stats.connections == 2

    run(scenario)


def test_persistent_spec_goes_through_the_default_pool() -> None:
    async def scenario() -> None:
        server = await refserver.start()
        try:
            for _ in range(3):
                outcome: Outcome = await dso_client.run_dso_probe(target(server.port), spec(), None)
                assert outcome.rcode == 0
                assert outcome.details.get("persistent") is True
            assert server.stats.connections == 1
        finally:
            await dso_client.close_all()
            await server.close()
        assert dso_client.default_pool.session("t") is None

    run(scenario)


# --- a reused session that ends under a probe (issue 10 item 1) -------------------------


@pytest.mark.parametrize(("forcibly", "end"), [(False, "server_closed"), (True, "reset")])
def test_reused_session_the_server_ends_as_the_probe_arrives_is_retried_on_a_fresh_one(
    forcibly: bool, end: str
) -> None:
    async def scenario() -> None:
        behaviour = ServerBehaviour(close_idle_on_arrival=0.3, close_idle_forcibly=forcibly)
        async with pool_against(behaviour) as (ends, pool, server):
            first = await pool.run(target(server.port), spec(), None)
            assert first.rcode == 0
            await asyncio.sleep(0.5)
            second = await pool.run(target(server.port), spec(), None)
            assert server.stats.closes == ["idle_on_arrival"]
            assert (second.event, second.rcode) == (WireEvent.REPLY, 0)
            assert second.dso is not None
            assert second.dso.session_established
            retried = second.details["retried"]
            assert isinstance(retried, dict)
            assert retried["session_closed"] == end
            assert server.stats.connections == 2
            assert pool.session("t") is not None
            assert ends.seen == [("t", end)]

    run(scenario)


async def _delaying_server(delays: list[float]) -> asyncio.Server:
    """Grants a 1 s inactivity timeout; answers the n-th Keepalive after delays[n]."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answered = 0
        try:
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                msg = DsoMessage.from_wire(await reader.readexactly(length))
                await asyncio.sleep(delays[min(answered, len(delays) - 1)])
                answered += 1
                writer.write(frame(msg.response(0, (Keepalive(1000, INFINITE_MS),)).to_wire()))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_inactivity_close_waits_for_the_probe_in_flight() -> None:
    async def scenario() -> None:
        ends = Ends()
        pool = DsoSessionPool(ends)
        server = await _delaying_server([0.0, 0.6])
        port = server.sockets[0].getsockname()[1]
        try:
            await pool.run(target(port), spec(), None)
            await asyncio.sleep(0.7)
            # Sent 0.3 s before the session expires, answered 0.3 s after: the
            # client's own inactivity close must not cut it off (it waits, then closes).
            second = await pool.run(target(port), spec(), None)
            assert (second.event, second.rcode) == (WireEvent.REPLY, 0)
            assert "retried" not in second.details
            await _until(lambda: bool(ends.seen))
            assert ends.seen == [("t", "inactivity")]
        finally:
            await pool.close_all()
            server.close()

    run(scenario)


def test_keepalive_only_pool_expires_each_inactivity_timeout_without_a_failed_probe() -> None:
    async def scenario() -> None:
        async with pool_against(ServerBehaviour(inactivity_timeout_ms=400)) as (ends, pool, server):
            outcomes = []
            loop = asyncio.get_running_loop()
            stop = loop.time() + 3.0
            while loop.time() < stop:  # every 0.1 s: probes land on each expiry
                outcomes.append(await pool.run(target(server.port), spec(), None))
                await asyncio.sleep(0.1)
            assert [o.rcode for o in outcomes] == [0] * len(outcomes)
            assert all("retried" not in o.details for o in outcomes)
            assert len(ends.seen) >= 4
            assert set(ends.seen) == {("t", "inactivity")}

    run(scenario)


async def _retry_delay_on_second_request_server(connections: list[int]) -> asyncio.Server:
    """Answers the first Keepalive; to the next request it sends Retry Delay (60 s)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        seen = 0
        try:
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                msg = DsoMessage.from_wire(await reader.readexactly(length))
                seen += 1
                if seen == 1:
                    reply = msg.response(0, (Keepalive(INFINITE_MS, INFINITE_MS),))
                else:
                    reply = DsoMessage(0, tlvs=(RetryDelay(60_000),))
                writer.write(frame(reply.to_wire()))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_retry_delay_under_a_pending_probe_holds_it_and_is_not_retried() -> None:
    async def scenario() -> None:
        connections: list[int] = []
        pool = DsoSessionPool()
        server = await _retry_delay_on_second_request_server(connections)
        port = server.sockets[0].getsockname()[1]
        try:
            await pool.run(target(port), spec(), None)
            second = await pool.run(target(port), spec(), None)
            assert second.dso is not None
            assert second.dso.held_by_retry_delay
            assert second.dso.retry_delay == 60.0
            assert "retried" not in second.details
            third = await pool.run(target(port), spec(), None)
            assert third.event is WireEvent.NOT_SENT
            assert third.dso is not None
            assert third.dso.held_by_retry_delay
            assert len(connections) == 1
        finally:
            await pool.close_all()
            server.close()

    run(scenario)


class SlowTlsFront:
    """DNS over TLS in front of a reference server's TCP port whose TLS handshake
    starts ``delay`` seconds after the connection: a probe opening a session stays
    that long in its connect (the window in which a reload can remove its target)."""

    def __init__(self, backend_port: int, cert: tuple[str, str], delay: float) -> None:
        self.backend_port = backend_port
        self.delay = delay
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(*cert)
        self.accepted = asyncio.Event()
        self.open = 0
        self.port = 0
        self._listener = socket.socket()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> SlowTlsFront:
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen()
        self._listener.setblocking(False)
        self.port = int(self._listener.getsockname()[1])
        self._tasks.add(asyncio.create_task(self._accept()))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._listener.close()

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(self._listener)
            self.open += 1
            self.accepted.set()
            self._tasks.add(asyncio.create_task(self._serve(conn)))

    async def _serve(self, conn: socket.socket) -> None:
        # The ClientHello waits in the kernel until the handshake starts.
        loop = asyncio.get_running_loop()
        writer: asyncio.StreamWriter | None = None
        upstream: asyncio.StreamWriter | None = None
        try:
            await asyncio.sleep(self.delay)
            reader = asyncio.StreamReader()
            protocol = asyncio.StreamReaderProtocol(reader)
            transport, _ = await loop.connect_accepted_socket(lambda: protocol, conn,
                                                              ssl=self.context)  # fmt: skip
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            up_reader, upstream = await asyncio.open_connection("127.0.0.1", self.backend_port)
            await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer))
        except (OSError, ssl.SSLError):
            pass
        finally:
            self.open -= 1
            for stream in (writer, upstream):
                if stream is not None:
                    stream.close()
            if writer is None:
                conn.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    crt, key = make_self_signed(tmp_path_factory.mktemp("dso-tls"))
    return str(crt), str(key)


def tls_target(name: str, port: int, ca_file: str) -> Target:
    return Target(name=name, host="127.0.0.1", port=port, probes=(), zone="demo.example.",
                  tls=TlsSettings(ca_file=ca_file))  # fmt: skip


def test_closing_a_target_waits_for_its_probe_and_leaves_no_session(
    cert: tuple[str, str],
) -> None:
    """The probe is opening the target's session when close() comes (a reload removed
    the target). Before, close() dropped the target's lock under the probe and
    returned; the probe then kept its new session, with keepalives, for a target
    that no longer exists."""
    tls_spec = dataclasses.replace(spec(), transport=Transport.TLS)

    async def scenario() -> None:
        async with (pool_against() as (ends, pool, server),
                    SlowTlsFront(server.port, cert, delay=0.5) as front):  # fmt: skip
            gone = tls_target("gone", front.port, cert[0])
            context = client_ssl_context(gone.tls)
            probe = asyncio.create_task(pool.run(gone, tls_spec, context))
            await front.accepted.wait()
            await pool.close("gone")
            assert probe.done()  # close() waited for the probe in flight
            outcome = probe.result()
            assert outcome.dso is not None
            assert outcome.dso.target_removed, outcome
            assert pool.session("gone") is None
            await _until(lambda: front.open == 0)
            assert (front.open, server.stats.dso_sessions, ends.seen) == (0, 0, [])
            # A result of the removed target is dropped, even if its pair is back.
            state = MetricsState()
            state.install_pairs([plan_pair(gone, tls_spec)])
            state.record("gone", tls_spec.name, ProbeResult(
                outcome, classify(tls_spec.kind, outcome), False, 0.1, 0.0))  # fmt: skip
            pair = state.pairs[("gone", tls_spec.name)]
            assert (sum(pair.responses.values()), pair.cause) == (0, None)
            # Added back, the target gets a session of its own.
            front.delay = 0.0
            again = await pool.run(gone, tls_spec, context)
            assert (again.rcode, pool.session("gone") is not None) == (0, True), again

    run(scenario)


def test_a_reload_removing_a_target_while_its_probe_connects_leaves_nothing_behind(
    tmp_path: Path, cert: tuple[str, str],
) -> None:
    async def scenario() -> None:
        async with (await refserver.start() as server,
                    SlowTlsFront(server.port, cert, delay=0.5) as front):  # fmt: skip
            path = tmp_path / "dnsgap.yml"
            kept = f"""scheduler: {{jitter: 0}}
targets:
  - name: kept
    server: "127.0.0.1:{server.port}"
    zone: demo.example.
    probes: [{{name: soa, kind: query, qname: "@", interval: 1s, timeout: 1s}}]
"""
            path.write_text(kept + f"""  - name: gone
    server: "127.0.0.1:{front.port}"
    zone: demo.example.
    tls: {{ca_file: "{cert[0]}"}}
    probes: [{{name: ka, kind: dso_keepalive, transport: tls, interval: 2s, timeout: 2s,
              dso: {{persistent: true, keepalive_interval: 10s, inactivity_timeout: 30s}}}}]
""")
            exporter = Exporter(load_config(str(path)), str(path))
            exporter.start()
            try:
                await asyncio.wait_for(front.accepted.wait(), 5)
                path.write_text(kept)
                assert (await exporter.reload()).ok
                assert dso_client.default_pool.session("gone") is None
                await _until(lambda: front.open == 0)
                await asyncio.sleep(1.0)  # past the handshake the probe waited for
                assert dso_client.default_pool.session("gone") is None
                assert (front.open, server.stats.dso_sessions) == (0, 0)
                rendered = exporter.state.render()
                assert 'target="gone"' not in rendered
                assert 'target="kept"' in rendered
            finally:
                await exporter.stop()

    run(scenario)
