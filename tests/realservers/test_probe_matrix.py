"""`dnsgap probe --json` against every real server: the rcode and cause it reports
must be what test_answers.py saw each server answer on the wire.

The expectations are not written twice: every row of ``test_answers.EXPECTED`` that
dnsgap can reproduce is translated through :data:`IMPLIED`, the one table that says
how an observation reads as dnsgap's (rcode, cause).
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from exporter.cli import main

from .launch import SPECS, ZONE, RunningServer
from .test_answers import EXPECTED, SILENCE_TIMEOUT, TRANSPORTS, UNASSIGNED_OPCODES

#: What an observation from test_answers means for dnsgap: (rcode mnemonic, cause).
IMPLIED: dict[str, tuple[str | None, str]] = {
    "NOERROR": ("NOERROR", "none"),
    # RFC 2136 §3.2: a failed prerequisite shows UPDATE is implemented (not that we may
    # update: permission is checked after the prerequisites, §3.3).
    "NXRRSET": ("NXRRSET", "none"),
    "FORMERR": ("FORMERR", "format_error"),
    "SERVFAIL": ("SERVFAIL", "server_failure"),
    "NOTIMP": ("NOTIMP", "not_implemented"),
    "REFUSED": ("REFUSED", "refused"),
    "NOTAUTH": ("NOTAUTH", "not_authorized"),
    "BADVERS": ("BADVERS", "bad_version"),
    "drop": (None, "no_response"),
    "close": (None, "connection_closed"),
    "reset": (None, "connection_reset"),
    # PowerDNS Recursor answers UPDATE over TCP with a QUERY-opcode NOTIMP.
    "mismatch:QUERY/NOTIMP": ("NOTIMP", "mismatched_reply"),
}
#: RFC 8765 §6.2.2: NOTIMP to a DSO message means "no DSO at all".
IMPLIED_FOR_DSO = {**IMPLIED, "NOTIMP": ("NOTIMP", "dso_not_implemented")}

#: dnsgap probe arguments for each observed operation of test_answers.py, sent the
#: same way (RD, EDNS, question) so that the two must agree.
PROBES: dict[str, list[str]] = {
    "soa": ["--kind", "query", "--qtype", "SOA", "--rd", "--no-edns"],
    "edns_v1": ["--kind", "query", "--qtype", "SOA", "--rd", "--edns-version", "1"],
    "ixfr": ["--kind", "ixfr"],
    "axfr": ["--kind", "axfr"],
    "update": ["--kind", "update"],
    "notify": ["--kind", "notify", "--allow-notify"],
    **{
        f"opcode{n}": ["--kind", "opcode", "--opcode", str(n), "--qtype", "SOA"]
        for n in UNASSIGNED_OPCODES
    },
    # Over UDP DSO is not valid (RFC 8490 §5.1): opt in to see what servers do anyway.
    "dso_keepalive": ["--kind", "dso_keepalive", "--allow-udp-dso"],
}


def _case(server: str, operation: str, transport: str, seen: str) -> object:
    rcode, cause = (IMPLIED_FOR_DSO if "dso" in operation else IMPLIED)[seen]
    case_id = f"{server}-{operation}-{transport}-{rcode or 'no_reply'}-{cause}"
    return pytest.param(server, operation, transport, (rcode, cause), id=case_id)


CASES = [_case(*row) for row in EXPECTED if row[1] in PROBES]


class _PerThreadStdout(io.TextIOBase):
    """sys.stdout that each worker thread can point at its own buffer."""

    def __init__(self, fallback: io.TextIOBase) -> None:
        self._fallback = fallback
        self._local = threading.local()

    @contextlib.contextmanager
    def capture(self) -> io.StringIO:  # type: ignore[misc]
        self._local.buffer = io.StringIO()
        try:
            yield self._local.buffer
        finally:
            self._local.buffer = None

    def write(self, text: str) -> int:
        return (getattr(self._local, "buffer", None) or self._fallback).write(text)


def _argv(server: RunningServer, operation: str, transport: str) -> list[str]:
    return [
        "probe", f"{server.host}:{server.port}", *PROBES[operation],
        "--zone", ZONE, "--name", ZONE, "--transport", transport,
        "--timeout", str(SILENCE_TIMEOUT), "--json",
    ]  # fmt: skip


def _probe(stdout: _PerThreadStdout, argv: list[str]) -> dict[str, object]:
    with stdout.capture() as buffer:
        status = main(argv)
    assert status == 0, argv
    result: dict[str, object] = json.loads(buffer.getvalue())
    return result


# Each server is probed once per session, every cell concurrently (silence costs one
# deadline per batch), with `dnsgap probe` run in-process in worker threads.
_CACHE: dict[int, dict[tuple[str, str], dict[str, object]]] = {}


def probe_all(server: RunningServer) -> dict[tuple[str, str], dict[str, object]]:
    if server.pid not in _CACHE:
        cells = [(op, transport) for op in PROBES for transport in TRANSPORTS]
        stdout = _PerThreadStdout(sys.stdout)  # type: ignore[arg-type]
        with contextlib.redirect_stdout(stdout), ThreadPoolExecutor(max_workers=32) as pool:
            results = pool.map(lambda cell: _probe(stdout, _argv(server, *cell)), cells)
            _CACHE[server.pid] = dict(zip(cells, results, strict=True))
    return _CACHE[server.pid]


@pytest.mark.parametrize(("server", "operation", "transport", "rcode_and_cause"), CASES)
def test_dnsgap_probe_reports_what_the_server_answered(
    server: str,
    operation: str,
    transport: str,
    rcode_and_cause: tuple[str | None, str],
    request: pytest.FixtureRequest,
) -> None:
    running: RunningServer = request.getfixturevalue(server)
    result = probe_all(running)[(operation, transport)]
    assert (result["rcode"], result["cause"]) == rcode_and_cause, result


def test_every_server_is_in_the_probe_matrix() -> None:
    assert {case.values[0] for case in CASES} == set(SPECS)  # type: ignore[attr-defined]


def test_dnsgap_probe_command_line_prints_json(nsd: RunningServer) -> None:
    # Once through the real entry point, as an operator runs it.
    completed = subprocess.run(
        [sys.executable, "-m", "exporter", *_argv(nsd, "update", "udp")],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert (result["rcode"], result["rcode_value"], result["cause"]) == (
        "NOTIMP", 4, "not_implemented",
    )  # fmt: skip
    assert result["error"] is None
    assert isinstance(result["duration_seconds"], float)
