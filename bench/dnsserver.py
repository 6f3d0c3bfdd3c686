"""The one fast local DNS server every probe in the bench talks to.

Unbound (Debian's ``unbound``) on 127.0.0.1 with a static local zone: it answers
from memory, so the server is never the bottleneck. Without Unbound the bench
falls back to dnsgap's own reference server in a separate process and says so.
"""

from __future__ import annotations

import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query

from bench import procs, unbound_conf

ZONE = "bench.test."

#: Added to the shared server clause: a static local zone answered from memory,
#: with socket buffers large enough for the bench's bursts and no rate limits.
_UNBOUND_ZONE = """\
    so-rcvbuf: 4m
    so-sndbuf: 4m
    ip-ratelimit: 0
    ratelimit: 0
    local-zone: "{zone}" static
    local-data: "{zone} 3600 IN SOA ns.{zone} host.{zone} 1 3600 600 86400 60"
    local-data: "{zone} 3600 IN NS ns.{zone}"
    local-data: "ns.{zone} 3600 IN A 127.0.0.1"
    local-data: "{zone} 3600 IN TXT \\"dnsgap bench\\""
remote-control:
    control-enable: no
"""


@dataclass
class DnsServer:
    name: str
    port: int
    proc: procs.Proc

    def stop(self) -> None:
        self.proc.stop()


def _answers(port: int) -> bool:
    query = dns.message.make_query(ZONE, "SOA")
    try:
        reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=0.5)
    except (OSError, dns.exception.Timeout):
        return False
    return bool(reply.answer)


def start_server(workdir: Path) -> DnsServer:
    port = procs.free_port(socket.SOCK_DGRAM)
    unbound = shutil.which("unbound") or ("/usr/sbin/unbound"
                                          if Path("/usr/sbin/unbound").exists() else None)
    if unbound:
        conf = workdir / "unbound.conf"
        conf.write_text(unbound_conf.server_clause(workdir, "127.0.0.1", port, verbosity=0)
                        + _UNBOUND_ZONE.format(zone=ZONE))
        proc = procs.start("unbound", [unbound, "-d", "-c", str(conf)], workdir)
        name = "Unbound (static local zone, 1 thread)"
    else:
        proc = procs.start("refserver", [procs.PYTHON, "-m", "bench.refserver_main",
                                         str(port), ZONE], workdir)  # fmt: skip
        name = "dnsgap refserver (Unbound not installed)"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{name} exited: {proc.log.read_text()[-2000:]}")
        if _answers(port):
            return DnsServer(name, port, proc)
        time.sleep(0.1)
    proc.stop()
    raise RuntimeError(f"{name} did not answer on port {port}")
