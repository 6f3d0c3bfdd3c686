"""A zone whose name servers are real Debian servers (BIND, NSD, Knot), each on its
own loopback address at one port, found through a real resolver (Unbound) and the
parent zone's delegation (NSD): `dnsgap survey` reports each server's own gaps, and
a zone target's series follow the zone's NS set as it changes."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.query
import dns.update
import pytest

from exporter.config import parse_config
from exporter.runtime import Exporter

from .launch import LaunchError, MissingServerError
from .test_answers import EXPECTED
from .test_probe_matrix import IMPLIED, IMPLIED_FOR_DSO
from .zone_servers import ADDRESSES, LIKE, SERIAL, ZONE, ZoneServers, running

pytestmark = pytest.mark.slow

#: Survey probe -> (test_answers.py operation, transport): the survey asks what
#: test_answers.py asked, so the causes follow from what each server answered there.
SAME_AS = {
    "soa": ("soa", "udp"), "soa_tcp": ("soa", "tcp"),
    "edns1": ("edns_v1", "udp"), "edns1_tcp": ("edns_v1", "tcp"),
    "ixfr": ("ixfr", "tcp"), "axfr": ("axfr", "tcp"),
    "update": ("update", "udp"), "update_tcp": ("update", "tcp"),
    "dso_keepalive": ("dso_keepalive", "tcp"),
}  # fmt: skip


def expected_cause(server: str, probe: str) -> str:
    operation, transport = SAME_AS[probe]
    seen = next(row[3] for row in EXPECTED
                if row[:3] == (LIKE[server], operation, transport))  # fmt: skip
    return (IMPLIED_FOR_DSO if "dso" in operation else IMPLIED)[seen][1]


@pytest.fixture(scope="module")
def zone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZoneServers]:
    try:
        with running(tmp_path_factory.mktemp("zone")) as servers:
            yield servers
    except MissingServerError as error:
        pytest.fail(str(error), pytrace=False)
    except LaunchError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="module")
def survey(zone: ZoneServers, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    html = tmp_path_factory.mktemp("html") / "survey.html"
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "survey", ZONE, "--resolver", zone.resolver_address,
         "--port", str(zone.port), "--json", "--html", str(html)],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    plain = subprocess.run(
        [sys.executable, "-m", "exporter", "survey", ZONE, "--resolver", zone.resolver_address,
         "--port", str(zone.port)],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert plain.returncode == 0, plain.stderr
    return {"report": json.loads(result.stdout), "stderr": result.stderr, "html": html,
            "matrix": plain.stdout}  # fmt: skip


def _servers(survey: dict[str, object]) -> dict[str, dict[str, object]]:
    report = survey["report"]
    assert isinstance(report, dict)
    return {s["ns_name"].split(".")[0]: s for s in report["servers"]}


def test_every_name_server_address_is_found_through_the_resolver(
    survey: dict[str, object],
) -> None:
    servers = _servers(survey)
    assert set(servers) == set(ADDRESSES)
    for ns, server in servers.items():
        assert server["address"] == ADDRESSES[ns]
        assert server["target"] == f"survey.test/{ns}.survey.test/{ADDRESSES[ns]}"


def test_the_parent_delegation_that_differs_is_reported(survey: dict[str, object]) -> None:
    stderr = str(survey["stderr"])
    assert "only in the parent's delegation: ns4.survey.test" in stderr
    assert "without addresses: ns4.survey.test" in stderr


def test_the_secondary_one_serial_behind_is_reported(survey: dict[str, object]) -> None:
    servers = _servers(survey)
    assert [(servers[ns]["soa_serial"], servers[ns]["serial_behind"]) for ns in ADDRESSES] == [
        (SERIAL, 0), (SERIAL, 0), (SERIAL - 1, 1)]


@pytest.mark.parametrize("server", list(ADDRESSES))
@pytest.mark.parametrize("probe", list(SAME_AS))
def test_each_server_shows_its_own_gaps(survey: dict[str, object], server: str,
                                        probe: str) -> None:  # fmt: skip
    result = _servers(survey)[server]["probes"]
    assert isinstance(result, dict)
    assert result[probe]["cause"] == expected_cause(server, probe), (server, probe)


def _matrix(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """The printed matrix: the servers' NS names by column, and the cells by probe."""
    legend = re.findall(r"^  \[\d+\] survey\.test/(ns\d)\.", text, re.MULTILINE)
    rows = {}
    for line in text.splitlines():
        cells = line.split()
        if len(cells) == len(legend) + 1 and not line.startswith((" ", "probe")):
            rows[cells[0]] = cells[1:]
    return legend, rows


