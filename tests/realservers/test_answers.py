"""What each real Debian DNS server answers, as an exact specification.

Every request is sent with dnspython or as raw bytes over a plain socket, and the
first reply (or its absence) is reduced to one short observation:

- an rcode mnemonic (``NOERROR``, ``NOTIMP``, ``BADVERS`` ...), the OPT extension
  folded in; ``+TC`` when the reply is truncated;
- ``drop``: silence until the deadline (the TCP connection stays open);
- ``close`` / ``reset``: the TCP peer closed or reset the connection unanswered;
- ``echo``: our own bytes came back;
- ``mismatch:OPCODE/RCODE`` or ``mismatch:id/RCODE``: a reply whose opcode or ID
  differs from the request's;
- EDNS requests add ``+noOPT`` when the reply carries no OPT record, and the
  unknown-flag request adds ``+flagkept`` when the flag was not cleared
  (RFC 6891 §6.1.4 says clear it).

docs/server-answers.md is this table rendered for operators; regenerate it with
``PYTHONPATH=tests .venv/bin/python -m realservers.test_answers``.
"""

from __future__ import annotations

import dataclasses
import random
import socket
import struct
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dns.edns
import dns.exception
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.update
import pytest

from .launch import BACKENDS, SPECS, ZONE, MissingServerError, RunningServer, launch, stop

#: Deadline for one exchange: expected silence costs exactly this much.
SILENCE_TIMEOUT = 1.5
#: An EDNS option code IANA has not assigned (outside the 65001-65534 local range).
UNKNOWN_EDNS_OPTION = 100
#: A bit of the OPT "Z" field no RFC has assigned (DO is 0x8000).
UNKNOWN_EDNS_FLAG = 0x0080
#: The opcodes nobody should implement any more (IQUERY, STATUS) or ever did.
UNASSIGNED_OPCODES = (1, 2, 3, *range(7, 16))
#: DSO message (RFC 8490 §5.4): opcode 6, counts zero, TLV type 1 (Keepalive, §7.1)
#: with inactivity timeout and keepalive interval in milliseconds.
DSO_KEEPALIVE_TLV = struct.pack("!HHII", 1, 8, 15_000, 15_000)

TRANSPORTS = ("udp", "tcp")


def _random_id() -> int:
    return random.randint(1, 0xFFFF)


def _soa_query(**edns: object) -> bytes:
    query = dns.message.make_query(ZONE, dns.rdatatype.SOA, **edns)  # type: ignore[arg-type]
    return query.to_wire()


def _ixfr() -> bytes:
    # RFC 1995 §3: the client's SOA, with an older serial, in the authority section.
    # RD clear, as dnsgap sends transfers: recursors answer RD=0 differently (kresd).
    query = dns.message.make_query(ZONE, dns.rdatatype.IXFR, flags=0)
    query.authority.append(
        dns.rrset.from_text(
            ZONE, 300, "IN", "SOA", f"ns1.{ZONE} hostmaster.{ZONE} 1 3600 600 86400 300"
        )
    )
    return query.to_wire()


def _axfr() -> bytes:
    return dns.message.make_query(ZONE, dns.rdatatype.AXFR, flags=0).to_wire()


def _update() -> bytes:
    # RFC 2136 §2.4.1 "RRset exists (value independent)" on a name that cannot exist:
    # a server that runs the update answers NXRRSET and changes nothing.
    update = dns.update.UpdateMessage(ZONE)
    update.present(f"absent-{random.getrandbits(48):012x}.{ZONE}", dns.rdatatype.A)
    return update.to_wire()


def _notify() -> bytes:
    # RFC 1996 §3.7: opcode NOTIFY, AA set, the zone's SOA as the question.
    notify = dns.message.make_query(ZONE, dns.rdatatype.SOA, flags=dns.flags.AA)
    notify.set_opcode(dns.opcode.NOTIFY)
    return notify.to_wire()


def _raw(opcode: int, question: bool) -> bytes:
    header = struct.pack("!HHHHHH", _random_id(), opcode << 11, int(question), 0, 0, 0)
    if not question:
        return header
    qname = dns.name.from_text(ZONE).to_wire()
    assert qname is not None
    return header + qname + struct.pack("!HH", dns.rdatatype.SOA, dns.rdataclass.IN)


