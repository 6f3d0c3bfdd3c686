"""Zone targets at run time: find a zone's name servers, probe each address as its
own target, keep the set fresh, and read every address's SOA serial.

The lookups (:func:`discover`, :func:`read_serial`) are the I/O edge; naming,
capping, diffing and refresh timing are pure functions; :class:`ZoneWatcher`
runs the loops and tells the runtime when a zone's set changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

import dns.asyncquery
import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdatatype

from exporter.config import DiscoverySettings, Target, Transport, ZoneTarget
from exporter.metrics import MetricsState
from exporter.sharding import Shard

log = logging.getLogger(__name__)

#: The pseudo probe name that decides which replica reads a zone's serials.
SERIAL_PROBE = "zone_soa_serial"
#: Parent server addresses asked for the delegation before giving up: a TLD has a
#: dozen servers, and a refresh must not wait a timeout for each.
PARENT_ATTEMPTS = 3


class DiscoveryError(Exception):
    """The zone's NS set could not be looked up (the last good set stays)."""


@dataclass(frozen=True, slots=True, order=True)
class ZoneServer:
    """One address of one name server of a zone."""

    ns_name: str  # without the trailing dot
    address: str


@dataclass(frozen=True, slots=True)
class Discovery:
    """The result of one lookup of a zone's servers."""

    servers: tuple[ZoneServer, ...]
    #: TTL of the NS RRset, seconds (when to look again).
    ttl: float
    #: NS names only the parent's delegation lists / only the zone itself lists.
    parent_only: tuple[str, ...] = ()
    child_only: tuple[str, ...] = ()
    #: NS names without any A or AAAA record.
    unresolved: tuple[str, ...] = ()
    #: Addresses left out by ``max_addresses``.
    dropped: int = 0
    #: Why the parent's delegation could not be read (None: read, or not asked).
    parent_error: str | None = None


# -- pure ------------------------------------------------------------------------------


def plain(name: str) -> str:
    """A domain name for labels: no trailing dot (the root stays ``.``)."""
    return name.rstrip(".") or "."


def server_target_name(zone_target: str, server: ZoneServer) -> str:
    """``ZONE/NS-NAME/ADDRESS``: readable, stable across restarts, and unique even when
    two zones share a name server (hosting providers do); bounded by DNS name lengths."""
    return f"{zone_target}/{server.ns_name}/{server.address}"


def cap(servers: Iterable[ZoneServer], limit: int) -> tuple[tuple[ZoneServer, ...], int]:
    """The first ``limit`` servers in a stable order, and how many were left out.
    Sorting first keeps the same addresses probed from one lookup to the next."""
    ordered = sorted(set(servers))
    return tuple(ordered[:limit]), max(0, len(ordered) - limit)


def refresh_delay(ttl: float, settings: DiscoverySettings) -> float:
    """Look again when the NS RRset expires, within the configured bounds."""
    return min(max(ttl, settings.refresh_min), settings.refresh_max)


def diff(old: Sequence[ZoneServer], new: Sequence[ZoneServer]
         ) -> tuple[list[ZoneServer], list[ZoneServer]]:  # fmt: skip
    """(added, removed), each sorted."""
    before, after = set(old), set(new)
    return sorted(after - before), sorted(before - after)


def expand(zone_target: ZoneTarget, servers: Iterable[ZoneServer]) -> tuple[Target, ...]:
    """One :class:`Target` per discovered address, probed on the configured port."""
    all_tls = bool(zone_target.probes) and all(
        spec.transport is Transport.TLS for spec in zone_target.probes
    )
    out = []
    for server in servers:
        tls = zone_target.tls
        if all_tls and tls.server_name is None:
            # A name server's certificate names the server, not its address.
            tls = dataclasses.replace(tls, server_name=server.ns_name)
        out.append(Target(
            name=server_target_name(zone_target.name, server), host=server.address,
            port=zone_target.discovery.port, probes=zone_target.probes,
            zone=zone_target.zone, tls=tls, labels=zone_target.labels,
            survey=zone_target.survey, ns_name=server.ns_name, role=zone_target.role,
        ))  # fmt: skip
    return tuple(out)


