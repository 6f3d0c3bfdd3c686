"""Zone targets: a zone's name servers are found through a resolver, each address is
probed as its own target, and the set follows the zone's NS records.

The zone is served by reference servers on their own loopback addresses
(127.0.0.2, 127.0.0.3, ...) at one common port, the way name servers share port 53.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import re
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from exporter import doh, dso_client
from exporter.certs import make_self_signed
from exporter.config import DiscoverySettings, parse_config
from exporter.metrics import MetricsState
from exporter.runtime import Exporter
from exporter.zones import (
    Discovery,
    DiscoveryError,
    ZoneServer,
    ZoneWatcher,
    cap,
    diff,
    discover,
    plain,
    refresh_delay,
    server_target_name,
)
from tests.h2server import H2Server
from tests.zone_fleet import ADDRESSES, ZONE, Fleet, start_fleet


@contextlib.asynccontextmanager
async def running_fleet() -> AsyncIterator[Fleet]:
    """ns1 (serial 7) and ns2 (serial 5) in the NS set; ns3 (serial 7) waiting."""
    running = await start_fleet((7, 5, 7), (1, 2))
    try:
        yield running
    finally:
        for server in running.servers:
            await server.close()


def with_fleet(test: Callable[[Fleet], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test body against a fresh fleet, bounded in time."""

    @functools.wraps(test)
    def run() -> None:
        async def body() -> None:
            async with running_fleet() as fleet:
                await test(fleet)

        asyncio.run(asyncio.wait_for(body(), 120))

    run.__signature__ = inspect.Signature()  # type: ignore[attr-defined]
    return run


def zone_config(fleet: Fleet, extra: str = "") -> str:
    return f"""
targets:
  - zone: {ZONE}
    discover:
      resolver: "{fleet.resolver}"
      port: {fleet.port}
      refresh_min: 200ms
      refresh_max: 500ms
      parent: false
      timeout: 2s
      serial_interval: 200ms{extra}
    probes:
      - {{name: soa, kind: query, qname: "@", qtype: SOA, interval: 1s, timeout: 1s}}
"""


@contextlib.asynccontextmanager
async def zone_exporter(fleet: Fleet, extra: str = "") -> AsyncIterator[Exporter]:
    """An exporter running :func:`zone_config`, stopped on the way out."""
    exporter = Exporter(parse_config(zone_config(fleet, extra), "<test>"))
    exporter.start()
    try:
        yield exporter
    finally:
        await exporter.stop()