def _dso_keepalive() -> bytes:
    return struct.pack("!HHHHHH", _random_id(), 6 << 11, 0, 0, 0, 0) + DSO_KEEPALIVE_TLV


#: Every operation: its name in the matrix and how to build the request.
OPERATIONS: dict[str, Callable[[], bytes]] = {
    "soa": _soa_query,
    "edns_v1": lambda: _soa_query(use_edns=1),
    "edns_option": lambda: _soa_query(
        use_edns=0, options=[dns.edns.GenericOption(UNKNOWN_EDNS_OPTION, b"dnsgap")]
    ),
    "edns_flag": lambda: _soa_query(use_edns=0, ednsflags=UNKNOWN_EDNS_FLAG),
    "ixfr": _ixfr,
    "axfr": _axfr,
    "update": _update,
    "notify": _notify,
    **{f"opcode{n}": (lambda n=n: _raw(n, question=True)) for n in UNASSIGNED_OPCODES},
    **{f"opcode{n}_bare": (lambda n=n: _raw(n, question=False)) for n in UNASSIGNED_OPCODES},
    "dso_keepalive": _dso_keepalive,
}


# --- one exchange ------------------------------------------------------------------


def _exchange_udp(wire: bytes, host: str, port: int, timeout: float) -> bytes | str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.send(wire)
        try:
            return sock.recv(65535)
        except TimeoutError:
            return "drop"
        except ConnectionRefusedError:
            return "refused"


def _recv_exactly(sock: socket.socket, size: int) -> bytes | str:
    data = b""
    while len(data) < size:
        try:
            chunk = sock.recv(size - len(data))
        except TimeoutError:
            return "drop"
        except ConnectionResetError:
            return "reset"
        if not chunk:
            return "close"
        data += chunk
    return data


def _exchange_tcp(wire: bytes, host: str, port: int, timeout: float) -> bytes | str:
    with socket.create_connection((host, port), timeout=timeout) as sock:
        try:
            sock.sendall(struct.pack("!H", len(wire)) + wire)
        except (BrokenPipeError, ConnectionResetError):
            return "reset"
        length = _recv_exactly(sock, 2)
        if isinstance(length, str):
            return length
        return _recv_exactly(sock, struct.unpack("!H", length)[0])


def describe(operation: str, request: bytes, reply: bytes | str) -> str:
    """One short observation for a reply (see the module docstring for the vocabulary)."""
    if isinstance(reply, str):
        return reply
    if reply == request:
        return "echo"
    if len(reply) < 12:
        return "malformed"
    reply_id, flags = struct.unpack("!HH", reply[:4])
    request_id, request_flags = struct.unpack("!HH", request[:4])
    if not flags & 0x8000:
        return "noQR"
    message: dns.message.Message | None
    try:
        message = dns.message.from_wire(reply, ignore_trailing=True)
        rcode = dns.rcode.to_text(message.rcode())
    except dns.exception.DNSException:
        message = None
        rcode = dns.rcode.to_text(dns.rcode.Rcode(flags & 0xF))
    opcode = (flags >> 11) & 0xF
    if opcode != (request_flags >> 11) & 0xF:
        return f"mismatch:{dns.opcode.to_text(dns.opcode.Opcode(opcode))}/{rcode}"
    if reply_id != request_id:
        return f"mismatch:id/{rcode}"
    observed = rcode
    if flags & 0x0200:
        observed += "+TC"
    if operation.startswith("edns") and message is not None:
        if message.edns < 0:
            observed += "+noOPT"
        elif operation == "edns_flag" and message.ednsflags & UNKNOWN_EDNS_FLAG:
            observed += "+flagkept"
    return observed


def observe(server: RunningServer, operation: str, transport: str) -> str:
    request = OPERATIONS[operation]()
    send = _exchange_udp if transport == "udp" else _exchange_tcp
    try:
        reply = send(request, server.host, server.port, SILENCE_TIMEOUT)
    except ConnectionRefusedError:
        reply = "refused"
    except ConnectionResetError:
        reply = "reset"
    return describe(operation, request, reply)


