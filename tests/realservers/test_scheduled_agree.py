"""The scheduled exporter and `dnsgap probe` agree on every real server.

One exporter runs the whole authoritative survey (plus NOTIFY, opted in) against
every Debian server, over UDP and over TCP, on its schedule. Each pair's scheduled
outcome must be the one an on-demand probe of the same spec gets, and the rendered
/metrics must carry it: the counter for its (rcode, cause), the gap gauge at 1.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from exporter.config import Config, ProbeSpec, Target, parse_config
from exporter.probes import ProbeResult, run_probe
from exporter.runtime import Exporter

from .conftest import SERVER_NAMES
from .launch import RunningServer

INTERVAL = 4.0


def _config(servers: dict[str, RunningServer]) -> Config:
    lines = [f"defaults: {{interval: {INTERVAL}s, timeout: 1.5s}}", "targets:"]
    for name, server in servers.items():
        for transport in ("udp", "tcp"):
            lines += [
                f"  - name: {name}-{transport}",
                f'    server: "{server.host}:{server.port}"',
                f"    zone: {server.zone}",
                f"    survey: {{preset: authoritative, transport: {transport}}}",
                "    probes:",
                f"      - {{name: notify, kind: notify, allow_notify: true,"
                f" transport: {transport}}}",
            ]
    return parse_config("\n".join(lines) + "\n", "<scheduled-agree>")


@pytest.fixture(scope="module")
def servers(request: pytest.FixtureRequest) -> dict[str, RunningServer]:
    return {name: request.getfixturevalue(name) for name in SERVER_NAMES}


def _run(config: Config) -> tuple[Exporter, dict[tuple[str, str], ProbeResult]]:
    async def scenario() -> tuple[Exporter, dict[tuple[str, str], ProbeResult]]:
        exporter = Exporter(config)
        exporter.start()
        try:
            for _ in range(int(INTERVAL * 4)):
                await asyncio.sleep(0.5)
                if all(p.last_run is not None for p in exporter.state.pairs.values()):
                    break
        finally:
            await exporter.stop()
        pairs = [(t, s) for t in config.targets for s in t.probes]
        # A few at a time: hundreds of simultaneous TCP connections would exceed
        # the servers' TCP limits (Unbound's incoming-num-tcp: 100 in launch.py).
        gate = asyncio.Semaphore(8)

        async def one(target: Target, spec: ProbeSpec) -> ProbeResult:
            async with gate:
                return await run_probe(target, spec)

        results = await asyncio.gather(*(one(t, s) for t, s in pairs))
        return exporter, {(t.name, s.name): r
                          for (t, s), r in zip(pairs, results, strict=True)}  # fmt: skip

    return asyncio.run(scenario())


def test_scheduled_metrics_agree_with_on_demand_probes(
    servers: dict[str, RunningServer],
) -> None:
    config = _config(servers)
    exporter, on_demand = _run(config)
    text = exporter.state.render()
    disagreements = []
    for (target, probe), state in exporter.state.pairs.items():
        assert state.last_result is not None, f"{target}/{probe} never ran on schedule"
        scheduled = state.last_result
        now = on_demand[(target, probe)]
        if (scheduled.rcode_label, scheduled.cause) != (now.rcode_label, now.cause):
            disagreements.append((target, probe, scheduled.rcode_label, scheduled.cause.value,
                                  now.rcode_label, now.cause.value))  # fmt: skip
            continue
        labels = f'target="{target}",probe="{probe}"'
        counter = (rf'^dnsgap_probe_responses_total\{{{labels},rcode="{scheduled.rcode_label}",'
                   rf'cause="{scheduled.cause.value}"\}} [1-9]')  # fmt: skip
        assert re.search(counter, text, re.MULTILINE), counter
        if scheduled.cause.value != "none":
            gauge = rf'^dnsgap_support_gap\{{{labels},cause="{scheduled.cause.value}"\}} 1$'
            assert re.search(gauge, text, re.MULTILINE), gauge
    assert disagreements == []


def test_the_survey_finds_known_gaps_on_real_servers(servers: dict[str, RunningServer]) -> None:
    """Spot checks that read like the server-answers matrix (docs/server-answers.md)."""
    config = _config({name: servers[name] for name in ("nsd", "bind_open", "bind_closed")})
    exporter, _ = _run(config)
    cause = {key: s.cause.value for key, s in exporter.state.pairs.items() if s.cause}
    assert cause[("nsd-udp", "update")] == "not_implemented"
    assert cause[("bind_open-udp", "update")] == "none"
    assert cause[("bind_closed-udp", "update")] == "refused"
    assert cause[("bind_closed-tcp", "axfr")] == "refused"
    assert cause[("bind_open-udp", "edns1")] == "bad_version"
    assert cause[("bind_open-tcp", "dso_keepalive")] == "dso_not_implemented"
    assert cause[("nsd-tcp", "opcode15")] == "not_implemented"