async def wait_for(render: Callable[[], str], *patterns: str, seconds: float = 40.0) -> str:
    """The first rendering in which every pattern matches."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        text = render()
        if all(re.search(p, text, re.MULTILINE) for p in patterns):
            return text
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {patterns!r} within {seconds}s in:\n{render()}")


# -- pure ---------------------------------------------------------------------------


def test_a_discovered_target_is_named_zone_ns_name_and_address() -> None:
    server = ZoneServer("ns1.example.com", "192.0.2.53")
    assert server_target_name("example.com", server) == "example.com/ns1.example.com/192.0.2.53"


def test_the_cap_keeps_the_same_addresses_whatever_order_they_came_in() -> None:
    servers = [ZoneServer(f"ns{i}", f"192.0.2.{i}") for i in (5, 1, 4, 2, 3)]
    kept, dropped = cap(servers, 3)
    assert kept == tuple(sorted(servers)[:3])
    assert dropped == 2
    assert cap(reversed(servers), 3) == (kept, 2)


def test_the_refresh_follows_the_ns_ttl_within_the_bounds() -> None:
    settings = DiscoverySettings(refresh_min=60, refresh_max=3600)
    assert refresh_delay(300, settings) == 300
    assert refresh_delay(5, settings) == 60
    assert refresh_delay(172800, settings) == 3600


def test_diff_names_added_and_removed_addresses() -> None:
    a, b, c = (ZoneServer("ns", f"192.0.2.{i}") for i in (1, 2, 3))
    assert diff([a, b], [b, c]) == ([c], [a])


def test_a_zone_target_is_a_zone_with_discover_instead_of_a_server() -> None:
    config = parse_config(
        "targets: [{zone: example.com, discover: true, survey: authoritative},"
        " {name: x, server: 192.0.2.1, probes: [{name: soa, kind: query}]}]",
        "<test>",
    )
    assert [t.name for t in config.targets] == ["x"]
    (zone,) = config.zones
    assert (zone.name, zone.zone, zone.discovery) == ("example.com", "example.com.",
                                                      DiscoverySettings())  # fmt: skip
    assert all(spec.qname != "@" for spec in zone.probes)


# -- through a real resolver path -----------------------------------------------------


@with_fleet
async def test_discovery_finds_every_address_of_the_ns_set(fleet: Fleet) -> None:
    settings = DiscoverySettings(resolver=(ADDRESSES[0], fleet.port), port=fleet.port,
                                 parent=False, timeout=1.0)  # fmt: skip
    found = await discover(ZONE, settings)
    assert found.servers == (ZoneServer("ns1.fleet.test", "127.0.0.2"),
                             ZoneServer("ns2.fleet.test", "127.0.0.3"))  # fmt: skip
    assert found.ttl == 1


@with_fleet
async def test_discovery_of_an_unknown_zone_fails_with_a_reason(fleet: Fleet) -> None:
    settings = DiscoverySettings(resolver=(ADDRESSES[0], fleet.port), parent=False,
                                 timeout=1.0)  # fmt: skip
    with pytest.raises(DiscoveryError, match=r"NS lookup for elsewhere\.test"):
        await discover("elsewhere.test.", settings)


@with_fleet
async def test_each_address_is_probed_and_labelled_with_zone_and_ns_name(fleet: Fleet) -> None:
    async with zone_exporter(fleet) as exporter:
        text = await wait_for(exporter.state.render,
                              r'^dnsgap_probe_responses_total\{target="fleet.test/ns2.fleet.test/'
                              r'127.0.0.3",probe="soa",rcode="NOERROR",cause="none"\} [1-9]')
        assert re.search(
            r'^dnsgap_probe_info\{target="fleet.test/ns1.fleet.test/127.0.0.2",probe="soa",'
            rf'server="127.0.0.2:{fleet.port}",.*zone="fleet.test",ns_name="ns1.fleet.test"',
            text, re.MULTILINE)  # fmt: skip
        assert 'dnsgap_zone_addresses{zone="fleet.test"} 2' in text
        assert 'dnsgap_zone_discovery_success{zone="fleet.test"} 1' in text
        ns1 = 'zone="fleet.test",target="fleet.test/ns1.fleet.test/127.0.0.2"'
        ns2 = 'zone="fleet.test",target="fleet.test/ns2.fleet.test/127.0.0.3"'
        # A round in which both servers answered (under load one may time out).
        text = await wait_for(exporter.state.render,
                              *(re.escape(f"dnsgap_zone_serial_behind{{{n}}}") for n in (ns1, ns2)))
        assert f"dnsgap_zone_soa_serial{{{ns1}}} 7" in text
        assert f"dnsgap_zone_soa_serial{{{ns2}}} 5" in text
        assert f"dnsgap_zone_serial_behind{{{ns1}}} 0" in text
        assert f"dnsgap_zone_serial_behind{{{ns2}}} 2" in text


@with_fleet
async def test_series_follow_the_ns_set_as_it_changes(fleet: Fleet) -> None:
    async with zone_exporter(fleet) as exporter:
        await wait_for(exporter.state.render, r"^dnsgap_probe_last_rcode\{.*127.0.0.3")
        # ns2 leaves the zone's NS set, ns3 joins it.
        await fleet.servers[0].change_rrset(ZONE, "NS", [f"ns1.{ZONE}", f"ns3.{ZONE}"], ttl=1)
        text = await wait_for(exporter.state.render,
                              r"^dnsgap_probe_last_rcode\{.*127.0.0.4.* 0$")
        assert "127.0.0.3" not in text  # every series of the removed address is gone
        assert ('dnsgap_zone_address_changes_total{zone="fleet.test",change="added"} 3'
                in text)  # fmt: skip
        assert ('dnsgap_zone_address_changes_total{zone="fleet.test",change="removed"} 1'
                in text)  # fmt: skip
        assert {t.name for t in exporter.config.targets} == {
            "fleet.test/ns1.fleet.test/127.0.0.2", "fleet.test/ns3.fleet.test/127.0.0.4"}


@with_fleet
async def test_a_removed_address_loses_its_persistent_session_and_every_series(
    fleet: Fleet,
) -> None:
    """Before, a discovered address that left the NS set kept its DSO session (and
    keepalives) open: only a reload closed removed targets' sessions."""
    config = zone_config(fleet).replace(
        '{name: soa, kind: query, qname: "@", qtype: SOA, interval: 1s, timeout: 1s}',
        "{name: ka, kind: dso_keepalive, interval: 1s, timeout: 1s, dso: {persistent: true, "
        "keepalive_interval: 1s, inactivity_timeout: 30s}}")
    gone = f"{plain(ZONE)}/ns2.{plain(ZONE)}/127.0.0.3"
    exporter = Exporter(parse_config(config, "<test>"))
    exporter.start()
    try:
        await wait_for(exporter.state.render, r"^dnsgap_probe_last_rcode\{.*127.0.0.3.* 0$")
        session = dso_client.default_pool.session(gone)
        assert session is not None
        assert len(fleet.servers[1].connections) == 1
        await fleet.servers[0].change_rrset(ZONE, "NS", [f"ns1.{ZONE}", f"ns3.{ZONE}"], ttl=1)
        await wait_for(exporter.state.render, r"^dnsgap_probe_last_rcode\{.*127.0.0.4.* 0$")
        for _ in range(100):
            if not fleet.servers[1].connections:
                break
            await asyncio.sleep(0.02)
        assert not session.alive
        assert dso_client.default_pool.session(gone) is None
        assert not fleet.servers[1].connections
        await asyncio.sleep(1.5)  # keepalives, serial reads: nothing brings it back
        assert "127.0.0.3" not in exporter.state.render()
    finally:
        await exporter.stop()


