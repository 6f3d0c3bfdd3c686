"""A chaos run judged by the shipped alerts (issue 11 item 4).

A real Prometheus (Debian `prometheus`) evaluates deploy/prometheus/alerts.yml (a
copy with every `for:` shortened to 5 s, as in tests/test_prometheus_e2e.py: much
shorter than the outages) over `dnsgap serve` probing five real BIND servers, each
with a standing gap (opcode 3: NOTIMP where the probe expects NOERROR). After a
healthy stretch, at once: one server restarts, one is blackholed (SIGSTOP: the
kernel still completes TCP handshakes, nothing answers), one gets its TCP
connections reset (a relay in front of it answers every TCP query with an RST), and
one changes support: BIND on its port is replaced by NSD, which answers UPDATE with
NOTIMP. From Prometheus' own alert API: a `DnsgapNew*` alert fires for that server
and for no other (neither edge of an outage, nor a standing NOTIMP still there
after the restart, is a change); the blackholed server is one
DnsgapTargetUnreachable, the resetting one one DnsgapTransportUnreachable for TCP,
and none of their probes has an alert of its own; the steady server's series and
the exporter's own never miss a scrape; dnsgap's RSS and open descriptors return
to their baseline.

About two minutes: the issue asks for a bounded end-to-end run; the alert needs
its `for:` after the change.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import free_port
from tests.hostile import BackgroundLoop
from tests.live_demo import ROOT
from tests.realservers.launch import HOST, ZONE, RunningServer, launch, stop
from tests.support import stop_process
from tests.test_prometheus_e2e import (
    TEST_FOR,
    _api,
    _query,
    _running_prometheus,
    _wait,
    shortened_rules,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ROLES = ("steady", "restarts", "blackholed", "tcp_reset", "changes")
PROBES = ("soa", "soa_tcp", "update")
#: Healthy stretch before the chaos (the resource baseline is taken after it).
HISTORY = 20.0
#: A standing gap on every server but the one that changes software: BIND answers
#: opcode 3 with NOTIMP, this probe expects NOERROR.
STANDING = "opcode3"
#: The test copy's `for:` is the other end-to-end test's (shipped: 5m for changes,
#: 15m for standing states); the outages last three times longer, so that what the
#: rules make of an outage has its time to fire.
OUTAGE = 15.0
RESTART_AFTER = 8.0
#: What "back to baseline" allows: the allocator keeps some freed memory, and
#: Prometheus may reconnect. Measured: 62.1 -> 62.2 MB, 12 -> 12 descriptors.
RSS_SLACK = 8 * 2**20
FD_SLACK = 1


# -- a relay that resets TCP ----------------------------------------------------------


class _UdpRelay(asyncio.DatagramProtocol):
    def __init__(self, relay: ResettingRelay) -> None:
        self.relay = relay

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        task = asyncio.get_running_loop().create_task(self.relay.forward_udp(data, addr))
        self.relay.tasks.add(task)
        task.add_done_callback(self.relay.tasks.discard)


class _OneReply(asyncio.DatagramProtocol):
    def __init__(self, reply: asyncio.Future[bytes]) -> None:
        self.reply = reply

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.reply.done():
            self.reply.set_result(data)


class ResettingRelay:
    """UDP and TCP relay in front of a real server. While ``reset`` is set, a TCP
    client gets an RST (SO_LINGER 0) once it has sent its query, as from a server
    or middlebox that resets connections; UDP keeps working."""

    def __init__(self, backend: int) -> None:
        self.backend = backend
        self.reset = False
        self.tasks: set[asyncio.Task[None]] = set()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    async def start(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(lambda: _UdpRelay(self),
                                                           local_addr=(HOST, port))  # fmt: skip
        self._tcp = await asyncio.start_server(self._client, HOST, port)

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for task in list(self.tasks):
            task.cancel()

    async def forward_udp(self, data: bytes, addr: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[bytes] = loop.create_future()
        transport, _ = await loop.create_datagram_endpoint(lambda: _OneReply(reply),
                                                           remote_addr=(HOST, self.backend))
        try:
            transport.sendto(data)
            answer = await asyncio.wait_for(reply, 2.0)
            if self._udp is not None:
                self._udp.sendto(answer, addr)
        except TimeoutError:
            pass
        finally:
            transport.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.reset:
                with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                    await asyncio.wait_for(reader.readexactly(2), 2.0)
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            up_reader, up_writer = await asyncio.open_connection(HOST, self.backend)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except OSError:
            writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


# -- the run ----------------------------------------------------------------------------


@dataclass
class Usage:
    rss: int
    fds: int


def usage(pid: int) -> Usage:
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return Usage(rss, len(os.listdir(f"/proc/{pid}/fd")))


def dnsgap_config(ports: dict[str, int], listen: str) -> str:
    config = {
        "http": {"listen": listen},
        "scheduler": {"jitter": 1},
        "defaults": {"interval": "2s", "timeout": "1s"},
        "probes": {
            "soa": {"kind": "query", "qname": "@", "qtype": "SOA"},
            "soa_tcp": {"kind": "query", "qname": "@", "qtype": "SOA", "transport": "tcp"},
            # Prerequisite-only: a server that allows UPDATE answers and changes nothing.
            "update": {"kind": "update"},
            STANDING: {"kind": "opcode", "opcode": 3, "expect": "NOERROR"},
        },
        "targets": [{"name": role, "server": f"{HOST}:{port}", "zone": ZONE,
                     "probes": [*PROBES, *((STANDING,) if role != "changes" else ())]}
                    for role, port in ports.items()],
    }  # fmt: skip
    return yaml.safe_dump(config, sort_keys=False)


@contextlib.contextmanager
def dnsgap_process(config: Path, listen: str) -> Iterator[int]:
    log = config.with_suffix(".log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "exporter", "serve", "--config", str(config)],
        stdout=log, stderr=log, cwd=ROOT)  # fmt: skip
    try:
        _wait("dnsgap ready", lambda: _ready(f"http://{listen}/-/ready"), 30)
        yield process.pid
    finally:
        stop_process(process)
        log.close()


def _ready(url: str) -> bool:
    import urllib.request

    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as reply:
        return bool(reply.status == 200)
    return False


def _new_gap_alerts(prometheus: str) -> list[dict[str, str]]:
    """Label sets (and state) of every pending or firing DnsgapNew* alert, from
    Prometheus' /api/v1/alerts."""
    alerts: list[dict[str, Any]] = _api(prometheus, "/api/v1/alerts")["alerts"]
    return [{**a["labels"], "state": a["state"]} for a in alerts
            if a["labels"]["alertname"].startswith("DnsgapNew")]  # fmt: skip


