"""``python -m bench [smoke|quick|full]``: run the suite, print and write the table.

- ``smoke``: tiny sizes, proves every section works (tests/test_bench_smoke.py).
- ``quick``: CI-size, under three minutes.
- ``full``: the sizes the issue names (1k/10k/50k pairs, 10,000 targets x 6
  probes per 60 s, 10k/100k/300k series); about ten to fifteen minutes.

Every figure is CPU time read from the measured process's own accounting,
min/median/max over repeats, and shown beside references measured in the same run.
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import dnsserver, encrypted, limits, outage, peers, reload, scheduled, scrape

RESULTS = Path(__file__).resolve().parent / "results"
SECTIONS = ("peers", "scheduled", "outage", "scrape", "limits", "reload", "encrypted")


@dataclass(frozen=True)
class Plan:
    probes: int
    repeats: int
    concurrency: int
    #: (targets, probes per target) of each scheduled run.
    fleets: tuple[tuple[int, int], ...]
    interval: float
    windows: int
    window: float
    warmup: float
    series: tuple[int, ...]
    limit_queries: int
    #: (targets, probes per target, interval, timeout) of each outage run, and the
    #: measured window after one interval of warm-up.
    outages: tuple[tuple[int, int, float, float], ...] = ()
    outage_window: float = 0.0


PLANS = {
    "smoke": Plan(30, 2, 4, ((20, 5),), 2.0, 2, 1.0, 1.0, (2000,), 200,
                  ((50, 5, 2.0, 1.0),), 2.0),
    "quick": Plan(300, 3, 8, ((200, 5), (1000, 5)), 10.0, 3, 5.0, 3.0, (10_000, 30_000), 2000,
                  ((500, 5, 10.0, 5.0),), 20.0),
    "full": Plan(2000, 5, 8, ((200, 5), (2000, 5), (10_000, 5), (10_000, 6)), 60.0, 3, 20.0,
                 10.0, (10_000, 100_000, 300_000), 10_000, ((500, 5, 10.0, 5.0),), 30.0),
}  # fmt: skip


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return (f"{os.cpu_count()} CPUs (nproc), {model}, Linux {platform.release()}, "
            f"Python {platform.python_version()}")  # fmt: skip


def _load() -> str:
    import os

    return " / ".join(f"{value:.1f}" for value in os.getloadavg())


def _mb(value: float) -> str:
    return f"{value / 1e6:.0f}"


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value * 1000:.1f} ms"


def render(mode: str, plan: Plan, server: str, started: float, *, peer: list[peers.PeerResult],
           fleets: list[scheduled.ScheduledResult], scrapes: list[scrape.ScrapeResult],
           limit: list[limits.LimitResult],
           outages: list[outage.OutageResult] | None = None) -> str:  # fmt: skip
    when = datetime.datetime.fromtimestamp(started, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [f"# dnsgap bench: {mode} mode, {when}", "",
           f"- Machine: {machine()}", f"- DNS server probed: {server} on 127.0.0.1",
           f"- Load average at the end (1/5/15 min): {_load()}: the machine is shared; "
           "figures from a loaded machine carry its noise.",
           f"- Took {time.time() - started:.0f} s wall. Figures: median (min-max) over "
           "repeats; CPU is user+system time of the measured process itself.", ""]  # fmt: skip
    blackbox = next((p for p in peer if p.name == "blackbox_exporter"), None)
    if peer:
        out += [f"## /probe over HTTP: {plan.probes} probes x {plan.repeats} repeats, "
                f"concurrency {plan.concurrency}", "",
                "| exporter | CPU-ms per probe | probes/s | CPU vs blackbox_exporter | failed |",
                "|---|---|---|---|---|"]  # fmt: skip
        for p in peer:
            ratio = f"{p.cpu_ms.mid / blackbox.cpu_ms.mid:.2f}x" if blackbox else "n/a"
            out.append(f"| {p.name} | {p.cpu_ms.text(3)} | {p.probes_per_second.text(0)} | "
                       f"{ratio} | {p.failed} |")  # fmt: skip
        out.append("")
    if fleets:
        out += [f"## Scheduled mode: every pair every {plan.interval:g} s, UDP queries, "
                "duration histogram off", "",
                f"CPU measured over {plan.windows} windows of {plan.window:g} s after one "
                f"interval and {plan.warmup:g} s of warm-up; lateness from "
                "dnsgap_scheduler_lateness_seconds and skips from "
                "dnsgap_probes_skipped_total between two scrapes.", "",
                "| pairs (targets x probes) | CPU-s per minute | CPU-ms per probe | "
                "probes run / due | lateness p50 | lateness p99 | skipped | RSS MB (peak) | "
                "/metrics s, MB | start-up CPU-s |",
                "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for f in fleets:
            out.append(
                f"| {f.pairs:,} ({f.targets:,} x {f.probes_per_target}) | "
                f"{f.cpu_per_minute.text(2)} | {f.cpu_ms_per_probe:.3f} | "
                f"{f.probes_run:,} / {f.expected_probes:,.0f} | {_ms(f.lateness_p50)} | "
                f"{_ms(f.lateness_p99)} | {f.skipped} | {_mb(f.rss)} ({_mb(f.peak_rss)}) | "
                f"{f.scrape_seconds:.2f}, {f.scrape_bytes / 1e6:.1f} | {f.startup_cpu:.1f} |")
        out.append("")
    out += _outage_table(outages or [], plan)
    if scrapes:
        out += ["## Scrape cost: rendering the same series (duration histogram on)", "",
                f"{scrape.series_per_pair()} series per (target, probe) with the duration "
                f"histogram, {scrape.series_per_pair(False)} without.", "",
                "| series | pairs | dnsgap CPU-us per series | prometheus_client registry "
                "CPU-us per series | registry / dnsgap | dnsgap MB | registry MB |",
                "|---|---|---|---|---|---|---|"]  # fmt: skip
        for s in scrapes:
            out.append(f"| {s.series:,} | {s.pairs:,} | {s.dnsgap_us.text(2)} | "
                       f"{s.registry_us.text(2)} | {s.registry_us.mid / s.dnsgap_us.mid:.1f}x | "
                       f"{s.dnsgap_bytes / 1e6:.1f} | {s.registry_bytes / 1e6:.1f} |")
        out.append("")
    if limit:
        out += [f"## Local limits: {plan.limit_queries} queries x {plan.repeats} repeats, "
                f"concurrency {plan.concurrency}", "",
                "| sender | CPU-ms per query | queries/s | answered |", "|---|---|---|---|"]
        out += [f"| {r.name} | {r.cpu_ms.text(4)} | {r.queries_per_second.text(0)} | "
                f"{r.answered} |" for r in limit]  # fmt: skip
        out.append("")
    out += goals(peer, fleets, scrapes, plan, outages)
    return "\n".join(out) + "\n"


def _outage_table(outages: list[outage.OutageResult], plan: Plan) -> list[str]:
    if not outages:
        return []
    out = ["## Outage: 60% of the targets on a UDP port that never answers", "",
           f"40% of the targets on the Unbound, 60% on a bound socket nobody reads; one "
           f"interval of warm-up, then {plan.outage_window:g} s between two scrapes. "
           "Lateness is over every launch (healthy and silent); healthy runs are the "
           "healthy targets' dnsgap_probe_responses_total, due = their pairs x window / "
           "interval.", "",
           "| pairs (targets x probes), interval / timeout | healthy probes run / due | "
           "silent probes run | lateness p50 | lateness p99 | skipped (by reason) | "
           "pending at the end | CPU-ms per probe |",
           "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for o in outages:
        skipped = ", ".join(f"{k} {v}" for k, v in o.skipped.items() if v) or "0"
        out.append(f"| {o.pairs:,} ({o.targets:,} x {o.probes_per_target}), {o.interval:g} s "
                   f"/ {o.timeout:g} s | {o.healthy_run:,} / {o.healthy_due:,.0f} | "
                   f"{o.silent_run:,} | {_ms(o.lateness_p50)} | {_ms(o.lateness_p99)} | "
                   f"{skipped} | {o.in_flight:,} | {o.cpu_ms_per_probe:.3f} |")  # fmt: skip
    return [*out, ""]


def goals(peer: list[peers.PeerResult], fleets: list[scheduled.ScheduledResult],
          scrapes: list[scrape.ScrapeResult], plan: Plan,
          outages: list[outage.OutageResult] | None = None) -> list[str]:  # fmt: skip
    rows: list[tuple[str, str, bool | None]] = []
    blackbox = next((p for p in peer if p.name == "blackbox_exporter"), None)
    ours = next((p for p in peer if p.name.startswith("dnsgap")), None)
    biggest = max(fleets, key=lambda f: f.pairs) if fleets else None
    if blackbox and biggest:
        ratio = biggest.cpu_ms_per_probe / blackbox.cpu_ms.mid
        rows.append(("CPU per scheduled probe <= 0.4x blackbox_exporter's per probe (issue 11)",
                     f"{biggest.cpu_ms_per_probe:.3f} vs {blackbox.cpu_ms.mid:.3f} CPU-ms "
                     f"= {ratio:.2f}x ({biggest.pairs:,} pairs)", ratio <= 0.4))  # fmt: skip
    if blackbox and ours:
        ratio = ours.cpu_ms.mid / blackbox.cpu_ms.mid
        rows.append(("/probe <= 0.5x blackbox_exporter's CPU per probe (issue 11)",
                     f"{ours.cpu_ms.mid:.3f} vs {blackbox.cpu_ms.mid:.3f} CPU-ms = {ratio:.2f}x",
                     ratio <= 0.5))  # fmt: skip
    if biggest:
        rate = biggest.pairs / biggest.interval
        one_core = biggest.cpu_per_minute.high <= 60
        ok = (one_core and biggest.lateness_p99 < 1 and biggest.skipped == 0
              and biggest.rss < 400e6)
        rows.append((f"{biggest.pairs:,} pairs per {biggest.interval:g} s ({rate:,.0f} probes/s) "
                     "on one core, lateness p99 < 1 s, nothing skipped, RSS < 400 MB",
                     f"{biggest.cpu_per_minute.mid:.1f} CPU-s/min (max "
                     f"{biggest.cpu_per_minute.high:.1f}), p99 {_ms(biggest.lateness_p99)}, "
                     f"{biggest.skipped} skipped, RSS {_mb(biggest.rss)} MB", ok))  # fmt: skip
    if scrapes:
        worst = min(s.registry_us.mid / s.dnsgap_us.mid for s in scrapes)
        rows.append(("/metrics >= 10x cheaper per series than the registry",
                     f"worst {worst:.1f}x over {', '.join(f'{s.series:,}' for s in scrapes)} "
                     "series", worst >= 10))  # fmt: skip
    by_pairs = {f.pairs: f for f in fleets if f.probes_per_target == 5}
    for small, big in ((p, p * 5) for p in sorted(by_pairs)):
        if big in by_pairs:
            growth = by_pairs[big].cpu_per_minute.mid / by_pairs[small].cpu_per_minute.mid
            rows.append((f"5x the pairs ({small:,} -> {big:,}) costs <= 5.5x CPU per minute",
                         f"{growth:.2f}x", growth <= 5.5))  # fmt: skip
    for o in outages or []:
        # The healthy count may fall short by the probes still running at the scrape.
        ok = (o.lateness_p99 < 1 and not any(o.skipped.values())
              and o.healthy_run >= o.healthy_due - o.healthy_targets * o.probes_per_target * 0.05)
        rows.append((f"Outage, {o.pairs:,} pairs, 60% timing out: lateness p99 < 1 s, none "
                     "skipped, every due healthy probe run",
                     f"p99 {_ms(o.lateness_p99)}, {sum(o.skipped.values())} skipped, healthy "
                     f"{o.healthy_run:,} run / {o.healthy_due:,.0f} due", ok))  # fmt: skip
    if not rows:
        return []
    lines = ["## Goals (issues 7 and 11)", "", "| goal | measured | met |", "|---|---|---|"]
    lines += [f"| {goal} | {got} | {'yes' if ok else 'NO'} |" for goal, got, ok in rows]
    if plan is not PLANS["full"]:
        lines += ["", "Sizes are smaller than the goals name outside full mode: "
                  "read the verdicts of a full run."]  # fmt: skip
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("mode", nargs="?", default="quick", choices=list(PLANS))
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections of {', '.join(SECTIONS)}")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.md")
    parser.add_argument("--no-install", action="store_true",
                        help="skip dns-exporter unless bench/.venv-peers already has it")
    args = parser.parse_args(argv)
    sections = set(args.only.split(","))
    if sections - set(SECTIONS):
        parser.error(f"unknown section(s): {', '.join(sorted(sections - set(SECTIONS)))}")
    plan = PLANS[args.mode]
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="dnsgap-bench-") as tmp:
        workdir = Path(tmp)
        server = dnsserver.start_server(workdir)
        try:
            peer = (peers.run(workdir, server, plan.probes, plan.concurrency, plan.repeats,
                              install=not args.no_install) if "peers" in sections else [])
            # One interval first: every pair has run once (its request template
            # built, its first reply judged), so the windows see the steady state.
            fleets = [scheduled.run_one(workdir, server, targets, per, interval=plan.interval,
                                        windows=plan.windows, window=plan.window,
                                        warmup=plan.interval + plan.warmup)
                      for targets, per in plan.fleets] if "scheduled" in sections else []
            outages = [outage.run_one(workdir, server, targets, per, interval=interval,
                                      timeout=timeout, window=plan.outage_window)
                       for targets, per, interval, timeout in plan.outages
                       ] if "outage" in sections else []  # fmt: skip
            scrapes = ([scrape.measure(n, plan.repeats) for n in plan.series]
                       if "scrape" in sections else [])  # fmt: skip
            limit = (limits.run(workdir, server, plan.limit_queries, plan.concurrency,
                                plan.repeats) if "limits" in sections else [])  # fmt: skip
            reloaded = reload.run(workdir, server, args.mode) if "reload" in sections else None
            secured = (encrypted.run(workdir, encrypted.probes(plan.probes), plan.concurrency,
                                     plan.repeats, install=not args.no_install)
                       if "encrypted" in sections else [])  # fmt: skip
        finally:
            server.stop()
    table = render(args.mode, plan, server.name, started, peer=peer, fleets=fleets,
                   scrapes=scrapes, limit=limit, outages=outages)
    if reloaded is not None:
        table += "\n" + reload.render(reloaded)
    if secured:
        table += "\n" + encrypted.render(secured, encrypted.probes(plan.probes), plan.repeats,
                                          plan.concurrency)  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    print(table)
    return 0