# -- lookups (the I/O edge) ------------------------------------------------------------


async def make_resolver(settings: DiscoverySettings) -> dns.asyncresolver.Resolver:
    """The configured resolver (system: /etc/resolv.conf), without a cache of its own:
    every refresh must see what the resolver says now."""
    if settings.resolver is None:
        resolver = dns.asyncresolver.Resolver()
    else:
        host, port = settings.resolver
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [await _address_of(host)]
        resolver.port = port
    resolver.cache = None
    resolver.lifetime = settings.timeout
    resolver.timeout = settings.timeout
    return resolver


async def _address_of(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except OSError as exc:
        raise DiscoveryError(f"resolver {host!r}: {exc}") from None
    return str(infos[0][4][0])


def _ns_names(rrsets: Iterable[dns.rrset.RRset], zone: dns.name.Name) -> set[str]:
    return {plain(rdata.target.to_text()) for rrset in rrsets
            if rrset.rdtype == dns.rdatatype.NS and rrset.name == zone
            for rdata in rrset}  # fmt: skip


async def _addresses(resolver: dns.asyncresolver.Resolver, name: str) -> list[str]:
    found: list[str] = []
    for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        try:
            answer = await resolver.resolve(name, rdtype, raise_on_no_answer=False)
        except dns.exception.DNSException:  # this name stays unresolved, the rest goes on
            continue
        if answer.rrset is not None:
            found.extend(rdata.address for rdata in answer.rrset)
    return found


async def _parent_ns(resolver: dns.asyncresolver.Resolver, zone: dns.name.Name,
                     settings: DiscoverySettings) -> set[str]:  # fmt: skip
    """The NS names of the parent zone's delegation, asked of the parent's servers
    without recursion (a resolver would answer with the child's own set)."""
    parent = await dns.asyncresolver.zone_for_name(zone.parent(), resolver=resolver)
    answer = await resolver.resolve(parent, dns.rdatatype.NS)
    query = dns.message.make_query(zone, dns.rdatatype.NS)
    query.flags &= ~dns.flags.RD
    tried = 0
    for ns in sorted(plain(r.target.to_text()) for r in answer):
        for address in await _addresses(resolver, ns):
            if tried == PARENT_ATTEMPTS:
                break
            tried += 1
            with contextlib.suppress(OSError, dns.exception.DNSException):
                reply, _ = await dns.asyncquery.udp_with_fallback(
                    query, address, timeout=settings.timeout, port=settings.port)
                names = _ns_names([*reply.authority, *reply.answer], zone)
                if names:
                    return names
    raise DiscoveryError(f"no server of the parent zone {plain(parent.to_text())} "
                         f"answered with a delegation for {plain(zone.to_text())}")  # fmt: skip


async def discover(zone_text: str, settings: DiscoverySettings) -> Discovery:
    """Look up a zone's NS set (and the parent's delegation) and every NS name's
    addresses through the configured resolver. Raises :class:`DiscoveryError`."""
    zone = dns.name.from_text(zone_text)
    resolver = await make_resolver(settings)
    try:
        answer = await resolver.resolve(zone, dns.rdatatype.NS)
    except dns.exception.DNSException as exc:
        raise DiscoveryError(f"NS lookup for {plain(zone_text)}: {exc}") from None
    assert answer.rrset is not None  # resolve() raised NoAnswer otherwise
    child = _ns_names([answer.rrset], zone)
    parent: set[str] = set()
    parent_error = None
    if settings.parent and zone != dns.name.root:
        try:
            parent = await _parent_ns(resolver, zone, settings)
        except (DiscoveryError, dns.exception.DNSException) as exc:
            # The zone's own set is enough to probe; the delegation check is a bonus.
            parent_error = str(exc)
    names = sorted(child | parent)
    found = await asyncio.gather(*(_addresses(resolver, name) for name in names))
    servers = [ZoneServer(name, address) for name, addresses in zip(names, found, strict=True)
               for address in addresses]  # fmt: skip
    kept, dropped = cap(servers, settings.max_addresses)
    return Discovery(
        servers=kept, ttl=float(answer.rrset.ttl),
        parent_only=tuple(sorted(parent - child)) if parent else (),
        child_only=tuple(sorted(child - parent)) if parent else (),
        unresolved=tuple(n for n, a in zip(names, found, strict=True) if not a),
        dropped=dropped, parent_error=parent_error,
    )  # fmt: skip


async def read_serial(zone: str, address: str, port: int, timeout: float) -> int | None:
    """The SOA serial one server answers for the zone (None: no usable answer)."""
    query = dns.message.make_query(zone, dns.rdatatype.SOA)
    query.flags &= ~dns.flags.RD
    try:
        reply, _ = await dns.asyncquery.udp_with_fallback(query, address, timeout=timeout,
                                                          port=port)  # fmt: skip
    except (OSError, dns.exception.DNSException):
        return None
    name = dns.name.from_text(zone)
    for rrset in reply.answer:
        if rrset.rdtype == dns.rdatatype.SOA and rrset.name == name:
            return int(rrset[0].serial)
    return None


# -- the loops -------------------------------------------------------------------------


def _same_lookup(old: ZoneTarget, new: ZoneTarget) -> bool:
    """Whether a changed zone target would still find the same servers."""
    a, b = old.discovery, new.discovery
    return (old.zone, a.resolver, a.parent, a.max_addresses) == (
        new.zone, b.resolver, b.parent, b.max_addresses)

Discover = Callable[[str, DiscoverySettings], Awaitable[Discovery]]


@dataclass(slots=True)
class _Zone:
    spec: ZoneTarget
    servers: tuple[ZoneServer, ...] = ()
    discovered: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    #: Its loops were cancelled (zone removed or replaced, or shutdown). They check it
    #: too: on Python 3.11 a lookup can swallow the cancellation (asyncio.wait_for
    #: inside dnspython, when the reply and the cancel arrive together), and the loop
    #: would go on, adopting servers for a zone that is gone and never letting stop()
    #: return.
    stopped: bool = False


class ZoneWatcher:
    """Keeps every zone target's servers fresh. ``on_change`` runs (on the loop) when a
    zone's set of addresses changed, so the runtime re-expands its targets."""

    def __init__(self, state: MetricsState, on_change: Callable[[], None],
                 shard: Shard = Shard(0, 1), discover_fn: Discover = discover) -> None:  # fmt: skip
        self.state = state
        self.on_change = on_change
        self.shard = shard
        self.discover_fn = discover_fn
        self._zones: dict[str, _Zone] = {}
        self._running = False

    def apply(self, zones: Iterable[ZoneTarget]) -> None:
        """Adopt the configured zone targets: an unchanged one keeps its servers and its
        loops; a changed or new one starts from scratch; a removed one stops."""
        wanted = {z.name: z for z in zones}
        for name in [n for n in self._zones if n not in wanted]:
            self._cancel(self._zones.pop(name))
        for name, spec in wanted.items():
            current = self._zones.get(name)
            if current is not None and current.spec == spec:
                continue
            if current is not None:
                self._cancel(current)
            entry = _Zone(spec)
            if current is not None and _same_lookup(current.spec, spec):
                # Other probes or ports, same servers: keep probing them meanwhile.
                entry.servers, entry.discovered = current.servers, current.discovered
            self._zones[name] = entry
            if self._running:
                self._launch(entry)

    def targets(self) -> tuple[Target, ...]:
        """The discovered servers of every zone, as targets (empty until found)."""
        return tuple(t for z in self._zones.values() for t in expand(z.spec, z.servers))

    def start(self) -> None:
        self._running = True
        for entry in self._zones.values():
            self._launch(entry)

    async def stop(self) -> None:
        self._running = False
        tasks = [t for z in self._zones.values() for t in z.tasks]
        for entry in self._zones.values():
            self._cancel(entry)
        await asyncio.gather(*tasks, return_exceptions=True)

    def _launch(self, entry: _Zone) -> None:
        loop = asyncio.get_running_loop()
        entry.tasks = [loop.create_task(self._refresh_loop(entry)),
                       loop.create_task(self._serial_loop(entry))]  # fmt: skip

    @staticmethod
    def _cancel(entry: _Zone) -> None:
        entry.stopped = True
        for task in entry.tasks:
            task.cancel()
        entry.tasks = []

    async def _refresh_loop(self, entry: _Zone) -> None:
        spec = entry.spec
        zone = plain(spec.zone)
        while not entry.stopped:
            try:
                found = await self.discover_fn(spec.zone, spec.discovery)
            except (DiscoveryError, dns.exception.DNSException, OSError) as exc:
                log.warning("zone %s: name server lookup failed, keeping the last good set "
                            "(%d addresses): %s", zone, len(entry.servers), exc)  # fmt: skip
                self.state.record_zone_discovery(zone, ok=False)
                delay = spec.discovery.refresh_min
            except Exception:  # a bug must cost one lookup, never the zone's refreshes
                log.exception("zone %s: name server lookup failed unexpectedly", zone)
                self.state.record_zone_discovery(zone, ok=False)
                delay = spec.discovery.refresh_min
            else:
                if entry.stopped:
                    return
                self._adopt(entry, found)
                delay = refresh_delay(found.ttl, spec.discovery)
            await asyncio.sleep(delay)

    def _adopt(self, entry: _Zone, found: Discovery) -> None:
        zone = plain(entry.spec.zone)
        added, removed = diff(entry.servers, found.servers)
        for server in added:
            log.info("zone %s: probing %s (%s)", zone, server.address, server.ns_name)
        for server in removed:
            log.info("zone %s: no longer probing %s (%s)", zone, server.address, server.ns_name)
        if found.parent_only or found.child_only:
            log.warning("zone %s: the parent's delegation and the zone's NS set differ "
                        "(only in the parent: %s; only in the zone: %s)", zone,
                        ", ".join(found.parent_only) or "none",
                        ", ".join(found.child_only) or "none")  # fmt: skip
        if found.parent_error:
            log.warning("zone %s: parent delegation not checked: %s", zone, found.parent_error)
        if found.unresolved:
            log.warning("zone %s: NS names without addresses: %s", zone,
                        ", ".join(found.unresolved))  # fmt: skip
        if found.dropped:
            log.warning("zone %s: %d addresses left out by max_addresses=%d", zone,
                        found.dropped, entry.spec.discovery.max_addresses)  # fmt: skip
        entry.servers = found.servers
        entry.discovered = True
        self.state.record_zone_discovery(zone, ok=True, addresses=len(found.servers),
                                         added=len(added), removed=len(removed))  # fmt: skip
        if added or removed:
            self.on_change()

    async def _serial_loop(self, entry: _Zone) -> None:
        spec = entry.spec
        settings = spec.discovery
        while not entry.stopped:
            # One replica reads a zone's serials: "behind" needs all of them at once.
            if entry.discovered and self.shard.owns(spec.name, SERIAL_PROBE):
                servers = entry.servers
                serials = await asyncio.gather(*(
                    read_serial(spec.zone, s.address, settings.port, settings.timeout)
                    for s in servers), return_exceptions=True)  # fmt: skip
                if entry.stopped:
                    return
                # An address dropped while we read (entry.servers changed) has lost
                # its series already: its serial must not bring one back.
                current = set(entry.servers)
                by_target = {server_target_name(spec.name, s): serial
                             for s, serial in zip(servers, serials, strict=True)
                             if isinstance(serial, int) and s in current}  # fmt: skip
                self.state.record_zone_serials(plain(spec.zone), by_target)
                await asyncio.sleep(settings.serial_interval)
            else:
                await asyncio.sleep(min(1.0, settings.serial_interval))
