"""The DSO codec (RFC 8490, RFC 8765): examples and properties."""

from __future__ import annotations

import contextlib
import struct

import dns.name
import dns.rdata
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.dso import (
    DELETE_RRSET_TTL,
    DecodeProblem,
    DsoDecodeError,
    DsoMessage,
    DsoType,
    FrameSplitter,
    FrameTooLargeError,
    Keepalive,
    MessageKind,
    Padding,
    Push,
    PushRecord,
    Reconfirm,
    RetryDelay,
    Subscribe,
    Tlv,
    UnknownTlv,
    Unsubscribe,
    decode_tlvs,
    encode_tlv,
    frame,
    is_dso,
)

# --- examples ----------------------------------------------------------------


def test_keepalive_request_has_the_rfc_8490_layout() -> None:
    wire = DsoMessage(0x1234, tlvs=(Keepalive(15_000, 3_600_000),)).to_wire()
    assert wire == bytes.fromhex(
        "1234" "3000" "0000" "0000" "0000" "0000"  # ID, opcode 6, counts zero
        "0001" "0008" "00003a98" "0036ee80"  # Keepalive, 8 bytes, 15 s, 60 min
    )  # fmt: skip


def test_response_sets_qr_and_rcode() -> None:
    wire = DsoMessage(7, is_response=True, rcode=11).to_wire()
    assert wire[2:4] == bytes.fromhex("b00b")  # QR | opcode 6 | DSOTYPENI
    msg = DsoMessage.from_wire(wire)
    assert (msg.kind, msg.rcode, msg.tlvs) == (MessageKind.RESPONSE, 11, ())


def test_message_kinds_follow_the_qr_and_id_table() -> None:
    assert DsoMessage(1).kind is MessageKind.REQUEST
    assert DsoMessage(0).kind is MessageKind.UNIDIRECTIONAL
    assert DsoMessage(1, is_response=True).kind is MessageKind.RESPONSE
    assert DsoMessage(0, is_response=True).kind is MessageKind.INVALID


def test_z_bits_are_ignored_on_reception() -> None:
    wire = bytearray(DsoMessage(3, tlvs=(RetryDelay(5),)).to_wire())
    wire[3] |= 0x70  # Z bits
    assert DsoMessage.from_wire(bytes(wire)).tlvs == (RetryDelay(5),)


def test_subscribe_value_is_name_type_class() -> None:
    tlv = Subscribe.of("_ipp._tcp.demo.example.", 12)
    assert encode_tlv(tlv) == (
        b"\x00\x40\x00\x1c" + b"\x04_ipp\x04_tcp\x04demo\x07example\x00" + b"\x00\x0c\x00\x01"
    )


def test_unsubscribe_carries_the_subscription_id() -> None:
    assert encode_tlv(Unsubscribe(0xBEEF)) == bytes.fromhex("00420002beef")


def test_push_names_compressed_against_the_message_start_are_decoded() -> None:
    # A PUSH message whose record name points back into... the record's own owner
    # name earlier in the same TLV: offset 16 is where the first name starts.
    owner = b"\x03www\x04demo\x07example\x00"
    rr1 = owner + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([192, 0, 2, 1])
    rr2 = b"\xc0\x10" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([192, 0, 2, 2])
    value = rr1 + rr2
    wire = DsoMessage(0).to_wire() + struct.pack("!HH", DsoType.PUSH, len(value)) + value
    push = DsoMessage.from_wire(wire).primary
    assert isinstance(push, Push)
    names = {r.name for r in push.records}
    assert names == {dns.name.from_text("www.demo.example.")}
    assert [r.rdata_object().to_text() for r in push.records] == ["192.0.2.1", "192.0.2.2"]


def test_push_rdata_names_are_decompressed_and_keep_their_case() -> None:
    owner = b"\x04demo\x07example\x00"  # at offset 16
    rdata = b"\x03NS1\xc0\x10"
    value = owner + struct.pack("!HHIH", 2, 1, 300, len(rdata)) + rdata
    wire = DsoMessage(0).to_wire() + struct.pack("!HH", DsoType.PUSH, len(value)) + value
    push = DsoMessage.from_wire(wire).primary
    assert isinstance(push, Push)
    assert push.records[0].rdata == b"\x03NS1\x04demo\x07example\x00"


