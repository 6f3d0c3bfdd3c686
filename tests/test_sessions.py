"""SharedConnections: one handshake per server shared by the probes waiting on it, and
connections closed past the limit or after nobody asked for them (exporter/sessions.py)."""

from __future__ import annotations

import asyncio

from exporter.outcome import Outcome, WireEvent
from exporter.sessions import PerLoop, SharedConnections


class Conn:
    def __init__(self, name: str) -> None:
        self.name = name
        self.usable = True

    def shut(self) -> None:
        self.usable = False


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
