"""DNS Stateful Operations (RFC 8490) and DNS Push (RFC 8765): a pure codec.

No sockets here. A DSO message is the 12-byte DNS header (opcode 6, all four
section counts zero) followed by TLVs: type (16 bits), length (16 bits), value.

Build a message and encode it::

    msg = DsoMessage(msg_id=1, tlvs=(Keepalive(15_000, 3_600_000),))
    wire = msg.to_wire()            # the DNS message, without TCP framing
    framed = frame(wire)            # 2-byte length prefix for TCP/TLS (RFC 1035 §4.2.2)

Decode what a peer sent::

    splitter = FrameSplitter()
    for wire in splitter.feed(data):      # complete DNS messages from a byte stream
        if is_dso(wire):
            msg = DsoMessage.from_wire(wire)   # raises DsoDecodeError, nothing else

Every decoding problem raises :class:`DsoDecodeError`, whose ``problem`` says
which (:class:`DecodeProblem`) and whose ``msg_id`` carries the header's ID when
it could be read, so a server can still answer FORMERR (RFC 8490 §5.4).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import ClassVar

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.wire

__all__ = [
    "DELETE_RRSET_TTL",
    "DELETE_RR_TTL",
    "DSO_OPCODE",
    "HEADER_LENGTH",
    "INFINITE_MS",
    "MAX_FRAME",
    "MIN_KEEPALIVE_INTERVAL_MS",
    "DecodeProblem",
    "DsoDecodeError",
    "DsoMessage",
    "DsoType",
    "FrameSplitter",
    "FrameTooLargeError",
    "Keepalive",
    "MessageKind",
    "Padding",
    "Push",
    "PushRecord",
    "Reconfirm",
    "RetryDelay",
    "Subscribe",
    "Tlv",
    "UnknownTlv",
    "Unsubscribe",
    "decode_tlvs",
    "encode_tlv",
    "frame",
    "header_id",
    "is_dso",
]

#: The DSO opcode (RFC 8490 §10.1).
DSO_OPCODE = 6
#: Length of the DNS header that starts every DSO message.
HEADER_LENGTH = 12
#: A Keepalive timer value meaning "infinity" (RFC 8490 §6.4.2, §6.5.2).
INFINITE_MS = 0xFFFFFFFF
#: A server MUST NOT grant a keepalive interval below ten seconds (RFC 8490 §6.5.2).
MIN_KEEPALIVE_INTERVAL_MS = 10_000
#: PUSH TTL: remove this one record (RFC 8765 §6.3.1).
DELETE_RR_TTL = 0xFFFFFFFF
#: PUSH TTL: remove the whole RRset (or, with type and class ANY, every RRset of the name).
DELETE_RRSET_TTL = 0xFFFFFFFE
#: The largest DNS message a 2-byte TCP length prefix can carry.
MAX_FRAME = 0xFFFF

_HEADER = struct.Struct("!HHHHHH")
_TLV_HEAD = struct.Struct("!HH")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_TWO_U32 = struct.Struct("!II")
_TYPE_CLASS = struct.Struct("!HH")
_RR_TAIL = struct.Struct("!HHIH")  # type, class, ttl, rdlength

_QR = 0x8000
_OPCODE_SHIFT = 11
_OPCODE_MASK = 0x7800
_RCODE_MASK = 0x000F


class DsoType(enum.IntEnum):
    """DSO TLV types (IANA "DSO Type Codes", RFC 8490 §10.3, RFC 8765 §8)."""

    #: Session timers: inactivity timeout and keepalive interval in ms (RFC 8490 §7.1).
    #: A client request (non-zero ID) or a server unidirectional message (ID 0).
    KEEPALIVE = 0x0001
    #: "Go away and do not come back for this many ms" (RFC 8490 §7.2): a server
    #: unidirectional message, or an additional TLV in an error response.
    RETRY_DELAY = 0x0002
    #: Encryption padding, additional TLV only (RFC 8490 §7.3).
    ENCRYPTION_PADDING = 0x0003
    #: DNS Push subscription to a name/type/class, a request (RFC 8765 §6.2).
    SUBSCRIBE = 0x0040
    #: Changed records, a server unidirectional message (RFC 8765 §6.3).
    PUSH = 0x0041
    #: End a subscription, client unidirectional, names the SUBSCRIBE's ID (RFC 8765 §6.4).
    UNSUBSCRIBE = 0x0042
    #: "This record looks stale, check it", client unidirectional (RFC 8765 §6.5).
    RECONFIRM = 0x0043


class DecodeProblem(enum.StrEnum):
    """Why bytes are not a DSO message; the ``problem`` of :class:`DsoDecodeError`."""

    #: Fewer than 12 bytes: not even a DNS header.
    TRUNCATED_HEADER = "truncated_header"
    #: The header's opcode is not 6.
    WRONG_OPCODE = "wrong_opcode"
    #: QDCOUNT/ANCOUNT/NSCOUNT/ARCOUNT not all zero: answer FORMERR (RFC 8490 §5.4).
    NONZERO_COUNTS = "nonzero_counts"
    #: Fewer than 4 bytes left where a TLV header should be.
    TRUNCATED_TLV = "truncated_tlv"
    #: A TLV's DSO-LENGTH runs past the end of the message.
    TLV_PAST_END = "tlv_past_end"
    #: A known TLV type whose value has the wrong length or content.
    BAD_TLV_VALUE = "bad_tlv_value"


class DsoDecodeError(ValueError):
    """The bytes are not a valid DSO message (the only exception decoding raises)."""

    def __init__(self, problem: DecodeProblem, detail: str = "", msg_id: int | None = None):
        self.problem = problem
        self.detail = detail
        #: The header's MESSAGE ID when the header could be read (to answer FORMERR).
        self.msg_id = msg_id
        super().__init__(f"{problem.value}: {detail}" if detail else problem.value)


class FrameTooLargeError(ValueError):
    """A TCP length prefix announced a message larger than the splitter allows."""

    def __init__(self, length: int, limit: int):
        self.length, self.limit = length, limit
        super().__init__(f"frame of {length} bytes exceeds the limit of {limit}")


# --- names (uncompressed, RFC 1035 §3.1) -------------------------------------


def _read_plain_name(value: bytes, offset: int, what: str) -> tuple[dns.name.Name, int]:
    """An uncompressed name at ``offset``; SUBSCRIBE/RECONFIRM carry names with
    no message to point into, so a compression pointer is a format error."""
    labels: list[bytes] = []
    total = 0
    while True:
        if offset >= len(value):
            raise DsoDecodeError(DecodeProblem.BAD_TLV_VALUE, f"{what}: name runs past the TLV")
        length = value[offset]
        offset += 1
        if length & 0xC0:
            raise DsoDecodeError(
                DecodeProblem.BAD_TLV_VALUE, f"{what}: compressed or extended label in name"
            )
        if offset + length > len(value):
            raise DsoDecodeError(DecodeProblem.BAD_TLV_VALUE, f"{what}: label runs past the TLV")
        labels.append(value[offset : offset + length])
        offset += length
        total += length + 1
        if total > 255:
            raise DsoDecodeError(DecodeProblem.BAD_TLV_VALUE, f"{what}: name longer than 255")
        if length == 0:
            return dns.name.Name(labels), offset


def _name_wire(name: dns.name.Name) -> bytes:
    if not name.is_absolute():
        raise ValueError(f"DSO names must be absolute: {name}")
    wire = name.to_wire()
    assert wire is not None
    return wire


def _rdata_wire(rdata: dns.rdata.Rdata) -> bytes:
    """RDATA without compression, names in their original case."""
    wire = rdata.to_wire()
    assert wire is not None
    return wire


def _as_name(name: dns.name.Name | str) -> dns.name.Name:
    return name if isinstance(name, dns.name.Name) else dns.name.from_text(name)


# --- TLVs ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Keepalive:
    """Keepalive TLV (RFC 8490 §7.1): both timers in milliseconds.

    In a client request: the timers it would like; in the server's response or a
    server unidirectional message: the timers the client MUST use.
    :data:`INFINITE_MS` means "no limit".
    """

    tlv_type: ClassVar[int] = DsoType.KEEPALIVE
    inactivity_ms: int
    interval_ms: int

    def value_wire(self) -> bytes:
        return _TWO_U32.pack(self.inactivity_ms, self.interval_ms)


@dataclass(frozen=True, slots=True)
class RetryDelay:
    """Retry Delay TLV (RFC 8490 §7.2): milliseconds before trying again."""

    tlv_type: ClassVar[int] = DsoType.RETRY_DELAY
    delay_ms: int

    def value_wire(self) -> bytes:
        return _U32.pack(self.delay_ms)


@dataclass(frozen=True, slots=True)
class Padding:
    """Encryption Padding TLV (RFC 8490 §7.3). Receivers accept any byte values."""

    tlv_type: ClassVar[int] = DsoType.ENCRYPTION_PADDING
    data: bytes = b""

    @classmethod
    def zeros(cls, length: int) -> Padding:
        """``length`` bytes of 0x00, the recommended filler."""
        return cls(bytes(length))

    @property
    def length(self) -> int:
        return len(self.data)

    def value_wire(self) -> bytes:
        return self.data


@dataclass(frozen=True, slots=True)
class Subscribe:
    """SUBSCRIBE TLV (RFC 8765 §6.2.1): the name, type and class to watch.

    The type may be ANY (255) to watch every type of the name.
    """

    tlv_type: ClassVar[int] = DsoType.SUBSCRIBE
    name: dns.name.Name
    rtype: int
    rclass: int = dns.rdataclass.IN

    @classmethod
    def of(cls, name: dns.name.Name | str, rtype: int, rclass: int = 1) -> Subscribe:
        return cls(_as_name(name), rtype, rclass)

    def value_wire(self) -> bytes:
        return _name_wire(self.name) + _TYPE_CLASS.pack(self.rtype, self.rclass)


@dataclass(frozen=True, slots=True)
class PushRecord:
    """One change notification inside a PUSH TLV (RFC 8765 §6.3.1).

    ``rdata`` is the record's RDATA in uncompressed wire form (names inside it
    are decompressed when decoding). ``ttl`` 0..0x7FFFFFFF adds the record;
    :data:`DELETE_RR_TTL` removes this one record; :data:`DELETE_RRSET_TTL` with
    empty ``rdata`` removes the RRset (with type and class ANY: the whole name).
    """

    name: dns.name.Name
    rtype: int
    rclass: int
    ttl: int
    rdata: bytes = b""

    @classmethod
    def add(cls, name: dns.name.Name | str, rdata: dns.rdata.Rdata, ttl: int) -> PushRecord:
        return cls(_as_name(name), rdata.rdtype, rdata.rdclass, ttl, _rdata_wire(rdata))

    @classmethod
    def remove(cls, name: dns.name.Name | str, rdata: dns.rdata.Rdata) -> PushRecord:
        return cls(_as_name(name), rdata.rdtype, rdata.rdclass, DELETE_RR_TTL, _rdata_wire(rdata))

    @classmethod
    def remove_rrset(cls, name: dns.name.Name | str, rtype: int, rclass: int = 1) -> PushRecord:
        return cls(_as_name(name), rtype, rclass, DELETE_RRSET_TTL)

    @property
    def is_addition(self) -> bool:
        return self.ttl <= 0x7FFFFFFF

    def rdata_object(self) -> dns.rdata.Rdata:
        """The RDATA parsed by dnspython (raises dnspython's errors on bad data)."""
        return dns.rdata.from_wire(
            dns.rdataclass.RdataClass.make(self.rclass),
            dns.rdatatype.RdataType.make(self.rtype),
            self.rdata,
            0,
            len(self.rdata),
        )

    def to_wire(self) -> bytes:
        return (
            _name_wire(self.name)
            + _RR_TAIL.pack(self.rtype, self.rclass, self.ttl, len(self.rdata))
            + self.rdata
        )


@dataclass(frozen=True, slots=True)
class Push:
    """PUSH TLV (RFC 8765 §6.3.1): one or more change notifications.

    Encoded without name compression; decoding follows compression pointers,
    which are relative to the start of the DSO message.
    """

    tlv_type: ClassVar[int] = DsoType.PUSH
    records: tuple[PushRecord, ...]

    def value_wire(self) -> bytes:
        return b"".join(record.to_wire() for record in self.records)


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """UNSUBSCRIBE TLV (RFC 8765 §6.4.1): the MESSAGE ID of the SUBSCRIBE to end."""

    tlv_type: ClassVar[int] = DsoType.UNSUBSCRIBE
    message_id: int

    def value_wire(self) -> bytes:
        return _U16.pack(self.message_id)


@dataclass(frozen=True, slots=True)
class Reconfirm:
    """RECONFIRM TLV (RFC 8765 §6.5.1): a record the client believes is stale."""

    tlv_type: ClassVar[int] = DsoType.RECONFIRM
    name: dns.name.Name
    rtype: int
    rclass: int
    rdata: bytes

    def value_wire(self) -> bytes:
        return _name_wire(self.name) + _TYPE_CLASS.pack(self.rtype, self.rclass) + self.rdata


@dataclass(frozen=True, slots=True)
class UnknownTlv:
    """Any TLV type this codec does not interpret, value kept as bytes."""

    tlv_type: int
    data: bytes = field(default=b"")

    def value_wire(self) -> bytes:
        return self.data


#: Every TLV this codec produces.
Tlv = Keepalive | RetryDelay | Padding | Subscribe | Push | Unsubscribe | Reconfirm | UnknownTlv


def encode_tlv(tlv: Tlv) -> bytes:
    """One TLV on the wire: type, length, value (RFC 8490 §5.4.4)."""
    value = tlv.value_wire()
    if len(value) > 0xFFFF:
        raise ValueError(f"TLV value of {len(value)} bytes does not fit DSO-LENGTH")
    return _TLV_HEAD.pack(int(tlv.tlv_type), len(value)) + value


def _decode_push(message: bytes, start: int, end: int) -> Push:
    # Names may point anywhere earlier in the message (RFC 8765 §6.3.1), so parse
    # against the whole message, confined to this TLV's bytes.
    parser = dns.wire.Parser(message[:end], start)
    records: list[PushRecord] = []
    try:
        while parser.current < end:
            name = parser.get_name(decompress=True)
            rtype, rclass, ttl, rdlen = parser.get_struct(_RR_TAIL.format)
            if parser.current + rdlen > end:
                raise DsoDecodeError(DecodeProblem.BAD_TLV_VALUE, "PUSH: RDATA runs past the TLV")
            if rdlen == 0:
                rdata = b""
            else:
                with parser.restrict_to(rdlen):
                    rd = dns.rdata.from_wire_parser(rclass, rtype, parser)
                rdata = _rdata_wire(rd)
            records.append(PushRecord(name, rtype, rclass, ttl, rdata))
    except DsoDecodeError:
        raise
    except (dns.exception.DNSException, ValueError, TypeError, KeyError, IndexError) as exc:
        raise DsoDecodeError(DecodeProblem.BAD_TLV_VALUE, f"PUSH: {exc!r}") from None
    if not records:
        raise DsoDecodeError(DecodeProblem.BAD_TLV_VALUE, "PUSH without change notifications")
    return Push(tuple(records))


def _decode_value(tlv_type: int, message: bytes, start: int, end: int) -> Tlv:
    value = message[start:end]
    if tlv_type == DsoType.KEEPALIVE:
        if len(value) != _TWO_U32.size:
            raise DsoDecodeError(DecodeProblem.BAD_TLV_VALUE, f"Keepalive length {len(value)} != 8")
        return Keepalive(*_TWO_U32.unpack(value))
    if tlv_type == DsoType.RETRY_DELAY:
        if len(value) != _U32.size:
            raise DsoDecodeError(
                DecodeProblem.BAD_TLV_VALUE, f"Retry Delay length {len(value)} != 4"
            )
        return RetryDelay(_U32.unpack(value)[0])
    if tlv_type == DsoType.ENCRYPTION_PADDING:
        return Padding(value)
    if tlv_type == DsoType.UNSUBSCRIBE:
        if len(value) != _U16.size:
            raise DsoDecodeError(
                DecodeProblem.BAD_TLV_VALUE, f"UNSUBSCRIBE length {len(value)} != 2"
            )
        return Unsubscribe(_U16.unpack(value)[0])
    if tlv_type in (DsoType.SUBSCRIBE, DsoType.RECONFIRM):
        what = DsoType(tlv_type).name
        name, offset = _read_plain_name(value, 0, what)
        if len(value) - offset < _TYPE_CLASS.size:
            raise DsoDecodeError(DecodeProblem.BAD_TLV_VALUE, f"{what}: no type and class")
        rtype, rclass = _TYPE_CLASS.unpack_from(value, offset)
        rest = value[offset + _TYPE_CLASS.size :]
        if tlv_type == DsoType.SUBSCRIBE:
            if rest:
                raise DsoDecodeError(DecodeProblem.BAD_TLV_VALUE, "SUBSCRIBE: bytes after class")
            return Subscribe(name, rtype, rclass)
        return Reconfirm(name, rtype, rclass, rest)
    if tlv_type == DsoType.PUSH:
        return _decode_push(message, start, end)
    return UnknownTlv(tlv_type, value)


def decode_tlvs(message: bytes, start: int = HEADER_LENGTH) -> tuple[Tlv, ...]:
    """The TLVs from ``start`` to the end of ``message`` (a whole DSO message, so
    PUSH names can be decompressed)."""
    tlvs: list[Tlv] = []
    offset = start
    while offset < len(message):
        if len(message) - offset < _TLV_HEAD.size:
            raise DsoDecodeError(
                DecodeProblem.TRUNCATED_TLV, f"{len(message) - offset} bytes at offset {offset}"
            )
        tlv_type, length = _TLV_HEAD.unpack_from(message, offset)
        offset += _TLV_HEAD.size
        if offset + length > len(message):
            raise DsoDecodeError(
                DecodeProblem.TLV_PAST_END,
                f"type {tlv_type:#06x} length {length} at offset {offset - 4}, "
                f"{len(message) - offset} bytes left",
            )
        tlvs.append(_decode_value(tlv_type, message, offset, offset + length))
        offset += length
    return tuple(tlvs)


# --- messages -----------------------------------------------------------------


class MessageKind(enum.StrEnum):
    """The four QR/ID combinations (RFC 8490 §8.1)."""

    REQUEST = "request"  # QR=0, ID != 0: needs a response
    UNIDIRECTIONAL = "unidirectional"  # QR=0, ID 0: never answered
    RESPONSE = "response"  # QR=1, ID != 0
    INVALID = "invalid"  # QR=1, ID 0: a fatal error for the receiver


def header_id(wire: bytes) -> int | None:
    """The MESSAGE ID of any DNS message, or None when shorter than 2 bytes."""
    return _U16.unpack_from(wire)[0] if len(wire) >= 2 else None


def is_dso(wire: bytes) -> bool:
    """Whether a DNS message's header carries the DSO opcode."""
    return len(wire) >= 4 and (_U16.unpack_from(wire, 2)[0] & _OPCODE_MASK) >> _OPCODE_SHIFT == 6


@dataclass(frozen=True, slots=True)
class DsoMessage:
    """A DSO message: header fields that matter plus the TLVs, primary first.

    ``msg_id`` non-zero with ``is_response`` False is a request; zero is a
    unidirectional message (RFC 8490 §5.4.1). A response may carry no TLV.
    """

    msg_id: int
    is_response: bool = False
    rcode: int = 0
    tlvs: tuple[Tlv, ...] = ()

    @property
    def kind(self) -> MessageKind:
        if self.is_response:
            return MessageKind.RESPONSE if self.msg_id else MessageKind.INVALID
        return MessageKind.REQUEST if self.msg_id else MessageKind.UNIDIRECTIONAL

    @property
    def primary(self) -> Tlv | None:
        """The first TLV (the operation, or a Response Primary TLV), if any."""
        return self.tlvs[0] if self.tlvs else None

    @property
    def additional(self) -> tuple[Tlv, ...]:
        return self.tlvs[1:]

    def find(self, tlv_class: type[Tlv]) -> Tlv | None:
        """The first TLV of the given class, wherever it is."""
        return next((t for t in self.tlvs if isinstance(t, tlv_class)), None)

    def response(self, rcode: int = 0, tlvs: tuple[Tlv, ...] = ()) -> DsoMessage:
        """A response to this request: same ID, QR set."""
        return DsoMessage(self.msg_id, True, rcode, tlvs)

    def to_wire(self) -> bytes:
        if not 0 <= self.msg_id <= 0xFFFF:
            raise ValueError(f"MESSAGE ID out of range: {self.msg_id}")
        if not 0 <= self.rcode <= _RCODE_MASK:
            raise ValueError(f"DSO header rcode must fit 4 bits: {self.rcode}")
        flags = (_QR if self.is_response else 0) | (DSO_OPCODE << _OPCODE_SHIFT) | self.rcode
        return _HEADER.pack(self.msg_id, flags, 0, 0, 0, 0) + b"".join(
            encode_tlv(t) for t in self.tlvs
        )

    @classmethod
    def from_wire(cls, wire: bytes) -> DsoMessage:
        """Decode one DSO message (no TCP length prefix). Z bits are ignored
        (RFC 8490 §5.4.1); semantic checks (ID 0 with QR=1, a request without
        TLV) are left to the caller, see :attr:`kind` and :attr:`primary`."""
        if len(wire) < HEADER_LENGTH:
            raise DsoDecodeError(DecodeProblem.TRUNCATED_HEADER, f"{len(wire)} bytes")
        msg_id, flags, qd, an, ns, ar = _HEADER.unpack_from(wire)
        opcode = (flags & _OPCODE_MASK) >> _OPCODE_SHIFT
        if opcode != DSO_OPCODE:
            raise DsoDecodeError(DecodeProblem.WRONG_OPCODE, f"opcode {opcode}", msg_id)
        if qd or an or ns or ar:
            raise DsoDecodeError(
                DecodeProblem.NONZERO_COUNTS, f"counts {qd}/{an}/{ns}/{ar}", msg_id
            )
        try:
            tlvs = decode_tlvs(wire)
        except DsoDecodeError as exc:
            exc.msg_id = msg_id
            raise
        return cls(msg_id, bool(flags & _QR), flags & _RCODE_MASK, tlvs)


# --- TCP framing (RFC 1035 §4.2.2, RFC 7766 §8) -------------------------------


def frame(message: bytes) -> bytes:
    """One DNS message with its 2-byte length prefix."""
    if len(message) > MAX_FRAME:
        raise ValueError(f"DNS message of {len(message)} bytes does not fit a TCP frame")
    return _U16.pack(len(message)) + message


class FrameSplitter:
    """Cuts a TCP byte stream into DNS messages, however the bytes arrive.

    Raises :class:`FrameTooLargeError` as soon as a length prefix exceeds
    ``max_size`` (before buffering the body), so a peer cannot make us hold
    more than that.
    """

    def __init__(self, max_size: int = MAX_FRAME) -> None:
        if not 0 <= max_size <= MAX_FRAME:
            raise ValueError(f"max_size must be within 0..{MAX_FRAME}")
        self.max_size = max_size
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a complete message."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return every message they complete, in order."""
        self._buffer += data
        messages: list[bytes] = []
        while len(self._buffer) >= 2:
            length = _U16.unpack_from(self._buffer)[0]
            if length > self.max_size:
                raise FrameTooLargeError(length, self.max_size)
            if len(self._buffer) < 2 + length:
                break
            messages.append(bytes(self._buffer[2 : 2 + length]))
            del self._buffer[: 2 + length]
        return messages
