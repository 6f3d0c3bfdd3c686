"""``dnsgap demo``: reference servers with known gaps, probed by the real exporter.

Everything runs in one process on loopback, so a fresh machine shows real
NOTIMP, REFUSED, silence, DSOTYPENI and "no DSO" series within seconds,
without any outside server.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from exporter import certs, refserver
from exporter.config import Config, parse_config
from exporter.doqserver import DoqFrontend, forwarder
from exporter.refserver import RunningServer, ServerBehaviour
from exporter.serve import serve
from exporter.sharding import Shard

#: The demo's servers: name -> (how it behaves, what an operator should see).
DEMO_SERVERS: dict[str, tuple[ServerBehaviour, str]] = {
    "demo-auth": (
        ServerBehaviour(update="notimp", ixfr="notimp", axfr="refused",
                        unknown_opcode="drop", dso="none"),
        "authoritative with gaps: NOTIMP for UPDATE and IXFR, REFUSED for AXFR, "
        "silence for unassigned opcodes, no DSO",
    ),
    "demo-dso-push": (
        ServerBehaviour(dso="full", inactivity_timeout_ms=30_000,
                        keepalive_interval_ms=20_000),
        "speaks DSO and DNS Push",
    ),
    "demo-dso-nopush": (
        ServerBehaviour(dso="no_push"),
        "speaks DSO, but DSOTYPENI for DNS Push SUBSCRIBE",
    ),
    "demo-no-dso": (
        ServerBehaviour(dso="none"),
        "does not speak DSO at all (NOTIMP to DSO)",
    ),
    "demo-dso-busy": (
        ServerBehaviour(dso="full", retry_delay_ms=30_000, retry_grace=1.0),
        "speaks DSO but is busy: sends Retry Delay after the Keepalive",
    ),
    "demo-regress": (
        ServerBehaviour(dso="full"),
        "healthy at start, then a bad upgrade: NOTIMP for UPDATE, DSOTYPENI for "
        "DNS Push and EDNS version 1 answered as if it were 0 after 45 s (what the "
        "DnsgapNew* alerts are for)",
    ),
}

#: When demo-regress loses UPDATE and DNS Push. The DnsgapNew* alerts fire on a gap
#: that was not there before, so the demo needs a healthy-then-gap transition.
REGRESS_AFTER_SECONDS = 45.0
#: What demo-regress answers after the regression.
REGRESSED = ServerBehaviour(update="notimp", dso="no_push", edns_version="ignore")

_DEMO_CONFIG = """\
# The demo's config: the same format as any dnsgap config file.
defaults:
  interval: 10s
  timeout: 1s
targets:
  - name: demo-auth
    server: "127.0.0.1:{demo-auth}"
    zone: demo.example.
    labels: {{role: authoritative}}
    survey: authoritative
    probes:
      - name: ixfr_or_axfr
        kind: ixfr
        fallback: {{kind: axfr}}
  - name: demo-dso-push
    server: "127.0.0.1:{demo-dso-push}"
    zone: demo.example.
    probes:
      - {{name: dso_keepalive, kind: dso_keepalive, dso: {{persistent: true}}}}
      - {{name: dso_tlv, kind: dso_tlv}}
      - name: dso_push
        kind: dso_push_subscribe
        dso: {{push_name: www.demo.example., push_type: A, push_wait: 1.5s}}
  - name: demo-dso-nopush
    server: "127.0.0.1:{demo-dso-nopush}"
    zone: demo.example.
    probes:
      - {{name: dso_keepalive, kind: dso_keepalive}}
      - name: dso_push
        kind: dso_push_subscribe
        dso: {{push_name: www.demo.example., push_type: A}}
        fallback: {{kind: query}}
  - name: demo-no-dso
    server: "127.0.0.1:{demo-no-dso}"
    zone: demo.example.
    probes:
      - name: dso_keepalive
        kind: dso_keepalive
        fallback: {{kind: query, qname: demo.example., qtype: SOA}}
      - {{name: soa, kind: query, qname: demo.example., qtype: SOA}}
  - name: demo-dso-busy
    server: "127.0.0.1:{demo-dso-busy}"
    zone: demo.example.
    probes:
      - {{name: dso_keepalive, kind: dso_keepalive}}
  - name: demo-regress
    server: "127.0.0.1:{demo-regress}"
    zone: demo.example.
    probes:
      # Probed every 2 s so the regression shows up soon after it happens.
      - {{name: update, kind: update, interval: 2s}}
      - name: dso_push
        kind: dso_push_subscribe
        interval: 2s
        dso: {{push_name: www.demo.example., push_type: A}}
      # EDNS version 1: BADVERS, until the regression answers NOERROR (conformance
      # check `badversion`, docs/conformance.md).
      - {{name: edns1, kind: query, qname: "@", qtype: SOA, edns: {{version: 1}}, interval: 2s}}
  # A zone target: demo.example.'s name servers are looked up (demo-auth answers for
  # the zone) and each address is probed as its own target.
  - zone: demo.example.
    discover:
      resolver: "127.0.0.1:{demo-auth}"
      port: {demo-auth}
      parent: false
      refresh_min: 10s
      serial_interval: 10s
    probes:
      - {{name: soa, kind: query, qname: "@", qtype: SOA}}
