"""`dnsgap survey`: one run of a preset against every name server address of a zone,
as a matrix (plain when piped), JSON, or the status page; exit 0 whatever the gaps."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import sys

import pytest

from exporter.config import Target
from exporter.refserver import ServerBehaviour
from exporter.survey import SurveyReport, SurveyTransport, render_matrix, run_survey, survey_specs
from tests.conftest import free_port
from tests.zone_fleet import ZONE, Fleet, start_fleet

pytestmark = pytest.mark.slow  # seven dnsgap survey runs in subprocesses, ~25 s

#: ns1 implements everything; ns2 has the classic gaps; ns3 is not in the NS set.
BEHAVIOURS = (
    ServerBehaviour(),
    ServerBehaviour(update="notimp", axfr="refused", dso="none"),
    ServerBehaviour(),
)


async def _dnsgap(*args: str) -> tuple[int, str, str]:
    if args and args[0] == "--on-a-terminal":
        return await _dnsgap_on_a_terminal(*args[1:])
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exporter", "survey", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def _dnsgap_on_a_terminal(*args: str) -> tuple[int, str, str]:
    """stdout and stderr on a pseudo-terminal each, as in an interactive shell."""
    out_main, out_side = pty.openpty()
    err_main, err_side = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exporter", "survey", *args,
        stdout=out_side, stderr=err_side, env=env,
    )  # fmt: skip
    os.close(out_side)
    os.close(err_side)
    chunks: dict[int, bytearray] = {out_main: bytearray(), err_main: bytearray()}

    def drain() -> None:
        open_fds = set(chunks)
        while open_fds:
            for fd in list(open_fds):
                try:
                    data = os.read(fd, 65536)
                except OSError:  # EIO: the other side is closed
                    data = b""
                if not data:
                    open_fds.discard(fd)
                chunks[fd] += data

    reader = asyncio.get_running_loop().run_in_executor(None, drain)
    status = await asyncio.wait_for(process.wait(), 120)
    await asyncio.wait_for(reader, 10)
    for fd in chunks:
        os.close(fd)
    return status, chunks[out_main].decode(), chunks[err_main].decode()


def survey(*args: str) -> list[tuple[int, str, str]]:
    """Run ``dnsgap survey`` once per argument list (``{port}`` and ``{resolver}`` filled
    in) against a fresh fleet: serial 7 on ns1, 4 on ns2."""

    async def body() -> list[tuple[int, str, str]]:
        fleet: Fleet = await start_fleet((7, 4, 7), (1, 2), BEHAVIOURS)
        try:
            runs = []
            for arg in args:
                argv = arg.format(port=fleet.port, resolver=fleet.resolver).split()
                runs.append(await _dnsgap(*argv))
            return runs
        finally:
            for server in fleet.servers:
                await server.close()

    return asyncio.run(body())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, str]]:
    html = tmp_path_factory.mktemp("survey") / "survey.html"
    names = ("json", "plain", "server", "udp", "unknown", "tty")
    results = survey(
        f"fleet.test --resolver {{resolver}} --port {{port}} --json --html {html}",
        "fleet.test --resolver {resolver} --port {port} --transport udp",
        "fleet.test --server 127.0.0.3:{port} --transport tcp --json",
        "fleet.test --resolver {resolver} --port {port} --transport udp --json",
        "nowhere.test --resolver {resolver} --port {port}",
        "--on-a-terminal fleet.test --resolver {resolver} --port {port} --transport udp",
    )
    out = dict(zip(names, results, strict=True))
    out["html"] = (0, html.read_text(encoding="utf-8"), "")
    return out


def test_json_has_every_server_of_the_ns_set_with_serial_and_probe_results(
    runs: dict[str, tuple[int, str, str]],
) -> None:
    status, out, _ = runs["json"]
    assert status == 0  # gaps found are output, not failure
    report = json.loads(out)
    assert report["zone"] == "fleet.test"
    servers = {s["target"]: s for s in report["servers"]}
    assert set(servers) == {"fleet.test/ns1.fleet.test/127.0.0.2",
                            "fleet.test/ns2.fleet.test/127.0.0.3"}  # fmt: skip
    ns1, ns2 = servers.values()
    assert (ns1["address"], ns1["ns_name"], ns1["soa_serial"], ns1["serial_behind"]) == (
        "127.0.0.2", "ns1.fleet.test", 7, 0)
    assert (ns2["address"], ns2["ns_name"], ns2["soa_serial"], ns2["serial_behind"]) == (
        "127.0.0.3", "ns2.fleet.test", 4, 3)
    assert all(p["success"] for p in ns1["probes"].values())
    # Each probe object is what `dnsgap probe --json` prints.
    update = ns2["probes"]["update"]
    assert update["server"].startswith("127.0.0.3:")
    assert (update["kind"], update["rcode"], update["cause"]) == (
        "update", "NOTIMP", "not_implemented")
    assert ns2["probes"]["update_tcp"]["transport"] == "tcp"
    assert ns2["probes"]["axfr"]["cause"] == "refused"
    assert ns2["probes"]["dso_keepalive"]["cause"] == "dso_not_implemented"


def test_transport_both_runs_udp_probes_again_over_tcp_and_udp_does_not(
    runs: dict[str, tuple[int, str, str]],
) -> None:
    both = json.loads(runs["json"][1])["servers"][0]["probes"]
    udp = json.loads(runs["udp"][1])["servers"][0]["probes"]
    assert {"soa", "soa_tcp", "update_tcp", "axfr"} <= set(both)
    assert "axfr_tcp" not in both  # AXFR is over TCP already
    assert "soa_tcp" not in udp
    assert udp["soa"]["transport"] == "udp"


def test_the_piped_matrix_is_plain_text_with_each_gap_cause(
    runs: dict[str, tuple[int, str, str]],
) -> None:
    status, out, err = runs["plain"]
    assert status == 0
    assert "\033[" not in out
    assert "[2] fleet.test/ns2.fleet.test/127.0.0.3" in out
    assert "serial 4 (3 behind)" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()
            if line and not line.startswith((" ", "dnsgap", "probe")) and ":" not in line}
    assert rows["soa"] == ["ok", "ok"]
    assert rows["update"] == ["ok", "not_implemented"]
    assert rows["axfr"] == ["ok", "refused"]
    assert rows["dso_keepalive"] == ["ok", "dso_not_implemented"]
    # Each cause seen comes with its remediation.
    assert "not_implemented: " in out
    # No server answers for the parent zone test.: said once, not an error.
    assert "dnsgap survey: parent delegation not checked: " in err
    # The progress line went to stderr.
    assert re.search(r"dnsgap survey fleet.test: (\d+)/\1 probes", err), err


def test_on_a_terminal_the_matrix_is_coloured_and_progress_is_one_redrawn_line(
    runs: dict[str, tuple[int, str, str]],
) -> None:
    status, out, err = runs["tty"]
    assert status == 0
    assert "\033[32mok" in out
    assert "\033[31mnot_implemented" in out
    # One line redrawn with carriage returns, erased at the end.
    assert re.search(r"\rdnsgap survey fleet\.test: \d+/\d+ probes\r", err), err
    assert err.rstrip().endswith("\033[K")


def test_a_single_server_is_surveyed_with_server(runs: dict[str, tuple[int, str, str]]) -> None:
    status, out, _ = runs["server"]
    assert status == 0
    (server,) = json.loads(out)["servers"]
    assert server["address"] == "127.0.0.3"
    assert server["ns_name"] is None
    assert server["soa_serial"] == 4
    assert server["probes"]["soa"]["transport"] == "tcp"  # --transport tcp
    assert server["probes"]["update"]["cause"] == "not_implemented"


def test_html_writes_the_status_page_of_the_run(runs: dict[str, tuple[int, str, str]]) -> None:
    page = runs["html"][1]
    assert page.startswith("<!DOCTYPE html") or "<html" in page
    assert "fleet.test/ns2.fleet.test/127.0.0.3" in page
    assert "not_implemented" in page


def test_a_zone_that_cannot_be_found_exits_1_with_the_reason(
    runs: dict[str, tuple[int, str, str]],
) -> None:
    status, out, err = runs["unknown"]
    assert status == 1
    assert out == ""
    assert "NS lookup for nowhere.test" in err


def test_the_matrix_is_coloured_on_a_terminal_green_for_ok_red_for_a_gap() -> None:
    async def body() -> SurveyReport:
        fleet = await start_fleet((7, 4), (1, 2), BEHAVIOURS)
        try:
            specs = tuple(s for s in survey_specs("authoritative", ZONE, SurveyTransport.UDP)
                          if s.name in ("soa", "update"))  # fmt: skip
            targets = [Target(name=f"ns{i}", host=server.host, port=fleet.port,
                              probes=specs, zone=ZONE)
                       for i, server in enumerate(fleet.servers, 1)]  # fmt: skip
            return await run_survey(ZONE, targets, specs)
        finally:
            for server in fleet.servers:
                await server.close()

    report = asyncio.run(body())
    coloured = render_matrix(report, colour=True)
    assert "\033[32mok" in coloured
    assert "\033[31mnot_implemented" in coloured
    assert "\033[" not in render_matrix(report, colour=False)


def test_survey_specs_twin_udp_probes_over_tcp() -> None:
    udp = survey_specs("authoritative", "example.com.", SurveyTransport.UDP)
    both = survey_specs("authoritative", "example.com.", SurveyTransport.BOTH)
    tcp = survey_specs("authoritative", "example.com.", SurveyTransport.TCP)
    twinned = [name for s in udp for name in
               ((s.name, f"{s.name}_tcp") if s.transport.value == "udp" else (s.name,))]
    assert [s.name for s in both] == twinned
    assert [s.name for s in tcp] == [s.name for s in udp]
    assert {s.transport.value for s in tcp} == {"tcp"}


def test_the_survey_needs_a_zone_or_a_server() -> None:
    from exporter.cli import main

    assert main(["survey"]) == 2


def test_a_server_that_answers_no_probe_is_named_unreachable_on_its_line() -> None:
    # A port nothing listens on: every probe is refused (ICMP, RST). Like the status
    # page and DnsgapTargetUnreachable, the survey says so once, on the server's line.
    async def body() -> SurveyReport:
        fleet = await start_fleet((7, 4), (1, 2), BEHAVIOURS)
        try:
            specs = tuple(s for s in survey_specs("authoritative", ZONE, SurveyTransport.UDP)
                          if s.name in ("soa", "update"))  # fmt: skip
            alive = fleet.servers[0]
            targets = [Target(name="alive", host=alive.host, port=fleet.port, probes=specs,
                              zone=ZONE),
                       Target(name="dead", host="127.0.0.1", port=free_port(), probes=specs,
                              zone=ZONE)]  # fmt: skip
            return await run_survey(ZONE, targets, specs)
        finally:
            for server in fleet.servers:
                await server.close()

    lines = render_matrix(asyncio.run(body()), colour=False).splitlines()
    assert re.fullmatch(r"  \[2\] dead \(127\.0\.0\.1:\d+\), no SOA serial, "
                        r"answers none of its probes \(unreachable\)", lines[2]), lines[:3]
    assert "unreachable" not in lines[1]
