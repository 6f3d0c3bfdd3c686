"""A partial outage never blinds the exporter to the healthy part of the fleet.

Issue 11: with most pairs waiting out the timeouts of a silent server, the healthy
targets' probes still start on time, none is skipped, and every one that was due
runs. The healthy part is a real Unbound; the silent part is a UDP port that takes
datagrams and never answers (no ICMP either: a bound socket nobody reads).
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from exporter.config import Config, ProbeSpec, Target
from exporter.kinds import ProbeKind
from exporter.metrics import LATENESS_BUCKETS
from exporter.runtime import Exporter
from tests.realservers.launch import running

INTERVAL = 2.0
SILENT_TIMEOUT = 1.5
#: 80 silent targets x 5 probes pending 75% of the time: about 300 probes waiting at
#: once, more than the 256 slots that used to hold every healthy probe back.
SILENT_TARGETS, HEALTHY_TARGETS, PROBES = 80, 40, 5
RUN_FOR = 8.0


def _probes(zone: str, timeout: float) -> tuple[ProbeSpec, ...]:
    qtypes = (6, 2, 1, 16, 48)  # SOA NS A TXT DNSKEY
    return tuple(ProbeSpec(name=f"q{qtype}", kind=ProbeKind.QUERY, qname=zone, qtype=qtype,
                           interval=INTERVAL, timeout=timeout)
                 for qtype in qtypes[:PROBES])  # fmt: skip


def _p99_under(bound: float, counts: list[int], total: int) -> bool:
    within = sum(c for b, c in zip(LATENESS_BUCKETS, counts, strict=True) if b <= bound)
    return within >= 0.99 * total


@pytest.mark.slow
def test_healthy_targets_stay_on_schedule_while_most_pairs_time_out(tmp_path: Path) -> None:
    with running("unbound", tmp_path / "unbound") as unbound, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # fmt: skip
        silent.bind(("127.0.0.1", 0))
        silent_port = silent.getsockname()[1]
        healthy = tuple(Target(f"ok{i:02d}", unbound.host, unbound.port,
                               _probes(unbound.zone, 1.0), zone=unbound.zone)
                        for i in range(HEALTHY_TARGETS))  # fmt: skip
        dead = tuple(Target(f"dead{i:02d}", "127.0.0.1", silent_port,
                            _probes(unbound.zone, SILENT_TIMEOUT), zone=unbound.zone)
                     for i in range(SILENT_TARGETS))  # fmt: skip

        async def scenario() -> tuple[Exporter, dict[tuple[str, str], int], int]:
            exporter = Exporter(Config(targets=(*dead, *healthy)))
            exporter.start()
            try:
                await asyncio.sleep(RUN_FOR)
                runs = {key: sum(pair.responses.values())
                        for key, pair in exporter.state.pairs.items()}  # fmt: skip
                waiting = exporter.state.in_flight
            finally:
                await exporter.stop()
            return exporter, runs, waiting

        exporter, runs, waiting = asyncio.run(scenario())

    state = exporter.state
    assert waiting > 256, "the silent pairs were not waiting out their timeouts"
    assert sum(state.skipped.values()) == 0, state.skipped
    assert _p99_under(1.0, state.lateness.counts, state.lateness.count)
    due = int(RUN_FOR // INTERVAL)  # each pair's first run falls inside the first interval
    late = {key: n for key, n in runs.items() if key[0].startswith("ok") and n < due}
    assert not late, f"healthy pairs that missed due runs: {late}"
    dead_runs = [n for key, n in runs.items() if key[0].startswith("dead")]
    assert sum(dead_runs) >= len(dead_runs) * (due - 1)
    causes = {pair.cause.value for key, pair in state.pairs.items() if key[0].startswith("ok")
              if pair.cause is not None}  # fmt: skip
    assert causes == {"none"}
