"""The scheduler spreads pairs over their interval, never overlaps a pair with itself,
and holds the global concurrency limit."""

from __future__ import annotations

import asyncio
import itertools
import time

from exporter.causes import Cause
from exporter.config import Config, ProbeSpec, SchedulerSettings, Target
from exporter.kinds import ProbeKind
from exporter.metrics import MetricsState
from exporter.outcome import Outcome, WireEvent
from exporter.probes import ProbeResult
from exporter.scheduler import ProbeScheduler, first_due, next_due, phase_fraction


def test_phases_spread_a_thousand_pairs_over_the_interval() -> None:
    fractions = sorted(phase_fraction(f"t{i}", "soa") for i in range(1000))
    # every tenth of the interval gets a share, none gets a crowd
    buckets = [0] * 10
    for fraction in fractions:
        buckets[int(fraction * 10)] += 1
    assert min(buckets) > 60
    assert max(buckets) < 140
    same_ms = max(sum(1 for f in fractions if int(f * 60_000) == ms)
                  for ms in {int(f * 60_000) for f in fractions})  # fmt: skip
    assert same_ms <= 3


def test_phase_is_stable_across_restarts() -> None:
    assert phase_fraction("ns1", "soa") == phase_fraction("ns1", "soa")
    assert first_due(100.0, 60.0, 0.5, 1.0) == 130.0


def test_a_stalled_pair_skips_missed_runs_instead_of_bursting() -> None:
    assert next_due(100.0, 10.0, 105.0) == 110.0
    assert next_due(100.0, 10.0, 135.0) == 140.0


def _spec(name: str, interval: float) -> ProbeSpec:
    return ProbeSpec(name=name, kind=ProbeKind.QUERY, interval=interval, timeout=interval)


def _result() -> ProbeResult:
    return ProbeResult(Outcome(WireEvent.REPLY, 0), Cause.NONE, True, 0.001, time.time())


def _run_scheduler(targets: tuple[Target, ...], settings: SchedulerSettings, seconds: float,
                   probe_seconds: float) -> tuple[MetricsState, list[float], int]:  # fmt: skip
    state = MetricsState()
    starts: list[float] = []
    peak = 0
    running = 0

    async def runner(target: Target, spec: ProbeSpec) -> ProbeResult:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        starts.append(time.monotonic())
        await asyncio.sleep(probe_seconds)
        running -= 1
        return _result()

    async def scenario() -> None:
        pairs = [(t, s) for t in targets for s in t.probes]
        state.sync(Config(targets=targets, scheduler=settings), pairs)
        scheduler = ProbeScheduler(state, runner, settings)
        scheduler.apply(pairs)
        scheduler.start()
        await asyncio.sleep(seconds)
        await scheduler.stop()

    asyncio.run(scenario())
    return state, starts, peak


def test_a_pair_never_overlaps_itself() -> None:
    slow = Target("slow", "127.0.0.1", 53, (_spec("soa", 0.2),))
    state, starts, _ = _run_scheduler((slow,), SchedulerSettings(jitter=0.0), 1.5, 0.5)
    assert state.skipped["overlap"] >= 3
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(gap >= 0.45 for gap in gaps)


def test_a_configured_bound_refuses_runs_over_it_and_counts_them_never_queues() -> None:
    targets = tuple(Target(f"t{i}", "127.0.0.1", 53, (_spec("soa", 1.0),)) for i in range(40))
    settings = SchedulerSettings(max_concurrency=5, jitter=0.0)
    state, starts, peak = _run_scheduler(targets, settings, 0.5, 0.3)
    assert peak == 5
    assert len(starts) == 5  # all 40 were due at once; nothing ran late from a queue
    assert state.skipped["pending_limit"] == 35
    assert state.lateness.count == 5


def test_a_silent_pair_waiting_out_its_timeout_never_delays_other_targets() -> None:
    # 500 pairs each waiting 0.6 s of every second: the old 256-slot semaphore was
    # full of them and the healthy pairs queued behind (issue 11).
    silent = tuple(Target(f"silent{i}", "127.0.0.2", 53, (_spec("soa", 1.0),))
                   for i in range(500))  # fmt: skip
    healthy = tuple(Target(f"ok{i}", "127.0.0.1", 53, (_spec("soa", 1.0),)) for i in range(20))
    state = MetricsState()
    runs: dict[str, int] = {}
    waiting = 0

    async def runner(target: Target, spec: ProbeSpec) -> ProbeResult:
        await asyncio.sleep(0.6 if target.host == "127.0.0.2" else 0.001)
        runs[target.name] = runs.get(target.name, 0) + 1
        return _result()

    async def scenario() -> None:
        pairs = [(t, s) for t in (*silent, *healthy) for s in t.probes]
        scheduler = ProbeScheduler(state, runner, SchedulerSettings())
        scheduler.apply(pairs)
        # Sized from timeout / interval: every pair may wait at once, plus the pool.
        assert scheduler.capacity[0] == 520 + 64
        scheduler.start()
        await asyncio.sleep(3.5)
        nonlocal waiting
        waiting = state.in_flight
        await scheduler.stop()

    asyncio.run(scenario())
    assert waiting > 256
    assert sum(state.skipped.values()) == 0
    assert all(runs.get(t.name, 0) >= 3 for t in healthy), runs
    assert state.lateness.total / state.lateness.count < 0.05


def test_every_pair_runs_about_once_per_interval_and_records_lateness() -> None:
    targets = tuple(Target(f"t{i}", "127.0.0.1", 53, (_spec("soa", 1.0),)) for i in range(20))
    state, starts, _ = _run_scheduler(targets, SchedulerSettings(), 3.2, 0.01)
    assert 50 <= len(starts) <= 70
    assert state.lateness.count == len(starts)
    assert state.lateness.total / state.lateness.count < 0.05
    assert all(pair.last_run is not None for pair in state.pairs.values())


def test_apply_keeps_the_grid_of_unchanged_pairs_and_forgets_removed_ones() -> None:
    async def scenario() -> tuple[float, int]:
        state = MetricsState()
        scheduler = ProbeScheduler(state, lambda t, s: asyncio.sleep(0, _result()))
        a = Target("a", "127.0.0.1", 53, (_spec("soa", 60.0),))
        b = Target("b", "127.0.0.1", 53, (_spec("soa", 60.0),))
        scheduler.apply([(a, a.probes[0]), (b, b.probes[0])])
        due_before = scheduler._pairs[("a", "soa")].due
        scheduler.apply([(a, a.probes[0])])
        return due_before - scheduler._pairs[("a", "soa")].due, scheduler.pair_count

    shift, count = asyncio.run(scenario())
    assert shift == 0.0
    assert count == 1


def test_pairs_that_fell_due_during_start_up_keep_their_spread_instead_of_bursting() -> None:
    targets = tuple(Target(f"t{i}", "127.0.0.1", 53, (_spec("soa", 2.0),)) for i in range(200))
    starts: list[float] = []

    async def runner(target: Target, spec: ProbeSpec) -> ProbeResult:
        starts.append(time.monotonic())
        return _result()

    async def scenario() -> None:
        scheduler = ProbeScheduler(MetricsState(), runner, SchedulerSettings())
        scheduler.apply([(t, s) for t in targets for s in t.probes])
        time.sleep(1.0)  # a slow start-up: half the interval's phases are now past
        scheduler.start()
        await asyncio.sleep(1.0)
        await scheduler.stop()

    asyncio.run(scenario())
    assert 60 <= len(starts) <= 140  # half the pairs in half the interval
    first = starts[0]
    assert sum(1 for s in starts if s - first < 0.1) < 30  # not all at once
