"""A zone served by real Debian name servers, each on its own loopback address at
one common high port, with its parent zone and a real resolver in front.

    survey.test.  NS ns1 (BIND, 127.0.0.1, primary: takes UPDATE and transfers)
                  NS ns2 (NSD, 127.0.0.3)   NS ns3 (Knot, 127.0.0.4, one serial old)
    test.         NSD on 127.0.0.5: delegates survey.test. to ns1-ns3 and to ns4,
                  which the zone itself does not list (a stale delegation)
    resolver      Unbound on 127.0.0.1, stub zones for test. and survey.test.

Every daemon runs in the foreground from a private work directory and is
stopped by its PID.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from bench import unbound_conf
from tests.support import stop_process

from .launch import (
    LaunchError,
    MissingServerError,
    bind_options,
    knot_config,
    nsd_config,
)

ZONE = "survey.test."
PARENT = "test."
SERIAL = 2024010101
#: Where each name server of the zone listens. BIND listens only on addresses an
#: interface has, and 127.0.0.1 is the only one lo has; NSD, Knot and Unbound bind
#: any 127/8 address.
ADDRESSES = {"ns1": "127.0.0.1", "ns2": "127.0.0.3", "ns3": "127.0.0.4"}
PARENT_ADDRESS = "127.0.0.5"
RESOLVER_ADDRESS = "127.0.0.1"
#: Which test_answers.py server each name server is configured like.
LIKE = {"ns1": "bind_open", "ns2": "nsd", "ns3": "knot"}
START_TIMEOUT = 20.0


def zone_text(serial: int) -> str:
    # TTL 1: the resolver and dnsgap see an NS change within a second or two.
    glue = "".join(f"{ns} A {address}\n" for ns, address in ADDRESSES.items())
    names = "".join(f"@ NS {ns}\n" for ns in ADDRESSES)
    return f"$TTL 1\n@ SOA ns1 hostmaster {serial} 3600 600 86400 1\n{names}{glue}"


def parent_text() -> str:
    glue = "".join(f"{ns}.survey A {address}\n" for ns, address in ADDRESSES.items())
    names = "".join(f"survey NS {ns}.survey\n" for ns in (*ADDRESSES, "ns4"))
    return (f"$TTL 1\n@ SOA ns hostmaster 1 3600 600 86400 1\n@ NS ns\n"
            f"ns A {PARENT_ADDRESS}\n{names}{glue}")  # fmt: skip


@dataclass
class Daemon:
    name: str
    address: str
    port: int
    process: subprocess.Popen[bytes] = field(repr=False)
    log: Path


@dataclass
class ZoneServers:
    port: int
    resolver: Daemon
    daemons: dict[str, Daemon]

    @property
    def resolver_address(self) -> str:
        return f"{self.resolver.address}:{self.resolver.port}"


def _free_port(addresses: list[str]) -> int:
    """A port free for UDP and TCP on every address right now."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((addresses[0], 0))
            port = int(probe.getsockname()[1])
        if port < 1024:
            continue
        try:
            for address in addresses:
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    with socket.socket(socket.AF_INET, kind) as s:
                        s.bind((address, port))
        except OSError:
            continue
        return port
    raise LaunchError(f"no port free on all of {addresses}")


def _answers_soa(zone: str, address: str, port: int) -> bool:
    query = dns.message.make_query(zone, dns.rdatatype.SOA)
    try:
        reply = dns.query.udp(query, address, port=port, timeout=0.5)
    except (OSError, dns.exception.DNSException):
        return False
    return reply.rcode() == dns.rcode.NOERROR and bool(reply.answer)


