"""Running out of file descriptors costs counted skips, never the process.

``dnsgap serve`` runs under a lowered RLIMIT_NOFILE; the test then eats the
exporter's descriptors with idle HTTP connections, the way a crowd of clients (or a
leak elsewhere) would, while probes are due.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.realservers.launch import running
from tests.support import stop_process

SOFT, HARD = 64, 160


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        body: bytes = reply.read()
    return body.decode()


def _sample(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    return float(match[1]) if match else 0.0


def _wait_metrics(port: int, process: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, "dnsgap exited"
        try:
            return _metrics(port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.slow
def test_out_of_descriptors_is_a_counted_skip_and_the_exporter_recovers(tmp_path: Path) -> None:
    with running("unbound", tmp_path / "unbound") as unbound:
        http_port = free_port()
        config = tmp_path / "dnsgap.yml"
        config.write_text(
            f'http: {{listen: "127.0.0.1:{http_port}"}}\n'
            "defaults: {interval: 0.5s, timeout: 0.5s}\n"
            "targets:\n"
            f'  - name: ns\n    server: "{unbound.host}:{unbound.port}"\n'
            f"    zone: {unbound.zone}\n"
            "    probes:\n"
            '      - {name: soa_tcp, kind: query, qname: "@", transport: tcp}\n'
            '      - {name: soa_udp, kind: query, qname: "@"}\n'
        )
        log = tmp_path / "dnsgap.log"
        with log.open("wb") as sink:  # a file: asyncio logs every refused accept()
            process = subprocess.Popen(
                # util-linux prlimit: the limits apply from exec on.
                ["prlimit", f"--nofile={SOFT}:{HARD}", sys.executable, "-m", "exporter",
                 "--log-level", "error", "serve", "--config", str(config)],
                stdout=subprocess.DEVNULL, stderr=sink,
            )  # fmt: skip
        clients: list[socket.socket] = []
        try:
            _wait_metrics(http_port, process, 30)
            limits = Path(f"/proc/{process.pid}/limits").read_text()
            soft = re.search(r"Max open files\s+(\d+)\s+(\d+)", limits)
            assert soft is not None
            assert (int(soft[1]), int(soft[2])) == (HARD, HARD)  # soft raised to hard
            # Idle HTTP clients: each one the exporter accepts holds a descriptor.
            for _ in range(HARD + 40):
                with contextlib.suppress(OSError):
                    clients.append(socket.create_connection(("127.0.0.1", http_port), 2))
            time.sleep(3.0)
            assert process.poll() is None, "dnsgap exited while out of descriptors"
        finally:
            for client in clients:
                client.close()
        try:
            text = _wait_metrics(http_port, process, 10)
            skipped = _sample(text, "dnsgap_probes_skipped_total", '{reason="no_descriptors"}')
            assert skipped > 0, text
            # The skips were not blamed on the server, and probing resumed.
            before = _sample(text, "dnsgap_probe_last_run_timestamp_seconds",
                             '{target="ns",probe="soa_tcp"}')  # fmt: skip
            time.sleep(1.5)
            text = _metrics(http_port)
            assert _sample(text, "dnsgap_probe_last_run_timestamp_seconds",
                           '{target="ns",probe="soa_tcp"}') > before  # fmt: skip
            errors = _sample(text, "dnsgap_probe_responses_total",
                             '{target="ns",probe="soa_tcp",rcode="none",cause="network_error"}')
            assert errors == 0
            assert process.poll() is None
        finally:
            stop_process(process)
        # Only asyncio's own notes on refused accept() calls: no error of ours.
        assert not re.search(r"(ERROR|CRITICAL) (exporter|dnsgap)", log.read_text())