"""

#: DNS over TLS and over QUIC (`survey: encrypted` without DoH) in front of a healthy
#: reference server, with a throw-away certificate: the transports and
#: dnsgap_tls_cert_expiry_timestamp_seconds have a live target.
_DEMO_ENCRYPTED = """\
  - name: demo-encrypted
    server: "127.0.0.1"
    zone: demo.example.
    tls: {{ca_file: "{ca_file}", server_name: localhost}}
    survey:
      preset: encrypted
      ports: {{tls: {tls_port}, doq: {doq_port}}}
      exclude: [doh_post, doh_get]
"""


@dataclass(slots=True)
class EncryptedDemo:
    """The DoT + DoQ server of the demo and the certificate it presents."""

    server: RunningServer
    doq: DoqFrontend
    workdir: tempfile.TemporaryDirectory[str]
    ca_file: str


@dataclass(slots=True)
class DemoServers:
    servers: dict[str, RunningServer]
    encrypted: EncryptedDemo | None = None

    async def close(self) -> None:
        for server in self.servers.values():
            await server.close()
        if self.encrypted is not None:
            self.encrypted.doq.close()
            await self.encrypted.server.close()
            self.encrypted.workdir.cleanup()


async def _start_encrypted() -> EncryptedDemo:
    workdir = tempfile.TemporaryDirectory(prefix="dnsgap-demo-")
    cert, key = certs.make_self_signed(Path(workdir.name))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = await refserver.start(ServerBehaviour(dso="none"), ssl_context=context)
    doq = await DoqFrontend(forwarder(server.host, server.port)).start(str(cert), str(key))
    return EncryptedDemo(server, doq, workdir, str(cert))


async def start_demo_servers() -> DemoServers:
    servers = {}
    for name, (behaviour, _) in DEMO_SERVERS.items():
        servers[name] = await refserver.start(behaviour)
    return DemoServers(servers, await _start_encrypted())


def demo_config_text(servers: DemoServers, listen: str) -> str:
    """The demo's config file text, for the servers as they run now."""
    text = _DEMO_CONFIG.format_map({name: s.port for name, s in servers.servers.items()})
    if servers.encrypted is not None:
        enc = servers.encrypted
        text += _DEMO_ENCRYPTED.format(ca_file=enc.ca_file, tls_port=enc.server.tls_port,
                                       doq_port=enc.doq.port)  # fmt: skip
    return f'http:\n  listen: "{listen}"\n' + text


def demo_config(servers: DemoServers, listen: str) -> Config:
    return parse_config(demo_config_text(servers, listen), "<dnsgap demo>")


async def _keep_pushing(server: RunningServer) -> None:
    """Change a record now and then so DNS Push has something to push."""
    counter = 0
    while True:
        await asyncio.sleep(0.5)
        counter += 1
        await server.change_rrset("www.demo.example.", "A", [f"192.0.2.{10 + counter % 200}"])


async def _regress_later(server: RunningServer, after: float) -> None:
    """Turn a healthy server into one with gaps; new connections and datagrams see it
    (a connection keeps the behaviour it started with)."""
    await asyncio.sleep(after)
    server.behaviour = dataclasses.replace(server.behaviour, update=REGRESSED.update,
                                           dso=REGRESSED.dso,
                                           edns_version=REGRESSED.edns_version)  # fmt: skip


async def run_demo(listen: str, config_out: str | None = None) -> None:
    """Run the demo; ``config_out`` names a file to write its config to, so that a
    `dnsgap serve --config` probes the same servers (a second exporter, or the same
    one restarted, as the alert tests do)."""
    servers = await start_demo_servers()
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(_keep_pushing(servers.servers["demo-dso-push"])),
             loop.create_task(_regress_later(servers.servers["demo-regress"],
                                             REGRESS_AFTER_SECONDS))]  # fmt: skip
    try:
        for name, (_, what) in DEMO_SERVERS.items():
            port = servers.servers[name].port
            print(f"dnsgap demo: {name:16} 127.0.0.1:{port:<5} {what}", flush=True)
        if servers.encrypted is not None:
            enc = servers.encrypted
            print(f"dnsgap demo: {'demo-encrypted':16} 127.0.0.1:{enc.server.tls_port}/tcp "
                  f"(DoT) and :{enc.doq.port}/udp (DoQ), a throw-away certificate",
                  flush=True)  # fmt: skip
        config = demo_config(servers, listen)
        if config_out is not None:
            await asyncio.to_thread(Path(config_out).write_text,
                                    demo_config_text(servers, listen), encoding="utf-8")
        await serve(config, None, listen, Shard(0, 1),
                    ready_message="dnsgap demo: probes run every 10 s; the first NOTIMP "
                    "and DSOTYPENI series appear within seconds. Ctrl-C stops.")  # fmt: skip
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await servers.close()
