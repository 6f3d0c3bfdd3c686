"""CPU per DoH and per DoQ probe: dnsgap's /probe against dns_exporter's /query,
both asking the same servers, both keeping their connections open between probes.

The servers: Unbound with DoT and DoH (HTTP/2, `https-port`) on a throw-away
certificate, and the aioquic DoQ server of the tests (tests/doqserver.py) in its
own process, forwarding to that Unbound over UDP. Both exporters verify the
certificate against it. dnsgap keeps one HTTP/2 and one QUIC connection per
server and multiplexes concurrent probes on it; dns_exporter gets
``connection_reuse=true`` (its pool of connections, one per concurrent request).
dnsgap's UDP /probe on the same Unbound is the reference for what encryption costs.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import aiohttp

from bench import peers, procs, unbound_conf
from bench.dnsserver import ZONE
from bench.scheduled import DNSGAP
from bench.stats import Spread
from exporter.certs import make_self_signed

#: Added to the shared server clause: DoH on a second interface, enough TCP slots
#: for the bench's concurrency, and the bench's zone.
_UNBOUND_DOH = """\
    interface: {doh_host}@{doh}
    https-port: {doh}
    tls-service-key: "{key}"
    tls-service-pem: "{cert}"
    http-endpoint: "/dns-query"
    ip-ratelimit: 0
    ratelimit: 0
    incoming-num-tcp: 1000
    local-zone: "{zone}" static
    local-data: "{zone} 3600 IN SOA ns.{zone} host.{zone} 1 3600 600 86400 60"
remote-control:
    control-enable: no