def test_under_chaos_only_the_server_whose_support_changed_gets_a_new_gap_alert(
    tmp_path: Path,
) -> None:
    servers: dict[str, RunningServer] = {}
    background = BackgroundLoop()
    relay: ResettingRelay | None = None
    try:
        for role in ROLES:
            servers[role] = launch("bind_open", tmp_path / role)
        relay_port = free_port()
        relay = ResettingRelay(servers["tcp_reset"].port)
        background.run(relay.start(relay_port))
        ports = {role: server.port for role, server in servers.items()}
        ports["tcp_reset"] = relay_port
        listen = f"{HOST}:{free_port()}"
        config = tmp_path / "dnsgap.yml"
        config.write_text(dnsgap_config(ports, listen))
        rules = tmp_path / "alerts-test-copy.yml"
        rules.write_text(yaml.safe_dump(shortened_rules(yaml.safe_load(ALERTS.read_text()),
                                                        TEST_FOR), sort_keys=False))  # fmt: skip
        prometheus_yml = tmp_path / "prometheus.yml"
        prometheus_yml.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "2s", "scrape_timeout": "2s",
                       "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [{"job_name": "dnsgap",
                                "static_configs": [{"targets": [listen]}]}],
        }, sort_keys=False))  # fmt: skip
        with dnsgap_process(config, listen) as pid, _running_prometheus(
            prometheus_yml, tmp_path / "data"
        ) as prometheus:  # fmt: skip
            run_chaos(prometheus, pid, servers, relay, tmp_path)
    finally:
        if relay is not None:
            background.run(relay.close())
        background.close()
        for server in servers.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(server.pid, signal.SIGCONT)
            stop(server.process)


def _all_healthy(prometheus: str, roles: tuple[str, ...]) -> bool:
    ok = _query(prometheus, 'dnsgap_probe_success{job="dnsgap"} == 1')
    return {(r["metric"]["target"], r["metric"]["probe"]) for r in ok} >= {
        (role, probe) for role in roles for probe in PROBES}  # fmt: skip