# Each server is observed once per session, all operations concurrently: the
# parametrized tests below only look results up. Expected silence costs one deadline
# per batch of workers, so use many; no server here refuses that many connections.
_CACHE: dict[int, dict[tuple[str, str], str]] = {}


def observe_all(server: RunningServer) -> dict[tuple[str, str], str]:
    if server.pid not in _CACHE:
        cells = [(op, transport) for op in OPERATIONS for transport in TRANSPORTS]
        with ThreadPoolExecutor(max_workers=32) as pool:
            results = pool.map(lambda cell: observe(server, *cell), cells)
            _CACHE[server.pid] = dict(zip(cells, results, strict=True))
    return _CACHE[server.pid]


# --- the specification -------------------------------------------------------------


def _every_unassigned_opcode(
    server: str, *, udp: str, tcp: str, bare_udp: str, bare_tcp: str
) -> list[tuple[str, str, str, str]]:
    """The same answer to every unassigned opcode, with a question and header-only."""
    rows = []
    for opcode in UNASSIGNED_OPCODES:
        rows += [
            (server, f"opcode{opcode}", "udp", udp),
            (server, f"opcode{opcode}", "tcp", tcp),
            (server, f"opcode{opcode}_bare", "udp", bare_udp),
            (server, f"opcode{opcode}_bare", "tcp", bare_tcp),
        ]
    return rows


