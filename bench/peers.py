"""dnsgap's /probe vs blackbox_exporter vs dns_exporter, probing the same server.

Each exporter runs in its own process; the bench sends the same number of HTTP
probe requests to each at the same concurrency and reads the exporter's own CPU
time (all threads) before and after.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench import procs
from bench.dnsserver import ZONE, DnsServer
from bench.scheduled import DNSGAP
from bench.stats import Spread

PEERS_VENV = procs.ROOT / "bench" / ".venv-peers"
BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"


@dataclass
class Exporter:
    name: str
    proc: procs.Proc
    url: str


@dataclass
class PeerResult:
    name: str
    #: CPU-milliseconds per probe.
    cpu_ms: Spread
    probes_per_second: Spread
    failed: int


def dnsgap_config(server_port: int, http_port: int, concurrency: int) -> str:
    return f"""\
http:
  listen: "127.0.0.1:{http_port}"
  probe: {{max_concurrency: {max(64, concurrency)}, max_per_client: {max(64, concurrency)}}}
targets:
  - name: bench
    server: "127.0.0.1:{server_port}"
    zone: {ZONE}
    probes:
      - {{name: soa, kind: query, qname: "@", qtype: SOA, rd: false, interval: 1h, timeout: 2s}}
"""


def start_dnsgap(workdir: Path, server: DnsServer, concurrency: int) -> Exporter:
    port = procs.free_port()
    config = workdir / "dnsgap-probe.yml"
    config.write_text(dnsgap_config(server.port, port, concurrency))
    proc = procs.start("dnsgap-probe", [*DNSGAP, "serve", "--config", str(config)], workdir)
    procs.wait_http(proc, f"http://127.0.0.1:{port}/-/ready")
    return Exporter("dnsgap /probe", proc,
                    f"http://127.0.0.1:{port}/probe?target=bench&probe=soa")


def start_blackbox(workdir: Path, server: DnsServer, gomaxprocs: int | None) -> Exporter | None:
    if not Path(BLACKBOX).exists():
        return None
    port = procs.free_port()
    config = workdir / "blackbox.yml"
    config.write_text(f"""\
modules:
  dns_soa:
    prober: dns
    timeout: 2s
    dns:
      transport_protocol: udp
      preferred_ip_protocol: ip4
      query_name: "{ZONE}"
      query_type: SOA
      recursion_desired: false
""")
    env = {"GOMAXPROCS": str(gomaxprocs)} if gomaxprocs else {}
    name = "blackbox" + (f"-gomaxprocs{gomaxprocs}" if gomaxprocs else "")
    proc = procs.start(name, [BLACKBOX, f"--config.file={config}",
                              f"--web.listen-address=127.0.0.1:{port}",
                              "--log.level=warn"], workdir, env)  # fmt: skip
    procs.wait_http(proc, f"http://127.0.0.1:{port}/-/healthy")
    label = "blackbox_exporter" + (f" (GOMAXPROCS={gomaxprocs})" if gomaxprocs else "")
    return Exporter(label, proc, f"http://127.0.0.1:{port}/probe?module=dns_soa"
                    f"&target=127.0.0.1:{server.port}")  # fmt: skip


def ensure_peers_venv() -> str | None:
    """dns-exporter lives in its own venv (bench/.venv-peers) so its pins never touch
    the project's; made on first use. Returns why it is unavailable, or None."""
    binary = PEERS_VENV / "bin" / "dns_exporter"
    if binary.exists():
        return None
    try:
        subprocess.run([procs.PYTHON, "-m", "venv", str(PEERS_VENV)], check=True,
                       capture_output=True)  # fmt: skip
        # dnspython 2.9 moved DoH to httpx2; dns-exporter 1.2 still hands it an httpx
        # session (connection_reuse), so its DoH fails with 2.9 (bench/encrypted.py).
        subprocess.run([str(PEERS_VENV / "bin" / "pip"), "install", "-q",
                        "--disable-pip-version-check", "dns-exporter", "httpx",
                        "dnspython[doh,doq,dnssec,idna]<2.9"],
                       check=True, capture_output=True, timeout=300)  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        return f"could not install dns-exporter into {PEERS_VENV}: {exc}"
    return None if binary.exists() else "dns-exporter installed no dns_exporter script"


def start_dns_exporter(workdir: Path, server: DnsServer, install: bool) -> Exporter | None:
    binary = PEERS_VENV / "bin" / "dns_exporter"
    if not binary.exists() and (not install or ensure_peers_venv() is not None):
        return None
    port = procs.free_port()
    proc = procs.start("dns_exporter", [str(binary), "-L", "127.0.0.1", "-p", str(port), "-q"],
                       workdir)  # fmt: skip
    url = (f"http://127.0.0.1:{port}/query?server=127.0.0.1:{server.port}&protocol=udp"
           f"&query_name={ZONE}&query_type=SOA&family=ipv4&recursion_desired=false")
    procs.wait_http(proc, url)
    return Exporter("dns_exporter (PyPI dns-exporter)", proc, url)


async def _load(url: str, count: int, concurrency: int) -> int:
    """``count`` GETs at ``concurrency``; returns how many failed."""
    failed = 0
    next_index = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def lane() -> None:
            nonlocal failed, next_index
            while next_index < count:
                next_index += 1
                async with session.get(url) as reply:
                    body = await reply.text()
                    if reply.status != 200 or ("dnsgap_probe_success" in body and (
                            'dnsgap_probe_success{target="bench",probe="soa"} 1' not in body)):
                        failed += 1

        await asyncio.gather(*(lane() for _ in range(concurrency)))
    return failed


def run(workdir: Path, server: DnsServer, count: int, concurrency: int, repeats: int, *,
        install: bool = True) -> list[PeerResult]:  # fmt: skip
    """All exporters run at once; the repeats go round-robin over them, so a noisy
    neighbour on the shared machine hits every exporter alike."""
    starters = [lambda: start_dnsgap(workdir, server, concurrency),
                lambda: start_blackbox(workdir, server, None),
                lambda: start_blackbox(workdir, server, 1),
                lambda: start_dns_exporter(workdir, server, install)]  # fmt: skip
    exporters: list[Exporter] = []
    try:
        for starter in starters:
            exporter = starter()
            if exporter is not None:
                exporters.append(exporter)
        cpu_ms: dict[str, list[float]] = {e.name: [] for e in exporters}
        rates: dict[str, list[float]] = {e.name: [] for e in exporters}
        failed = dict.fromkeys(cpu_ms, 0)
        for exporter in exporters:  # warm-up, not counted
            asyncio.run(_load(exporter.url, min(50, count), concurrency))
        for _ in range(repeats):
            for exporter in exporters:
                cpu, wall = exporter.proc.cpu(), time.perf_counter()
                failed[exporter.name] += asyncio.run(_load(exporter.url, count, concurrency))
                elapsed = time.perf_counter() - wall
                cpu_ms[exporter.name].append((exporter.proc.cpu() - cpu) * 1000 / count)
                rates[exporter.name].append(count / elapsed)
        return [PeerResult(e.name, Spread.of(cpu_ms[e.name]), Spread.of(rates[e.name]),
                           failed[e.name]) for e in exporters]  # fmt: skip
    finally:
        for exporter in exporters:
            exporter.proc.stop()


def have_blackbox() -> bool:
    return Path(BLACKBOX).exists() or shutil.which("prometheus-blackbox-exporter") is not None