@with_fleet
async def test_a_removed_address_loses_its_doh_connection(fleet: Fleet) -> None:
    """Before, it stayed pooled for an hour without use."""
    async with contextlib.AsyncExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        crt, key = (str(p) for p in make_self_signed(Path(tmp)))
        # One DoH server per fleet address, all on one port (the zone's probes' port).
        h2 = [await stack.enter_async_context(
            await H2Server.start(crt, key, "answer", host=ADDRESSES[0]))]
        for address in ADDRESSES[1:]:
            h2.append(await stack.enter_async_context(
                await H2Server.start(crt, key, "answer", host=address, port=h2[0].port)))
        config = zone_config(fleet).replace(
            '{name: soa, kind: query, qname: "@", qtype: SOA, interval: 1s, timeout: 1s}',
            f'{{name: soa, kind: query, transport: doh, port: {h2[0].port}, qname: "@", '
            f"interval: 1s, timeout: 1s}}\n    tls: {{verify: false}}")
        exporter = Exporter(parse_config(config, "<test>"))
        exporter.start()
        try:
            await wait_for(lambda: f"{h2[1].requests}", "^[1-9]")
            await fleet.servers[0].change_rrset(ZONE, "NS", [f"ns1.{ZONE}", f"ns3.{ZONE}"],
                                                ttl=1)  # fmt: skip
            await wait_for(lambda: f"{h2[2].requests} {h2[1].open_connections}", "^[1-9]+ 0$")
            assert doh.pool().open_connections == 2
            await asyncio.sleep(1.5)
            assert (h2[1].connections, h2[1].open_connections) == (1, 0)
            assert "127.0.0.3" not in exporter.state.render()
        finally:
            await exporter.stop()


@with_fleet
async def test_a_failed_lookup_keeps_the_last_good_set(fleet: Fleet) -> None:
    async with zone_exporter(fleet) as exporter:
        await wait_for(exporter.state.render, r'^dnsgap_zone_addresses\{zone="fleet.test"\} 2')
        await fleet.servers[0].close()  # the resolver goes away
        text = await wait_for(exporter.state.render,
                              r'^dnsgap_zone_discovery_success\{zone="fleet.test"\} 0')
        assert 'dnsgap_zone_addresses{zone="fleet.test"} 2' in text
        assert len(exporter.config.targets) == 2


@with_fleet
async def test_each_replica_probes_its_share_of_the_discovered_servers(fleet: Fleet) -> None:
    from exporter.sharding import Shard

    config = parse_config(zone_config(fleet), "<test>")
    replicas = [Exporter(config, shard=Shard(i, 2)) for i in range(2)]
    for replica in replicas:
        replica.start()
    try:
        for replica in replicas:
            await wait_for(replica.state.render, r'^dnsgap_zone_addresses\{zone="fleet.test"\} 2')
        owned = [{t for t, _ in r.state.pairs} for r in replicas]
        assert owned[0].isdisjoint(owned[1])
        assert owned[0] | owned[1] == {t.name for t in replicas[0].config.targets}
        # One replica reads the zone's serials: "behind" needs all of them at once.
        await wait_for(lambda: "".join(r.state.render() for r in replicas),
                       r"^dnsgap_zone_serial_behind\{")
        await asyncio.sleep(0.5)
        readers = [r for r in replicas if "dnsgap_zone_soa_serial{" in r.state.render()]
        assert len(readers) == 1
    finally:
        for replica in replicas:
            await replica.stop()


