"""A zone served by reference servers on their own loopback addresses (127.0.0.2,
127.0.0.3, ...) at one common port, the way a zone's name servers share port 53."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from exporter import refserver
from exporter.refserver import RunningServer, ServerBehaviour

ZONE = "fleet.test."
ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


def zone_text(serial: int, *ns: int, ipv6: bool = False) -> str:
    names = "".join(f"@ NS ns{i}\n" for i in ns)
    glue = "".join(f"ns{i} A {ADDRESSES[i - 1]}\n" for i in range(1, len(ADDRESSES) + 1))
    if ipv6:
        glue += "ns1 AAAA ::1\n"
    return f"$TTL 1\n@ SOA ns1 hostmaster {serial} 3600 600 86400 1\n{names}{glue}"


@dataclass
class Fleet:
    port: int
    servers: list[RunningServer]

    @property
    def resolver(self) -> str:
        return f"{ADDRESSES[0]}:{self.port}"


async def start_fleet(serials: tuple[int, ...], ns: tuple[int, ...],
                      behaviours: Sequence[ServerBehaviour] = (),
                      ipv6: bool = False) -> Fleet:  # fmt: skip
    """One reference server per serial, each on the next address and all on the port
    the first one got, serving the zone with NS records for the ``ns`` numbers.
    ``ipv6``: ns1 also has the address ::1, where a copy of the first server runs."""
    addresses = (*ADDRESSES, "::1") if ipv6 else ADDRESSES
    serials = (*serials[: len(ADDRESSES)], serials[0]) if ipv6 else serials
    for _ in range(20):
        servers: list[RunningServer] = []
        try:
            port = 0
            for index, (address, serial) in enumerate(zip(addresses, serials, strict=False)):
                base = behaviours[index] if index < len(behaviours) else ServerBehaviour()
                behaviour = dataclasses.replace(
                    base, zone=ZONE, zone_text=zone_text(serial, *ns, ipv6=ipv6))
                server = await refserver.start(behaviour, host=address, port=port)
                port = server.port
                servers.append(server)
            return Fleet(port, servers)
        except OSError:  # the port was taken on a later address: try another one
            for server in servers:
                await server.close()
    raise RuntimeError("no port free on every fleet address")