#: (server, operation, transport, observed answer) for every cell of the matrix.
EXPECTED: list[tuple[str, str, str, str]] = [
    # BIND 9.18, allow-transfer/allow-update 127.0.0.1. IXFR over UDP gets the SOA,
    # AXFR over UDP FORMERR (RFC 5936 §4.2: TCP only). The impossible UPDATE prerequisite
    # fails with NXRRSET, proving UPDATE runs. NOTIFY to a primary is acknowledged.
    ("bind_open", "soa", "udp", "NOERROR"),
    ("bind_open", "soa", "tcp", "NOERROR"),
    ("bind_open", "edns_v1", "udp", "BADVERS"),
    ("bind_open", "edns_v1", "tcp", "BADVERS"),
    ("bind_open", "edns_option", "udp", "NOERROR"),
    ("bind_open", "edns_option", "tcp", "NOERROR"),
    ("bind_open", "edns_flag", "udp", "NOERROR"),
    ("bind_open", "edns_flag", "tcp", "NOERROR"),
    ("bind_open", "ixfr", "udp", "NOERROR"),
    ("bind_open", "ixfr", "tcp", "NOERROR"),
    ("bind_open", "axfr", "udp", "FORMERR"),
    ("bind_open", "axfr", "tcp", "NOERROR"),
    ("bind_open", "update", "udp", "NXRRSET"),
    ("bind_open", "update", "tcp", "NXRRSET"),
    ("bind_open", "notify", "udp", "NOERROR"),
    ("bind_open", "notify", "tcp", "NOERROR"),
    ("bind_open", "dso_keepalive", "udp", "NOTIMP"),
    ("bind_open", "dso_keepalive", "tcp", "NOTIMP"),
    *_every_unassigned_opcode(
        "bind_open", udp="NOTIMP", tcp="NOTIMP", bare_udp="NOTIMP", bare_tcp="NOTIMP"
    ),
    # BIND 9.18, allow-transfer/allow-update none: REFUSED. NOTIFY is still
    # acknowledged (NOERROR), then ignored: the zone is no secondary.
    ("bind_closed", "soa", "udp", "NOERROR"),
    ("bind_closed", "soa", "tcp", "NOERROR"),
    ("bind_closed", "edns_v1", "udp", "BADVERS"),
    ("bind_closed", "edns_v1", "tcp", "BADVERS"),
    ("bind_closed", "edns_option", "udp", "NOERROR"),
    ("bind_closed", "edns_option", "tcp", "NOERROR"),
    ("bind_closed", "edns_flag", "udp", "NOERROR"),
    ("bind_closed", "edns_flag", "tcp", "NOERROR"),
    ("bind_closed", "ixfr", "udp", "REFUSED"),
    ("bind_closed", "ixfr", "tcp", "REFUSED"),
    ("bind_closed", "axfr", "udp", "REFUSED"),
    ("bind_closed", "axfr", "tcp", "REFUSED"),
    ("bind_closed", "update", "udp", "REFUSED"),
    ("bind_closed", "update", "tcp", "REFUSED"),
    ("bind_closed", "notify", "udp", "NOERROR"),
    ("bind_closed", "notify", "tcp", "NOERROR"),
    ("bind_closed", "dso_keepalive", "udp", "NOTIMP"),
    ("bind_closed", "dso_keepalive", "tcp", "NOTIMP"),
    *_every_unassigned_opcode(
        "bind_closed", udp="NOTIMP", tcp="NOTIMP", bare_udp="NOTIMP", bare_tcp="NOTIMP"
    ),
    # NSD 4.6 without provide-xfr/allow-notify: transfers and NOTIFY REFUSED (AXFR
    # over UDP NOTIMP), UPDATE not implemented; a header-only request over TCP is reset.
    ("nsd", "soa", "udp", "NOERROR"),
    ("nsd", "soa", "tcp", "NOERROR"),
    ("nsd", "edns_v1", "udp", "BADVERS"),
    ("nsd", "edns_v1", "tcp", "BADVERS"),
    ("nsd", "edns_option", "udp", "NOERROR"),
    ("nsd", "edns_option", "tcp", "NOERROR"),
    ("nsd", "edns_flag", "udp", "NOERROR"),
    ("nsd", "edns_flag", "tcp", "NOERROR"),
    ("nsd", "ixfr", "udp", "REFUSED"),
    ("nsd", "ixfr", "tcp", "REFUSED"),
    ("nsd", "axfr", "udp", "NOTIMP"),
    ("nsd", "axfr", "tcp", "REFUSED"),
    ("nsd", "update", "udp", "NOTIMP"),
    ("nsd", "update", "tcp", "NOTIMP"),
    ("nsd", "notify", "udp", "REFUSED"),
    ("nsd", "notify", "tcp", "REFUSED"),
    ("nsd", "dso_keepalive", "udp", "NOTIMP"),
    ("nsd", "dso_keepalive", "tcp", "NOTIMP"),
    *_every_unassigned_opcode(
        "nsd", udp="NOTIMP", tcp="NOTIMP", bare_udp="NOTIMP", bare_tcp="reset"
    ),
    # Knot DNS 3.2 with no ACL: NOTAUTH to transfers, UPDATE and NOTIFY (Knot's word
    # for "denied"). DSO is dropped over UDP and the TCP connection closed.
    ("knot", "soa", "udp", "NOERROR"),
    ("knot", "soa", "tcp", "NOERROR"),
    ("knot", "edns_v1", "udp", "BADVERS"),
    ("knot", "edns_v1", "tcp", "BADVERS"),
    ("knot", "edns_option", "udp", "NOERROR"),
    ("knot", "edns_option", "tcp", "NOERROR"),
    ("knot", "edns_flag", "udp", "NOERROR"),
    ("knot", "edns_flag", "tcp", "NOERROR"),
    ("knot", "ixfr", "udp", "NOTAUTH"),
    ("knot", "ixfr", "tcp", "NOTAUTH"),
    ("knot", "axfr", "udp", "NOTIMP"),
    ("knot", "axfr", "tcp", "NOTAUTH"),
    ("knot", "update", "udp", "NOTAUTH"),
    ("knot", "update", "tcp", "NOTAUTH"),
    ("knot", "notify", "udp", "NOTAUTH"),
    ("knot", "notify", "tcp", "NOTAUTH"),
    ("knot", "dso_keepalive", "udp", "drop"),
    ("knot", "dso_keepalive", "tcp", "close"),
    *_every_unassigned_opcode(
        "knot", udp="NOTIMP", tcp="NOTIMP", bare_udp="NOTIMP", bare_tcp="NOTIMP"
    ),
    # Unbound 1.17 serving local-data: IXFR FORMERR, AXFR REFUSED, UPDATE NOTIMP.
    ("unbound", "soa", "udp", "NOERROR"),
    ("unbound", "soa", "tcp", "NOERROR"),
    ("unbound", "edns_v1", "udp", "BADVERS"),
    ("unbound", "edns_v1", "tcp", "BADVERS"),
    ("unbound", "edns_option", "udp", "NOERROR"),
    ("unbound", "edns_option", "tcp", "NOERROR"),
    ("unbound", "edns_flag", "udp", "NOERROR"),
    ("unbound", "edns_flag", "tcp", "NOERROR"),
    ("unbound", "ixfr", "udp", "FORMERR"),
    ("unbound", "ixfr", "tcp", "FORMERR"),
    ("unbound", "axfr", "udp", "REFUSED"),
    ("unbound", "axfr", "tcp", "REFUSED"),
    ("unbound", "update", "udp", "NOTIMP"),
    ("unbound", "update", "tcp", "NOTIMP"),
    ("unbound", "notify", "udp", "REFUSED"),
    ("unbound", "notify", "tcp", "REFUSED"),
    ("unbound", "dso_keepalive", "udp", "NOTIMP"),
    ("unbound", "dso_keepalive", "tcp", "NOTIMP"),
    *_every_unassigned_opcode(
        "unbound", udp="NOTIMP", tcp="NOTIMP", bare_udp="NOTIMP", bare_tcp="NOTIMP"
    ),
    # PowerDNS Authoritative 4.7 (bind backend), allow-axfr-ips default
    # 127.0.0.0/8: AXFR works over TCP and gets NOERROR over UDP; IXFR over UDP REFUSED.
    # UPDATE REFUSED (dnsupdate=no). Other opcodes: silence on UDP, close on TCP.
    ("pdns_auth", "soa", "udp", "NOERROR"),
    ("pdns_auth", "soa", "tcp", "NOERROR"),
    ("pdns_auth", "edns_v1", "udp", "BADVERS"),
    ("pdns_auth", "edns_v1", "tcp", "BADVERS"),
    ("pdns_auth", "edns_option", "udp", "NOERROR"),
    ("pdns_auth", "edns_option", "tcp", "NOERROR"),
    ("pdns_auth", "edns_flag", "udp", "NOERROR"),
    ("pdns_auth", "edns_flag", "tcp", "NOERROR"),
    ("pdns_auth", "ixfr", "udp", "REFUSED"),
    ("pdns_auth", "ixfr", "tcp", "NOERROR"),
    ("pdns_auth", "axfr", "udp", "NOERROR"),
    ("pdns_auth", "axfr", "tcp", "NOERROR"),
    ("pdns_auth", "update", "udp", "REFUSED"),
    ("pdns_auth", "update", "tcp", "REFUSED"),
    ("pdns_auth", "notify", "udp", "REFUSED"),
    ("pdns_auth", "notify", "tcp", "REFUSED"),
    ("pdns_auth", "dso_keepalive", "udp", "drop"),
    ("pdns_auth", "dso_keepalive", "tcp", "close"),
    *_every_unassigned_opcode(
        "pdns_auth", udp="drop", tcp="close", bare_udp="drop", bare_tcp="close"
    ),
    # PowerDNS Recursor 4.8 with auth-zones: transfers SERVFAIL; UPDATE,
    # NOTIFY and other opcodes dropped on UDP and closed on TCP, except UPDATE over TCP:
    # a NOTIMP whose opcode is QUERY.
    ("pdns_recursor", "soa", "udp", "NOERROR"),
    ("pdns_recursor", "soa", "tcp", "NOERROR"),
    ("pdns_recursor", "edns_v1", "udp", "BADVERS"),
    ("pdns_recursor", "edns_v1", "tcp", "BADVERS"),
    ("pdns_recursor", "edns_option", "udp", "NOERROR"),
    ("pdns_recursor", "edns_option", "tcp", "NOERROR"),
    ("pdns_recursor", "edns_flag", "udp", "NOERROR"),
    ("pdns_recursor", "edns_flag", "tcp", "NOERROR"),
    ("pdns_recursor", "ixfr", "udp", "SERVFAIL"),
    ("pdns_recursor", "ixfr", "tcp", "SERVFAIL"),
    ("pdns_recursor", "axfr", "udp", "SERVFAIL"),
    ("pdns_recursor", "axfr", "tcp", "SERVFAIL"),
    ("pdns_recursor", "update", "udp", "drop"),
    ("pdns_recursor", "update", "tcp", "mismatch:QUERY/NOTIMP"),
    ("pdns_recursor", "notify", "udp", "drop"),
    ("pdns_recursor", "notify", "tcp", "close"),
    ("pdns_recursor", "dso_keepalive", "udp", "drop"),
    ("pdns_recursor", "dso_keepalive", "tcp", "close"),
    *_every_unassigned_opcode(
        "pdns_recursor", udp="drop", tcp="close", bare_udp="drop", bare_tcp="close"
    ),
    # Knot Resolver 5.6 stubbing gap.test to NSD: ignores the EDNS version
    # (NOERROR, no BADVERS); transfers (RD clear) REFUSED; non-QUERY opcodes REFUSED with a
    # question, SERVFAIL without; DSO dropped.
    ("kresd", "soa", "udp", "NOERROR"),
    ("kresd", "soa", "tcp", "NOERROR"),
    ("kresd", "edns_v1", "udp", "NOERROR"),
    ("kresd", "edns_v1", "tcp", "NOERROR"),
    ("kresd", "edns_option", "udp", "NOERROR"),
    ("kresd", "edns_option", "tcp", "NOERROR"),
    ("kresd", "edns_flag", "udp", "NOERROR"),
    ("kresd", "edns_flag", "tcp", "NOERROR"),
    ("kresd", "ixfr", "udp", "REFUSED"),
    ("kresd", "ixfr", "tcp", "REFUSED"),
    ("kresd", "axfr", "udp", "REFUSED"),
    ("kresd", "axfr", "tcp", "REFUSED"),
    ("kresd", "update", "udp", "REFUSED"),
    ("kresd", "update", "tcp", "REFUSED"),
    ("kresd", "notify", "udp", "REFUSED"),
    ("kresd", "notify", "tcp", "REFUSED"),
    ("kresd", "dso_keepalive", "udp", "drop"),
    ("kresd", "dso_keepalive", "tcp", "drop"),
    *_every_unassigned_opcode(
        "kresd", udp="REFUSED", tcp="REFUSED", bare_udp="SERVFAIL", bare_tcp="SERVFAIL"
    ),
    # dnsdist 1.7 in front of NSD: answers like NSD, except that it answers a
    # header-only request over TCP with NOTIMP itself where NSD resets.
    ("dnsdist", "soa", "udp", "NOERROR"),
    ("dnsdist", "soa", "tcp", "NOERROR"),
    ("dnsdist", "edns_v1", "udp", "BADVERS"),
    ("dnsdist", "edns_v1", "tcp", "BADVERS"),
    ("dnsdist", "edns_option", "udp", "NOERROR"),
    ("dnsdist", "edns_option", "tcp", "NOERROR"),
    ("dnsdist", "edns_flag", "udp", "NOERROR"),
    ("dnsdist", "edns_flag", "tcp", "NOERROR"),
    ("dnsdist", "ixfr", "udp", "REFUSED"),
    ("dnsdist", "ixfr", "tcp", "REFUSED"),
    ("dnsdist", "axfr", "udp", "NOTIMP"),
    ("dnsdist", "axfr", "tcp", "REFUSED"),
    ("dnsdist", "update", "udp", "NOTIMP"),
    ("dnsdist", "update", "tcp", "NOTIMP"),
    ("dnsdist", "notify", "udp", "REFUSED"),
    ("dnsdist", "notify", "tcp", "REFUSED"),
    ("dnsdist", "dso_keepalive", "udp", "NOTIMP"),
    ("dnsdist", "dso_keepalive", "tcp", "NOTIMP"),
    *_every_unassigned_opcode(
        "dnsdist", udp="NOTIMP", tcp="NOTIMP", bare_udp="NOTIMP", bare_tcp="NOTIMP"
    ),
    # dnsmasq 2.90 in auth mode: ignores the EDNS version; drops AXFR, UPDATE,
    # NOTIFY, DSO and other opcodes over UDP and answers them REFUSED over TCP.
    ("dnsmasq", "soa", "udp", "NOERROR"),
    ("dnsmasq", "soa", "tcp", "NOERROR"),
    ("dnsmasq", "edns_v1", "udp", "NOERROR"),
    ("dnsmasq", "edns_v1", "tcp", "NOERROR"),
    ("dnsmasq", "edns_option", "udp", "NOERROR"),
    ("dnsmasq", "edns_option", "tcp", "NOERROR"),
    ("dnsmasq", "edns_flag", "udp", "NOERROR"),
    ("dnsmasq", "edns_flag", "tcp", "NOERROR"),
    ("dnsmasq", "ixfr", "udp", "NOERROR"),
    ("dnsmasq", "ixfr", "tcp", "NOERROR"),
    ("dnsmasq", "axfr", "udp", "drop"),
    ("dnsmasq", "axfr", "tcp", "NOERROR"),
    ("dnsmasq", "update", "udp", "drop"),
    ("dnsmasq", "update", "tcp", "REFUSED"),
    ("dnsmasq", "notify", "udp", "drop"),
    ("dnsmasq", "notify", "tcp", "REFUSED"),
    ("dnsmasq", "dso_keepalive", "udp", "drop"),
    ("dnsmasq", "dso_keepalive", "tcp", "REFUSED"),
    *_every_unassigned_opcode(
        "dnsmasq", udp="drop", tcp="REFUSED", bare_udp="drop", bare_tcp="REFUSED"
    ),
]


