"""A Retry Delay holds for the target whichever path sent the probe (RFC 8490
§6.6.1): one-shot and persistent DSO probes share one window, and a run the
window holds back is a skip, not a gap."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from exporter import dso_client, refserver
from exporter.config import (
    Config,
    DsoSettings,
    ProbeSpec,
    SchedulerSettings,
    Target,
    Transport,
)
from exporter.kinds import ProbeKind
from exporter.metrics import MetricsState
from exporter.outcome import Outcome, WireEvent
from exporter.probes import run_probe
from exporter.refserver import ServerBehaviour
from exporter.scheduler import ProbeScheduler


def spec(persistent: bool = False, interval: float = 60.0) -> ProbeSpec:
    return ProbeSpec(name="dso_keepalive", kind=ProbeKind.DSO_KEEPALIVE, transport=Transport.TCP,
                     timeout=2.0, interval=interval,
                     dso=DsoSettings(persistent=persistent))  # fmt: skip


def target(port: int, *probes: ProbeSpec) -> Target:
    return Target(name="busy", host="127.0.0.1", port=port, probes=probes, zone="demo.example.")


def run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    async def isolated() -> None:
        try:
            await coro()
        finally:
            await dso_client.close_all()  # the default pool's sessions and windows

    asyncio.run(asyncio.wait_for(isolated(), 30))


def assert_held(outcome: Outcome, delay: float) -> None:
    assert outcome.event is WireEvent.NOT_SENT
    assert outcome.dso is not None
    assert outcome.dso.held_by_retry_delay
    assert outcome.dso.retry_delay == delay
    assert outcome.error is not None
    assert outcome.error.startswith(f"held: the server asked for a Retry Delay of {delay:g} s")


def test_one_shot_probes_stay_away_for_the_retry_delay() -> None:
    async def scenario() -> None:
        async with await refserver.start(ServerBehaviour(retry_delay_ms=60_000)) as server:
            tgt = target(server.port)
            first = await dso_client.run_dso_probe(tgt, spec(), None)
            assert first.rcode == 0  # the Keepalive was answered, then Retry Delay came
            assert first.dso is not None
            assert first.dso.closed_reason == "retry_delay"
            for _ in range(3):
                assert_held(await dso_client.run_dso_probe(tgt, spec(), None), 60.0)
            assert server.stats.connections == 1

    run(scenario)


@pytest.mark.parametrize(("first_persistent", "then_persistent"), [(True, False), (False, True)])
def test_one_window_holds_persistent_and_one_shot_probes_alike(
    first_persistent: bool, then_persistent: bool
) -> None:
    async def scenario() -> None:
        async with await refserver.start(ServerBehaviour(retry_delay_ms=60_000)) as server:
            tgt = target(server.port)
            await dso_client.run_dso_probe(tgt, spec(first_persistent), None)
            for _ in range(20):  # the pool learns of the session end from its reader
                if server.stats.closes or not first_persistent:
                    break
                await asyncio.sleep(0.05)
            assert_held(await dso_client.run_dso_probe(tgt, spec(then_persistent), None), 60.0)
            assert server.stats.connections == 1

    run(scenario)


def test_the_target_is_probed_again_once_the_delay_has_passed() -> None:
    async def scenario() -> None:
        async with await refserver.start(ServerBehaviour(retry_delay_ms=400)) as server:
            tgt = target(server.port)
            await dso_client.run_dso_probe(tgt, spec(), None)
            assert_held(await dso_client.run_dso_probe(tgt, spec(), None), 0.4)
            await asyncio.sleep(0.5)
            again = await dso_client.run_dso_probe(tgt, spec(), None)
            assert (again.event, again.rcode) == (WireEvent.REPLY, 0)
            assert server.stats.connections == 2

    run(scenario)


def test_held_runs_are_counted_as_skipped_and_keep_the_cause() -> None:
    async def scenario() -> None:
        async with await refserver.start(ServerBehaviour(retry_delay_ms=60_000)) as server:
            probe = spec()
            tgt = target(server.port, probe)
            state = MetricsState()
            state.sync(Config(targets=(tgt,)), [(tgt, probe)])
            for _ in range(3):
                state.record(tgt.name, probe.name, await run_probe(tgt, probe))
            text = state.render()
            pair = 'target="busy",probe="dso_keepalive"'
            assert 'dnsgap_probes_skipped_total{reason="retry_delay"} 2\n' in text
            assert f"dnsgap_probe_success{{{pair}}} 1\n" in text
            assert f"dnsgap_gap_changes_total{{{pair}}} 0\n" in text
            responses = f'dnsgap_probe_responses_total{{{pair},rcode="NOERROR",cause="none"}}'
            assert f"{responses} 1\n" in text
            assert 'cause="not_sent"} 1' not in text  # series pre-created at 0 stay 0

    run(scenario)


@pytest.mark.slow
def test_scheduled_probes_of_a_busy_server_neither_reconnect_early_nor_flap() -> None:
    # demo-dso-busy in small: a Retry Delay of 1 s, one-shot probes every 0.25 s.
    async def scenario() -> None:
        busy = ServerBehaviour(retry_delay_ms=1000, retry_grace=0.2)
        async with await refserver.start(busy) as server:
            probe = spec(interval=0.25)
            tgt = target(server.port, probe)
            settings = SchedulerSettings(jitter=0.0)
            state = MetricsState()
            state.sync(Config(targets=(tgt,), scheduler=settings), [(tgt, probe)])
            scheduler = ProbeScheduler(state, run_probe, settings)
            scheduler.apply([(tgt, probe)])
            scheduler.start()
            await asyncio.sleep(3.2)
            await scheduler.stop()
            pair = state.pairs[("busy", "dso_keepalive")]
            assert pair.gap_changes == 0
            assert pair.cause is not None
            assert pair.cause.value == "none"
            assert 2 <= server.stats.connections <= 4  # one per second, not one per run
            assert state.skipped["retry_delay"] >= 6

    run(scenario)
