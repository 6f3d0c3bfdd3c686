"""A bounded soak: a real exporter process probes healthy, gap and hostile servers
every half second for about 90 seconds; its memory stays flat, its file descriptors
bounded, and it keeps answering /metrics."""

from __future__ import annotations

import os
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from exporter.refserver import ServerBehaviour
from exporter.refserver import start as start_refserver
from tests.conftest import free_port
from tests.hostile import BackgroundLoop, HostileServer, Mode
from tests.test_probe_endpoint import exporter_process

pytestmark = pytest.mark.slow

SOAK_SECONDS = float(os.environ.get("DNSGAP_SOAK_SECONDS", "90"))
SAMPLE_EVERY = 1.0
HOSTILE_MODES = (Mode.ACCEPT_NO_READ, Mode.STALL_PREFIX, Mode.ENDLESS_AXFR, Mode.DSO_FLOOD,
                 Mode.RST_MID_REPLY, Mode.POINTER_LOOP, Mode.GARBAGE, Mode.LATE_REPLY,
                 Mode.WRONG_ID, Mode.SHORT_PREFIX, Mode.DSO_TLV_PAST_END)  # fmt: skip
GAPS = {
    "gap-notimp": ServerBehaviour(update="notimp", axfr="notimp", ixfr="notimp", dso="none"),
    "gap-refused": ServerBehaviour(update="refused", axfr="refused", dso="no_push"),
    "gap-drop": ServerBehaviour(update="drop", ixfr="drop", unknown_opcode="drop", dso="stall"),
}
PROBES_PER_TARGET = 9
PROBES = """
      - {name: soa, kind: query, qname: "@"}
      - {name: soa_tcp, kind: query, qname: "@", transport: tcp}
      - {name: axfr, kind: axfr}
      - {name: ixfr, kind: ixfr, serial: 1}
      - {name: update, kind: update}
      - {name: status, kind: opcode, opcode: 2}
      - {name: dso, kind: dso_keepalive}
      - {name: dso_tlv, kind: dso_tlv}
      - {name: push, kind: dso_push_subscribe, dso: {push_name: "@", push_type: SOA}}"""


PAIRS = PROBES_PER_TARGET * (1 + len(GAPS) + len(HOSTILE_MODES))


def _config(servers: dict[str, int]) -> str:
    targets = "".join(f"""
  - name: {name}
    server: "127.0.0.1:{port}"
    zone: demo.example.
    probes:{PROBES}""" for name, port in servers.items())  # fmt: skip
    return f"""
defaults: {{interval: 500ms, timeout: 300ms}}
scheduler: {{jitter: 1.0}}
targets:{targets}
"""


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def test_exporter_soaks_hostile_and_gap_servers_with_flat_memory_and_bounded_fds(
    tmp_path: Path,
) -> None:
    background = BackgroundLoop()
    servers: dict[str, int] = {}
    started: list[object] = []
    try:
        healthy = background.run(start_refserver(ServerBehaviour()))
        started.append(healthy)
        servers["healthy"] = healthy.port
        for name, behaviour in GAPS.items():
            server = background.run(start_refserver(behaviour))
            started.append(server)
            servers[name] = server.port
        for mode in HOSTILE_MODES:
            hostile = background.run(HostileServer.start(mode))
            hostile.hold = 3.0
            hostile.late_delay = 1.0
            hostile.flood = 1200  # past the client's cap, without starving the others
            started.append(hostile)
            servers[f"hostile-{mode.value}"] = hostile.port
        path = tmp_path / "soak.yml"
        path.write_text(_config(servers))
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with exporter_process(path, port, "--log-level", "warning") as process:
            proc = psutil.Process(process.pid)
            rss: list[int] = []
            fds: list[int] = []
            deadline = time.monotonic() + SOAK_SECONDS
            while time.monotonic() < deadline:
                time.sleep(SAMPLE_EVERY)
                assert process.poll() is None, "the exporter exited during the soak"
                rss.append(proc.memory_info().rss)
                fds.append(_fds(process.pid))
            metrics = _get(base + "/metrics")
            assert process.poll() is None
        third = len(rss) // 3
        first_rss, last_rss = max(rss[:third]), max(rss[-third:])
        assert last_rss <= first_rss * 1.15, (
            f"RSS grew: first third max {first_rss >> 20} MiB, last third max "
            f"{last_rss >> 20} MiB; samples {[r >> 20 for r in rss]}")  # fmt: skip
        # Open sockets come and go with the probes (each pair holds at most one at a
        # time, overlapping runs are skipped); a leak would make the count creep up.
        samples = f"fds {fds}, RSS MiB {[r >> 20 for r in rss]}"
        baseline = min(fds[:third])
        assert max(fds) <= baseline + PAIRS, samples
        # In-flight sockets rise and fall with the servers' pace; leaked ones never
        # close, so a leak lifts the floor of the count.
        assert min(fds[-third:]) <= baseline + 10, samples
        # The healthy target's probe ran on its schedule all along: about one run per
        # half second. (Its answers may time out now and then: the test's own servers
        # share one Python process with the endless AXFR and the DSO floods.)
        healthy_soa = 'dnsgap_probe_responses_total{target="healthy",probe="soa",'
        rows = [row for row in metrics.splitlines() if row.startswith(healthy_soa)]
        runs = sum(float(row.rsplit(" ", 1)[1]) for row in rows)
        assert runs >= SOAK_SECONDS / 0.5 * 0.8, rows
        assert any('rcode="NOERROR"' in row and not row.endswith(" 0") for row in rows), rows
        buckets = {row.split('le="')[1].split('"')[0]: float(row.rsplit(" ", 1)[1])
                   for row in metrics.splitlines()
                   if row.startswith("dnsgap_scheduler_lateness_seconds_bucket")}  # fmt: skip
        # ~270 probe launches a second, a tenth of them DSO floods: most launch within
        # 100 ms of their due time, nearly all within a second.
        assert buckets["0.1"] >= 0.9 * buckets["+Inf"], buckets
        assert buckets["1"] >= 0.99 * buckets["+Inf"], buckets
        for mode in HOSTILE_MODES:
            assert f'target="hostile-{mode.value}"' in metrics
        log = path.with_suffix(".log").read_text()
        assert "Traceback" not in log, log[-3000:]
        assert "failed unexpectedly" not in log
    finally:
        for server in started:
            background.run(server.close())  # type: ignore[attr-defined]
        background.close()
