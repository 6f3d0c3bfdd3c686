"""A partial outage: most pairs time out, the healthy ones must stay on schedule.

Issue 11's scenario: ``dnsgap serve`` with N targets x 5 UDP query probes every
10 s (timeout 5 s); 40% of the targets point at the bench's Unbound, 60% at a UDP
port that takes datagrams and never answers (a bound socket nobody reads: no ICMP
either). Between two scrapes the bench reads lateness, skips by reason, and how
many of the healthy targets' due probes ran (their ``dnsgap_probe_responses_total``).
"""

from __future__ import annotations

import math
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from bench import procs
from bench.dnsserver import ZONE, DnsServer
from bench.scheduled import DNSGAP, PROBES
from bench.stats import histogram_delta, histogram_quantile, samples

HEALTHY_SHARE = 0.4


@dataclass
class OutageResult:
    targets: int
    probes_per_target: int
    interval: float
    timeout: float
    healthy_run: int
    healthy_due: float
    silent_run: int
    lateness_p50: float
    lateness_p99: float
    skipped: dict[str, int]
    in_flight: int
    cpu_ms_per_probe: float

    @property
    def pairs(self) -> int:
        return self.targets * self.probes_per_target

    @property
    def healthy_targets(self) -> int:
        return round(self.targets * HEALTHY_SHARE)


def outage_config(targets: int, probes_per_target: int, *, server_port: int,
                  silent_port: int, http_port: int, interval: float,
                  timeout: float) -> str:  # fmt: skip
    names = list(PROBES)[:probes_per_target]
    healthy = round(targets * HEALTHY_SHARE)
    lines = [
        "http:", f'  listen: "127.0.0.1:{http_port}"',
        "scheduler: {jitter: 1.0, duration_histogram: false}",
        f"defaults: {{interval: {interval:g}s, timeout: {timeout:g}s}}",
        "probes:", *(f"  {name}: {PROBES[name]}" for name in names), "targets:",
    ]  # fmt: skip
    probe_list = ", ".join(names)
    for index in range(targets):
        name, port = ((f"ok{index:05d}", server_port) if index < healthy
                      else (f"dead{index:05d}", silent_port))  # fmt: skip
        lines.append(f'  - {{name: {name}, server: "127.0.0.1:{port}", zone: {ZONE}, '
                     f"probes: [{probe_list}]}}")  # fmt: skip
    return "\n".join(lines) + "\n"


def _runs(text: str, prefix: str) -> int:
    total = 0.0
    for (_, labels), value in samples(text, "dnsgap_probe_responses_total").items():
        if re.search(rf'target="{prefix}\d+"', labels):
            total += value
    return int(total)


def _by_reason(text: str) -> dict[str, float]:
    found = {}
    for (_, labels), value in samples(text, "dnsgap_probes_skipped_total").items():
        reason = re.search(r'reason="([^"]+)"', labels)
        if reason:
            found[reason[1]] = value
    return found


def run_one(workdir: Path, server: DnsServer, targets: int, probes_per_target: int, *,
            interval: float, timeout: float, window: float) -> OutageResult:  # fmt: skip
    """One interval of warm-up (every pair has started), then ``window`` measured."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = procs.free_port()
        config = workdir / f"outage-{targets}x{probes_per_target}.yml"
        config.write_text(outage_config(
            targets, probes_per_target, server_port=server.port,
            silent_port=silent.getsockname()[1], http_port=port, interval=interval,
            timeout=timeout))  # fmt: skip
        proc = procs.start(f"dnsgap-outage-{targets}x{probes_per_target}",
                           [*DNSGAP, "serve", "--config", str(config)], workdir)  # fmt: skip
        try:
            procs.wait_http(proc, f"http://127.0.0.1:{port}/-/ready", timeout=300)
            time.sleep(interval + timeout)
            url = f"http://127.0.0.1:{port}/metrics"
            before = procs.http_get(url).decode()
            cpu, started = proc.cpu(), time.perf_counter()
            time.sleep(window)
            after = procs.http_get(url).decode()
            elapsed, cpu = time.perf_counter() - started, proc.cpu() - cpu
        finally:
            proc.stop()
    lateness = histogram_delta(before, after, "dnsgap_scheduler_lateness_seconds")
    launched = lateness[-1][1] if lateness else 0.0
    old, new = _by_reason(before), _by_reason(after)
    healthy = round(targets * HEALTHY_SHARE)
    in_flight = samples(after, "dnsgap_probes_in_flight")
    return OutageResult(
        targets, probes_per_target, interval, timeout,
        _runs(after, "ok") - _runs(before, "ok"),
        healthy * probes_per_target * elapsed / interval,
        _runs(after, "dead") - _runs(before, "dead"),
        histogram_quantile(0.5, lateness), histogram_quantile(0.99, lateness),
        {reason: int(new[reason] - old.get(reason, 0.0)) for reason in new},
        int(sum(in_flight.values())),
        cpu * 1000 / launched if launched else math.nan,
    )  # fmt: skip