@pytest.mark.parametrize(("server", "operation", "transport", "expected"), EXPECTED)
def test_server_answers(
    server: str, operation: str, transport: str, expected: str, request: pytest.FixtureRequest
) -> None:
    running: RunningServer = request.getfixturevalue(server)
    assert observe_all(running)[(operation, transport)] == expected


def test_bind_open_update_with_failed_prerequisite_changes_nothing(
    bind_open: RunningServer,
) -> None:
    # RFC 2136 §3.2: prerequisites are checked before anything is touched, so the
    # probe's UPDATE (answered NXRRSET above) must leave the zone's serial alone.
    def serial() -> int:
        query = dns.message.make_query(ZONE, dns.rdatatype.SOA)
        reply = dns.query.tcp(query, bind_open.host, port=bind_open.port, timeout=2)
        return int(reply.answer[0][0].serial)

    before = serial()
    for transport in TRANSPORTS:
        assert observe(bind_open, "update", transport) == "NXRRSET"
    assert serial() == before


def test_missing_binary_is_reported_with_its_debian_package(tmp_path: Path) -> None:
    spec = SPECS["nsd"]
    SPECS["nsd-missing"] = dataclasses.replace(spec, name="nsd-missing", binary="nsd-absent")
    try:
        with pytest.raises(MissingServerError, match="install Debian package nsd"):
            launch("nsd-missing", tmp_path)
    finally:
        del SPECS["nsd-missing"]


# --- the operators' matrix ----------------------------------------------------------


def _observe_every_server() -> dict[str, dict[tuple[str, str], str]]:
    base = Path(tempfile.mkdtemp(prefix="dnsgap-answers-"))
    started: dict[str, RunningServer] = {}
    try:
        for name in SPECS:
            backend_name = BACKENDS.get(name)
            backend = None
            if backend_name:
                backend = started.get(backend_name) or launch(backend_name, base / backend_name)
                started[backend_name] = backend
            if name not in started:
                started[name] = launch(name, base / name, backend)
        return {name: observe_all(started[name]) for name in SPECS}
    finally:
        for server in started.values():
            stop(server.process)


if __name__ == "__main__":
    for name, cells in _observe_every_server().items():
        for (operation, transport), answer in cells.items():
            sys.stdout.write(f"{name}\t{operation}\t{transport}\t{answer}\n")