@pytest.mark.parametrize("probe", list(SAME_AS))
def test_the_printed_matrix_shows_each_servers_gap_in_its_column(
    survey: dict[str, object], probe: str,
) -> None:
    columns, rows = _matrix(str(survey["matrix"]))
    assert sorted(columns) == sorted(ADDRESSES)
    assert "\033[" not in str(survey["matrix"])  # piped: no colour
    for server, shown in zip(columns, rows[probe], strict=True):
        cause = expected_cause(server, probe)
        healthy = cause == "none" or (probe.startswith("edns1") and cause == "bad_version")
        if healthy:  # ok, unless the answer broke a conformance check (docs/conformance.md)
            violations = _servers(survey)[server]["probes"][probe]["violations"]
            assert shown == "ok" or shown in violations, (server, probe, shown)
        else:
            assert shown == cause, (server, probe)


def test_the_status_page_of_the_run_has_every_server(survey: dict[str, object]) -> None:
    page = Path(str(survey["html"])).read_text(encoding="utf-8")
    for ns, address in ADDRESSES.items():
        assert f"survey.test/{ns}.survey.test/{address}" in page


def _change_ns(zone: ZoneServers, add: str | None = None, remove: str | None = None) -> None:
    """A dynamic update to the primary (BIND), which the resolver asks."""
    update = dns.update.UpdateMessage(ZONE)
    if remove:
        update.delete("@", "NS", f"{remove}.{ZONE}")
    if add:
        update.add("@", 1, "NS", f"{add}.{ZONE}")
    reply = dns.query.tcp(update, ADDRESSES["ns1"], port=zone.port, timeout=5)
    assert reply.rcode() == 0, reply


def test_zone_target_series_come_and_go_with_the_ns_set(zone: ZoneServers) -> None:
    config = parse_config(f"""
targets:
  - zone: {ZONE}
    discover:
      resolver: "{zone.resolver_address}"
      port: {zone.port}
      parent: false
      refresh_min: 500ms
      refresh_max: 1s
      timeout: 2s
      serial_interval: 1s
    probes:
      - {{name: update, kind: update, interval: 1s, timeout: 1s}}
""", "<test>")
    knot = f'target="survey.test/ns3.survey.test/{ADDRESSES["ns3"]}"'

    async def body() -> None:
        exporter = Exporter(config)
        exporter.start()
        render = exporter.state.render

        async def wait(what: str, ok: Callable[[str], bool], seconds: float = 60) -> str:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                text = render()
                if ok(text):
                    return text
                await asyncio.sleep(0.1)
            raise AssertionError(f"{what} within {seconds}s:\n{render()}")

        try:
            text = await wait("Knot's NOTAUTH to UPDATE", lambda t: re.search(
                rf'^dnsgap_probe_responses_total\{{{knot},probe="update",rcode="NOTAUTH",'
                r'cause="not_authorized"\} [1-9]', t, re.MULTILINE) is not None)
            assert 'dnsgap_zone_addresses{zone="survey.test"} 3' in text
            _change_ns(zone, remove="ns3")
            text = await wait("ns3 gone", lambda t: knot not in t)
            assert 'dnsgap_zone_addresses{zone="survey.test"} 2' in text
            assert ('dnsgap_zone_address_changes_total{zone="survey.test",change="removed"} 1'
                    in text)  # fmt: skip
            _change_ns(zone, add="ns3")
            text = await wait("ns3 back", lambda t: re.search(
                rf'^dnsgap_probe_last_rcode\{{{knot},probe="update"\}} 9$', t,
                re.MULTILINE) is not None)  # fmt: skip
            assert ('dnsgap_zone_address_changes_total{zone="survey.test",change="added"} 4'
                    in text)  # fmt: skip
        finally:
            _change_ns(zone, add="ns3")  # idempotent: leave the zone as it started
            await exporter.stop()

    asyncio.run(asyncio.wait_for(body(), 240))
