"""`dnsgap demo` as a subprocess on a free port, for tests that need a live exporter."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import free_port
from tests.support import stop_process

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def running_demo(*args: str) -> Iterator[str]:
    """Start ``python -m exporter demo ARGS`` on a free port; yield its base URL; stop it
    by PID."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "exporter", "demo", "--listen", f"127.0.0.1:{port}", *args],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process)


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def wait_for_metrics(base: str, *patterns: str, seconds: float = 30.0) -> str:
    """The demo's /metrics text once every pattern matches a line of it."""
    deadline = time.monotonic() + seconds
    text = ""
    while time.monotonic() < deadline:
        try:
            text = fetch(f"{base}/metrics")
        except OSError:
            time.sleep(0.2)
            continue
        if all(re.search(p, text, re.MULTILINE) for p in patterns):
            return text
        time.sleep(0.5)
    missing = [p for p in patterns if not re.search(p, text, re.MULTILINE)]
    raise AssertionError(f"/metrics never matched {missing} within {seconds}s:\n{text[-2000:]}")


#: /metrics patterns that hold once every demo target has been probed at least once
#: and a DSO session has ended (the last metric family to get a sample).
DEMO_SETTLED = (
    r'^dnsgap_probe_success\{target="demo-auth",probe="update"\}',
    r'^dnsgap_probe_success\{target="demo-dso-busy",probe="dso_keepalive"\}',
    r'^dnsgap_probe_success\{target="demo-regress",probe="dso_push"\}',
    r'^dnsgap_support_gap\{target="demo-dso-nopush",probe="dso_push",'
    r'cause="dso_type_not_implemented"\} 1',
    r"^dnsgap_dso_sessions_closed_total\{",
    r"^dnsgap_dso_inactivity_timeout_seconds\{",
    r"^dnsgap_zone_serial_behind\{",
    r'^dnsgap_tls_cert_expiry_timestamp_seconds\{target="demo-encrypted",probe="doq"\}',
)
