"""dnsgap's scheduled mode at fleet sizes: CPU per minute, lateness, skips, RSS.

Every target points at the one local server; each target runs the same probe
list (UDP queries). The exporter runs in its own process; the bench reads its
CPU time and scrapes /metrics before and after a measuring window.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from bench import procs
from bench.dnsserver import ZONE, DnsServer
from bench.stats import Spread, histogram_delta, histogram_quantile, samples

DNSGAP = [procs.PYTHON, "-m", "exporter", "--log-level", "warning"]

PROBES = {
    "soa": '{kind: query, qname: "@", qtype: SOA}',
    "ns": '{kind: query, qname: "@", qtype: NS}',
    "a": f'{{kind: query, qname: "ns.{ZONE}", qtype: A}}',
    "txt": '{kind: query, qname: "@", qtype: TXT}',
    "nsid": '{kind: query, qname: "@", qtype: SOA, edns: {nsid: true}}',
    "noedns": '{kind: query, qname: "@", qtype: SOA, edns: {enabled: false}}',
}


@dataclass
class ScheduledResult:
    targets: int
    probes_per_target: int
    interval: float
    cpu_per_minute: Spread
    cpu_ms_per_probe: float
    probes_run: int
    expected_probes: float
    lateness_p50: float
    lateness_p99: float
    skipped: int
    rss: int
    peak_rss: int
    scrape_seconds: float
    scrape_bytes: int
    startup_cpu: float

    @property
    def pairs(self) -> int:
        return self.targets * self.probes_per_target


def fleet_config(targets: int, probes_per_target: int, server_port: int, http_port: int,
                 interval: float) -> str:  # fmt: skip
    names = list(PROBES)[:probes_per_target]
    lines = [
        "http:", f'  listen: "127.0.0.1:{http_port}"',
        "scheduler: {jitter: 1.0, duration_histogram: false}",
        f"defaults: {{interval: {interval:g}s, timeout: 2s}}",
        "probes:",
        *(f"  {name}: {PROBES[name]}" for name in names),
        "targets:",
    ]  # fmt: skip
    probe_list = ", ".join(names)
    lines += [f'  - {{name: t{index:05d}, server: "127.0.0.1:{server_port}", zone: {ZONE}, '
              f"probes: [{probe_list}]}}" for index in range(targets)]  # fmt: skip
    return "\n".join(lines) + "\n"


def _scrape(url: str) -> tuple[str, float]:
    start = time.perf_counter()
    body = procs.http_get(url)
    return body.decode(), time.perf_counter() - start


def run_one(workdir: Path, server: DnsServer, targets: int, probes_per_target: int, *,
            interval: float, windows: int, window: float, warmup: float) -> ScheduledResult:
    port = procs.free_port()
    config = workdir / f"fleet-{targets}x{probes_per_target}.yml"
    config.write_text(fleet_config(targets, probes_per_target, server.port, port, interval))
    proc = procs.start(f"dnsgap-fleet-{targets}x{probes_per_target}",
                       [*DNSGAP, "serve", "--config", str(config)], workdir)
    try:
        procs.wait_http(proc, f"http://127.0.0.1:{port}/-/ready", timeout=300)
        startup_cpu = proc.cpu()
        time.sleep(warmup)
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        before, _ = _scrape(metrics_url)
        per_minute = []
        cpu_start = proc.cpu()
        wall_start = time.perf_counter()
        for _ in range(windows):
            cpu, wall = proc.cpu(), time.perf_counter()
            time.sleep(window)
            per_minute.append((proc.cpu() - cpu) * 60 / (time.perf_counter() - wall))
        cpu_total = proc.cpu() - cpu_start
        elapsed = time.perf_counter() - wall_start
        rss = proc.rss()
        after, scrape_seconds = _scrape(metrics_url)
        # The exporter's own series come last in the exposition: each scrape's
        # counts are from its end, so runs are counted from the end of the first
        # scrape to the end of the second (which takes seconds at fleet size).
        span = time.perf_counter() - wall_start
        lateness = histogram_delta(before, after, "dnsgap_scheduler_lateness_seconds")
        run = lateness[-1][1] if lateness else 0.0
        skipped_name = "dnsgap_probes_skipped_total"
        skipped = sum(samples(after, skipped_name).values()) - sum(
            samples(before, skipped_name).values())
        pairs = targets * probes_per_target
        # CPU per probe over the CPU windows only (the scrapes cost CPU of their
        # own): probes due in them, i.e. run when none is skipped.
        return ScheduledResult(
            targets, probes_per_target, interval, Spread.of(per_minute),
            cpu_total * 1000 / (pairs * elapsed / interval), int(run),
            pairs * span / interval,
            histogram_quantile(0.5, lateness), histogram_quantile(0.99, lateness),
            int(skipped), rss, proc.peak_rss(), scrape_seconds, len(after.encode()),
            startup_cpu,
        )  # fmt: skip
    finally:
        proc.stop()