def test_push_delete_rrset_has_empty_rdata() -> None:
    record = PushRecord.remove_rrset("a.demo.example.", 1)
    assert record.ttl == DELETE_RRSET_TTL
    assert not record.is_addition
    msg = DsoMessage(0, tlvs=(Push((record,)),))
    assert DsoMessage.from_wire(msg.to_wire()) == msg


def test_reconfirm_round_trips_with_rdata() -> None:
    rd = dns.rdata.from_text("IN", "A", "192.0.2.7")
    tlv = Reconfirm(dns.name.from_text("h.demo.example."), 1, 1, rd.to_wire() or b"")
    msg = DsoMessage(0, tlvs=(tlv,))
    assert DsoMessage.from_wire(msg.to_wire()) == msg


def test_unknown_tlv_types_are_kept_as_bytes() -> None:
    msg = DsoMessage(9, tlvs=(UnknownTlv(0xF7FF, b"\x01\x02"), Padding.zeros(4)))
    back = DsoMessage.from_wire(msg.to_wire())
    assert back.primary == UnknownTlv(0xF7FF, b"\x01\x02")
    assert back.additional == (Padding(b"\0\0\0\0"),)


# --- decoding errors -----------------------------------------------------------


def _problem(wire: bytes) -> DsoDecodeError:
    with pytest.raises(DsoDecodeError) as info:
        DsoMessage.from_wire(wire)
    return info.value


def test_short_header_is_a_truncated_header() -> None:
    assert _problem(b"\x00\x01\x30").problem is DecodeProblem.TRUNCATED_HEADER


def test_query_opcode_is_not_dso() -> None:
    wire = struct.pack("!HHHHHH", 5, 0x0100, 0, 0, 0, 0)
    error = _problem(wire)
    assert (error.problem, error.msg_id) == (DecodeProblem.WRONG_OPCODE, 5)
    assert not is_dso(wire)


@pytest.mark.parametrize("count_index", [2, 3, 4, 5])
def test_nonzero_counts_are_reported_with_the_message_id(count_index: int) -> None:
    fields = [0x4242, 0x3000, 0, 0, 0, 0]
    fields[count_index] = 1
    error = _problem(struct.pack("!HHHHHH", *fields))
    assert (error.problem, error.msg_id) == (DecodeProblem.NONZERO_COUNTS, 0x4242)


def test_truncated_tlv_header() -> None:
    wire = DsoMessage(1).to_wire() + b"\x00\x01\x00"
    assert _problem(wire).problem is DecodeProblem.TRUNCATED_TLV


def test_tlv_length_past_the_message() -> None:
    wire = DsoMessage(1).to_wire() + b"\x00\x01\x00\x08" + b"\x00" * 7
    error = _problem(wire)
    assert (error.problem, error.msg_id) == (DecodeProblem.TLV_PAST_END, 1)


@pytest.mark.parametrize("length", [0, 4, 7, 9, 12])
def test_keepalive_with_wrong_length(length: int) -> None:
    wire = DsoMessage(1).to_wire() + struct.pack("!HH", 1, length) + bytes(length)
    assert _problem(wire).problem is DecodeProblem.BAD_TLV_VALUE


def test_retry_delay_with_wrong_length() -> None:
    wire = DsoMessage(0).to_wire() + struct.pack("!HH", 2, 2) + b"\0\0"
    assert _problem(wire).problem is DecodeProblem.BAD_TLV_VALUE


def test_subscribe_with_a_compression_pointer_is_rejected() -> None:
    value = b"\xc0\x0c" + b"\x00\x01\x00\x01"
    wire = DsoMessage(1).to_wire() + struct.pack("!HH", 0x40, len(value)) + value
    assert _problem(wire).problem is DecodeProblem.BAD_TLV_VALUE


def test_empty_push_is_rejected() -> None:
    wire = DsoMessage(0).to_wire() + struct.pack("!HH", 0x41, 0)
    assert _problem(wire).problem is DecodeProblem.BAD_TLV_VALUE