"""


def probes(planned: int) -> int:
    """Probes per repeat: at most 500, since dns_exporter's DoH takes ~30 ms per probe
    (full mode's 2,000 x 5 would add ten minutes for no better ratio)."""
    return min(planned, 500)


@dataclass
class Endpoint:
    """One exporter asked for one transport: its URL and what a good answer contains."""

    exporter: str
    transport: str
    proc: procs.Proc
    url: str
    ok_marker: str


@dataclass
class EncryptedResult:
    exporter: str
    transport: str
    cpu_ms: Spread
    probes_per_second: Spread
    failed: int


#: dns_exporter 1.2 drops the port from a DoH URL (it always asks port 443), so
#: DoH listens on 443 of a loopback address of its own (any 127/8 address is ours).
_DOH_HOSTS = tuple(f"127.0.0.{n}" for n in range(44, 60))


def _free_443() -> str:
    import socket

    for host in _DOH_HOSTS:
        with socket.socket() as sock:
            try:
                sock.bind((host, 443))
            except OSError:
                continue
            return host
    raise RuntimeError("no loopback address with port 443 free")


@dataclass
class Servers:
    udp: int
    doh_host: str
    doh: int
    doq: int
    cert: Path
    procs: list[procs.Proc]

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()


def start_servers(workdir: Path) -> Servers:
    cert, key = make_self_signed(workdir)
    udp, doh_host, doh, doq = procs.free_port(), _free_443(), 443, procs.free_port()
    conf = workdir / "unbound-encrypted.conf"
    conf.write_text(unbound_conf.server_clause(workdir, "127.0.0.1", udp, verbosity=0)
                    + _UNBOUND_DOH.format(doh_host=doh_host, doh=doh, key=key, cert=cert,
                                          zone=ZONE))  # fmt: skip
    unbound = shutil.which("unbound") or "/usr/sbin/unbound"
    started = [procs.start("unbound-encrypted", [unbound, "-d", "-c", str(conf)], workdir)]
    started.append(procs.start(
        "doq-server", [procs.PYTHON, "-m", "tests.doqserver", "--port", str(doq), "--cert",
                       str(cert), "--key", str(key), "--backend", f"127.0.0.1:{udp}"],
        workdir, {"PYTHONPATH": str(procs.ROOT)}))  # fmt: skip
    return Servers(udp, doh_host, doh, doq, cert, started)


def _dnsgap_config(servers: Servers, http_port: int) -> str:
    # RD clear, as the peers below are configured (recursion_desired: false)
    probe = 'kind: query, qname: "@", qtype: SOA, rd: false, interval: 1h, timeout: 2s'
    return f"""\
http:
  listen: "127.0.0.1:{http_port}"
  probe: {{max_concurrency: 64, max_per_client: 64}}
targets:
  - name: plain
    server: "127.0.0.1:{servers.udp}"
    zone: {ZONE}
    probes:
      - {{name: udp, {probe}}}
  - name: encrypted
    server: "127.0.0.1"
    zone: {ZONE}
    tls: {{ca_file: "{servers.cert}", server_name: localhost}}
    probes:
      - {{name: doq, transport: doq, port: {servers.doq}, {probe}}}
  - name: encrypted-doh
    server: "{servers.doh_host}:{servers.doh}"
    zone: {ZONE}
    tls: {{ca_file: "{servers.cert}", server_name: localhost}}
    probes:
      - {{name: doh, transport: doh, {probe}}}
"""


def start_dnsgap(workdir: Path, servers: Servers) -> list[Endpoint]:
    port = procs.free_port()
    config = workdir / "dnsgap-encrypted.yml"
    config.write_text(_dnsgap_config(servers, port))
    proc = procs.start("dnsgap-encrypted", [*DNSGAP, "serve", "--config", str(config)], workdir)
    procs.wait_http(proc, f"http://127.0.0.1:{port}/-/ready")
    base = f"http://127.0.0.1:{port}/probe?"
    return [Endpoint("dnsgap /probe", transport, proc,
                     base + urlencode({"target": target, "probe": transport}),
                     f'dnsgap_probe_success{{target="{target}",probe="{transport}"}} 1')
            for target, transport in (("plain", "udp"), ("encrypted-doh", "doh"),
                                      ("encrypted", "doq"))]  # fmt: skip


def start_dns_exporter(workdir: Path, servers: Servers, install: bool) -> list[Endpoint]:
    binary = peers.PEERS_VENV / "bin" / "dns_exporter"
    if not binary.exists() and (not install or peers.ensure_peers_venv() is not None):
        return []
    port = procs.free_port()
    proc = procs.start("dns_exporter-encrypted",
                       [str(binary), "-L", "127.0.0.1", "-p", str(port), "-q"], workdir)
    common = {"query_name": ZONE, "query_type": "SOA", "family": "ipv4",
              "recursion_desired": "false", "connection_reuse": "true",
              "verify_certificate_path": str(servers.cert)}  # fmt: skip
    endpoints = []
    for protocol, server, ip in (
            ("doh", "https://localhost/dns-query", servers.doh_host),
            ("doq", f"quic://localhost:{servers.doq}", "127.0.0.1")):  # fmt: skip
        # The name (for the certificate) and the address (where to send) are separate.
        query = {"server": server, "protocol": protocol, "ip": ip, **common}
        url = f"http://127.0.0.1:{port}/query?{urlencode(query)}"
        endpoints.append(Endpoint("dns_exporter (PyPI dns-exporter)", protocol, proc, url,
                                  "dnsexp_dns_query_success 1.0"))  # fmt: skip
    procs.wait_http(proc, endpoints[0].url)
    return endpoints


async def _load(endpoint: Endpoint, count: int, concurrency: int) -> int:
    """``count`` GETs at ``concurrency``; returns how many did not report success."""
    failed = 0
    remaining = count
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def lane() -> None:
            nonlocal failed, remaining
            while remaining > 0:
                remaining -= 1
                async with session.get(endpoint.url) as reply:
                    body = await reply.text()
                    if reply.status != 200 or endpoint.ok_marker not in body:
                        failed += 1

        await asyncio.gather(*(lane() for _ in range(concurrency)))
    return failed


def run(workdir: Path, count: int, concurrency: int, repeats: int, *,
        install: bool = True) -> list[EncryptedResult]:  # fmt: skip
    """Every endpoint in turn, repeats round-robin (a noisy neighbour hits all alike)."""
    servers = start_servers(workdir)
    endpoints: list[Endpoint] = []
    try:
        time.sleep(1.0)  # Unbound and the DoQ server bind; the first probes would say so
        endpoints = start_dnsgap(workdir, servers) + start_dns_exporter(workdir, servers, install)
        cpu_ms: dict[int, list[float]] = {i: [] for i in range(len(endpoints))}
        rates: dict[int, list[float]] = {i: [] for i in range(len(endpoints))}
        failed = dict.fromkeys(cpu_ms, 0)
        for endpoint in endpoints:  # warm-up (and the handshakes), not counted
            asyncio.run(_load(endpoint, min(50, count), concurrency))
        for _ in range(repeats):
            for index, endpoint in enumerate(endpoints):
                cpu, wall = endpoint.proc.cpu(), time.perf_counter()
                failed[index] += asyncio.run(_load(endpoint, count, concurrency))
                elapsed = time.perf_counter() - wall
                cpu_ms[index].append((endpoint.proc.cpu() - cpu) * 1000 / count)
                rates[index].append(count / elapsed)
        return [EncryptedResult(e.exporter, e.transport, Spread.of(cpu_ms[i]),
                                Spread.of(rates[i]), failed[i])
                for i, e in enumerate(endpoints)]  # fmt: skip
    finally:
        for proc in {id(e.proc): e.proc for e in endpoints}.values():
            proc.stop()
        servers.stop()


def render(results: list[EncryptedResult], count: int, repeats: int, concurrency: int) -> str:
    if not results:
        return ""
    udp = next((r for r in results if r.transport == "udp"), None)
    peer = {r.transport: r for r in results if r.exporter.startswith("dns_exporter")}
    out = [f"## Encrypted transports over /probe: {count} probes x {repeats} repeats, "
           f"concurrency {concurrency}, connections reused", "",
           "Unbound (DoH on HTTP/2) and the aioquic DoQ server in front of it; both "
           "exporters verify the certificate.", "",
           "| exporter | transport | CPU-ms per probe | probes/s | vs dnsgap UDP | "
           "vs dns_exporter, same transport | failed |",
           "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        vs_udp = f"{r.cpu_ms.mid / udp.cpu_ms.mid:.1f}x" if udp else "n/a"
        other = peer.get(r.transport)
        vs_peer = (f"{r.cpu_ms.mid / other.cpu_ms.mid:.2f}x"
                   if other is not None and r.exporter.startswith("dnsgap") else "")  # fmt: skip
        out.append(f"| {r.exporter} | {r.transport} | {r.cpu_ms.text(3)} | "
                   f"{r.probes_per_second.text(0)} | {vs_udp} | {vs_peer} | {r.failed} |")
    return "\n".join(out) + "\n"
