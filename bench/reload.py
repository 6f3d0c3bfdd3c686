"""A config reload at fleet size: does it hold back the probes due meanwhile?

``dnsgap serve`` runs a fleet (every target on the one local server, the
scheduled section's probe list); the bench measures scheduler lateness over a
window without a reload (the reference) and over an equal window that starts
with ``POST /-/reload`` of a config in which a fifth of the targets were replaced
(their pairs removed, as many new ones added, the rest unchanged).

The fleet runs at 200 probes/s, not the scheduled section's 1,000: on the shared
two-core machine the full-rate reference window alone misses the lateness goal
(skips and seconds of lateness at load average 8), and what is measured here is
the reload's effect against that reference.
"""

from __future__ import annotations

import math
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench import procs
from bench.dnsserver import DnsServer
from bench.scheduled import DNSGAP, fleet_config
from bench.stats import histogram_delta, histogram_quantile, samples

LATENESS = "dnsgap_scheduler_lateness_seconds"
SKIPPED = "dnsgap_probes_skipped_total"


@dataclass(frozen=True)
class ReloadPlan:
    targets: int
    probes_per_target: int
    interval: float
    warmup: float
    window: float


PLANS = {
    "smoke": ReloadPlan(20, 6, 2.0, 1.0, 3.0),
    "quick": ReloadPlan(2000, 6, 60.0, 5.0, 15.0),  # 200 probes/s
    "full": ReloadPlan(10_000, 6, 300.0, 10.0, 30.0),  # 200 probes/s
}


@dataclass(frozen=True)
class Window:
    p50: float
    p99: float
    #: Upper bound of the highest lateness bucket that saw a probe.
    worst: float
    probes: int
    skipped: int


@dataclass(frozen=True)
class ReloadResult:
    plan: ReloadPlan
    replaced_targets: int
    reload_seconds: float
    reload_cpu: float
    reference: Window
    reloading: Window

    @property
    def pairs(self) -> int:
        return self.plan.targets * self.plan.probes_per_target


def _window(before: str, after: str) -> Window:
    buckets = histogram_delta(before, after, LATENESS)
    seen = [le for (le, count), (_, below) in zip(buckets, [(0.0, 0.0), *buckets], strict=False)
            if count > below]  # fmt: skip
    skipped = sum(samples(after, SKIPPED).values()) - sum(samples(before, SKIPPED).values())
    return Window(histogram_quantile(0.5, buckets), histogram_quantile(0.99, buckets),
                  max(seen) if seen else math.nan, int(buckets[-1][1]) if buckets else 0,
                  int(skipped))  # fmt: skip


def _fleet(first: int, plan: ReloadPlan, server: DnsServer, http_port: int) -> str:
    text = fleet_config(plan.targets, plan.probes_per_target, server.port, http_port,
                        plan.interval)  # fmt: skip
    if first:
        # Target names t00000..: renumbering shifts a block of names out and a new
        # block in; every other target and probe is byte-for-byte the same.
        head, _, body = text.partition("targets:\n")
        lines = body.splitlines()
        renamed = [line.replace(f"name: t{index:05d},", f"name: t{index + plan.targets:05d},")
                   for index, line in enumerate(lines[:first])]  # fmt: skip
        text = head + "targets:\n" + "\n".join(renamed + lines[first:]) + "\n"
    return text


def run(workdir: Path, server: DnsServer, mode: str) -> ReloadResult:
    plan = PLANS[mode]
    port = procs.free_port()
    config = workdir / f"reload-{plan.targets}x{plan.probes_per_target}.yml"
    config.write_text(_fleet(0, plan, server, port))
    proc = procs.start("dnsgap-reload", [*DNSGAP, "serve", "--config", str(config)], workdir)
    base = f"http://127.0.0.1:{port}"
    try:
        procs.wait_http(proc, f"{base}/-/ready", timeout=600)
        time.sleep(plan.warmup)
        first = procs.http_get(f"{base}/metrics").decode()
        time.sleep(plan.window)
        second = procs.http_get(f"{base}/metrics").decode()
        replaced = plan.targets // 5
        config.write_text(_fleet(replaced, plan, server, port))
        cpu, started = proc.cpu(), time.perf_counter()
        request = urllib.request.Request(f"{base}/-/reload", method="POST")
        with urllib.request.urlopen(request, timeout=600) as reply:
            reply.read()
        reload_seconds, reload_cpu = time.perf_counter() - started, proc.cpu() - cpu
        time.sleep(max(0.0, plan.window - reload_seconds))
        third = procs.http_get(f"{base}/metrics").decode()
        return ReloadResult(plan, replaced, reload_seconds, reload_cpu, _window(first, second),
                            _window(second, third))  # fmt: skip
    finally:
        proc.stop()


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value * 1000:.0f} ms"


def render(result: ReloadResult) -> str:
    plan = result.plan
    rate = result.pairs / plan.interval
    rows = [("no reload (reference)", result.reference),
            ("starting with the reload", result.reloading)]  # fmt: skip
    out = [f"## Reload: {result.pairs:,} pairs ({plan.targets:,} x {plan.probes_per_target}) "
           f"every {plan.interval:g} s ({rate:,.0f} probes/s)", "",
           f"`POST /-/reload` of a config with {result.replaced_targets:,} targets replaced "
           f"({result.replaced_targets * plan.probes_per_target:,} pairs removed and as many "
           f"added) answered after {result.reload_seconds:.1f} s and cost "
           f"{result.reload_cpu:.1f} CPU-s. Lateness from {LATENESS} over two "
           f"{plan.window:g} s windows.", "",
           "| window | probes started | lateness p50 | lateness p99 | worst bucket | skipped |",
           "|---|---|---|---|---|---|"]  # fmt: skip
    out += [f"| {name} | {w.probes:,} | {_ms(w.p50)} | {_ms(w.p99)} | {_ms(w.worst)} | "
            f"{w.skipped} |" for name, w in rows]  # fmt: skip
    met = result.reloading.p99 < 1 and result.reloading.skipped == 0
    out += ["", f"Goal (issue 11): a reload of {result.pairs:,} pairs keeps lateness p99 < 1 s: "
            f"{'yes' if met else 'NO'} ({_ms(result.reloading.p99)}).", ""]  # fmt: skip
    return "\n".join(out) + "\n"
