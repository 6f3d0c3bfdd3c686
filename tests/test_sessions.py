"""SharedConnections: one handshake per server shared by the probes waiting on it, and
connections closed past the limit or after nobody asked for them (exporter/sessions.py)."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import pytest

from exporter.certs import make_self_signed
from exporter.outcome import Outcome, WireEvent
from exporter.sessions import PerLoop, SharedConnections
from tests.conftest import free_port
from tests.doqserver import DoqServer
from tests.h2server import H2Server


class Conn:
    def __init__(self, name: str) -> None:
        self.name = name
        self.usable = True

    def shut(self) -> None:
        self.usable = False

    async def wait_released(self) -> None:
        pass


def test_probes_that_start_together_share_one_handshake() -> None:
    async def main() -> tuple[list[Conn | Outcome], int]:
        pool: SharedConnections[Conn] = SharedConnections()
        handshakes = 0

        async def connect() -> Conn:
            nonlocal handshakes
            handshakes += 1
            await asyncio.sleep(0.05)
            return Conn("a")

        got = await asyncio.gather(*(pool.get("a", connect) for _ in range(5)))
        return list(got), handshakes

    got, handshakes = asyncio.run(main())
    assert handshakes == 1
    assert len({id(c) for c in got}) == 1


def test_a_failed_handshake_is_every_waiters_outcome_and_the_next_probe_tries_again() -> None:
    async def main() -> tuple[list[Conn | Outcome], Conn | Outcome]:
        pool: SharedConnections[Conn] = SharedConnections()
        refused = Outcome(WireEvent.CONNECTION_REFUSED, transport="doh")

        async def fail() -> Outcome:
            await asyncio.sleep(0.01)
            return refused

        async def ok() -> Conn:
            return Conn("a")

        failed = await asyncio.gather(*(pool.get("a", fail) for _ in range(3)))
        return list(failed), await pool.get("a", ok)

    failed, later = asyncio.run(main())
    assert all(isinstance(f, Outcome) for f in failed)
    assert isinstance(later, Conn)


def test_the_least_recently_used_connection_goes_past_the_limit_and_idle_ones_go() -> None:
    async def main() -> list[bool]:
        pool: SharedConnections[Conn] = SharedConnections(limit=2, idle=0.05)
        conns = {name: Conn(name) for name in "abc"}

        def connect(name: str):  # type: ignore[no-untyped-def]
            async def run() -> Conn:
                return conns[name]

            return run

        for name in "abc":
            await pool.get(name, connect(name))
        usable_after_limit = [conns[n].usable for n in "abc"]
        await asyncio.sleep(0.06)
        await pool.get("c", connect("c"))  # b went unasked for longer than idle
        return [*usable_after_limit, conns["b"].usable, conns["c"].usable]

    assert asyncio.run(main()) == [False, True, True, False, True]


def test_each_event_loop_has_its_own_pool() -> None:
    per_loop: PerLoop[list[int]] = PerLoop(list)

    async def get_twice() -> tuple[list[int], list[int]]:
        return per_loop.get(), per_loop.get()

    first_a, first_b = asyncio.run(get_twice())
    second_a, _ = asyncio.run(get_twice())
    assert first_a is first_b
    assert second_a is not first_a


@pytest.mark.slow
def test_stopping_dnsgap_serve_closes_every_pooled_connection_cleanly(tmp_path: Path) -> None:
    """SIGTERM with DoH and DoQ connections open: the servers see each one closed, the
    process exits 0, and Python reports no transport left unclosed and no task left
    pending (before: DoQ's socket close was scheduled on a loop that had ended)."""
    crt, key = (str(p) for p in make_self_signed(tmp_path))
    port = free_port()

    async def main() -> tuple[int | None, str]:
        async with (await H2Server.start(crt, key, "answer") as h2,
                    await DoqServer.start(crt, key) as quic):  # fmt: skip
            config = tmp_path / "dnsgap.yml"
            config.write_text(
                f'http: {{listen: "127.0.0.1:{port}"}}\n'
                "scheduler: {jitter: 0}\n"
                "defaults: {interval: 1s, timeout: 1s}\n"
                "targets:\n" + "".join(
                    f'  - {{name: {t}, server: "127.0.0.1:{p}", zone: gap.test., '
                    f'tls: {{ca_file: "{crt}"}}, probes: [{{name: soa, kind: query, '
                    f'transport: {t}, qname: "@"}}]}}\n'
                    for t, p in (("doh", h2.port), ("doq", quic.port))))
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-W", "always::ResourceWarning", "-m", "exporter",
                "serve", "--config", str(config),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
            try:
                deadline = time.monotonic() + 20
                while h2.requests == 0 or quic.stats.queries == 0:
                    assert time.monotonic() < deadline, "no DoH or DoQ query arrived"
                    await asyncio.sleep(0.05)
                assert (h2.open_connections, quic.stats.closed) == (1, 0)
                process.send_signal(signal.SIGTERM)
                async with asyncio.timeout(10):
                    _, stderr = await process.communicate()
                deadline = time.monotonic() + 3
                while h2.open_connections or not quic.stats.closed:
                    assert time.monotonic() < deadline, "a connection was left open"
                    await asyncio.sleep(0.05)
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
        return process.returncode, stderr.decode(errors="replace")

    returncode, stderr = asyncio.run(main())
    assert returncode == 0, stderr
    for trouble in ("unclosed", "Task was destroyed", "never awaited", "Traceback"):
        assert trouble not in stderr, stderr
