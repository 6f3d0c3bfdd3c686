"""Pure request builders and reply readers for the classic (non-DSO) probe kinds.

No sockets here: :func:`build_request` turns a probe into a :class:`WireRequest`
(bytes plus what a reply must match), and :func:`read_reply` turns reply bytes
into an :class:`Outcome`. The transports move bytes; this module judges them.
"""

from __future__ import annotations

import dataclasses
import secrets
import struct
from dataclasses import dataclass

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.tsigkeyring
import dns.update

from exporter.config import EdnsSettings, ProbeSpec, TsigKey
from exporter.kinds import ProbeKind
from exporter.outcome import Outcome, WireEvent

_HEADER = struct.Struct("!HHHHHH")
_QR = 0x8000
_TC = 0x0200
_RA = 0x0080
#: RD (0x0100) as seen in the high byte of the flags, the request's third byte.
_RD_HIGH = 0x01

# RFC 8945 §4.3: TSIG error values carried in a signed reply.
_TSIG_ERRORS = {
    dns.tsig.PeerBadSignature: 16,
    dns.tsig.PeerBadKey: 17,
    dns.tsig.PeerBadTime: 18,
    dns.tsig.PeerBadTruncation: 22,
}


@dataclass(frozen=True, slots=True)
class WireRequest:
    """A request ready to send, with what its reply must match."""

    wire: bytes
    msg_id: int
    opcode: int
    #: (name, rdtype, rdclass) of the question, or None for a header-only request.
    question: tuple[dns.name.Name, int, int] | None
    #: The dnspython message, when one was built (TSIG needs it to verify replies).
    message: dns.message.Message | None = None
    keyring: dict[dns.name.Name, dns.tsig.Key] | None = None

    def with_id(self, msg_id: int) -> WireRequest:
        """The same request under another message ID (only the first two bytes change).

        Signed requests cannot be re-ID'd: the MAC covers the ID.
        """
        if self.keyring is not None:
            raise ValueError("a TSIG-signed request cannot be re-ID'd")
        wire = struct.pack("!H", msg_id) + self.wire[2:]
        return WireRequest(wire, msg_id, self.opcode, self.question)


#: Unpredictable message IDs drawn from the OS generator 1,024 at a time: one
#: getrandom() call per request was a fourteenth of a scheduled probe's CPU.
_ids: list[int] = []


def random_id() -> int:
    """A message ID from 1 to 65535, unpredictable to an off-path spoofer."""
    if not _ids:
        _ids.extend(value for value in struct.unpack("!1024H", secrets.token_bytes(2048))
                    if value)  # fmt: skip
    return _ids.pop()


def _edns_options(edns: EdnsSettings) -> list[dns.edns.Option]:
    options: list[dns.edns.Option] = [
        dns.edns.GenericOption(dns.edns.OptionType.make(code), data)
        for code, data in edns.options
    ]
    if edns.nsid:
        options.append(dns.edns.GenericOption(dns.edns.OptionType.NSID, b""))
    return options


def _apply_edns(message: dns.message.Message, edns: EdnsSettings) -> None:
    if not edns.enabled:
        message.use_edns(False)
        return
    flags = edns.flags | (dns.flags.DO if edns.dnssec_ok else 0)
    message.use_edns(
        edns.version, ednsflags=flags, payload=edns.payload, options=_edns_options(edns)
    )


def _zone_name(spec: ProbeSpec, target_zone: str) -> dns.name.Name:
    return dns.name.from_text(spec.zone or target_zone)


def _random_owner(zone: dns.name.Name) -> dns.name.Name:
    # A 24-hex-digit label: no zone has it, so an "RRset exists" prerequisite
    # on it cannot hold (RFC 2136 §2.4.1) and the UPDATE changes nothing.
    label = "dnsgap-" + secrets.token_hex(12)
    return dns.name.Name((label.encode(), *zone.labels))


def _keyring(key: TsigKey | None) -> dict[dns.name.Name, dns.tsig.Key] | None:
    if key is None:
        return None
    name = dns.name.from_text(key.name)
    return {name: dns.tsig.Key(name, key.secret, key.algorithm)}


