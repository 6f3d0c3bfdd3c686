"""Small helpers the test suite shares: certificates and stopping our own processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest


def require_binary(name: str, *candidates: str) -> str:
    """The path of a tool the test talks to; a missing one FAILS the test (never a
    skip: CI installs every tool with scripts/install-system-deps.sh)."""
    found = shutil.which(name) or next((c for c in candidates if Path(c).is_file()), None)
    if found is None:
        pytest.fail(f"{name} is not installed (scripts/install-system-deps.sh installs it)",
                    pytrace=False)  # fmt: skip
    return found


def make_self_signed_cert(directory: Path, name: str = "localhost",
                          ip: str | None = "127.0.0.1") -> tuple[Path, Path]:  # fmt: skip
    """A throw-away certificate and key for ``name`` (and ``ip``), made by openssl."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    alt_names = f"DNS:{name}" + (f",IP:{ip}" if ip else "")
    subprocess.run(
        [require_binary("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN={name}", "-addext", f"subjectAltName={alt_names}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def stop_process(process: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """SIGTERM a process we started, by its PID; SIGKILL it after ``grace`` seconds."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait(grace)
