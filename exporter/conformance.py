"""Conformance checks: what a reply does wrong beyond its rcode, judged from bytes.

The rcode tells half of the story. A server can answer opcode 15 with NOTIMP and
still echo RD, answer EDNS version 1 with BADVERS under an OPT of version 1, echo
an unknown EDNS option, or drop the OPT record from a truncated reply. Each check
here reads the request bytes and the reply bytes (plus what the probe expects and
whether the server is an authoritative or a recursive one) and says whether the
reply violates it. Names are ISC genreport's tags where genreport has the same
check (``noopt``, ``badversion``, ``mbz``, ``z`` ...), so a result reads next to an
ednscomp report; the rest are named after the Zonemaster message tag or the rule.
``docs/conformance.md`` documents every check, its source and its remedy.

Nothing here does I/O: :func:`parse` is a small DNS message reader that never
raises, :func:`applicable` and :func:`judge` are pure. :func:`judge` remembers the
verdicts for recent (request, reply) byte pairs, as :mod:`exporter.wire` does for
its own reading: a monitored server sends the same bytes run after run.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from exporter.causes import RCODE_NAMES, Cause
from exporter.config import ProbeSpec
from exporter.kinds import ProbeKind

# Header flag bits (RFC 1035 §4.1.1, RFC 4035 §3.2 for AD and CD).
QR, AA, TC, RD = 0x8000, 0x0400, 0x0200, 0x0100
RA, Z, AD, CD = 0x0080, 0x0040, 0x0020, 0x0010
#: The DO bit in the OPT TTL's flags half (RFC 3225).
DO = 0x8000

NOERROR, NXDOMAIN, BADVERS = 0, 3, 16
T_A, T_NS, T_SOA, T_AAAA, T_OPT, T_RRSIG = 1, 2, 6, 28, 41, 46
OPT_COOKIE = 10
#: EDNS option codes assigned by IANA (1-20) and the local/experimental range: a
#: server may legitimately answer with these. Anything else it echoes back is an
#: option it copied without understanding (genreport's ``echoed``, code 100).
_ASSIGNED_OPTIONS = frozenset(range(1, 21)) | frozenset({20292, 26946})

_HEADER = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")


class Role(enum.StrEnum):
    """What kind of server the probe talks to; some checks only fit one kind."""

    AUTHORITATIVE = "authoritative"
    RECURSIVE = "recursive"


_ROLE_NAMES = frozenset(role.value for role in Role)


# ---------------------------------------------------------------------------
# Reading messages: just the facts the checks need, never an exception.
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    #: Owner name in lower case, labels joined by "." ("" is the root).
    owner: str
    rtype: int
    rdata: bytes


@dataclass(frozen=True, slots=True)
class Opt:
    payload: int
    #: Upper 8 bits of the 12-bit rcode (RFC 6891 §6.1.3).
    ext_rcode: int
    version: int
    flags: int
    options: tuple[tuple[int, bytes], ...]


@dataclass(frozen=True, slots=True)
class Message:
    msg_id: int
    flags: int
    #: Full rcode: header bits plus the OPT extension when an OPT came.
    rcode: int
    qdcount: int
    ancount: int
    nscount: int
    arcount: int
    #: The first question: exact name bytes as sent (case kept), type, class.
    question: tuple[bytes, int, int] | None
    answer: tuple[Record, ...]
    authority: tuple[Record, ...]
    #: Additional records other than the OPT record.
    additional: tuple[Record, ...]
    opt: Opt | None
    size: int

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF

    @property
    def qname(self) -> str:
        return "" if self.question is None else _name_text(self.question[0])


class _MalformedError(Exception):
    pass


def _read_name(wire: bytes, offset: int) -> tuple[bytes, int]:
    """(uncompressed name in wire form, offset after the name at ``offset``)."""
    labels: list[bytes] = []
    end = -1
    hops = 0
    total = 0
    while True:
        if offset >= len(wire):
            raise _MalformedError
        length = wire[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(wire):
                raise _MalformedError
            if end < 0:
                end = offset + 2
            hops += 1
            if hops > 64:  # a pointer loop
                raise _MalformedError
            offset = ((length & 0x3F) << 8) | wire[offset + 1]
            continue
        if length & 0xC0:
            raise _MalformedError  # RFC 6891 §5: extended label types are obsolete
        offset += 1
        if length == 0:
            break
        label = wire[offset:offset + length]
        if len(label) != length:
            raise _MalformedError
        total += length + 1
        if total > 255:
            raise _MalformedError
        labels.append(bytes([length]) + label)
        offset += length
    return b"".join(labels) + b"\x00", end if end >= 0 else offset


def _name_text(name: bytes) -> str:
    parts: list[str] = []
    offset = 0
    while offset < len(name) and name[offset]:
        length = name[offset]
        parts.append(name[offset + 1:offset + 1 + length].decode("latin-1").lower())
        offset += length + 1
    return ".".join(parts)


_Raw = tuple[bytes, int, int, int, bytes]  # owner, type, class, TTL, rdata


def _read_records(wire: bytes, offset: int, count: int) -> tuple[list[_Raw], int]:
    records: list[_Raw] = []
    for _ in range(count):
        name, offset = _read_name(wire, offset)
        if offset + _RR_FIXED.size > len(wire):
            raise _MalformedError
        rtype, rclass, ttl, rdlen = _RR_FIXED.unpack_from(wire, offset)
        offset += _RR_FIXED.size
        rdata = wire[offset:offset + rdlen]
        if len(rdata) != rdlen:
            raise _MalformedError
        offset += rdlen
        records.append((name, rtype, rclass, ttl, rdata))
    return records, offset


def _options(rdata: bytes) -> tuple[tuple[int, bytes], ...]:
    out = []
    offset = 0
    while offset < len(rdata):
        if offset + 4 > len(rdata):
            raise _MalformedError
        code, length = struct.unpack_from("!HH", rdata, offset)
        data = rdata[offset + 4:offset + 4 + length]
        if len(data) != length:
            raise _MalformedError
        out.append((code, data))
        offset += 4 + length
    return tuple(out)


def parse(wire: bytes) -> Message | None:
    """The facts of a DNS message, or ``None`` when the bytes do not parse."""
    try:
        return _parse(wire)
    except (_MalformedError, struct.error, IndexError):
        return None


def _parse(wire: bytes) -> Message:
    if len(wire) < _HEADER.size:
        raise _MalformedError
    msg_id, flags, qd, an, ns, ar = _HEADER.unpack_from(wire)
    offset = _HEADER.size
    question = None
    for index in range(qd):
        name, offset = _read_name(wire, offset)
        if offset + 4 > len(wire):
            raise _MalformedError
        qtype, qclass = struct.unpack_from("!HH", wire, offset)
        offset += 4
        if index == 0:
            question = (name, qtype, qclass)
    answer, offset = _read_records(wire, offset, an)
    authority, offset = _read_records(wire, offset, ns)
    additional, offset = _read_records(wire, offset, ar)
    opt = None
    others = []
    for name, rtype, rclass, ttl, rdata in additional:
        if rtype == T_OPT:
            if opt is not None or name != b"\x00":
                raise _MalformedError  # RFC 6891 §6.1.1: one OPT, owned by the root
            opt = Opt(rclass, ttl >> 24, (ttl >> 16) & 0xFF, ttl & 0xFFFF, _options(rdata))
        else:
            others.append(Record(_name_text(name), rtype, rdata))
    rcode = (flags & 0xF) | ((opt.ext_rcode << 4) if opt is not None else 0)
    return Message(
        msg_id, flags, rcode, qd, an, ns, ar, question,
        tuple(Record(_name_text(n), t, d) for n, t, _, _, d in answer),
        tuple(Record(_name_text(n), t, d) for n, t, _, _, d in authority),
        tuple(others), opt, len(wire),
    )  # fmt: skip


# ---------------------------------------------------------------------------
# The checks.
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expectation:
    """What the probe expects, beyond the bytes it sends."""

    #: Rcodes that answer the probe as intended; empty: the rcode is not checked.
    rcodes: frozenset[int] = frozenset({NOERROR, NXDOMAIN})
    #: Authoritative or recursive server; ``None``: unknown, role checks are skipped.
    role: Role | None = None
    #: Transport the probe is configured for ("udp", "tcp", "tls").
    transport: str = "udp"
    #: The target's zone, lower case without the trailing dot ("" for the root).
    zone: str = ""


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request and the reply to judge (for a UDP probe, ``udp_reply`` is the
    UDP reply even when the final answer came over TCP after TC)."""

    request: Message
    reply: Message
    udp_reply: Message | None
    expectation: Expectation


