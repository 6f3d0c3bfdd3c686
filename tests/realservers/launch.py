"""Start real DNS daemons on 127.0.0.1, one free high port each, in the foreground.

Every launcher writes its own config and the same tiny ``gap.test.`` zone into a
private work directory, runs the daemon as a child process (no daemonizing, no
privilege drop, nothing outside the work directory), waits until it answers a
SOA query over UDP and TCP, and stops it by PID.
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

HOST = "127.0.0.1"
ZONE = "gap.test."
SERIAL = 2024010101
START_TIMEOUT = 20.0
STOP_GRACE = 5.0

SOA_RDATA = f"ns1.{ZONE} hostmaster.{ZONE} {SERIAL} 3600 600 86400 300"

ZONE_TEXT = f"""$ORIGIN {ZONE}
$TTL 300
@    IN SOA {SOA_RDATA}
@    IN NS  ns1.{ZONE}
ns1  IN A   {HOST}
www  IN A   192.0.2.1
"""


class LaunchError(RuntimeError):
    """A daemon did not come up; the message carries the tail of its log."""


class MissingServerError(LaunchError):
    """The daemon's binary is not installed."""


@dataclass
class RunningServer:
    """A started daemon: where it listens and how to find its files."""

    name: str
    host: str
    port: int
    zone: str
    pid: int
    workdir: Path
    log: Path
    process: subprocess.Popen[bytes] = field(repr=False)
    #: The server this one forwards the test zone to, when it does.
    backend: RunningServer | None = None

    def log_tail(self, lines: int = 30) -> str:
        return _tail(self.log, lines)


#: Builds the daemon's files in the work directory and returns its argv.
Builder = Callable[[Path, int, "RunningServer | None"], list[str]]


