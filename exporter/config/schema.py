"""What a loaded config is: frozen, typed dataclasses (no YAML in sight).

Everything downstream of the loader (scheduler, probes, metrics, HTTP) reads
these and nothing else.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from exporter.kinds import ProbeKind

DEFAULT_LISTEN = "127.0.0.1:18553"


class Transport(enum.StrEnum):
    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"
    #: DNS over HTTPS, HTTP/2 (RFC 8484).
    DOH = "doh"
    #: DNS over dedicated QUIC connections (RFC 9250).
    DOQ = "doq"


#: Transports that run inside TLS (or QUIC's TLS): they take a target's `tls:`.
ENCRYPTED_TRANSPORTS = frozenset({Transport.TLS, Transport.DOH, Transport.DOQ})

#: Default server port per transport: RFC 7858 §3.1 (853/tcp), RFC 8484 (https,
#: 443), RFC 9250 §4.1.1 (853/udp).
DEFAULT_PORTS = {Transport.UDP: 53, Transport.TCP: 53, Transport.TLS: 853, Transport.DOH: 443,
                 Transport.DOQ: 853}  # fmt: skip


@dataclass(frozen=True, slots=True)
class DohSettings:
    """How a DoH probe asks (RFC 8484 §4.1): POST or GET, and the URI path."""

    method: str = "POST"
    path: str = "/dns-query"


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """DNS over TLS client settings (RFC 7858); verification is on by default."""

    ca_file: str | None = None
    server_name: str | None = None
    cert_file: str | None = None
    key_file: str | None = field(default=None, repr=False)
    verify: bool = True


@dataclass(frozen=True, slots=True)
class EdnsSettings:
    """The OPT record we send (RFC 6891). ``enabled=False`` sends none."""

    enabled: bool = True
    version: int = 0
    payload: int = 1232
    dnssec_ok: bool = False
    #: Extra EDNS header flag bits to set (besides DO): compliance probes set an
    #: unassigned one, which a server must ignore and clear in its reply.
    flags: int = 0
    #: (option code, option data) pairs; unknown codes must be ignored by servers.
    options: tuple[tuple[int, bytes], ...] = ()
    nsid: bool = False


@dataclass(frozen=True, slots=True)
class TsigKey:
    name: str
    algorithm: str
    secret: str = field(repr=False)  # base64; never logged, never a label

    def __str__(self) -> str:
        return f"TsigKey({self.name}, {self.algorithm}, secret=<redacted>)"


@dataclass(frozen=True, slots=True)
class DsoSettings:
    """Knobs of the DSO probe kinds (RFC 8490, RFC 8765)."""

    #: Keepalive TLV we propose (RFC 8490 §7.1), in seconds.
    inactivity_timeout: float = 15.0
    keepalive_interval: float = 15.0
    #: TLV type for ``dso_tlv``: by default an unassigned type, outside the
    #: experimental range 0xF800-0xFBFF that vendors use.
    tlv_type: int = 0xF7FF
    #: SUBSCRIBE question for ``dso_push_subscribe``.
    push_name: str = "."
    push_type: int = 6  # SOA
    push_class: int = 1
    #: How long to wait for PUSH messages after a successful SUBSCRIBE.
    push_wait: float = 0.0
    #: Keep one session per target open across probes (keepalives on the
    #: server-granted interval).
    persistent: bool = False
    #: Send DSO over UDP anyway; the result then says ``dso_over_udp``.
    allow_udp: bool = False
    #: Padding block size for ``dso_padding`` (RFC 8467 style block padding).
    padding_block: int = 128


@dataclass(frozen=True, slots=True)
class FallbackSettings:
    """Traditional query to run when DSO is not available (or AXFR for an IXFR
    answered with NOTIMP)."""

    kind: ProbeKind = ProbeKind.QUERY
    qname: str | None = None  # None: the probe's own name
    qtype: int | None = None


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    """One configured probe; a target runs several."""

    name: str
    kind: ProbeKind
    transport: Transport = Transport.UDP
    #: The server port for this probe; None: the target's. Set for the probes of a
    #: target whose encrypted transports have different default ports.
    port: int | None = None
    interval: float = 60.0
    timeout: float = 5.0
    qname: str = "."
    qtype: int = 6  # SOA
    qclass: int = 1
    #: RD; None is the kind's default: set for ``query`` (as dig, blackbox_exporter and
    #: dns_exporter send a plain query, so a resolver answers it), clear for every
    #: other kind (transfers, UPDATE, NOTIFY, raw opcodes).
    recursion_desired: bool | None = None
    #: Other header bits to set (AA 0x0400, TC 0x0200, RA 0x0080, Z 0x0040, AD 0x0020,
    #: CD 0x0010): genreport's FULL tests set each, `opcodeflg` all of them.
    header_flags: int = 0
    #: ``opcode`` kind: send the question; False sends the header alone (genreport
    #: `opcode`, all four counts zero).
    question: bool = True
    edns: EdnsSettings = EdnsSettings()
    #: Zone for ixfr/axfr/update/notify; ``None`` means the target's zone.
    zone: str | None = None
    #: IXFR: the serial we claim to have (RFC 1995 §3).
    serial: int = 0
    #: ``opcode`` kind: the raw opcode 0-15.
    opcode: int = 15
    #: A truncated UDP reply is retried over TCP (RFC 7766); if False it is
    #: reported as ``truncated``.
    tcp_fallback: bool = True
    #: Transfers read only this much of the first message (or as far as its header,
    #: question and first SOA reach, if more) before classifying and closing.
    max_transfer_bytes: int = 65536
    #: Rcode mnemonics ("NOERROR") and/or cause names ("none") that count as
    #: healthy for ``dnsgap_probe_success``.
    expect: frozenset[str] = frozenset({"none"})
    tsig_key: TsigKey | None = None
    dso: DsoSettings = DsoSettings()
    doh: DohSettings = DohSettings()
    fallback: FallbackSettings | None = None
    #: A NOTIFY (``notify``, or ``opcode`` 4) is only sent when this is True: it makes
    #: secondaries refresh.
    allow_notify: bool = False

    @property
    def sends_notify(self) -> bool:
        """Whether the request is a NOTIFY (RFC 1996): kind notify, or opcode 4 sent raw."""
        return self.kind is ProbeKind.NOTIFY or (
            self.kind is ProbeKind.OPCODE and self.opcode == 4)  # fmt: skip

    @property
    def sends_rd(self) -> bool:
        """Whether the request sets RD (``recursion_desired``, or the kind's default)."""
        if self.recursion_desired is None:
            return self.kind is ProbeKind.QUERY
        return self.recursion_desired


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    host: str
    port: int
    probes: tuple[ProbeSpec, ...]
    zone: str = "."
    tls: TlsSettings = TlsSettings()
    labels: Mapping[str, str] = field(default_factory=dict)
    #: The built-in survey preset the target asked for ("authoritative",
    #: "recursive"), if any; its probes are already in ``probes``.
    survey: str | None = None
    #: For a server found by a zone target: its NS name (no trailing dot).
    ns_name: str | None = None
    #: "authoritative" or "recursive" (the `role:` key, else implied by the survey
    #: preset); the role conformance checks apply only when it is known.
    role: str | None = None


@dataclass(frozen=True, slots=True)
class DiscoverySettings:
    """How a zone target finds its servers (``discover:``)."""

    #: (host, port) of the resolver to ask; None: the system's (resolv.conf).
    resolver: tuple[str, int] | None = None
    #: The port the discovered addresses are probed on.
    port: int = 53
    #: The NS set is looked up again after its TTL, kept within these bounds.
    refresh_min: float = 60.0
    refresh_max: float = 3600.0
    #: At most this many addresses per zone are probed (protects the process).
    max_addresses: int = 16
    #: Also ask the parent zone's servers for the delegation (RFC 1034 §4.2.2:
    #: parent and child NS sets should match; a name only the parent lists is
    #: still sent queries by resolvers).
    parent: bool = True
    timeout: float = 5.0
    #: How often each address's SOA serial is read (dnsgap_zone_soa_serial).
    serial_interval: float = 60.0


@dataclass(frozen=True, slots=True)
class ZoneTarget:
    """A zone whose name servers are found at run time, each address a :class:`Target`."""

    #: Prefix of the discovered targets' names: ``NAME/NS-NAME/ADDRESS``.
    name: str
    zone: str
    discovery: DiscoverySettings
    probes: tuple[ProbeSpec, ...]
    tls: TlsSettings = TlsSettings()
    labels: Mapping[str, str] = field(default_factory=dict)
    survey: str | None = None
    #: A zone's name servers are authoritative for it unless `role:` says otherwise.
    role: str | None = "authoritative"


@dataclass(frozen=True, slots=True)
class ProbeEndpointSettings:
    """``GET /probe`` policy: configured targets only, unless ad-hoc is allowed."""

    allow_adhoc: bool = False
    adhoc_cidrs: tuple[str, ...] = ()
    #: Probes running at once, all clients / one client address. Sizing for one
    #: Prometheus: deploy/prometheus/prometheus-probe.yml.
    max_concurrency: int = 256
    max_per_client: int = 128
    #: Requests waiting for a slot (up to their scrape deadline); beyond: 429.
    max_queued: int = 4096
    max_queued_per_client: int = 1024


@dataclass(frozen=True, slots=True)
class HttpSettings:
    listen: str = DEFAULT_LISTEN
    #: Exporter-toolkit style web config file (TLS, basic auth).
    web_config_file: str | None = None
    probe: ProbeEndpointSettings = ProbeEndpointSettings()


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    #: Probes pending at once, at most; None: sized from the pairs' timeout / interval
    #: (exporter/capacity.py). Over it, runs are refused and counted, never queued.
    max_concurrency: int | None = None
    #: Fraction of the interval over which a probe's first run is spread.
    jitter: float = 1.0
    #: Drop the per-probe duration histogram (fleet scale: fewer series).
    duration_histogram: bool = True
    #: Export the conformance series (dnsgap_conformance_violation and _total);
    #: False at fleet scale leaves them out (the checks still run for --json).
    conformance_series: bool = True


@dataclass(frozen=True, slots=True)
class Config:
    targets: tuple[Target, ...]
    http: HttpSettings = HttpSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    #: Named probe templates (config ``probes:`` section).
    probes: Mapping[str, ProbeSpec] = field(default_factory=dict)
    tsig_keys: Mapping[str, TsigKey] = field(default_factory=dict)
    source: str = "<built-in>"
    #: Zone targets; their servers join ``targets`` at run time (exporter.zones).
    zones: tuple[ZoneTarget, ...] = ()