Predicate = Callable[[Exchange], bool]
Applies = Callable[[Message, Expectation], bool]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    #: What a conformant reply does, in one sentence.
    rule: str
    #: Which genreport test / tag or Zonemaster test case it mirrors, and the RFC.
    source: str
    #: One line the operator can act on.
    remediation: str
    applies: Applies
    violated: Predicate


def _edns(request: Message) -> bool:
    return request.opt is not None


def _version(request: Message) -> int:
    return request.opt.version if request.opt is not None else 0


def _query(request: Message) -> bool:
    return request.opcode == 0


def _other_opcode(request: Message) -> bool:
    return request.opcode != 0


def _qtype(request: Message) -> int | None:
    return None if request.question is None else request.question[1]


def _always(request: Message, expectation: Expectation) -> bool:
    return True


def _rcode_applies(request: Message, expectation: Expectation) -> bool:
    return bool(expectation.rcodes)


def _reply_flag(flag: int) -> Predicate:
    return lambda x: bool(x.reply.flags & flag)


def _soa_seen(x: Exchange) -> bool:
    qname = x.request.qname
    return any(r.rtype == T_SOA and r.owner == qname for r in x.reply.answer)


def _rrsig_seen(x: Exchange) -> bool:
    return any(r.rtype == T_RRSIG for r in x.reply.answer)