def build_message(spec: ProbeSpec, target_zone: str) -> dns.message.Message:
    """The dnspython message a classic probe sends (not for DSO kinds)."""
    kind = spec.kind
    if kind is ProbeKind.QUERY:
        message: dns.message.Message = dns.message.make_query(
            spec.qname, _rdtype(spec.qtype), _rdclass(spec.qclass), use_edns=False
        )
        _set_rd(message, spec.sends_rd)
        message.flags |= spec.header_flags  # genreport's FULL tests: AA, AD, CD, Z ... set
        _apply_edns(message, spec.edns)
        return message
    zone = _zone_name(spec, target_zone)
    if kind is ProbeKind.AXFR:
        message = dns.message.make_query(zone, dns.rdatatype.AXFR, use_edns=False)
        message.flags = 0
        return message
    if kind is ProbeKind.IXFR:
        message = dns.message.make_query(zone, dns.rdatatype.IXFR, use_edns=False)
        message.flags = 0
        # RFC 1995 §3: the client's SOA (with its serial) in the authority section.
        soa = dns.rrset.from_text(
            zone, 0, "IN", "SOA", f". . {spec.serial} 0 0 0 0"
        )
        message.authority.append(soa)
        return message
    if kind is ProbeKind.UPDATE:
        update = dns.update.UpdateMessage(zone)
        owner = _random_owner(zone)
        # Prerequisite only, no update section: even if the prerequisite held, the
        # server would have nothing to change. An answer of NXRRSET shows the opcode
        # is implemented; it does not show we may update, since RFC 2136 checks
        # prerequisites (§3.2) before the requestor's permission (§3.3).
        update.present(owner, dns.rdatatype.TXT)
        return update
    if kind is ProbeKind.NOTIFY:
        message = dns.message.make_query(zone, dns.rdatatype.SOA, use_edns=False)
        message.set_opcode(dns.opcode.NOTIFY)
        message.flags = dns.flags.AA | (dns.opcode.NOTIFY << 11)
        return message
    if kind is ProbeKind.OPCODE:
        message = dns.message.make_query(spec.qname, _rdtype(spec.qtype),
                                         _rdclass(spec.qclass), use_edns=False)
        message.flags = (spec.opcode & 0xF) << 11 | spec.header_flags
        _set_rd(message, spec.sends_rd)
        if not spec.question:
            message.question = []  # genreport `opcode`: the header alone, counts zero
        return message
    raise ValueError(f"{kind} is not a classic DNS probe kind")


def _rdtype(value: int) -> dns.rdatatype.RdataType:
    return dns.rdatatype.RdataType.make(value)


def _rdclass(value: int) -> dns.rdataclass.RdataClass:
    return dns.rdataclass.RdataClass.make(value)


def _set_rd(message: dns.message.Message, rd: bool) -> None:
    if rd:
        message.flags |= dns.flags.RD
    else:
        message.flags &= ~dns.flags.RD


def build_request(spec: ProbeSpec, target_zone: str, msg_id: int | None = None) -> WireRequest:
    """Bytes and match criteria for a classic probe."""
    message = build_message(spec, target_zone)
    message.id = msg_id if msg_id is not None else random_id()
    keyring = _keyring(spec.tsig_key)
    if keyring is not None and spec.tsig_key is not None:
        name = next(iter(keyring))
        message.use_tsig(keyring, keyname=name)
    wire = message.to_wire()
    question = None
    if message.question:
        rrset = message.question[0]
        question = (rrset.name, int(rrset.rdtype), int(rrset.rdclass))
    opcode = (message.flags >> 11) & 0xF
    return WireRequest(wire, message.id, opcode, question, message, keyring)


#: Kinds whose request bytes depend only on (spec, zone): built once, re-ID'd per
#: probe. UPDATE is left out (a fresh random owner each time), and so is anything
#: TSIG-signed (the MAC covers the ID and the time).
_TEMPLATE_KINDS = frozenset({ProbeKind.QUERY, ProbeKind.AXFR, ProbeKind.IXFR,
                             ProbeKind.NOTIFY, ProbeKind.OPCODE})  # fmt: skip
_MAX_TEMPLATES = 65_536
# Keyed by id(spec): hashing a ProbeSpec costs more than building the key saves.
# The value holds the spec itself, so its id cannot be reused while cached.
_templates: dict[tuple[int, str], tuple[ProbeSpec, WireRequest]] = {}


def request_for(spec: ProbeSpec, target_zone: str) -> WireRequest:
    """:func:`build_request` with a fresh random ID, from a pre-built template when
    the bytes cannot differ between runs (only the two ID bytes are patched).

    Building a message with dnspython costs about a third of a probe's CPU; the
    template makes it a dict lookup and a bytes concatenation (bench/README.md).
    """
    if spec.tsig_key is not None or spec.kind not in _TEMPLATE_KINDS:
        return build_request(spec, target_zone)
    key = (id(spec), target_zone)
    cached = _templates.get(key)
    if cached is None or cached[0] is not spec:
        if len(_templates) >= _MAX_TEMPLATES:
            _templates.clear()  # a config churning through specs: start over
        built = build_request(spec, target_zone, msg_id=0)
        # Keep the bytes, not dnspython's Message: tens of objects each, for every
        # pair of a fleet, all long-lived and traversed by every full GC pass.
        template = WireRequest(built.wire, 0, built.opcode, built.question)
        cached = (spec, template)
        _templates[key] = cached
    return cached[1].with_id(random_id())