def test_stop_returns_even_when_a_lookup_swallowed_its_cancellation() -> None:
    """Python 3.11's asyncio.wait_for (inside dnspython) can swallow a cancellation
    whose reply arrives at the same moment; the lookup then returns normally. Before,
    the refresh loop went on (adopting servers for a stopped watcher) and stop()
    never returned: test_a_zone_target_added_by_a_reload_is_discovered hung in
    four runs of ten here."""
    changes: list[int] = []
    lookups: list[int] = []

    async def swallowing(zone: str, settings: DiscoverySettings) -> Discovery:
        if not lookups:  # the first lookup swallows the cancellation
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)
        lookups.append(1)
        return Discovery(servers=(ZoneServer("ns1.fleet.test", "127.0.0.2"),), ttl=1.0)

    async def body() -> None:
        config = parse_config(zone_config(Fleet(53, [])), "<test>")
        watcher = ZoneWatcher(MetricsState(), lambda: changes.append(1),
                              discover_fn=swallowing)  # fmt: skip
        watcher.apply(config.zones)
        watcher.start()
        await asyncio.sleep(0.05)
        await asyncio.wait_for(watcher.stop(), 2)

    asyncio.run(body())
    assert changes == []


def test_discovery_result_keeps_what_differs_between_parent_and_child() -> None:
    found = Discovery(servers=(), ttl=1, parent_only=("ns9.example",))
    assert found.parent_only == ("ns9.example",)


@with_fleet
async def test_max_addresses_caps_the_probed_set_in_a_stable_order(fleet: Fleet) -> None:
    async with zone_exporter(fleet, "\n      max_addresses: 1") as exporter:
        await wait_for(exporter.state.render, r'^dnsgap_zone_addresses\{zone="fleet.test"\} 1')
        assert [t.name for t in exporter.config.targets] == [
            "fleet.test/ns1.fleet.test/127.0.0.2"]


@with_fleet
async def test_a_zone_target_added_by_a_reload_is_discovered(fleet: Fleet) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dnsgap.yml"
        path.write_text("targets: []\n", encoding="utf-8")
        exporter = Exporter(parse_config("targets: []", str(path)), str(path))
        exporter.start()
        try:
            path.write_text(zone_config(fleet), encoding="utf-8")
            result = await exporter.reload()
            assert result.ok, result.message
            await wait_for(exporter.state.render, r"^dnsgap_probe_last_rcode\{.*127.0.0.3.* 0$")
            assert len(exporter.config.targets) == 2
            # Another probe set for the same zone keeps probing the same servers.
            path.write_text(zone_config(fleet).replace("name: soa", "name: soa2"),
                            encoding="utf-8")  # fmt: skip
            assert (await exporter.reload()).ok
            assert {s for _, s in exporter.state.pairs} == {"soa2"}
            assert len(exporter.config.targets) == 2
        finally:
            await exporter.stop()


def test_an_ns_name_with_an_aaaa_record_is_probed_over_ipv6_too() -> None:
    async def body() -> None:
        fleet = await start_fleet((7, 7, 7), (1,), ipv6=True)
        settings = DiscoverySettings(resolver=(ADDRESSES[0], fleet.port), port=fleet.port,
                                     parent=False, timeout=2.0)  # fmt: skip
        exporter = Exporter(parse_config(zone_config(fleet), "<test>"))
        try:
            found = await discover(ZONE, settings)
            assert found.servers == (ZoneServer("ns1.fleet.test", "127.0.0.2"),
                                     ZoneServer("ns1.fleet.test", "::1"))  # fmt: skip
            exporter.start()
            text = await wait_for(exporter.state.render,
                                  r'^dnsgap_probe_last_rcode\{target="fleet.test/ns1.fleet.test/'
                                  r'::1",probe="soa"\} 0$')
            assert f'server="[::1]:{fleet.port}"' in text
        finally:
            await exporter.stop()
            for server in fleet.servers:
                await server.close()

    asyncio.run(asyncio.wait_for(body(), 120))