def _reply_do(x: Exchange) -> bool:
    return x.reply.opt is not None and bool(x.reply.opt.flags & DO)


def _request_do(request: Message) -> bool:
    return request.opt is not None and bool(request.opt.flags & DO)


def _badversion(x: Exchange) -> bool:
    # genreport: an OPT below the version we asked for must come with BADVERS, and
    # BADVERS must come with an OPT below that version (RFC 6891 §6.1.3).
    opt = x.reply.opt
    if opt is None:
        return False
    asked = _version(x.request)
    return (opt.version < asked and x.reply.rcode != BADVERS) or (
        opt.version >= asked and x.reply.rcode == BADVERS
    )


def _echoed(x: Exchange) -> bool:
    sent = {code for code, _ in (x.request.opt.options if x.request.opt else ())}
    unknown = sent - _ASSIGNED_OPTIONS
    return x.reply.opt is not None and any(code in unknown for code, _ in x.reply.opt.options)


def _sent_unknown_option(request: Message, expectation: Expectation) -> bool:
    return request.opt is not None and any(
        code not in _ASSIGNED_OPTIONS for code, _ in request.opt.options
    )


def _client_cookie(message: Message) -> bytes | None:
    for code, data in message.opt.options if message.opt else ():
        if code == OPT_COOKIE:
            return data[:8]
    return None


def _cookie_mismatch(x: Exchange) -> bool:
    # RFC 7873 §5.2: the reply's COOKIE starts with our client cookie; genreport
    # counts only a well-formed server cookie (16-40 bytes in all).
    ours = _client_cookie(x.request)
    if x.reply.opt is None or ours is None:
        return False
    return any(code == OPT_COOKIE and 16 <= len(data) <= 40 and data[:8] != ours
               for code, data in x.reply.opt.options)  # fmt: skip


