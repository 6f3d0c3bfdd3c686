"""The README's first command: `dnsgap demo` shows real gap series within 15 seconds."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tests.conftest import free_port


@pytest.fixture(scope="module")
def demo() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "exporter", "demo", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _metrics(base: str) -> str:
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
        return str(response.read().decode())


def _wait_for(base: str, pattern: str, seconds: float = 15.0) -> str:
    deadline = time.monotonic() + seconds
    text = ""
    while time.monotonic() < deadline:
        try:
            text = _metrics(base)
        except OSError:
            time.sleep(0.2)
            continue
        if re.search(pattern, text, re.MULTILINE):
            return text
        time.sleep(0.5)
    raise AssertionError(f"no line matching {pattern!r} within {seconds}s:\n{text[-3000:]}")


def test_demo_shows_a_nonzero_notimp_series_within_15_seconds(demo: str) -> None:
    _wait_for(demo, r'^dnsgap_probe_responses_total\{target="demo-auth",probe="update",'
                    r'rcode="NOTIMP",cause="not_implemented"\} [1-9]')  # fmt: skip


def test_demo_shows_dsotypeni_for_dns_push(demo: str) -> None:
    _wait_for(demo, r'^dnsgap_support_gap\{target="demo-dso-nopush",probe="dso_push",'
                    r'cause="dso_type_not_implemented"\} 1')  # fmt: skip


def test_demo_shows_a_server_without_dso(demo: str) -> None:
    _wait_for(demo, r'^dnsgap_probe_responses_total\{target="demo-no-dso",'
                    r'probe="dso_keepalive",rcode="NOTIMP",cause="dso_not_implemented"\} [1-9]')


def test_demo_shows_refused_and_silence(demo: str) -> None:
    text = _wait_for(demo, r'^dnsgap_support_gap\{target="demo-auth",probe="axfr",'
                           r'cause="refused"\} 1')  # fmt: skip
    text = _wait_for(demo, r'^dnsgap_support_gap\{target="demo-auth",probe="opcode15",'
                           r'cause="no_response"\} 1')  # fmt: skip
    assert text


def test_demo_serves_health_and_status_page(demo: str) -> None:
    _wait_for(demo, r"^dnsgap_build_info")
    with urllib.request.urlopen(f"{demo}/-/healthy", timeout=5) as response:
        assert response.status == 200
    with urllib.request.urlopen(f"{demo}/", timeout=5) as response:
        page = response.read().decode()
    assert "<table id=gaps>" in page
    assert "demo-auth" in page