def test_push_pointer_loop_is_a_decode_error() -> None:
    value = b"\xc0\x10" + struct.pack("!HHIH", 1, 1, 1, 0)
    wire = DsoMessage(0).to_wire() + struct.pack("!HH", 0x41, len(value)) + value
    assert _problem(wire).problem is DecodeProblem.BAD_TLV_VALUE


# --- framing ------------------------------------------------------------------


def test_frame_prefixes_the_length() -> None:
    assert frame(b"abc") == b"\x00\x03abc"
    with pytest.raises(ValueError, match="does not fit"):
        frame(bytes(70_000))


def test_splitter_reassembles_messages_split_anywhere() -> None:
    stream = frame(b"one") + frame(b"") + frame(b"three")
    splitter = FrameSplitter()
    out: list[bytes] = []
    for byte in stream:
        out += splitter.feed(bytes([byte]))
    assert out == [b"one", b"", b"three"]
    assert splitter.pending == 0


def test_splitter_refuses_frames_over_its_limit_before_buffering() -> None:
    splitter = FrameSplitter(max_size=512)
    with pytest.raises(FrameTooLargeError):
        splitter.feed(b"\x02\x01")


# --- properties ----------------------------------------------------------------

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
labels = st.binary(min_size=1, max_size=20)
names = st.lists(labels, min_size=0, max_size=5).map(lambda ls: dns.name.Name([*ls, b""]))
a_rdata = st.binary(min_size=4, max_size=4)
push_records = st.one_of(
    st.builds(PushRecord, names, st.just(1), st.just(1), u32, a_rdata),
    st.builds(PushRecord, names, u16, u16, st.just(DELETE_RRSET_TTL), st.just(b"")),
)
tlvs: st.SearchStrategy[Tlv] = st.one_of(
    st.builds(Keepalive, u32, u32),
    st.builds(RetryDelay, u32),
    st.builds(Padding, st.binary(max_size=64)),
    st.builds(Subscribe, names, u16, u16),
    st.builds(Push, st.lists(push_records, min_size=1, max_size=4).map(tuple)),
    st.builds(Unsubscribe, u16),
    st.builds(Reconfirm, names, u16, u16, st.binary(max_size=16)),
    st.builds(
        UnknownTlv,
        u16.filter(lambda t: t not in {int(v) for v in DsoType}),
        st.binary(max_size=32),
    ),
)
messages = st.builds(
    DsoMessage, u16, st.booleans(), st.integers(0, 15), st.lists(tlvs, max_size=5).map(tuple)
)


@given(tlvs)
def test_every_tlv_round_trips(tlv: Tlv) -> None:
    wire = DsoMessage(0).to_wire() + encode_tlv(tlv)
    assert decode_tlvs(wire) == (tlv,)


@given(messages)
def test_every_message_round_trips(msg: DsoMessage) -> None:
    assert DsoMessage.from_wire(msg.to_wire()) == msg


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_dso_decode_error(data: bytes) -> None:
    with contextlib.suppress(DsoDecodeError):
        DsoMessage.from_wire(data)


@settings(max_examples=500)
@given(st.binary(max_size=120))
def test_arbitrary_tlv_bytes_after_a_valid_header_raise_only_dso_decode_error(
    body: bytes,
) -> None:
    with contextlib.suppress(DsoDecodeError):
        DsoMessage.from_wire(DsoMessage(1).to_wire() + body)


@given(messages, st.integers(1, 40))
def test_cutting_a_message_short_raises_dso_decode_error_or_drops_whole_tlvs(
    msg: DsoMessage, cut: int
) -> None:
    wire = msg.to_wire()
    if cut >= len(wire):
        return
    try:
        back = DsoMessage.from_wire(wire[: len(wire) - cut])
    except DsoDecodeError:
        return
    # A cut that lands exactly on a TLV boundary leaves a shorter valid message.
    assert back.tlvs == msg.tlvs[: len(back.tlvs)]


@given(st.lists(st.binary(max_size=300), max_size=6), st.integers(1, 50))
def test_splitter_returns_the_messages_whatever_the_chunking(
    bodies: list[bytes], chunk: int
) -> None:
    stream = b"".join(frame(b) for b in bodies)
    splitter = FrameSplitter()
    out: list[bytes] = []
    for i in range(0, len(stream), chunk):
        out += splitter.feed(stream[i : i + chunk])
    assert out == bodies