def _toobig(x: Exchange) -> bool:
    # RFC 6891 §6.2.3 / RFC 1035 §4.2.1: a UDP reply fits the requester's buffer
    # (512 bytes without EDNS; an advertised size below 512 counts as 512).
    reply = x.udp_reply
    if reply is None:
        return False
    limit = max(512, x.request.opt.payload) if x.request.opt is not None else 512
    return reply.size > limit


def _missing_opt_in_truncated(x: Exchange) -> bool:
    # RFC 6891 §7: an OPT in the request means an OPT in every reply, TC ones too.
    reply = x.udp_reply
    return reply is not None and bool(reply.flags & TC) and reply.opt is None


def _in_zone(name: str, zone: str) -> bool:
    return not zone or name == zone or name.endswith("." + zone)


def _recursion_offered(x: Exchange) -> bool:
    # Zonemaster nameserver01: RA set, or an NXDOMAIN for a name outside every zone
    # the server serves when recursion was asked for (it went and looked).
    reply = x.reply
    if reply.flags & RA:
        return True
    return (bool(x.request.flags & RD) and reply.rcode == NXDOMAIN
            and not _in_zone(x.request.qname, x.expectation.zone))  # fmt: skip


def _upward_referral(x: Exchange) -> bool:
    return bool(x.reply.authority)


def _aaaa_bad_rdata(x: Exchange) -> bool:
    # RFC 4074 §4.4: an A record's 4 bytes served as AAAA.
    return any(r.rtype == T_AAAA and len(r.rdata) != 16 for r in x.reply.answer)


def _role(role: Role) -> Applies:
    return lambda request, expectation: expectation.role is role and _query(request)


def _udp(request: Message, expectation: Expectation) -> bool:
    return expectation.transport == "udp"


