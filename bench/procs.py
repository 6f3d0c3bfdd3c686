"""Processes the bench starts: free ports, start, wait, measure, stop by PID.

CPU figures come from each process's own accounting (psutil's cpu_times, which
reads the kernel's per-process user+system time), never from the wall clock.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (DNS servers take both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
        try:
            with socket.socket(socket.AF_INET, other) as sock:
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port on 127.0.0.1")


@dataclass
class Proc:
    """A process the bench started; stopped by its own PID only."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    _ps: psutil.Process | None = field(default=None, init=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def ps(self) -> psutil.Process:
        if self._ps is None:
            self._ps = psutil.Process(self.pid)
        return self._ps

    def cpu(self) -> float:
        """User + system CPU-seconds of the process (all its threads) so far."""
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def peak_rss(self) -> int:
        """VmHWM: the highest RSS the process has had (Linux)."""
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return self.rss()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def start(name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None) -> Proc:
    log = workdir / f"{name}.log"
    handle = log.open("wb")
    popen = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, cwd=workdir,
                             env={**os.environ, **(env or {})})  # fmt: skip
    handle.close()
    return Proc(name, popen, log)


def wait_http(proc: Proc, url: str, timeout: float = 120.0) -> None:
    """Until ``url`` answers 200, or raise with the process's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited: {proc.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready at {url}: {proc.log.read_text()[-2000:]}")


def http_get(url: str, timeout: float = 120.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        body: bytes = reply.read()
        return body


def run_child(argv: list[str], timeout: float = 600.0) -> tuple[float, str]:
    """Run a child to completion; (its own user+system CPU-seconds, its stdout)."""
    popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(popen.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            popen.kill()
            raise RuntimeError(f"{argv[0]} ran past {timeout}s")
        time.sleep(0.02)
    assert popen.stdout is not None
    assert popen.stderr is not None
    out, err = popen.stdout.read().decode(), popen.stderr.read().decode()
    popen.returncode = os.waitstatus_to_exitcode(status)
    if popen.returncode != 0:
        raise RuntimeError(f"{argv} exited {popen.returncode}: {err[-2000:]}")
    return usage.ru_utime + usage.ru_stime, out