def run_chaos(prometheus: str, pid: int, servers: dict[str, RunningServer],
              relay: ResettingRelay, tmp_path: Path) -> None:  # fmt: skip
    _wait("every pair healthy in Prometheus", lambda: _all_healthy(prometheus, ROLES), 60)
    healthy_since = time.monotonic()
    time.sleep(HISTORY)
    baseline = usage(pid)
    assert _new_gap_alerts(prometheus) == []

    # -- chaos, all at once ------------------------------------------------------------
    chaos_started = time.monotonic()
    os.kill(servers["blackholed"].pid, signal.SIGSTOP)
    relay.reset = True
    restarts = servers["restarts"]
    stop(restarts.process)
    changes = servers["changes"]
    stop(changes.process)
    servers["changes"] = launch("nsd", tmp_path / "changes-nsd", port=changes.port)
    time.sleep(max(0.0, chaos_started + RESTART_AFTER - time.monotonic()))
    servers["restarts"] = launch("bind_open", tmp_path / "restarts-again", port=restarts.port)
    time.sleep(max(0.0, chaos_started + OUTAGE - time.monotonic()))
    os.kill(servers["blackholed"].pid, signal.SIGCONT)
    relay.reset = False
    outage_ended = time.monotonic()

    # -- what the alerts say -----------------------------------------------------------
    _wait("DnsgapNewNotImp firing for changes/update", lambda: any(
        a["alertname"] == "DnsgapNewNotImp" and a["target"] == "changes"
        and a["probe"] == "update" and a["state"] == "firing"
        for a in _new_gap_alerts(prometheus)), 90)  # fmt: skip
    recovered = tuple(role for role in ROLES if role != "changes")
    _wait("the other servers healthy again", lambda: _all_healthy(prometheus, recovered), 60)
    # Let the rules see the recovered state for longer than their `for:`.
    time.sleep(max(0.0, outage_ended + 20 - time.monotonic()))
    others = [a for a in _new_gap_alerts(prometheus) if a.get("target") != "changes"]
    assert others == [], f"new-gap alerts for servers whose support did not change: {others}"
    # Not only now: over the whole run, at every rule evaluation (Prometheus keeps
    # each alert's state as the ALERTS series).
    run = f"{int(time.monotonic() - healthy_since) + 5}s"
    fired = {(r["metric"]["alertname"], r["metric"].get("target"), r["metric"].get("probe"))
             for r in _query(prometheus, 'max_over_time(ALERTS{alertstate="firing",'
                             f'alertname=~"DnsgapNew.*"}}[{run}])')}  # fmt: skip
    assert fired == {("DnsgapNewNotImp", "changes", "update")}
    # One alert per problem: the dead server and the dead transport, each once; no
    # probe of theirs alerts on its own. The only other alerts of the servers whose
    # support did not change are their standing gaps (there before the chaos), one
    # per server.
    firing = _query(prometheus, f'max_over_time(ALERTS{{alertstate="firing"}}[{run}])')
    everything = {(a["alertname"], a.get("target"), a.get("probe"), a.get("transport"),
                   a.get("cause"))
                  for a in (r["metric"] for r in firing)
                  if a.get("target") not in (None, "changes")}  # fmt: skip
    assert ("DnsgapTargetUnreachable", "blackholed", None, None, None) in everything, everything
    assert ("DnsgapTransportUnreachable", "tcp_reset", None, "tcp", None) in everything, everything
    standing = {("DnsgapProbeFailing", role, None, None, "not_implemented") for role in ROLES}
    outages = {"DnsgapTargetUnreachable", "DnsgapTransportUnreachable"}
    others = {a for a in everything if a[0] not in outages and a not in standing}
    assert others == set(), others
    # The outage was seen: the servers under chaos failed probes meanwhile.
    window = f"{int(time.monotonic() - chaos_started) + 1}s"
    for role in ("restarts", "blackholed"):
        worst = _query(prometheus, f'min_over_time(dnsgap_probe_success{{job="dnsgap",'
                       f'target="{role}",probe="soa"}}[{window}])')  # fmt: skip
        assert [r["value"][1] for r in worst] == ["0"], role
    reset = _query(prometheus, f'min_over_time(dnsgap_probe_success{{job="dnsgap",'
                   f'target="tcp_reset",probe="soa_tcp"}}[{window}])')  # fmt: skip
    assert [r["value"][1] for r in reset] == ["0"]

    # -- no series went missing --------------------------------------------------------
    span = f"{int(time.monotonic() - healthy_since) - 2}s"
    scrapes = _query(prometheus, f'count_over_time(up{{job="dnsgap"}}[{span}])')
    expected = float(scrapes[0]["value"][1])
    assert _query(prometheus, f'min_over_time(up{{job="dnsgap"}}[{span}])')[0]["value"][1] == "1"
    # The steady server's pairs and the exporter's own series (no target label),
    # sample by sample.
    series = _api(prometheus, "/api/v1/query", query=f'{{job="dnsgap",__name__=~"dnsgap_.+",'
                  f'target=~"steady|"}}[{span}]')["result"]  # fmt: skip
    assert len(series) > 20
    missing = sorted(f'{r["metric"]["__name__"]} {r["metric"]}' for r in series
                     if len(r["values"]) < expected)  # fmt: skip
    assert missing == [], f"series with fewer samples than scrapes ({expected:g}): {missing[:10]}"

    # -- resources back to baseline ----------------------------------------------------
    after = usage(pid)
    assert after.fds <= baseline.fds + FD_SLACK, (baseline, after)
    assert after.rss <= baseline.rss + RSS_SLACK, (baseline, after)