CHECKS: tuple[Check, ...] = (
    # -- header -------------------------------------------------------------------
    Check("opcode-mismatch", "The reply carries the request's opcode.",
          "genreport: the reply's opcode as a tag (e.g. `query`); RFC 1035 §4.1.1",
          "The server answers another opcode than asked (often QUERY): upgrade it; "
          "until then this operation cannot be used with it.",
          _always, lambda x: x.reply.opcode != x.request.opcode),
    Check("rcode", "NOERROR or NXDOMAIN comes only where the probe expects it (not where it "
          "expects BADVERS to EDNS version 1 or REFUSED to a closed transfer); any other "
          "wrong rcode is a gap cause already.",
          "genreport: the rcode as a tag (e.g. `noerror`, `formerr`); Zonemaster "
          "nameserver05 and connectivity01/02",
          "Compare with `dnsgap probe --json`; a wrong rcode for this request is a server "
          "bug or a middlebox: upgrade or reconfigure.",
          # Only an answer without a gap cause (NOERROR, NXDOMAIN) is a violation: any
          # other rcode is already a labelled gap (refused, not_implemented ...), and
          # one problem gets one signal.
          _rcode_applies, lambda x: (x.reply.rcode not in x.expectation.rcodes
                                     and x.reply.rcode in (NOERROR, NXDOMAIN))),
    Check("non-empty-question-section", "A reply to a header-only request of an unknown "
          "opcode has no question.", "genreport `opcode`: non-empty-question-section",
          "The server invents a question for an opcode it does not implement: upgrade it.",
          lambda r, e: _other_opcode(r) and r.qdcount == 0,
          lambda x: x.reply.qdcount != 0),
    Check("non-empty-answer-section", "A reply to an unknown opcode has no answer records.",
          "genreport `opcode`, `opcodeflg`: non-empty-answer-section; RFC 1035 §4.1.1",
          "The server answers an opcode it does not implement as if it were a QUERY: "
          "upgrade it.",
          lambda r, e: _other_opcode(r), lambda x: x.reply.ancount != 0),
    Check("non-empty-authority-section", "A reply to an unknown opcode has no authority "
          "records.", "genreport `opcode`, `opcodeflg`: non-empty-authority-section",
          "The server answers an opcode it does not implement as if it were a QUERY: "
          "upgrade it.",
          lambda r, e: _other_opcode(r), lambda x: x.reply.nscount != 0),
    Check("non-empty-additional-section", "A reply to an unknown opcode has no additional "
          "records (an OPT answering our OPT aside).",
          "genreport `opcode`, `opcodeflg`: non-empty-additional-section",
          "The server answers an opcode it does not implement as if it were a QUERY: "
          "upgrade it.",
          lambda r, e: _other_opcode(r), lambda x: bool(x.reply.additional)),
    Check("aa", "AA is clear in a reply to an opcode other than QUERY.",
          "genreport `opcodeflg`: aa; RFC 1035 §4.1.1 (AA is defined for QUERY answers)",
          "The server sets AA on a message it does not implement: upgrade it.",
          lambda r, e: _other_opcode(r), _reply_flag(AA)),
    Check("noaa", "An authoritative server sets AA on a NOERROR answer to a QUERY.",
          "genreport `dns`, `edns` ...: noaa; RFC 1035 §4.1.1",
          "The server is not authoritative for the zone it is probed for: load the zone or "
          "fix the delegation.",
          lambda r, e: _role(Role.AUTHORITATIVE)(r, e) and _version(r) == 0,
          lambda x: x.reply.rcode == NOERROR and not x.reply.flags & AA),
    Check("ra", "RA is clear in a reply to an opcode other than QUERY.",
          "genreport `opcodeflg`: ra", "The server sets RA on a message it does not "
          "implement: upgrade it.",
          lambda r, e: _other_opcode(r), _reply_flag(RA)),
    Check("rd", "RD is copied from the request: clear when we sent it clear, and clear "
          "for opcodes other than QUERY.", "genreport `dns`, `opcodeflg`: rd; RFC 1035 §4.1.1",
          "The server sets RD on its own (or echoes it on an unknown opcode): upgrade it.",
          _always,
          lambda x: bool(x.reply.flags & RD) and (
              _other_opcode(x.request) or not x.request.flags & RD)),
    Check("nord", "RD set in a QUERY is copied into the reply.", "genreport `rd`: nord; "
          "RFC 1035 §4.1.1", "The server drops RD from its replies: upgrade it.",
          lambda r, e: _query(r) and bool(r.flags & RD),
          lambda x: not x.reply.flags & RD),
    Check("ad", "AD is clear unless the request set AD or DO (and never for other "
          "opcodes).", "genreport `ad`, `opcodeflg`: ad; RFC 6840 §5.7",
          "The server claims authenticated data the client did not ask about: upgrade it.",
          _always,
          lambda x: bool(x.reply.flags & AD) and (
              _other_opcode(x.request)
              or not (x.request.flags & AD or _request_do(x.request)))),
    Check("cd", "CD is copied from the request, and clear for other opcodes.",
          "genreport `cd`, `opcodeflg`: cd; RFC 4035 §3.1.6",
          "The server sets CD on its own: upgrade it.", _always,
          lambda x: bool(x.reply.flags & CD) and (
              _other_opcode(x.request) or not x.request.flags & CD)),
    Check("z", "The reserved header bit Z is clear in the reply, even when the request "
          "set it.", "genreport `zflag`, `opcodeflg`: z; RFC 1035 §4.1.1 (must be zero)",
          "The server echoes a reserved bit: upgrade it.", _always, _reply_flag(Z)),
    # -- EDNS (RFC 6891) ----------------------------------------------------------
    Check("noopt", "A request with an OPT record gets a reply with one.",
          "genreport `edns` ...: noopt; RFC 6891 §7",
          "The server (or a middlebox) does not speak EDNS or strips OPT: upgrade it, or "
          "fix the firewall.",
          lambda r, e: _edns(r), lambda x: x.reply.opt is None),
    Check("opt", "A request without OPT gets a reply without OPT.",
          "genreport `dns`: opt; RFC 6891 §7",
          "The server adds EDNS to a client that did not use it: upgrade it.",
          lambda r, e: not _edns(r), lambda x: x.reply.opt is not None),
    Check("version-not-zero", "The reply's OPT says EDNS version 0 (the only one there "
          "is), also in a BADVERS reply.", "genreport `edns1`: version-not-zero; RFC 6891 §6.1.3",
          "The server claims an EDNS version it does not implement: upgrade it.",
          lambda r, e: _edns(r),
          lambda x: x.reply.opt is not None and x.reply.opt.version != 0),
    Check("badversion", "BADVERS comes exactly when the request's EDNS version is above "
          "the server's (its OPT version then lower than ours).",
          "genreport `edns1`, `edns1opt`: badversion; RFC 6891 §6.1.3",
          "The server ignores the EDNS version (answers version 1 as if it were 0): "
          "upgrade it; clients cannot negotiate EDNS with it.",
          lambda r, e: _edns(r), _badversion),
    Check("soa", "No SOA answer comes with BADVERS or with another error rcode.",
          "genreport `edns1`: soa; RFC 6891 §6.1.3",
          "The server answers a request it rejects: upgrade it.",
          lambda r, e: _qtype(r) == T_SOA and _query(r),
          lambda x: _soa_seen(x) and (_version(x.request) != 0 or x.reply.rcode != NOERROR)),
    Check("nosoa", "A NOERROR reply to an SOA query carries the SOA.",
          "genreport `dns`, `edns`: nosoa", "The server answers the SOA query without the "
          "SOA: check the zone is loaded (or a middlebox rewrites answers).",
          lambda r, e: _qtype(r) == T_SOA and _query(r) and _version(r) == 0,
          lambda x: x.reply.rcode == NOERROR and not _soa_seen(x)),
    Check("echoed", "An unknown EDNS option is ignored, not copied into the reply.",
          "genreport `ednsopt`, `optlist`: echoed; RFC 6891 §6.1.2",
          "The server reflects options it does not understand: upgrade it.",
          _sent_unknown_option, _echoed),
    Check("nodo", "The DO bit of the request is copied into the reply's OPT.",
          "genreport `do`: nodo (genreport only when RRSIGs came); RFC 3225 §3",
          "The server drops DO: DNSSEC-aware clients cannot tell it understood; upgrade it.",
          # Not for EDNS version 1: a BADVERS error reply answers nothing (NSD clears DO).
          lambda r, e: _request_do(r) and _version(r) == 0,
          lambda x: x.reply.opt is not None and not _reply_do(x)),
    Check("nocd", "With DO and CD set, a signed answer keeps CD.", "genreport `docd`: nocd",
          "The server clears CD on signed answers: upgrade it.",
          lambda r, e: _request_do(r) and bool(r.flags & CD),
          lambda x: _reply_do(x) and not x.reply.flags & CD and _rrsig_seen(x)),
    Check("mbz", "EDNS flags other than DO are zero in the reply, even when the request "
          "set an unknown one.", "genreport `ednsflags`: mbz; RFC 6891 §6.1.4",
          "The server echoes unknown EDNS flags: upgrade it.",
          lambda r, e: _edns(r),
          lambda x: x.reply.opt is not None and bool(x.reply.opt.flags & 0x7FFF)),
    Check("cookie-mismatch", "A server cookie in the reply starts with our client cookie.",
          "genreport `ednscookie`, `optlist`: cookie-mismatch; RFC 7873 §5.2",
          "The server (or an anycast sibling) returns someone else's cookie: check the "
          "cookie secret and the load balancer.",
          lambda r, e: _client_cookie(r) is not None, _cookie_mismatch),
    Check("toobig", "A UDP reply fits the buffer the request advertised (512 bytes "
          "without EDNS).", "genreport `edns@512`: toobig; RFC 6891 §6.2.3",
          "The server ignores the requester's UDP buffer size: fragments get dropped; "
          "upgrade it or set its maximum UDP size.", _udp, _toobig),
    Check("missing-opt-in-truncated", "A truncated UDP reply to a request with OPT still "
          "carries OPT.", "Zonemaster nameserver13: MISSING_OPT_IN_TRUNCATED; RFC 6891 §7",
          "The server drops EDNS when it truncates: resolvers then retry without EDNS; "
          "upgrade it.",
          lambda r, e: _edns(r) and _udp(r, e), _missing_opt_in_truncated),
    # -- Zonemaster name-server test cases --------------------------------------------
    Check("is-a-recursor", "An authoritative server does not offer recursion: RA clear, "
          "and no NXDOMAIN for a name outside its zone when asked to recurse.",
          "Zonemaster nameserver01: IS_A_RECURSOR; RFC 5358",
          "Disable recursion on the authoritative server (recursion no; / "
          "recursor= unset), or move the resolver elsewhere.",
          _role(Role.AUTHORITATIVE), _recursion_offered),
    Check("upward-referral", "An authoritative server asked `. NS` for a zone it does not "
          "serve puts nothing in the authority section.",
          "Zonemaster nameserver07: UPWARD_REFERRAL",
          "The server refers clients up to the root (a DDoS amplifier): answer REFUSED "
          "for zones it does not serve (disable `additional-from-cache`/root hints).",
          lambda r, e: _role(Role.AUTHORITATIVE)(r, e) and r.qname == "" and _qtype(r) == T_NS,
          _upward_referral),
    Check("qname-case", "The reply's question is the request's, byte for byte: the case "
          "of every letter kept (0x20).",
          "Zonemaster nameserver08/09: QNAME_CASE_INSENSITIVE / CASE_QUERIES_RESULTS_DIFFER",
          "The server rewrites the case of the query name: resolvers using 0x20 drop its "
          "answers; upgrade it (or the load balancer in front).",
          lambda r, e: r.question is not None,
          lambda x: x.reply.question is not None and x.request.question is not None
          and x.reply.question[0] != x.request.question[0]),
    Check("aaaa-bad-rdata", "AAAA records carry 16 bytes.",
          "Zonemaster nameserver05: AAAA_BAD_RDATA; RFC 4074 §4.4",
          "The server serves A data as AAAA: upgrade it.",
          lambda r, e: _qtype(r) == T_AAAA, _aaaa_bad_rdata),
)  # fmt: skip

