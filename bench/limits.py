"""Local limits for reference: raw asyncio senders, dnspython, dnsperf, dnsgap's engine.

Each runs in a child process against the same server; its CPU comes from its own
rusage (the Python loops measure around the loop; dnsperf from wait4).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from bench import procs
from bench.dnsserver import ZONE, DnsServer
from bench.stats import Spread

WORKER_MODES = (
    ("raw-shared", "raw asyncio UDP, one shared socket, ID demux"),
    ("raw-per-query", "raw asyncio UDP, a socket per query"),
    ("dnspython", "dnspython make_query + asyncquery.udp"),
    ("dnsgap-engine", "dnsgap run_probe + MetricsState.record (no scheduler)"),
)


@dataclass
class LimitResult:
    name: str
    #: CPU-milliseconds per query.
    cpu_ms: Spread
    queries_per_second: Spread
    answered: str


def _worker(mode: str, port: int, count: int, concurrency: int) -> tuple[float, float, int]:
    _, out = procs.run_child([procs.PYTHON, "-m", "bench.workers", mode, str(port), str(count),
                              str(concurrency)])  # fmt: skip
    data = json.loads(out.strip().splitlines()[-1])
    return float(data["cpu"]), float(data["wall"]), int(data["answered"])


def _dnsperf(workdir: Path, port: int, count: int, concurrency: int) -> tuple[float, float, int]:
    data = workdir / "dnsperf-queries.txt"
    data.write_text(f"{ZONE} SOA\n" * 1000)
    passes = max(1, count // 1000)
    cpu, out = procs.run_child(["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(data),
                                "-n", str(passes), "-c", "1", "-T", "1",
                                "-q", str(concurrency), "-t", "2"])  # fmt: skip
    completed = re.search(r"Queries completed:\s+(\d+)", out)
    elapsed = re.search(r"Run time \(s\):\s+([\d.]+)", out)
    answered = int(completed[1]) if completed else 0
    return cpu, float(elapsed[1]) if elapsed else float("nan"), answered


def run(workdir: Path, server: DnsServer, count: int, concurrency: int,
        repeats: int) -> list[LimitResult]:  # fmt: skip
    runs: dict[str, list[tuple[float, float, int, int]]] = {}
    for _ in range(repeats):  # round-robin, as for the peers
        for mode, label in WORKER_MODES:
            cpu, wall, answered = _worker(mode, server.port, count, concurrency)
            runs.setdefault(label, []).append((cpu, wall, answered, count))
        if shutil.which("dnsperf"):
            total = max(1, count // 1000) * 1000
            cpu, wall, answered = _dnsperf(workdir, server.port, count, concurrency)
            runs.setdefault("dnsperf (1 thread, 1 client; CPU incl. start-up)", []).append(
                (cpu, wall, answered, total))
    results = []
    for label, items in runs.items():
        results.append(LimitResult(
            label,
            Spread.of([cpu * 1000 / max(1, n) for cpu, _, _, n in items]),
            Spread.of([n / wall for _, wall, _, n in items]),
            f"{sum(a for _, _, a, _ in items)}/{sum(n for _, _, _, n in items)}",
        ))  # fmt: skip
    return results