def _start(name: str, argv: list[str], workdir: Path, *, zone: str, address: str,
           port: int) -> Daemon:  # fmt: skip
    if shutil.which(argv[0]) is None:
        raise MissingServerError(f"{argv[0]} not found (scripts/install-system-deps.sh)")
    log = workdir / f"{name}.log"
    with log.open("ab") as sink:
        process = subprocess.Popen(argv, cwd=workdir, stdin=subprocess.DEVNULL, stdout=sink,
                                   stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if _answers_soa(zone, address, port):
            return Daemon(name, address, port, process, log)
        time.sleep(0.1)
    stop_process(process, 5)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
    raise LaunchError(f"{name} on {address}:{port} did not answer {zone} SOA:\n{tail}")


def _bind(workdir: Path, port: int) -> list[str]:
    zone = workdir / "survey.test.zone"
    zone.write_text(zone_text(SERIAL))
    options = bind_options(workdir, port)  # listens on 127.0.0.1
    conf = workdir / "named.conf"
    conf.write_text(options + f"""zone "survey.test" {{
    type primary;
    file "{zone}";
    allow-transfer {{ 127.0.0.0/8; }};
    allow-update {{ 127.0.0.0/8; }};
}};
""")
    return ["named", "-g", "-n", "1", "-c", str(conf)]


def _nsd(workdir: Path, port: int, address: str, zone: str, text: str) -> list[str]:
    zone_file = workdir / f"{zone}.zone"
    zone_file.write_text(text)
    conf = workdir / "nsd.conf"
    conf.write_text(nsd_config(workdir, address, port, zone, zone_file))
    return ["nsd", "-d", "-c", str(conf)]


def _knot(workdir: Path, port: int) -> list[str]:
    zone_file = workdir / "survey.test.zone"
    zone_file.write_text(zone_text(SERIAL - 1))  # a secondary that missed the last change
    conf = workdir / "knot.conf"
    conf.write_text(knot_config(workdir, ADDRESSES["ns3"], port, "survey.test", zone_file))
    return ["knotd", "-c", str(conf)]


def _unbound(workdir: Path, port: int, servers_port: int) -> list[str]:
    conf = workdir / "unbound.conf"
    conf.write_text(unbound_conf.server_clause(workdir, RESOLVER_ADDRESS, port) + f"""\
    # Our name servers live on loopback, which Unbound does not query by default.
    do-not-query-localhost: no
    cache-max-ttl: 1
    cache-max-negative-ttl: 1
    # test. is one of Unbound's built-in empty zones (RFC 6761): resolve it instead.
    local-zone: "test." nodefault
remote-control:
    control-enable: no
stub-zone:
    name: "{ZONE}"
    stub-addr: {ADDRESSES['ns1']}@{servers_port}
stub-zone:
    name: "{PARENT}"
    stub-addr: {PARENT_ADDRESS}@{servers_port}
# Nothing else is resolved: the root goes to a port nobody listens on.
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@9
""")
    return ["unbound", "-d", "-c", str(conf)]


@contextlib.contextmanager
def running(workdir: Path) -> Iterator[ZoneServers]:
    """Start the zone's three servers, its parent's, and the resolver; stop them all."""
    port = _free_port([*ADDRESSES.values(), PARENT_ADDRESS])
    started: list[Daemon] = []

    def start(name: str, argv_for: Callable[[Path], list[str]], zone: str, address: str,
              at: int = port) -> Daemon:  # fmt: skip
        home = workdir / name
        home.mkdir(parents=True, exist_ok=True)
        home.chmod(0o755)
        daemon = _start(name, argv_for(home), home, zone=zone, address=address, port=at)
        started.append(daemon)
        return daemon

    try:
        daemons = {
            "ns1": start("bind", lambda d: _bind(d, port), ZONE, ADDRESSES["ns1"]),
            "ns2": start("nsd", lambda d: _nsd(d, port, ADDRESSES["ns2"], "survey.test",
                                               zone_text(SERIAL)), ZONE, ADDRESSES["ns2"]),
            "ns3": start("knot", lambda d: _knot(d, port), ZONE, ADDRESSES["ns3"]),
            "parent": start("nsd-parent", lambda d: _nsd(d, port, PARENT_ADDRESS, "test",
                                                         parent_text()), PARENT, PARENT_ADDRESS),
        }  # fmt: skip
        resolver_port = _free_port([RESOLVER_ADDRESS])
        resolver = start("unbound", lambda d: _unbound(d, resolver_port, port), ZONE,
                         RESOLVER_ADDRESS, resolver_port)  # fmt: skip
        yield ZoneServers(port, resolver, daemons)
    finally:
        for daemon in reversed(started):
            stop_process(daemon.process, 5)