BY_NAME: Mapping[str, Check] = {check.name: check for check in CHECKS}
#: Check names in documentation order: the ``check`` label's whole value set.
NAMES: tuple[str, ...] = tuple(BY_NAME)


def applicable(request: Message | None, expectation: Expectation) -> tuple[str, ...]:
    """The checks that fit a request (and so have series from start-up)."""
    if request is None or request.opcode == 6:  # DSO has its own rules (RFC 8490)
        return ()
    return tuple(check.name for check in CHECKS if check.applies(request, expectation))


def violations(exchange: Exchange) -> tuple[str, ...]:
    """The applicable checks the exchange's reply violates."""
    return tuple(
        check.name for check in CHECKS
        if check.applies(exchange.request, exchange.expectation) and check.violated(exchange)
    )  # fmt: skip


_MAX_VERDICTS = 16_384
_MAX_CACHED_REPLY = 512
_verdicts: dict[tuple[bytes, bytes, bytes | None, Expectation], tuple[str, ...]] = {}


def judge(request: bytes, reply: bytes, expectation: Expectation,
          udp_reply: bytes | None = None) -> tuple[str, ...]:  # fmt: skip
    """The checks ``reply`` violates as an answer to ``request``.

    A reply to someone else (another ID, QR clear) or one that does not parse is not
    judged here: the cause (``mismatched_reply``, ``malformed``) already says so.
    """
    if len(reply) < 4 or reply[:2] != request[:2] or not reply[2] & 0x80:
        return ()
    cacheable = len(reply) <= _MAX_CACHED_REPLY and (
        udp_reply is None or len(udp_reply) <= _MAX_CACHED_REPLY)  # fmt: skip
    key = (request[2:], reply[2:], None if udp_reply is None else udp_reply[2:], expectation)
    if cacheable:
        cached = _verdicts.get(key)
        if cached is not None:
            return cached
    verdict = _judge(request, reply, expectation, udp_reply)
    if cacheable:
        if len(_verdicts) >= _MAX_VERDICTS:
            _verdicts.clear()
        _verdicts[key] = verdict
    return verdict