@dataclass(frozen=True)
class ServerSpec:
    name: str
    binary: str
    package: str
    build: Builder
    #: Log substrings that mean "someone took our port": retry on another one.
    port_taken: tuple[str, ...] = ("in use", "EADDRINUSE", "Cannot assign", "Unable to bind")


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _zone_file(workdir: Path) -> Path:
    return _write(workdir / "gap.test.zone", ZONE_TEXT)


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 right now (the daemon may still lose
    a race for it; :func:`launch` then retries on another port)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((HOST, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((HOST, port))
                except OSError:
                    continue
            if port >= 1024:
                return port
    raise LaunchError("no free port found on 127.0.0.1")


# --- one builder per server -------------------------------------------------------


def bind_options(workdir: Path, port: int) -> str:
    """named.conf options for a BIND of our own: every file in ``workdir``, loopback
    only, no recursion, no control channel."""
    return f"""options {{
    directory "{workdir}";
    pid-file "{workdir}/named.pid";
    session-keyfile "{workdir}/session.key";
    managed-keys-directory "{workdir}";
    listen-on port {port} {{ {HOST}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
}};
controls {{ }};
"""


def _bind(workdir: Path, port: int, open_zone: bool) -> list[str]:
    zone = _zone_file(workdir)
    if open_zone:
        policy = f"""
        allow-transfer {{ {HOST}; }};
        allow-update {{ {HOST}; }};"""
    else:
        policy = """
        allow-transfer { none; };
        allow-update { none; };"""
    conf = _write(
        workdir / "named.conf",
        bind_options(workdir, port)
        + f"""zone "gap.test" {{
    type primary;
    file "{zone}";{policy}
}};
""",
    )
    # -g: foreground, log to stderr; no -u: stay the user that started us.
    return ["named", "-g", "-n", "2", "-c", str(conf)]


def _bind_open(workdir: Path, port: int, _backend: RunningServer | None) -> list[str]:
    return _bind(workdir, port, open_zone=True)


def _bind_closed(workdir: Path, port: int, _backend: RunningServer | None) -> list[str]:
    return _bind(workdir, port, open_zone=False)


def nsd_config(workdir: Path, host: str, port: int, zone: str, zone_file: Path) -> str:
    """nsd.conf for an NSD of our own: one zone, every file in ``workdir``."""
    return f"""server:
    ip-address: {host}
    port: {port}
    do-ip6: no
    username: ""
    chroot: ""
    zonesdir: "{workdir}"
    database: ""
    zonelistfile: "{workdir}/zone.list"
    xfrdfile: "{workdir}/xfrd.state"
    xfrdir: "{workdir}"
    pidfile: "{workdir}/nsd.pid"
    logfile: "{workdir}/nsd.log"
    server-count: 1
    verbosity: 1
remote-control:
    control-enable: no
zone:
    name: "{zone}"
    zonefile: "{zone_file}"
"""


def knot_config(workdir: Path, host: str, port: int, zone: str, zone_file: Path) -> str:
    """knot.conf for a Knot of our own: one zone, every file in ``workdir``."""
    return f"""server:
    rundir: "{workdir}"
    listen: {host}@{port}
log:
  - target: stderr
    any: info
database:
    storage: "{workdir}/db"
control:
    listen: "{workdir}/knot.sock"
template:
  - id: default
    storage: "{workdir}"
zone:
  - domain: {zone}
    file: "{zone_file}"
"""


def _nsd(workdir: Path, port: int, _backend: RunningServer | None) -> list[str]:
    conf = _write(workdir / "nsd.conf",
                  nsd_config(workdir, HOST, port, "gap.test", _zone_file(workdir)))  # fmt: skip
    return ["nsd", "-d", "-c", str(conf)]


def _knot(workdir: Path, port: int, _backend: RunningServer | None) -> list[str]:
    conf = _write(workdir / "knot.conf",
                  knot_config(workdir, HOST, port, "gap.test", _zone_file(workdir)))  # fmt: skip
    return ["knotd", "-c", str(conf)]


def _unbound(workdir: Path, port: int, _backend: RunningServer | None) -> list[str]:
    conf = _write(
        workdir / "unbound.conf",
        unbound_conf.server_clause(workdir, HOST, port) + f"""\
    # Near its TCP limit (10 connections by default) Unbound gives a new connection
    # a very short timeout (TCP_QUERY_TIMEOUT_MINIMUM, NLnetLabs/unbound#356). In a
    # full suite on a loaded machine, a scheduled survey over TCP (two dozen probes
    # in 4 s) once had its UPDATE connection closed unanswered: connection_closed
    # instead of Unbound's NOTIMP. These tests are not about its TCP capacity.
    incoming-num-tcp: 100
    local-zone: "gap.test." static
    local-data: "gap.test. 300 IN SOA {SOA_RDATA}"
    local-data: "gap.test. 300 IN NS ns1.gap.test."
    local-data: "ns1.gap.test. 300 IN A {HOST}"
    local-data: "www.gap.test. 300 IN A 192.0.2.1"
remote-control:
    control-enable: no
# No root hints reachable: everything else goes to a port nobody listens on.
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@9
""",
    )
    return ["unbound", "-d", "-c", str(conf)]


def _pdns_auth(workdir: Path, port: int, _backend: RunningServer | None) -> list[str]:
    zone = _zone_file(workdir)
    named = _write(workdir / "named.conf", f'zone "gap.test" {{ type master; file "{zone}"; }};\n')
    _write(
        workdir / "pdns.conf",
        f"""launch=bind
bind-config={named}
local-address={HOST}
local-port={port}
socket-dir={workdir}
daemon=no
guardian=no
disable-syslog=yes
loglevel=6
api=no
webserver=no
""",
    )
    return ["pdns_server", f"--config-dir={workdir}"]


def _pdns_recursor(workdir: Path, port: int, _backend: RunningServer | None) -> list[str]:
    zone = _zone_file(workdir)
    _write(
        workdir / "recursor.conf",
        f"""local-address={HOST}
local-port={port}
socket-dir={workdir}
daemon=no
disable-syslog=yes
threads=1
auth-zones=gap.test={zone}
forward-zones=.=127.0.0.1:9
hint-file={workdir}/loopback.hints
""",
    )
    # A root that lives on loopback (and in dont-query): priming works, nothing leaves.
    _write(
        workdir / "loopback.hints",
        ". 3600000 IN NS a.root.invalid.\na.root.invalid. 3600000 IN A 127.0.0.9\n",
    )
    return ["pdns_recursor", f"--config-dir={workdir}"]


def _kresd(workdir: Path, port: int, backend: RunningServer | None) -> list[str]:
    if backend is None:
        raise LaunchError("kresd forwards the test zone: it needs a backend")
    conf = _write(
        workdir / "kresd.conf",
        f"""net.listen('{HOST}', {port}, {{ kind = 'dns' }})
trust_anchors.remove('.')
-- The test zone comes from our authoritative backend; nothing else is resolved.
policy.add(policy.suffix(policy.STUB('{backend.host}@{backend.port}'), {{ todname('{ZONE}') }}))
policy.add(policy.all(policy.REFUSE))
cache.size = 10 * MB
""",
    )
    return ["kresd", "-n", "-c", str(conf), str(workdir)]


def _dnsdist(workdir: Path, port: int, backend: RunningServer | None) -> list[str]:
    if backend is None:
        raise LaunchError("dnsdist needs a backend")
    conf = _write(
        workdir / "dnsdist.conf",
        f"""setLocal('{HOST}:{port}')
setACL({{'127.0.0.0/8'}})
setSecurityPollSuffix('')
newServer({{address='{backend.host}:{backend.port}', name='{backend.name}'}})
""",
    )
    return ["dnsdist", "--supervised", "--disable-syslog", "-C", str(conf)]


def _dnsmasq(workdir: Path, port: int, _backend: RunningServer | None) -> list[str]:
    return [
        "dnsmasq",
        "--keep-in-foreground",
        "--log-facility=-",
        "--conf-file=/dev/null",
        f"--pid-file={workdir}/dnsmasq.pid",
        "--user=root",
        "--group=root",
        f"--listen-address={HOST}",
        "--bind-interfaces",
        f"--port={port}",
        "--no-resolv",
        "--no-hosts",
        # Authoritative for the test zone on our address (dnsmasq's auth mode).
        f"--auth-server=ns1.{ZONE},{HOST}",
        "--auth-zone=gap.test",
        f"--auth-soa={SERIAL},hostmaster.{ZONE},3600,600,86400",
        f"--host-record=ns1.{ZONE.rstrip('.')},{HOST}",
        "--host-record=www.gap.test,192.0.2.1",
        f"--auth-peer={HOST}",
    ]


SPECS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in (
        ServerSpec("bind_open", "named", "bind9", _bind_open),
        ServerSpec("bind_closed", "named", "bind9", _bind_closed),
        ServerSpec("nsd", "nsd", "nsd", _nsd),
        ServerSpec("knot", "knotd", "knot", _knot),
        ServerSpec("unbound", "unbound", "unbound", _unbound),
        ServerSpec("pdns_auth", "pdns_server", "pdns-server", _pdns_auth),
        ServerSpec("pdns_recursor", "pdns_recursor", "pdns-recursor", _pdns_recursor),
        ServerSpec("kresd", "kresd", "knot-resolver", _kresd),
        ServerSpec("dnsdist", "dnsdist", "dnsdist", _dnsdist),
        ServerSpec("dnsmasq", "dnsmasq", "dnsmasq-base", _dnsmasq),
    )
}

#: Servers that forward the test zone to another of ours.
BACKENDS: dict[str, str] = {"kresd": "nsd", "dnsdist": "nsd"}


# --- lifecycle ------------------------------------------------------------------


def _answers_soa(port: int, tcp: bool) -> bool:
    query = dns.message.make_query(ZONE, dns.rdatatype.SOA)
    try:
        if tcp:
            reply = dns.query.tcp(query, HOST, port=port, timeout=0.5)
        else:
            reply = dns.query.udp(query, HOST, port=port, timeout=0.5)
    except (OSError, dns.exception.DNSException):
        return False
    return reply.rcode() == dns.rcode.NOERROR and any(
        rrset.rdtype == dns.rdatatype.SOA for rrset in reply.answer
    )


def _wait_ready(process: subprocess.Popen[bytes], port: int) -> bool:
    """True once the daemon answers SOA on UDP and TCP; False if it exited first."""
    deadline = time.monotonic() + START_TIMEOUT
    udp_ok = tcp_ok = False
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        udp_ok = udp_ok or _answers_soa(port, tcp=False)
        tcp_ok = tcp_ok or _answers_soa(port, tcp=True)
        if udp_ok and tcp_ok:
            return True
        time.sleep(0.1)
    raise LaunchError(f"no SOA answer within {START_TIMEOUT}s (udp={udp_ok}, tcp={tcp_ok})")


def stop(process: subprocess.Popen[bytes], grace: float = STOP_GRACE) -> None:
    """SIGTERM the daemon by its PID, SIGKILL it after ``grace`` seconds."""
    stop_process(process, grace)


def launch(
    name: str, workdir: Path, backend: RunningServer | None = None, attempts: int = 5,
    spec: ServerSpec | None = None, *, port: int | None = None,
) -> RunningServer:
    """Start server ``name`` in ``workdir`` and wait until it answers SOA on UDP and TCP;
    on ``port`` (a restart where the previous one listened), else on a free port.

    ``spec`` starts a server that is not one of :data:`SPECS` (the encrypted
    transports' setups in encrypted.py), on the same machinery."""
    spec = spec or SPECS[name]
    if shutil.which(spec.binary) is None:
        raise MissingServerError(
            f"{spec.binary} not found: install Debian package {spec.package} "
            "(scripts/install-system-deps.sh)"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    # Daemons that insist on dropping privileges must still read their files.
    workdir.chmod(0o755)
    log = workdir / f"{name}.log"
    wanted = port
    for attempt in range(1, attempts + 1):
        port = wanted or free_port()
        argv = spec.build(workdir, port, backend)
        with log.open("ab") as sink:
            sink.write(f"=== attempt {attempt}: {' '.join(argv)}\n".encode())
            sink.flush()
            process = subprocess.Popen(
                argv,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            ready = _wait_ready(process, port)
        except LaunchError as error:
            stop(process)
            raise LaunchError(f"{name} on port {port}: {error}\n{_tail(log, 30)}") from None
        if ready:
            return RunningServer(
                name=name, host=HOST, port=port, zone=ZONE, pid=process.pid,
                workdir=workdir, log=log, process=process, backend=backend,
            )  # fmt: skip
        stop(process)
        tail = _tail(log, 30)
        if not any(marker.lower() in tail.lower() for marker in spec.port_taken):
            raise LaunchError(f"{name} exited with {process.returncode} at start:\n{tail}")
    raise LaunchError(f"{name}: port taken {attempts} times in a row:\n{_tail(log, 30)}")


@contextlib.contextmanager
def running(
    name: str, workdir: Path, backend: RunningServer | None = None
) -> Iterator[RunningServer]:
    server = launch(name, workdir, backend)
    try:
        yield server
    finally:
        stop(server.process)