def header_fields(wire: bytes) -> tuple[int, int, int, int] | None:
    """(id, flags, qdcount, opcode) of a wire message, or None if shorter than a header."""
    if len(wire) < _HEADER.size:
        return None
    msg_id, flags, qdcount, _, _, _ = _HEADER.unpack_from(wire)
    return msg_id, flags, qdcount, (flags >> 11) & 0xF


def is_truncated(wire: bytes) -> bool:
    fields = header_fields(wire)
    return fields is not None and bool(fields[1] & _TC)


def _name_end(wire: bytes, offset: int) -> int | None:
    """Where the (possibly compressed) name at ``offset`` ends; past ``len(wire)``
    when the bytes stop first, None for a label type that is not DNS (RFC 1035 §4.1.4)."""
    while offset < len(wire):
        length = wire[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:  # a pointer ends the name
            return offset + 2
        if length & 0xC0:
            return None
        offset += 1 + length
    return offset + 1


def first_record_end(wire: bytes) -> int | None:
    """The bytes a transfer's first message must have for it to be judged: its header,
    question and first answer record (RFC 5936 §2.2: the zone's SOA).

    ``wire`` may be the first bytes of a longer message; a result past ``len(wire)``
    says how many are needed at least. None when the bytes are not DNS.
    """
    found = _first_record(wire)
    return None if found is None else found[0]


def _first_record(wire: bytes) -> tuple[int, int | None] | None:
    """(end, type) of the first answer record; type None when there is no answer."""
    if len(wire) < _HEADER.size:
        return _HEADER.size, None
    _, _, qdcount, ancount, _, _ = _HEADER.unpack_from(wire)
    offset = _HEADER.size
    for _ in range(qdcount):
        end = _name_end(wire, offset)
        if end is None:
            return None
        offset = end + 4  # QTYPE, QCLASS
        if offset > len(wire):
            return offset, None
    if ancount == 0:
        return offset, None
    end = _name_end(wire, offset)
    if end is None:
        return None
    if end + 10 > len(wire):
        return end + 10, None  # TYPE, CLASS, TTL, RDLENGTH
    rrtype, _, _, rdlength = struct.unpack_from("!HHIH", wire, end)
    return end + 10 + rdlength, rrtype


def read_transfer_head(request: WireRequest, head: bytes, length: int,
                       transport: str) -> Outcome:  # fmt: skip
    """Judge a transfer from the first bytes of a first message longer than the cap.

    ``head`` holds at least the header, question and first answer record (see
    :func:`first_record_end`): the message is judged as if it held only those, and
    that first record must be the zone's SOA (RFC 5936 §2.2, RFC 1995 §4).
    """
    found = _first_record(head)
    size = len(head)
    if found is None or found[0] > size:
        return Outcome(WireEvent.MALFORMED, error=f"first message of {length} bytes: no "
                       "DNS header, question and first record in its first "
                       f"{size} bytes", transport=transport, bytes_received=size)  # fmt: skip
    end, rrtype = found
    msg_id, flags, qdcount, ancount, _, _ = _HEADER.unpack_from(head)
    cut = _HEADER.pack(msg_id, flags, qdcount, min(ancount, 1), 0, 0) + head[_HEADER.size:end]
    # The TSIG record is at the end of the message, past the cap: the head is judged
    # unsigned, and the details say so.
    unsigned = WireRequest(request.wire, request.msg_id, request.opcode, request.question)
    outcome = read_reply(unsigned, cut, transport, first_of_transfer=True)
    details: dict[str, object] = {**outcome.details, "first_message_bytes": length,
                                  "read_bytes": size}  # fmt: skip
    if request.keyring is not None:
        details["tsig"] = "not verified: the TSIG record is past max_transfer_bytes"
    if outcome.replied and rrtype is not None and rrtype != dns.rdatatype.SOA:
        return dataclasses.replace(
            outcome, event=WireEvent.MALFORMED, bytes_received=size, details=details,
            error=f"transfer starts with a {dns.rdatatype.to_text(_rdtype(rrtype))} record, not "
            "the zone's SOA (RFC 5936 §2.2)")  # fmt: skip
    return dataclasses.replace(outcome, bytes_received=size, details=details)


#: What the dnspython half of :func:`read_reply` concluded about a reply:
#: (event, rcode, error, reply opcode, tsig error, details).
_Judgement = tuple[WireEvent, int | None, str | None, int | None, int | None,
                   dict[str, object] | None]  # fmt: skip
_MAX_JUDGEMENTS = 16_384
#: Replies up to this size are cached: the cache holds at most ~16 MiB of keys.
_MAX_CACHED_REPLY = 512
_judgements: dict[tuple[bytes, bytes, bool], _Judgement] = {}


def read_reply(
    request: WireRequest, wire: bytes, transport: str, *, first_of_transfer: bool = False
) -> Outcome:
    """Judge one reply message against the request it answers."""
    fields = header_fields(wire)
    size = len(wire)
    if fields is None:
        return Outcome(WireEvent.MALFORMED, error=f"reply of {size} bytes is shorter than a "
                       "DNS header", transport=transport, bytes_received=size)  # fmt: skip
    msg_id, flags, _, opcode = fields
    raw_rcode = flags & 0xF
    if msg_id != request.msg_id:
        return Outcome(WireEvent.MISMATCHED, raw_rcode, f"reply ID {msg_id} != request ID "
                       f"{request.msg_id}", transport, opcode, bytes_received=size)  # fmt: skip
    if not flags & _QR:
        return Outcome(WireEvent.MISMATCHED, None, "reply has QR=0: the request came back "
                       "unanswered", transport, opcode, bytes_received=size)  # fmt: skip
    if opcode != request.opcode:
        error = f"reply opcode {opcode} != request opcode {request.opcode}"
        return Outcome(WireEvent.MISMATCHED, raw_rcode, error, transport, opcode,
                       bytes_received=size)
    if request.keyring is not None or size > _MAX_CACHED_REPLY:
        # A signed reply's verdict depends on the request MAC and the clock: never reuse
        # it. Large replies (transfers) are rare and would make the cache's memory
        # unbounded in practice (65,536 x 64 KiB), so they are parsed every time.
        judgement = _judge(request, wire, raw_rcode, opcode, first_of_transfer)
    else:
        # A monitored server answers the same question with the same bytes run after
        # run; past the ID (already checked) the verdict is a pure function of the
        # request and reply bytes, so dnspython parses each distinct reply once.
        key = (request.wire[2:], wire[2:], first_of_transfer)
        judgement_or_none = _judgements.get(key)
        if judgement_or_none is None:
            judgement_or_none = _judge(request, wire, raw_rcode, opcode, first_of_transfer)
            if len(_judgements) >= _MAX_JUDGEMENTS:
                _judgements.clear()
            _judgements[key] = judgement_or_none
        judgement = judgement_or_none
    event, rcode, why, reply_opcode, tsig_error, details = judgement
    return Outcome(event, rcode, why, transport, reply_opcode, tsig_error,
                   bytes_received=size, details=dict(details) if details else {},
                   ra_to_rd_clear=bool(flags & _RA) and not request.wire[2] & _RD_HIGH)  # fmt: skip


def _judge(request: WireRequest, wire: bytes, raw_rcode: int, opcode: int,
           first_of_transfer: bool) -> _Judgement:  # fmt: skip
    """The dnspython half of :func:`read_reply`: parse, verify TSIG, match the question."""
    try:
        message = dns.message.from_wire(
            wire,
            keyring=request.keyring,
            request_mac=request.message.mac if request.keyring and request.message else b"",
            xfr=first_of_transfer,
            multi=first_of_transfer,
            one_rr_per_rrset=first_of_transfer,
            ignore_trailing=False,
        )
    except tuple(_TSIG_ERRORS) as exc:
        return WireEvent.REPLY, raw_rcode, f"TSIG: {exc}", None, _TSIG_ERRORS[type(exc)], None
    except dns.message.UnknownTSIGKey as exc:
        return WireEvent.REPLY, raw_rcode, f"TSIG: {exc}", None, 17, None
    except (dns.exception.DNSException, ValueError, KeyError, IndexError, UnicodeError) as exc:
        # dnspython raises several exception types on hostile input (a bad
        # rdata can surface as ValueError); any of them means "not DNS".
        return (WireEvent.MALFORMED, raw_rcode, f"unparsable reply: {exc!r}"[:200], opcode,
                None, None)  # fmt: skip
    if request.question is not None and message.question:
        asked = request.question
        got = message.question[0]
        if (got.name, int(got.rdtype), int(got.rdclass)) != asked:
            return (WireEvent.MISMATCHED, message.rcode(),
                    f"reply question {got.name} {got.rdtype} differs from request", opcode,
                    None, None)  # fmt: skip
    details: dict[str, object] = {
        "flags": dns.flags.to_text(message.flags),
        "answers": sum(len(rrset) for rrset in message.answer),
    }
    if message.edns >= 0:
        details["edns_version"] = message.edns
        if message.ednsflags & 0x7FFF:
            details["edns_flags_echoed"] = message.ednsflags & 0x7FFF
    return WireEvent.REPLY, message.rcode(), None, opcode, None, details