def _judge(request: bytes, reply: bytes, expectation: Expectation,
           udp_reply: bytes | None) -> tuple[str, ...]:  # fmt: skip
    asked = parse(request)
    answer = parse(reply)
    if asked is None or answer is None:
        return ()
    udp = parse(udp_reply) if udp_reply is not None else None
    return violations(Exchange(asked, answer, udp, expectation))


def remediation(name: str) -> str:
    check = BY_NAME.get(name)
    return check.remediation if check is not None else ""


#: The rcodes behind each cause a probe may list in ``expect`` (causes.py's table).
_CAUSE_RCODES: Mapping[str, frozenset[int]] = {
    Cause.NONE: frozenset({NOERROR, NXDOMAIN}),
    Cause.FORMAT_ERROR: frozenset({1}),
    Cause.SERVER_FAILURE: frozenset({2}),
    Cause.NOT_IMPLEMENTED: frozenset({4}),
    Cause.REFUSED: frozenset({5}),
    Cause.NOT_AUTHORIZED: frozenset({9}),
    Cause.NOT_ZONE: frozenset({10}),
    Cause.BAD_VERSION: frozenset({BADVERS}),
    Cause.BAD_COOKIE: frozenset({23}),
}
_RCODE_VALUES = {name: value for value, name in RCODE_NAMES.items()}


def expected_rcodes(expect: Iterable[str]) -> frozenset[int]:
    """The rcodes a probe's ``expect`` list accepts (rcode mnemonics or causes).

    Causes that come without a reply (``no_response`` ...) add none: a probe that
    only expects silence has no rcode to check.
    """
    out: set[int] = set()
    for item in expect:
        if item in _RCODE_VALUES:
            out.add(_RCODE_VALUES[item])
        elif item.startswith("RCODE") and item[5:].isdigit():
            out.add(int(item[5:]))
        else:
            out |= _CAUSE_RCODES.get(item, frozenset())
    return frozenset(out)


def expectation_for(spec: ProbeSpec, role: str | None, zone: str = ".") -> Expectation:
    """What a configured probe expects, for :func:`judge` and :func:`applicable`."""
    role_ = Role(role) if role in _ROLE_NAMES else None
    return Expectation(expected_rcodes(spec.expect), role_, spec.transport.value,
                       zone.rstrip(".").lower())  # fmt: skip


_MAX_EXPECTATIONS = 65_536
# Keyed by id(spec) like wire's templates; the value keeps the spec alive.
_expectations: dict[tuple[int, str | None, str], tuple[ProbeSpec, Expectation]] = {}


def expectation_of(spec: ProbeSpec, role: str | None, zone: str) -> Expectation:
    """:func:`expectation_for`, remembered per configured probe."""
    key = (id(spec), role, zone)
    cached = _expectations.get(key)
    if cached is None or cached[0] is not spec:
        if len(_expectations) >= _MAX_EXPECTATIONS:
            _expectations.clear()
        cached = (spec, expectation_for(spec, role, zone))
        _expectations[key] = cached
    return cached[1]


def checks_for(spec: ProbeSpec, role: str | None, zone: str,
               request: bytes | None) -> tuple[str, ...]:  # fmt: skip
    """The checks a probe is judged by (none for DSO and for the transfer, UPDATE and
    NOTIFY kinds, whose answers the cause taxonomy covers)."""
    if spec.kind not in CHECKED_KINDS or request is None:
        return ()
    return applicable(parse(request), expectation_of(spec, role, zone))


#: Probe kinds whose replies are judged: queries and raw opcodes.
CHECKED_KINDS = frozenset({ProbeKind.QUERY, ProbeKind.OPCODE})
